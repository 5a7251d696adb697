//! Group commit: one flusher thread makes writes durable for every waiter at once.

use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc, Mutex,
    },
    thread,
};

use tokio::sync::oneshot;

use crate::{mark::Mark, Result, StorageError};

/// Told the outcome of the flush that covered its writes.
type Waiter = Box<dyn FnOnce(Result<(), FlushFailure>) + Send>;

/// Why a flush failed.
#[derive(Debug, Clone)]
struct FlushFailure {
    message: String,
    disk_full: bool,
}

impl FlushFailure {
    fn new(what: &str, error: &std::io::Error) -> Self {
        FlushFailure {
            message: format!("{what} failed: {error}"),
            disk_full: error.kind() == std::io::ErrorKind::StorageFull,
        }
    }
}

impl From<FlushFailure> for StorageError {
    fn from(failure: FlushFailure) -> Self {
        if failure.disk_full {
            StorageError::Full
        } else {
            StorageError::Unwritable(failure.message)
        }
    }
}

enum Request {
    Persist(Waiter),
    Stop,
}

/// Handle to the store's flusher. Cheap to clone.
#[derive(Clone)]
pub struct Durability {
    requests: mpsc::Sender<Request>,
    thread: Arc<Mutex<Option<thread::JoinHandle<()>>>>,
    /// Whether the last flush failed.
    failing: Arc<AtomicBool>,
    flushes: Arc<FlushCounts>,
}

/// Flushes counted as they begin, and the number of the last one that succeeded: a write made
/// before flush `n` began is durable once a flush numbered `n` or later succeeded.
#[derive(Default)]
struct FlushCounts {
    begun: AtomicU64,
    succeeded: AtomicU64,
}

/// A point in the store's writes, taken after some writes (see [`Durability::written`]).
#[derive(Debug, Clone, Copy)]
pub struct Written(u64);

impl Durability {
    pub(crate) fn start(db: crate::gate::Db, path: &Path, mut mark: Mark) -> Result<Durability> {
        let (requests, incoming) = mpsc::channel();
        let failing = Arc::new(AtomicBool::new(false));
        let flushes = Arc::new(FlushCounts::default());
        let (flag, counts) = (failing.clone(), flushes.clone());
        let thread = thread::Builder::new()
            .name("roost-flusher".into())
            .spawn(move || flusher(db, &mut mark, incoming, flag, &counts))
            .map_err(|e| StorageError::Open {
                path: path.to_owned(),
                reason: format!("cannot start the flusher thread: {e}"),
            })?;
        Ok(Durability {
            requests,
            thread: Arc::new(Mutex::new(Some(thread))),
            failing,
            flushes,
        })
    }

    /// Whether the last attempt to make writes durable failed (then nothing new is durable
    /// until one succeeds).
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
    }

    /// Returns once everything written to the store before this call is on disk.
    pub async fn persist(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Persist(Box::new(move |outcome| {
                let _ = tx.send(outcome);
            })))
            .map_err(|_| StorageError::FlusherGone)?;
        Ok(rx.await.map_err(|_| StorageError::FlusherGone)??)
    }

    /// The point in the store's writes reached now: everything written before this call is
    /// before it.
    pub fn written(&self) -> Written {
        Written(self.flushes.begun.load(Ordering::SeqCst) + 1)
    }

    /// Returns once everything written before `point` is on disk: at once if a flush that
    /// began after it has succeeded since (another writer's, say), else after a flush of its
    /// own. So a writer whose work goes on to writes that are flushed anyway (a group's ledger,
    /// then its fan-out to the queues) makes the first durable with the second's flush.
    pub async fn persist_since(&self, point: Written) -> Result<()> {
        if self.flushes.succeeded.load(Ordering::SeqCst) >= point.0 {
            return Ok(());
        }
        self.persist().await
    }

    /// [`persist`](Self::persist), blocking the calling thread (for start-up and shutdown).
    pub fn persist_blocking(&self) -> Result<()> {
        let (tx, rx) = mpsc::channel();
        self.requests
            .send(Request::Persist(Box::new(move |outcome| {
                let _ = tx.send(outcome);
            })))
            .map_err(|_| StorageError::FlusherGone)?;
        Ok(rx.recv().map_err(|_| StorageError::FlusherGone)??)
    }

    /// Makes everything durable, then stops the flusher and waits until it has let go of the
    /// database. Later calls to `persist` fail with [`StorageError::FlusherGone`].
    pub(crate) fn stop(&self) -> Result<()> {
        let outcome = self.persist_blocking();
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = self.requests.send(Request::Stop);
            let _ = thread.join();
        }
        outcome
    }
}

