//! `roost admin backup`: a copy of the store taken while the server serves. The write gate is
//! closed for the copy (writes wait, reads go on), the store is flushed, and sled's files are
//! copied and synced: the copy is the store at one instant, as a crash at that instant would
//! have left it, and opens like one. A manifest names what it is.
//!
//! `roost admin restore` (server stopped) puts a backup in the store's place, keeping the store
//! it replaces beside it, and then makes the restored store safe for clients that went on
//! after the backup: every one-time connection package and key package is forgotten (one could
//! otherwise be handed out a second time; last-resort packages stand in until clients publish
//! new ones), and every queue numbers its next messages past anything it can have handed out
//! since (a client's position may be beyond what the backup held).

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::{format::FORMAT_VERSION, repair::beside, Result, StorageError, Store, StoreOptions};

/// The file that marks a directory as a Roost backup.
pub const MANIFEST: &str = "roost-backup.json";

/// Files of the store directory that belong to the running server, not to the store's records:
/// the durable mark is written again when the copy is opened, damage found is looked for again.
const NOT_COPIED: [&str; 3] = ["admin.sock", "durable", "log-damage"];

/// What a backup copied.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Backup {
    pub files: u64,
    pub bytes: u64,
    /// How long writes waited for the copy.
    pub writes_paused: Duration,
}

/// What [`MANIFEST`] says of a backup.
#[derive(Serialize, Deserialize)]
struct Manifest {
    what: String,
    format_version: u32,
    /// When it was taken (Unix time).
    taken_at: u64,
    files: u64,
    bytes: u64,
}

impl Store {
    /// Copies the store into `to`, which must not exist or be empty.
    pub fn backup(&self, to: &Path) -> Result<Backup> {
        let refuse = |why: String| StorageError::Backup(format!("{}: {why}", to.display()));
        if to.exists() {
            let mut entries = fs::read_dir(to).map_err(|e| refuse(e.to_string()))?;
            if entries.next().is_some() {
                return Err(refuse(
                    "is not empty: a backup goes into a new directory".into(),
                ));
            }
        }
        fs::create_dir_all(to).map_err(|e| refuse(format!("cannot create it: {e}")))?;
        let mut copied = Backup::default();
        {
            // No compaction meanwhile, nor removal of what one replaced.
            let _no_compaction = self.compacting.lock().unwrap_or_else(|p| p.into_inner());
            let unused: Vec<String> = crate::layout::unused(&self.path)
                .map_err(|e| refuse(e.to_string()))?
                .iter()
                .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
                .collect();
            let skip: Vec<&str> = NOT_COPIED
                .iter()
                .copied()
                .chain(unused.iter().map(String::as_str))
                .collect();
            let closed = Instant::now();
            let _closed = self.db.gate().close();
            self.db.sled().flush()?;
            if let Err(e) = copy_dir(&self.path, to, &skip, &mut copied) {
                // A partial copy is no backup: nothing of it is kept.
                let _ = fs::remove_dir_all(to);
                return Err(refuse(format!("{e} (the partial copy was removed)")));
            }
            copied.writes_paused = closed.elapsed();
        }
        let manifest = Manifest {
            what: "a Roost store".into(),
            format_version: FORMAT_VERSION,
            taken_at: roost_protocol::Timestamp::now().0,
            files: copied.files,
            bytes: copied.bytes,
        };
        let json = serde_json::to_vec(&manifest).expect("a manifest serialises");
        fs::write(to.join(MANIFEST), json)
            .and_then(|()| fs::File::open(to.join(MANIFEST))?.sync_all())
            .and_then(|()| fs::File::open(to)?.sync_all())
            .map_err(|e| refuse(e.to_string()))?;
        Ok(copied)
    }
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    /// When the backup was taken (Unix time).
    pub taken_at: u64,
    /// Where the store it replaced now is, if there was one.
    pub kept: Option<PathBuf>,
    pub one_time_connection_packages_forgotten: usize,
    pub one_time_key_packages_forgotten: usize,
    pub queues_renumbered: usize,
}

