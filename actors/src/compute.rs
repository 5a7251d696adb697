//! A few threads of their own for CPU-heavy work that must not run on the actor or HTTP threads:
//! at most as many jobs run at once as there are threads, and a burst queues instead of taking
//! every core. Each thread keeps a state of its own between jobs (say, working memory it
//! allocated once), and may run at a lower CPU priority than the rest of the server, for work
//! that no request waits on directly: the kernel then serves the request handlers first, and
//! still gives these threads a share of a busy core, so their work never starves.
//!
//! Owns: the threads and their queue. Must not touch: what a job does.

use std::{
    sync::{mpsc, Arc, Mutex},
    thread,
};

use tokio::sync::oneshot;

/// The worker threads have stopped (the server is shutting down).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the worker threads have stopped")]
pub struct Stopped;

/// How the kernel schedules the worker threads against the rest of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// As every other thread.
    Normal,
    /// After the request handlers when the CPU is busy (nice 10 on Linux: about a tenth of the
    /// share of a normal thread; elsewhere, as `Normal`).
    Background,
}

type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// Handle to the threads. Cheap to clone; the threads stop when the last handle is dropped.
pub struct ComputeThreads<S> {
    jobs: mpsc::Sender<Job<S>>,
}

impl<S> Clone for ComputeThreads<S> {
    fn clone(&self) -> Self {
        ComputeThreads {
            jobs: self.jobs.clone(),
        }
    }
}

impl<S: 'static> ComputeThreads<S> {
    /// Starts `threads` threads (at least one) named `name-N`, each with the state `init` makes.
    pub fn start(
        name: &str,
        threads: usize,
        priority: Priority,
        init: fn() -> S,
    ) -> std::io::Result<ComputeThreads<S>> {
        let (jobs, incoming) = mpsc::channel::<Job<S>>();
        let incoming = Arc::new(Mutex::new(incoming));
        for n in 0..threads.max(1) {
            let incoming = incoming.clone();
            thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn(move || {
                    if priority == Priority::Background {
                        lower_priority();
                    }
                    let mut state = init();
                    loop {
                        let job = incoming
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .recv();
                        match job {
                            Ok(job) => job(&mut state),
                            Err(_) => break,
                        }
                    }
                })?;
        }
        Ok(ComputeThreads { jobs })
    }

    /// Runs `work` on one of the threads, with its state, and answers what it returns.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut S) -> T + Send + 'static,
    ) -> Result<T, Stopped> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Box::new(move |state| {
                let _ = reply.send(work(state));
            }))
            .map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
    }
}

/// Lowers the calling thread's CPU priority. On Linux a thread is a task of its own, so this
/// lowers this thread only. Best effort: where it fails, the work runs at normal priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    let _ = rustix::process::setpriority_process(None, 10);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_thread_keeps_its_state_between_jobs() {
        let workers = ComputeThreads::start("test", 1, Priority::Background, || 0u32).unwrap();
        for expected in 1..=3 {
            let count = workers
                .run(|count| {
                    *count += 1;
                    *count
                })
                .await
                .unwrap();
            assert_eq!(count, expected);
        }
    }
}
