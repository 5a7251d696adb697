//! What keeps a group healthy over time, per group (`leaf_renewals`: group id → [`Upkeep`]):
//! when this client last renewed its own leaf, and how many of its renewals each other member's
//! leaf has stayed the same for — a member that never commits again (its clients are gone) is
//! then removed, measured in this client's own renewals, so a client that was itself away
//! counts none of that time against the others.

use std::collections::BTreeMap;

use roost_protocol::Timestamp;
use serde::{Deserialize, Serialize};

use super::{State, StateError};

const TREE: &str = "leaf_renewals";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upkeep {
    /// When this client last renewed its own leaf; `None` until its first renewal is due.
    pub renewed_at: Option<Timestamp>,
    /// Renew at the next sync, out of schedule: another member was removed (RFC 9750 advises
    /// the members who stay to update their leaves). Such a renewal counts no one as idle.
    pub due_now: bool,
    /// Each other leaf, by its MLS signature key: the encryption key it had at this client's
    /// last renewal, and for how many renewals in a row it had not changed.
    pub unchanged: BTreeMap<Vec<u8>, (Vec<u8>, u32)>,
}

impl Upkeep {
    /// Notes a renewal of this client's own leaf at `at`, with the other leaves as they are
    /// now (signature key, encryption key); answers the signature keys of the leaves that have
    /// stayed the same for `idle_after` renewals.
    pub fn renewed(
        &mut self,
        at: Timestamp,
        leaves: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
        idle_after: u32,
    ) -> Vec<Vec<u8>> {
        self.renewed_at = Some(at);
        let mut unchanged = BTreeMap::new();
        let mut idle = Vec::new();
        for (signature_key, encryption_key) in leaves {
            let count = match self.unchanged.get(&signature_key) {
                Some((seen, count)) if *seen == encryption_key => count + 1,
                _ => 0,
            };
            if count >= idle_after {
                idle.push(signature_key.clone());
            }
            unchanged.insert(signature_key, (encryption_key, count));
        }
        self.unchanged = unchanged;
        idle
    }
}

impl State {
    pub fn upkeep(&self, group_id: &[u8]) -> Result<Upkeep, StateError> {
        Ok(self
            .tree_get(&self.leaf_renewals, TREE, group_id)?
            .unwrap_or_default())
    }

    pub fn save_upkeep(&self, group_id: &[u8], upkeep: &Upkeep) -> Result<(), StateError> {
        self.tree_put(&self.leaf_renewals, group_id, upkeep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaf_is_idle_after_staying_the_same_for_that_many_renewals_and_a_change_resets_it() {
        let mut upkeep = Upkeep::default();
        let bob = |key: &[u8]| vec![(b"bob".to_vec(), key.to_vec())];
        let mut renew = |at, key: &[u8]| upkeep.renewed(Timestamp(at), bob(key), 2);
        assert!(renew(1, b"b1").is_empty());
        assert!(renew(2, b"b1").is_empty());
        // bob committed (his leaf has a new encryption key): his count starts again.
        assert!(renew(3, b"b2").is_empty());
        assert!(renew(4, b"b2").is_empty());
        assert_eq!(renew(5, b"b2"), [b"bob".to_vec()]);
    }
}
