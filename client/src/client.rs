//! The high-level client: enrolment (register, add a client), the user's client list, and the
//! client's own queues, on top of [`State`] and [`Server`]. Discovery and connection requests
//! are in [`crate::connections`].

use std::{path::Path, time::Duration};

use roost_protocol::{
    api::{
        self, AddClient, ConnectionPackageCount, KeyPackageCount, NewClient, QueueItem,
        QueueMessage, RegisterUser,
    },
    credentials::{AsCredentials, ClientCredential},
    crypto::CryptoError,
    federation::Resolver,
    ClientId, Domain, HpkeSecretKey, SigningKey, Timestamp, UserName,
};

use crate::{
    connections::INITIAL_PACKAGES,
    error::Error,
    groups::INITIAL_KEY_PACKAGES,
    mls_storage::MlsProvider,
    server::{Queue, QueueKind, Server, Signer},
    state::{Identity, QueuePosition, State, StateError},
};

/// A registered client, opened from its state directory.
#[derive(Debug)]
pub struct Client {
    pub(crate) state: State,
    pub(crate) identity: Identity,
    server: Server,
    /// One reader per queue at a time, so a queue position only moves forward.
    reading_messages: tokio::sync::Mutex<()>,
    reading_connections: tokio::sync::Mutex<()>,
    /// What publishing the first connection packages came to, for a client just enrolled.
    initial_packages: Option<Result<ConnectionPackageCount, Error>>,
    /// What publishing the first MLS key packages came to, for a client just enrolled.
    initial_key_packages: Option<Result<KeyPackageCount, Error>>,
    /// The MLS state, in the state directory's `mls` tree.
    pub(crate) mls: MlsProvider,
    /// One MLS operation at a time (see [`crate::groups`]).
    pub(crate) mls_lock: tokio::sync::Mutex<()>,
    /// Where other domains' homeservers are reached.
    resolver: Resolver,
}

/// Reads one kind of queue for [`Client::drain`]: opens and checks a batch, and saves what it
/// yields together with the position after it, so that a batch counts as received exactly when
/// its results are stored.
pub(crate) trait QueueReader {
    type Item;
    const KIND: QueueKind;

    async fn take(
        &mut self,
        client: &Client,
        messages: &[QueueMessage],
        position: QueuePosition,
    ) -> Result<Vec<Self::Item>, Error>;
}

/// What one pass over a queue came to.
pub(crate) struct Drained<T> {
    pub items: Vec<T>,
    /// Everything queued when the pass began was read.
    pub complete: bool,
}

/// One fetched batch, handled.
struct Batch<T> {
    items: Vec<T>,
    fetched: usize,
    has_more: bool,
    acked: bool,
}

/// The QS message queue's reader: each message opened, nothing kept but the position.
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

