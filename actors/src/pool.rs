//! A pool of keyed actors: one actor per key, started on first use, stopped when idle.
//!
//! All messages for a pooled actor go through its [`Pool`], which counts what it forwarded. An
//! idle actor reports how many messages it handled; the pool retires it only if that equals
//! what it forwarded, so no message can be in flight to a retiring actor, and a fresh actor for
//! the same key never runs beside an old one. State lives in the store, so a retired actor
//! loses nothing.
//!
//! The pool, not each handler, counts what an actor handled: it forwards every message wrapped
//! in [`Routed`], and `pooled_messages!` gives each actor one handler per message kind that
//! counts the message and then runs the actor's own handler for it.
//!
//! A pool's actors run on its [`Workers`]: the actix system thread, or threads of their own
//! (each key always on the same one), so that slow work of one kind (MLS validation, sealing a
//! fan-out) neither waits for nor holds up the actors of another.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    time::{Duration, Instant},
};

use actix::prelude::*;
use futures_util::FutureExt;

/// An actor that lives in a [`Pool`], one per key.
pub trait Pooled: Actor<Context = Context<Self>> {
    type Key: Clone + Eq + Hash + Unpin + Send + std::fmt::Debug + 'static;
    /// What every actor of the pool is built from (store handles, settings).
    type Deps: Clone + Unpin + Send + 'static;
    /// What the actors are, as the `kind` label of the `roost_actors_alive` metric.
    const KIND: &'static str;

    fn new(key: Self::Key, deps: &Self::Deps, membership: Membership<Self>) -> Self;

    /// Whether the actor holds nothing that would be lost by stopping it (e.g. waiting
    /// requests). Stored state does not count: it survives. By default it never holds anything.
    fn is_idle(&self) -> bool {
        true
    }

    fn membership(&mut self) -> &mut Membership<Self>;
}

/// What a pooled actor keeps about its place in the pool.
pub struct Membership<A: Pooled> {
    key: A::Key,
    generation: u64,
    handled: u64,
    last_active: Instant,
    idle_after: Duration,
    pool: Addr<Pool<A>>,
}

impl<A: Pooled> Membership<A> {
    /// Counts a message that came through the pool (see `pooled_messages!`).
    pub fn touch(&mut self) {
        self.handled += 1;
        self.last_active = Instant::now();
    }

    pub fn key(&self) -> &A::Key {
        &self.key
    }

    /// Starts the idle check; call from `Actor::started`.
    pub fn watch_idleness(ctx: &mut Context<A>, idle_after: Duration)
    where
        A: Handler<Retire>,
    {
        ctx.run_interval(idle_after / 2, |actor, _ctx| {
            if !actor.is_idle() {
                return;
            }
            let membership = actor.membership();
            if membership.last_active.elapsed() >= membership.idle_after {
                membership.pool.do_send(IdleReport {
                    key: membership.key.clone(),
                    generation: membership.generation,
                    handled: membership.handled,
                });
            }
        });
    }
}

/// Sent by the pool to an actor it has retired; the actor must stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

/// Implements `Actor` (starting the idle check) and `Handler<Retire>` (stopping) for a pooled
/// actor that needs nothing else at start; its `deps` must have an `idle_after`.
macro_rules! pooled_actor {
    ($actor:ty) => {
        impl actix::Actor for $actor {
            type Context = actix::Context<Self>;

            fn started(&mut self, ctx: &mut Self::Context) {
                $crate::pool::Membership::watch_idleness(ctx, self.deps.idle_after);
            }
        }

        impl actix::Handler<$crate::pool::Retire> for $actor {
            type Result = ();
            fn handle(&mut self, _: $crate::pool::Retire, ctx: &mut Self::Context) {
                actix::ActorContext::stop(ctx);
            }
        }
    };
}
pub(crate) use pooled_actor;

/// A message as the pool forwards it to an actor; answered as the message itself is.
pub struct Routed<M>(pub M);

impl<M: Message> Message for Routed<M> {
    type Result = M::Result;
}

/// For each message kind a pooled actor takes through its pool, a handler of [`Routed`] that
/// counts it in the actor's [`Membership`] and then runs the actor's own handler. Every message
/// the pool forwards must be listed, or it does not compile.
macro_rules! pooled_messages {
    ($actor:ty: $($message:ty),+ $(,)?) => {
        $(
            impl actix::Handler<$crate::pool::Routed<$message>> for $actor {
                type Result = <$actor as actix::Handler<$message>>::Result;

                fn handle(
                    &mut self,
                    routed: $crate::pool::Routed<$message>,
                    ctx: &mut Self::Context,
                ) -> Self::Result {
                    $crate::pool::Pooled::membership(self).touch();
                    <$actor as actix::Handler<$message>>::handle(self, routed.0, ctx)
                }
            }
        )+
    };
}
pub(crate) use pooled_messages;

