//! Group commit: one flusher thread makes writes durable for every waiter at once.

use std::{
    fs::File,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
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
}

impl Durability {
    pub(crate) fn start(db: sled::Db, path: &Path, mut mark: Mark) -> Result<Durability> {
        // sled's flush hands data to the kernel with sync_file_range, which neither waits for
        // metadata nor survives power loss; an fsync of the data file does.
        let data_file = File::open(path.join("db")).map_err(|e| StorageError::Open {
            path: path.to_owned(),
            reason: format!("cannot open the data file for syncing: {e}"),
        })?;
        let (requests, incoming) = mpsc::channel();
        let failing = Arc::new(AtomicBool::new(false));
        let flag = failing.clone();
        let thread = thread::Builder::new()
            .name("roost-flusher".into())
            .spawn(move || flusher(db, data_file, &mut mark, incoming, flag))
            .map_err(|e| StorageError::Open {
                path: path.to_owned(),
                reason: format!("cannot start the flusher thread: {e}"),
            })?;
        Ok(Durability {
            requests,
            thread: Arc::new(Mutex::new(Some(thread))),
            failing,
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
    db: sled::Db,
    data_file: File,
    mark: &mut Mark,
    incoming: mpsc::Receiver<Request>,
    failing: Arc<AtomicBool>,
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
        let outcome = mark
            .stage()
            .and_then(|()| Ok(db.flush()?))
            .map_err(|e| match e {
                StorageError::Sled(sled::Error::Io(io)) => FlushFailure::new("flush", &io),
                other => FlushFailure {
                    message: format!("flush failed: {other}"),
                    disk_full: false,
                },
            })
            .and_then(|_| {
                data_file
                    .sync_data()
                    .map_err(|e| FlushFailure::new("fsync", &e))
            });
        match &outcome {
            Ok(()) => mark.confirm(),
            Err(failure) => {
                tracing::error!(error = %failure.message, "the store could not be made durable")
            }
        }
        failing.store(outcome.is_err(), Ordering::SeqCst);
        for waiter in waiters {
            waiter(outcome.clone());
        }
    }
}
