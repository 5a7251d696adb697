//! The queue actor: one per client queue — a client's message queue (QS) or its connection
//! queue (AS); both behave alike and differ only in where they are stored.
//!
//! Owns a queue's sequence counter and its waiting fetches. Sequence numbers are allocated here
//! and nowhere else; a message is visible to fetches only once it is durable, so a crash can
//! never take back a message a client has seen.

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use roost_protocol::{
    api::{QueueBatch, QueueItem, QueueMessage},
    ClientId, HpkePublicKey,
};
use roost_storage::{AccountStore, Durability, QueueStore, StorageError};

use crate::pool::{Membership, Pooled, Retire};

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("no such queue")]
    UnknownQueue,
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the queue's key is not usable: {0}")]
    Crypto(#[from] roost_protocol::crypto::CryptoError),
}

/// Which of a client's queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueKind {
    /// The QS message queue.
    Messages,
    /// The AS connection queue, where sealed connection requests arrive.
    Connections,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueueId {
    pub kind: QueueKind,
    pub client: ClientId,
}

impl QueueId {
    pub fn messages(client: ClientId) -> Self {
        QueueId {
            kind: QueueKind::Messages,
            client,
        }
    }

    pub fn connections(client: ClientId) -> Self {
        QueueId {
            kind: QueueKind::Connections,
            client,
        }
    }
}

/// Store handles every queue actor is built from.
#[derive(Clone)]
pub struct QueueDeps {
    pub queues: QueueStore,
    pub connection_queues: QueueStore,
    pub accounts: AccountStore,
    pub durability: Durability,
    pub idle_after: Duration,
}

/// Append an item; answers with its sequence number once it is durable.
#[derive(Message)]
#[rtype(result = "Result<u64, QueueError>")]
pub struct Enqueue(pub QueueItem);

/// Append items relayed by another homeserver, in order, each once per its `delivery` key (see
/// `FederatedDelivery::dedup_key`): a retried delivery gets the seq of the first. Answers with
/// their seqs once all are durable.
#[derive(Message)]
#[rtype(result = "Result<Vec<u64>, QueueError>")]
pub struct EnqueueRelayed {
    pub items: Vec<(QueueItem, [u8; 32])>,
}

/// Messages with `seq >= from`, at most `max`; waits up to `wait` for the first one.
#[derive(Message)]
#[rtype(result = "Result<QueueBatch, QueueError>")]
pub struct Fetch {
    pub from: u64,
    pub max: u32,
    pub wait: Duration,
}

/// Delete every message with `seq <= up_to`; answers once that is durable.
#[derive(Message)]
#[rtype(result = "Result<(), QueueError>")]
pub struct Ack {
    pub up_to: u64,
}

/// Delete the whole queue (its client was deleted).
#[derive(Message)]
#[rtype(result = "Result<(), QueueError>")]
pub struct DeleteQueue;

struct Waiter {
    from: u64,
    max: u32,
    reply: oneshot::Sender<Result<QueueBatch, QueueError>>,
}

pub struct QueueActor {
    client: ClientId,
    store: QueueStore,
    deps: QueueDeps,
    /// Highest sequence number known to be on disk; fetches see nothing beyond it.
    durable_up_to: u64,
    next_seq: Option<u64>,
    key: Option<HpkePublicKey>,
    waiters: Vec<Waiter>,
    membership: Membership<QueueActor>,
}

impl Pooled for QueueActor {
    type Key = QueueId;
    type Deps = QueueDeps;

    fn new(id: QueueId, deps: &QueueDeps, membership: Membership<Self>) -> Self {
        let store = match id.kind {
            QueueKind::Messages => deps.queues.clone(),
            QueueKind::Connections => deps.connection_queues.clone(),
        };
        QueueActor {
            client: id.client,
            store,
            deps: deps.clone(),
            durable_up_to: 0,
            next_seq: None,
            key: None,
            waiters: Vec::new(),
            membership,
        }
    }

    fn is_idle(&self) -> bool {
        self.waiters.iter().all(|w| w.reply.is_closed())
    }

    fn membership(&mut self) -> &mut Membership<Self> {
        &mut self.membership
    }
}

impl Actor for QueueActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        Membership::watch_idleness(ctx, self.deps.idle_after);
    }
}

