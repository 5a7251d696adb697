//! Roost's embedded store: sled trees with typed records, a format-version check, and durable
//! group commits.
//!
//! Owns: the on-disk layout (tree names, key shapes, record types, the generation directories a
//! compaction writes) and what "durable" means.
//! Every value goes through [`roost_protocol::codec`]. Must not touch: HTTP, actors, or policy —
//! the actors decide *what* to store; this crate only knows *how*.
//!
//! Durability: a write is acknowledged only after [`Durability::persist`] returns, which runs
//! `sled::Db::flush` (data handed to the kernel: survives `kill -9`) followed by `fsync` of the
//! data file (survives power loss). Concurrent callers share one flush: a single flusher thread
//! drains every waiter that arrived, flushes once, and wakes them all.

mod accounts;
mod activity;
mod backup;
mod blocked;
mod check;
mod client_packages;
mod compact;
mod connection_packages;
mod durability;
mod format;
mod gate;
mod groups;
mod key_packages;
mod keys;
mod layout;
mod log_scan;
mod mark;
mod outbox;
mod profiles;
mod queue_ages;
mod queues;
mod references;
mod repair;
mod signatures;
mod table;
mod tokens;

use std::path::{Path, PathBuf};

pub use accounts::{
    AccountError, AccountStore, ClientRecord, Standing, TokenHash, TokenRecord, UserRecord,
};
pub use activity::{ClientActivity, LastSeen};
pub use backup::{Backup, Restored, MANIFEST};
pub use blocked::BlockedDomains;
pub use check::{CheckReport, TreeCheck};
pub use compact::{Compacted, Waste};
pub use connection_packages::{ConnectionPackageStore, Redeemed, ServedPackage};
pub use durability::Durability;
pub use format::FORMAT_VERSION;
pub use groups::{GroupStore, Update};
pub use key_packages::{KeyPackageStore, NotPublished, Publication, StoredKeyPackage};
pub use keys::{RetiredIntermediate, ServerKeys, ServerKeysStore};
pub use log_scan::LogDamage;
pub use mark::{LostWrites, OnLostWrites};
pub use outbox::{OutboxStore, Unreachable};
pub use profiles::{NotStored, ProfileStore, StoredProfile};
pub use queue_ages::{Expired, QueueAges};
pub use queues::{EncodedMessage, QueueStore, QueueSummary, QueueUsage, REMEMBER_DELIVERIES_SECS};
pub use references::{UsedReference, UsedReferences};
pub use signatures::SeenSignatures;
pub use tokens::{IssuerKeyRecord, Spend, TokenStore};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open the store at {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error(
        "the store at {path} was written with format version {found}, this roost reads version \
         {FORMAT_VERSION}; refusing to open it"
    )]
    IncompatibleFormat { path: PathBuf, found: String },
    #[error("store error: {0}")]
    Sled(#[from] sled::Error),
    #[error("a stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("the store's flusher has stopped")]
    FlusherGone,
    #[error("the disk holding the store is full")]
    Full,
    #[error("cannot back up into {0}")]
    Backup(String),
    #[error("cannot restore from {0}")]
    Restore(String),
    #[error("cannot compact the store: {0}")]
    Compact(String),
    #[error("the store cannot write: {0}")]
    Unwritable(String),
    #[error(
        "the store at {path} holds {} flushes of the {} it made durable: its data file {}/db is \
         damaged and sled could read it only up to the damage, so recent writes are missing. \
         Restore the store from a backup, or accept the loss with `roost admin repair` \
         (README: \"A damaged store\")",
        lost.found, lost.made_durable, path.display()
    )]
    LostWrites { path: PathBuf, lost: LostWrites },
    #[error(
        "the store at {path} has a damaged data file: {}/db is unreadable at byte {}{}, and sled \
         silently skips what follows such a place, so records written there are missing. Restore \
         the store from a backup, or accept the loss with `roost admin repair` (README: \"A \
         damaged store\")",
        path.display(), damage[0].offset,
        if damage.len() > 1 { format!(" and {} more places", damage.len() - 1) } else { String::new() }
    )]
    DamagedLog {
        path: PathBuf,
        damage: Vec<LogDamage>,
    },
}

