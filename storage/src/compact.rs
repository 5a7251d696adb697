//! Compaction: sled never gives back the space of deleted records (measured in BENCHMARKS.md:
//! 100 MB written and deleted leave 180 MB on disk), so after retention drops messages and
//! clients the store would stay as large as it ever was. A compaction copies every record into
//! a fresh database — a new generation of the store directory ([`crate::layout`]) — with the
//! write gate closed (writes wait, reads go on, as for a backup), makes it current, puts it in
//! the place of the old one under every tree handle ([`crate::gate::Db::replace`]), and removes
//! the old one.
//!
//! A crash at any moment leaves the old database in use (until `CURRENT` names the new one,
//! which is complete and synced by then) or the new one; what is left of the other is removed
//! at the next open.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{
    gate::Current,
    layout,
    repair::{copy_trees, fresh_database, sync_fresh_database},
    Result, StorageError, Store,
};

/// What a compaction did.
#[derive(Debug, Clone, Serialize)]
pub struct Compacted {
    /// sled's files before and after, in bytes.
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records: u64,
    /// How long writes waited for the copy.
    pub writes_paused: Duration,
}

/// How much of the store's files its records take: [`Store::waste`].
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Waste {
    /// sled's files, in bytes.
    pub on_disk: u64,
    /// The keys and values of every record, in bytes.
    pub records: u64,
}

impl Waste {
    /// Whether a compaction would give back at least `min_bytes`, and at least as much as
    /// the records take (sled's files are larger than the records even right after a
    /// compaction; a store of live records only is left alone).
    pub fn worth_compacting(&self, min_bytes: u64) -> bool {
        let wasted = self.on_disk.saturating_sub(self.records);
        wasted >= min_bytes && wasted >= self.records
    }
}

/// How long an old database is kept after it was replaced, for reads under way on it (sled
/// reads large values from files of their own, by name).
const KEEP_REPLACED: Duration = Duration::from_secs(10);

impl Store {
    /// How the store's files compare with its records (reads every record; off the serving
    /// threads).
    pub fn waste(&self) -> Result<Waste> {
        let db = self.db.sled();
        let mut records = 0;
        for name in db.tree_names() {
            for entry in db.open_tree(&name)?.iter() {
                let (key, value) = entry?;
                records += (key.len() + value.len()) as u64;
            }
        }
        Ok(Waste {
            on_disk: db.size_on_disk()?,
            records,
        })
    }

    /// Rewrites the store into a fresh database holding only its records, while it serves
    /// (see the module doc). One at a time; fails, leaving the store as it was, if the copy
    /// cannot be made (a full disk, an unreadable record).
    pub fn compact(&self) -> Result<Compacted> {
        let _one_at_a_time = self.compacting.lock().unwrap_or_else(|p| p.into_inner());
        let fail = |why: String| StorageError::Compact(why);
        let (generation, dir) =
            layout::next_generation(&self.path).map_err(|e| fail(e.to_string()))?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| fail(format!("removing a leftover: {e}")))?;
        }
        let bytes_before = self.db.sled().size_on_disk()?;
        let closed = self.db.gate().close();
        let started = Instant::now();
        let copied = self.copy_into(&dir, &generation);
        let replaced = match copied {
            Ok(fresh) => self.db.replace(&closed, fresh.0).map(|old| (old, fresh.1)),
            Err(e) => {
                drop(closed);
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        drop(closed);
        let writes_paused = started.elapsed();
        // CURRENT names the new database: from here on the old one is unused, whatever fails.
        let (old, records) = replaced.map_err(|e| {
            fail(format!(
                "{e}; the store was compacted on disk and opens compacted at the next start"
            ))
        })?;
        drop(old);
        if let Err(e) = crate::log_scan::forget_recorded(&self.path) {
            tracing::warn!(error = %e, "forgetting damage recorded in the replaced data file failed");
        }
        remove_replaced_later(self.path.clone(), self.compacting.clone());
        Ok(Compacted {
            bytes_before,
            bytes_after: self.db.sled().size_on_disk()?,
            records,
            writes_paused,
        })
    }

    /// Copies every record into a fresh database in `dir` and makes it current on disk (the
    /// gate is closed). Answers it, opened, and how many records it holds.
    fn copy_into(&self, dir: &Path, generation: &str) -> Result<(Current, u64)> {
        let fail = |why: String| StorageError::Compact(why);
        let old = self.db.sled();
        old.flush()?;
        let fresh = fresh_database(dir, self.options)?;
        let (records, unreadable) = copy_trees(&old, &fresh)?;
        if unreadable > 0 {
            return Err(fail(format!(
                "{unreadable} records are unreadable; `roost admin check` tells more"
            )));
        }
        sync_fresh_database(&fresh, dir)?;
        let current = Current::new(fresh, dir).map_err(|e| fail(e.to_string()))?;
        if let Err(e) = layout::set_current(&self.path, generation) {
            // Renamed into place but not synced, it may or may not have taken effect: only a
            // generation that is not current may be given up.
            if layout::sled_dir(&self.path).ok().as_deref() != Some(dir) {
                return Err(fail(e.to_string()));
            }
            tracing::warn!(error = %e, "the compacted database is current, but syncing that failed");
        }
        Ok((current, records))
    }
}

