//! Per-client queues: message queues (QS) and connection queues (AS) share this layout.
//!
//! One tree; a queue's keys are `client id ‖ 0 ‖ seq (big-endian)` for its messages,
//! `client id ‖ 3` for where acknowledgements reached, `client id ‖ 4` for the floor of its
//! numbers after a restore (format 6), and `client id ‖ 2 ‖ delivery key` for
//! the deliveries relayed from other homeservers that were queued (→ seq and when), so a
//! retried one is queued once. All live in one tree so that queueing a relayed delivery and
//! remembering it is one atomic batch.
//!
//! A queue's next sequence number is not stored: it is one past its last message, or past the
//! acknowledged ones when it is empty, so appending a message is one insert. (Every sled batch
//! hands two writes of the log to sled's IO threads and wakes all of them; a fan-out to a group
//! of ten made ten batches, which cost the server more CPU than the rest of the fan-out.)
//! Format 3 stored the next number (`client id ‖ 1`); upgrading to format 4 turns it into the
//! acknowledgement it implies ([`drop_heads`]).
//!
//! A message larger than [`LARGE`] is kept in a second tree (`<tree>_large`, same key), and the
//! first holds only its length. sled splits a leaf by count, not size, and rewrites a whole leaf
//! when it consolidates it: with megabytes of bodies beside the small records every queue
//! writes, each small write would rewrite megabytes (measured: 14 messages of 900 KiB grew the
//! store by 1.75 GiB under chat traffic). The body is inserted before the record naming it; sled
//! keeps one log for all trees, so after a crash no record names a body that is not there.

use roost_protocol::{api::QueueMessage, ClientId, Timestamp};

use crate::{
    queue_ages::QueueAges,
    table::{read_u64, Table},
    Result,
};

const MESSAGE: u8 = 0;
/// Format 3's next sequence number, which format 4 no longer writes.
const HEAD: u8 = 1;
const DELIVERED: u8 = 2;
const ACKED: u8 = 3;
/// The last number a queue may have handed out before the store was restored from a backup:
/// later messages are numbered past it, so a client whose position is beyond what the backup
/// held still gets them.
const FLOOR: u8 = 4;

/// How far [`QueueStore::raise_floors`] moves every queue's numbers on: far more messages than
/// a queue takes between a backup and its restore.
pub const RESTORE_GAP: u64 = 1 << 32;

/// Encoded messages longer than this go to the large tree.
pub const LARGE: usize = 16 * 1024;

/// How long the first tree's record of a large message is.
const MARKER_LEN: usize = 8;

/// What the first tree holds for a large message: its length (8 bytes). An encoded message is
/// never that short (its sealed part alone takes more), so the two cannot be confused.
fn marker(len: usize) -> [u8; MARKER_LEN] {
    (len as u64).to_be_bytes()
}

/// Whether a record of the first tree (`key`, `value`) holds an encoded message itself, rather
/// than a head, an acknowledgement, a relayed delivery or a large message's length.
pub(crate) fn holds_message(key: &[u8], value: &[u8]) -> bool {
    key.get(16) == Some(&MESSAGE) && value.len() != MARKER_LEN
}

/// The stored length of a message whose record in the first tree is `value`.
fn stored_len(value: &[u8]) -> usize {
    match <[u8; MARKER_LEN]>::try_from(value) {
        Ok(len) => u64::from_be_bytes(len) as usize,
        Err(_) => value.len(),
    }
}

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

/// Messages in a queue and their stored (sealed, encoded) bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueUsage {
    pub messages: u64,
    pub bytes: u64,
}

impl QueueUsage {
    pub fn add(&mut self, bytes: usize) {
        self.messages += 1;
        self.bytes += bytes as u64;
    }

    pub fn remove(&mut self, freed: QueueUsage) {
        self.messages = self.messages.saturating_sub(freed.messages);
        self.bytes = self.bytes.saturating_sub(freed.bytes);
    }
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

/// A message encoded as [`QueueStore::append`] stores it: its length is what counts against a
/// queue's limits, known before it is written.
pub struct EncodedMessage {
    seq: u64,
    bytes: Vec<u8>,
}

impl EncodedMessage {
    pub fn new(message: &QueueMessage) -> Self {
        EncodedMessage {
            seq: message.seq,
            bytes: crate::table::encode(message),
        }
    }

    #[allow(clippy::len_without_is_empty)] // never empty
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }
}