fn flusher(
    db: crate::gate::Db,
    mark: &mut Mark,
    incoming: mpsc::Receiver<Request>,
    failing: Arc<AtomicBool>,
    counts: &FlushCounts,
) {
    let mut stopping = false;
    while !stopping {
        let mut waiters = Vec::new();
        match incoming.recv() {
            Ok(Request::Persist(waiter)) => waiters.push(waiter),
            Ok(Request::Stop) | Err(_) => break,
        }
        // Everyone who arrived meanwhile shares this flush.
        for request in incoming.try_iter() {
            match request {
                Request::Persist(waiter) => waiters.push(waiter),
                Request::Stop => stopping = true,
            }
        }
        // Counted before sled takes the point it flushes to: a write made before this count was
        // read is in this flush.
        let number = counts.begun.fetch_add(1, Ordering::SeqCst) + 1;
        let started = std::time::Instant::now();
        // The database in use once the count is staged (staging waits out a compaction, and
        // a compaction copies what was written before it).
        let mut current = None;
        let outcome = mark
            .stage()
            .and_then(|()| Ok(current.insert(db.current()).db.flush()?))
            .map_err(|e| match e {
                StorageError::Sled(sled::Error::Io(io)) => FlushFailure::new("flush", &io),
                other => FlushFailure {
                    message: format!("flush failed: {other}"),
                    disk_full: false,
                },
            })
            .and_then(|_| {
                // sled's flush hands data to the kernel with sync_file_range, which neither
                // waits for metadata nor survives power loss; an fsync of the data file does.
                current
                    .as_ref()
                    .expect("flushed")
                    .data_file
                    .sync_data()
                    .map_err(|e| FlushFailure::new("fsync", &e))
            });
        metrics::histogram!("roost_store_flush_waiters").record(waiters.len() as f64);
        metrics::histogram!("roost_store_flush_seconds").record(started.elapsed().as_secs_f64());
        match &outcome {
            Ok(()) => {
                mark.confirm();
                counts.succeeded.fetch_max(number, Ordering::SeqCst);
            }
            Err(failure) => {
                metrics::counter!("roost_store_flush_failures_total").increment(1);
                tracing::error!(error = %failure.message, "the store could not be made durable")
            }
        }
        failing.store(outcome.is_err(), Ordering::SeqCst);
        for waiter in waiters {
            waiter(outcome.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Store;

    fn flushes(store: &Store) -> u64 {
        crate::mark::in_store(&store.db.open_tree("meta").unwrap().sled()).unwrap()
    }

    #[test]
    fn writes_another_writers_later_flush_covered_need_no_flush_of_their_own() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let durability = store.durability().clone();
        let tree = store.db.open_tree("test").unwrap();

        tree.insert("a", "1").unwrap();
        let written = durability.written();
        // Another writer's flush, begun after the write.
        durability.persist_blocking().unwrap();
        let before = flushes(&store);
        runtime.block_on(durability.persist_since(written)).unwrap();
        assert_eq!(flushes(&store), before);

        // Nothing flushed since: a flush of its own.
        tree.insert("b", "2").unwrap();
        let written = durability.written();
        runtime.block_on(durability.persist_since(written)).unwrap();
        assert_eq!(flushes(&store), before + 1);
    }
}
