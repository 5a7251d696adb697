//! Retention: what the server stops keeping, on the admin's settings. Messages a client has not
//! fetched are dropped once they waited longer than `messages_secs` (their queue actor drops
//! them and tells the client how many); a client that made no request for `idle_clients_secs`
//! is deleted with its queues and packages (through the accounts actor, as an admin's
//! `clients revoke` is, so its user's other clients are told); a DS group that took no request
//! for `idle_groups_secs` is deleted by its actor, and its members' next request is told so
//! (410 `group_expired`). Each may be off.
//!
//! Times are kept coarsely, so that retention costs no write per message or request: queue
//! marks ([`roost_storage::QueueAges`]) and activity records are written at most once per
//! *period*, a thirtieth of the retention, at most a day. Nothing is dropped early; it may be
//! dropped up to a period (and a sweep) late.

use std::time::Duration;

use actix::prelude::*;

use roost_protocol::{api::QueueKind, ClientId, Timestamp};
use roost_storage::{AccountStore, ClientActivity, GroupStore, QueueStore, StorageError};

use crate::{
    accounts::{AccountsActor, DeleteClient},
    group::{ExpireIdle, GroupActor},
    pool::{Ask, Pool},
    queue::{ExpireMessages, MessageRetention, QueueActor, QueueId},
};

/// How long things are kept; `None`: for ever.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetentionPolicy {
    pub messages_secs: Option<u64>,
    pub idle_clients_secs: Option<u64>,
    pub idle_groups_secs: Option<u64>,
}

const DAY_SECS: u64 = 24 * 3600;

/// A thirtieth of `secs`, between a second and a day.
fn period_of(secs: u64) -> u64 {
    (secs / 30).clamp(1, DAY_SECS)
}

impl RetentionPolicy {
    /// How coarsely queues are dated: one mark per queue per this many seconds.
    pub fn message_period_secs(&self) -> u64 {
        self.messages_secs.map_or(DAY_SECS, period_of)
    }

    /// What the queue actors need of it.
    pub fn messages(&self) -> Option<MessageRetention> {
        self.messages_secs.map(|after_secs| MessageRetention {
            after_secs,
            period_secs: self.message_period_secs(),
        })
    }

    /// How coarsely client activity is recorded: one write per client per this many seconds.
    pub fn activity_period_secs(&self) -> u64 {
        self.idle_clients_secs.map_or(DAY_SECS, period_of)
    }

    /// How coarsely group activity is recorded: one write per group per this many seconds.
    pub fn group_activity_period_secs(&self) -> u64 {
        self.idle_groups_secs.map_or(DAY_SECS, period_of)
    }

    /// How often the sweep looks: a period of the shortest retention, at most hourly.
    pub fn sweep_every(&self) -> Duration {
        let shortest = self
            .message_period_secs()
            .min(self.activity_period_secs())
            .min(self.group_activity_period_secs());
        Duration::from_secs(shortest.min(3600))
    }
}

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub clients_expired: u64,
    pub messages_dropped: u64,
    pub groups_expired: u64,
}

/// The retention sweep: owns nothing; asks the owners (the accounts actor, the queue actors)
/// to remove what is past its time.
#[derive(Clone)]
pub struct RetentionSweep {
    pub policy: RetentionPolicy,
    pub activity: ClientActivity,
    pub accounts_store: AccountStore,
    pub accounts: Addr<AccountsActor>,
    pub queues: Addr<Pool<QueueActor>>,
    pub message_queues: QueueStore,
    pub connection_queues: QueueStore,
    pub groups_store: GroupStore,
    pub groups: Addr<Pool<GroupActor>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the sweep's blocking work was cancelled")]
    Cancelled,
}

impl RetentionSweep {
    /// Sweeps every [`RetentionPolicy::sweep_every`] for as long as the actix system runs.
    pub fn start(self) {
        let policy = &self.policy;
        if [
            policy.messages_secs,
            policy.idle_clients_secs,
            policy.idle_groups_secs,
        ]
        .iter()
        .all(Option::is_none)
        {
            return;
        }
        actix::spawn(async move {
            let mut every = tokio::time::interval(self.policy.sweep_every());
            loop {
                every.tick().await;
                match self.sweep(Timestamp::now()).await {
                    Ok(swept) if swept != Swept::default() => tracing::info!(
                        clients_expired = swept.clients_expired,
                        messages_dropped = swept.messages_dropped,
                        groups_expired = swept.groups_expired,
                        "retention: removed what was past its time"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "the retention sweep failed"),
                }
            }
        });
    }