/// One message taken from this client's queue; `item` is an error if it could not be opened
/// (it is acknowledged all the same, so one bad message cannot jam the queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub seq: u64,
    pub item: Result<QueueItem, CryptoError>,
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
    /// Opens the client registered in `state_dir`.
    pub fn open(state_dir: impl AsRef<Path>) -> Result<Client, Error> {
        let state = State::open(state_dir)?;
        let identity = state
            .identity()?
            .ok_or_else(|| StateError::NotRegistered(state.dir().to_path_buf()))?;
        let server = Server::new(&identity.server_url)?;
        Client::new(state, identity, server)
    }

    fn new(state: State, identity: Identity, server: Server) -> Result<Client, Error> {
        let mls = MlsProvider::new(state.mls_tree()?)?;
        Ok(Client {
            state,
            identity,
            server,
            reading_messages: tokio::sync::Mutex::new(()),
            reading_connections: tokio::sync::Mutex::new(()),
            initial_packages: None,
            initial_key_packages: None,
            mls,
            mls_lock: tokio::sync::Mutex::new(()),
            resolver: Resolver::default(),
        })
    }

    /// Reaches other domains' homeservers as `resolver` says (default: `https://DOMAIN`).
    pub fn with_resolver(mut self, resolver: Resolver) -> Client {
        self.resolver = resolver;
        self
    }

    /// Registers a new user with this as its first client, and saves it in `state_dir` (which
    /// must not hold an identity yet). The credential is verified before anything is saved.
    /// Then the client publishes its first connection packages, so that others can find it;
    /// that failing does not undo the registration (see [`Client::initial_packages`]).
    pub async fn register(
        state_dir: impl AsRef<Path>,
        server_url: &str,
        user: &UserName,
        password: &str,
        registration_token: Option<&str>,
    ) -> Result<Client, Error> {
        let server = Server::new(server_url)?;
        let state = open_unregistered(state_dir.as_ref()).await?;
        let keys = NewKeys::generate();
        let body = RegisterUser {
            user: user.clone(),
            password: password.to_owned(),
            registration_token: registration_token.map(str::to_owned),
            client: keys.request(user),
        };
        let credential = server.register_user(&body).await?;
        Self::enrol(state, server, user, keys, credential).await
    }

    /// Adds a client to an existing user (authenticated by the password) and saves it in
    /// `state_dir`, like [`Client::register`].
    pub async fn add_client(
        state_dir: impl AsRef<Path>,
        server_url: &str,
        user: &UserName,
        password: &str,
    ) -> Result<Client, Error> {
        let server = Server::new(server_url)?;
        let state = open_unregistered(state_dir.as_ref()).await?;
        let keys = NewKeys::generate();
        let body = AddClient {
            password: password.to_owned(),
            client: keys.request(user),
        };
        let credential = server.add_client(user, &body).await?;
        Self::enrol(state, server, user, keys, credential).await
    }

    /// Checks the credential the server issued, saves the identity, then publishes the first
    /// connection packages.
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
        let (saved_state, saved) = (state.clone(), identity.clone());
        blocking(move || saved_state.save_identity(&saved))
            .await
            .map_err(|e| match e {
                Error::State(source) => Error::SaveAfterRegistration {
                    user: identity.user.clone(),
                    client_id: identity.client_id,
                    source: Box::new(source),
                },
                other => other,
            })?;
        let mut client = Client::new(state, identity, server)?;
        let published = client
            .publish_connection_packages_with(INITIAL_PACKAGES, true)
            .await;
        client.initial_packages = Some(published);
        let published = client
            .publish_key_packages(INITIAL_KEY_PACKAGES, true)
            .await;
        client.initial_key_packages = Some(published);
        Ok(client)
    }

    /// For a client just registered or added: whether its first connection packages (a batch
    /// and a last-resort one) were published, and the count the AS answered. An error here
    /// leaves the client registered but not yet discoverable; publishing again
    /// ([`Client::top_up`], `roost-client publish-packages`) mends it. `None` for a client opened
    /// from its state directory.
    pub fn initial_packages(&self) -> Option<&Result<ConnectionPackageCount, Error>> {
        self.initial_packages.as_ref()
    }

    /// For a client just registered or added: whether its first MLS key packages (a batch and
    /// a last-resort one) were published, like [`Client::initial_packages`].
    pub fn initial_key_packages(&self) -> Option<&Result<KeyPackageCount, Error>> {
        self.initial_key_packages.as_ref()
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn user(&self) -> &UserName {
        &self.identity.user
    }

    pub fn client_id(&self) -> ClientId {
        self.identity.client_id
    }

    pub fn credential(&self) -> &ClientCredential {
        &self.identity.credential
    }

    /// The home server.
    pub fn server(&self) -> &Server {
        &self.server
    }

    pub fn state_dir(&self) -> &Path {
        self.state.dir()
    }

    /// Signs requests as this client.
    pub fn signer(&self) -> Signer<'_> {
        Signer {
            client_id: self.identity.client_id,
            key: &self.identity.signing_key,
        }
    }

    /// Who this client is, from local state only.
    pub fn whoami(&self) -> WhoAmI {
        let validity = self.identity.credential.body.validity;
        WhoAmI {
            user: self.identity.user.clone(),
            client_id: self.identity.client_id,
            server_url: self.identity.server_url.clone(),
            valid_from: validity.not_before,
            valid_until: validity.not_after,
            valid_now: validity.contains(Timestamp::now()),
        }
    }

    /// Every client of this user, oldest first.
    pub async fn clients(&self) -> Result<Vec<ClientEntry>, Error> {
        let list = self.server.list_clients(self.signer()).await?;
        let mut clients: Vec<ClientEntry> = list
            .clients
            .into_iter()
            .map(|info| ClientEntry {
                client_id: info.credential.client_id(),
                added_at: info.added_at,
                valid_until: info.credential.body.validity.not_after,
                this_client: info.credential.client_id() == self.identity.client_id,
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
        Ok(self.server.delete_client(self.signer(), &client_id).await?)
    }

    /// Puts `payload` into the queue of a client of this user (or this client's own); returns
    /// the sequence number it got there.
    pub async fn send_to_own_client(
        &self,
        target: ClientId,
        payload: Vec<u8>,
    ) -> Result<u64, Error> {
        Ok(self
            .server
            .enqueue(self.signer(), &target, payload)
            .await?
            .seq)
    }

    /// Takes every message now in this client's queue, waiting up to `wait` (at most 30 s) for
    /// a first one, and returns those that are not group deliveries (notices, messages from
    /// the user's own clients). Group deliveries are handled as [`Client::sync`] handles them,
    /// never dropped. Each message is handled and the position saved before it is
    /// acknowledged, so each is returned once.
    pub async fn receive(&self, wait: Duration) -> Result<Vec<Received>, Error> {
        Ok(self.sync_waiting(wait).await?.other)
    }

    /// Reads a queue to its end, batch by batch, as [`Client::receive`] describes.
    pub(crate) async fn drain<R: QueueReader>(
        &self,
        reader: &mut R,
        wait: Duration,
    ) -> Result<Drained<R::Item>, Error> {
        let _one_at_a_time = match R::KIND {
            QueueKind::Messages => self.reading_messages.lock().await,
            QueueKind::Connections => self.reading_connections.lock().await,
        };
        let queue = Queue {
            kind: R::KIND,
            client: self.identity.client_id,
        };
        let mut position = self.state.queue_position(R::KIND)?;
        if let Some(up_to) = position.pending_ack() {
            self.server.ack_queue(self.signer(), queue, up_to).await?;
            position.acked = Some(up_to);
            self.save_position(R::KIND, position).await?;
        }
        let mut items = Vec::new();
        let mut wait = wait;
        loop {
            match self.drain_batch(reader, queue, &mut position, wait).await {
                Ok(batch) => {
                    items.extend(batch.items);
                    if batch.fetched == 0 || !batch.has_more {
                        return Ok(Drained {
                            items,
                            complete: true,
                        });
                    }
                    if !batch.acked {
                        return Ok(Drained {
                            items,
                            complete: false,
                        });
                    }
                }
                Err(e) if items.is_empty() => return Err(e),
                Err(_) => {
                    return Ok(Drained {
                        items,
                        complete: false,
                    })
                }
            }
            wait = Duration::ZERO;
        }
    }

    /// Fetches one batch and has `reader` open and save it, then acknowledges it. The batch
    /// counts as delivered once saved; a failed ack only leaves it pending for the next pass.
    async fn drain_batch<R: QueueReader>(
        &self,
        reader: &mut R,
        queue: Queue,
        position: &mut QueuePosition,
        wait: Duration,
    ) -> Result<Batch<R::Item>, Error> {
        let batch = self
            .server
            .fetch_queue(
                self.signer(),
                queue,
                position.next_from(),
                api::MAX_FETCH,
                wait,
            )
            .await?;
        let Some(last) = batch.messages.last().map(|m| m.seq) else {
            return Ok(Batch {
                items: Vec::new(),
                fetched: 0,
                has_more: false,
                acked: true,
            });
        };
        let received = QueuePosition {
            received: Some(last),
            ..*position
        };
        let items = reader.take(self, &batch.messages, received).await?;
        *position = received;
        let acked = self
            .server
            .ack_queue(self.signer(), queue, last)
            .await
            .is_ok()
            && self
                .save_position(
                    R::KIND,
                    QueuePosition {
                        acked: Some(last),
                        ..*position
                    },
                )
                .await
                .is_ok();
        if acked {
            position.acked = Some(last);
        }
        Ok(Batch {
            items,
            fetched: batch.messages.len(),
            has_more: batch.has_more,
            acked,
        })
    }

    pub(crate) async fn save_position(
        &self,
        queue: QueueKind,
        position: QueuePosition,
    ) -> Result<(), Error> {
        let state = self.state.clone();
        blocking(move || state.set_queue_position(queue, &position)).await
    }

    /// Checks a client credential's chain against the AS credentials of its user's domain.
    pub async fn verify_credential(&self, credential: &ClientCredential) -> Result<(), Error> {
        let server = self.as_server_for(credential.user().domain())?;
        verify_with(&server, credential).await
    }

    /// Fetches the AS credentials of `domain`, refusing any of another domain.
    pub async fn as_credentials_of(&self, domain: &Domain) -> Result<AsCredentials, Error> {
        let server = self.as_server_for(domain)?;
        fetch_as_credentials(&server, domain).await
    }

    /// Where the homeserver of `domain` is reached: the one place that maps domains to servers.
    /// Another domain's public endpoints (AS discovery, DS, QS key-package claims) are called
    /// directly, never through the home server, which would learn whom this user looks up.
    pub fn as_server_for(&self, domain: &Domain) -> Result<Server, Error> {
        if domain == self.identity.user.domain() {
            Ok(self.server.clone())
        } else {
            Ok(Server::new(&self.resolver.base_url(domain))?)
        }
    }
}

/// Opens (or creates) a state directory and refuses one that already holds an identity, before
/// anything is sent to a server.
async fn open_unregistered(dir: &Path) -> Result<State, Error> {
    let dir = dir.to_path_buf();
    blocking(move || {
        let state = State::open_or_create(&dir)?;
        state.ensure_unregistered()?;
        Ok(state)
    })
    .await
}

/// Fetches `server`'s AS credentials and checks they all belong to `domain`.
pub async fn fetch_as_credentials(
    server: &Server,
    domain: &Domain,
) -> Result<AsCredentials, Error> {
    let credentials = server.as_credentials().await?;
    let foreign = credentials
        .as_credentials
        .iter()
        .map(|c| &c.body.domain)
        .chain(credentials.intermediates.iter().map(|i| &i.body.domain))
        .find(|d| *d != domain);
    if let Some(found) = foreign {
        return Err(Error::WrongDomain {
            server: server.base_url().to_owned(),
            expected: domain.clone(),
            found: found.to_string(),
        });
    }
    if credentials.as_credentials.is_empty() || credentials.intermediates.is_empty() {
        return Err(Error::WrongDomain {
            server: server.base_url().to_owned(),
            expected: domain.clone(),
            found: "no credentials at all".into(),
        });
    }
    Ok(credentials)
}

/// Verifies `credential` against the AS credentials `server` serves for the credential's domain.
pub async fn verify_with(server: &Server, credential: &ClientCredential) -> Result<(), Error> {
    let credentials = fetch_as_credentials(server, credential.user().domain()).await?;
    credentials
        .verify_client(credential, Timestamp::now())
        .map_err(|source| Error::Chain {
            user: credential.user().clone(),
            client_id: credential.client_id(),
            source,
        })
}

/// Runs a blocking state operation off the async executor (sled's flush waits for the disk).
pub(crate) async fn blocking<T: Send + 'static>(
    operation: impl FnOnce() -> Result<T, StateError> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(operation)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
        .map_err(Error::from)
}