/// Removes the replaced database once reads under way on it are done (holding `compacting`,
/// so as not to take a generation being written for unused); the next open removes it if
/// this does not.
fn remove_replaced_later(path: PathBuf, compacting: Arc<Mutex<()>>) {
    let removing = std::thread::Builder::new()
        .name("roost-compaction".into())
        .spawn(move || {
            std::thread::sleep(KEEP_REPLACED);
            let _no_compaction = compacting.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = layout::remove_unused(&path) {
                tracing::warn!(error = %e, "removing the database a compaction replaced failed");
            }
        });
    if let Err(e) = removing {
        tracing::warn!(error = %e, "cannot start removing the replaced database");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use roost_protocol::{
        queue::{QueueMessage, Sealing},
        ClientId,
    };

    use super::*;
    use crate::EncodedMessage;

    fn message(seq: u64, bytes: usize) -> EncodedMessage {
        EncodedMessage::new(&QueueMessage {
            seq,
            sealing: Sealing::Chain {
                start: None,
                ciphertext: vec![seq as u8; bytes],
            },
        })
    }

    /// Opens the store at `path` once the last handle of the one before let go of its lock.
    fn reopen(path: &Path) -> Store {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Store::open(path) {
                Ok(store) => return store,
                Err(e) if Instant::now() > deadline => panic!("cannot reopen: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    #[test]
    fn a_compaction_gives_back_the_space_of_deleted_records_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Handles taken before the compaction, as the actors hold them.
        let queues = store.queues().unwrap();
        let (gone, kept) = (ClientId([1; 16]), ClientId([2; 16]));
        for seq in 1..=400 {
            queues.append(&gone, message(seq, 40_000), None).unwrap();
        }
        for seq in 1..=20 {
            queues.append(&kept, message(seq, 1000), None).unwrap();
        }
        queues.ack(&gone, 400).unwrap();
        store.durability().persist_blocking().unwrap();
        let waste = store.waste().unwrap();
        assert!(waste.worth_compacting(1 << 20), "{waste:?}");

        let compacted = store.compact().unwrap();
        assert!(
            compacted.bytes_after * 4 < compacted.bytes_before,
            "{compacted:?}"
        );
        assert!(!store.waste().unwrap().worth_compacting(1 << 20));
        // The old handles read and write the new database.
        assert_eq!(queues.usage(&kept).unwrap().messages, 20);
        assert_eq!(queues.next_seq(&gone).unwrap(), 401);
        queues.append(&kept, message(21, 1000), None).unwrap();
        store.durability().persist_blocking().unwrap();
        store.close().unwrap();
        drop(queues);

        let store = reopen(dir.path());
        let queues = store.queues().unwrap();
        assert_eq!(queues.usage(&kept).unwrap().messages, 21);
        assert_eq!(queues.next_seq(&gone).unwrap(), 401);
        assert!(store.check().unwrap().is_sound());
        // What the compaction replaced is gone: sled's files from before it, at the latest
        // when the store is opened again.
        let entries: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!entries.contains(&"db".to_owned()), "{entries:?}");
        assert!(entries.contains(&"sled.1".to_owned()), "{entries:?}");

        // A compacted store backs up and restores like any other.
        let backup = tempfile::tempdir().unwrap();
        store.backup(&backup.path().join("copy")).unwrap();
        let restored = tempfile::tempdir().unwrap();
        let path = restored.path().join("store");
        Store::restore(&backup.path().join("copy"), &path, Default::default()).unwrap();
        let restored = reopen(&path);
        let queues = restored.queues().unwrap();
        assert_eq!(queues.usage(&kept).unwrap().messages, 21);
    }

    /// Writes go on through a compaction (they wait for it), and every one acknowledged as
    /// durable is in the store after it and after a reopen.
    #[test]
    fn writes_during_a_compaction_wait_for_it_and_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let queues = store.queues().unwrap();
        let client = ClientId([3; 16]);
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let durable = std::sync::Arc::new(AtomicU64::new(0));
        let writer = {
            let (store, queues, stop, durable) =
                (store.clone(), queues.clone(), stop.clone(), durable.clone());
            std::thread::spawn(move || {
                let mut seq = 0;
                while !stop.load(Ordering::SeqCst) {
                    seq += 1;
                    queues.append(&client, message(seq, 3000), None).unwrap();
                    if seq % 10 == 0 {
                        store.durability().persist_blocking().unwrap();
                        durable.store(seq, Ordering::SeqCst);
                    }
                }
            })
        };
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(100));
            store.compact().unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        writer.join().unwrap();
        let acknowledged = durable.load(Ordering::SeqCst);
        assert!(acknowledged > 0);
        store.close().unwrap();
        drop(queues);

        let store = reopen(dir.path());
        let queues = store.queues().unwrap();
        let (messages, _) = queues.range(&client, 1, usize::MAX, usize::MAX).unwrap();
        let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
        assert!(
            seqs.len() as u64 >= acknowledged,
            "{} < {acknowledged}",
            seqs.len()
        );
        assert!(seqs.iter().enumerate().all(|(i, s)| *s == i as u64 + 1));
    }

    #[test]
    fn a_compaction_cut_off_before_it_took_effect_leaves_the_store_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let client = ClientId([4; 16]);
        {
            let store = Store::open(dir.path()).unwrap();
            let queues = store.queues().unwrap();
            queues.append(&client, message(1, 100), None).unwrap();
            store.close().unwrap();
        }
        // A generation being written when the process died: CURRENT does not name it.
        std::fs::create_dir(dir.path().join("sled.1")).unwrap();
        std::fs::write(dir.path().join("sled.1").join("db"), b"half a copy").unwrap();
        let store = reopen(dir.path());
        assert_eq!(store.queues().unwrap().usage(&client).unwrap().messages, 1);
        assert!(!dir.path().join("sled.1").exists());
        store.close().unwrap();

        // CURRENT naming a database that is not there is refused, not opened empty.
        std::fs::write(dir.path().join("CURRENT"), "sled.7\n").unwrap();
        let refused = Store::open(dir.path()).err().expect("refused").to_string();
        assert!(refused.contains("sled.7"), "{refused}");
        std::fs::remove_file(dir.path().join("CURRENT")).unwrap();
        let store = reopen(dir.path());
        assert_eq!(store.queues().unwrap().usage(&client).unwrap().messages, 1);
    }
}
