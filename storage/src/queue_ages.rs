//! How old a queue's messages are, without a time on each: a queue's *marks*, in a tree of their
//! own (`<queue tree>_ages`), keyed `client id ‖ when (seconds, big-endian)` → the first
//! sequence number queued at or after that time. The queue actor writes a mark with the first
//! message of each period (at most one write per queue per period, beside the one insert a
//! message takes), so every message between one mark and the period's end was queued within
//! that period. The retention sweep finds queues by their old marks without reading a message.

use roost_protocol::{ClientId, Timestamp};

use crate::{Result, StorageError};

#[derive(Clone)]
pub struct QueueAges {
    tree: crate::gate::Tree,
}

/// What retention drops of one queue: [`QueueAges::expired`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// Messages before this seq are old; `None`: every message the queue holds is.
    pub keep_from: Option<u64>,
    /// The marks that dated them, to forget once they are dropped.
    pub marks: Vec<Timestamp>,
}

fn key_of(client: &ClientId, at: Timestamp) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(&client.0);
    key[16..].copy_from_slice(&at.0.to_be_bytes());
    key
}

fn mark(key: &[u8], value: &[u8]) -> Result<(ClientId, Timestamp, u64)> {
    let corrupt = || StorageError::Corrupt("a queue age mark".into());
    let client = <[u8; 16]>::try_from(key.get(..16).ok_or_else(corrupt)?).map_err(|_| corrupt())?;
    let at = <[u8; 8]>::try_from(key.get(16..).ok_or_else(corrupt)?).map_err(|_| corrupt())?;
    let seq = <[u8; 8]>::try_from(value).map_err(|_| corrupt())?;
    Ok((
        ClientId(client),
        Timestamp(u64::from_be_bytes(at)),
        u64::from_be_bytes(seq),
    ))
}

impl QueueAges {
    pub(crate) fn open(db: &crate::gate::Db, queue_tree: &str) -> Result<Self> {
        Ok(QueueAges {
            tree: db.open_tree(&Self::name(queue_tree))?,
        })
    }

    pub(crate) fn name(queue_tree: &str) -> String {
        format!("{queue_tree}_ages")
    }

    pub(crate) fn check(&self, queue_tree: &str, report: &mut crate::CheckReport) {
        report.readable(&Self::name(queue_tree), &self.tree.sled());
    }

    /// Message `seq` is being queued at `now`: marks it unless the queue has a mark in this
    /// period (`period_secs` long, counted from the epoch). Answers whether it wrote one.
    pub fn note(
        &self,
        client: &ClientId,
        now: Timestamp,
        period_secs: u64,
        seq: u64,
    ) -> Result<bool> {
        let period_start = now.0 - now.0 % period_secs.max(1);
        // Marks are in time order: the last one is the latest.
        if let Some(entry) = self.tree.scan_prefix(client.0).next_back() {
            let (key, value) = entry?;
            let (_, at, _) = mark(&key, &value)?;
            if at.0 >= period_start {
                return Ok(false);
            }
        }
        self.tree.insert(key_of(client, now), &seq.to_be_bytes())?;
        Ok(true)
    }

    /// A queue's marks, oldest first: when, and the first seq queued from then on.
    fn marks(&self, client: &ClientId) -> Result<Vec<(ClientId, Timestamp, u64)>> {
        self.tree
            .scan_prefix(client.0)
            .map(|entry| {
                let (key, value) = entry?;
                mark(&key, &value)
            })
            .collect()
    }

    /// What of `client`'s queue was queued before `cutoff`, if anything: each mark's messages
    /// were queued within `period_secs` of it, so they are all old once the mark is that much
    /// older than `cutoff` (never dropped early; late by at most a period).
    pub fn expired(
        &self,
        client: &ClientId,
        cutoff: Timestamp,
        period_secs: u64,
    ) -> Result<Option<Expired>> {
        let mut expired = Expired {
            keep_from: None,
            marks: Vec::new(),
        };
        for (_, at, seq) in self.marks(client)? {
            if at.0.saturating_add(period_secs) <= cutoff.0 {
                expired.marks.push(at);
            } else {
                expired.keep_from = Some(seq);
                break;
            }
        }
        Ok((!expired.marks.is_empty()).then_some(expired))
    }

    /// Forgets marks of `client` whose messages were dropped.
    pub fn forget_marks(&self, client: &ClientId, marks: &[Timestamp]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for at in marks {
            batch.remove(&key_of(client, *at)[..]);
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// The queues with a mark from before `before`, each once.
    pub fn marked_before(&self, before: Timestamp) -> Result<Vec<ClientId>> {
        let mut queues: Vec<ClientId> = Vec::new();
        for entry in self.tree.iter() {
            let (key, value) = entry?;
            let (client, at, _) = mark(&key, &value)?;
            if at < before && queues.last() != Some(&client) {
                queues.push(client);
            }
        }
        Ok(queues)
    }

    /// Forgets every mark of a deleted queue.
    pub(crate) fn forget(&self, client: &ClientId) -> Result<()> {
        let mut batch = sled::Batch::default();
        for key in self.tree.scan_prefix(client.0).keys() {
            batch.remove(key?);
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }
}

/// Dates every queue that holds messages, given each one's first seq, as of `now` (the upgrade
/// to format 7); answers how many. Running it again after a crash adds a later mark at the same
/// seq, which changes nothing that is dropped.
pub(crate) fn date_queued(
    ages: &sled::Tree,
    first_seqs: &[(ClientId, u64)],
    now: Timestamp,
) -> Result<usize> {
    for (client, seq) in first_seqs {
        ages.insert(key_of(client, now), &seq.to_be_bytes())?;
    }
    Ok(first_seqs.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_old_only_once_their_whole_period_is_past_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path()).unwrap();
        let ages = store.queues().unwrap().ages().clone();
        let client = ClientId([7; 16]);
        // Periods of 100 s: one mark per period, however many messages.
        assert!(ages.note(&client, Timestamp(1010), 100, 1).unwrap());
        assert!(!ages.note(&client, Timestamp(1090), 100, 5).unwrap());
        assert!(ages.note(&client, Timestamp(1100), 100, 6).unwrap());
        assert!(ages.note(&client, Timestamp(1350), 100, 9).unwrap());

        assert_eq!(ages.expired(&client, Timestamp(1109), 100).unwrap(), None);
        assert_eq!(
            ages.expired(&client, Timestamp(1110), 100).unwrap(),
            Some(Expired {
                keep_from: Some(6),
                marks: vec![Timestamp(1010)],
            })
        );
        assert_eq!(
            ages.expired(&client, Timestamp(1450), 100).unwrap(),
            Some(Expired {
                keep_from: None,
                marks: vec![Timestamp(1010), Timestamp(1100), Timestamp(1350)],
            })
        );
        assert_eq!(ages.marked_before(Timestamp(1011)).unwrap(), vec![client]);
        ages.forget_marks(&client, &[Timestamp(1010)]).unwrap();
        assert!(ages.marked_before(Timestamp(1011)).unwrap().is_empty());
        ages.forget(&client).unwrap();
        assert_eq!(ages.expired(&client, Timestamp(9999), 100).unwrap(), None);
    }
}
