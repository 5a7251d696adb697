//! DS group records: `group id` → the group's state, encrypted by the DS under the group-state
//! EAR key that members send with each request and the server never stores. This crate sees
//! only ciphertext.

use crate::{Result, StorageError};

#[derive(Clone)]
pub struct GroupStore {
    tree: sled::Tree,
}

impl GroupStore {
    pub(crate) fn open(db: &sled::Db) -> Result<Self> {
        Ok(GroupStore {
            tree: db.open_tree("ds_groups")?,
        })
    }

    /// Group states are ciphertext the DS alone can open: only whether they can be read.
    pub(crate) fn check(&self, report: &mut crate::CheckReport) {
        report.readable("ds_groups", &self.tree);
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

    /// Stores a new group; false if the id is taken.
    pub fn create(&self, group_id: &[u8], encrypted_state: Vec<u8>) -> Result<bool> {
        Ok(self
            .tree
            .compare_and_swap(group_id, None as Option<&[u8]>, Some(encrypted_state))?
            .is_ok())
    }

    pub fn put(&self, group_id: &[u8], encrypted_state: Vec<u8>) -> Result<()> {
        if self.tree.get(group_id)?.is_none() {
            return Err(StorageError::Corrupt(
                "updating a group that does not exist".into(),
            ));
        }
        self.tree.insert(group_id, encrypted_state)?;
        Ok(())
    }
}
