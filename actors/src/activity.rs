//! The recorder of client activity: the front end tells it of every request a client signed, and
//! it writes when the client was seen at most once per client per period (the store keeps the
//! time; this keeps, in memory, which clients it already wrote this period). The retention
//! sweep reads the records to expire idle clients; an admin sees them in `users show`.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use roost_protocol::{ClientId, Timestamp};
use roost_storage::ClientActivity;

#[derive(Clone)]
pub struct ActivityRecorder {
    store: ClientActivity,
    period_secs: u64,
    written: Arc<Mutex<Written>>,
}

/// The clients written in the current period.
#[derive(Default)]
struct Written {
    period: u64,
    clients: HashSet<ClientId>,
}

impl ActivityRecorder {
    pub fn new(store: ClientActivity, period_secs: u64) -> Self {
        ActivityRecorder {
            store,
            period_secs: period_secs.max(1),
            written: Arc::default(),
        }
    }

    /// `client` made a request now.
    pub fn saw(&self, client: &ClientId) {
        let now = Timestamp::now();
        let period = now.0 / self.period_secs;
        {
            let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
            if written.period != period {
                *written = Written {
                    period,
                    clients: HashSet::new(),
                };
            }
            if !written.clients.insert(*client) {
                return;
            }
        }
        // Not flushed on its own: a crash loses at most the last period's sightings, which
        // makes a client look idle for at most that much longer than it was.
        if let Err(e) = self.store.record(client, now) {
            tracing::warn!(error = %e, "recording a client's activity failed");
        }
    }
}
