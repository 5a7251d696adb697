//! Persistent MLS state: an openmls `StorageProvider` over a sled tree, with buffered,
//! all-or-nothing writes.
//!
//! openmls keeps every piece of a group's state (tree, secrets, own leaf, queued proposals, key
//! packages, …) in its storage provider and writes it piece by piece while an operation runs.
//! The trait has no transactions, so writing straight to disk would let a crash in the middle of,
//! say, merging a commit leave half a group behind: a new tree with the old epoch secrets.
//!
//! [`SledMlsStorage`] therefore never writes to sled while openmls works. Every write and delete
//! goes to an in-memory overlay of pending changes, which reads consult first. Once an MLS
//! operation has finished, [`SledMlsStorage::commit`] applies the whole overlay as one
//! `sled::Batch` (atomic, also across a crash) and flushes; if the operation failed,
//! [`SledMlsStorage::discard`] drops it. The usage pattern:
//!
//! ```ignore
//! let provider = MlsProvider::new(db.open_tree("mls")?)?;
//! let mut group = MlsGroup::load(provider.storage(), &group_id)?.ok_or(..)?;
//! // Any error type with `From<MlsStorageError>` will do, e.g. the application's own.
//! let message = provider.with_transaction(|p| -> Result<_, AppError> {
//!     Ok(group.create_message(p, &signer, b"hi")?)
//! })?;
//! // ... or by hand: run one operation, then `provider.commit()?` (or `discard()` on error).
//! ```
//!
//! Only a committed operation is ever seen after a restart; a crash (or a dropped storage) before
//! `commit` leaves the state exactly as it was before the operation. After `discard` the
//! in-memory `MlsGroup` is *ahead* of storage: reload it with `MlsGroup::load`.
//!
//! One overlay per storage: run one operation at a time on a given `SledMlsStorage` (openmls
//! needs `&mut MlsGroup` anyway); interleaved operations would be committed together.
//!
//! What "flushed" means: `sled::Tree::flush` hands the data to the OS (`sync_file_range` on
//! Linux), which survives a killed process; sled fsyncs in the background every 500 ms (see
//! [`crate::store`]).
//!
//! # Layout of the tree
//!
//! Every key is a one-byte label naming the kind of value, followed by the serde_json encoding of
//! openmls's key for it (JSON is self-delimiting, so composite keys are the JSON of a tuple and
//! never collide). Values are serde_json (openmls's types implement serde, and it is the encoding
//! openmls's own storages use); all encoding goes through one pair of helpers, `encode` and
//! `decode`.
//!
//! | label | key after the label | value |
//! | --- | --- | --- |
//! | `0x00` | `"format"` | `[layout version, openmls storage version]`, checked at open |
//! | `0x01` | group id | `MlsGroupJoinConfig` |
//! | `0x02` | group id | own leaf nodes (JSON array) |
//! | `0x03` | group id | references of queued proposals, in queue order (JSON array) |
//! | `0x04` | `[group id, proposal ref]` | queued proposal |
//! | `0x05` | group id | tree (`TreeSync`) |
//! | `0x06` | group id | interim transcript hash |
//! | `0x07` | group id | group context |
//! | `0x08` | group id | confirmation tag |
//! | `0x09` | group id | group state |
//! | `0x0a` | group id | message secrets |
//! | `0x0b` | group id | resumption PSK store |
//! | `0x0c` | group id | own leaf index |
//! | `0x0d` | group id | group epoch secrets |
//! | `0x10` | signature public key id | signature key pair |
//! | `0x11` | encryption public key | HPKE key pair (update leaf nodes) |
//! | `0x12` | `[group id, epoch, leaf index]` | epoch HPKE key pairs (JSON array) |
//! | `0x13` | key package hash reference | key package bundle (with private keys) |
//! | `0x14` | PSK id | PSK bundle |
//!
//! The tree holds secret keys in the clear, like the rest of the client's state directory.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Mutex, MutexGuard},
};

use openmls::group::{WireFormatPolicy, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY};
use openmls_rust_crypto::RustCrypto;
use openmls_traits::{storage::CURRENT_VERSION, OpenMlsProvider};
use serde::{de::DeserializeOwned, Serialize};

use crate::store::StagedWrites;

mod provider;
#[cfg(test)]
mod tests;

/// The wire-format policy of Roost groups: handshake messages (proposals, commits) go out as
/// `PublicMessage`, application messages are always `PrivateMessage` (MLS never sends them in
/// the clear, whatever the policy).
///
/// The delivery service must read commits to track each group's public state (the tree and
/// group context), to check that commits apply, and to serve group info for external joins;
/// with the default policy everything is encrypted and the DS is blind. Incoming handshake
/// messages are accepted in both framings ("mixed"): external commits are always public anyway.
pub const WIRE_FORMAT_POLICY: WireFormatPolicy = MIXED_PLAINTEXT_WIRE_FORMAT_POLICY;

