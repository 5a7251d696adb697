//! The client's local store: one sled store in a state directory, one module per record
//! family, as the server's `storage` crate does.
//!
//! | module | records |
//! | --- | --- |
//! | [`identity`] | who this client is (secret keys, credential, home server), its MLS signature identity ([`MlsIdentity`]) and its two queue positions (default tree) |
//! | [`requests`] | connection-package secret keys (`connection_keys`: package hash → [`ConnectionKey`]), pending requests (`connection_requests`: id → [`PendingRequest`]), hashes of requests received (`connection_requests_seen`) |
//! | [`groups`] | connections (`contacts`: group id → [`Contact`]), named groups (`groups`: group id → [`NamedGroup`]), member pseudonyms (`member_users`: group id length ‖ group id ‖ pseudonym → user), each leaf's signature key as last seen before a commit (`leaf_keys`: group id length ‖ group id ‖ leaf (BE) → key) |
//! | [`messages`] | each group's chat log (`messages`: group id length ‖ group id ‖ 1 ‖ DS sequence number (BE) → [`StoredMessage`]; 0 instead of 1 for messages kept before the DS numbered them) and the group deliveries handled (`group_seqs`: group id length ‖ group id ‖ DS sequence number → ()) |
//! | [`pending`] | operations on their way to a group's DS (`pending_ops`: group id → [`PendingOp`]) |
//! | [`siblings`] | this user's new clients still to bring into its groups (`new_siblings`: client id → ()) |
//! | [`profile`] | this user's own profile and the reference to it (`own_profile`, default tree); which of its profiles each connection was given (`profiles_shared`: group id → profile id); each contact's profile as shared with this user (`peer_profiles`: user name → [`PeerProfile`]) |
//! | [`upkeep`] | per group, when this client last renewed its own leaf and for how many renewals each other leaf stayed the same (`leaf_renewals`: group id → [`Upkeep`](upkeep::Upkeep)) |
//!
//! The openmls state lives in the tree `mls`, written only by [`crate::mls`]. Owns: the layout
//! and encoding of every record. Must not touch: the network or MLS operations.
//!
//! Every write is flushed before it returns, because the CLI process exits right after a
//! command. What "flushed" means for sled 0.34 on Linux: the data reached the OS
//! (`sync_file_range`), which survives a killed process but not necessarily a power cut within
//! sled's 500 ms fsync interval; for a client that is acceptable, since the worst case is a
//! queue message shown twice.
//!
//! Values are encoded with [`roost_protocol::codec`] only; a format-version key is checked at
//! every open so that a store written by another version is refused rather than misread. The
//! formats before this one (2, where every stored message named its sender, and 3, where a log
//! was in the order this client learnt of its messages) are upgraded in place when opened.

pub mod groups;
pub mod identity;
pub mod messages;
pub mod pending;
pub mod profile;
pub mod requests;
pub mod siblings;
#[cfg(test)]
mod tests;
mod tokens;
pub mod upkeep;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use roost_protocol::{codec, ClientId, UserName};
use serde::{de::DeserializeOwned, Serialize};

pub use groups::{Contact, GroupAccess, NamedGroup};
pub use identity::{Identity, MlsIdentity, QueuePosition};
pub use messages::StoredMessage;
pub use pending::{Outgoing, PendingOp, StagedWrites};
pub use profile::{OwnProfile, PeerProfile};
pub use requests::{ConnectionBatch, ConnectionKey, PendingRequest};

/// The state format this build reads and writes.
pub const FORMAT_VERSION: u32 = 6;
/// The formats before this one, which opening upgrades (see `State::upgrade_log_from` and
/// `State::upgrade_positions_and_mark`).
const PREVIOUS_FORMATS: [u32; 4] = [2, 3, 4, 5];

