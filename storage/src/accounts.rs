//! Users, their clients and registration tokens (the AS's account records).

use serde::{Deserialize, Serialize};
use sled::transaction::{
    ConflictableTransactionError, TransactionError, Transactional, TransactionalTree,
};

use roost_protocol::{ClientCredential, ClientId, HpkePublicKey, Timestamp, UserName};

use crate::{
    table::{decode, encode, Table},
    Result, StorageError,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRecord {
    /// An argon2id PHC string; never the password.
    pub password_hash: String,
    pub clients: Vec<ClientId>,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientRecord {
    pub credential: ClientCredential,
    /// The key this client's queue messages are sealed to.
    pub queue_key: HpkePublicKey,
    pub added_at: Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("the user name is taken")]
    UserTaken,
    #[error("the registration token is unknown or used")]
    BadToken,
    #[error("no such user")]
    UnknownUser,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

#[derive(Clone)]
pub struct AccountStore {
    users: Table<UserRecord>,
    clients: Table<ClientRecord>,
    tokens: Table<Timestamp>,
}

fn token_key(token_hash: &[u8; 32]) -> &[u8] {
    token_hash
}

impl AccountStore {
    pub(crate) fn open(db: &sled::Db) -> Result<Self> {
        Ok(AccountStore {
            users: Table::open(db, "as_users")?,
            clients: Table::open(db, "as_clients")?,
            tokens: Table::open(db, "as_registration_tokens")?,
        })
    }

    pub fn user(&self, user: &UserName) -> Result<Option<UserRecord>> {
        self.users.get(user.to_string().as_bytes())
    }

    pub fn client(&self, client: &ClientId) -> Result<Option<ClientRecord>> {
        self.clients.get(&client.0)
    }

    pub fn user_count(&self) -> usize {
        self.users.tree.len()
    }

    /// Creates a user with its first client, consuming `token` if given — all or nothing.
    pub fn create_user(
        &self,
        user: &UserName,
        record: &UserRecord,
        client: &ClientRecord,
        token_hash: Option<&[u8; 32]>,
    ) -> Result<(), AccountError> {
        let user_key = user.to_string();
        let client_id = client.credential.client_id();
        let outcome = (&self.users.tree, &self.clients.tree, &self.tokens.tree).transaction(
            |(users, clients, tokens)| {
                if users.get(user_key.as_bytes())?.is_some() {
                    return Err(ConflictableTransactionError::Abort(AccountError::UserTaken));
                }
                if let Some(hash) = token_hash {
                    if tokens.remove(token_key(hash))?.is_none() {
                        return Err(ConflictableTransactionError::Abort(AccountError::BadToken));
                    }
                }
                users.insert(user_key.as_bytes(), encode(record))?;
                clients.insert(&client_id.0, encode(client))?;
                Ok(())
            },
        );
        flatten(outcome)
    }

    /// Adds a further client to an existing user.
    pub fn add_client(&self, user: &UserName, client: &ClientRecord) -> Result<(), AccountError> {
        let user_key = user.to_string();
        let client_id = client.credential.client_id();
        let outcome = (&self.users.tree, &self.clients.tree).transaction(|(users, clients)| {
            let mut record = load_user(users, &user_key)?;
            record.clients.push(client_id);
            users.insert(user_key.as_bytes(), encode(&record))?;
            clients.insert(&client_id.0, encode(client))?;
            Ok(())
        });
        flatten(outcome)
    }

    /// Removes a client of `user`; returns whether it existed.
    pub fn remove_client(
        &self,
        user: &UserName,
        client_id: &ClientId,
    ) -> Result<bool, AccountError> {
        let user_key = user.to_string();
        let outcome = (&self.users.tree, &self.clients.tree).transaction(|(users, clients)| {
            let mut record = load_user(users, &user_key)?;
            let before = record.clients.len();
            record.clients.retain(|c| c != client_id);
            if record.clients.len() == before {
                return Ok(false);
            }
            users.insert(user_key.as_bytes(), encode(&record))?;
            clients.remove(&client_id.0)?;
            Ok(true)
        });
        flatten(outcome)
    }

    /// Stores a registration token by its hash; the token itself is never stored.
    pub fn insert_token(&self, token_hash: &[u8; 32], created_at: Timestamp) -> Result<()> {
        self.tokens.insert(token_key(token_hash), &created_at)
    }

    /// Whether an unused registration token has this hash.
    pub fn has_token(&self, token_hash: &[u8; 32]) -> Result<bool> {
        Ok(self.tokens.tree.contains_key(token_key(token_hash))?)
    }

    pub(crate) fn check(&self, report: &mut crate::CheckReport) {
        self.users.check("as_users", |_| true, report);
        self.clients.check("as_clients", |_| true, report);
        self.tokens
            .check("as_registration_tokens", |_| true, report);
    }

    pub fn token_count(&self) -> usize {
        self.tokens.tree.len()
    }
}

/// Reads a user record inside a transaction; a missing user aborts it.
fn load_user(
    users: &TransactionalTree,
    user_key: &str,
) -> Result<UserRecord, ConflictableTransactionError<AccountError>> {
    let abort = ConflictableTransactionError::Abort;
    match users.get(user_key.as_bytes())? {
        Some(bytes) => decode(&bytes).map_err(|e| abort(AccountError::Storage(e))),
        None => Err(abort(AccountError::UnknownUser)),
    }
}

fn flatten<T>(
    outcome: std::result::Result<T, TransactionError<AccountError>>,
) -> Result<T, AccountError> {
    outcome.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => AccountError::Storage(e.into()),
    })
}
