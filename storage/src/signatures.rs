//! Request signatures already accepted, kept so that the replay guard (held in memory) still
//! knows them after a restart. One tree, `auth_seen`, keyed by when a signature was made (ms,
//! big-endian) ‖ the signature, so old ones are swept by a range. A record is written along
//! with whatever the request writes, so it is durable whenever the request's own effect is.

use crate::Result;

#[derive(Clone)]
pub struct SeenSignatures {
    tree: crate::gate::Tree,
}

fn key(signed_ms: u64, signature: &[u8; 64]) -> [u8; 72] {
    let mut key = [0u8; 72];
    key[..8].copy_from_slice(&signed_ms.to_be_bytes());
    key[8..].copy_from_slice(signature);
    key
}

impl SeenSignatures {
    pub(crate) fn open(db: &crate::gate::Db) -> Result<Self> {
        Ok(SeenSignatures {
            tree: db.open_tree("auth_seen")?,
        })
    }

    pub(crate) fn check(&self, report: &mut crate::CheckReport) {
        report.readable("auth_seen", &self.tree.sled());
    }

    pub fn record(&self, signature: &[u8; 64], signed_ms: u64) -> Result<()> {
        self.tree.insert(key(signed_ms, signature), &[])?;
        Ok(())
    }

    pub fn contains(&self, signature: &[u8; 64], signed_ms: u64) -> Result<bool> {
        Ok(self.tree.contains_key(key(signed_ms, signature))?)
    }

    /// Forgets signatures made before `before_ms`; returns how many.
    pub fn sweep(&self, before_ms: u64) -> Result<usize> {
        let mut batch = sled::Batch::default();
        let mut swept = 0;
        for old in self.tree.range(..key(before_ms, &[0; 64])).keys() {
            batch.remove(old?);
            swept += 1;
        }
        self.tree.apply_batch(batch)?;
        Ok(swept)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn signatures_are_known_by_when_they_were_made_and_swept_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path()).unwrap();
        let seen = store.seen_signatures().unwrap();
        seen.record(&[1; 64], 1000).unwrap();
        seen.record(&[2; 64], 5000).unwrap();
        assert!(seen.contains(&[1; 64], 1000).unwrap());
        assert!(!seen.contains(&[1; 64], 1001).unwrap());
        assert_eq!(seen.sweep(5000).unwrap(), 1);
        assert!(!seen.contains(&[1; 64], 1000).unwrap());
        assert!(seen.contains(&[2; 64], 5000).unwrap());
    }
}