const KEY_FORMAT: &[u8] = b"format_version";
const KEY_IDENTITY: &[u8] = b"identity";
const KEY_QUEUE: &[u8] = b"queue_position";
const KEY_CONNECTION_QUEUE: &[u8] = b"connection_queue_position";
const TREE_CONNECTION_KEYS: &str = "connection_keys";
const TREE_REQUESTS: &str = "connection_requests";
const TREE_SEEN_REQUESTS: &str = "connection_requests_seen";
const KEY_MLS_IDENTITY: &[u8] = b"mls_identity";
const TREE_CONTACTS: &str = "contacts";
const TREE_GROUPS: &str = "groups";
const TREE_MESSAGES: &str = "messages";
const TREE_GROUP_SEQS: &str = "group_seqs";
const TREE_PENDING_OPS: &str = "pending_ops";
const TREE_MEMBER_USERS: &str = "member_users";
/// The openmls storage (see [`crate::mls`]).
pub const TREE_MLS: &str = "mls";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("not registered: {} holds no client identity; run `roost-client register` first", .0.display())]
    NotRegistered(PathBuf),
    #[error("{} already holds the identity of client {client_id} of {user}; use another state directory", dir.display())]
    AlreadyRegistered {
        dir: PathBuf,
        user: UserName,
        client_id: ClientId,
    },
    #[error("{} was written in state format {found}, but this roost-client reads only format {FORMAT_VERSION}", dir.display())]
    UnsupportedFormat { dir: PathBuf, found: u32 },
    #[error("the state directory {} is in use by another roost-client (or was not released in time)", .0.display())]
    Locked(PathBuf),
    #[error("{} holds data but no format version; it is not a roost-client state directory", .0.display())]
    NotAStateDir(PathBuf),
    #[error("the state record {key:?} in {} is unreadable: {reason}", dir.display())]
    Corrupt {
        dir: PathBuf,
        key: String,
        reason: String,
    },
    #[error("the state store in {} failed: {source}", dir.display())]
    Store {
        dir: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("a background task failed: {0}")]
    Interrupted(String),
    #[error("cannot use the state directory {}: {source}", dir.display())]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An open state store. Holds sled's lock on the directory: one process at a time.
#[derive(Clone)]
pub struct State {
    dir: PathBuf,
    db: sled::Db,
    connection_keys: sled::Tree,
    requests: sled::Tree,
    seen_requests: sled::Tree,
    contacts: sled::Tree,
    groups: sled::Tree,
    messages: sled::Tree,
    group_seqs: sled::Tree,
    pending_ops: sled::Tree,
    new_siblings: sled::Tree,
    member_users: sled::Tree,
    leaf_keys: sled::Tree,
    leaf_renewals: sled::Tree,
    privacy_pass: sled::Tree,
    profiles_shared: sled::Tree,
    peer_profiles: sled::Tree,
}

/// The key prefix of a group in the per-group trees: length, then the id.
fn group_prefix(group_id: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(group_id.len() + 1);
    key.push(u8::try_from(group_id.len()).unwrap_or(u8::MAX));
    key.extend_from_slice(group_id);
    key
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("dir", &self.dir).finish()
    }
}