/// The version of the key layout described in the module documentation. Stored, together with
/// openmls's storage version, in the format record; a tree written with other versions is refused.
pub const LAYOUT_VERSION: u32 = 1;

/// What can go wrong in the MLS store. Stored values that do not decode are reported, never
/// trusted or unwrapped.
#[derive(Debug, thiserror::Error)]
pub enum MlsStorageError {
    #[error("the MLS store failed: {0}")]
    Store(#[from] sled::Error),
    #[error("cannot encode {what} for the MLS store: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("the MLS store holds an unreadable {what}: {source}")]
    Corrupt {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("the MLS store is inconsistent: {0}")]
    Inconsistent(&'static str),
    #[error("the MLS store was written in layout {found_layout} with openmls storage version {found_openmls}; this build reads only layout {LAYOUT_VERSION} with version {CURRENT_VERSION}")]
    UnsupportedFormat {
        found_layout: u32,
        found_openmls: u16,
    },
    #[error("the tree holds data but no MLS format record; it is not an MLS store")]
    NotAnMlsStore,
}

/// One kind of stored value: its key label and a name for error messages.
#[derive(Clone, Copy)]
struct Kind {
    label: u8,
    name: &'static str,
}

const fn kind(label: u8, name: &'static str) -> Kind {
    Kind { label, name }
}

const META: Kind = kind(0x00, "format record");
const JOIN_CONFIG: Kind = kind(0x01, "group join config");
const OWN_LEAF_NODES: Kind = kind(0x02, "list of own leaf nodes");
const PROPOSAL_QUEUE: Kind = kind(0x03, "proposal queue");
const QUEUED_PROPOSAL: Kind = kind(0x04, "queued proposal");
const TREE: Kind = kind(0x05, "ratchet tree");
const INTERIM_TRANSCRIPT_HASH: Kind = kind(0x06, "interim transcript hash");
const GROUP_CONTEXT: Kind = kind(0x07, "group context");
const CONFIRMATION_TAG: Kind = kind(0x08, "confirmation tag");
const GROUP_STATE: Kind = kind(0x09, "group state");
const MESSAGE_SECRETS: Kind = kind(0x0a, "message secrets");
const RESUMPTION_PSK_STORE: Kind = kind(0x0b, "resumption PSK store");
const OWN_LEAF_INDEX: Kind = kind(0x0c, "own leaf index");
const GROUP_EPOCH_SECRETS: Kind = kind(0x0d, "group epoch secrets");
const SIGNATURE_KEY_PAIR: Kind = kind(0x10, "signature key pair");
const ENCRYPTION_KEY_PAIR: Kind = kind(0x11, "encryption key pair");
const EPOCH_KEY_PAIRS: Kind = kind(0x12, "list of epoch encryption key pairs");
const KEY_PACKAGE: Kind = kind(0x13, "key package");
const PSK: Kind = kind(0x14, "PSK");

const META_FORMAT_KEY: &str = "format";

// --- the one place values and keys become bytes -------------------------------------------------

/// Encodes a value (or key part) for the store.
fn encode<T: Serialize + ?Sized>(
    what: &'static str,
    value: &T,
) -> Result<Vec<u8>, MlsStorageError> {
    serde_json::to_vec(value).map_err(|source| MlsStorageError::Encode { what, source })
}

/// Decodes a stored value; anything that does not decode is corrupt.
fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, MlsStorageError> {
    serde_json::from_slice(bytes).map_err(|source| MlsStorageError::Corrupt { what, source })
}

/// The element of a stored list, in the form lists are stored in (so elements can be compared
/// and appended without knowing their type).
fn list_element<T: Serialize + ?Sized>(
    what: &'static str,
    value: &T,
) -> Result<serde_json::Value, MlsStorageError> {
    serde_json::to_value(value).map_err(|source| MlsStorageError::Encode { what, source })
}

/// The full store key of a value: label ‖ JSON of openmls's key.
fn storage_key<K: Serialize + ?Sized>(kind: Kind, key: &K) -> Result<Vec<u8>, MlsStorageError> {
    let mut out = vec![kind.label];
    out.extend_from_slice(&encode(kind.name, key)?);
    Ok(out)
}

// --- the storage -------------------------------------------------------------------------------

/// Pending writes: `Some(value)` to insert, `None` to delete.
type Overlay = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// openmls state in a sled tree, with writes buffered until [`commit`](Self::commit).
pub struct SledMlsStorage {
    tree: sled::Tree,
    pending: Mutex<Overlay>,
}

impl fmt::Debug for SledMlsStorage {
    // Never prints values: they hold secret keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledMlsStorage")
            .field("tree", &String::from_utf8_lossy(&self.tree.name()))
            .field("pending_writes", &self.lock().len())
            .finish()
    }
}

impl SledMlsStorage {
    /// Opens the MLS store in `tree` (the caller passes `db.open_tree("mls")`). An empty tree
    /// gets the format record; a tree with another format, or data but no format record, is
    /// refused.
    pub fn open(tree: sled::Tree) -> Result<Self, MlsStorageError> {
        let format_key = storage_key(META, META_FORMAT_KEY)?;
        match tree.get(&format_key)? {
            Some(bytes) => {
                let (found_layout, found_openmls): (u32, u16) = decode(META.name, &bytes)?;
                if (found_layout, found_openmls) != (LAYOUT_VERSION, CURRENT_VERSION) {
                    return Err(MlsStorageError::UnsupportedFormat {
                        found_layout,
                        found_openmls,
                    });
                }
            }
            None if tree.is_empty() => {
                // Needs no flush of its own: it reaches the disk with the first commit, and
                // until then the tree is empty anyway.
                tree.insert(
                    format_key,
                    encode(META.name, &(LAYOUT_VERSION, CURRENT_VERSION))?,
                )?;
            }
            None => return Err(MlsStorageError::NotAnMlsStore),
        }
        Ok(Self {
            tree,
            pending: Mutex::new(BTreeMap::new()),
        })
    }

