//! Relaying group deliveries to other homeservers: one federation actor per remote domain (in a
//! [`Pool`](crate::pool::Pool)), owner of that domain's part of the persistent outbox.
//!
//! The DS's fan-out hands a delivery for a remote client's queue to the actor of its domain
//! ([`Relay`]), which appends it to the outbox and answers once that is durable — so the DS
//! answers the sender only after every delivery is either queued locally or safe in the
//! outbox. The actor sends only deliveries known to be durable (up to
//! `FederationActor::relayable_up_to`): what another server has received is never lost here
//! in a crash, nor is what was written before it — the group's ledger, which the DS lets the
//! outbox's flush make durable with it. The actor sends the outbox's deliveries in order, in batches (one request at a
//! time, each with what has piled up meanwhile, up to the protocol's limits), through a
//! [`Transport`] (the server's signed HTTP client: this crate does no HTTP), and removes them
//! once the receiver has answered for each. A failed request is retried with exponential
//! backoff and jitter, capped; a delivery the receiver refuses for good is dropped and logged,
//! so one bad delivery cannot block the rest. The receiver queues a delivery once per id, so a
//! delivery sent again after a crash (sent, but not yet removed) is not queued twice. An actor
//! retires only when its outbox is empty; at start-up the server wakes the actors of domains
//! with a backlog ([`Wake`]). A domain that takes nothing for longer than the message
//! retention loses what was waiting for it when it began to fail (see [`Unreachable`]): so a
//! domain gone for good does not hold its deliveries for ever, and none is dropped before it
//! waited that long.

use std::{sync::Arc, time::Duration};

use actix::prelude::*;
use futures_util::future::BoxFuture;
use roost_protocol::{
    federation::{FederatedDelivery, RelayOutcome, MAX_RELAY_DELIVERIES, RELAY_BATCH_BYTES},
    Domain, Timestamp,
};
use roost_storage::{Durability, OutboxStore, StorageError, Unreachable};

use crate::{
    federation_policy::FederationPolicy,
    pool::{pooled_actor, pooled_messages, Membership, Pooled},
};

/// Why a batch of deliveries did not go through.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RelayError {
    /// Worth trying again later (network, 5xx, 401, 408, 429).
    #[error("{0}")]
    Retry(String),
    /// The receiver refuses the whole batch for good.
    #[error("{0}")]
    Refused(String),
}

/// How deliveries reach another homeserver: signed HTTP, provided by the server.
pub trait Transport: Send + Sync + 'static {
    /// Hands `deliveries` (all for `to`, in order) over; answers one outcome per delivery.
    fn deliver(
        &self,
        to: &Domain,
        deliveries: Vec<FederatedDelivery>,
    ) -> BoxFuture<'static, Result<Vec<RelayOutcome>, RelayError>>;
}

/// How long to wait before trying a domain again.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// After `failures` failures in a row: doubling from `initial`, at most `max`, and a random
    /// half of it taken off so that many senders do not retry in step.
    pub fn delay(&self, failures: u32) -> Duration {
        let doubled = self
            .initial
            .saturating_mul(1u32 << failures.saturating_sub(1).min(30));
        let capped = doubled.min(self.max);
        capped.mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }
}

#[derive(Clone)]
pub struct FederationDeps {
    pub outbox: OutboxStore,
    pub durability: Durability,
    pub transport: Arc<dyn Transport>,
    pub retry: RetryPolicy,
    pub policy: FederationPolicy,
    pub idle_after: Duration,
    /// How long deliveries wait for a domain that takes nothing (the message retention);
    /// `None`: for ever.
    pub give_up_after: Option<Duration>,
}

/// Keep deliveries for the actor's domain; answers once they are durable in the outbox.
#[derive(Message)]
#[rtype(result = "Result<(), StorageError>")]
pub struct Relay(pub Vec<FederatedDelivery>);

/// Start sending what the outbox holds (at start-up), or drop it if the domain is blocked.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Wake;

pub struct FederationActor {
    domain: Domain,
    deps: FederationDeps,
    membership: Membership<Self>,
    /// A delivery is on its way, or a retry is scheduled.
    busy: bool,
    failures: u32,
    /// The outbox seq up to which deliveries are durable, and so may go out: what was there
    /// when the actor started (an actor retires only with an empty outbox, so that is what a
    /// restart recovered), then each [`Relay`]'s once its flush succeeded.
    relayable_up_to: u64,
    /// Since when the domain fails to take relays, if it does (as stored).
    unreachable: Option<Unreachable>,
}

