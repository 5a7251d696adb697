//! Records of MLS KeyPackage references that may be used only once, kept until the package's
//! lifetime ends (after that no member accepts the package anyway, so the record can go).
//!
//! The QS keeps one per published KeyPackage (`qs_published_key_packages`, tagged with the
//! entry that published it), so one KeyPackage is published in one entry only and a used-up
//! one-time package is never stored again. The DS keeps one per one-time KeyPackage a commit
//! added (`ds_added_key_packages`), so a claimed package adds its owner to one group only.
//! Neither names a user, client or group: a reference is a hash of a public KeyPackage.

use serde::{Deserialize, Serialize};

use roost_protocol::Timestamp;

use crate::{
    table::{encode, Table},
    Result,
};

/// What a reference was used for, and until when the record is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsedReference {
    /// Names the use: the publishing entry's hash at the QS; zero at the DS.
    pub tag: [u8; 32],
    pub not_after: Timestamp,
}

/// A tree of used KeyPackage references.
#[derive(Clone)]
pub struct UsedReferences {
    table: Table<UsedReference>,
}

impl UsedReferences {
    pub(crate) fn open(db: &crate::gate::Db, name: &str) -> Result<Self> {
        Ok(UsedReferences {
            table: Table::open(db, name)?,
        })
    }

    pub(crate) fn check(&self, name: &str, report: &mut crate::CheckReport) {
        self.table.check(name, |_| true, report);
    }

    pub fn get(&self, reference: &[u8]) -> Result<Option<UsedReference>> {
        self.table.get(reference)
    }

    pub(crate) fn tree(&self) -> &crate::gate::Tree {
        &self.table.tree
    }

    /// The writes that record `uses`, for a caller that applies them with its own.
    pub(crate) fn batch(uses: &[(Vec<u8>, UsedReference)]) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (reference, used) in uses {
            batch.insert(reference.as_slice(), encode(used));
        }
        batch
    }

    /// Deletes the records whose package has expired; answers how many.
    pub fn sweep(&self, now: Timestamp) -> Result<usize> {
        self.table.sweep(|used| used.not_after <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_records_are_swept_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::gate::Db::new(
            crate::gate::Current::new(sled::open(dir.path()).unwrap(), dir.path()).unwrap(),
        );
        let used = UsedReferences::open(&db, "used").unwrap();
        let now = Timestamp(1000);
        let record = |not_after| UsedReference {
            tag: [7; 32],
            not_after: Timestamp(not_after),
        };
        let batch = UsedReferences::batch(&[
            (b"old".to_vec(), record(1000)),
            (b"live".to_vec(), record(1001)),
        ]);
        used.tree().apply_batch(batch).unwrap();
        assert_eq!(used.sweep(now).unwrap(), 1);
        assert_eq!(used.get(b"old").unwrap(), None);
        assert_eq!(used.get(b"live").unwrap(), Some(record(1001)));
    }
}
