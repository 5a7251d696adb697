//! The queue actor: one per client queue — a client's message queue (QS) or its connection
//! queue (AS); both behave alike and differ only in where they are stored.
//!
//! Owns a queue's sequence counter, its usage (messages and bytes, held against its
//! [`QueueLimits`]) and its waiting fetches. Sequence numbers are allocated here and nowhere
//! else; a message is visible to fetches only once it is durable, so a crash can never take back
//! a message a client has seen. A fetch answers at most [`MAX_FETCH_BYTES`] beyond its first
//! message, so any queue can be read by its client however large its messages.
//!
//! It also owns the queue's key chain ([`QueueChain`]), in memory only: each message is sealed
//! under the chain's next key, and a chain starts afresh (one HPKE seal to the client's queue
//! key) when the actor starts, after a failed store, and every [`CHAIN_LENGTH`] messages. No key
//! that opens a queued message is written to the store.

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use roost_protocol::{
    api::{Notice, QueueBatch, QueueItem, QueueKind, QueueMessage, MAX_FETCH_BYTES},
    queue::{QueueChain, CHAIN_LENGTH},
    ClientId, HpkePublicKey, Timestamp,
};
use roost_storage::{
    AccountStore, Durability, EncodedMessage, QueueStore, QueueUsage, StorageError,
};

