//! Per-client queues: message queues (QS) and connection queues (AS) share this layout.
//!
//! One tree; a queue's keys are `client id ‖ 0 ‖ seq (big-endian)` for its messages,
//! `client id ‖ 1` for the next sequence number, and `client id ‖ 2 ‖ delivery key` for the
//! deliveries relayed from other homeservers that were queued (→ seq and when), so a retried
//! one is queued once. All live in one tree so that appending a message, advancing the counter
//! and remembering the delivery is one atomic batch.

use roost_protocol::{api::QueueMessage, ClientId, Timestamp};

use crate::{table::Table, Result};

const MESSAGE: u8 = 0;
const HEAD: u8 = 1;
const DELIVERED: u8 = 2;

/// How long a relayed delivery is remembered after it was queued: far beyond the longest retry
/// interval of a sending homeserver.
pub const REMEMBER_DELIVERIES_SECS: u64 = 7 * 24 * 3600;

fn delivered_key(client: &ClientId, delivery: &[u8; 32]) -> [u8; 49] {
    let mut key = [0u8; 49];
    key[..16].copy_from_slice(&client.0);
    key[16] = DELIVERED;
    key[17..].copy_from_slice(delivery);
    key
}

/// See [`QueueStore::summary`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueSummary {
    pub waiting: u64,
    pub bytes: u64,
    pub oldest_seq: Option<u64>,
    pub next_seq: u64,
    /// Relayed deliveries remembered so that a retried one is queued once.
    pub remembered_relays: u64,
}

#[derive(Clone)]
pub struct QueueStore {
    table: Table<QueueMessage>,
}

fn message_key(client: &ClientId, seq: u64) -> [u8; 25] {
    let mut key = [0u8; 25];
    key[..16].copy_from_slice(&client.0);
    key[16] = MESSAGE;
    key[17..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn head_key(client: &ClientId) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[..16].copy_from_slice(&client.0);
    key[16] = HEAD;
    key
}

impl QueueStore {
    pub(crate) fn open(db: &sled::Db, tree: &str) -> Result<Self> {
        Ok(QueueStore {
            table: Table::open(db, tree)?,
        })
    }

    /// The sequence number the next appended message gets; 1 for a new queue.
    pub fn next_seq(&self, client: &ClientId) -> Result<u64> {
        Ok(match self.table.tree.get(head_key(client))? {
            Some(bytes) => u64::from_be_bytes(
                bytes
                    .as_ref()
                    .try_into()
                    .map_err(|_| crate::StorageError::Corrupt("queue head".into()))?,
            ),
            None => 1,
        })
    }

    /// Appends `message` (whose `seq` the caller took from [`next_seq`](Self::next_seq)); with
    /// `delivery`, remembers that this relayed delivery was queued, in the same batch.
    pub fn append(
        &self,
        client: &ClientId,
        message: &QueueMessage,
        delivery: Option<&[u8; 32]>,
    ) -> Result<()> {
        let mut batch = sled::Batch::default();
        batch.insert(
            &message_key(client, message.seq),
            crate::table::encode(message),
        );
        batch.insert(&head_key(client), &(message.seq + 1).to_be_bytes());
        if let Some(delivery) = delivery {
            batch.insert(
                &delivered_key(client, delivery)[..],
                crate::table::encode(&(message.seq, Timestamp::now())),
            );
        }
        self.table.tree.apply_batch(batch)?;
        Ok(())
    }

    /// The seq a relayed delivery was queued with, if it was.
    pub fn delivered(&self, client: &ClientId, delivery: &[u8; 32]) -> Result<Option<u64>> {
        let Some(bytes) = self.table.tree.get(delivered_key(client, delivery))? else {
            return Ok(None);
        };
        let (seq, _): (u64, Timestamp) = crate::table::decode(&bytes)?;
        Ok(Some(seq))
    }

    /// Up to `max` messages with `seq >= from`, in order, and whether more follow.
    pub fn range(
        &self,
        client: &ClientId,
        from: u64,
        max: usize,
    ) -> Result<(Vec<QueueMessage>, bool)> {
        let mut messages = Vec::new();
        let end = message_key(client, u64::MAX);
        for entry in self.table.tree.range(message_key(client, from)..=end) {
            let (_, bytes) = entry?;
            if messages.len() == max {
                return Ok((messages, true));
            }
            messages.push(crate::table::decode(&bytes)?);
        }
        Ok((messages, false))
    }

    /// Deletes every message with `seq <= up_to`; returns how many. Forgets the relayed
    /// deliveries among them that were queued more than [`REMEMBER_DELIVERIES_SECS`] ago.
    pub fn ack(&self, client: &ClientId, up_to: u64) -> Result<usize> {
        let mut batch = sled::Batch::default();
        let mut count = 0;
        for key in self
            .table
            .tree
            .range(message_key(client, 0)..=message_key(client, up_to))
            .keys()
        {
            batch.remove(key?);
            count += 1;
        }
        let mut prefix = client.0.to_vec();
        prefix.push(DELIVERED);
        let forget_before = Timestamp::now().0.saturating_sub(REMEMBER_DELIVERIES_SECS);
        for entry in self.table.tree.scan_prefix(prefix) {
            let (key, bytes) = entry?;
            let (seq, at): (u64, Timestamp) = crate::table::decode(&bytes)?;
            if seq <= up_to && at.0 < forget_before {
                batch.remove(key);
            }
        }
        self.table.tree.apply_batch(batch)?;
        Ok(count)
    }

    /// What a queue holds, for operators: counts and sizes only (messages are sealed).
    pub fn summary(&self, client: &ClientId) -> Result<QueueSummary> {
        let mut summary = QueueSummary {
            next_seq: self.next_seq(client)?,
            ..QueueSummary::default()
        };
        let end = message_key(client, u64::MAX);
        for entry in self.table.tree.range(message_key(client, 0)..=end) {
            let (key, bytes) = entry?;
            summary.waiting += 1;
            summary.bytes += bytes.len() as u64;
            if summary.oldest_seq.is_none() {
                summary.oldest_seq = key[17..].try_into().ok().map(u64::from_be_bytes);
            }
        }
        let mut prefix = client.0.to_vec();
        prefix.push(DELIVERED);
        summary.remembered_relays = self.table.tree.scan_prefix(prefix).count() as u64;
        Ok(summary)
    }

    /// Number of messages waiting in a queue.
    pub fn len(&self, client: &ClientId) -> usize {
        self.table
            .tree
            .range(message_key(client, 0)..=message_key(client, u64::MAX))
            .count()
    }

    /// Removes a queue with everything in it.
    pub fn delete(&self, client: &ClientId) -> Result<()> {
        let mut batch = sled::Batch::default();
        for key in self.table.tree.scan_prefix(client.0).keys() {
            batch.remove(key?);
        }
        self.table.tree.apply_batch(batch)?;
        Ok(())
    }
}