impl Store {
    /// Puts the backup in `backup` where the store at `path` is (which no server may have open)
    /// and makes it safe to serve again (see the module doc). If that fails, the store it was
    /// to replace is put back.
    pub fn restore(backup: &Path, path: &Path, options: StoreOptions) -> Result<Restored> {
        let refuse = |why: String| StorageError::Restore(format!("{}: {why}", backup.display()));
        let manifest = fs::read(backup.join(MANIFEST))
            .map_err(|_| refuse(format!("is not a Roost backup (it has no {MANIFEST})")))?;
        let manifest: Manifest = serde_json::from_slice(&manifest)
            .map_err(|e| refuse(format!("its {MANIFEST} is not one roost wrote: {e}")))?;
        let kept = match path.exists() {
            true => {
                let kept = beside(
                    path,
                    &format!("before-restore-{}", roost_protocol::Timestamp::now().0),
                );
                fs::rename(path, &kept).map_err(|e| {
                    refuse(format!(
                        "cannot move the store at {} aside: {e}",
                        path.display()
                    ))
                })?;
                Some(kept)
            }
            false => None,
        };
        let restored = put_in_place(backup, path, options).map(|safe| Restored {
            taken_at: manifest.taken_at,
            kept: kept.clone(),
            one_time_connection_packages_forgotten: safe.connection_packages,
            one_time_key_packages_forgotten: safe.key_packages,
            queues_renumbered: safe.queues,
        });
        if restored.is_err() {
            // Nothing half restored is left in the store's place.
            let _ = fs::remove_dir_all(path);
            if let Some(kept) = &kept {
                let _ = fs::rename(kept, path);
            }
        }
        restored
    }
}

/// What making a restored store safe to serve forgot and renumbered.
struct MadeSafe {
    connection_packages: usize,
    key_packages: usize,
    queues: usize,
}

/// Copies the backup's files to `path` and makes the store they make safe to serve again.
fn put_in_place(backup: &Path, path: &Path, options: StoreOptions) -> Result<MadeSafe> {
    let refuse = |why: String| StorageError::Restore(format!("{}: {why}", backup.display()));
    fs::create_dir_all(path).map_err(|e| refuse(e.to_string()))?;
    copy_dir(backup, path, &[MANIFEST], &mut Backup::default())
        .map_err(|e| refuse(e.to_string()))?;
    let store = Store::open_with(path, options)?;
    // A queue that held nothing at the backup has no record to find it by: every client's
    // queues are renumbered.
    let clients = store.accounts()?.client_ids()?;
    let safe = MadeSafe {
        connection_packages: store.connection_packages()?.forget_one_time()?,
        key_packages: store.key_packages()?.forget_one_time()?,
        queues: store.queues()?.raise_floors(clients.iter().copied())?
            + store.connection_queues()?.raise_floors(clients)?,
    };
    store.persist_blocking()?;
    store.close()?;
    Ok(safe)
}

fn copy_dir(from: &Path, to: &Path, skip: &[&str], copied: &mut Backup) -> std::io::Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if skip.iter().any(|skip| name == *skip) {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type()?.is_dir() {
            fs::create_dir_all(&target)?;
            // `skip` names entries of the store directory itself, not of sled's.
            copy_dir(&entry.path(), &target, &[], copied)?;
        } else {
            copied.bytes += fs::copy(entry.path(), &target)?;
            copied.files += 1;
            fs::File::open(&target)?.sync_all()?;
        }
    }
    fs::File::open(to)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    };

    use super::*;

    /// Two trees written together by one writer, in a transaction-free order that a torn copy
    /// would show: a record in `first`, then its twin in `second`.
    #[test]
    fn a_backup_under_writes_is_the_store_at_one_instant() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let (first, second) = (
            store.db.open_tree("first").unwrap(),
            store.db.open_tree("second").unwrap(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let writer = {
            let (stop, written) = (stop.clone(), written.clone());
            std::thread::spawn(move || {
                let mut n: u64 = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    first.insert(n.to_be_bytes(), vec![1; 200]).unwrap();
                    second.insert(n.to_be_bytes(), vec![2; 200]).unwrap();
                    written.store(n, Ordering::SeqCst);
                }
            })
        };
        while written.load(Ordering::SeqCst) < 2000 {
            std::thread::yield_now();
        }
        let before = written.load(Ordering::SeqCst);
        let copy = dir.path().join("backup");
        let backup = store.backup(&copy).unwrap();
        stop.store(true, Ordering::SeqCst);
        writer.join().unwrap();
        assert!(backup.files >= 2 && backup.bytes > 0, "{backup:?}");
        assert!(copy.join(MANIFEST).is_file());
        store.close().unwrap();

        let restored = Store::open(&copy).unwrap();
        let first = restored.db.open_tree("first").unwrap();
        let second = restored.db.open_tree("second").unwrap();
        // Everything written before the backup began is in it, and no write is half in it:
        // the second tree lags the first by at most the one write that was between them.
        assert!(second.len() as u64 >= before, "{} < {before}", second.len());
        assert!(first.len() - second.len() <= 1);
        assert!(restored.check().unwrap().is_sound());
    }

    #[test]
    fn a_backup_refuses_a_directory_that_holds_anything() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let full = dir.path().join("full");
        fs::create_dir_all(&full).unwrap();
        fs::write(full.join("precious"), "keep me").unwrap();
        let err = store.backup(&full).unwrap_err().to_string();
        assert!(err.contains("not empty"), "{err}");
        assert_eq!(
            fs::read_to_string(full.join("precious")).unwrap(),
            "keep me"
        );
    }
}
