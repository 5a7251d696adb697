//! The client's persistent state: one sled store in a state directory.
//!
//! Holds the identity (who this client is, its secret keys, its credential and its home server)
//! and the positions in its two queues (default tree); the secret keys of the connection packages
//! it published (`connection_keys`: package hash → [`ConnectionKey`]); the connection requests
//! waiting for the user's decision (`connection_requests`: id → [`PendingRequest`]); and the
//! hashes of the sealed requests already received, so a replay is not shown again
//! (`connection_requests_seen`: hash → end of validity of the package it was sealed to); the
//! client's connections (`contacts`: group id → [`Contact`]), its named groups (`groups`:
//! group id → [`NamedGroup`]), the chat log of each group
//! (`messages`: group id length ‖ group id ‖ log position (BE) → [`StoredMessage`], with
//! `message_seqs`: queue seq → () so a queue message is stored once) and which user each member
//! pseudonym of a group belongs to (`member_users`: group id length ‖ group id ‖ pseudonym →
//! user), its MLS signature key's public half
//! and leaf pseudonym ([`MlsIdentity`], default tree), and the openmls state (tree `mls`, written
//! only through [`crate::mls_storage`]). Every write is flushed before it returns, because the CLI process
//! exits right after a command. What "flushed" means for sled 0.34 on Linux: the data reached
//! the OS (`sync_file_range`), which survives a killed process but not necessarily a power cut
//! within sled's 500 ms fsync interval; for a client that is acceptable, since the worst case is
//! a queue message shown twice.
//!
//! Values are encoded with [`roost_protocol::codec`] only; a format-version key is checked at
//! every open so that a store written by another version is refused rather than misread.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use roost_protocol::{
    codec,
    connection::{ConnectionEstablishmentPackage, ConnectionPackageHash},
    credentials::ClientCredential,
    ds::GroupKeys,
    key_packages::FriendshipToken,
    ClientId, Domain, HpkeSecretKey, SigningKey, Timestamp, UserName,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use crate::server::QueueKind;

/// The state format this build reads and writes.
pub const FORMAT_VERSION: u32 = 2;

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
const TREE_MESSAGE_SEQS: &str = "message_seqs";
const TREE_MEMBER_USERS: &str = "member_users";
/// The openmls storage (see [`crate::mls_storage`]).
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
    #[error("cannot use the state directory {}: {source}", dir.display())]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Who this client is. Contains secret keys: never log or print it whole.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    pub user: UserName,
    pub client_id: ClientId,
    pub signing_key: SigningKey,
    /// Opens the messages of this client's queue.
    pub queue_key: HpkeSecretKey,
    pub credential: ClientCredential,
    /// Base URL of the home server, without a trailing slash.
    pub server_url: String,
}

/// How far this client has read its queue. Kept apart from acknowledging, so an ack that failed
/// can be repeated without showing messages twice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuePosition {
    /// Highest sequence number handed to the user; `None` before the first message.
    pub received: Option<u64>,
    /// Highest sequence number the server confirmed deleting.
    pub acked: Option<u64>,
}

impl QueuePosition {
    /// The first sequence number not yet received.
    pub fn next_from(&self) -> u64 {
        self.received.map_or(0, |s| s.saturating_add(1))
    }

    /// The received position the server has not yet been told to delete up to.
    pub fn pending_ack(&self) -> Option<u64> {
        match (self.received, self.acked) {
            (Some(r), Some(a)) if r <= a => None,
            (received, _) => received,
        }
    }
}

/// The secret half of a connection package this client published.
#[derive(Clone, Serialize, Deserialize)]
pub struct ConnectionKey {
    /// Opens the connection requests sealed to the package.
    pub secret: HpkeSecretKey,
    pub last_resort: bool,
    /// The package's end of validity: after it the AS queues no request sealed to it.
    pub not_after: Timestamp,
}