impl StorageError {
    /// Whether the store refused for lack of disk space: worth retrying once space is freed.
    pub fn is_full(&self) -> bool {
        match self {
            StorageError::Full => true,
            StorageError::Sled(sled::Error::Io(io)) => io.kind() == std::io::ErrorKind::StorageFull,
            _ => false,
        }
    }
}

/// Free space on the store's disk, held against a reserve: what writes already under way (and
/// sled's own upkeep) may still need. Requests that would add data are refused while the free
/// space is below it, so the store itself never meets a full disk.
#[derive(Debug, Clone)]
pub struct Space {
    path: PathBuf,
    reserve: u64,
    /// When there last was room: asked on every request that adds data, the filesystem is
    /// asked at most every [`Space::RECHECK`] while there is (the reserve covers what is
    /// written meanwhile), and every time while there is not, so freed space is seen at once.
    room_at: std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    /// Set whenever a check finds no room; see [`Space::was_short`].
    was_short: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Space {
    const RECHECK: std::time::Duration = std::time::Duration::from_millis(100);

    pub fn free_bytes(&self) -> std::io::Result<u64> {
        fs2::available_space(&self.path)
    }

    pub fn reserve_bytes(&self) -> u64 {
        self.reserve
    }

    /// Whether there is room for more data beyond the reserve.
    pub fn check(&self) -> Result<()> {
        let mut room_at = self.room_at.lock().unwrap_or_else(|p| p.into_inner());
        if room_at.is_some_and(|at| at.elapsed() < Self::RECHECK) {
            return Ok(());
        }
        // Not knowing is no reason to refuse: the store reports a real failure itself.
        if self.free_bytes().map_or(true, |free| free >= self.reserve) {
            *room_at = Some(std::time::Instant::now());
            Ok(())
        } else {
            *room_at = None;
            self.was_short
                .store(true, std::sync::atomic::Ordering::SeqCst);
            Err(StorageError::Full)
        }
    }

    /// Whether a check found no room since the last call. sled's own IO threads may meet the
    /// full disk before any flush of the store's does, and then sled fails every later write
    /// without the flusher having seen a failure: whoever watches the store asks this too.
    pub fn was_short(&self) -> bool {
        self.was_short
            .swap(false, std::sync::atomic::Ordering::SeqCst)
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// The opened store. Cheap to clone; every clone shares the same database and flusher.
#[derive(Clone)]
pub struct Store {
    db: gate::Db,
    durability: Durability,
    /// Found at open with [`OnLostWrites::Report`].
    lost_writes: Option<LostWrites>,
    /// Found at open with [`OnLostWrites::Report`].
    log_damage: Vec<LogDamage>,
    /// Where [`OnLostWrites::Accept`] moved a damaged store it rewrote.
    kept_damaged: Option<PathBuf>,
    space: Space,
    path: PathBuf,
    options: StoreOptions,
    /// Held by a compaction: one at a time.
    compacting: std::sync::Arc<std::sync::Mutex<()>>,
}

/// How a store is opened.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// The most memory sled's page cache may take. Records beyond it are read from disk (and
    /// the kernel's page cache); without a cap sled keeps up to 1 GiB.
    pub cache_bytes: u64,
    /// Free disk space below which no more data is taken (see [`Space`]).
    pub reserve_bytes: u64,
    /// What to do with a store that lost writes it had made durable.
    pub on_lost_writes: OnLostWrites,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 64 * 1024 * 1024,
            reserve_bytes: 64 * 1024 * 1024,
            on_lost_writes: OnLostWrites::Refuse,
        }
    }
}

impl Store {
    /// Opens (or creates) the store at `path` with the default options.
    pub fn open(path: &Path) -> Result<Store> {
        Store::open_with(path, StoreOptions::default())
    }

