//! Users, their clients and registration tokens (the AS's account records), and each user's
//! standing: a user an admin deactivated, or deleted (whose name stays reserved).
//!
//! Trees: `as_users` (user name → [`UserRecord`]), `as_clients` (client id → [`ClientRecord`]),
//! `as_registration_tokens` (the token's hash → [`TokenRecord`]; the token itself is never
//! stored) and `as_standing` (user name → [`Standing`]; no record: active).

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

/// A registration token: how often, and until when, it may still be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub created_at: Timestamp,
    /// Registrations it still admits; at the last one the record goes.
    pub uses_left: u32,
    /// After this it admits nobody (and is swept).
    pub expires_at: Option<Timestamp>,
}

impl TokenRecord {
    pub fn usable(&self, now: Timestamp) -> bool {
        self.uses_left > 0 && self.expires_at.is_none_or(|end| now < end)
    }
}

/// A registration token's hash, which is also how an admin names it (its first hex digits).
pub type TokenHash = [u8; 32];

/// A user who is not simply active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Standing {
    /// The user's clients are refused and nobody can discover the user, until reactivated;
    /// everything stored stays.
    Deactivated { since: Timestamp },
    /// The account is gone; the name stays reserved so that nobody else takes it.
    Deleted { at: Timestamp },
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("the user name is taken")]
    UserTaken,
    #[error("the registration token is unknown or used")]
    BadToken,
    #[error("no such user")]
    UnknownUser,
    #[error("the user was deleted")]
    Deleted,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

#[derive(Clone)]
pub struct AccountStore {
    users: Table<UserRecord>,
    clients: Table<ClientRecord>,
    tokens: Table<TokenRecord>,
    standing: Table<Standing>,
}

fn token_key(token_hash: &TokenHash) -> &[u8] {
    token_hash
}

