//! DS group records, both ciphertext the DS encrypts under the group-state EAR key that members
//! send with each request and the server never stores, so this crate sees no plaintext:
//!
//! - `ds_groups`: group id → the group's state (its public MLS state, members, GroupInfo);
//! - `ds_group_ledgers`: group id → the group's ledger (its next sequence number, the
//!   operations it remembers with their outcomes, and a fan-out not yet known to be delivered).
//!
//! - `ds_group_activity`: group id → when it last took a request (coarse, [`crate::LastSeen`]);
//! - `ds_expired_groups`: group id → when it was deleted for being idle, so that a request
//!   for it is told so rather than that there is no such group (kept for as long again; a
//!   [`crate::LastSeen`] table too).
//!
//! A request's effect on both is one transaction, so a remembered outcome never exists without
//! its effect, nor the effect without it. The same transaction records the one-time KeyPackages
//! a commit added (`ds_added_key_packages`, [`crate::references`]), refusing one added before.

use sled::transaction::{ConflictableTransactionError, Transactional};

use roost_protocol::Timestamp;

use crate::{
    activity::LastSeen,
    references::{UsedReference, UsedReferences},
    table::flatten,
    Result, StorageError,
};

fn no_such_group() -> StorageError {
    StorageError::Corrupt("updating a group that does not exist".into())
}

#[derive(Clone)]
pub struct GroupStore {
    tree: crate::gate::Tree,
    ledgers: crate::gate::Tree,
    added_key_packages: UsedReferences,
    activity: LastSeen,
    expired: LastSeen,
}

/// What an update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    Done,
    /// Nothing was written: a one-time KeyPackage it would add was added before.
    KeyPackageUsed,
}

impl GroupStore {
    pub(crate) fn open(db: &crate::gate::Db) -> Result<Self> {
        Ok(GroupStore {
            tree: db.open_tree("ds_groups")?,
            ledgers: db.open_tree("ds_group_ledgers")?,
            added_key_packages: UsedReferences::open(db, "ds_added_key_packages")?,
            activity: crate::activity::group_activity(db)?,
            expired: LastSeen::open(db, "ds_expired_groups")?,
        })
    }

    /// Group states and ledgers are ciphertext the DS alone can open: only whether they can be
    /// read.
    pub(crate) fn check(&self, report: &mut crate::CheckReport) {
        report.readable("ds_groups", &self.tree.sled());
        report.readable("ds_group_ledgers", &self.ledgers.sled());
        self.added_key_packages
            .check("ds_added_key_packages", report);
        self.activity.check(report);
        self.expired.check(report);
    }

    /// When each group last took a request.
    pub fn activity(&self) -> &LastSeen {
        &self.activity
    }

    /// The ids of every group held.
    pub fn ids(&self) -> Result<Vec<Vec<u8>>> {
        self.tree
            .iter()
            .keys()
            .map(|key| Ok(key?.to_vec()))
            .collect()
    }

    /// Deletes an idle group's state and ledger, remembering when (`at`).
    pub fn expire(&self, group_id: &[u8], at: Timestamp) -> Result<()> {
        let trees = (
            &self.tree.sled(),
            &self.ledgers.sled(),
            &self.expired.tree().sled(),
        );
        let outcome = self.tree.gate().passing(|| {
            trees.transaction(|(states, ledgers, expired)| {
                states.remove(group_id)?;
                ledgers.remove(group_id)?;
                expired.insert(group_id, &LastSeen::value(at))?;
                Ok(())
            })
        });
        flatten(outcome)?;
        self.activity.forget(group_id)
    }

    /// When `group_id` was deleted for being idle, if it was (and that is still remembered).
    pub fn expired_at(&self, group_id: &[u8]) -> Result<Option<Timestamp>> {
        self.expired.last_seen(group_id)
    }

    /// Forgets the groups expired before `before`; answers how many.
    pub fn sweep_expired(&self, before: Timestamp) -> Result<usize> {
        self.expired.forget_seen_before(before)
    }

    /// Deletes the records of added one-time KeyPackages past their end; answers how many.
    pub fn sweep_added_key_packages(&self, now: Timestamp) -> Result<usize> {
        self.added_key_packages.sweep(now)
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
        let outcome = self.tree.gate().passing(|| {
            (&self.tree.sled(), &self.ledgers.sled()).transaction(|(states, ledgers)| {
                if states.get(group_id)?.is_some() {
                    return Ok(false);
                }
                states.insert(group_id, state.as_slice())?;
                ledgers.insert(group_id, ledger.as_slice())?;
                Ok(true)
            })
        });
        flatten(outcome)
    }

    /// Writes a group's ledger and, if the request changed it, its state, in one transaction
    /// that also records `one_time` (references of one-time KeyPackages the request added) —
    /// unless one of them was added before, and then nothing is written.
    ///
    /// A request that changes only the ledger (an application message, a fan-out recorded as
    /// delivered) writes it alone: one insert is atomic by itself, while every sled transaction
    /// or batch hands two writes of the log to sled's IO threads (waking all of them), which on
    /// a group's hot path cost more CPU than the rest of the write.
    pub fn update(
        &self,
        group_id: &[u8],
        state: Option<Vec<u8>>,
        ledger: Vec<u8>,
        one_time: &[(Vec<u8>, UsedReference)],
    ) -> Result<Update> {
        if state.is_none() && one_time.is_empty() {
            if !self.tree.contains_key(group_id)? {
                return Err(no_such_group());
            }
            self.ledgers.insert(group_id, ledger)?;
            return Ok(Update::Done);
        }
        let trees = (
            &self.tree.sled(),
            &self.ledgers.sled(),
            &self.added_key_packages.tree().sled(),
        );
        let outcome = self.tree.gate().passing(|| {
            trees.transaction(|(states, ledgers, added)| {
                if states.get(group_id)?.is_none() {
                    return Err(ConflictableTransactionError::Abort(no_such_group()));
                }
                for (reference, _) in one_time {
                    if added.get(reference)?.is_some() {
                        return Ok(Update::KeyPackageUsed);
                    }
                }
                added.apply_batch(&UsedReferences::batch(one_time))?;
                if let Some(state) = &state {
                    states.insert(group_id, state.as_slice())?;
                }
                ledgers.insert(group_id, ledger.as_slice())?;
                Ok(Update::Done)
            })
        });
        flatten(outcome)
    }
}
