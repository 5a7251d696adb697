//! The accounts actor: the AS's users, clients and registration tokens.
//!
//! It is the only writer of account records; the HTTP front-end may read them (to authenticate
//! requests) but changes go through here. Password hashing (argon2id, deliberately slow) runs
//! on the [`Passwords`] threads, never on the actor's thread. What an admin or a user deletes,
//! and registration tokens, are in `admin.rs`.

mod admin;

pub use admin::{
    token_id, CreateToken, CreatedToken, DeleteClient, DeleteUser, RevokeToken, SetDeactivated,
    TOKEN_ID_HEX,
};

use std::sync::Arc;

use actix::prelude::*;

use roost_protocol::{
    api::{NewClient, Notice, QueueItem},
    credentials::Validity,
    crypto::hash,
    ClientCredential, ClientId, Domain, Timestamp, UserName,
};
use roost_storage::{
    AccountError, AccountStore, ClientRecord, Durability, StorageError, UserRecord,
};

use crate::{
    key_packages::KeyPackageActor,
    keys::KeyRing,
    passwords::{PasswordError, Passwords},
    pool::{Pool, Route},
    queue::{Enqueue, QueueActor, QueueId},
    registry::RegistryActor,
};

/// Who may register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationPolicy {
    Open,
    /// Only with a single-use token from `roost admin token create`.
    Token,
}

pub const MIN_PASSWORD_LEN: usize = 8;
pub const MAX_PASSWORD_LEN: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("this server serves {0}; register users of that domain only")]
    WrongDomain(Domain),
    #[error(
        "the user has {0} clients, the most allowed (limits.clients_per_user); delete one first"
    )]
    TooManyClients(usize),
    #[error("registration on this server needs a registration token")]
    TokenRequired,
    #[error("the registration token is unknown or already used")]
    BadToken,
    #[error("the user name is already taken")]
    UserTaken,
    #[error("the password must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters")]
    BadPassword,
    #[error("the user name or password is wrong")]
    WrongPassword,
    #[error("the new client's proof of key possession does not verify")]
    BadProof,
    #[error("no such client of this user")]
    UnknownClient,
    #[error("no such user")]
    UnknownUser,
    #[error("the user was deleted (the name stays reserved)")]
    UserDeleted,
    #[error("the account is deactivated")]
    Deactivated,
    #[error("no registration token has the id {0:?}")]
    UnknownToken(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<AccountError> for AccountsError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::UserTaken => AccountsError::UserTaken,
            AccountError::BadToken => AccountsError::BadToken,
            AccountError::UnknownUser => AccountsError::WrongPassword,
            AccountError::Deleted => AccountsError::UserDeleted,
            AccountError::Storage(e) => AccountsError::Storage(e),
        }
    }
}

#[derive(Clone)]
pub struct AccountsConfig {
    pub domain: Domain,
    pub policy: RegistrationPolicy,
    pub client_credential_lifetime_secs: u64,
    /// How many password hashes may run at once (each holds 19 MiB while it runs).
    pub hashing_threads: usize,
    /// The most clients one user may have.
    pub max_clients_per_user: usize,
}

/// What the accounts actor works with: its store, the AS keys, and the actors it tells about
/// clients added and deleted.
pub struct AccountsDeps {
    pub store: AccountStore,
    pub durability: Durability,
    pub keys: KeyRing,
    pub queues: Addr<Pool<QueueActor>>,
    pub registries: Addr<Pool<RegistryActor>>,
    pub key_packages: Addr<Pool<KeyPackageActor>>,
}

pub struct AccountsActor {
    config: AccountsConfig,
    deps: AccountsDeps,
    passwords: Passwords,
    /// Verified against when the user is unknown, so both cases take the same time.
    dummy_hash: Arc<String>,
}

impl AccountsActor {
    pub fn new(config: AccountsConfig, deps: AccountsDeps) -> std::io::Result<Self> {
        let passwords = Passwords::start(config.hashing_threads)?;
        let dummy_hash = crate::passwords::hash_with(&mut Vec::new(), "not a real password")
            .map_err(std::io::Error::other)?;
        Ok(AccountsActor {
            config,
            deps,
            passwords,
            dummy_hash: Arc::new(dummy_hash),
        })
    }

