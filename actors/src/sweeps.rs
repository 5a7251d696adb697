//! Periodic clean-ups of records that only age: request signatures past any replay window
//! (the [`crate::replay::ReplayGuard`]'s), and records of served connection packages and of
//! published and added key packages past their package's end; and the compaction that gives
//! the space of deleted records back ([`compact_when_worth_it`]). Each runs on the blocking
//! pool, off the actor threads.

use std::time::Duration;

use roost_protocol::{auth::REPLAY_WINDOW_MS, ids::now_millis, Timestamp};
use roost_storage::{StorageError, Store};

/// Starts the sweeps; they run for as long as the actix system does.
pub fn start(store: &Store) -> Result<(), StorageError> {
    let seen = store.seen_signatures()?;
    sweep_every(
        Duration::from_secs(60),
        "old request signatures",
        move || seen.sweep(now_millis().saturating_sub(2 * REPLAY_WINDOW_MS)),
    );
    let packages = store.connection_packages()?;
    sweep_every(
        Duration::from_secs(3600),
        "expired served-package records",
        move || packages.sweep_served(Timestamp::now()),
    );
    let key_packages = store.key_packages()?;
    sweep_every(
        Duration::from_secs(3600),
        "records of expired published key packages",
        move || key_packages.sweep_published(Timestamp::now()),
    );
    let groups = store.groups()?;
    sweep_every(
        Duration::from_secs(3600),
        "records of expired added key packages",
        move || groups.sweep_added_key_packages(Timestamp::now()),
    );
    Ok(())
}

/// Runs `sweep` off the actor threads every `period`, for as long as the server runs, logging
/// how many `what` it removed.
fn sweep_every<F>(period: Duration, what: &'static str, sweep: F)
where
    F: Fn() -> roost_storage::Result<usize> + Clone + Send + 'static,
{
    actix::spawn(async move {
        let mut every = tokio::time::interval(period);
        loop {
            every.tick().await;
            match tokio::task::spawn_blocking(sweep.clone()).await {
                Ok(Ok(count)) => tracing::debug!(count, what, "swept"),
                other => tracing::warn!(outcome = ?other.map(|r| r.err()), what, "sweeping failed"),
            }
        }
    });
}

/// Every `every`, compacts the store if that gives back at least `min_wasted` bytes (see
/// [`roost_storage::Waste::worth_compacting`]), for as long as the actix system runs.
pub fn compact_when_worth_it(store: Store, every: Duration, min_wasted: u64) {
    actix::spawn(async move {
        let mut checks = tokio::time::interval(every);
        checks.tick().await; // not at start-up, with everything else
        loop {
            checks.tick().await;
            let store = store.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                let waste = store.waste()?;
                match waste.worth_compacting(min_wasted) {
                    true => store.compact().map(Some),
                    false => Ok(None),
                }
            })
            .await;
            match outcome {
                Ok(Ok(Some(compacted))) => {
                    metrics::counter!("roost_store_compactions_total").increment(1);
                    tracing::info!(
                        bytes_before = compacted.bytes_before,
                        bytes_after = compacted.bytes_after,
                        writes_paused_ms = compacted.writes_paused.as_millis() as u64,
                        "compacted the store"
                    )
                }
                Ok(Ok(None)) => {}
                other => {
                    tracing::warn!(outcome = ?other.map(|r| r.err()), "compacting the store failed")
                }
            }
        }
    });
}
