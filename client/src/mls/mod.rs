//! The MLS engine: openmls over the persistent [`storage`], the only holder of group state.
//!
//! Owns: every MLS group of this client, its MLS signature key ([`signer`]), its key packages
//! ([`key_packages`]), and the operations on a group: creating one, adding and removing
//! members, sending and joining ([`commits`]), taking in what arrives ([`incoming`]) and telling
//! who the members are ([`members`]). Must not touch: the queues, or any record of the local
//! store beyond the MLS identity; callers decide what a group means (a contact, a named group).
//!
//! A group never runs ahead of its DS: a commit's writes are applied only once the DS took it,
//! and creating or joining a group is stored only if the DS took it ([`outbox`] keeps commits
//! and messages on their way, in the local store's pending operations, and puts a sent text in
//! its group's log). The one thing stored before the DS answers is the state that made an
//! application message, so that its ratchet key is never used twice. One operation at a time
//! per client: [`MlsEngine::lock`] hands out the [`MlsSession`] guard, and every function that
//! reads or changes a group takes one.

pub mod commits;
pub mod external;
pub mod incoming;
pub mod key_packages;
pub mod members;
pub mod outbox;
pub mod signer;
pub mod storage;

use std::ops::Deref;

use openmls::{
    prelude::{tls_codec::Deserialize as _, *},
    treesync::LeafNodeSource,
};
use roost_protocol::{
    connection::EarKey,
    ds::{EpochKey, GroupKeys, EPOCH_KEY_EXPORTER_LABEL, GROUP_KEYS_AFTER_REMOVAL_LABEL},
    Timestamp,
};

use crate::error::Error;
use storage::{MlsProvider, MlsStorageError};

/// The one ciphersuite of Roost groups.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
/// The exporter label of the key that encrypts the `WelcomeSecrets` in a Welcome bundle.
pub const GROUP_KEYS_EXPORTER_LABEL: &str = "roost group keys";

/// How many epochs back a member still decrypts application messages. A committer merges its
/// commit when the DS answers, possibly before it has read messages the DS took just before
/// that commit, in the epoch before; those must still open. (Each epoch kept is key material a
/// later compromise of this client could use: two is enough for that race.)
pub const MAX_PAST_EPOCHS: usize = 2;

/// How new groups are made: handshakes in the clear for the DS, the tree in the GroupInfo.
pub fn create_config() -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(CIPHERSUITE)
        .wire_format_policy(storage::WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .build()
}

/// How groups are joined (Welcome or external commit).
pub fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .wire_format_policy(storage::WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .build()
}

/// A group's current state as this client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupStatus {
    pub epoch: u64,
    pub members: usize,
    /// When this client's leaf expires: a leaf made from a KeyPackage ends with it (after which
    /// no one can be welcomed into the group); `None` once a commit of this client renewed it.
    pub own_leaf_expires: Option<Timestamp>,
}

/// The MLS state of one client and its lock.
#[derive(Debug)]
pub struct MlsEngine {
    provider: MlsProvider,
    lock: tokio::sync::Mutex<()>,
}

impl MlsEngine {
    /// The engine over the MLS store in `tree`.
    pub fn open(tree: sled::Tree) -> Result<Self, MlsStorageError> {
        Ok(MlsEngine {
            provider: MlsProvider::new(tree)?,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Waits for any other MLS operation of this client to end.
    pub async fn lock(&self) -> MlsSession<'_> {
        MlsSession {
            _one_at_a_time: self.lock.lock().await,
            provider: &self.provider,
        }
    }

    /// The epoch and size of a group this client is in. Read without the lock, so that a
    /// listing never waits for a sync: it shows the group as committed or as an operation in
    /// progress leaves it.
    pub fn group_status(&self, group_id: &[u8]) -> Result<Option<GroupStatus>, Error> {
        let group = MlsGroup::load(self.provider.storage(), &GroupId::from_slice(group_id))?;
        Ok(group.map(|g| GroupStatus {
            epoch: g.epoch().as_u64(),
            members: g.members().count(),
            own_leaf_expires: g
                .own_leaf_node()
                .and_then(|leaf| match leaf.leaf_node_source() {
                    LeafNodeSource::KeyPackage(lifetime) => Some(Timestamp(lifetime.not_after())),
                    _ => None,
                }),
        }))
    }
}

/// The MLS lock, held: the one way to reach group state for an operation.
pub struct MlsSession<'a> {
    _one_at_a_time: tokio::sync::MutexGuard<'a, ()>,
    provider: &'a MlsProvider,
}

impl Deref for MlsSession<'_> {
    type Target = MlsProvider;

