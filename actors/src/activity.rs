//! The recorder of activity: the front end tells it of every request a client signed, a group's
//! actor of every request the group took, and it writes when the client or group was active at
//! most once per key per period (the store keeps the time; this keeps, in memory, which keys it
//! already wrote this period). The retention sweep reads the records to expire idle clients and
//! groups; an admin sees a client's in `users show`.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use roost_protocol::Timestamp;
use roost_storage::LastSeen;

#[derive(Clone)]
pub struct ActivityRecorder {
    store: LastSeen,
    period_secs: u64,
    written: Arc<Mutex<Written>>,
}

/// The keys written in the current period.
#[derive(Default)]
struct Written {
    period: u64,
    keys: HashSet<Vec<u8>>,
}

impl ActivityRecorder {
    pub fn new(store: LastSeen, period_secs: u64) -> Self {
        ActivityRecorder {
            store,
            period_secs: period_secs.max(1),
            written: Arc::default(),
        }
    }

    /// The client or group `key` took a request now.
    pub fn saw(&self, key: &[u8]) {
        let now = Timestamp::now();
        let period = now.0 / self.period_secs;
        {
            let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
            if written.period != period {
                *written = Written {
                    period,
                    keys: HashSet::new(),
                };
            }
            if written.keys.contains(key) {
                return;
            }
            written.keys.insert(key.to_vec());
        }
        // Not flushed on its own: a crash loses at most the last period's sightings, which
        // makes a client or group look idle for at most that much longer than it was.
        if let Err(e) = self.store.record(key, now) {
            tracing::warn!(error = %e, "recording activity failed");
        }
    }
}
