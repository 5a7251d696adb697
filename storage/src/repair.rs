//! Repairing a store whose data file is damaged (`roost admin repair`): sled reads what it can,
//! and every record it reads is copied into a fresh data file, so no damaged byte is left to be
//! found (or to hurt) later. The damaged directory is kept beside the store, renamed.

use std::{
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use crate::{open_without_panic, Result, StorageError, StoreOptions};

/// Rewrites the store at `path` and returns where its damaged directory now is.
pub(crate) fn rewrite(path: &Path, options: StoreOptions) -> Result<PathBuf> {
    let io_error = |what: &str, e: std::io::Error| StorageError::Open {
        path: path.to_owned(),
        reason: format!("repair: {what}: {e}"),
    };
    let fresh = beside(path, "repairing");
    if fresh.exists() {
        // What an interrupted repair left; the damaged store is still where it was.
        std::fs::remove_dir_all(&fresh).map_err(|e| io_error("removing an earlier attempt", e))?;
    }
    let (copied, unreadable) = copy_records(path, &fresh, options)?;
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let kept = beside(path, &format!("damaged-{seconds}"));
    std::fs::rename(path, &kept).map_err(|e| io_error("moving the damaged store aside", e))?;
    std::fs::rename(&fresh, path).map_err(|e| io_error("moving the repaired store in", e))?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| io_error("syncing the directory", e))?;
    }
    tracing::warn!(
        copied,
        unreadable,
        kept = %kept.display(),
        "rewrote the damaged store into a fresh data file"
    );
    Ok(kept)
}

/// `<store>.<suffix>`, in the store's parent directory.
pub(crate) fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".{suffix}"));
    path.with_file_name(name)
}

/// Copies every readable record of every tree of the store at `from` into a fresh database at
/// `to`; returns how many were copied and unreadable.
fn copy_records(from: &Path, to: &Path, options: StoreOptions) -> Result<(u64, u64)> {
    let sled_dir = crate::layout::sled_dir(from).map_err(|e| StorageError::Open {
        path: from.to_owned(),
        reason: format!("repair: {e}"),
    })?;
    let old = open_without_panic(&sled_dir, options)??;
    let new = fresh_database(to, options)?;
    let counts = copy_trees(&old, &new)?;
    sync_fresh_database(&new, to)?;
    Ok(counts)
}

/// A new, empty sled database at `to`.
pub(crate) fn fresh_database(to: &Path, options: StoreOptions) -> Result<sled::Db> {
    Ok(sled::Config::new()
        .path(to)
        .cache_capacity(options.cache_bytes)
        .open()?)
}

/// Copies every readable record of every tree of `old` into `new`, a batch at a time; returns
/// how many were copied and unreadable.
pub(crate) fn copy_trees(old: &sled::Db, new: &sled::Db) -> Result<(u64, u64)> {
    let (mut copied, mut unreadable) = (0, 0);
    for name in old.tree_names() {
        let (source, target) = (old.open_tree(&name)?, new.open_tree(&name)?);
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for entry in source.iter() {
            match entry {
                Ok((key, value)) => {
                    batch.insert(key, value);
                    in_batch += 1;
                    copied += 1;
                }
                Err(_) => unreadable += 1,
            }
            if in_batch == 1000 {
                target.apply_batch(std::mem::take(&mut batch))?;
                in_batch = 0;
            }
        }
        target.apply_batch(batch)?;
    }
    Ok((copied, unreadable))
}

/// Flushes a database [`copy_trees`] filled, and syncs its data file and directory: it is on
/// disk whole before anything names it.
pub(crate) fn sync_fresh_database(db: &sled::Db, dir: &Path) -> Result<()> {
    db.flush()?;
    std::fs::File::open(dir.join("db"))
        .and_then(|file| file.sync_all())
        .and_then(|()| std::fs::File::open(dir)?.sync_all())
        .map_err(|e| StorageError::Open {
            path: dir.to_owned(),
            reason: format!("syncing a fresh data file: {e}"),
        })
}