#[derive(Message)]
#[rtype(result = "()")]
struct IdleReport<K> {
    key: K,
    generation: u64,
    handled: u64,
}

/// A message for the actor of `key`.
pub struct Route<K, M> {
    pub key: K,
    pub message: M,
}

impl<K, M: Message> Message for Route<K, M>
where
    M::Result: Send,
{
    type Result = Result<M::Result, MailboxError>;
}

struct Entry<A: Actor> {
    addr: Addr<A>,
    generation: u64,
    forwarded: u64,
}

/// The threads a pool's actors run on.
#[derive(Clone)]
pub struct Workers {
    arbiters: Vec<ArbiterHandle>,
}

impl Workers {
    /// The calling thread's arbiter (the actix system thread, where the server starts them).
    pub fn current() -> Workers {
        Workers {
            arbiters: vec![Arbiter::current()],
        }
    }

    /// `count` (at least one) threads of their own, called `name` (what a profile or
    /// `roost-load` sees); they run until [`WorkerThreads::stop`].
    pub fn spawn(count: usize, name: &'static str) -> (Workers, WorkerThreads) {
        let threads: Vec<Arbiter> = (0..count.max(1))
            .map(|_| {
                let arbiter = Arbiter::new();
                arbiter.spawn_fn(move || name_this_thread(name));
                arbiter
            })
            .collect();
        let workers = Workers {
            arbiters: threads.iter().map(Arbiter::handle).collect(),
        };
        (workers, WorkerThreads(threads))
    }

    fn for_key(&self, key: &impl Hash) -> &ArbiterHandle {
        let mut hasher = std::hash::DefaultHasher::new();
        key.hash(&mut hasher);
        &self.arbiters[(hasher.finish() % self.arbiters.len() as u64) as usize]
    }
}

/// Names the calling thread (Linux: what `/proc/PID/task/TID/comm` shows, at most 15 bytes), so
/// a profile or `roost-load` can tell the server's stages apart by thread. Elsewhere, or if the
/// kernel refuses, the thread keeps the name it had.
pub fn name_this_thread(name: &str) {
    let name: String = name.chars().take(15).collect();
    let _ = std::fs::write("/proc/thread-self/comm", name);
}

/// Owns threads made by [`Workers::spawn`].
pub struct WorkerThreads(Vec<Arbiter>);

impl WorkerThreads {
    /// Stops the threads once they have handled what they hold, and waits for them.
    pub fn stop(self) {
        for arbiter in &self.0 {
            arbiter.stop();
        }
        for arbiter in self.0 {
            let _ = arbiter.join();
        }
    }
}

pub struct Pool<A: Pooled> {
    deps: A::Deps,
    idle_after: Duration,
    workers: Workers,
    actors: HashMap<A::Key, Entry<A>>,
    next_generation: u64,
}

impl<A: Pooled> Pool<A> {
    /// A pool whose actors run on the calling thread's arbiter.
    pub fn start(deps: A::Deps, idle_after: Duration) -> Addr<Self> {
        Pool::start_on(deps, idle_after, Workers::current())
    }

    /// A pool whose actors run on `workers`.
    pub fn start_on(deps: A::Deps, idle_after: Duration, workers: Workers) -> Addr<Self> {
        Pool {
            deps,
            idle_after,
            workers,
            actors: HashMap::new(),
            next_generation: 0,
        }
        .start()
    }

    fn entry(&mut self, key: A::Key, pool: Addr<Self>) -> &mut Entry<A> {
        let (deps, idle_after, workers, next_generation) = (
            &self.deps,
            self.idle_after,
            &self.workers,
            &mut self.next_generation,
        );
        self.actors.entry(key.clone()).or_insert_with(|| {
            *next_generation += 1;
            let generation = *next_generation;
            let membership = Membership {
                key: key.clone(),
                generation,
                handled: 0,
                last_active: Instant::now(),
                idle_after,
                pool,
            };
            let arbiter = workers.for_key(&key);
            let deps = deps.clone();
            Self::alive().increment(1.0);
            Entry {
                addr: A::start_in_arbiter(arbiter, move |_| A::new(key, &deps, membership)),
                generation,
                forwarded: 0,
            }
        })
    }