#[derive(Clone)]
pub struct QueueStore {
    table: Table<QueueMessage>,
    /// The bodies of large messages, by the same keys.
    large: crate::gate::Tree,
    ages: QueueAges,
}

pub(crate) fn message_key(client: &ClientId, seq: u64) -> [u8; 25] {
    let mut key = [0u8; 25];
    key[..16].copy_from_slice(&client.0);
    key[16] = MESSAGE;
    key[17..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn acked_key(client: &ClientId) -> [u8; 17] {
    kind_key(client, ACKED)
}

/// A queue's record of one kind (`ACKED`, `FLOOR`, format 3's `HEAD`).
fn kind_key(client: &ClientId, kind: u8) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[..16].copy_from_slice(&client.0);
    key[16] = kind;
    key
}

/// Where a queue's acknowledgements reached (0: none).
fn acked(tree: &sled::Tree, client: &ClientId) -> Result<u64> {
    read_u64(tree, &acked_key(client), "queue acknowledgement", 0)
}

/// The sequence number the next message of a queue gets: one past its last message, or past
/// the acknowledged ones, or past its floor (1 for a new queue).
fn next_seq(tree: &sled::Tree, client: &ClientId) -> Result<u64> {
    let floor = read_u64(tree, &kind_key(client, FLOOR), "queue floor", 0)?;
    Ok(last_seq(tree, client)?.max(acked(tree, client)?).max(floor) + 1)
}

/// The sequence number of a queue's last message (0: none).
fn last_seq(tree: &sled::Tree, client: &ClientId) -> Result<u64> {
    let last = tree
        .range(message_key(client, 0)..=message_key(client, u64::MAX))
        .keys()
        .next_back()
        .transpose()?;
    Ok(last.map_or(0, |key| seq_of(&key)))
}

/// Every queue of a queue tree that holds messages, with the seq of its first.
pub(crate) fn first_seqs(tree: &sled::Tree) -> Result<Vec<(ClientId, u64)>> {
    let mut firsts: Vec<(ClientId, u64)> = Vec::new();
    for key in tree.iter().keys() {
        let key = key?;
        if key.len() != 25 || key[16] != MESSAGE {
            continue;
        }
        let client = ClientId(key[..16].try_into().expect("16 bytes"));
        if firsts.last().map(|(c, _)| c) != Some(&client) {
            firsts.push((client, seq_of(&key)));
        }
    }
    Ok(firsts)
}

/// The sequence number in a message's key.
fn seq_of(key: &[u8]) -> u64 {
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&key[17..25]);
    u64::from_be_bytes(seq)
}

/// Turns every format-3 head of a queue tree into the acknowledgement that gives the same next
/// sequence number, and deletes it (the upgrade to format 4); answers how many it turned. Each
/// queue in one batch, so a crash leaves each queue either as it was or done, and running it
/// again finishes the rest.
pub(crate) fn drop_heads(tree: &sled::Tree) -> Result<usize> {
    let heads: Vec<(ClientId, u64)> = tree
        .iter()
        .filter_map(|entry| {
            let (key, value) = match entry {
                Ok(entry) => entry,
                Err(e) => return Some(Err(e.into())),
            };
            let client = <[u8; 16]>::try_from(key.get(..16)?).ok()?;
            (key.len() == 17 && key[16] == HEAD).then(|| {
                let next = <[u8; 8]>::try_from(value.as_ref())
                    .map(u64::from_be_bytes)
                    .map_err(|_| crate::StorageError::Corrupt("queue head".into()))?;
                Ok((ClientId(client), next))
            })
        })
        .collect::<Result<_>>()?;
    for (client, next) in &heads {
        let mut batch = sled::Batch::default();
        if next_seq(tree, client)? < *next {
            // Emptied by acknowledgements made before they were recorded, or lost at its tail:
            // either way, its numbers go on from the head.
            batch.insert(&acked_key(client), &(next - 1).to_be_bytes());
        }
        batch.remove(&kind_key(client, HEAD));
        tree.apply_batch(batch)?;
    }
    Ok(heads.len())
}

impl QueueStore {
    pub(crate) fn open(db: &crate::gate::Db, tree: &str) -> Result<Self> {
        Ok(QueueStore {
            table: Table::open(db, tree)?,
            large: db.open_tree(&format!("{tree}_large"))?,
            ages: QueueAges::open(db, tree)?,
        })
    }

