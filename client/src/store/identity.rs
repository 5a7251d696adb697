//! Who this client is, its MLS signature identity, and how far it has read its queues (all in
//! the default tree).

use roost_protocol::{
    codec, credentials::ClientCredential, queue::QueueChain, ClientId, HpkeSecretKey, SigningKey,
    UserName,
};
use serde::{Deserialize, Serialize};

use super::{
    State, StateError, FORMAT_VERSION, KEY_CONNECTION_QUEUE, KEY_FORMAT, KEY_IDENTITY,
    KEY_MLS_IDENTITY, KEY_QUEUE, TREE_MLS,
};
use crate::transport::QueueKind;

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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuePosition {
    /// Highest sequence number handed to the user; `None` before the first message.
    pub received: Option<u64>,
    /// Highest sequence number the server confirmed deleting.
    pub acked: Option<u64>,
    /// The queue's key chain at the message after `received`: saved with it, so the key of a
    /// message already read is never kept.
    pub chain: Option<QueueChain>,
}

/// A queue position as formats 2–5 kept it, before key chains.
#[derive(Deserialize)]
pub(super) struct PositionBeforeChains {
    received: Option<u64>,
    acked: Option<u64>,
}

impl From<PositionBeforeChains> for QueuePosition {
    fn from(old: PositionBeforeChains) -> Self {
        QueuePosition {
            received: old.received,
            acked: old.acked,
            chain: None,
        }
    }
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

/// This client's MLS signature key (the key pair itself lives in the MLS store) and the
/// pseudonym its leaves carry instead of the user name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MlsIdentity {
    pub signature_public_key: Vec<u8>,
    pub pseudonym: Vec<u8>,
}

impl State {
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

    /// Rewrites both queue positions of a state from before key chains (format 5 or older) and
    /// marks the state [`FORMAT_VERSION`], in one batch: a crash leaves the old format or the
    /// new, never old positions marked new.
    pub(super) fn upgrade_positions_and_mark(&self) -> Result<(), StateError> {
        let mut batch = sled::Batch::default();
        for key in [KEY_QUEUE, KEY_CONNECTION_QUEUE] {
            let Some(bytes) = self.db.get(key).map_err(|e| self.store_error(e))? else {
                continue;
            };
            let old: PositionBeforeChains =
                codec::decode(&bytes).map_err(|e| self.corrupt("default", key, &e.to_string()))?;
            batch.insert(key, codec::encode(&QueuePosition::from(old)));
        }
        batch.insert(KEY_FORMAT, codec::encode(&FORMAT_VERSION));
        self.db
            .apply_batch(batch)
            .map_err(|e| self.store_error(e))?;
        self.flush()
    }
}

fn position_key(queue: QueueKind) -> &'static [u8] {
    match queue {
        QueueKind::Messages => KEY_QUEUE,
        QueueKind::Connections => KEY_CONNECTION_QUEUE,
    }
}