    /// Opens (or creates) the store at `path`, refusing stores of another format version.
    pub fn open_with(path: &Path, options: StoreOptions) -> Result<Store> {
        let open_error = |reason: String| StorageError::Open {
            path: path.to_owned(),
            reason,
        };
        std::fs::create_dir_all(path).map_err(|e| open_error(e.to_string()))?;
        let mut sled_dir = layout::sled_dir(path).map_err(|e| open_error(e.to_string()))?;
        layout::remove_unused(path).map_err(|e| open_error(e.to_string()))?;
        remove_incomplete_snapshots(&sled_dir).map_err(|e| open_error(e.to_string()))?;
        // Before sled reads the log: its replay passes over what this finds.
        let mut kept_damaged = None;
        let mut log_damage = log_scan::found_damage(path, &sled_dir)
            .map_err(|e| open_error(format!("cannot read its data file: {e}")))?;
        if !log_damage.is_empty() {
            match options.on_lost_writes {
                OnLostWrites::Refuse => {
                    return Err(StorageError::DamagedLog {
                        path: path.to_owned(),
                        damage: log_damage,
                    })
                }
                OnLostWrites::Report => {}
                OnLostWrites::Accept => {
                    kept_damaged = Some(repair::rewrite(path, options)?);
                    log_damage.clear();
                    sled_dir = path.to_owned();
                }
            }
        }
        let db = open_without_panic(&sled_dir, options)?.map_err(|e| match e {
            sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                open_error("another process (a running roost?) holds its lock".into())
            }
            sled::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
                open_error("the disk holding it is full; free some space and start again".into())
            }
            other => open_error(other.to_string()),
        })?;
        format::check(&db, path)?;
        let db = gate::Db::new(
            gate::Current::new(db, &sled_dir)
                .map_err(|e| open_error(format!("cannot open the data file for syncing: {e}")))?,
        );
        let meta = db.open_tree("meta")?;
        let lost_writes = mark::compare(path, &meta.sled())?;
        if let (Some(lost), OnLostWrites::Refuse) = (lost_writes, options.on_lost_writes) {
            return Err(StorageError::LostWrites {
                path: path.to_owned(),
                lost,
            });
        }
        let writes_mark = options.on_lost_writes != OnLostWrites::Report;
        let mark = mark::Mark::open(path, meta, writes_mark)?;
        let durability = Durability::start(db.clone(), path, mark)?;
        Ok(Store {
            db,
            durability,
            lost_writes,
            log_damage,
            kept_damaged,
            space: Space {
                path: path.to_owned(),
                reserve: options.reserve_bytes,
                room_at: Default::default(),
                was_short: Default::default(),
            },
            path: path.to_owned(),
            options,
            compacting: Default::default(),
        })
    }

    /// Where the damaged directory went, if opening with [`OnLostWrites::Accept`] rewrote the
    /// store into a fresh data file.
    pub fn kept_damaged(&self) -> Option<&Path> {
        self.kept_damaged.as_deref()
    }

    pub fn space(&self) -> &Space {
        &self.space
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn durability(&self) -> &Durability {
        &self.durability
    }

    pub fn accounts(&self) -> Result<AccountStore> {
        AccountStore::open(&self.db)
    }

    /// Client message queues (QS).
    pub fn queues(&self) -> Result<QueueStore> {
        QueueStore::open(&self.db, "qs_queues")
    }

    /// Client connection queues (AS): where sealed connection requests wait.
    pub fn connection_queues(&self) -> Result<QueueStore> {
        QueueStore::open(&self.db, "as_connection_queues")
    }

    pub fn connection_packages(&self) -> Result<ConnectionPackageStore> {
        ConnectionPackageStore::open(&self.db)
    }

    /// Key packages and friendship tokens (QS).
    pub fn key_packages(&self) -> Result<KeyPackageStore> {
        KeyPackageStore::open(&self.db)
    }

    pub fn groups(&self) -> Result<GroupStore> {
        GroupStore::open(&self.db)
    }

    /// Deliveries waiting to be relayed to other homeservers.
    pub fn outbox(&self) -> Result<OutboxStore> {
        OutboxStore::open(&self.db)
    }

    /// When each client last made a request (for expiring idle ones).
    pub fn client_activity(&self) -> Result<ClientActivity> {
        ClientActivity::open(&self.db)
    }

    /// Users' encrypted profiles.
    pub fn profiles(&self) -> Result<ProfileStore> {
        ProfileStore::open(&self.db)
    }

    /// Privacy Pass: issuer keys, issued counts, spent tokens.
    pub fn tokens(&self) -> Result<TokenStore> {
        TokenStore::open(&self.db)
    }

    /// Domains an admin blocked from federating at run time.
    pub fn blocked_domains(&self) -> Result<BlockedDomains> {
        BlockedDomains::open(&self.db)
    }

    /// How many bytes the store takes on disk (sled's files, not counting what the file
    /// system holds back).
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.sled().size_on_disk()?)
    }

    /// Reads every record of every tree: see [`CheckReport`].
    pub fn check(&self) -> Result<CheckReport> {
        let mut report = CheckReport::default();
        if let Some(lost) = self.lost_writes {
            report.damaged(
                "meta",
                format!(
                    "the store holds {} flushes of the {} it made durable: writes after the damage in its data file are missing",
                    lost.found, lost.made_durable
                ),
            );
        }
        for damage in &self.log_damage {
            report.damaged(
                "data file",
                format!(
                    "unreadable at byte {}: sled skips what follows it in its segment, so records written there are missing",
                    damage.offset
                ),
            );
        }
        report.readable("meta", &self.db.open_tree("meta")?.sled());
        self.server_keys()?.check(&mut report);
        self.accounts()?.check(&mut report);
        self.connection_packages()?.check(&mut report);
        self.key_packages()?.check(&mut report);
        self.queues()?.check("qs_queues", &mut report);
        self.connection_queues()?
            .check("as_connection_queues", &mut report);
        self.groups()?.check(&mut report);
        self.outbox()?.check(&mut report);
        self.blocked_domains()?.check(&mut report);
        self.seen_signatures()?.check(&mut report);
        self.client_activity()?.check(&mut report);
        self.profiles()?.check(&mut report);
        self.tokens()?.check(&mut report);
        Ok(report)
    }

    pub fn seen_signatures(&self) -> Result<SeenSignatures> {
        SeenSignatures::open(&self.db)
    }

    pub fn server_keys(&self) -> Result<ServerKeysStore> {
        ServerKeysStore::open(&self.db)
    }

    /// Flushes and syncs everything written so far.
    pub fn persist_blocking(&self) -> Result<()> {
        self.durability.persist_blocking()
    }

    /// Makes everything durable and releases the database (and its file lock) once the last
    /// clone of this store and of the record stores taken from it are dropped.
    pub fn close(self) -> Result<()> {
        self.durability.stop()
    }
}

