//! Closed-loop load: `concurrency` workers each repeat an operation until time is up.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use crate::stats::{Latencies, Timeline};

/// What a closed-loop run came to.
#[derive(Debug, Default, Clone)]
pub struct Driven {
    pub ok: u64,
    pub failed: u64,
    pub elapsed: Duration,
    /// Latency of each successful operation.
    pub latencies: Latencies,
    /// Successful operations over time.
    pub timeline: Timeline,
    pub first_error: Option<String>,
}

impl Driven {
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `operation(worker)` in `concurrency` workers, each in a loop, for `duration`.
pub async fn drive<F, Fut>(concurrency: usize, duration: Duration, operation: F) -> Driven
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    let deadline = started + duration;
    let workers = (0..concurrency).map(|worker| {
        let operation = &operation;
        async move {
            let mut driven = Driven::default();
            while Instant::now() < deadline {
                let begun = Instant::now();
                match operation(worker).await {
                    Ok(()) => {
                        driven.ok += 1;
                        driven.latencies.push(begun.elapsed());
                        driven.timeline.count(started.elapsed());
                    }
                    Err(e) => {
                        driven.failed += 1;
                        driven.first_error.get_or_insert(e);
                    }
                }
            }
            driven
        }
    });
    let mut total = Driven::default();
    for driven in futures_util::future::join_all(workers).await {
        total.ok += driven.ok;
        total.failed += driven.failed;
        total.latencies.extend(driven.latencies);
        total.timeline.merge(&driven.timeline);
        if total.first_error.is_none() {
            total.first_error = driven.first_error;
        }
    }
    total.elapsed = started.elapsed();
    total
}