    /// When the queues' messages were queued, for retention.
    pub fn ages(&self) -> &QueueAges {
        &self.ages
    }

    /// The encoded message behind a record of the first tree.
    fn body(&self, key: &[u8], value: sled::IVec) -> Result<sled::IVec> {
        if value.len() != MARKER_LEN {
            return Ok(value);
        }
        self.large.get(key)?.ok_or_else(|| {
            crate::StorageError::Corrupt("the body of a large queued message is missing".into())
        })
    }

    /// The sequence number the next appended message gets: one past the last message, or past
    /// the acknowledged ones (1 for a new queue).
    pub fn next_seq(&self, client: &ClientId) -> Result<u64> {
        next_seq(&self.table.tree.sled(), client)
    }

    /// Appends `message` (whose `seq` the caller took from [`next_seq`](Self::next_seq)); with
    /// `delivery`, remembers that this relayed delivery was queued, in the same batch.
    pub fn append(
        &self,
        client: &ClientId,
        message: EncodedMessage,
        delivery: Option<&[u8; 32]>,
    ) -> Result<()> {
        self.append_all(client, vec![(message, delivery.copied())])
    }

    /// Appends messages, each with the next seq; with a delivery id, remembers that the relayed
    /// delivery was queued. Messages alone are one insert each (see the module doc); if one is
    /// a relayed delivery, all go in one batch with their delivery records, so a delivery is
    /// never queued without being remembered (a retried relay would queue it twice) — one
    /// batch for a relay's whole part for this queue, not one per delivery.
    pub fn append_all(
        &self,
        client: &ClientId,
        messages: Vec<(EncodedMessage, Option<[u8; 32]>)>,
    ) -> Result<()> {
        let relayed = messages.iter().any(|(_, delivery)| delivery.is_some());
        let mut batch = sled::Batch::default();
        for (message, delivery) in messages {
            let (seq, len) = (message.seq, message.len());
            let key = message_key(client, seq);
            let record = match len > LARGE {
                true => {
                    self.large.insert(key, message.bytes)?;
                    marker(len).to_vec()
                }
                false => message.bytes,
            };
            if !relayed {
                self.table.tree.insert(key, record)?;
                continue;
            }
            batch.insert(&key, record);
            if let Some(delivery) = delivery {
                batch.insert(
                    &delivered_key(client, &delivery)[..],
                    crate::table::encode(&(seq, Timestamp::now())),
                );
            }
        }
        if relayed {
            self.table.tree.apply_batch(batch)?;
        }
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

    /// Messages with `seq >= from`, in order — at most `max` of them and, beyond the first, at
    /// most `max_bytes` encoded bytes in all — and whether more follow. Reads only what it
    /// returns, so a long queue is never built in memory.
    pub fn range(
        &self,
        client: &ClientId,
        from: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<(Vec<QueueMessage>, bool)> {
        let mut messages = Vec::new();
        let mut bytes = 0;
        let end = message_key(client, u64::MAX);
        for entry in self.table.tree.range(message_key(client, from)..=end) {
            let (key, value) = entry?;
            let len = stored_len(&value);
            if messages.len() == max || (!messages.is_empty() && bytes + len > max_bytes) {
                return Ok((messages, true));
            }
            bytes += len;
            messages.push(crate::table::decode(&self.body(&key, value)?)?);
        }
        Ok((messages, false))
    }

    /// How many messages a queue holds and their stored bytes: read once when its actor starts,
    /// which then keeps count.
    pub fn usage(&self, client: &ClientId) -> Result<QueueUsage> {
        let mut usage = QueueUsage::default();
        let end = message_key(client, u64::MAX);
        for entry in self.table.tree.range(message_key(client, 0)..=end) {
            let (_, value) = entry?;
            usage.add(stored_len(&value));
        }
        Ok(usage)
    }

    /// Deletes every message with `seq <= up_to`; returns what they took. Forgets the relayed
    /// deliveries among them that were queued more than [`REMEMBER_DELIVERIES_SECS`] ago.
    ///
    /// One write at a time, no batch (see the module doc), in an order a crash cannot spoil:
    /// first where the queue now starts — which also keeps the next sequence number once the
    /// queue is empty, and tells a check lost messages from acknowledged ones — then the
    /// messages, then their bodies. A crash between leaves acknowledged messages behind, which
    /// nobody reads again and the next acknowledgement deletes.
    pub fn ack(&self, client: &ClientId, up_to: u64) -> Result<QueueUsage> {
        let tree = &self.table.tree;
        // Never past the last message: what is not there yet is not acknowledged.
        let sled = tree.sled();
        let acked = acked(&sled, client)?.max(up_to.min(last_seq(&sled, client)?));
        tree.insert(acked_key(client), &acked.to_be_bytes())?;
        let mut freed = QueueUsage::default();
        let acknowledged = message_key(client, 0)..=message_key(client, up_to);
        for entry in tree.range(acknowledged.clone()) {
            let (key, value) = entry?;
            freed.add(stored_len(&value));
            tree.remove(key)?;
        }
        let mut prefix = client.0.to_vec();
        prefix.push(DELIVERED);
        let forget_before = Timestamp::now().0.saturating_sub(REMEMBER_DELIVERIES_SECS);
        for entry in tree.scan_prefix(prefix) {
            let (key, bytes) = entry?;
            let (seq, at): (u64, Timestamp) = crate::table::decode(&bytes)?;
            if seq <= up_to && at.0 < forget_before {
                tree.remove(key)?;
            }
        }
        // Bodies after their records: a crash between leaves a body no record names, which the
        // next acknowledgement past it removes (a record never names a missing body).
        for key in self.large.range(acknowledged).keys() {
            self.large.remove(key?)?;
        }
        Ok(freed)
    }

    /// What a queue holds, for operators: counts and sizes only (messages are sealed).
    pub fn summary(&self, client: &ClientId) -> Result<QueueSummary> {
        let usage = self.usage(client)?;
        let end = message_key(client, u64::MAX);
        let oldest = self
            .table
            .tree
            .range(message_key(client, 0)..=end)
            .keys()
            .next();
        let mut prefix = client.0.to_vec();
        prefix.push(DELIVERED);
        Ok(QueueSummary {
            waiting: usage.messages,
            bytes: usage.bytes,
            oldest_seq: oldest
                .transpose()?
                .and_then(|key| key[17..].try_into().ok().map(u64::from_be_bytes)),
            next_seq: self.next_seq(client)?,
            remembered_relays: self.table.tree.scan_prefix(prefix).count() as u64,
        })
    }

    /// Every message decodes, every head is a number, every remembered relay decodes; and each
    /// queue holds every message from its oldest to the one before its head.
    pub(crate) fn check(&self, name: &str, report: &mut crate::CheckReport) {
        // Bodies are checked through the records that name them.
        report.readable(&format!("{name}_large"), &self.large.sled());
        self.ages.check(name, report);
        // Per queue: the seqs of its messages, where acknowledgements reached.
        type Seen = (Vec<u64>, Option<u64>);
        let mut queues: std::collections::BTreeMap<[u8; 16], Seen> = Default::default();
        for entry in self.table.tree.iter() {
            let (key, value) = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    report.damaged(name, format!("unreadable record: {e}"));
                    continue;
                }
            };
            let quoted = crate::table::hex(&key);
            let Some(client) = key.get(..16).and_then(|c| <[u8; 16]>::try_from(c).ok()) else {
                report.damaged(name, format!("key {quoted} is too short"));
                continue;
            };
            let queue = queues.entry(client).or_default();
            let fine = match key.get(16) {
                Some(&MESSAGE) => key
                    .get(17..25)
                    .and_then(|seq| seq.try_into().ok())
                    .map(u64::from_be_bytes)
                    .filter(|_| {
                        self.body(&key, value.clone())
                            .is_ok_and(|body| crate::table::decode::<QueueMessage>(&body).is_ok())
                    })
                    .map(|seq| queue.0.push(seq))
                    .is_some(),
                Some(&DELIVERED) => crate::table::decode::<(u64, Timestamp)>(&value).is_ok(),
                Some(&ACKED) => <[u8; 8]>::try_from(value.as_ref())
                    .map(|acked| queue.1 = Some(u64::from_be_bytes(acked)))
                    .is_ok(),
                Some(&FLOOR) => value.len() == 8,
                _ => false,
            };
            if fine {
                report.record(name);
            } else {
                report.damaged(name, format!("key {quoted} cannot be decoded"));
            }
        }
        for (client, (seqs, acked)) in queues {
            // Every message after the acknowledged ones is waiting, up to the last. (Messages up
            // to the acknowledged one are left by an acknowledgement a crash cut short; a queue
            // of a store older than acknowledgement records starts at its first message.)
            let waiting: Vec<u64> = seqs
                .into_iter()
                .filter(|seq| *seq > acked.unwrap_or(0))
                .collect();
            let (Some(&first), Some(&last)) = (waiting.first(), waiting.last()) else {
                continue;
            };
            let oldest = acked.map_or(first, |acked| acked + 1);
            let expected = last + 1 - oldest;
            if (waiting.len() as u64) < expected {
                report.damaged(
                    name,
                    format!(
                        "queue {} lacks {} of its messages {oldest}..{last}",
                        crate::table::hex(&client),
                        expected - waiting.len() as u64,
                    ),
                );
            }
        }
    }