    fn deref(&self) -> &MlsProvider {
        self.provider
    }
}

impl MlsSession<'_> {
    /// The provider openmls calls take.
    pub fn provider(&self) -> &MlsProvider {
        self.provider
    }

    /// A group this client is in.
    pub fn group(&self, group_id: &[u8]) -> Result<MlsGroup, Error> {
        MlsGroup::load(self.storage(), &GroupId::from_slice(group_id))?
            .ok_or_else(|| Error::Mls("this client is not in the group".into()))
    }

    /// Drops pending MLS writes and brings `group` back to what storage holds.
    pub fn reload_after_discard(&self, group: &mut MlsGroup) {
        self.discard();
        if let Ok(Some(stored)) = MlsGroup::load(self.storage(), &group.group_id().clone()) {
            *group = stored;
        }
    }

    /// Commits the pending writes if `outcome` is `Ok`, else discards them.
    pub fn settle<T>(&self, outcome: Result<T, Error>) -> Result<T, Error> {
        match outcome {
            Ok(value) => {
                self.commit()?;
                Ok(value)
            }
            Err(e) => {
                self.discard();
                Err(e)
            }
        }
    }
}

/// The DS is ahead of this client's copy of the group: in a later epoch (409 `stale_epoch`),
/// or under the keys a removal brought (403 `wrong_ear_key`). Catching up settles either.
pub fn is_stale(e: &Error) -> bool {
    matches!(
        (e.status(), e.code()),
        (Some(409), "stale_epoch") | (Some(403), "wrong_ear_key")
    )
}

pub(crate) fn mls_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Mls(format!("{what}: {e}"))
}

/// The key that encrypts a Welcome bundle's group keys: exported from the group's epoch.
fn exported_key(provider: &MlsProvider, group: &MlsGroup) -> Result<EarKey, Error> {
    let context = group.group_id().as_slice().to_vec();
    export(provider, group, GROUP_KEYS_EXPORTER_LABEL, &context).map(EarKey)
}

/// The group's current epoch's key for proving membership to the DS (see `ds::EpochKey`).
pub(crate) fn epoch_key(provider: &MlsProvider, group: &MlsGroup) -> Result<EpochKey, Error> {
    export(provider, group, EPOCH_KEY_EXPORTER_LABEL, &[]).map(EpochKey::from_exported)
}

/// The group's keys from its current epoch on, which a commit that removed a member brought
/// (see `ds::Rekey`).
pub(crate) fn keys_after_removal(
    provider: &MlsProvider,
    group: &MlsGroup,
) -> Result<GroupKeys, Error> {
    let context = group.group_id().as_slice().to_vec();
    export(provider, group, GROUP_KEYS_AFTER_REMOVAL_LABEL, &context)
        .map(|exported| GroupKeys::of_epoch(&exported))
}

/// `N` bytes exported from the group's current epoch under `label`.
fn export<const N: usize>(
    provider: &MlsProvider,
    group: &MlsGroup,
    label: &str,
    context: &[u8],
) -> Result<[u8; N], Error> {
    let secret = group
        .export_secret(provider.crypto(), label, context, N)
        .map_err(|e| mls_error("cannot export a secret of the epoch", e))?;
    secret
        .try_into()
        .map_err(|_| Error::Mls("the exported secret has the wrong length".into()))
}

pub(crate) fn parse_message(bytes: &[u8]) -> Result<MlsMessageBodyIn, Error> {
    Ok(MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(|e| mls_error("unreadable MLS message", e))?
        .extract())
}
