//! The Roost client: a library and the `roost-client` command line.
//!
//! Owns: the client's persistent state (identity, secret keys, credential, queue position) in a
//! sled store under a state directory ([`state`]); the HTTP calls to a homeserver, signed where
//! the API requires it ([`server`]); the high-level operations a device performs: register,
//! add a client, list and delete clients, send to its own clients and read its queue
//! ([`Client`]); discovery and connection requests up to the user's decision, with the keys of
//! the connection packages it published ([`connections`]); the command line ([`cli`]); and the
//! persistent MLS state, an openmls storage provider over a sled tree with all-or-nothing writes
//! per operation ([`mls_storage`]).
//!
//! Must not touch: the server's crates or stores, or any wire format of its own. Every type on
//! the wire and every encoding comes from `roost_protocol` (its `codec` is the only encoding,
//! locally too, with one exception: [`mls_storage`] stores openmls's own values with serde_json,
//! the encoding openmls's serde implementations are written and tested for), so server and
//! client cannot drift apart. Secret keys never leave the state directory.

pub mod chat;
pub mod cli;
pub mod client;
pub mod connections;
pub mod error;
pub mod friendship;
pub mod groups;
pub mod mls_storage;
pub mod named_groups;
pub mod server;
pub mod state;

pub use client::{fetch_as_credentials, verify_with, Client, ClientEntry, Received, WhoAmI};
pub use connections::{verify_packages, ConnectionRequests, RejectReason, Rejected};
pub use error::{Error, PackageProblem};
pub use groups::{Accepted, Connected, GroupStatus, JoinedVia, SyncReport};
pub use named_groups::GroupSummary;
pub use server::{Queue, QueueKind, Server, ServerError, Signer};
pub use state::{
    Contact, GroupAccess, Identity, NamedGroup, PendingRequest, QueuePosition, State, StateError,
    StoredMessage,
};