    /// One sweep at `now`.
    pub async fn sweep(&self, now: Timestamp) -> Result<Swept, SweepError> {
        let mut swept = Swept::default();
        if let Some(idle) = self.policy.idle_clients_secs {
            swept.clients_expired = self.expire_idle_clients(now, idle).await?;
        }
        for kind in [QueueKind::Messages, QueueKind::Connections] {
            swept.messages_dropped += self.drop_old_messages(kind, now).await?;
        }
        if let Some(idle) = self.policy.idle_groups_secs {
            swept.groups_expired = self.expire_idle_groups(now, idle).await?;
        }
        metrics::counter!("roost_retention_clients_expired_total").increment(swept.clients_expired);
        metrics::counter!("roost_retention_messages_dropped_total")
            .increment(swept.messages_dropped);
        metrics::counter!("roost_retention_groups_expired_total").increment(swept.groups_expired);
        Ok(swept)
    }

    async fn expire_idle_clients(&self, now: Timestamp, idle: u64) -> Result<u64, SweepError> {
        let period = self.policy.activity_period_secs();
        let (activity, accounts) = (self.activity.clone(), self.accounts_store.clone());
        // Recorded at the start of its period, a client may have been active up to a period
        // after its record says.
        let seen_before = Timestamp(now.0.saturating_sub(idle.saturating_add(period)));
        let idle_clients = blocking(move || {
            activity.reconcile(&accounts.client_ids()?, now)?;
            let mut idle_clients = Vec::new();
            for client in activity.seen_before(seen_before)? {
                let Some(record) = accounts.client(&client)? else {
                    continue;
                };
                let user = record.credential.body.user;
                // A deactivated user's clients cannot make requests: the admin's decision
                // holds the account as it is.
                if accounts.standing(&user)?.is_none() {
                    idle_clients.push((user, client));
                }
            }
            Ok(idle_clients)
        })
        .await?;
        let mut expired = 0;
        for (user, client) in idle_clients {
            match self.accounts.send(DeleteClient { user, client }).await {
                Ok(Ok(())) => {
                    expired += 1;
                    self.activity.forget(&client)?;
                }
                other => {
                    tracing::warn!(outcome = ?other.map(|r| r.err()), "expiring an idle client failed")
                }
            }
        }
        Ok(expired)
    }

    async fn expire_idle_groups(&self, now: Timestamp, idle: u64) -> Result<u64, SweepError> {
        let period = self.policy.group_activity_period_secs();
        let store = self.groups_store.clone();
        // As for clients: a group recorded at the start of its period may have been active up
        // to a period later.
        let seen_before = Timestamp(now.0.saturating_sub(idle.saturating_add(period)));
        let idle_groups = blocking(move || {
            store.activity().reconcile(&store.ids()?, now)?;
            // What it remembers of expired groups is kept for as long again.
            store.sweep_expired(Timestamp(seen_before.0.saturating_sub(idle)))?;
            Ok(store.activity().seen_before(seen_before)?)
        })
        .await?;
        let mut expired = 0;
        for group in idle_groups {
            match self
                .groups
                .ask(group, ExpireIdle { seen_before, now })
                .await
            {
                Ok(true) => expired += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = ?e, "expiring an idle group failed"),
            }
        }
        Ok(expired)
    }

    async fn drop_old_messages(&self, kind: QueueKind, now: Timestamp) -> Result<u64, SweepError> {
        let Some(retention) = self.policy.messages() else {
            return Ok(0);
        };
        let ages = match kind {
            QueueKind::Messages => self.message_queues.ages().clone(),
            QueueKind::Connections => self.connection_queues.ages().clone(),
        };
        let old_enough = retention.after_secs.saturating_add(retention.period_secs);
        let marked_before = Timestamp(now.0.saturating_sub(old_enough));
        let queues: Vec<ClientId> =
            blocking(move || Ok(ages.marked_before(marked_before)?)).await?;
        let mut dropped = 0;
        for client in queues {
            let id = QueueId { kind, client };
            match self.queues.ask(id, ExpireMessages { now }).await {
                Ok(count) => dropped += count,
                Err(e) => tracing::warn!(error = ?e, "dropping a queue's old messages failed"),
            }
        }
        Ok(dropped)
    }
}

/// Runs store work off the actor threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SweepError> + Send + 'static,
) -> Result<T, SweepError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| SweepError::Cancelled)?
}
