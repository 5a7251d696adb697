//! The account: enrolling a client (registering a user, or adding a client to one), the user's
//! client list, messages to the user's own clients, and this client's MLS key packages.

use std::path::Path;

use roost_protocol::{
    api::{AddClient, KeyPackageCount, NewClient, RegisterUser},
    credentials::ClientCredential,
    ClientId, HpkeSecretKey, SigningKey, Timestamp, UserName,
};

use crate::{
    client::Client,
    connections::INITIAL_PACKAGES,
    error::Error,
    mls::key_packages::INITIAL_KEY_PACKAGES,
    store::{blocking, Identity, State},
    transport::{verify_with, Server, ToServer},
};

/// This client as recorded locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhoAmI {
    pub user: UserName,
    pub client_id: ClientId,
    pub server_url: String,
    pub valid_from: Timestamp,
    pub valid_until: Timestamp,
    /// The credential's validity contains the current time.
    pub valid_now: bool,
}

/// One client of the user, as the server lists it.
#[derive(Debug, Clone)]
pub struct ClientEntry {
    pub client_id: ClientId,
    pub added_at: Timestamp,
    pub valid_until: Timestamp,
    /// It is the client this state directory belongs to.
    pub this_client: bool,
    pub credential: ClientCredential,
}

/// A new client's secret keys, before the server has named it.
struct NewKeys {
    signing_key: SigningKey,
    queue_key: HpkeSecretKey,
}

impl NewKeys {
    fn generate() -> Self {
        let (queue_key, _) = HpkeSecretKey::generate();
        NewKeys {
            signing_key: SigningKey::generate(),
            queue_key,
        }
    }

    fn request(&self, user: &UserName) -> NewClient {
        NewClient::new(user, &self.signing_key, self.queue_key.public_key())
    }
}

impl Client {
    /// Registers a new user with this as its first client, and saves it in `state_dir` (which
    /// must not hold an identity yet). The credential is verified before anything is saved.
    /// Then the client publishes its first connection packages, so that others can find it;
    /// that failing does not undo the registration (see [`Client::initial_packages`]).
    pub async fn register(
        state_dir: impl AsRef<Path>,
        server: impl ToServer,
        user: &UserName,
        password: &str,
        registration_token: Option<&str>,
    ) -> Result<Client, Error> {
        let server = server.to_server()?;
        let state = open_unregistered(state_dir.as_ref()).await?;
        let keys = NewKeys::generate();
        let body = RegisterUser {
            user: user.clone(),
            password: password.to_owned(),
            registration_token: registration_token.map(str::to_owned),
            client: keys.request(user),
        };
        let credential = server.register_user(&body).await?;
        enrol(state, server, user, keys, credential).await
    }

    /// Adds a client to an existing user (authenticated by the password) and saves it in
    /// `state_dir`, like [`Client::register`].
    pub async fn add_client(
        state_dir: impl AsRef<Path>,
        server: impl ToServer,
        user: &UserName,
        password: &str,
    ) -> Result<Client, Error> {
        let server = server.to_server()?;
        let state = open_unregistered(state_dir.as_ref()).await?;
        let keys = NewKeys::generate();
        let body = AddClient {
            password: password.to_owned(),
            client: keys.request(user),
        };
        let credential = server.add_client(user, &body).await?;
        enrol(state, server, user, keys, credential).await
    }

    /// Who this client is, from local state only.
    pub fn whoami(&self) -> WhoAmI {
        let identity = self.identity();
        let validity = identity.credential.body.validity;
        WhoAmI {
            user: identity.user.clone(),
            client_id: identity.client_id,
            server_url: identity.server_url.clone(),
            valid_from: validity.not_before,
            valid_until: validity.not_after,
            valid_now: validity.contains(Timestamp::now()),
        }
    }