impl Pooled for FederationActor {
    type Key = Domain;
    type Deps = FederationDeps;
    const KIND: &'static str = "federation";

    fn new(domain: Domain, deps: &FederationDeps, membership: Membership<Self>) -> Self {
        let relayable_up_to = deps.outbox.last_seq(&domain).unwrap_or_else(|e| {
            // Held until the next relay's flush succeeds, which lets everything before it go.
            tracing::error!(%domain, "cannot read the federation outbox: {e}");
            0
        });
        let unreachable = deps.outbox.unreachable(&domain).ok().flatten();
        FederationActor {
            domain,
            deps: deps.clone(),
            membership,
            busy: false,
            failures: 0,
            relayable_up_to,
            unreachable,
        }
    }

    fn is_idle(&self) -> bool {
        !self.busy && self.deps.outbox.len(&self.domain) == 0
    }

    fn membership(&mut self) -> &mut Membership<Self> {
        &mut self.membership
    }
}

pooled_actor!(FederationActor);
pooled_messages!(FederationActor: Relay, Wake);

impl Handler<Relay> for FederationActor {
    type Result = ResponseActFuture<Self, Result<(), StorageError>>;

    fn handle(&mut self, Relay(deliveries): Relay, _ctx: &mut Self::Context) -> Self::Result {
        let pushed = self.deps.outbox.push(&self.domain, &deliveries);
        let durability = self.deps.durability.clone();
        Box::pin(
            async move {
                let last = pushed?;
                durability.persist().await.map(|()| last)
            }
            .into_actor(self)
            .map(|outcome, actor, ctx| {
                let last = outcome?;
                actor.relayable_up_to = actor.relayable_up_to.max(last);
                actor.pump(ctx);
                Ok(())
            }),
        )
    }
}

impl Handler<Wake> for FederationActor {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Self::Context) {
        self.pump(ctx);
    }
}

