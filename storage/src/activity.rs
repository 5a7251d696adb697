//! When each client was last seen making a request: one tree, `as_client_activity`, client id →
//! when (seconds, big-endian). Written at most once per client per period by the recorder in
//! `roost-actors`, so a busy client costs no write per request; read by the retention sweep,
//! which expires clients idle for longer than the admin allows.
//!
//! It holds no more than the AS already knows (which clients exist) plus a coarse time.

use roost_protocol::{ClientId, Timestamp};

use crate::Result;

fn corrupt() -> crate::StorageError {
    crate::StorageError::Corrupt("a client activity record".into())
}

/// A record's time (seconds, big-endian).
fn time(value: &[u8]) -> Result<Timestamp> {
    let at = <[u8; 8]>::try_from(value).map_err(|_| corrupt())?;
    Ok(Timestamp(u64::from_be_bytes(at)))
}

#[derive(Clone)]
pub struct ClientActivity {
    tree: crate::gate::Tree,
}

const TREE: &str = "as_client_activity";

impl ClientActivity {
    pub(crate) fn open(db: &crate::gate::Db) -> Result<Self> {
        Ok(ClientActivity {
            tree: db.open_tree(TREE)?,
        })
    }

    pub(crate) fn check(&self, report: &mut crate::CheckReport) {
        report.readable(TREE, &self.tree.sled());
    }

    /// `client` was seen at `at`.
    pub fn record(&self, client: &ClientId, at: Timestamp) -> Result<()> {
        self.tree.insert(client.0, &at.0.to_be_bytes())?;
        Ok(())
    }

    /// When `client` was last recorded, if ever.
    pub fn last_seen(&self, client: &ClientId) -> Result<Option<Timestamp>> {
        self.tree
            .get(client.0)?
            .map(|value| time(&value))
            .transpose()
    }

    /// Starts the clock of every client in `clients` that has no record (registered before
    /// activity was recorded) at `now`, and forgets the records of clients not in it (deleted);
    /// answers how many it started.
    pub fn reconcile(&self, clients: &[ClientId], now: Timestamp) -> Result<usize> {
        let registered: std::collections::HashSet<[u8; 16]> =
            clients.iter().map(|client| client.0).collect();
        let mut recorded = std::collections::HashSet::new();
        let mut forget = sled::Batch::default();
        for key in self.tree.iter().keys() {
            let key = key?;
            match <[u8; 16]>::try_from(key.as_ref()) {
                Ok(client) if registered.contains(&client) => {
                    recorded.insert(client);
                }
                _ => forget.remove(key),
            }
        }
        self.tree.apply_batch(forget)?;
        let mut started = 0;
        for client in clients.iter().filter(|c| !recorded.contains(&c.0)) {
            self.record(client, now)?;
            started += 1;
        }
        Ok(started)
    }

    /// Clients last recorded before `before`.
    pub fn seen_before(&self, before: Timestamp) -> Result<Vec<ClientId>> {
        let mut idle = Vec::new();
        for entry in self.tree.iter() {
            let (key, value) = entry?;
            let client = <[u8; 16]>::try_from(key.as_ref()).map_err(|_| corrupt())?;
            if time(&value)? < before {
                idle.push(ClientId(client));
            }
        }
        Ok(idle)
    }

    pub fn forget(&self, client: &ClientId) -> Result<()> {
        self.tree.remove(client.0)?;
        Ok(())
    }
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
}
