//! The durable mark: how many flushes of the store have completed, kept both inside the store
//! (`meta` tree) and beside it (the file `durable`). sled reads its log only up to the first
//! damaged record and silently drops the rest; a store read that way holds an older count than
//! the file, and is noticed at open instead of being served short.
//!
//! The count is written into the store before each flush, and to the file after the flush and
//! fsync succeeded (without an fsync of its own: a file that lags only says less, never raises a
//! false alarm). The file holds the count and its complement, so a torn write reads as no mark.

use std::{fs::File, os::unix::fs::FileExt, path::Path};

use crate::{Result, StorageError};

const FILE: &str = "durable";
const KEY: &[u8] = b"flushes";

/// What to do when the store holds fewer flushes than its mark says were made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnLostWrites {
    /// Refuse to open it (the server).
    #[default]
    Refuse,
    /// Open it, report the loss in [`crate::CheckReport`], leave the mark as it is.
    Report,
    /// Open it and take it as it is from now on (`roost admin repair`); a data file damaged
    /// in the middle is first rewritten into a fresh one (see `repair`).
    Accept,
}

/// Flushes the store says it holds and the mark says were made durable, when they disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LostWrites {
    pub made_durable: u64,
    pub found: u64,
}

/// The count inside the store.
pub(crate) fn in_store(meta: &sled::Tree) -> Result<u64> {
    crate::table::read_u64(meta, KEY, "the flush count", 0)
}

/// The count beside the store, if there is a readable one.
fn beside(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path.join(FILE)).ok()?;
    let count = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let check = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
    (check == !count).then_some(count)
}

/// Compares the two counts: the loss, if the store holds fewer flushes than were made durable.
pub(crate) fn compare(path: &Path, meta: &sled::Tree) -> Result<Option<LostWrites>> {
    let found = in_store(meta)?;
    Ok(beside(path)
        .filter(|&made_durable| made_durable > found)
        .map(|made_durable| LostWrites {
            made_durable,
            found,
        }))
}

/// The flusher's side: stages the next count before a flush, confirms it after.
pub(crate) struct Mark {
    meta: crate::gate::Tree,
    file: Option<File>,
    count: u64,
}

impl Mark {
    /// `writes_file`: false leaves the file as it is (for a store opened only to be checked).
    pub(crate) fn open(path: &Path, meta: crate::gate::Tree, writes_file: bool) -> Result<Mark> {
        let count = in_store(&meta.sled())?;
        let file = if writes_file {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(path.join(FILE))
                .map_err(|e| StorageError::Open {
                    path: path.to_owned(),
                    reason: format!("cannot open {FILE}: {e}"),
                })?;
            Some(file)
        } else {
            None
        };
        let mark = Mark { meta, file, count };
        // The store as opened is what is durable now.
        mark.confirm();
        Ok(mark)
    }

    /// Puts the next count into the store, to be flushed with everything else.
    pub(crate) fn stage(&mut self) -> Result<()> {
        self.count += 1;
        self.meta.insert(KEY, &self.count.to_be_bytes())?;
        Ok(())
    }

    /// Writes the count to the file once the flush that carried it succeeded.
    pub(crate) fn confirm(&self) {
        if let Some(file) = &self.file {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&self.count.to_be_bytes());
            bytes[8..].copy_from_slice(&(!self.count).to_be_bytes());
            if let Err(e) = file.write_all_at(&bytes, 0) {
                tracing::warn!(error = %e, "cannot update the durable mark beside the store");
            }
        }
    }
}