impl FederationActor {
    /// Sends the oldest waiting deliveries that are durable unless a batch is under way;
    /// continues until none is left.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        if !self.deps.policy.allows(&self.domain) {
            self.drop_all();
            return;
        }
        let batch = match self.deps.outbox.oldest(
            &self.domain,
            MAX_RELAY_DELIVERIES,
            RELAY_BATCH_BYTES,
        ) {
            Ok(mut batch) => {
                batch.retain(|(seq, _)| *seq <= self.relayable_up_to);
                if batch.is_empty() {
                    return;
                }
                batch
            }
            Err(e) => {
                tracing::error!(domain = %self.domain, "cannot read the federation outbox: {e}");
                return;
            }
        };
        self.busy = true;
        let (seqs, deliveries): (Vec<u64>, Vec<FederatedDelivery>) = batch.into_iter().unzip();
        let sending = self.deps.transport.deliver(&self.domain, deliveries);
        ctx.spawn(sending.into_actor(self).map(move |outcome, actor, ctx| {
            actor.busy = false;
            match outcome {
                Ok(outcomes) => {
                    let refused = outcomes
                        .iter()
                        .filter_map(|outcome| match outcome {
                            RelayOutcome::Refused(why) => Some(why),
                            RelayOutcome::Queued => None,
                        })
                        .collect::<Vec<_>>();
                    if let Some(first) = refused.first() {
                        tracing::warn!(
                            domain = %actor.domain,
                            refused = refused.len(),
                            "deliveries were refused, dropping them: {} ({})",
                            first.error,
                            first.message
                        );
                    }
                    actor.count("roost_federation_deliveries_relayed_total", seqs.len());
                    if outcomes.len() != seqs.len() {
                        tracing::warn!(
                            domain = %actor.domain,
                            sent = seqs.len(),
                            answered = outcomes.len(),
                            "the receiver answered for another number of deliveries"
                        );
                    }
                    actor.sent(&seqs, ctx);
                }
                Err(RelayError::Refused(why)) => {
                    tracing::warn!(
                        domain = %actor.domain,
                        dropped = seqs.len(),
                        "a batch of deliveries was refused, dropping it: {why}"
                    );
                    actor.count("roost_federation_deliveries_refused_total", seqs.len());
                    actor.sent(&seqs, ctx);
                }
                Err(RelayError::Retry(why)) => {
                    actor.count("roost_federation_relay_retries_total", 1);
                    actor.failing();
                    actor.failures += 1;
                    let delay = actor.deps.retry.delay(actor.failures);
                    tracing::info!(
                        domain = %actor.domain,
                        failures = actor.failures,
                        "relaying failed, retrying in {delay:?}: {why}"
                    );
                    actor.busy = true;
                    ctx.run_later(delay, |actor, ctx| {
                        actor.busy = false;
                        actor.pump(ctx);
                    });
                }
            }
        }));
    }

    /// Adds `n` to the counter `name` of this actor's domain (a server's name, never a user's).
    fn count(&self, name: &'static str, n: usize) {
        metrics::counter!(name, "domain" => self.domain.to_string()).increment(n as u64);
    }

    /// The domain is blocked: what waits for it goes.
    fn drop_all(&mut self) {
        self.drop_up_to(u64::MAX, "the domain is blocked");
    }

    /// Drops the deliveries waiting with a seq up to `up_to`, saying `why` in the log.
    fn drop_up_to(&mut self, up_to: u64, why: &str) {
        let waiting = self
            .deps
            .outbox
            .oldest(&self.domain, usize::MAX, usize::MAX)
            .map(|all| {
                all.into_iter()
                    .map(|(seq, _)| seq)
                    .filter(|seq| *seq <= up_to)
                    .collect::<Vec<_>>()
            });
        let dropped = waiting.and_then(|seqs| {
            self.deps.outbox.remove(&self.domain, &seqs)?;
            Ok(seqs.len())
        });
        match dropped {
            Ok(0) => {}
            Ok(dropped) => {
                self.count("roost_federation_deliveries_dropped_total", dropped);
                tracing::warn!(domain = %self.domain, dropped, "dropped the deliveries waiting for it: {why}")
            }
            Err(e) => {
                tracing::error!(domain = %self.domain, "cannot drop the deliveries waiting for it ({why}): {e}")
            }
        }
    }

    /// A relay failed and will be retried: notes since when the domain fails, and once that is
    /// longer than the retention, drops what was waiting then (it has waited that long).
    fn failing(&mut self) {
        let now = Timestamp::now();
        let since_now = |actor: &Self| {
            actor
                .deps
                .outbox
                .last_seq(&actor.domain)
                .ok()
                .map(|last| Unreachable {
                    since: now,
                    waiting_up_to: last,
                })
        };
        match (self.unreachable, self.deps.give_up_after) {
            (None, _) => self.set_unreachable(since_now(self)),
            // Strictly more whole seconds: `since` was rounded down.
            (Some(unreachable), Some(after))
                if now.0.saturating_sub(unreachable.since.0) > after.as_secs() =>
            {
                self.drop_up_to(
                    unreachable.waiting_up_to,
                    &format!("it took nothing for longer than the retention ({after:?})"),
                );
                // What came since waits its own full time.
                self.set_unreachable(since_now(self));
            }
            _ => {}
        }
    }

    /// Keeps, and stores, since when the domain fails (`None`: it takes relays).
    fn set_unreachable(&mut self, unreachable: Option<Unreachable>) {
        self.unreachable = unreachable;
        if let Err(e) = self.deps.outbox.set_unreachable(&self.domain, unreachable) {
            tracing::error!(domain = %self.domain, "cannot record whether the domain takes relays: {e}");
        }
    }

    fn sent(&mut self, seqs: &[u64], ctx: &mut Context<Self>) {
        self.failures = 0;
        if self.unreachable.is_some() {
            self.set_unreachable(None);
        }
        if let Err(e) = self.deps.outbox.remove(&self.domain, seqs) {
            tracing::error!(domain = %self.domain, "cannot remove relayed deliveries: {e}");
            return;
        }
        self.pump(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_with_jitter_up_to_the_cap() {
        let policy = RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
        };
        for (failures, full) in [(1, 100), (2, 200), (3, 400), (8, 10_000), (40, 10_000)] {
            let delay = policy.delay(failures).as_millis() as u64;
            assert!(
                delay >= full / 2 && delay <= full,
                "{failures} failures: {delay} ms"
            );
        }
    }
}
