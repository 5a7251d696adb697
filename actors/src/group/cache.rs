//! What a group actor keeps of its group between requests: the ledger, and what an
//! application message needs of the state, as they were last written — so that a message costs
//! no read, decryption or decoding of either.
//!
//! Memory only, and only while the actor lives (it retires after `idle_after` without
//! requests): nothing here reaches the disk, and the store still holds both only encrypted
//! under the group-state key. A request uses the cache only when it brings the key the cache
//! was filled under (compared as digests). Every write of the group's records goes through its
//! actor, so the cache stays what the store holds; a failed write empties it, and the next
//! request reads the store again.

use roost_protocol::{connection::EarKey, crypto, ds::SealedQueueRef, VerifyingKey};

use super::{ledger::Ledger, GroupActor, GroupError, Opened};

/// A digest of a group-state key: what the cache compares a request's key with.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct KeyDigest([u8; 32]);

impl KeyDigest {
    pub fn of(key: &EarKey) -> Self {
        KeyDigest(crypto::hash("roost ds cached key", &key.0))
    }
}

/// What an application message is checked against and sent to.
#[derive(Clone)]
pub(super) struct MessageView {
    pub epoch: u64,
    /// `None` in a group stored before epoch keys, until its next commit.
    pub epoch_key: Option<VerifyingKey>,
    /// Every member's queue.
    pub recipients: Vec<SealedQueueRef>,
}

impl MessageView {
    pub fn of(opened: &Opened) -> Self {
        MessageView {
            epoch: opened.public.group_context().epoch().as_u64(),
            epoch_key: opened.state.epoch_key,
            recipients: opened
                .state
                .members
                .values()
                .map(|m| m.queue.clone())
                .collect(),
        }
    }
}

pub(super) struct Cached {
    pub key: KeyDigest,
    /// As the store holds it: fan-outs not yet known delivered included.
    pub ledger: Ledger,
    /// `None` until a request fills it (and after one changes the state without it).
    pub view: Option<MessageView>,
}

impl GroupActor {
    /// The cache, if it was filled under `key`.
    pub(super) fn cached(&self, key: &EarKey) -> Option<&Cached> {
        self.cache.as_ref().filter(|c| c.key == KeyDigest::of(key))
    }

    /// What an application message under `key` needs of the state: from the cache, or read
    /// from the store.
    pub(super) fn message_view(&self, key: &EarKey) -> Result<MessageView, GroupError> {
        match self.cached(key).and_then(|c| c.view.clone()) {
            Some(view) => Ok(view),
            None => Ok(MessageView::of(&self.open(key)?)),
        }
    }
}
