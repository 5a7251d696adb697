//! The federation outbox: group deliveries for other homeservers, kept until the receiving
//! homeserver has taken them.
//!
//! One tree, `fed_outbox`; per domain, `0 ‖ domain length ‖ domain ‖ seq (BE)` → the delivery
//! and `1 ‖ domain length ‖ domain` → the next seq, so appending and advancing the counter is
//! one batch. Deliveries of a domain leave in seq order. While a domain fails to take relays,
//! `2 ‖ domain length ‖ domain` → [`Unreachable`]: since when, and the last delivery that was
//! waiting then.

use roost_protocol::{federation::FederatedDelivery, Domain, Timestamp};

use crate::{table::Table, Result, StorageError};

const ENTRY: u8 = 0;
const HEAD: u8 = 1;
const UNREACHABLE: u8 = 2;

/// A domain failing to take relays: since when, and the last delivery waiting for it then
/// (every delivery up to it has waited at least as long).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Unreachable {
    pub since: Timestamp,
    pub waiting_up_to: u64,
}

fn domain_key(kind: u8, domain: &Domain) -> Vec<u8> {
    let name = domain.as_str().as_bytes();
    let mut key = Vec::with_capacity(name.len() + 10);
    key.push(kind);
    key.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
    key.extend_from_slice(name);
    key
}

