//! Roost's actors: each piece of mutable server state has exactly one actor that owns it.
//!
//! Owns: the queue actors (one per client queue, in a [`pool::Pool`]) and the accounts actor
//! (users, clients, registration tokens, credential issuing). Must not touch: HTTP (requests
//! arrive as typed messages from the server's front-end) or the on-disk layout (that is
//! `roost_storage`'s).

pub mod accounts;
pub mod pool;
pub mod queue;
pub mod registry;

pub use pool::{Pool, Route};
pub use queue::QueueActor;
pub use registry::RegistryActor;