    fn issue(&self, user: &UserName, client: &NewClient) -> ClientRecord {
        let credential = ClientCredential::issue(
            user.clone(),
            ClientId::random(),
            client.verifying_key,
            Validity::starting_now(self.config.client_credential_lifetime_secs),
            &self.deps.keys.as_keys().intermediate_key,
        );
        ClientRecord {
            credential,
            queue_key: client.queue_key,
            added_at: Timestamp::now(),
        }
    }

    /// The credential of `user`'s client with the key `client` asks to register, if there is
    /// one: the request is a retry of one whose answer was lost (only the key's holder can
    /// sign the request's proof), and it is answered as the first was.
    fn registered_before(
        &self,
        user: &UserName,
        client: &NewClient,
    ) -> Result<Option<ClientCredential>, AccountsError> {
        for id in self.clients_of(user) {
            if let Some(record) = self.deps.store.client(&id)? {
                if record.credential.body.verifying_key == client.verifying_key
                    && record.queue_key == client.queue_key
                {
                    return Ok(Some(record.credential));
                }
            }
        }
        Ok(None)
    }

    /// The ids of `user`'s clients; none if the user is unknown or unreadable.
    fn clients_of(&self, user: &UserName) -> Vec<ClientId> {
        self.deps
            .store
            .user(user)
            .ok()
            .flatten()
            .map(|u| u.clients)
            .unwrap_or_default()
    }
}

/// Tells `clients` about a change to their account, through their queues.
fn notify(
    queues: &Addr<Pool<QueueActor>>,
    clients: impl IntoIterator<Item = ClientId>,
    notice: Notice,
) {
    for client in clients {
        queues.do_send(Route {
            key: QueueId::messages(client),
            message: Enqueue(QueueItem::Notice(notice.clone())),
        });
    }
}

impl Actor for AccountsActor {
    type Context = Context<Self>;
}

impl From<PasswordError> for AccountsError {
    fn from(e: PasswordError) -> Self {
        AccountsError::Internal(e.to_string())
    }
}

/// The hash under which a registration token is stored; the token itself never is.
pub fn token_hash(token: &str) -> [u8; 32] {
    hash("roost registration token v1", token.trim().as_bytes())
}

/// Register a new user with its first client.
#[derive(Message)]
#[rtype(result = "Result<ClientCredential, AccountsError>")]
pub struct Register {
    pub user: UserName,
    pub password: String,
    pub token: Option<String>,
    pub client: NewClient,
}

impl Handler<Register> for AccountsActor {
    type Result = ResponseActFuture<Self, Result<ClientCredential, AccountsError>>;