fn entry_key(domain: &Domain, seq: u64) -> Vec<u8> {
    let mut key = domain_key(ENTRY, domain);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

#[derive(Clone)]
pub struct OutboxStore {
    table: Table<FederatedDelivery>,
}

impl OutboxStore {
    pub(crate) fn open(db: &crate::gate::Db) -> Result<Self> {
        Ok(OutboxStore {
            table: Table::open(db, "fed_outbox")?,
        })
    }

    pub(crate) fn check(&self, report: &mut crate::CheckReport) {
        self.table
            .check("fed_outbox", |key| key.first() == Some(&ENTRY), report);
    }

    /// Appends deliveries for `domain` in one batch; the caller is the domain's only writer.
    /// Answers the seq of the last delivery now in the outbox for `domain`.
    pub fn push(&self, domain: &Domain, deliveries: &[FederatedDelivery]) -> Result<u64> {
        let mut next = self.last_seq(domain)? + 1;
        let mut batch = sled::Batch::default();
        for delivery in deliveries {
            batch.insert(entry_key(domain, next), crate::table::encode(delivery));
            next += 1;
        }
        batch.insert(domain_key(HEAD, domain), &next.to_be_bytes());
        self.table.tree.apply_batch(batch)?;
        Ok(next - 1)
    }

    /// The seq of the last delivery pushed for `domain` (0: none ever).
    pub fn last_seq(&self, domain: &Domain) -> Result<u64> {
        let next = crate::table::read_u64(
            &self.table.tree.sled(),
            &domain_key(HEAD, domain),
            "outbox head",
            1,
        )?;
        Ok(next - 1)
    }

    /// The oldest deliveries waiting for `domain`, with their seqs, in order: at most `max`,
    /// and no more than `max_bytes` of them encoded unless the first alone is larger.
    pub fn oldest(
        &self,
        domain: &Domain,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, FederatedDelivery)>> {
        let prefix = domain_key(ENTRY, domain);
        let mut taken = Vec::new();
        let mut bytes_taken = 0;
        for entry in self.table.tree.scan_prefix(&prefix).take(max) {
            let (key, bytes) = entry?;
            if !taken.is_empty() && bytes_taken + bytes.len() > max_bytes {
                break;
            }
            bytes_taken += bytes.len();
            let seq = key[prefix.len()..]
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| StorageError::Corrupt("outbox key".into()))?;
            taken.push((seq, crate::table::decode(&bytes)?));
        }
        Ok(taken)
    }

    pub fn remove(&self, domain: &Domain, seqs: &[u64]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for &seq in seqs {
            batch.remove(entry_key(domain, seq));
        }
        self.table.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Since when `domain` fails to take relays, if it does.
    pub fn unreachable(&self, domain: &Domain) -> Result<Option<Unreachable>> {
        self.table
            .tree
            .get(domain_key(UNREACHABLE, domain))?
            .map(|bytes| crate::table::decode(&bytes))
            .transpose()
    }

    /// Records that `domain` fails to take relays (`Some`), or takes them again (`None`).
    pub fn set_unreachable(&self, domain: &Domain, unreachable: Option<Unreachable>) -> Result<()> {
        let key = domain_key(UNREACHABLE, domain);
        match unreachable {
            Some(unreachable) => self
                .table
                .tree
                .insert(key, crate::table::encode(&unreachable))?,
            None => self.table.tree.remove(key)?,
        };
        Ok(())
    }

    /// How many deliveries wait for `domain`.
    pub fn len(&self, domain: &Domain) -> usize {
        self.table
            .tree
            .scan_prefix(domain_key(ENTRY, domain))
            .count()
    }

    /// Every domain with deliveries waiting.
    pub fn domains(&self) -> Result<Vec<Domain>> {
        let mut domains: Vec<Domain> = Vec::new();
        for key in self.table.tree.scan_prefix([ENTRY]).keys() {
            let key = key?;
            let len = usize::from(*key.get(1).unwrap_or(&0));
            let name = key
                .get(2..2 + len)
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| StorageError::Corrupt("outbox key".into()))?;
            if domains.last() != Some(&name) {
                domains.push(name);
            }
        }
        Ok(domains)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roost_protocol::{
        ds::{GroupDelivery, SealedQueueRef},
        ClientId, HpkeSecretKey,
    };

    fn delivery(to: &Domain, n: u8) -> FederatedDelivery {
        let (_, key) = HpkeSecretKey::generate();
        FederatedDelivery {
            id: [n; 16],
            to: to.clone(),
            queue: SealedQueueRef::seal(to.clone(), &key, &ClientId::random()).unwrap(),
            item: GroupDelivery::Message {
                seq: 1,
                group_id: vec![n],
                message: vec![n],
            },
        }
    }

    #[test]
    fn deliveries_leave_per_domain_in_order_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (b, c): (Domain, Domain) = ("b.test".parse().unwrap(), "c.test".parse().unwrap());
        {
            let store = crate::Store::open(dir.path()).unwrap();
            let outbox = store.outbox().unwrap();
            outbox
                .push(&b, &[delivery(&b, 1), delivery(&b, 2)])
                .unwrap();
            outbox.push(&c, &[delivery(&c, 3)]).unwrap();
            outbox.push(&b, &[delivery(&b, 4)]).unwrap();
            store.persist_blocking().unwrap();
            drop(outbox);
            store.close().unwrap();
        }
        let store = crate::Store::open(dir.path()).unwrap();
        let outbox = store.outbox().unwrap();
        assert_eq!(outbox.domains().unwrap(), [b.clone(), c.clone()]);
        let mut ids = Vec::new();
        loop {
            // Two at a time, as a sender with a small batch would take them.
            let batch = outbox.oldest(&b, 2, usize::MAX).unwrap();
            if batch.is_empty() {
                break;
            }
            ids.push(batch.iter().map(|(_, d)| d.id[0]).collect::<Vec<_>>());
            let seqs: Vec<u64> = batch.iter().map(|(seq, _)| *seq).collect();
            outbox.remove(&b, &seqs).unwrap();
        }
        assert_eq!(ids, [vec![1, 2], vec![4]]);
        assert_eq!(outbox.len(&c), 1);
        assert_eq!(outbox.domains().unwrap(), [c]);
    }

    #[test]
    fn a_batch_stops_at_its_byte_budget_but_always_takes_one() {
        let dir = tempfile::tempdir().unwrap();
        let b: Domain = "b.test".parse().unwrap();
        let store = crate::Store::open(dir.path()).unwrap();
        let outbox = store.outbox().unwrap();
        outbox
            .push(&b, &[delivery(&b, 1), delivery(&b, 2), delivery(&b, 3)])
            .unwrap();
        let one = crate::table::encode(&delivery(&b, 1)).len();
        assert_eq!(outbox.oldest(&b, 10, 1).unwrap().len(), 1);
        assert_eq!(outbox.oldest(&b, 10, 2 * one).unwrap().len(), 2);
        assert_eq!(outbox.oldest(&b, 10, usize::MAX).unwrap().len(), 3);
    }
}
