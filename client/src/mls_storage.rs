//! Persistent MLS state: an openmls [`StorageProvider`] over a sled tree, with buffered,
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
//! [`crate::state`]).
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
use openmls_traits::{
    storage::{traits, Key, StorageProvider, CURRENT_VERSION},
    OpenMlsProvider,
};
use serde::{de::DeserializeOwned, Serialize};

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

    /// The overlay. A poisoned lock only means a panic elsewhere while it was held; the map
    /// itself is intact, so carry on.
    fn lock(&self) -> MutexGuard<'_, Overlay> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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

/// The key of a group's epoch key pairs.
fn epoch_key_pairs_key<'a, G: Key<CURRENT_VERSION>, E: Key<CURRENT_VERSION>>(
    group_id: &'a G,
    epoch: &'a E,
    leaf_index: u32,
) -> (&'a G, &'a E, u32) {
    (group_id, epoch, leaf_index)
}

impl StorageProvider<CURRENT_VERSION> for SledMlsStorage {
    type Error = MlsStorageError;

    // --- group state: writers -------------------------------------------------------------

    fn write_mls_join_config<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        MlsGroupJoinConfig: traits::MlsGroupJoinConfig<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        config: &MlsGroupJoinConfig,
    ) -> Result<(), Self::Error> {
        self.write(JOIN_CONFIG, group_id, config)
    }

    fn append_own_leaf_node<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        LeafNode: traits::LeafNode<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        leaf_node: &LeafNode,
    ) -> Result<(), Self::Error> {
        self.append(OWN_LEAF_NODES, group_id, leaf_node)
    }

    fn queue_proposal<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
        QueuedProposal: traits::QueuedProposal<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        proposal_ref: &ProposalRef,
        proposal: &QueuedProposal,
    ) -> Result<(), Self::Error> {
        self.write(QUEUED_PROPOSAL, &(group_id, proposal_ref), proposal)?;
        // Queue each reference once, even if the same proposal is queued again.
        let item = list_element(PROPOSAL_QUEUE.name, proposal_ref)?;
        self.update_list(PROPOSAL_QUEUE, group_id, |list| {
            if !list.contains(&item) {
                list.push(item);
            }
        })
    }

    fn write_tree<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        TreeSync: traits::TreeSync<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        tree: &TreeSync,
    ) -> Result<(), Self::Error> {
        self.write(TREE, group_id, tree)
    }

    fn write_interim_transcript_hash<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        InterimTranscriptHash: traits::InterimTranscriptHash<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        interim_transcript_hash: &InterimTranscriptHash,
    ) -> Result<(), Self::Error> {
        self.write(INTERIM_TRANSCRIPT_HASH, group_id, interim_transcript_hash)
    }

    fn write_context<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        GroupContext: traits::GroupContext<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        group_context: &GroupContext,
    ) -> Result<(), Self::Error> {
        self.write(GROUP_CONTEXT, group_id, group_context)
    }

    fn write_confirmation_tag<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ConfirmationTag: traits::ConfirmationTag<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        confirmation_tag: &ConfirmationTag,
    ) -> Result<(), Self::Error> {
        self.write(CONFIRMATION_TAG, group_id, confirmation_tag)
    }

    fn write_group_state<
        GroupState: traits::GroupState<CURRENT_VERSION>,
        GroupId: traits::GroupId<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        group_state: &GroupState,
    ) -> Result<(), Self::Error> {
        self.write(GROUP_STATE, group_id, group_state)
    }

    fn write_message_secrets<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        MessageSecrets: traits::MessageSecrets<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        message_secrets: &MessageSecrets,
    ) -> Result<(), Self::Error> {
        self.write(MESSAGE_SECRETS, group_id, message_secrets)
    }

    fn write_resumption_psk_store<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ResumptionPskStore: traits::ResumptionPskStore<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        resumption_psk_store: &ResumptionPskStore,
    ) -> Result<(), Self::Error> {
        self.write(RESUMPTION_PSK_STORE, group_id, resumption_psk_store)
    }

    fn write_own_leaf_index<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        LeafNodeIndex: traits::LeafNodeIndex<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        own_leaf_index: &LeafNodeIndex,
    ) -> Result<(), Self::Error> {
        self.write(OWN_LEAF_INDEX, group_id, own_leaf_index)
    }

    fn write_group_epoch_secrets<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        GroupEpochSecrets: traits::GroupEpochSecrets<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        group_epoch_secrets: &GroupEpochSecrets,
    ) -> Result<(), Self::Error> {
        self.write(GROUP_EPOCH_SECRETS, group_id, group_epoch_secrets)
    }

    // --- crypto objects: writers ----------------------------------------------------------

    fn write_signature_key_pair<
        SignaturePublicKey: traits::SignaturePublicKey<CURRENT_VERSION>,
        SignatureKeyPair: traits::SignatureKeyPair<CURRENT_VERSION>,
    >(
        &self,
        public_key: &SignaturePublicKey,
        signature_key_pair: &SignatureKeyPair,
    ) -> Result<(), Self::Error> {
        self.write(SIGNATURE_KEY_PAIR, public_key, signature_key_pair)
    }

    fn write_encryption_key_pair<
        EncryptionKey: traits::EncryptionKey<CURRENT_VERSION>,
        HpkeKeyPair: traits::HpkeKeyPair<CURRENT_VERSION>,
    >(
        &self,
        public_key: &EncryptionKey,
        key_pair: &HpkeKeyPair,
    ) -> Result<(), Self::Error> {
        self.write(ENCRYPTION_KEY_PAIR, public_key, key_pair)
    }

    fn write_encryption_epoch_key_pairs<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        EpochKey: traits::EpochKey<CURRENT_VERSION>,
        HpkeKeyPair: traits::HpkeKeyPair<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        epoch: &EpochKey,
        leaf_index: u32,
        key_pairs: &[HpkeKeyPair],
    ) -> Result<(), Self::Error> {
        self.write(
            EPOCH_KEY_PAIRS,
            &epoch_key_pairs_key(group_id, epoch, leaf_index),
            key_pairs,
        )
    }

    fn write_key_package<
        HashReference: traits::HashReference<CURRENT_VERSION>,
        KeyPackage: traits::KeyPackage<CURRENT_VERSION>,
    >(
        &self,
        hash_ref: &HashReference,
        key_package: &KeyPackage,
    ) -> Result<(), Self::Error> {
        self.write(KEY_PACKAGE, hash_ref, key_package)
    }

    fn write_psk<
        PskId: traits::PskId<CURRENT_VERSION>,
        PskBundle: traits::PskBundle<CURRENT_VERSION>,
    >(
        &self,
        psk_id: &PskId,
        psk: &PskBundle,
    ) -> Result<(), Self::Error> {
        self.write(PSK, psk_id, psk)
    }

    // --- group state: getters -------------------------------------------------------------

    fn mls_group_join_config<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        MlsGroupJoinConfig: traits::MlsGroupJoinConfig<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<MlsGroupJoinConfig>, Self::Error> {
        self.read(JOIN_CONFIG, group_id)
    }

    fn own_leaf_nodes<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        LeafNode: traits::LeafNode<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Vec<LeafNode>, Self::Error> {
        self.read_list(OWN_LEAF_NODES, group_id)
    }

    fn queued_proposal_refs<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Vec<ProposalRef>, Self::Error> {
        self.read_list(PROPOSAL_QUEUE, group_id)
    }

    fn queued_proposals<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
        QueuedProposal: traits::QueuedProposal<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Vec<(ProposalRef, QueuedProposal)>, Self::Error> {
        let refs: Vec<ProposalRef> = self.read_list(PROPOSAL_QUEUE, group_id)?;
        refs.into_iter()
            .map(|proposal_ref| {
                let proposal = self
                    .read(QUEUED_PROPOSAL, &(group_id, &proposal_ref))?
                    .ok_or(MlsStorageError::Inconsistent(
                        "a queued proposal is listed but not stored",
                    ))?;
                Ok((proposal_ref, proposal))
            })
            .collect()
    }

    fn tree<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        TreeSync: traits::TreeSync<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<TreeSync>, Self::Error> {
        self.read(TREE, group_id)
    }

    fn group_context<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        GroupContext: traits::GroupContext<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<GroupContext>, Self::Error> {
        self.read(GROUP_CONTEXT, group_id)
    }

    fn interim_transcript_hash<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        InterimTranscriptHash: traits::InterimTranscriptHash<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<InterimTranscriptHash>, Self::Error> {
        self.read(INTERIM_TRANSCRIPT_HASH, group_id)
    }

    fn confirmation_tag<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ConfirmationTag: traits::ConfirmationTag<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<ConfirmationTag>, Self::Error> {
        self.read(CONFIRMATION_TAG, group_id)
    }

    fn group_state<
        GroupState: traits::GroupState<CURRENT_VERSION>,
        GroupId: traits::GroupId<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<GroupState>, Self::Error> {
        self.read(GROUP_STATE, group_id)
    }

    fn message_secrets<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        MessageSecrets: traits::MessageSecrets<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<MessageSecrets>, Self::Error> {
        self.read(MESSAGE_SECRETS, group_id)
    }

    fn resumption_psk_store<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ResumptionPskStore: traits::ResumptionPskStore<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<ResumptionPskStore>, Self::Error> {
        self.read(RESUMPTION_PSK_STORE, group_id)
    }

    fn own_leaf_index<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        LeafNodeIndex: traits::LeafNodeIndex<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<LeafNodeIndex>, Self::Error> {
        self.read(OWN_LEAF_INDEX, group_id)
    }

    fn group_epoch_secrets<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        GroupEpochSecrets: traits::GroupEpochSecrets<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<GroupEpochSecrets>, Self::Error> {
        self.read(GROUP_EPOCH_SECRETS, group_id)
    }

    // --- crypto objects: getters ----------------------------------------------------------

    fn signature_key_pair<
        SignaturePublicKey: traits::SignaturePublicKey<CURRENT_VERSION>,
        SignatureKeyPair: traits::SignatureKeyPair<CURRENT_VERSION>,
    >(
        &self,
        public_key: &SignaturePublicKey,
    ) -> Result<Option<SignatureKeyPair>, Self::Error> {
        self.read(SIGNATURE_KEY_PAIR, public_key)
    }

    fn encryption_key_pair<
        HpkeKeyPair: traits::HpkeKeyPair<CURRENT_VERSION>,
        EncryptionKey: traits::EncryptionKey<CURRENT_VERSION>,
    >(
        &self,
        public_key: &EncryptionKey,
    ) -> Result<Option<HpkeKeyPair>, Self::Error> {
        self.read(ENCRYPTION_KEY_PAIR, public_key)
    }

    fn encryption_epoch_key_pairs<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        EpochKey: traits::EpochKey<CURRENT_VERSION>,
        HpkeKeyPair: traits::HpkeKeyPair<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        epoch: &EpochKey,
        leaf_index: u32,
    ) -> Result<Vec<HpkeKeyPair>, Self::Error> {
        self.read_list(
            EPOCH_KEY_PAIRS,
            &epoch_key_pairs_key(group_id, epoch, leaf_index),
        )
    }

    fn key_package<
        KeyPackageRef: traits::HashReference<CURRENT_VERSION>,
        KeyPackage: traits::KeyPackage<CURRENT_VERSION>,
    >(
        &self,
        hash_ref: &KeyPackageRef,
    ) -> Result<Option<KeyPackage>, Self::Error> {
        self.read(KEY_PACKAGE, hash_ref)
    }

    fn psk<PskBundle: traits::PskBundle<CURRENT_VERSION>, PskId: traits::PskId<CURRENT_VERSION>>(
        &self,
        psk_id: &PskId,
    ) -> Result<Option<PskBundle>, Self::Error> {
        self.read(PSK, psk_id)
    }

    // --- group state: deleters ------------------------------------------------------------

    fn remove_proposal<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        proposal_ref: &ProposalRef,
    ) -> Result<(), Self::Error> {
        self.remove_from_list(PROPOSAL_QUEUE, group_id, proposal_ref)?;
        self.delete(QUEUED_PROPOSAL, &(group_id, proposal_ref))
    }

    fn delete_own_leaf_nodes<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.delete(OWN_LEAF_NODES, group_id)
    }

    fn delete_group_config<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.delete(JOIN_CONFIG, group_id)
    }

    fn delete_tree<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.delete(TREE, group_id)
    }

    fn delete_confirmation_tag<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.delete(CONFIRMATION_TAG, group_id)
    }

    fn delete_group_state<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.delete(GROUP_STATE, group_id)
    }

    fn delete_context<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.delete(GROUP_CONTEXT, group_id)
    }

    fn delete_interim_transcript_hash<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.delete(INTERIM_TRANSCRIPT_HASH, group_id)
    }

    fn delete_message_secrets<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.delete(MESSAGE_SECRETS, group_id)
    }

    fn delete_all_resumption_psk_secrets<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.delete(RESUMPTION_PSK_STORE, group_id)
    }

    fn delete_own_leaf_index<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.delete(OWN_LEAF_INDEX, group_id)
    }

    fn delete_group_epoch_secrets<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.delete(GROUP_EPOCH_SECRETS, group_id)
    }

    fn clear_proposal_queue<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        // Delete the proposals themselves (under their full store keys), then the queue.
        let refs: Vec<ProposalRef> = self.read_list(PROPOSAL_QUEUE, group_id)?;
        for proposal_ref in &refs {
            self.delete(QUEUED_PROPOSAL, &(group_id, proposal_ref))?;
        }
        self.delete(PROPOSAL_QUEUE, group_id)
    }

    // --- crypto objects: deleters ---------------------------------------------------------

    fn delete_signature_key_pair<
        SignaturePublicKey: traits::SignaturePublicKey<CURRENT_VERSION>,
    >(
        &self,
        public_key: &SignaturePublicKey,
    ) -> Result<(), Self::Error> {
        self.delete(SIGNATURE_KEY_PAIR, public_key)
    }

    fn delete_encryption_key_pair<EncryptionKey: traits::EncryptionKey<CURRENT_VERSION>>(
        &self,
        public_key: &EncryptionKey,
    ) -> Result<(), Self::Error> {
        self.delete(ENCRYPTION_KEY_PAIR, public_key)
    }

    fn delete_encryption_epoch_key_pairs<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        EpochKey: traits::EpochKey<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        epoch: &EpochKey,
        leaf_index: u32,
    ) -> Result<(), Self::Error> {
        self.delete(
            EPOCH_KEY_PAIRS,
            &epoch_key_pairs_key(group_id, epoch, leaf_index),
        )
    }

    fn delete_key_package<KeyPackageRef: traits::HashReference<CURRENT_VERSION>>(
        &self,
        hash_ref: &KeyPackageRef,
    ) -> Result<(), Self::Error> {
        self.delete(KEY_PACKAGE, hash_ref)
    }

    fn delete_psk<PskKey: traits::PskId<CURRENT_VERSION>>(
        &self,
        psk_id: &PskKey,
    ) -> Result<(), Self::Error> {
        self.delete(PSK, psk_id)
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

#[cfg(test)]
mod tests {
    use std::{
        path::Path,
        time::{Duration, Instant},
    };

    use openmls::prelude::{
        tls_codec::Deserialize as _, BasicCredential, Ciphersuite, CredentialWithKey, GroupId,
        KeyPackage, LeafNodeParameters, MlsGroup, MlsGroupCreateConfig, MlsGroupJoinConfig,
        MlsMessageBodyIn, MlsMessageIn, MlsMessageOut, ProcessedMessageContent, StagedWelcome,
    };
    use openmls_basic_credential::SignatureKeyPair;

    use super::{
        storage_key, MlsProvider, MlsStorageError, SledMlsStorage, GROUP_CONTEXT, KEY_PACKAGE,
        PROPOSAL_QUEUE, QUEUED_PROPOSAL, WIRE_FORMAT_POLICY,
    };

    type BoxError = Box<dyn std::error::Error>;
    type TestResult = Result<(), BoxError>;

    const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

    /// Opens a sled db, waiting for sled's background threads to release the lock of a db
    /// dropped a moment ago in this process.
    fn open_db(dir: &Path) -> sled::Db {
        let started = Instant::now();
        loop {
            match sled::Config::new().path(dir).open() {
                Ok(db) => return db,
                Err(e) if started.elapsed() < Duration::from_secs(5) => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("cannot reopen {}: {e}", dir.display()),
            }
        }
    }

    fn open_provider(dir: &Path) -> MlsProvider {
        let db = open_db(dir);
        MlsProvider::new(db.open_tree("mls").unwrap()).unwrap()
    }

    /// One MLS client: its provider over its own sled db, and its signature key.
    struct Member {
        provider: MlsProvider,
        signer: SignatureKeyPair,
        credential: CredentialWithKey,
    }

    impl Member {
        /// A new client with a fresh signature key, stored (and committed) in its MLS store.
        fn create(dir: &Path, name: &str) -> Member {
            let provider = open_provider(dir);
            let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).unwrap();
            signer.store(provider.storage()).unwrap();
            provider.commit().unwrap();
            let credential = CredentialWithKey {
                credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
                signature_key: signer.public().into(),
            };
            Member {
                provider,
                signer,
                credential,
            }
        }

        /// The same client after a restart: everything, the signature key too, from disk.
        fn reopen(dir: &Path, name: &str, public_key: &[u8]) -> Member {
            let provider = open_provider(dir);
            let signer = SignatureKeyPair::read(
                provider.storage(),
                public_key,
                CIPHERSUITE.signature_algorithm(),
            )
            .expect("the signature key was stored");
            let credential = CredentialWithKey {
                credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
                signature_key: signer.public().into(),
            };
            Member {
                provider,
                signer,
                credential,
            }
        }

        fn key_package(&self) -> KeyPackage {
            let bundle = self
                .provider
                .with_transaction(|p| {
                    KeyPackage::builder()
                        .build(CIPHERSUITE, p, &self.signer, self.credential.clone())
                        .map_err(BoxError::from)
                })
                .unwrap();
            bundle.key_package().clone()
        }

        fn load(&self, group_id: &GroupId) -> MlsGroup {
            MlsGroup::load(self.provider.storage(), group_id)
                .unwrap()
                .expect("the group is stored")
        }
    }

    fn create_config() -> MlsGroupCreateConfig {
        MlsGroupCreateConfig::builder()
            .ciphersuite(CIPHERSUITE)
            .wire_format_policy(WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(true)
            .build()
    }

    fn join_config() -> MlsGroupJoinConfig {
        create_config().join_config().clone()
    }

    /// Serializes an outgoing message and parses it as a receiver would.
    fn transmit(message: &MlsMessageOut) -> MlsMessageBodyIn {
        let bytes = message.to_bytes().unwrap();
        MlsMessageIn::tls_deserialize_exact(bytes)
            .unwrap()
            .extract()
    }

    /// `from` sends `text` to `to` in `group`; both commit their stores.
    fn send(
        from: &Member,
        from_group: &mut MlsGroup,
        to: &Member,
        to_group: &mut MlsGroup,
        text: &[u8],
    ) {
        let out = from
            .provider
            .with_transaction(|p| {
                from_group
                    .create_message(p, &from.signer, text)
                    .map_err(BoxError::from)
            })
            .unwrap();
        let MlsMessageBodyIn::PrivateMessage(private) = transmit(&out) else {
            panic!("application messages must be encrypted");
        };
        let processed = to
            .provider
            .with_transaction(|p| to_group.process_message(p, private).map_err(BoxError::from))
            .unwrap();
        let ProcessedMessageContent::ApplicationMessage(message) = processed.into_content() else {
            panic!("expected an application message");
        };
        assert_eq!(message.into_bytes(), text);
    }

    /// Alice creates a group and adds Bob, who joins from the Welcome. Both stores committed.
    fn alice_adds_bob(alice: &Member, bob: &Member) -> (MlsGroup, MlsGroup) {
        let bob_key_package = bob.key_package();

        let mut alice_group = alice
            .provider
            .with_transaction(|p| {
                MlsGroup::new(p, &alice.signer, &create_config(), alice.credential.clone())
                    .map_err(BoxError::from)
            })
            .unwrap();
        let (commit, welcome, _group_info) = alice
            .provider
            .with_transaction(|p| {
                let out = alice_group
                    .add_members(p, &alice.signer, &[bob_key_package])
                    .map_err(BoxError::from)?;
                alice_group
                    .merge_pending_commit(p)
                    .map_err(BoxError::from)?;
                Ok::<_, BoxError>(out)
            })
            .unwrap();
        // The policy: commits go out as public messages, readable by the DS.
        assert!(matches!(
            transmit(&commit),
            MlsMessageBodyIn::PublicMessage(_)
        ));

        let MlsMessageBodyIn::Welcome(welcome) = transmit(&welcome) else {
            panic!("expected a Welcome");
        };
        let bob_group = bob
            .provider
            .with_transaction(|p| {
                StagedWelcome::new_from_welcome(p, &join_config(), welcome, None)
                    .and_then(|staged| staged.into_group(p))
                    .map_err(BoxError::from)
            })
            .unwrap();
        assert_eq!(alice_group.epoch(), bob_group.epoch());
        assert!(!alice.provider.storage().has_pending());
        assert!(!bob.provider.storage().has_pending());
        (alice_group, bob_group)
    }

    #[test]
    fn groups_survive_a_restart() -> TestResult {
        let alice_dir = tempfile::tempdir()?;
        let bob_dir = tempfile::tempdir()?;
        let alice = Member::create(alice_dir.path(), "alice");
        let bob = Member::create(bob_dir.path(), "bob");
        let (mut alice_group, mut bob_group) = alice_adds_bob(&alice, &bob);
        send(&alice, &mut alice_group, &bob, &mut bob_group, b"hello bob");
        send(
            &bob,
            &mut bob_group,
            &alice,
            &mut alice_group,
            b"hello alice",
        );

        let group_id = alice_group.group_id().clone();
        let epoch = alice_group.epoch();
        let alice_key = alice.signer.public().to_vec();
        let bob_key = bob.signer.public().to_vec();
        drop((alice_group, bob_group, alice, bob));

        let alice = Member::reopen(alice_dir.path(), "alice", &alice_key);
        let bob = Member::reopen(bob_dir.path(), "bob", &bob_key);
        let mut alice_group = alice.load(&group_id);
        let mut bob_group = bob.load(&group_id);
        assert_eq!(alice_group.epoch(), epoch);
        assert_eq!(bob_group.epoch(), epoch);
        assert_eq!(alice_group.members().count(), 2);
        send(
            &alice,
            &mut alice_group,
            &bob,
            &mut bob_group,
            b"still there?",
        );
        send(
            &bob,
            &mut bob_group,
            &alice,
            &mut alice_group,
            b"still here",
        );
        Ok(())
    }

    #[test]
    fn uncommitted_writes_are_lost_and_the_group_still_works() -> TestResult {
        let alice_dir = tempfile::tempdir()?;
        let bob_dir = tempfile::tempdir()?;
        let alice = Member::create(alice_dir.path(), "alice");
        let bob = Member::create(bob_dir.path(), "bob");
        let (mut alice_group, mut bob_group) = alice_adds_bob(&alice, &bob);
        let group_id = alice_group.group_id().clone();
        let epoch = alice_group.epoch();

        // An operation that fails after writing: with_transaction discards its writes.
        let failed: Result<(), BoxError> = alice.provider.with_transaction(|p| {
            alice_group
                .self_update(p, &alice.signer, LeafNodeParameters::default())
                .map_err(BoxError::from)?;
            alice_group
                .merge_pending_commit(p)
                .map_err(BoxError::from)?;
            Err("the server refused the commit".into())
        });
        assert!(failed.is_err());
        assert!(!alice.provider.storage().has_pending());
        assert_eq!(alice_group.epoch().as_u64(), epoch.as_u64() + 1);
        assert_eq!(
            alice.load(&group_id).epoch(),
            epoch,
            "storage kept the old epoch"
        );

        // discard by hand does the same.
        let mut alice_group = alice.load(&group_id);
        alice_group.self_update(
            &alice.provider,
            &alice.signer,
            LeafNodeParameters::default(),
        )?;
        alice_group.merge_pending_commit(&alice.provider)?;
        assert!(alice.provider.storage().has_pending());
        alice.provider.discard();
        assert_eq!(alice.load(&group_id).epoch(), epoch);

        // A crash in the middle of an operation: the writes never reach the disk.
        let mut alice_group = alice.load(&group_id);
        alice_group.self_update(
            &alice.provider,
            &alice.signer,
            LeafNodeParameters::default(),
        )?;
        alice_group.merge_pending_commit(&alice.provider)?;
        assert_eq!(alice_group.epoch().as_u64(), epoch.as_u64() + 1);
        let alice_key = alice.signer.public().to_vec();
        drop((alice_group, alice)); // no commit

        let alice = Member::reopen(alice_dir.path(), "alice", &alice_key);
        let mut alice_group = alice.load(&group_id);
        assert_eq!(alice_group.epoch(), epoch, "the state before the operation");
        // ... and that state works: Bob, who never saw the lost commit, reads Alice and back.
        send(
            &alice,
            &mut alice_group,
            &bob,
            &mut bob_group,
            b"after the crash",
        );
        send(
            &bob,
            &mut bob_group,
            &alice,
            &mut alice_group,
            b"welcome back",
        );
        Ok(())
    }

    #[test]
    fn clear_proposal_queue_deletes_the_proposals() -> TestResult {
        let alice_dir = tempfile::tempdir()?;
        let bob_dir = tempfile::tempdir()?;
        let carol_dir = tempfile::tempdir()?;
        let alice = Member::create(alice_dir.path(), "alice");
        let bob = Member::create(bob_dir.path(), "bob");
        let carol = Member::create(carol_dir.path(), "carol");
        let group_id = {
            let mut group = alice
                .provider
                .with_transaction(|p| {
                    MlsGroup::new(p, &alice.signer, &create_config(), alice.credential.clone())
                        .map_err(BoxError::from)
                })
                .unwrap();
            for key_package in [bob.key_package(), carol.key_package()] {
                let (proposal, _ref) = alice
                    .provider
                    .with_transaction(|p| {
                        group
                            .propose_add_member(p, &alice.signer, &key_package)
                            .map_err(BoxError::from)
                    })
                    .unwrap();
                assert!(matches!(
                    transmit(&proposal),
                    MlsMessageBodyIn::PublicMessage(_)
                ));
            }
            group.group_id().clone()
        };
        let count = |tree: &sled::Tree, label: u8| tree.scan_prefix([label]).count();
        let alice_key = alice.signer.public().to_vec();
        drop(alice);

        // The queue survives a restart, in order.
        let alice = Member::reopen(alice_dir.path(), "alice", &alice_key);
        let mut group = alice.load(&group_id);
        assert_eq!(group.pending_proposals().count(), 2);
        let tree = alice.provider.storage().tree.clone();
        assert_eq!(count(&tree, QUEUED_PROPOSAL.label), 2);
        assert_eq!(count(&tree, PROPOSAL_QUEUE.label), 1);

        alice
            .provider
            .with_transaction(|p| group.clear_pending_proposals(p.storage()))?;
        drop((group, tree, alice));

        let alice = Member::reopen(alice_dir.path(), "alice", &alice_key);
        assert_eq!(alice.load(&group_id).pending_proposals().count(), 0);
        let tree = &alice.provider.storage().tree;
        assert_eq!(count(tree, QUEUED_PROPOSAL.label), 0, "proposals deleted");
        assert_eq!(count(tree, PROPOSAL_QUEUE.label), 0, "queue deleted");
        Ok(())
    }

    #[test]
    fn a_joined_key_package_is_used_up() -> TestResult {
        let alice_dir = tempfile::tempdir()?;
        let bob_dir = tempfile::tempdir()?;
        let alice = Member::create(alice_dir.path(), "alice");
        let bob = Member::create(bob_dir.path(), "bob");
        let tree = bob.provider.storage().tree.clone();
        let _groups = alice_adds_bob(&alice, &bob);
        // Bob's key package (with its private init key) was deleted when he joined.
        assert_eq!(tree.scan_prefix([KEY_PACKAGE.label]).count(), 0);
        Ok(())
    }

    #[test]
    fn corrupt_values_are_errors() -> TestResult {
        let alice_dir = tempfile::tempdir()?;
        let bob_dir = tempfile::tempdir()?;
        let alice = Member::create(alice_dir.path(), "alice");
        let bob = Member::create(bob_dir.path(), "bob");
        let (alice_group, _) = alice_adds_bob(&alice, &bob);
        let group_id = alice_group.group_id().clone();

        let tree = alice.provider.storage().tree.clone();
        tree.insert(storage_key(GROUP_CONTEXT, &group_id)?, &b"{not json"[..])?;
        match MlsGroup::load(alice.provider.storage(), &group_id) {
            Err(MlsStorageError::Corrupt { what, .. }) => assert_eq!(what, GROUP_CONTEXT.name),
            other => panic!("expected a corrupt value, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn foreign_trees_are_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        let db = open_db(dir.path());

        let other = db.open_tree("other")?;
        other.insert(b"key", b"value")?;
        assert!(matches!(
            SledMlsStorage::open(other),
            Err(MlsStorageError::NotAnMlsStore)
        ));

        let mls = db.open_tree("mls")?;
        drop(SledMlsStorage::open(mls.clone())?);
        SledMlsStorage::open(mls.clone())?; // reopening is fine
        mls.insert(
            storage_key(super::META, super::META_FORMAT_KEY)?,
            super::encode("format record", &(super::LAYOUT_VERSION + 1, 1u16))?,
        )?;
        assert!(matches!(
            SledMlsStorage::open(mls),
            Err(MlsStorageError::UnsupportedFormat { .. })
        ));
        Ok(())
    }
}
