//! The Roost client: a library and the `roost-client` command line.
//!
//! The library is in layers; each module may use those above it in this list, never one below:
//!
//! | layer | modules | owns |
//! | --- | --- | --- |
//! | transport | [`transport`] | the homeserver's HTTP API, one method per endpoint; where each domain's homeserver is |
//! | local store | [`store`] | the state directory: one sled store, one module per record family |
//! | errors | [`error`] | the one error type of the features, with stable codes |
//! | the device | [`device`] | this client's identity, store and homeservers, shared by all below |
//! | MLS engine | [`mls`] | openmls and its storage; the only holder of group state, behind a lock guard (its [`mls::storage`], the openmls storage provider, uses nothing of this crate: the errors layer names its error) |
//! | queues | `queues` (crate-private) | reading a queue to its end, exactly once per message |
//! | the client | [`client`] | [`Client`]: the parts put together |
//! | features | [`account`], [`friendship`], `siblings`, [`inbox`], [`live`], [`chat`], [`groups`], [`connections`], [`profiles`] | what a user does, each behind a handle: `client.connections()`, `client.chat()`, `client.groups()`, …; `siblings` brings a user's new client into its groups at sync |
//! | command line | [`cli`], [`app`] | `roost-client`: arguments, running, rendering; `roost-client app`, the web interface on loopback |
//!
//! Must not touch: the server's crates or stores, or any wire format of its own. Every type on
//! the wire and every encoding comes from `roost_protocol` (its `codec` is the only encoding,
//! locally too, with one exception: [`mls::storage`] stores openmls's own values with
//! serde_json, the encoding openmls's serde implementations are written and tested for), so
//! server and client cannot drift apart. Secret keys never leave the state directory.

pub mod account;
pub mod app;
pub mod chat;
pub mod cli;
pub mod client;
pub mod connections;
pub mod device;
pub mod error;
pub mod friendship;
pub mod groups;
pub mod inbox;
pub mod live;
pub mod mls;
pub mod profiles;
pub(crate) mod queues;
mod siblings;
pub mod store;
pub mod tokens;
pub mod transport;
mod upkeep;

pub use account::{ClientEntry, KeyPackages, WhoAmI};
pub use chat::{Chat, Contacts};
pub use client::{Client, Setup, IDLE_AFTER_RENEWALS, LEAF_RENEWAL};
pub use connections::{
    verify_packages, Accepted, Connected, ConnectionRequests, Connections, JoinedVia, RejectReason,
    Rejected,
};
pub use device::Device;
pub use error::{Error, PackageProblem};
pub use groups::{GroupSummary, Groups};
pub use inbox::{Received, SyncReport};
pub use live::News;
pub use mls::GroupStatus;
pub use profiles::Profiles;
pub use store::{
    Contact, GroupAccess, Identity, NamedGroup, PendingRequest, QueuePosition, State, StateError,
    StoredMessage,
};
pub use transport::{
    fetch_as_credentials, verify_with, ExtraRoots, Homeservers, Queue, QueueKind, Server,
    ServerError, Signer, ToServer, TrustError,
};

/// Locks `mutex` even if a panic elsewhere poisoned it: what the client keeps under a plain
/// mutex (caches, sets of names, an overlay of writes) is whole after every step, so a panic
/// while it was held leaves nothing half-changed.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