    /// Applies all pending writes as one atomic sled batch and flushes. On a store error the
    /// pending writes are kept (retry, or [`discard`](Self::discard)); if only the flush
    /// fails, the writes are applied but may not have reached the disk.
    pub fn commit(&self) -> Result<(), MlsStorageError> {
        let mut pending = self.lock();
        if pending.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (key, value) in pending.iter() {
            match value {
                Some(value) => batch.insert(key.as_slice(), value.as_slice()),
                None => batch.remove(key.as_slice()),
            }
        }
        self.tree.apply_batch(batch)?;
        pending.clear();
        drop(pending);
        self.tree.flush()?;
        Ok(())
    }

    /// Drops all pending writes: storage is back to the last commit. An `MlsGroup` that ran
    /// the discarded operation is now ahead of storage and must be reloaded.
    pub fn discard(&self) {
        self.lock().clear();
    }

    /// Takes the pending writes out, to be kept until [`apply`](Self::apply)ed (a commit the
    /// DS has yet to take); storage is back to the last commit, as after a discard.
    pub fn take_pending(&self) -> StagedWrites {
        std::mem::take(&mut *self.lock()).into_iter().collect()
    }

    /// Applies writes taken with [`take_pending`](Self::take_pending), as one atomic batch,
    /// and flushes. Applying them twice changes nothing more.
    pub fn apply(&self, writes: &StagedWrites) -> Result<(), MlsStorageError> {
        let mut batch = sled::Batch::default();
        for (key, value) in writes {
            match value {
                Some(value) => batch.insert(key.as_slice(), value.as_slice()),
                None => batch.remove(key.as_slice()),
            }
        }
        self.tree.apply_batch(batch)?;
        self.tree.flush()?;
        Ok(())
    }

    /// Whether there are writes not yet committed.
    pub fn has_pending(&self) -> bool {
        !self.lock().is_empty()
    }

    /// Runs one MLS operation: commits its writes if `f` returns `Ok` (a failed commit becomes
    /// the error, and the writes are discarded), discards them if it returns `Err` or panics.
    /// Writes pending before the call are committed (or discarded) with it.
    pub fn with_transaction<T, E>(&self, f: impl FnOnce(&Self) -> Result<T, E>) -> Result<T, E>
    where
        E: From<MlsStorageError>,
    {
        let guard = DiscardOnDrop(self);
        let value = f(self)?;
        self.commit()?;
        drop(guard);
        Ok(value)
    }

    /// The overlay (whole after every write, so a panic elsewhere while it was held left it
    /// intact).
    fn lock(&self) -> MutexGuard<'_, Overlay> {
        crate::lock(&self.pending)
    }

    /// Reads a raw value: the overlay first, then the tree.
    fn get_raw(&self, pending: &Overlay, key: &[u8]) -> Result<Option<Vec<u8>>, MlsStorageError> {
        match pending.get(key) {
            Some(value) => Ok(value.clone()),
            None => Ok(self.tree.get(key)?.map(|v| v.to_vec())),
        }
    }

    fn write<K: Serialize + ?Sized, V: Serialize + ?Sized>(
        &self,
        kind: Kind,
        key: &K,
        value: &V,
    ) -> Result<(), MlsStorageError> {
        let key = storage_key(kind, key)?;
        let value = encode(kind.name, value)?;
        self.lock().insert(key, Some(value));
        Ok(())
    }