    /// Every client of this user, oldest first.
    pub async fn clients(&self) -> Result<Vec<ClientEntry>, Error> {
        let list = self.server().list_clients(self.signer()).await?;
        let mut clients: Vec<ClientEntry> = list
            .clients
            .into_iter()
            .map(|info| ClientEntry {
                client_id: info.credential.client_id(),
                added_at: info.added_at,
                valid_until: info.credential.body.validity.not_after,
                this_client: info.credential.client_id() == self.client_id(),
                credential: info.credential,
            })
            .collect();
        // Stable, and by time only: `added_at` has whole seconds, and clients added within one
        // second keep the server's order, which is the order they were added in.
        clients.sort_by_key(|c| c.added_at);
        Ok(clients)
    }

    /// Removes one of this user's clients (this one too, which makes this state unusable).
    pub async fn delete_client(&self, client_id: ClientId) -> Result<(), Error> {
        Ok(self
            .server()
            .delete_client(self.signer(), &client_id)
            .await?)
    }

    /// Puts `payload` into the queue of a client of this user (or this client's own); returns
    /// the sequence number it got there.
    pub async fn send_to_own_client(
        &self,
        target: ClientId,
        payload: Vec<u8>,
    ) -> Result<u64, Error> {
        let enqueued = self
            .server()
            .enqueue(self.signer(), &target, payload)
            .await?;
        Ok(enqueued.seq)
    }

    /// This client's MLS key packages on its QS.
    pub fn key_packages(&self) -> KeyPackages<'_> {
        KeyPackages { client: self }
    }
}

/// This client's MLS key packages: what lets others add it to groups.
/// A handle: cheap to copy, borrowing the client.
#[derive(Clone, Copy)]
pub struct KeyPackages<'a> {
    client: &'a Client,
}

impl KeyPackages<'_> {
    /// Publishes `one_time` new MLS key packages (and a last-resort one if asked), their
    /// private keys stored first; answers how many the QS holds.
    pub async fn publish(
        self,
        one_time: usize,
        last_resort: bool,
    ) -> Result<KeyPackageCount, Error> {
        let mls = self.client.mls().lock().await;
        mls.publish_key_packages(self.client.device(), one_time, last_resort)
            .await
    }

    /// Publishes `batch` one-time key packages if the QS holds fewer than `min`, and a
    /// last-resort one if it has none; answers the count after.
    pub async fn top_up(self, min: u32, batch: usize) -> Result<KeyPackageCount, Error> {
        let mls = self.client.mls().lock().await;
        mls.top_up_key_packages(self.client.device(), min, batch)
            .await
    }
}

/// Checks the credential the server issued, saves the identity, then publishes the first
/// connection packages and key packages.
async fn enrol(
    state: State,
    server: Server,
    user: &UserName,
    keys: NewKeys,
    credential: ClientCredential,
) -> Result<Client, Error> {
    if credential.user() != user {
        return Err(Error::CredentialMismatch(format!(
            "it names {} instead of {user}",
            credential.user()
        )));
    }
    if credential.body.verifying_key != keys.signing_key.verifying_key() {
        return Err(Error::CredentialMismatch(
            "it certifies another signature key than this client's".into(),
        ));
    }
    verify_with(&server, &credential).await?;
    let identity = Identity {
        user: user.clone(),
        client_id: credential.client_id(),
        signing_key: keys.signing_key,
        queue_key: keys.queue_key,
        credential,
        server_url: server.base_url().to_owned(),
    };
    let saved = identity.clone();
    state
        .run(move |state| state.save_identity(&saved))
        .await
        .map_err(|source| Error::SaveAfterRegistration {
            user: identity.user.clone(),
            client_id: identity.client_id,
            source: Box::new(source),
        })?;
    let mut client = Client::new(state, identity, server)?;
    let packages = client
        .connections()
        .publish_with(INITIAL_PACKAGES, true)
        .await;
    let key_packages = client
        .key_packages()
        .publish(INITIAL_KEY_PACKAGES, true)
        .await;
    client.set_initial(packages, key_packages);
    Ok(client)
}

/// Opens (or creates) a state directory and refuses one that already holds an identity, before
/// anything is sent to a server.
async fn open_unregistered(dir: &Path) -> Result<State, Error> {
    let dir = dir.to_path_buf();
    Ok(blocking(move || {
        let state = State::open_or_create(&dir)?;
        state.ensure_unregistered()?;
        Ok(state)
    })
    .await?)
}