impl AccountStore {
    pub(crate) fn open(db: &crate::gate::Db) -> Result<Self> {
        Ok(AccountStore {
            users: Table::open(db, "as_users")?,
            clients: Table::open(db, "as_clients")?,
            tokens: Table::open(db, TOKENS_TREE)?,
            standing: Table::open(db, "as_standing")?,
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

    pub fn client_count(&self) -> usize {
        self.clients.tree.len()
    }

    /// Every user with an account (active or deactivated), in name order.
    pub fn users(&self) -> impl Iterator<Item = Result<(UserName, UserRecord)>> + '_ {
        self.users.by_name("as_users")
    }

    /// The ids of every registered client.
    pub fn client_ids(&self) -> Result<Vec<ClientId>> {
        let mut ids = Vec::new();
        for key in self.clients.tree.iter().keys() {
            let key = key?;
            let id = <[u8; 16]>::try_from(key.as_ref())
                .map_err(|_| StorageError::Corrupt("a key of as_clients".into()))?;
            ids.push(ClientId(id));
        }
        Ok(ids)
    }

    /// Every user who is deactivated or deleted, with their standing, in name order.
    pub fn standings(&self) -> impl Iterator<Item = Result<(UserName, Standing)>> + '_ {
        self.standing.by_name("as_standing")
    }

    /// The user's standing; `None`: active (or unknown).
    pub fn standing(&self, user: &UserName) -> Result<Option<Standing>> {
        self.standing.get(user.to_string().as_bytes())
    }

    /// Deactivates (`Some`) or reactivates (`None`) an existing user; `Ok(false)` if it already
    /// stood so.
    pub fn set_deactivated(
        &self,
        user: &UserName,
        since: Option<Timestamp>,
    ) -> Result<bool, AccountError> {
        let user_key = user.to_string();
        let outcome = self.users.tree.gate().passing(|| {
            (&self.users.tree.sled(), &self.standing.tree.sled()).transaction(
                |(users, standing)| {
                    let abort = ConflictableTransactionError::Abort;
                    if users.get(user_key.as_bytes())?.is_none() {
                        let deleted = standing.get(user_key.as_bytes())?.is_some();
                        return Err(abort(if deleted {
                            AccountError::Deleted
                        } else {
                            AccountError::UnknownUser
                        }));
                    }
                    let was = standing.get(user_key.as_bytes())?.is_some();
                    match since {
                        Some(since) if !was => {
                            standing.insert(
                                user_key.as_bytes(),
                                encode(&Standing::Deactivated { since }),
                            )?;
                        }
                        None if was => {
                            standing.remove(user_key.as_bytes())?;
                        }
                        _ => return Ok(false),
                    }
                    Ok(true)
                },
            )
        });
        flatten(outcome)
    }

    /// Deletes a user's account and its clients' records, keeping the name reserved; answers
    /// the clients it had (whose queues and packages the caller removes).
    pub fn delete_user(
        &self,
        user: &UserName,
        at: Timestamp,
    ) -> Result<Vec<ClientId>, AccountError> {
        let user_key = user.to_string();
        let outcome = self.users.tree.gate().passing(|| {
            (
                &self.users.tree.sled(),
                &self.clients.tree.sled(),
                &self.standing.tree.sled(),
            )
                .transaction(|(users, clients, standing)| {
                    let record = load_user(users, &user_key)?;
                    for client in &record.clients {
                        clients.remove(&client.0)?;
                    }
                    users.remove(user_key.as_bytes())?;
                    standing.insert(user_key.as_bytes(), encode(&Standing::Deleted { at }))?;
                    Ok(record.clients)
                })
        });
        flatten(outcome)
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
        let now = record.created_at;
        let trees = (
            &self.users.tree.sled(),
            &self.clients.tree.sled(),
            &self.tokens.tree.sled(),
            &self.standing.tree.sled(),
        );
        let outcome = self.users.tree.gate().passing(|| {
            trees.transaction(|(users, clients, tokens, standing)| {
                let abort = ConflictableTransactionError::Abort;
                // A deleted user's name stays reserved.
                if users.get(user_key.as_bytes())?.is_some()
                    || standing.get(user_key.as_bytes())?.is_some()
                {
                    return Err(abort(AccountError::UserTaken));
                }
                if let Some(hash) = token_hash {
                    let token: Option<TokenRecord> = tokens
                        .get(token_key(hash))?
                        .map(|bytes| decode(&bytes))
                        .transpose()
                        .map_err(|e| abort(AccountError::Storage(e)))?;
                    let Some(mut token) = token.filter(|t| t.usable(now)) else {
                        return Err(abort(AccountError::BadToken));
                    };
                    token.uses_left -= 1;
                    if token.uses_left == 0 {
                        tokens.remove(token_key(hash))?;
                    } else {
                        tokens.insert(token_key(hash), encode(&token))?;
                    }
                }
                users.insert(user_key.as_bytes(), encode(record))?;
                clients.insert(&client_id.0, encode(client))?;
                Ok(())
            })
        });
        flatten(outcome)
    }

    /// Adds a further client to an existing user.
    pub fn add_client(&self, user: &UserName, client: &ClientRecord) -> Result<(), AccountError> {
        let user_key = user.to_string();
        let client_id = client.credential.client_id();
        let outcome = self.users.tree.gate().passing(|| {
            (&self.users.tree.sled(), &self.clients.tree.sled()).transaction(|(users, clients)| {
                let mut record = load_user(users, &user_key)?;
                record.clients.push(client_id);
                users.insert(user_key.as_bytes(), encode(&record))?;
                clients.insert(&client_id.0, encode(client))?;
                Ok(())
            })
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
        let outcome = self.users.tree.gate().passing(|| {
            (&self.users.tree.sled(), &self.clients.tree.sled()).transaction(|(users, clients)| {
                let mut record = load_user(users, &user_key)?;
                let before = record.clients.len();
                record.clients.retain(|c| c != client_id);
                if record.clients.len() == before {
                    return Ok(false);
                }
                users.insert(user_key.as_bytes(), encode(&record))?;
                clients.remove(&client_id.0)?;
                Ok(true)
            })
        });
        flatten(outcome)
    }

    /// Stores a registration token by its hash; the token itself is never stored.
    pub fn insert_token(&self, token_hash: &TokenHash, record: &TokenRecord) -> Result<()> {
        self.tokens.insert(token_key(token_hash), record)
    }

    /// Whether a registration token with this hash may be used now.
    pub fn has_token(&self, token_hash: &TokenHash, now: Timestamp) -> Result<bool> {
        Ok(self
            .tokens
            .get(token_key(token_hash))?
            .is_some_and(|token| token.usable(now)))
    }

    /// Every registration token that may still be used, by hash.
    pub fn tokens(&self) -> Result<Vec<(TokenHash, TokenRecord)>> {
        let mut tokens = Vec::new();
        for entry in self.tokens.tree.iter() {
            let (key, bytes) = entry?;
            let hash = TokenHash::try_from(key.as_ref())
                .map_err(|_| StorageError::Corrupt("a key of as_registration_tokens".into()))?;
            tokens.push((hash, decode(&bytes)?));
        }
        Ok(tokens)
    }

    /// Deletes a registration token; answers whether there was one.
    pub fn remove_token(&self, token_hash: &TokenHash) -> Result<bool> {
        Ok(self.tokens.tree.remove(token_key(token_hash))?.is_some())
    }

    /// Deletes the tokens that expired; answers how many.
    pub fn sweep_tokens(&self, now: Timestamp) -> Result<usize> {
        self.tokens.sweep(|token| !token.usable(now))
    }

    pub(crate) fn check(&self, report: &mut crate::CheckReport) {
        self.users.check("as_users", |_| true, report);
        self.clients.check("as_clients", |_| true, report);
        self.tokens.check(TOKENS_TREE, |_| true, report);
        self.standing.check("as_standing", |_| true, report);
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

pub(crate) const TOKENS_TREE: &str = "as_registration_tokens";

/// A token record of formats 1 to 4 (its creation time alone: single-use, never expiring) as
/// format 5 stores it.
pub(crate) fn token_of_format_4(_key: &[u8], value: &[u8]) -> Result<Vec<u8>> {
    let created_at: Timestamp = decode(value)?;
    Ok(encode(&TokenRecord {
        created_at,
        uses_left: 1,
        expires_at: None,
    }))
}

fn flatten<T>(
    outcome: std::result::Result<T, TransactionError<AccountError>>,
) -> Result<T, AccountError> {
    outcome.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => AccountError::Storage(e.into()),
    })
}