    fn handle(&mut self, msg: Register, _ctx: &mut Self::Context) -> Self::Result {
        let checked = (|| {
            if msg.user.domain() != &self.config.domain {
                return Err(AccountsError::WrongDomain(self.config.domain.clone()));
            }
            if !(MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&msg.password.chars().count()) {
                return Err(AccountsError::BadPassword);
            }
            msg.client
                .verify(&msg.user)
                .map_err(|_| AccountsError::BadProof)?;
            if let Some(credential) = self.registered_before(&msg.user, &msg.client)? {
                return Ok(Err(credential));
            }
            let token = match (self.config.policy, &msg.token) {
                (RegistrationPolicy::Token, None) => return Err(AccountsError::TokenRequired),
                (RegistrationPolicy::Token, Some(token)) => Some(token_hash(token)),
                (RegistrationPolicy::Open, _) => None,
            };
            // Fail fast before the slow hash (21 ms of a core for anyone who asks); the
            // transaction below decides for real.
            if let Some(token) = &token {
                if !self.deps.store.has_token(token, Timestamp::now())? {
                    return Err(AccountsError::BadToken);
                }
            }
            if self.deps.store.user(&msg.user)?.is_some() {
                return Err(AccountsError::UserTaken);
            }
            Ok(Ok(token))
        })();
        let password = msg.password;
        let passwords = self.passwords.clone();
        Box::pin(
            async move {
                let token = match checked? {
                    Ok(token) => token,
                    Err(registered) => return Ok(Err(registered)),
                };
                let hash = passwords.hash(password).await?;
                Ok::<_, AccountsError>(Ok((token, hash)))
            }
            .into_actor(self)
            .then(move |prepared, actor, _ctx| {
                let created = prepared.and_then(|prepared| -> Result<_, AccountsError> {
                    let (token, password_hash) = match prepared {
                        Ok(prepared) => prepared,
                        Err(registered) => return Ok(registered),
                    };
                    let client = actor.issue(&msg.user, &msg.client);
                    let record = UserRecord {
                        password_hash,
                        clients: vec![client.credential.client_id()],
                        created_at: Timestamp::now(),
                    };
                    actor
                        .deps
                        .store
                        .create_user(&msg.user, &record, &client, token.as_ref())?;
                    tracing::debug!(user = %msg.user, "registered a user");
                    tracing::info!(client = %client.credential.client_id(), "registered a new user");
                    Ok(client.credential)
                });
                let durability = actor.deps.durability.clone();
                async move {
                    let credential = created?;
                    durability.persist().await?;
                    Ok(credential)
                }
                .into_actor(actor)
            }),
        )
    }
}

/// Add a further client to an existing user, authorised by the user's password.
#[derive(Message)]
#[rtype(result = "Result<ClientCredential, AccountsError>")]
pub struct AddClient {
    pub user: UserName,
    pub password: String,
    pub client: NewClient,
}

impl Handler<AddClient> for AccountsActor {
    type Result = ResponseActFuture<Self, Result<ClientCredential, AccountsError>>;

    fn handle(&mut self, msg: AddClient, _ctx: &mut Self::Context) -> Self::Result {
        let stored = self
            .deps
            .store
            .user(&msg.user)
            .map(|user| user.map(|u| u.password_hash));
        let dummy = self.dummy_hash.clone();
        let proof = msg.client.verify(&msg.user);
        let password = msg.password.clone();
        let passwords = self.passwords.clone();
        Box::pin(
            async move {
                let stored = stored?;
                let known = stored.is_some();
                let hash = stored.unwrap_or_else(|| dummy.to_string());
                let matches = passwords.matches(password, hash).await?;
                if !(known && matches) {
                    return Err(AccountsError::WrongPassword);
                }
                proof.map_err(|_| AccountsError::BadProof)
            }
            .into_actor(self)
            .then(move |checked, actor, _ctx| {
                // `Ok((credential, false))`: a retry of an addition already made.
                let added = checked.and_then(|()| -> Result<_, AccountsError> {
                    // Said only to whoever knows the password.
                    if actor.deps.store.standing(&msg.user)?.is_some() {
                        return Err(AccountsError::Deactivated);
                    }
                    if let Some(credential) = actor.registered_before(&msg.user, &msg.client)? {
                        return Ok((credential, false));
                    }
                    let limit = actor.config.max_clients_per_user;
                    if actor.clients_of(&msg.user).len() >= limit {
                        return Err(AccountsError::TooManyClients(limit));
                    }
                    let client = actor.issue(&msg.user, &msg.client);
                    actor.deps.store.add_client(&msg.user, &client)?;
                    Ok((client.credential, true))
                });
                let siblings = actor.clients_of(&msg.user);
                let durability = actor.deps.durability.clone();
                let queues = actor.deps.queues.clone();
                async move {
                    let (credential, new) = added?;
                    durability.persist().await?;
                    if new {
                        let new_id = credential.client_id();
                        tracing::info!(client = %new_id, "added a client");
                        notify(
                            &queues,
                            siblings.into_iter().filter(|c| *c != new_id),
                            Notice::ClientAdded { client_id: new_id },
                        );
                    }
                    Ok(credential)
                }
                .into_actor(actor)
            }),
        )
    }
}