    /// Every queue's usage, largest (by bytes) first: for operators, against the limits.
    pub fn usage_by_queue(&self) -> Result<Vec<(ClientId, QueueUsage)>> {
        let mut queues: std::collections::HashMap<[u8; 16], QueueUsage> = Default::default();
        for entry in self.table.tree.iter() {
            let (key, value) = entry?;
            if key.get(16) == Some(&MESSAGE) {
                if let Ok(client) = <[u8; 16]>::try_from(&key[..16]) {
                    queues.entry(client).or_default().add(stored_len(&value));
                }
            }
        }
        let mut queues: Vec<_> = queues
            .into_iter()
            .map(|(client, usage)| (ClientId(client), usage))
            .collect();
        queues.sort_by_key(|(_, usage)| std::cmp::Reverse(usage.bytes));
        Ok(queues)
    }

    /// Numbers the next messages of every queue it holds, and of every queue of `clients`
    /// (which may hold nothing yet), past anything it may have handed out since the backup this
    /// store was restored from (by `RESTORE_GAP`, 2^32); answers how many queues.
    pub fn raise_floors(&self, clients: impl IntoIterator<Item = ClientId>) -> Result<usize> {
        let mut queues: std::collections::BTreeSet<[u8; 16]> =
            clients.into_iter().map(|c| c.0).collect();
        for key in self.table.tree.iter().keys() {
            if let Some(client) = key?.get(..16).and_then(|c| <[u8; 16]>::try_from(c).ok()) {
                queues.insert(client);
            }
        }
        for client in &queues {
            let client = ClientId(*client);
            let floor = next_seq(&self.table.tree.sled(), &client)? - 1 + RESTORE_GAP;
            self.table
                .tree
                .insert(kind_key(&client, FLOOR), &floor.to_be_bytes())?;
        }
        Ok(queues.len())
    }