impl Handler<Retire> for QueueActor {
    type Result = ();
    fn handle(&mut self, _: Retire, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl QueueActor {
    /// Loads the counter and key on first use. What is stored at start-up is durable.
    fn next_seq(&mut self) -> Result<u64, QueueError> {
        if let Some(seq) = self.next_seq {
            return Ok(seq);
        }
        let seq = self.store.next_seq(&self.client)?;
        self.durable_up_to = seq - 1;
        self.next_seq = Some(seq);
        Ok(seq)
    }

    fn key(&mut self) -> Result<HpkePublicKey, QueueError> {
        if let Some(key) = self.key {
            return Ok(key);
        }
        let record = self
            .deps
            .accounts
            .client(&self.client)?
            .ok_or(QueueError::UnknownQueue)?;
        self.key = Some(record.queue_key);
        Ok(record.queue_key)
    }

    fn batch(&self, from: u64, max: u32) -> Result<QueueBatch, QueueError> {
        if from > self.durable_up_to {
            return Ok(QueueBatch {
                messages: Vec::new(),
                has_more: false,
            });
        }
        let visible = (self.durable_up_to - from + 1).min(max as u64) as usize;
        let (messages, more) = self.store.range(&self.client, from, visible)?;
        let has_more = more
            && messages
                .last()
                .is_some_and(|last| last.seq < self.durable_up_to);
        Ok(QueueBatch { messages, has_more })
    }

    fn mark_durable(&mut self, seq: u64) {
        self.durable_up_to = self.durable_up_to.max(seq);
        let durable_up_to = self.durable_up_to;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .filter(|w| !w.reply.is_closed())
            .partition(|w| w.from <= durable_up_to);
        self.waiters = waiting;
        for waiter in ready {
            let batch = self.batch(waiter.from, waiter.max);
            let _ = waiter.reply.send(batch);
        }
    }
}

impl Handler<Enqueue> for QueueActor {
    type Result = ResponseActFuture<Self, Result<u64, QueueError>>;

    fn handle(&mut self, Enqueue(item): Enqueue, _ctx: &mut Self::Context) -> Self::Result {
        Box::pin(
            self.append(vec![(item, None)])
                .map(|seqs, _, _| seqs.map(|seqs| seqs.first().copied().unwrap_or_default())),
        )
    }
}

impl Handler<EnqueueRelayed> for QueueActor {
    type Result = ResponseActFuture<Self, Result<Vec<u64>, QueueError>>;

    fn handle(&mut self, msg: EnqueueRelayed, _ctx: &mut Self::Context) -> Self::Result {
        let items = msg
            .items
            .into_iter()
            .map(|(item, delivery)| (item, Some(delivery)))
            .collect();
        self.append(items)
    }
}

impl QueueActor {
    /// Seals and stores each item (unless it is a relayed delivery queued before), then answers
    /// with their seqs once all are durable: one flush for them all.
    fn append(
        &mut self,
        items: Vec<(QueueItem, Option<[u8; 32]>)>,
    ) -> ResponseActFuture<Self, Result<Vec<u64>, QueueError>> {
        self.membership.touch();
        let appended = items
            .iter()
            .map(|(item, delivery)| {
                if let Some(delivery) = delivery {
                    if let Some(seq) = self.store.delivered(&self.client, delivery)? {
                        return Ok(seq);
                    }
                }
                let key = self.key()?;
                let seq = self.next_seq()?;
                let message = QueueMessage::seal(&key, &self.client, seq, item)?;
                self.store
                    .append(&self.client, &message, delivery.as_ref())?;
                self.next_seq = Some(seq + 1);
                Ok::<_, QueueError>(seq)
            })
            .collect::<Result<Vec<u64>, QueueError>>();
        let durability = self.deps.durability.clone();
        Box::pin(
            async move {
                let seqs = appended?;
                durability.persist().await?;
                Ok(seqs)
            }
            .into_actor(self)
            .map(|outcome, actor, _ctx| {
                if let Some(&last) = outcome.as_ref().ok().and_then(|seqs| seqs.iter().max()) {
                    actor.mark_durable(last);
                }
                outcome
            }),
        )
    }
}

impl Handler<Fetch> for QueueActor {
    type Result = ResponseFuture<Result<QueueBatch, QueueError>>;

    fn handle(&mut self, fetch: Fetch, _ctx: &mut Self::Context) -> Self::Result {
        self.membership.touch();
        let immediate = self.key().and_then(|_| {
            self.next_seq()?;
            self.batch(fetch.from, fetch.max)
        });
        match immediate {
            Ok(batch) if batch.messages.is_empty() && !fetch.wait.is_zero() => {
                let (reply, answer) = oneshot::channel();
                self.waiters.push(Waiter {
                    from: fetch.from,
                    max: fetch.max,
                    reply,
                });
                Box::pin(async move {
                    match tokio::time::timeout(fetch.wait, answer).await {
                        Ok(Ok(batch)) => batch,
                        // Timed out, or the actor went away: nothing arrived.
                        _ => Ok(QueueBatch {
                            messages: Vec::new(),
                            has_more: false,
                        }),
                    }
                })
            }
            other => Box::pin(async move { other }),
        }
    }
}

impl Handler<Ack> for QueueActor {
    type Result = ResponseFuture<Result<(), QueueError>>;

    fn handle(&mut self, ack: Ack, _ctx: &mut Self::Context) -> Self::Result {
        self.membership.touch();
        let removed = self
            .key()
            .and_then(|_| Ok(self.store.ack(&self.client, ack.up_to)?));
        let durability = self.deps.durability.clone();
        Box::pin(async move {
            removed?;
            durability.persist().await?;
            Ok(())
        })
    }
}

impl Handler<DeleteQueue> for QueueActor {
    type Result = ResponseFuture<Result<(), QueueError>>;

    fn handle(&mut self, _: DeleteQueue, _ctx: &mut Self::Context) -> Self::Result {
        self.membership.touch();
        self.key = None;
        self.next_seq = None;
        for waiter in self.waiters.drain(..) {
            let _ = waiter.reply.send(Err(QueueError::UnknownQueue));
        }
        let deleted = self.store.delete(&self.client);
        let durability = self.deps.durability.clone();
        Box::pin(async move {
            deleted?;
            durability.persist().await?;
            Ok(())
        })
    }
}
