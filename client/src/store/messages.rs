//! The chat log of each group (`messages`), in the group's order at its DS, and which of the
//! group's sequence numbers this client has handled (`group_seqs`), so that a delivery handled
//! again (after a crash, or delivered twice by the DS) is taken once.

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
    /// Its place in the group's order, as the group's DS numbered it (numbers taken by commits
    /// are not in the log). A message kept before the DS numbered messages has its old place
    /// in the log instead, and comes first.
    pub seq: u64,
}

/// A log key: the group, then whether the DS numbered the message (legacy entries first), then
/// the number.
fn log_key(group_id: &[u8], numbered: bool, seq: u64) -> Vec<u8> {
    let mut key = group_prefix(group_id);
    key.push(u8::from(numbered));
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn seq_key(group_id: &[u8], seq: u64) -> Vec<u8> {
    let mut key = group_prefix(group_id);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

impl State {
    /// Stores a message at its place in a group's log and marks its sequence number handled,
    /// together; `None` if that number was handled before.
    pub fn append_message(
        &self,
        group_id: &[u8],
        seq: u64,
        from: Option<&UserName>,
        text: &str,
    ) -> Result<Option<StoredMessage>, StateError> {
        let message = StoredMessage {
            from: from.cloned(),
            text: text.to_owned(),
            at: Timestamp::now(),
            seq,
        };
        let (key, value) = (log_key(group_id, true, seq), codec::encode(&message));
        let seq_key = seq_key(group_id, seq);
        let outcome: Result<bool, TransactionError<()>> = (&self.messages, &self.group_seqs)
            .transaction(|(messages, seqs)| {
                if seqs.insert(seq_key.as_slice(), &[])?.is_some() {
                    return Ok(false);
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

    /// Whether this client has handled the group's delivery numbered `seq`.
    pub fn handled_seq(&self, group_id: &[u8], seq: u64) -> Result<bool, StateError> {
        self.group_seqs
            .contains_key(seq_key(group_id, seq))
            .map_err(|e| self.store_error(e))
    }

    /// Marks the group's delivery numbered `seq` handled.
    pub fn mark_seq(&self, group_id: &[u8], seq: u64) -> Result<(), StateError> {
        self.group_seqs
            .insert(seq_key(group_id, seq), &[])
            .map_err(|e| self.store_error(e))?;
        self.flush()
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

/// A message as format 3 kept it: in the order this client learnt of it.
#[derive(Serialize, Deserialize)]
pub(super) struct StoredMessageV3 {
    pub(super) from: Option<UserName>,
    pub(super) text: String,
    pub(super) at: Timestamp,
    pub(super) seq: u64,
    pub(super) queue_seq: Option<u64>,
}

impl State {
    /// Rewrites every message of a format-2 or format-3 log in this format, all at once: each
    /// keeps its place, before anything the DS numbers.
    pub(super) fn upgrade_log_from(&self, format: u32) -> Result<(), StateError> {
        let mut batch = sled::Batch::default();
        for entry in self.messages.iter() {
            let (key, bytes) = entry.map_err(|e| self.store_error(e))?;
            let corrupt = |e: codec::CodecError| self.corrupt(TREE_MESSAGES, &key, &e.to_string());
            let (from, text, at, seq) = if format == 2 {
                let old: StoredMessageV2 = codec::decode(&bytes).map_err(corrupt)?;
                (Some(old.from), old.text, old.at, old.seq)
            } else {
                let old: StoredMessageV3 = codec::decode(&bytes).map_err(corrupt)?;
                (old.from, old.text, old.at, old.seq)
            };
            let group_id = &key[1..key.len().saturating_sub(8)];
            batch.remove(key.clone());
            let upgraded = StoredMessage {
                from,
                text,
                at,
                seq,
            };
            batch.insert(log_key(group_id, false, seq), codec::encode(&upgraded));
        }
        self.messages
            .apply_batch(batch)
            .map_err(|e| self.store_error(e))?;
        self.flush()
    }
}