impl std::fmt::Debug for ConnectionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionKey")
            .field("last_resort", &self.last_resort)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// This client's MLS signature key (the key pair itself lives in the MLS store) and the
/// pseudonym its leaves carry instead of the user name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MlsIdentity {
    pub signature_public_key: Vec<u8>,
    pub pseudonym: Vec<u8>,
}

/// A connection: the connection group shared with another user, and its keys. Contains secret
/// keys: never print it whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub group_id: Vec<u8>,
    /// The other user; `None` while not known yet (a client that joined through a Welcome
    /// before the responder joined).
    pub peer: Option<UserName>,
    /// Whose DS holds the group: the initiator's.
    pub ds: Domain,
    pub keys: GroupKeys,
    pub since: Timestamp,
    /// Whether this user asked for the connection (then it shares its friendship token only
    /// in answer to the peer's, once the peer is surely in the group).
    pub initiated: bool,
    /// The peer's friendship token, which lets this user add the peer to groups.
    pub peer_token: Option<FriendshipToken>,
    /// Whether this user's token is in the group (sent by this client or another of the user's).
    pub token_shared: bool,
}

/// A named group this client is in (not a connection). Contains secret keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedGroup {
    pub group_id: Vec<u8>,
    /// The name its creator gave it; not unique.
    pub name: String,
    /// Whose DS holds the group: its creator's.
    pub ds: Domain,
    pub keys: GroupKeys,
    pub since: Timestamp,
    /// This client was removed from the group: it keeps the log, but can no longer send.
    pub removed: bool,
}

/// What talking to a group's DS takes: where the DS is, and the group's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupAccess {
    pub group_id: Vec<u8>,
    pub ds: Domain,
    pub keys: GroupKeys,
}

impl Contact {
    pub fn access(&self) -> GroupAccess {
        GroupAccess {
            group_id: self.group_id.clone(),
            ds: self.ds.clone(),
            keys: self.keys.clone(),
        }
    }
}

impl NamedGroup {
    pub fn access(&self) -> GroupAccess {
        GroupAccess {
            group_id: self.group_id.clone(),
            ds: self.ds.clone(),
            keys: self.keys.clone(),
        }
    }
}

/// A connection request that passed every check, waiting for the user's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRequest {
    /// Short and stable: the start of the hash of the sealed request.
    pub id: String,
    pub received_at: Timestamp,
    /// The opened, verified invitation.
    pub package: ConnectionEstablishmentPackage,
}

impl PendingRequest {
    /// Who asks to connect (verified against the AS credentials of their domain).
    pub fn from(&self) -> &UserName {
        self.package.body.sender_client_credential.user()
    }
}

/// What one batch of the connection queue leaves behind, written all at once: a crash either
/// keeps all of it or none, and then the batch is fetched and handled again.
#[derive(Debug, Default)]
pub struct ConnectionBatch {
    pub requests: Vec<PendingRequest>,
    /// Every request opened, by hash, with the end of validity of the package it was sealed to.
    pub seen: Vec<([u8; 32], Timestamp)>,
    /// One-time keys a request was opened with: the AS takes no other request for them.
    pub used_keys: Vec<ConnectionPackageHash>,
    pub position: QueuePosition,
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
    message_seqs: sled::Tree,
    member_users: sled::Tree,
}

