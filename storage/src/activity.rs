//! When each client, and each DS group, was last active: `as_client_activity` (client id →
//! when) and `ds_group_activity` (group id → when), seconds big-endian. Written at most once per
//! key per period by the recorder in `roost-actors`, so a busy client or group costs no write
//! per request; read by the retention sweep, which expires clients and groups idle for longer
//! than the admin allows.
//!
//! They hold no more than the AS and DS already know (which clients and groups exist) plus a
//! coarse time.

use roost_protocol::{ClientId, Timestamp};

use crate::Result;

fn corrupt(what: &'static str) -> crate::StorageError {
    crate::StorageError::Corrupt(format!("a {what} activity record"))
}

/// When each key was last recorded active: one tree.
#[derive(Clone)]
pub struct LastSeen {
    tree: crate::gate::Tree,
    name: &'static str,
}

impl LastSeen {
    pub(crate) fn open(db: &crate::gate::Db, name: &'static str) -> Result<Self> {
        Ok(LastSeen {
            tree: db.open_tree(name)?,
            name,
        })
    }

    pub(crate) fn check(&self, report: &mut crate::CheckReport) {
        report.readable(self.name, &self.tree.sled());
    }

    /// The tree, for a transaction that records beside other writes (with [`Self::value`]).
    pub(crate) fn tree(&self) -> &crate::gate::Tree {
        &self.tree
    }

    /// A record's time (seconds, big-endian).
    fn time(&self, value: &[u8]) -> Result<Timestamp> {
        let at = <[u8; 8]>::try_from(value).map_err(|_| corrupt(self.name))?;
        Ok(Timestamp(u64::from_be_bytes(at)))
    }

    /// The record of `at`.
    pub(crate) fn value(at: Timestamp) -> [u8; 8] {
        at.0.to_be_bytes()
    }

    /// `key` was active at `at`.
    pub fn record(&self, key: &[u8], at: Timestamp) -> Result<()> {
        self.tree.insert(key, &Self::value(at))?;
        Ok(())
    }

    /// When `key` was last recorded, if ever.
    pub fn last_seen(&self, key: &[u8]) -> Result<Option<Timestamp>> {
        self.tree
            .get(key)?
            .map(|value| self.time(&value))
            .transpose()
    }

    /// Starts the clock of every key of `live` that has no record (made before activity was
    /// recorded) at `now`, and forgets the records of keys not in it (deleted); answers how
    /// many it started.
    pub fn reconcile(&self, live: &[Vec<u8>], now: Timestamp) -> Result<usize> {
        let live_keys: std::collections::HashSet<&[u8]> =
            live.iter().map(|key| key.as_slice()).collect();
        let mut recorded = std::collections::HashSet::new();
        let mut forget = sled::Batch::default();
        for key in self.tree.iter().keys() {
            let key = key?;
            match live_keys.get(key.as_ref()) {
                Some(live) => {
                    recorded.insert(*live);
                }
                None => forget.remove(key),
            }
        }
        self.tree.apply_batch(forget)?;
        let mut started = 0;
        for key in live_keys.difference(&recorded) {
            self.record(key, now)?;
            started += 1;
        }
        Ok(started)
    }

    /// Keys last recorded before `before`.
    pub fn seen_before(&self, before: Timestamp) -> Result<Vec<Vec<u8>>> {
        let mut idle = Vec::new();
        for entry in self.tree.iter() {
            let (key, value) = entry?;
            if self.time(&value)? < before {
                idle.push(key.to_vec());
            }
        }
        Ok(idle)
    }

    pub fn forget(&self, key: &[u8]) -> Result<()> {
        self.tree.remove(key)?;
        Ok(())
    }

    /// Forgets the keys last recorded before `before`; answers how many.
    pub fn forget_seen_before(&self, before: Timestamp) -> Result<usize> {
        let idle = self.seen_before(before)?;
        let mut forget = sled::Batch::default();
        for key in &idle {
            forget.remove(key.as_slice());
        }
        self.tree.apply_batch(forget)?;
        Ok(idle.len())
    }
}

/// When each client was last seen making a request.
#[derive(Clone)]
pub struct ClientActivity(LastSeen);

impl ClientActivity {
    pub(crate) fn open(db: &crate::gate::Db) -> Result<Self> {
        Ok(ClientActivity(LastSeen::open(db, "as_client_activity")?))
    }

    pub(crate) fn check(&self, report: &mut crate::CheckReport) {
        self.0.check(report)
    }

    /// The same records, by bytes (for the recorder, which serves clients and groups alike).
    pub fn last_seen_table(&self) -> &LastSeen {
        &self.0
    }

    /// `client` was seen at `at`.
    pub fn record(&self, client: &ClientId, at: Timestamp) -> Result<()> {
        self.0.record(&client.0, at)
    }

    /// When `client` was last recorded, if ever.
    pub fn last_seen(&self, client: &ClientId) -> Result<Option<Timestamp>> {
        self.0.last_seen(&client.0)
    }

    /// Starts the clock of every client in `clients` that has no record (registered before
    /// activity was recorded) at `now`, and forgets the records of clients not in it (deleted);
    /// answers how many it started.
    pub fn reconcile(&self, clients: &[ClientId], now: Timestamp) -> Result<usize> {
        let keys: Vec<Vec<u8>> = clients.iter().map(|client| client.0.to_vec()).collect();
        self.0.reconcile(&keys, now)
    }

    /// Clients last recorded before `before`.
    pub fn seen_before(&self, before: Timestamp) -> Result<Vec<ClientId>> {
        self.0
            .seen_before(before)?
            .into_iter()
            .map(|key| {
                <[u8; 16]>::try_from(key.as_slice())
                    .map(ClientId)
                    .map_err(|_| corrupt("client"))
            })
            .collect()
    }

    pub fn forget(&self, client: &ClientId) -> Result<()> {
        self.0.forget(&client.0)
    }
}

/// When each DS group last took a request that changed it or spoke in it.
pub(crate) fn group_activity(db: &crate::gate::Db) -> Result<LastSeen> {
    LastSeen::open(db, "ds_group_activity")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_without_a_record_start_their_clock_and_deleted_ones_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path()).unwrap();
        let activity = store.client_activity().unwrap();
        let (old, new, gone) = (ClientId([1; 16]), ClientId([2; 16]), ClientId([3; 16]));
        activity.record(&old, Timestamp(100)).unwrap();
        activity.record(&gone, Timestamp(100)).unwrap();
        assert_eq!(activity.reconcile(&[old, new], Timestamp(500)).unwrap(), 1);
        assert_eq!(activity.last_seen(&new).unwrap(), Some(Timestamp(500)));
        assert_eq!(activity.last_seen(&gone).unwrap(), None);
        assert_eq!(activity.seen_before(Timestamp(200)).unwrap(), vec![old]);
        assert!(activity.seen_before(Timestamp(100)).unwrap().is_empty());
    }

    #[test]
    fn an_expired_groups_record_is_kept_until_its_time_and_then_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path()).unwrap();
        let groups = store.groups().unwrap();
        groups.expire(b"old", Timestamp(100)).unwrap();
        groups.expire(b"new", Timestamp(300)).unwrap();
        assert_eq!(groups.expired_at(b"old").unwrap(), Some(Timestamp(100)));
        assert_eq!(groups.sweep_expired(Timestamp(200)).unwrap(), 1);
        assert_eq!(groups.expired_at(b"old").unwrap(), None);
        assert_eq!(groups.expired_at(b"new").unwrap(), Some(Timestamp(300)));
    }
}