    /// The `roost_actors_alive` gauge of this pool's kind.
    fn alive() -> metrics::Gauge {
        metrics::gauge!("roost_actors_alive", "kind" => A::KIND)
    }
}

impl<A: Pooled> Actor for Pool<A> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Every request for a pooled actor passes through here; do not push back on bursts.
        ctx.set_mailbox_capacity(1 << 16);
    }
}

impl<A, M> Handler<Route<A::Key, M>> for Pool<A>
where
    A: Pooled + Handler<Routed<M>>,
    M: Message + Send + 'static,
    M::Result: Send,
{
    type Result = ResponseFuture<Result<M::Result, MailboxError>>;

    fn handle(&mut self, route: Route<A::Key, M>, ctx: &mut Self::Context) -> Self::Result {
        let entry = self.entry(route.key, ctx.address());
        entry.forwarded += 1;
        // `send` enqueues now, in the pool's order; the future only waits for the answer.
        entry.addr.send(Routed(route.message)).boxed_local()
    }
}

impl<A: Pooled + Handler<Retire>> Handler<IdleReport<A::Key>> for Pool<A> {
    type Result = ();

    fn handle(&mut self, report: IdleReport<A::Key>, _ctx: &mut Self::Context) {
        let quiet = self.actors.get(&report.key).is_some_and(|entry| {
            entry.generation == report.generation && entry.forwarded == report.handled
        });
        if quiet {
            if let Some(entry) = self.actors.remove(&report.key) {
                tracing::trace!(key = ?report.key, "retiring an idle actor");
                entry.addr.do_send(Retire);
                Self::alive().decrement(1.0);
            }
        }
    }
}

/// `message` for every live actor (none is started for it), e.g. to wake them at shutdown.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ToEveryone<M>(pub M);

impl<A, M> Handler<ToEveryone<M>> for Pool<A>
where
    A: Pooled + Handler<Routed<M>>,
    M: Message + Clone + Send + 'static,
    M::Result: Send,
{
    type Result = ();

    fn handle(&mut self, ToEveryone(message): ToEveryone<M>, _: &mut Self::Context) {
        for entry in self.actors.values_mut() {
            entry.forwarded += 1;
            entry.addr.do_send(Routed(message.clone()));
        }
    }
}

/// Why a pooled actor gave no answer: it was not running (the server is stopping, or the
/// mailbox was full), or it answered with its own error.
#[derive(Debug, thiserror::Error)]
pub enum AskError<E> {
    #[error("the actor is not running (the server is stopping or overloaded)")]
    Unavailable,
    #[error(transparent)]
    Actor(E),
}

/// Asking a pooled actor with one error type: the pool's and the actor's mailbox errors fold
/// into [`AskError::Unavailable`], the actor's own error into [`AskError::Actor`].
pub trait Ask<A: Pooled> {
    fn ask<M, T, E>(
        &self,
        key: A::Key,
        message: M,
    ) -> impl std::future::Future<Output = Result<T, AskError<E>>>
    where
        A: Handler<Routed<M>>,
        M: Message<Result = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static;
}

impl<A: Pooled> Ask<A> for Addr<Pool<A>> {
    async fn ask<M, T, E>(&self, key: A::Key, message: M) -> Result<T, AskError<E>>
    where
        A: Handler<Routed<M>>,
        M: Message<Result = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        match self.send(Route { key, message }).await {
            Ok(Ok(answer)) => answer.map_err(AskError::Actor),
            Ok(Err(_)) | Err(_) => Err(AskError::Unavailable),
        }
    }
}

/// Calling a single actor (one not in a pool, such as the accounts actor) with one error type,
/// as [`Ask`] does for a pooled one.
pub trait Call<A: Actor> {
    fn call<M, T, E>(
        &self,
        message: M,
    ) -> impl std::future::Future<Output = Result<T, AskError<E>>>
    where
        A: Handler<M>,
        A::Context: actix::dev::ToEnvelope<A, M>,
        M: Message<Result = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static;
}

impl<A: Actor> Call<A> for Addr<A> {
    async fn call<M, T, E>(&self, message: M) -> Result<T, AskError<E>>
    where
        A: Handler<M>,
        A::Context: actix::dev::ToEnvelope<A, M>,
        M: Message<Result = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        match self.send(message).await {
            Ok(answer) => answer.map_err(AskError::Actor),
            Err(_) => Err(AskError::Unavailable),
        }
    }
}