/// One message of a group's log, as [`crate::Client::messages`] shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// The sending user.
    pub from: UserName,
    pub text: String,
    /// When this client sent or received it.
    pub at: Timestamp,
    /// Its place in the group's log, from 1.
    pub seq: u64,
    /// The queue sequence number it came with; `None` for a message this client sent.
    pub queue_seq: Option<u64>,
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
            Some(FORMAT_VERSION) => {}
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
            message_seqs: tree(TREE_MESSAGE_SEQS)?,
            member_users: tree(TREE_MEMBER_USERS)?,
            dir,
            db,
        };
        if format.is_none() {
            state.put(KEY_FORMAT, &FORMAT_VERSION)?;
        }
        Ok(state)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn identity(&self) -> Result<Option<Identity>, StateError> {
        self.get(KEY_IDENTITY)
    }

    /// Stores the identity; refuses if one is already there (atomically, so two registrations
    /// racing on one directory cannot both win).
    pub fn save_identity(&self, identity: &Identity) -> Result<(), StateError> {
        let swapped = self
            .db
            .compare_and_swap(
                KEY_IDENTITY,
                None as Option<&[u8]>,
                Some(codec::encode(identity)),
            )
            .map_err(|e| self.store_error(e))?;
        if swapped.is_err() {
            let existing = self.identity()?;
            return Err(match existing {
                Some(existing) => StateError::AlreadyRegistered {
                    dir: self.dir.clone(),
                    user: existing.user,
                    client_id: existing.client_id,
                },
                None => StateError::Corrupt {
                    dir: self.dir.clone(),
                    key: "identity".into(),
                    reason: "changed while being written".into(),
                },
            });
        }
        self.flush()
    }

    /// Refuses with [`StateError::AlreadyRegistered`] if an identity is stored.
    pub fn ensure_unregistered(&self) -> Result<(), StateError> {
        match self.identity()? {
            Some(existing) => Err(StateError::AlreadyRegistered {
                dir: self.dir.clone(),
                user: existing.user,
                client_id: existing.client_id,
            }),
            None => Ok(()),
        }
    }

    /// How far this client has read one of its queues.
    pub fn queue_position(&self, queue: QueueKind) -> Result<QueuePosition, StateError> {
        Ok(self.get(position_key(queue))?.unwrap_or_default())
    }

    pub fn set_queue_position(
        &self,
        queue: QueueKind,
        position: &QueuePosition,
    ) -> Result<(), StateError> {
        self.put(position_key(queue), position)
    }

    /// Stores the secret keys of connection packages about to be published.
    pub fn save_connection_keys(
        &self,
        keys: &[(ConnectionPackageHash, ConnectionKey)],
    ) -> Result<(), StateError> {
        let mut batch = sled::Batch::default();
        for (hash, key) in keys {
            batch.insert(&hash.0, codec::encode(key));
        }
        self.connection_keys
            .apply_batch(batch)
            .map_err(|e| self.store_error(e))?;
        self.flush()
    }

    pub fn connection_key(
        &self,
        package: &ConnectionPackageHash,
    ) -> Result<Option<ConnectionKey>, StateError> {
        self.tree_get(&self.connection_keys, TREE_CONNECTION_KEYS, &package.0)
    }

    /// Every stored connection key, by package hash.
    pub fn connection_keys(
        &self,
    ) -> Result<Vec<(ConnectionPackageHash, ConnectionKey)>, StateError> {
        self.tree_all(&self.connection_keys, TREE_CONNECTION_KEYS)?
            .into_iter()
            .map(|(key, value)| {
                let hash = <[u8; 32]>::try_from(key.as_ref()).map_err(|_| {
                    self.corrupt(TREE_CONNECTION_KEYS, &key, "the key is not a package hash")
                })?;
                Ok((ConnectionPackageHash(hash), value))
            })
            .collect()
    }

    /// Whether a sealed request with this hash was received before.
    pub fn request_seen(&self, hash: &[u8; 32]) -> Result<bool, StateError> {
        self.seen_requests
            .contains_key(hash)
            .map_err(|e| self.store_error(e))
    }

    /// Whether a pending request has this id.
    pub fn request_id_taken(&self, id: &str) -> Result<bool, StateError> {
        self.requests
            .contains_key(id.as_bytes())
            .map_err(|e| self.store_error(e))
    }

    /// Writes what a batch of the connection queue produced, and the position after it, at once.
    pub fn save_connection_batch(&self, batch: &ConnectionBatch) -> Result<(), StateError> {
        let position = codec::encode(&batch.position);
        let outcome: Result<(), TransactionError<()>> = (
            &*self.db,
            &self.connection_keys,
            &self.requests,
            &self.seen_requests,
        )
            .transaction(|(db, keys, requests, seen)| {
                for request in &batch.requests {
                    requests.insert(request.id.as_bytes(), codec::encode(request))?;
                }
                for (hash, not_after) in &batch.seen {
                    seen.insert(hash, codec::encode(not_after))?;
                }
                for used in &batch.used_keys {
                    keys.remove(&used.0)?;
                }
                db.insert(KEY_CONNECTION_QUEUE, position.clone())?;
                Ok::<_, ConflictableTransactionError<()>>(())
            });
        outcome.map_err(|e| match e {
            TransactionError::Storage(e) => self.store_error(e),
            TransactionError::Abort(()) => self.corrupt(TREE_REQUESTS, b"", "transaction aborted"),
        })?;
        self.flush()
    }

    /// The requests waiting for a decision, oldest first.
    pub fn pending_requests(&self) -> Result<Vec<PendingRequest>, StateError> {
        let mut requests: Vec<PendingRequest> = self
            .tree_all(&self.requests, TREE_REQUESTS)?
            .into_iter()
            .map(|(_, request)| request)
            .collect();
        requests.sort_by(|a, b| (a.received_at, &a.id).cmp(&(b.received_at, &b.id)));
        Ok(requests)
    }

    pub fn pending_request(&self, id: &str) -> Result<Option<PendingRequest>, StateError> {
        self.tree_get(&self.requests, TREE_REQUESTS, id.as_bytes())
    }

    /// Deletes a pending request; false if there was none with this id.
    pub fn remove_request(&self, id: &str) -> Result<bool, StateError> {
        let removed = self
            .requests
            .remove(id.as_bytes())
            .map_err(|e| self.store_error(e))?;
        self.flush()?;
        Ok(removed.is_some())
    }

    /// Forgets the connection keys, and the record of requests received, of packages whose
    /// validity ended before `before`: the AS queues no more requests for them.
    pub fn prune_connection_keys(&self, before: Timestamp) -> Result<usize, StateError> {
        let mut pruned = 0;
        for (hash, key) in self.connection_keys()? {
            if key.not_after < before {
                self.connection_keys
                    .remove(hash.0)
                    .map_err(|e| self.store_error(e))?;
                pruned += 1;
            }
        }
        for (hash, not_after) in
            self.tree_all::<Timestamp>(&self.seen_requests, TREE_SEEN_REQUESTS)?
        {
            if not_after < before {
                self.seen_requests
                    .remove(hash)
                    .map_err(|e| self.store_error(e))?;
            }
        }
        self.flush()?;
        Ok(pruned)
    }

    /// The tree of the openmls storage.
    pub fn mls_tree(&self) -> Result<sled::Tree, StateError> {
        self.db.open_tree(TREE_MLS).map_err(|e| self.store_error(e))
    }

    pub fn mls_identity(&self) -> Result<Option<MlsIdentity>, StateError> {
        self.get(KEY_MLS_IDENTITY)
    }

    pub fn save_mls_identity(&self, identity: &MlsIdentity) -> Result<(), StateError> {
        self.put(KEY_MLS_IDENTITY, identity)
    }

    /// Every connection, oldest first.
    pub fn contacts(&self) -> Result<Vec<Contact>, StateError> {
        self.group_records(&self.contacts, TREE_CONTACTS, |c: &Contact| {
            (c.since, c.group_id.clone())
        })
    }

    pub fn contact(&self, group_id: &[u8]) -> Result<Option<Contact>, StateError> {
        self.tree_get(&self.contacts, TREE_CONTACTS, group_id)
    }

    pub fn save_contact(&self, contact: &Contact) -> Result<(), StateError> {
        self.save_group_record(&self.contacts, &contact.group_id, contact)
    }

    /// Every named group, oldest first.
    pub fn named_groups(&self) -> Result<Vec<NamedGroup>, StateError> {
        self.group_records(&self.groups, TREE_GROUPS, |g: &NamedGroup| {
            (g.since, g.group_id.clone())
        })
    }

    pub fn named_group(&self, group_id: &[u8]) -> Result<Option<NamedGroup>, StateError> {
        self.tree_get(&self.groups, TREE_GROUPS, group_id)
    }

    pub fn save_named_group(&self, group: &NamedGroup) -> Result<(), StateError> {
        self.save_group_record(&self.groups, &group.group_id, group)
    }

    /// Every record of a per-group tree, ordered by `order` (when made, then id).
    fn group_records<T: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        name: &str,
        order: impl Fn(&T) -> (Timestamp, Vec<u8>),
    ) -> Result<Vec<T>, StateError> {
        let mut records: Vec<T> = self
            .tree_all(tree, name)?
            .into_iter()
            .map(|(_, record)| record)
            .collect();
        records.sort_by_key(|r| order(r));
        Ok(records)
    }

    fn save_group_record<T: Serialize>(
        &self,
        tree: &sled::Tree,
        group_id: &[u8],
        record: &T,
    ) -> Result<(), StateError> {
        tree.insert(group_id, codec::encode(record))
            .map_err(|e| self.store_error(e))?;
        self.flush()
    }

    /// How to reach any group this client is in, connection or named.
    pub fn group_access(&self, group_id: &[u8]) -> Result<Option<GroupAccess>, StateError> {
        if let Some(contact) = self.contact(group_id)? {
            return Ok(Some(contact.access()));
        }
        Ok(self.named_group(group_id)?.map(|group| group.access()))
    }

    /// Appends a message to a group's log. A message that came from the queue is stored once
    /// per queue sequence number: `None` if that one is stored already.
    pub fn append_message(
        &self,
        group_id: &[u8],
        from: &UserName,
        text: &str,
        queue_seq: Option<u64>,
    ) -> Result<Option<StoredMessage>, StateError> {
        let prefix = group_prefix(group_id);
        let last = self
            .messages
            .scan_prefix(&prefix)
            .next_back()
            .transpose()
            .map_err(|e| self.store_error(e))?;
        let seq = match last {
            Some((key, _)) => {
                let order: [u8; 8] = key[prefix.len()..].try_into().map_err(|_| {
                    self.corrupt(TREE_MESSAGES, &key, "the key holds no log position")
                })?;
                u64::from_be_bytes(order) + 1
            }
            None => 1,
        };
        let message = StoredMessage {
            from: from.clone(),
            text: text.to_owned(),
            at: Timestamp::now(),
            seq,
            queue_seq,
        };
        let mut key = prefix;
        key.extend_from_slice(&seq.to_be_bytes());
        let value = codec::encode(&message);
        let outcome: Result<bool, TransactionError<()>> = (&self.messages, &self.message_seqs)
            .transaction(|(messages, seqs)| {
                if let Some(queue_seq) = queue_seq {
                    if seqs.get(queue_seq.to_be_bytes())?.is_some() {
                        return Ok(false);
                    }
                    seqs.insert(&queue_seq.to_be_bytes(), &[])?;
                }
                messages.insert(key.as_slice(), value.clone())?;
                Ok::<_, ConflictableTransactionError<()>>(true)
            });
        let stored = outcome.map_err(|e| match e {
            TransactionError::Storage(e) => self.store_error(e),
            TransactionError::Abort(()) => self.corrupt(TREE_MESSAGES, b"", "transaction aborted"),
        })?;
        self.flush()?;
        Ok(stored.then_some(message))
    }

    /// A group's log, in order.
    pub fn messages(&self, group_id: &[u8]) -> Result<Vec<StoredMessage>, StateError> {
        self.messages
            .scan_prefix(group_prefix(group_id))
            .map(|entry| {
                let (key, bytes) = entry.map_err(|e| self.store_error(e))?;
                codec::decode(&bytes).map_err(|e| self.corrupt(TREE_MESSAGES, &key, &e.to_string()))
            })
            .collect()
    }

    /// The user behind a member's leaf pseudonym in a group, as learnt before.
    pub fn member_user(
        &self,
        group_id: &[u8],
        pseudonym: &[u8],
    ) -> Result<Option<UserName>, StateError> {
        let mut key = group_prefix(group_id);
        key.extend_from_slice(pseudonym);
        self.tree_get(&self.member_users, TREE_MEMBER_USERS, &key)
    }

    pub fn save_member_users(
        &self,
        group_id: &[u8],
        users: &[(Vec<u8>, UserName)],
    ) -> Result<(), StateError> {
        let mut batch = sled::Batch::default();
        for (pseudonym, user) in users {
            let mut key = group_prefix(group_id);
            key.extend_from_slice(pseudonym);
            batch.insert(key, codec::encode(user));
        }
        self.member_users
            .apply_batch(batch)
            .map_err(|e| self.store_error(e))?;
        self.flush()
    }

    /// Deletes every pending request inviting into `group_id`; answers how many there were.
    pub fn remove_requests_for_group(&self, group_id: &[u8]) -> Result<usize, StateError> {
        let mut removed = 0;
        for request in self.pending_requests()? {
            if request.package.body.connection_group_id == group_id {
                self.requests
                    .remove(request.id.as_bytes())
                    .map_err(|e| self.store_error(e))?;
                removed += 1;
            }
        }
        self.flush()?;
        Ok(removed)
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
        self.db
            .insert(key, codec::encode(value))
            .map_err(|e| self.store_error(e))?;
        self.flush()
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

fn position_key(queue: QueueKind) -> &'static [u8] {
    match queue {
        QueueKind::Messages => KEY_QUEUE,
        QueueKind::Connections => KEY_CONNECTION_QUEUE,
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

#[cfg(test)]
mod tests {
    use super::*;
    use roost_protocol::credentials::Validity;

    fn sample_identity() -> Identity {
        let user: UserName = "alice@a.test".parse().unwrap();
        let key = SigningKey::generate();
        let (queue_key, _) = HpkeSecretKey::generate();
        let client_id = ClientId::random();
        let credential = ClientCredential::issue(
            user.clone(),
            client_id,
            key.verifying_key(),
            Validity::starting_now(3600),
            &SigningKey::generate(),
        );
        Identity {
            user,
            client_id,
            signing_key: key,
            queue_key,
            credential,
            server_url: "http://127.0.0.1:1".into(),
        }
    }

    #[test]
    fn identity_and_position_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let identity = sample_identity();
        {
            let state = State::open_or_create(dir.path()).unwrap();
            assert!(state.identity().unwrap().is_none());
            state.save_identity(&identity).unwrap();
            state
                .set_queue_position(
                    QueueKind::Messages,
                    &QueuePosition {
                        received: Some(7),
                        acked: Some(5),
                    },
                )
                .unwrap();
        }
        let state = State::open(dir.path()).unwrap();
        let back = state.identity().unwrap().unwrap();
        assert_eq!(back.user, identity.user);
        assert_eq!(back.client_id, identity.client_id);
        assert_eq!(back.credential, identity.credential);
        assert_eq!(
            back.signing_key.verifying_key(),
            identity.signing_key.verifying_key()
        );
        assert_eq!(back.queue_key.public_key(), identity.queue_key.public_key());
        assert_eq!(back.server_url, identity.server_url);
        let position = state.queue_position(QueueKind::Messages).unwrap();
        assert_eq!(position.next_from(), 8);
        assert_eq!(position.pending_ack(), Some(7));
        // The connection queue has a position of its own.
        assert_eq!(
            state.queue_position(QueueKind::Connections).unwrap(),
            QueuePosition::default()
        );
    }

    #[test]
    fn a_second_identity_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open_or_create(dir.path()).unwrap();
        let first = sample_identity();
        state.save_identity(&first).unwrap();
        assert!(matches!(
            state.ensure_unregistered(),
            Err(StateError::AlreadyRegistered { .. })
        ));
        let err = state.save_identity(&sample_identity()).unwrap_err();
        assert!(
            matches!(err, StateError::AlreadyRegistered { client_id, .. } if client_id == first.client_id)
        );
        assert_eq!(
            state.identity().unwrap().unwrap().client_id,
            first.client_id
        );
    }

    #[test]
    fn an_unknown_format_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        State::open_or_create(dir.path())
            .unwrap()
            .put_raw(KEY_FORMAT, codec::encode(&99u32));
        let err = State::open_or_create(dir.path()).unwrap_err();
        assert!(
            matches!(err, StateError::UnsupportedFormat { found: 99, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("format 99"), "{err}");
    }

    #[test]
    fn data_without_a_format_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.insert(b"something", b"else".to_vec()).unwrap();
            db.flush().unwrap();
        }
        assert!(matches!(
            State::open_or_create(dir.path()),
            Err(StateError::NotAStateDir(_))
        ));
    }

    #[test]
    fn an_unregistered_directory_is_named_as_such_and_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nothing-here");
        let err = State::open(&missing).unwrap_err();
        assert!(matches!(err, StateError::NotRegistered(_)));
        assert!(err.to_string().contains("roost-client register"));
        assert!(!missing.exists());

        let empty = dir.path().join("empty");
        drop(State::open_or_create(&empty).unwrap());
        assert!(matches!(
            State::open(&empty),
            Err(StateError::NotRegistered(_))
        ));
    }

    #[cfg(unix)]
    #[test]
    fn the_directory_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        drop(State::open_or_create(&state_dir).unwrap());
        let mode = std::fs::metadata(&state_dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn a_directory_in_use_is_named_after_a_wait() {
        let dir = tempfile::tempdir().unwrap();
        let _held = State::open_or_create(dir.path()).unwrap();
        let started = Instant::now();
        let err = State::open_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, StateError::Locked(_)), "{err}");
        assert!(started.elapsed() >= LOCK_WAIT);
    }

    #[test]
    fn a_directory_can_be_reopened_at_once_after_a_drop() {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..20 {
            let state = State::open_or_create(dir.path()).unwrap();
            state
                .set_queue_position(QueueKind::Messages, &QueuePosition::default())
                .unwrap();
        }
    }

    fn sample_request(id: &str, received_at: u64) -> PendingRequest {
        use roost_protocol::connection::{ConnectionEstablishmentBody, EarKey};
        let sender = sample_identity();
        PendingRequest {
            id: id.into(),
            received_at: Timestamp(received_at),
            package: ConnectionEstablishmentPackage::new(
                ConnectionEstablishmentBody {
                    sender_client_credential: sender.credential,
                    connection_group_id: vec![1; 16],
                    group_state_ear_key: EarKey::random(),
                    credential_ear_key: EarKey::random(),
                    responder: "bob@b.test".parse().unwrap(),
                    connection_package: ConnectionPackageHash([7; 32]),
                },
                &sender.signing_key,
            ),
        }
    }

    fn key(last_resort: bool, not_after: u64) -> ConnectionKey {
        ConnectionKey {
            secret: HpkeSecretKey::generate().0,
            last_resort,
            not_after: Timestamp(not_after),
        }
    }

    #[test]
    fn a_connection_batch_is_written_at_once_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (used, kept) = (
            ConnectionPackageHash([1; 32]),
            ConnectionPackageHash([2; 32]),
        );
        let later = sample_request("bbbbbbbb", 20);
        let earlier = sample_request("aaaaaaaa", 10);
        {
            let state = State::open_or_create(dir.path()).unwrap();
            state
                .save_connection_keys(&[(used, key(false, 100)), (kept, key(true, 100))])
                .unwrap();
            state
                .save_connection_batch(&ConnectionBatch {
                    requests: vec![later.clone(), earlier.clone()],
                    seen: vec![([9; 32], Timestamp(100))],
                    used_keys: vec![used],
                    position: QueuePosition {
                        received: Some(3),
                        acked: None,
                    },
                })
                .unwrap();
        }
        let state = State::open_or_create(dir.path()).unwrap();
        assert!(state.connection_key(&used).unwrap().is_none());
        assert!(state.connection_key(&kept).unwrap().unwrap().last_resort);
        assert!(state.request_seen(&[9; 32]).unwrap());
        assert!(!state.request_seen(&[8; 32]).unwrap());
        assert_eq!(
            state.pending_requests().unwrap(),
            vec![earlier.clone(), later.clone()]
        );
        assert!(state.request_id_taken("aaaaaaaa").unwrap());
        assert_eq!(
            state
                .queue_position(QueueKind::Connections)
                .unwrap()
                .received,
            Some(3)
        );
        assert_eq!(
            state.queue_position(QueueKind::Messages).unwrap().received,
            None
        );

        assert!(state.remove_request("aaaaaaaa").unwrap());
        assert!(!state.remove_request("aaaaaaaa").unwrap());
        assert_eq!(state.pending_requests().unwrap(), vec![later]);
    }

    #[test]
    fn keys_and_seen_requests_are_pruned_only_past_their_packages_end() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open_or_create(dir.path()).unwrap();
        let (old, new) = (
            ConnectionPackageHash([1; 32]),
            ConnectionPackageHash([2; 32]),
        );
        state
            .save_connection_keys(&[(old, key(true, 50)), (new, key(true, 150))])
            .unwrap();
        state
            .save_connection_batch(&ConnectionBatch {
                seen: vec![([1; 32], Timestamp(50)), ([2; 32], Timestamp(150))],
                ..ConnectionBatch::default()
            })
            .unwrap();
        assert_eq!(state.prune_connection_keys(Timestamp(100)).unwrap(), 1);
        assert!(state.connection_key(&old).unwrap().is_none());
        assert!(state.connection_key(&new).unwrap().is_some());
        assert!(!state.request_seen(&[1; 32]).unwrap());
        assert!(state.request_seen(&[2; 32]).unwrap());
        assert_eq!(state.connection_keys().unwrap().len(), 1);
    }

    #[test]
    fn a_corrupt_record_is_reported_not_panicked_on() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open_or_create(dir.path()).unwrap();
        state.put_raw(KEY_IDENTITY, vec![0xff, 0x01]);
        assert!(matches!(state.identity(), Err(StateError::Corrupt { .. })));
    }

    #[test]
    fn a_message_log_keeps_order_per_group_and_stores_a_queue_message_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open_or_create(dir.path()).unwrap();
        let alice: UserName = "alice@a.test".parse().unwrap();
        let bob: UserName = "bob@a.test".parse().unwrap();
        let first = state.append_message(b"g1", &bob, "hi", Some(7)).unwrap();
        assert_eq!(first.map(|m| m.seq), Some(1));
        // The same queue message again, as after a crash before the position was saved.
        assert_eq!(
            state.append_message(b"g1", &bob, "hi", Some(7)).unwrap(),
            None
        );
        let own = state.append_message(b"g1", &alice, "hello", None).unwrap();
        assert_eq!(own.map(|m| m.seq), Some(2));
        state.append_message(b"g2", &bob, "other", Some(8)).unwrap();
        drop(state);
        let state = State::open_or_create(dir.path()).unwrap();
        let log: Vec<_> = state
            .messages(b"g1")
            .unwrap()
            .into_iter()
            .map(|m| (m.from, m.text, m.seq))
            .collect();
        assert_eq!(
            log,
            vec![(bob.clone(), "hi".into(), 1), (alice, "hello".into(), 2)]
        );
        assert_eq!(state.messages(b"g2").unwrap().len(), 1);
        assert!(state.messages(b"g3").unwrap().is_empty());
    }
}