    /// Messages and bytes waiting in all queues of this tree.
    pub fn total(&self) -> Result<QueueUsage> {
        let mut total = QueueUsage::default();
        for entry in self.table.tree.iter() {
            let (key, value) = entry?;
            if key.get(16) == Some(&MESSAGE) {
                total.add(stored_len(&value));
            }
        }
        Ok(total)
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
        let mut bodies = sled::Batch::default();
        for key in self.large.scan_prefix(client.0).keys() {
            bodies.remove(key?);
        }
        self.large.apply_batch(bodies)?;
        self.ages.forget(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roost_protocol::queue::Sealing;

    fn message(seq: u64, size: usize) -> QueueMessage {
        QueueMessage {
            seq,
            sealing: Sealing::Chain {
                start: None,
                ciphertext: vec![1; size],
            },
        }
    }

    #[test]
    fn a_batch_is_bounded_by_bytes_but_always_holds_one_message() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path()).unwrap();
        let queues = store.queues().unwrap();
        let client = ClientId::random();
        for seq in 1..=5 {
            let encoded = EncodedMessage::new(&message(seq, 1000));
            queues.append(&client, encoded, None).unwrap();
        }
        let one = EncodedMessage::new(&message(1, 1000)).len();
        let (batch, more) = queues.range(&client, 1, 100, 2 * one).unwrap();
        assert_eq!(batch.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2]);
        assert!(more);
        // Smaller than one message: that one still comes.
        let (batch, more) = queues.range(&client, 3, 100, 10).unwrap();
        assert_eq!(batch.iter().map(|m| m.seq).collect::<Vec<_>>(), [3]);
        assert!(more);
        let (batch, more) = queues.range(&client, 4, 100, usize::MAX).unwrap();
        assert_eq!(batch.len(), 2);
        assert!(!more);