    fn read<K: Serialize + ?Sized, V: DeserializeOwned>(
        &self,
        kind: Kind,
        key: &K,
    ) -> Result<Option<V>, MlsStorageError> {
        let key = storage_key(kind, key)?;
        let raw = self.get_raw(&self.lock(), &key)?;
        raw.map(|bytes| decode(kind.name, &bytes)).transpose()
    }

    fn delete<K: Serialize + ?Sized>(&self, kind: Kind, key: &K) -> Result<(), MlsStorageError> {
        let key = storage_key(kind, key)?;
        self.lock().insert(key, None);
        Ok(())
    }

    /// Reads a stored list; a missing list is empty.
    fn read_list<K: Serialize + ?Sized, V: DeserializeOwned>(
        &self,
        kind: Kind,
        key: &K,
    ) -> Result<Vec<V>, MlsStorageError> {
        Ok(self.read(kind, key)?.unwrap_or_default())
    }

    /// Changes a stored list in place (read, change, write under one lock).
    fn update_list<K: Serialize + ?Sized>(
        &self,
        kind: Kind,
        key: &K,
        change: impl FnOnce(&mut Vec<serde_json::Value>),
    ) -> Result<(), MlsStorageError> {
        let key = storage_key(kind, key)?;
        let mut pending = self.lock();
        let mut list: Vec<serde_json::Value> = match self.get_raw(&pending, &key)? {
            Some(bytes) => decode(kind.name, &bytes)?,
            None => Vec::new(),
        };
        change(&mut list);
        let value = encode(kind.name, &list)?;
        pending.insert(key, Some(value));
        Ok(())
    }

    fn append<K: Serialize + ?Sized, V: Serialize + ?Sized>(
        &self,
        kind: Kind,
        key: &K,
        item: &V,
    ) -> Result<(), MlsStorageError> {
        let item = list_element(kind.name, item)?;
        self.update_list(kind, key, |list| list.push(item))
    }

    fn remove_from_list<K: Serialize + ?Sized, V: Serialize + ?Sized>(
        &self,
        kind: Kind,
        key: &K,
        item: &V,
    ) -> Result<(), MlsStorageError> {
        let item = list_element(kind.name, item)?;
        self.update_list(kind, key, |list| list.retain(|stored| *stored != item))
    }
}

/// Discards pending writes unless defused: covers errors and panics in a transaction.
struct DiscardOnDrop<'a>(&'a SledMlsStorage);

impl Drop for DiscardOnDrop<'_> {
    fn drop(&mut self) {
        // After a successful commit the overlay is empty and this is a no-op.
        self.0.discard();
    }
}

// --- the provider ------------------------------------------------------------------------------

/// The provider passed to openmls calls: RustCrypto for crypto and randomness, a
/// [`SledMlsStorage`] for state. Commit its storage after every operation (see the module
/// documentation), e.g. with [`with_transaction`](Self::with_transaction).
#[derive(Debug)]
pub struct MlsProvider {
    crypto: RustCrypto,
    storage: SledMlsStorage,
}

impl MlsProvider {
    /// A provider over the MLS store in `tree` (the caller passes `db.open_tree("mls")`).
    pub fn new(tree: sled::Tree) -> Result<Self, MlsStorageError> {
        Ok(Self::with_storage(SledMlsStorage::open(tree)?))
    }

    /// A provider over an already opened storage.
    pub fn with_storage(storage: SledMlsStorage) -> Self {
        Self {
            crypto: RustCrypto::default(),
            storage,
        }
    }

    /// The MLS store (what `MlsGroup::load` and friends take).
    pub fn storage(&self) -> &SledMlsStorage {
        &self.storage
    }

    /// Commits the pending writes of the storage: see [`SledMlsStorage::commit`].
    pub fn commit(&self) -> Result<(), MlsStorageError> {
        self.storage.commit()
    }

    /// Discards the pending writes of the storage: see [`SledMlsStorage::discard`].
    pub fn discard(&self) {
        self.storage.discard()
    }

    /// Runs one MLS operation with this provider: commits on `Ok`, discards on `Err` (or a
    /// panic). See [`SledMlsStorage::with_transaction`].
    pub fn with_transaction<T, E>(&self, f: impl FnOnce(&Self) -> Result<T, E>) -> Result<T, E>
    where
        E: From<MlsStorageError>,
    {
        let guard = DiscardOnDrop(&self.storage);
        let value = f(self)?;
        self.storage.commit()?;
        drop(guard);
        Ok(value)
    }
}

impl OpenMlsProvider for MlsProvider {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = SledMlsStorage;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }

    fn crypto(&self) -> &Self::CryptoProvider {
        &self.crypto
    }

    fn rand(&self) -> &Self::RandProvider {
        &self.crypto
    }
}