impl State {
    /// Opens an existing state directory; a missing or empty one is [`StateError::NotRegistered`].
    pub fn open(dir: impl AsRef<Path>) -> Result<State, StateError> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.exists() {
            return Err(StateError::NotRegistered(dir));
        }
        let state = Self::open_store(dir)?;
        if state.identity()?.is_none() {
            return Err(StateError::NotRegistered(state.dir));
        }
        Ok(state)
    }

    /// Opens a state directory, creating it (readable only by its owner) if needed.
    pub fn open_or_create(dir: impl AsRef<Path>) -> Result<State, StateError> {
        let dir = dir.as_ref().to_path_buf();
        create_private_dir(&dir).map_err(|source| StateError::Io {
            dir: dir.clone(),
            source,
        })?;
        Self::open_store(dir)
    }

    fn open_store(dir: PathBuf) -> Result<State, StateError> {
        let db = open_db(&dir)?;
        let format = read(&dir, &db, KEY_FORMAT)?;
        match format {
            Some(found) if found == FORMAT_VERSION || PREVIOUS_FORMATS.contains(&found) => {}
            Some(found) => return Err(StateError::UnsupportedFormat { dir, found }),
            None if db.is_empty() => {}
            None => return Err(StateError::NotAStateDir(dir)),
        }
        // Trees are opened (and so created) only in a directory known to be a state directory.
        let tree = |name: &str| {
            db.open_tree(name).map_err(|source| StateError::Store {
                dir: dir.clone(),
                source,
            })
        };
        let state = State {
            connection_keys: tree(TREE_CONNECTION_KEYS)?,
            requests: tree(TREE_REQUESTS)?,
            seen_requests: tree(TREE_SEEN_REQUESTS)?,
            contacts: tree(TREE_CONTACTS)?,
            groups: tree(TREE_GROUPS)?,
            messages: tree(TREE_MESSAGES)?,
            group_seqs: tree(TREE_GROUP_SEQS)?,
            pending_ops: tree(TREE_PENDING_OPS)?,
            new_siblings: tree("new_siblings")?,
            profiles_shared: tree(profile::TREE_SHARED)?,
            peer_profiles: tree(profile::TREE_PEERS)?,
            member_users: tree(TREE_MEMBER_USERS)?,
            leaf_keys: tree("leaf_keys")?,
            leaf_renewals: tree("leaf_renewals")?,
            privacy_pass: tree(tokens::TREE)?,
            dir,
            db,
        };
        if let Some(old) = format.filter(|f| PREVIOUS_FORMATS.contains(f)) {
            if old < 4 {
                state.upgrade_log_from(old)?;
                // The queue sequence numbers format 3 kept are of no use any more.
                let _ = state.db.drop_tree("message_seqs");
            }
            // Operations kept unconfirmed before format 5 carry no proof of membership of their
            // epoch, nor new keys for a removal: a DS refuses them now. They are dropped (their
            // commits never applied, their messages never logged); the user makes them again.
            if old < 5 {
                state
                    .pending_ops
                    .clear()
                    .map_err(|e| state.store_error(e))?;
            }
            // Format 6: queue positions carry the queue's key chain.
            state.upgrade_positions_and_mark()?;
        }
        if format != Some(FORMAT_VERSION) {
            state.put(KEY_FORMAT, &FORMAT_VERSION)?;
        }
        Ok(state)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StateError> {
        read(&self.dir, &self.db, key)
    }

    fn tree_get<T: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        name: &str,
        key: &[u8],
    ) -> Result<Option<T>, StateError> {
        let Some(bytes) = tree.get(key).map_err(|e| self.store_error(e))? else {
            return Ok(None);
        };
        codec::decode(&bytes)
            .map(Some)
            .map_err(|e| self.corrupt(name, key, &e.to_string()))
    }

    /// Writes `value` under `key` in `tree`, durably before it answers.
    fn tree_put<T: Serialize + ?Sized>(
        &self,
        tree: &sled::Tree,
        key: &[u8],
        value: &T,
    ) -> Result<(), StateError> {
        tree.insert(key, codec::encode(value))
            .map_err(|e| self.store_error(e))?;
        self.flush()
    }

    fn tree_all<T: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        name: &str,
    ) -> Result<Vec<(sled::IVec, T)>, StateError> {
        tree.iter()
            .map(|entry| {
                let (key, bytes) = entry.map_err(|e| self.store_error(e))?;
                let value =
                    codec::decode(&bytes).map_err(|e| self.corrupt(name, &key, &e.to_string()))?;
                Ok((key, value))
            })
            .collect()
    }

    fn corrupt(&self, tree: &str, key: &[u8], reason: &str) -> StateError {
        StateError::Corrupt {
            dir: self.dir.clone(),
            key: format!("{tree}/{}", printable_key(key)),
            reason: reason.to_owned(),
        }
    }

    fn put<T: Serialize + ?Sized>(&self, key: &[u8], value: &T) -> Result<(), StateError> {
        self.tree_put(&self.db, key, value)
    }

    fn flush(&self) -> Result<(), StateError> {
        self.db.flush().map(drop).map_err(|e| self.store_error(e))
    }

    fn store_error(&self, source: sled::Error) -> StateError {
        StateError::Store {
            dir: self.dir.clone(),
            source,
        }
    }

    /// Writes a raw record, for tests that need a store in a state this build never writes.
    #[cfg(test)]
    pub(crate) fn put_raw(&self, key: &[u8], value: Vec<u8>) {
        self.db.insert(key, value).expect("test store insert");
        self.db.flush().expect("test store flush");
    }
}

/// A record of the default tree.
fn read<T: DeserializeOwned>(
    dir: &Path,
    db: &sled::Db,
    key: &[u8],
) -> Result<Option<T>, StateError> {
    let Some(bytes) = db.get(key).map_err(|source| StateError::Store {
        dir: dir.to_path_buf(),
        source,
    })?
    else {
        return Ok(None);
    };
    codec::decode(&bytes)
        .map(Some)
        .map_err(|e| StateError::Corrupt {
            dir: dir.to_path_buf(),
            key: String::from_utf8_lossy(key).into_owned(),
            reason: e.to_string(),
        })
}

/// A key for an error message: text as it is, anything else in hex.
fn printable_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(text) if text.chars().all(|c| c.is_ascii_graphic()) => text.to_owned(),
        _ => key.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// How long to wait for sled's lock on a directory: another process may be finishing a
/// command, and in this process sled's background threads release it a moment after a drop.
const LOCK_WAIT: Duration = Duration::from_secs(3);

fn open_db(dir: &Path) -> Result<sled::Db, StateError> {
    let started = Instant::now();
    loop {
        match sled::Config::new().path(dir).open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if started.elapsed() >= LOCK_WAIT {
                    return Err(StateError::Locked(dir.to_path_buf()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(source) => {
                return Err(StateError::Store {
                    dir: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// The directory holds secret keys, so only its owner may enter it.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Runs a blocking store operation off the async executor (sled's flush waits for the disk).
pub async fn blocking<T: Send + 'static>(
    operation: impl FnOnce() -> Result<T, StateError> + Send + 'static,
) -> Result<T, StateError> {
    tokio::task::spawn_blocking(operation)
        .await
        .map_err(|e| StateError::Interrupted(e.to_string()))?
}

impl State {
    /// Runs `operation` on this store off the async executor.
    pub async fn run<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&State) -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, StateError> {
        let state = self.clone();
        blocking(move || operation(&state)).await
    }
}