        let usage = queues.usage(&client).unwrap();
        assert_eq!(
            usage,
            QueueUsage {
                messages: 5,
                bytes: 5 * one as u64
            }
        );
        let freed = queues.ack(&client, 2).unwrap();
        assert_eq!(
            freed,
            QueueUsage {
                messages: 2,
                bytes: 2 * one as u64
            }
        );
        assert_eq!(queues.usage(&client).unwrap().messages, 3);
    }

    #[test]
    fn large_messages_live_apart_and_read_back_like_any_other() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path()).unwrap();
        let queues = store.queues().unwrap();
        let client = ClientId::random();
        let sizes = [100, LARGE + 1, 200, 3 * LARGE];
        for (seq, size) in (1..).zip(sizes) {
            let encoded = EncodedMessage::new(&message(seq, size));
            queues.append(&client, encoded, None).unwrap();
        }
        let (batch, more) = queues.range(&client, 1, 100, usize::MAX).unwrap();
        assert!(!more);
        let lengths: Vec<usize> = batch
            .iter()
            .map(|m| match &m.sealing {
                Sealing::Chain { ciphertext, .. } => ciphertext.len(),
                Sealing::Hpke(sealed) => sealed.ciphertext.len(),
            })
            .collect();
        assert_eq!(lengths, sizes);
        assert_eq!(queues.large.len(), 2);
        let total: u64 = sizes
            .iter()
            .zip(1..)
            .map(|(&size, seq)| EncodedMessage::new(&message(seq, size)).len() as u64)
            .sum();
        assert_eq!(queues.usage(&client).unwrap().bytes, total);
        let mut report = crate::CheckReport::default();
        queues.check("qs_queues", &mut report);
        assert!(report.is_sound(), "{:?}", report.problems);
        // Acknowledged, the bodies go too.
        queues.ack(&client, 2).unwrap();
        assert_eq!(queues.large.len(), 1);
        queues.delete(&client).unwrap();
        assert_eq!(queues.large.len(), 0);
    }

    fn append_seqs(queues: &QueueStore, client: &ClientId, seqs: std::ops::RangeInclusive<u64>) {
        for seq in seqs {
            assert_eq!(queues.next_seq(client).unwrap(), seq);
            let encoded = EncodedMessage::new(&message(seq, 100));
            queues.append(client, encoded, None).unwrap();
        }
    }

    fn assert_sound(queues: &QueueStore) {
        let mut report = crate::CheckReport::default();
        queues.check("qs_queues", &mut report);
        assert!(report.is_sound(), "{:?}", report.problems);
    }

    #[test]
    fn numbers_go_on_after_the_last_message_even_once_every_message_is_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path()).unwrap();
        let queues = store.queues().unwrap();
        let client = ClientId::random();
        assert_eq!(queues.next_seq(&client).unwrap(), 1);
        append_seqs(&queues, &client, 1..=3);
        queues.ack(&client, 3).unwrap();
        assert_eq!(queues.len(&client), 0);
        append_seqs(&queues, &client, 4..=4);
        // An acknowledgement beyond the last message acknowledges only what is there.
        queues.ack(&client, 100).unwrap();
        assert_eq!(queues.next_seq(&client).unwrap(), 5);
        assert_sound(&queues);
    }

    #[test]
    fn an_acknowledgement_cut_short_by_a_crash_leaves_a_sound_queue_and_the_next_one_ends_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path()).unwrap();
        let queues = store.queues().unwrap();
        let client = ClientId::random();
        append_seqs(&queues, &client, 1..=4);
        // The first write of an acknowledgement of 2, and no more.
        queues
            .table
            .tree
            .insert(acked_key(&client), &2u64.to_be_bytes())
            .unwrap();
        assert_sound(&queues);
        assert_eq!(queues.next_seq(&client).unwrap(), 5);
        let freed = queues.ack(&client, 3).unwrap();
        assert_eq!(freed.messages, 3);
        assert_eq!(queues.usage(&client).unwrap().messages, 1);
        assert_sound(&queues);
        // A message lost from the middle is found.
        queues.table.tree.remove(message_key(&client, 4)).unwrap();
        append_seqs(&queues, &client, 4..=5);
        queues.table.tree.remove(message_key(&client, 4)).unwrap();
        let mut report = crate::CheckReport::default();
        queues.check("qs_queues", &mut report);
        assert!(!report.is_sound());
    }
}
