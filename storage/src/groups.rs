//! DS group records, both ciphertext the DS encrypts under the group-state EAR key that members
//! send with each request and the server never stores, so this crate sees no plaintext:
//!
//! - `ds_groups`: group id → the group's state (its public MLS state, members, GroupInfo);
//! - `ds_group_ledgers`: group id → the group's ledger (its next sequence number, the
//!   operations it remembers with their outcomes, and a fan-out not yet known to be delivered).
//!
//! A request's effect on both is one transaction, so a remembered outcome never exists without
//! its effect, nor the effect without it.

use sled::transaction::{ConflictableTransactionError, Transactional};

use crate::{table::flatten, Result, StorageError};

#[derive(Clone)]
pub struct GroupStore {
    tree: sled::Tree,
    ledgers: sled::Tree,
}

impl GroupStore {
    pub(crate) fn open(db: &sled::Db) -> Result<Self> {
        Ok(GroupStore {
            tree: db.open_tree("ds_groups")?,
            ledgers: db.open_tree("ds_group_ledgers")?,
        })
    }

    /// Group states and ledgers are ciphertext the DS alone can open: only whether they can be
    /// read.
    pub(crate) fn check(&self, report: &mut crate::CheckReport) {
        report.readable("ds_groups", &self.tree);
        report.readable("ds_group_ledgers", &self.ledgers);
    }

    /// How many groups the DS holds.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    pub fn get(&self, group_id: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree.get(group_id)?.map(|v| v.to_vec()))
    }

    /// A group's ledger; `None` for a group created before ledgers existed (or none at all).
    pub fn ledger(&self, group_id: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.ledgers.get(group_id)?.map(|v| v.to_vec()))
    }

    /// Stores a new group with its first ledger; false if the id is taken.
    pub fn create(&self, group_id: &[u8], state: Vec<u8>, ledger: Vec<u8>) -> Result<bool> {
        let outcome = (&self.tree, &self.ledgers).transaction(|(states, ledgers)| {
            if states.get(group_id)?.is_some() {
                return Ok(false);
            }
            states.insert(group_id, state.as_slice())?;
            ledgers.insert(group_id, ledger.as_slice())?;
            Ok(true)
        });
        flatten(outcome)
    }

    /// Writes a group's ledger and, if the request changed it, its state, in one transaction.
    pub fn update(&self, group_id: &[u8], state: Option<Vec<u8>>, ledger: Vec<u8>) -> Result<()> {
        let outcome = (&self.tree, &self.ledgers).transaction(|(states, ledgers)| {
            if states.get(group_id)?.is_none() {
                return Err(ConflictableTransactionError::Abort(StorageError::Corrupt(
                    "updating a group that does not exist".into(),
                )));
            }
            if let Some(state) = &state {
                states.insert(group_id, state.as_slice())?;
            }
            ledgers.insert(group_id, ledger.as_slice())?;
            Ok(())
        });
        flatten(outcome)
    }
}
