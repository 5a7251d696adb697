//! The chat log of each group (`messages`), and the queue messages already stored in it
//! (`message_seqs`), so that a message handled again after a crash is stored once.

use roost_protocol::{codec, Timestamp, UserName};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::{group_prefix, State, StateError, TREE_MESSAGES};

/// One message of a group's log, as `Chat::messages` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// The sending user; `None` if the message did not establish who sent it (never a guess).
    pub from: Option<UserName>,
    pub text: String,
    /// When this client sent or received it.
    pub at: Timestamp,
    /// Its place in the group's log, from 1.
    pub seq: u64,
    /// The queue sequence number it came with; `None` for a message this client sent.
    pub queue_seq: Option<u64>,
}

impl State {
    /// Appends a message to a group's log. A message that came from the queue is stored once
    /// per queue sequence number: `None` if that one is stored already.
    pub fn append_message(
        &self,
        group_id: &[u8],
        from: Option<&UserName>,
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
            from: from.cloned(),
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
}

/// A message as format 2 kept it: its sender always named.
#[derive(Serialize, Deserialize)]
pub(super) struct StoredMessageV2 {
    pub(super) from: UserName,
    pub(super) text: String,
    pub(super) at: Timestamp,
    pub(super) seq: u64,
    pub(super) queue_seq: Option<u64>,
}

impl State {
    /// Rewrites every message of a format-2 log in this format, all at once.
    pub(super) fn upgrade_from_2(&self) -> Result<(), StateError> {
        let mut batch = sled::Batch::default();
        for entry in self.messages.iter() {
            let (key, bytes) = entry.map_err(|e| self.store_error(e))?;
            let old: StoredMessageV2 = codec::decode(&bytes)
                .map_err(|e| self.corrupt(TREE_MESSAGES, &key, &e.to_string()))?;
            let upgraded = StoredMessage {
                from: Some(old.from),
                text: old.text,
                at: old.at,
                seq: old.seq,
                queue_seq: old.queue_seq,
            };
            batch.insert(key, codec::encode(&upgraded));
        }
        self.messages
            .apply_batch(batch)
            .map_err(|e| self.store_error(e))?;
        self.flush()
    }
}