use crate::{
    once_durable,
    pool::{pooled_messages, Membership, Pooled, Retire},
};

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("no such queue")]
    UnknownQueue,
    #[error("the message takes {size} bytes; this queue takes at most {limit} ({setting})")]
    MessageTooLarge {
        size: usize,
        limit: usize,
        setting: &'static str,
    },
    #[error("the queue is full: it holds {limit} {what}, the most it may ({setting}) until its client reads and acknowledges")]
    QueueFull {
        limit: u64,
        what: &'static str,
        setting: &'static str,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the queue's key is not usable: {0}")]
    Crypto(#[from] roost_protocol::crypto::CryptoError),
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

/// What one kind of queue may hold; the setting names are what an admin changes.
#[derive(Debug, Clone, Copy)]
pub struct KindLimits {
    /// Largest message, sealed and encoded.
    pub message_bytes: usize,
    pub max_messages: u64,
    pub max_bytes: u64,
    pub settings: LimitSettings,
}

/// The names of the settings behind a [`KindLimits`], for error messages.
#[derive(Debug, Clone, Copy)]
pub struct LimitSettings {
    pub message_bytes: &'static str,
    pub max_messages: &'static str,
    pub max_bytes: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub messages: KindLimits,
    pub connections: KindLimits,
    /// Fetches waiting on one queue at once; a further one answers the oldest (empty).
    pub long_polls: usize,
}

impl QueueLimits {
    fn of(&self, kind: QueueKind) -> KindLimits {
        match kind {
            QueueKind::Messages => self.messages,
            QueueKind::Connections => self.connections,
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
    pub limits: QueueLimits,
    /// Set when the server stops: from then on no fetch waits, in queues old or new.
    pub closing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub idle_after: Duration,
    /// How long a message may wait for its client, if not for ever.
    pub retention: Option<MessageRetention>,
}

/// How long a message may wait for its client, and how coarsely queues are dated for it
/// (see `crate::retention`).
#[derive(Debug, Clone, Copy)]
pub struct MessageRetention {
    pub after_secs: u64,
    pub period_secs: u64,
}

/// Append an item; answers with its sequence number once it is durable.
#[derive(Message)]
#[rtype(result = "Result<u64, QueueError>")]
pub struct Enqueue(pub QueueItem);

/// Append items in order, each with a delivery id once per that id (see
/// `FederatedDelivery::dedup_key`): a retried delivery gets the seq of the first. Answers once
/// all are durable with an outcome per item: its seq, or the limit that refused it.
#[derive(Message)]
#[rtype(result = "Result<Vec<Result<u64, QueueError>>, QueueError>")]
pub struct EnqueueMany {
    pub items: Vec<(QueueItem, Option<[u8; 32]>)>,
}

/// [`EnqueueMany`] that answers once the items are *stored*: not yet durable, so no fetch sees
/// them. The caller makes them durable with one flush for all the queues of its call, then says
/// so with [`Durable`]. (The QS's deliveries by sealed reference,
/// [`crate::qs::SealedDelivery`], come this way: a fan-out to ten queues costs one flush, not
/// ten.)
#[derive(Message)]
#[rtype(result = "Result<Vec<Result<u64, QueueError>>, QueueError>")]
pub struct StoreMany {
    pub items: Vec<(QueueItem, Option<[u8; 32]>)>,
}

/// Everything up to `up_to` is durable (a flush after a [`StoreMany`] succeeded): fetches
/// may see it, and waiting ones wake.
#[derive(Message)]
#[rtype(result = "Result<(), QueueError>")]
pub struct Durable {
    pub up_to: u64,
}

/// Messages with `seq >= from`, at most `max`; waits up to `wait` for the first one. With
/// `ack`, first deletes every message with `seq <= ack` (durable with the next flush: the
/// answer does not wait for it, and a deletion a crash takes back only returns messages the
/// client has read).
#[derive(Message)]
#[rtype(result = "Result<QueueBatch, QueueError>")]
pub struct Fetch {
    pub from: u64,
    pub max: u32,
    pub wait: Duration,
    pub ack: Option<u64>,
}

/// Delete every message with `seq <= up_to`; answers once that is durable.
#[derive(Message)]
#[rtype(result = "Result<(), QueueError>")]
pub struct Ack {
    pub up_to: u64,
}

/// The server is stopping (and has set [`QueueDeps::closing`], so no later fetch waits): answer
/// every waiting fetch now, empty, so that stopping waits for no long poll.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Closing;

/// Delete the whole queue (its client was deleted).
#[derive(Message)]
#[rtype(result = "Result<(), QueueError>")]
pub struct DeleteQueue;

/// Drop the messages that waited longer than the retention allows at `now`; a message queue's
/// client is then told how many, by a notice. Answers how many were dropped, once durable.
#[derive(Message)]
#[rtype(result = "Result<u64, QueueError>")]
pub struct ExpireMessages {
    pub now: Timestamp,
}

struct Waiter {
    from: u64,
    max: u32,
    reply: oneshot::Sender<Result<QueueBatch, QueueError>>,
}

pub struct QueueActor {
    client: ClientId,
    kind: QueueKind,
    store: QueueStore,
    limits: KindLimits,
    /// What the queue holds, durable or not; loaded with the counter.
    usage: QueueUsage,
    deps: QueueDeps,
    /// Highest sequence number known to be on disk; fetches see nothing beyond it.
    durable_up_to: u64,
    next_seq: Option<u64>,
    key: Option<HpkePublicKey>,
    /// The key chain for the message `next_seq`, and the seq its chain started at.
    chain: Option<(QueueChain, u64)>,
    /// The retention period (counted from the epoch) the queue was last dated in.
    dated_in: Option<u64>,
    waiters: Vec<Waiter>,
    membership: Membership<QueueActor>,
}

pooled_messages!(QueueActor: Enqueue, EnqueueMany, StoreMany, Durable, Fetch, Ack, Closing, DeleteQueue, ExpireMessages);

impl Pooled for QueueActor {
    type Key = QueueId;
    type Deps = QueueDeps;
    const KIND: &'static str = "queue";

    fn new(id: QueueId, deps: &QueueDeps, membership: Membership<Self>) -> Self {
        let store = match id.kind {
            QueueKind::Messages => deps.queues.clone(),
            QueueKind::Connections => deps.connection_queues.clone(),
        };
        QueueActor {
            client: id.client,
            kind: id.kind,
            store,
            limits: deps.limits.of(id.kind),
            usage: QueueUsage::default(),
            deps: deps.clone(),
            durable_up_to: 0,
            next_seq: None,
            key: None,
            chain: None,
            dated_in: None,
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
        self.usage = self.store.usage(&self.client)?;
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
        let (messages, more) = self
            .store
            .range(&self.client, from, visible, MAX_FETCH_BYTES)?;
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
                .map(|outcomes, _, _| outcomes?.pop().expect("one outcome for one item")),
        )
    }
}

impl Handler<EnqueueMany> for QueueActor {
    type Result = ResponseActFuture<Self, Result<Vec<Result<u64, QueueError>>, QueueError>>;

    fn handle(&mut self, msg: EnqueueMany, _ctx: &mut Self::Context) -> Self::Result {
        self.append(msg.items)
    }
}

impl Handler<StoreMany> for QueueActor {
    type Result = Result<Vec<Result<u64, QueueError>>, QueueError>;

    fn handle(&mut self, msg: StoreMany, _ctx: &mut Self::Context) -> Self::Result {
        self.store_all(&msg.items)
    }
}

impl Handler<Durable> for QueueActor {
    type Result = Result<(), QueueError>;

    fn handle(&mut self, msg: Durable, _ctx: &mut Self::Context) -> Self::Result {
        self.mark_durable(msg.up_to);
        Ok(())
    }
}

impl QueueActor {
    /// Seals and stores each item (unless it is a relayed delivery queued before), then answers
    /// once all are durable (one flush for them all) with an outcome per item: its seq, or the
    /// limit it broke. A storage failure fails them all.
    fn append(
        &mut self,
        items: Vec<(QueueItem, Option<[u8; 32]>)>,
    ) -> ResponseActFuture<Self, Result<Vec<Result<u64, QueueError>>, QueueError>> {
        let appended = self.store_all(&items);
        Box::pin(
            once_durable(&self.deps.durability, appended)
                .into_actor(self)
                .map(|outcome, actor, _ctx| {
                    let outcomes = outcome.as_ref().ok().into_iter().flatten();
                    if let Some(last) = outcomes.filter_map(|o| o.as_ref().ok()).max() {
                        actor.mark_durable(*last);
                    }
                    outcome
                }),
        )
    }

    /// Seals and stores each item, not waiting for a flush: an outcome per item.
    fn store_all(
        &mut self,
        items: &[(QueueItem, Option<[u8; 32]>)],
    ) -> Result<Vec<Result<u64, QueueError>>, QueueError> {
        let mut sealed = Vec::new();
        let appended = items
            .iter()
            .map(|(item, delivery)| self.seal_one(item, delivery.as_ref(), &mut sealed))
            .collect::<Result<Vec<_>, QueueError>>()
            .and_then(|outcomes| {
                self.store.append_all(&self.client, sealed)?;
                Ok(outcomes)
            });
        if appended.is_err() {
            // The store failed part-way: count and usage are read again on the next use, and
            // the chain starts afresh.
            self.next_seq = None;
            self.chain = None;
        }
        appended
    }

    /// Seals one item and adds it to `sealed`, which [`store_all`](Self::store_all) then
    /// stores: `Ok(Ok(seq))`, or `Ok(Err(_))` when it breaks a limit (nothing added), or
    /// `Err(_)` when the store fails.
    fn seal_one(
        &mut self,
        item: &QueueItem,
        delivery: Option<&[u8; 32]>,
        sealed: &mut Vec<(EncodedMessage, Option<[u8; 32]>)>,
    ) -> Result<Result<u64, QueueError>, QueueError> {
        if let Some(delivery) = delivery {
            let earlier = sealed.iter().find(|(_, d)| d.as_ref() == Some(delivery));
            if let Some((message, _)) = earlier {
                return Ok(Ok(message.seq()));
            }
            if let Some(seq) = self.store.delivered(&self.client, delivery)? {
                return Ok(Ok(seq));
            }
        }
        let key = self.key()?;
        let seq = self.next_seq()?;
        self.date(seq)?;
        let (chain, started) = match &self.chain {
            Some((chain, started)) if chain.seq() == seq && seq - started < CHAIN_LENGTH => {
                (chain.clone(), *started)
            }
            _ => (QueueChain::start(seq), seq),
        };
        let starts_chain = (started == seq).then_some(&key);
        let message = EncodedMessage::new(&QueueMessage::seal(
            &chain,
            starts_chain,
            &self.client,
            item,
        )?);
        // A refused message leaves the chain where it was: its key seals the next message
        // instead, and the refused ciphertext is dropped unseen.
        if let Err(refused) = self.admit(message.len()) {
            return Ok(Err(refused));
        }
        sealed.push((message, delivery.copied()));
        self.next_seq = Some(seq + 1);
        self.chain = Some((chain.next(), started));
        Ok(Ok(seq))
    }
}

impl QueueActor {
    /// Counts a message of `size` bytes in, unless it breaks a limit.
    fn admit(&mut self, size: usize) -> Result<(), QueueError> {
        let limits = &self.limits;
        if size > limits.message_bytes {
            return Err(QueueError::MessageTooLarge {
                size,
                limit: limits.message_bytes,
                setting: limits.settings.message_bytes,
            });
        }
        if self.usage.messages >= limits.max_messages {
            return Err(QueueError::QueueFull {
                limit: limits.max_messages,
                what: "messages",
                setting: limits.settings.max_messages,
            });
        }
        if self.usage.bytes + size as u64 > limits.max_bytes {
            return Err(QueueError::QueueFull {
                limit: limits.max_bytes,
                what: "bytes",
                setting: limits.settings.max_bytes,
            });
        }
        self.usage.add(size);
        Ok(())
    }
}

impl Handler<Fetch> for QueueActor {
    type Result = ResponseFuture<Result<QueueBatch, QueueError>>;

    fn handle(&mut self, fetch: Fetch, _ctx: &mut Self::Context) -> Self::Result {
        let immediate = self.key().and_then(|_| {
            self.next_seq()?;
            if let Some(up_to) = fetch.ack {
                self.delete_up_to(up_to)?;
            }
            self.batch(fetch.from, fetch.max)
        });
        match immediate {
            Ok(batch)
                if batch.messages.is_empty()
                    && !fetch.wait.is_zero()
                    && !self.deps.closing.load(std::sync::atomic::Ordering::SeqCst) =>
            {
                self.waiters.retain(|w| !w.reply.is_closed());
                if self.waiters.len() >= self.deps.limits.long_polls {
                    // The oldest poll gets its (empty) answer now rather than a client being
                    // refused: a client that reconnects leaves its old poll behind.
                    let oldest = self.waiters.remove(0);
                    let _ = oldest.reply.send(Ok(QueueBatch {
                        messages: Vec::new(),
                        has_more: false,
                    }));
                }
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
        let removed = self.key().and_then(|_| {
            self.next_seq()?;
            self.delete_up_to(ack.up_to).map(drop)
        });
        once_durable(&self.deps.durability, removed)
    }
}

impl QueueActor {
    /// Deletes every message with `seq <= up_to` (not waiting for a flush); answers how many.
    fn delete_up_to(&mut self, up_to: u64) -> Result<u64, QueueError> {
        let freed = self.store.ack(&self.client, up_to)?;
        self.usage.remove(freed);
        Ok(freed.messages)
    }

    /// Message `seq` is about to be sealed: dates the queue, once per retention period and
    /// before the message is written (a crash between leaves a mark no message follows yet,
    /// which dates nothing wrongly). A new mark starts a new key chain, so that every mark is
    /// where a chain starts: when retention drops the messages before a mark, what is kept
    /// opens without them.
    fn date(&mut self, seq: u64) -> Result<(), QueueError> {
        let Some(retention) = self.deps.retention else {
            return Ok(());
        };
        let now = Timestamp::now();
        let period_secs = retention.period_secs;
        let period = now.0 / period_secs;
        if self.dated_in != Some(period) {
            if self
                .store
                .ages()
                .note(&self.client, now, period_secs, seq)?
            {
                self.chain = None;
            }
            self.dated_in = Some(period);
        }
        Ok(())
    }

    /// Drops what waited past the retention at `now`; answers how many messages.
    fn drop_expired(&mut self, now: Timestamp) -> Result<u64, QueueError> {
        let Some(retention) = self.deps.retention else {
            return Ok(0);
        };
        self.key()?;
        let next = self.next_seq()?;
        let cutoff = Timestamp(now.0.saturating_sub(retention.after_secs));
        let period = retention.period_secs;
        let ages = self.store.ages().clone();
        let Some(expired) = ages.expired(&self.client, cutoff, period)? else {
            return Ok(0);
        };
        let dropped = self.delete_up_to(expired.keep_from.unwrap_or(next) - 1)?;
        ages.forget_marks(&self.client, &expired.marks)?;
        if dropped > 0 {
            // The chain may have started in what was dropped: the next message starts another.
            self.chain = None;
        }
        Ok(dropped)
    }
}

impl Handler<ExpireMessages> for QueueActor {
    type Result = ResponseActFuture<Self, Result<u64, QueueError>>;

    fn handle(&mut self, msg: ExpireMessages, _ctx: &mut Self::Context) -> Self::Result {
        match self.drop_expired(msg.now) {
            Ok(count) if count > 0 && self.kind == QueueKind::Messages => {
                let notice = Notice::MessagesExpired {
                    count,
                    after_secs: self.deps.retention.map_or(0, |r| r.after_secs),
                };
                // Durable with the notice; a notice a full queue refuses is not worth failing
                // the drop for.
                Box::pin(
                    self.append(vec![(QueueItem::Notice(notice), None)])
                        .map(move |appended, _, _| appended.map(|_| count)),
                )
            }
            other => Box::pin(once_durable(&self.deps.durability, other).into_actor(self)),
        }
    }
}

impl Handler<Closing> for QueueActor {
    type Result = ();

    fn handle(&mut self, _: Closing, _ctx: &mut Self::Context) {
        for waiter in self.waiters.drain(..) {
            let _ = waiter.reply.send(Ok(QueueBatch {
                messages: Vec::new(),
                has_more: false,
            }));
        }
    }
}

impl Handler<DeleteQueue> for QueueActor {
    type Result = ResponseFuture<Result<(), QueueError>>;

    fn handle(&mut self, _: DeleteQueue, _ctx: &mut Self::Context) -> Self::Result {
        self.key = None;
        self.chain = None;
        self.next_seq = None;
        self.usage = QueueUsage::default();
        for waiter in self.waiters.drain(..) {
            let _ = waiter.reply.send(Err(QueueError::UnknownQueue));
        }
        let deleted = self.store.delete(&self.client).map_err(QueueError::from);
        once_durable(&self.deps.durability, deleted)
    }
}