/// Opens sled, turning a panic (sled panics on some damaged data files) into an error that
/// names the file and says what to do.
pub(crate) fn open_without_panic(
    path: &Path,
    options: StoreOptions,
) -> Result<sled::Result<sled::Db>> {
    let config = sled::Config::new()
        .path(path)
        .cache_capacity(options.cache_bytes);
    // Quiet while sled opens: the panic is reported as an error below, not as a backtrace.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
    std::panic::set_hook(hook);
    opened.map_err(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no reason given".into());
        StorageError::Open {
            path: path.to_owned(),
            reason: format!(
                "its data file {} is damaged (sled gave up reading it: {why}); restore the store \
                 from a backup (README: \"A damaged store\")",
                path.join("db").display()
            ),
        }
    })
}

/// sled writes a snapshot to `snap.N.generating` and renames it to `snap.N` once complete; a
/// start that failed part-way (a full disk) leaves the former behind, which sled would then try
/// to read and refuse the whole store over. Such a file is never needed: the log it was made
/// from is still there.
fn remove_incomplete_snapshots(path: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(file = %entry.path().display(), "removing an incomplete snapshot");
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_reopens_with_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let id = roost_protocol::ClientId::random();
        {
            let store = Store::open(dir.path()).unwrap();
            let queues = store.queues().unwrap();
            let message = roost_protocol::api::QueueMessage {
                seq: 1,
                sealing: roost_protocol::queue::Sealing::Chain {
                    start: None,
                    ciphertext: vec![2; 40],
                },
            };
            queues
                .append(&id, EncodedMessage::new(&message), None)
                .unwrap();
            drop(queues);
            store.close().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let (messages, more) = store
            .queues()
            .unwrap()
            .range(&id, 0, 10, usize::MAX)
            .unwrap();
        assert_eq!(messages.len(), 1);
        assert!(!more);
    }

    #[test]
    fn an_incomplete_snapshot_left_by_a_failed_start_does_not_stop_the_store_opening() {
        let dir = tempfile::tempdir().unwrap();
        let id = roost_protocol::ClientId::random();
        {
            let store = Store::open(dir.path()).unwrap();
            store.queues().unwrap().delete(&id).unwrap();
            store.close().unwrap();
        }
        // What a start on a full disk leaves: a snapshot begun, never written.
        std::fs::write(dir.path().join("snap.00000000000F0000.generating"), b"").unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.queues().unwrap().next_seq(&id).unwrap(), 1);
    }
}
