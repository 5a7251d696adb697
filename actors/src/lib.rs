//! Roost's actors: each piece of mutable server state has exactly one actor that owns it.
//!
//! Owns, each kind in a [`pool::Pool`] of one actor per key: the queue actors (a client's
//! message queue or connection queue), the connection-package registry actors (one per user),
//! the QS key-package actors (one per user) and the DS group actors (one per group, validating
//! commits against the public MLS state), the federation actors (one per remote domain, owning
//! its part of the relay outbox); plus the single accounts actor (users, clients, registration
//! tokens, credential issuing). The QS's deliveries by sealed queue reference, the DS's and
//! relayed ones alike, take one path into the queue actors: [`qs::SealedDelivery`]. Four
//! owners are shared instead of being actors, because the front end must ask them without
//! waiting in a mailbox: the [`replay::ReplayGuard`] (request signatures already accepted), the
//! read-only [`directory::Directory`] (whose a client or a friendship token is), the
//! [`federation_policy::FederationPolicy`] (which domains may federate, with an admin's blocks)
//! the [`activity::ActivityRecorder`] (when each client was last seen) and the [`sweeps`] of
//! records that only age; and the [`keys::KeyRing`], the signing keys in force, which an admin
//! rotates. The [`retention`] sweep owns nothing: it asks the owners (the queue actors, the
//! accounts actor) to remove what is past its time.
//! Must not touch: HTTP (requests arrive as typed messages from the server's front-end, and
//! relaying goes through a `federation::Transport` the server provides) or the on-disk layout
//! (that is `roost_storage`'s).

pub mod accounts;
pub mod activity;
pub mod compute;
pub mod directory;
pub mod federation;
pub mod federation_policy;
pub mod group;
pub mod key_packages;
pub mod keys;
pub mod passwords;
pub mod pool;
pub mod qs;
pub mod queue;
pub mod registry;
pub mod replay;
pub mod retention;
pub mod sweeps;
pub mod tokens;

pub use key_packages::KeyPackageActor;
pub use pool::{name_this_thread, Ask, AskError, Call, Pool, Route, WorkerThreads, Workers};
pub use queue::QueueActor;
pub use registry::RegistryActor;

use roost_storage::{Durability, StorageError};

/// Answers with `outcome` once everything written so far is durable; an error at once.
pub(crate) fn once_durable<T: 'static, E: From<StorageError> + 'static>(
    durability: &Durability,
    outcome: Result<T, E>,
) -> actix::ResponseFuture<Result<T, E>> {
    let durability = durability.clone();
    Box::pin(async move {
        let value = outcome?;
        durability.persist().await?;
        Ok(value)
    })
}
