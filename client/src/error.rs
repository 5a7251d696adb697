//! The one error type of the high-level client, with stable codes for machine-readable output.

use roost_protocol::{
    connection::ConnectionError, credentials::ChainError, crypto::CryptoError, ClientId, UserName,
};

use crate::{
    mls::storage::MlsStorageError,
    store::StateError,
    transport::{ServerError, TrustError},
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Server(#[from] ServerError),
    /// A domain's AS credentials, or a credential checked against them, are not to be trusted
    /// (never [`TrustError::Server`]: a server's failure is [`Error::Server`]).
    #[error(transparent)]
    Trust(TrustError),
    /// The server issued a credential that is not the one this client asked for.
    #[error("the server issued a credential that does not match the request: {0}")]
    CredentialMismatch(String),
    /// The identity was not saved after the server registered it: the keys are lost.
    #[error("the server registered client {client_id} of {user}, but saving it locally failed (that client cannot be used; delete it from another client): {source}")]
    SaveAfterRegistration {
        user: UserName,
        client_id: ClientId,
        #[source]
        source: Box<StateError>,
    },
    /// A discovered connection package failed a check: the attempt to connect stops there.
    #[error(
        "the connection package of client {client_id} served for {user} is refused: {problem}"
    )]
    BadConnectionPackage {
        /// The user asked for.
        user: UserName,
        client_id: ClientId,
        problem: PackageProblem,
    },
    /// The user's AS served no connection package at all.
    #[error("{0} has no client that can be reached: its server offers no connection package")]
    NoReachableClients(UserName),
    /// No pending connection request has this id.
    #[error("no pending connection request has the id {0:?} (see `roost-client requests`)")]
    UnknownRequest(String),
    /// A connection request could not be sealed to its connection package.
    #[error("cannot seal the connection request: {0}")]
    Seal(CryptoError),
    /// The MLS store failed.
    #[error(transparent)]
    MlsStore(#[from] MlsStorageError),
    /// An MLS operation failed.
    #[error("MLS: {0}")]
    Mls(String),
    /// A commit of the group's current (or a later) epoch could not be processed: this client
    /// is no longer in step with the rest of the group, and rejoins it.
    #[error("a commit of the group could not be processed: {0}")]
    OutOfStep(String),
    /// A key-package entry of one of this user's other clients failed a check.
    #[error("the key package served for client {client_id} is refused: {reason}")]
    BadKeyPackage { client_id: ClientId, reason: String },
    /// The connection group named by a request is not what it should be.
    #[error("the connection group is refused: {0}")]
    BadConnectionGroup(String),
    /// Accepting a request failed for good (no Welcome from another client either); the
    /// request was discarded.
    #[error("cannot connect with {peer}: {reason}; no other client of this user accepted it either, so the request was discarded")]
    ConnectionFailed { peer: UserName, reason: String },
    #[error("a user cannot connect with itself")]
    ConnectToSelf,
    /// A profile this client would set, or one it fetched, breaks the rules.
    #[error("profile: {0}")]
    Profile(#[from] roost_protocol::profile::ProfileError),
    #[error("the connection request {0} carries no profile")]
    NoProfile(String),
    #[error("not connected with {0} (see `roost-client contacts`)")]
    NotConnected(UserName),
    /// The peer's friendship token has not arrived in the connection group yet.
    #[error("{0} has not shared a friendship token with you yet (it arrives once one of their clients syncs after the connection); try again later")]
    NoFriendshipToken(UserName),
    /// The user's QS served no key package: no client of theirs can be added.
    #[error("{0}'s server offers no key package, so none of their clients can be added")]
    NoKeyPackages(UserName),
    #[error("no group is called {0:?} (see `roost-client groups`)")]
    UnknownGroup(String),
    #[error(
        "{name:?} names {count} groups; use the group's id instead (see `roost-client groups`)"
    )]
    AmbiguousGroup { name: String, count: usize },
    #[error("this client was removed from the group {0:?}")]
    RemovedFromGroup(String),
    #[error("{0} is a member of the group already")]
    AlreadyMember(UserName),
    #[error("{0} is not a member of the group")]
    NotAMember(UserName),
    #[error("a client cannot remove its own user from a group")]
    RemoveSelf,
    #[error("bad group name: {0}")]
    BadGroupName(&'static str),
    /// A change to a group went out but its DS did not answer: it is kept, and the next sync
    /// learns what became of it (sending the same bytes again, never new ones).
    #[error("{0}; the change is kept and completed by the next sync")]
    Unconfirmed(Box<Error>),
    /// An earlier change to the group still awaits its DS's answer (the next sync settles
    /// it): a new one would run ahead of it, so nothing was done.
    #[error(
        "an earlier change to this group still awaits its server's answer; try again after a sync"
    )]
    EarlierChangePending,
}

impl From<TrustError> for Error {
    fn from(e: TrustError) -> Self {
        match e {
            TrustError::Server(e) => Error::Server(e),
            untrusted => Error::Trust(untrusted),
        }
    }
}

impl Error {
    /// A failure that may pass (the network, an overloaded server): the outcome of a check
    /// must not depend on it, and whatever it interrupted is tried again later.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Server(e) => e.is_transient(),
            Error::Unconfirmed(_) | Error::EarlierChangePending => true,
            Error::State(StateError::Interrupted(_)) => true,
            _ => false,
        }
    }

    /// A stable, machine-readable code naming the failure, e.g. `not_registered`.
    pub fn code(&self) -> &str {
        match self {
            Error::State(e) => match e {
                StateError::NotRegistered(_) => "not_registered",
                StateError::AlreadyRegistered { .. } => "already_registered",
                StateError::UnsupportedFormat { .. } | StateError::NotAStateDir(_) => {
                    "state_format"
                }
                StateError::Corrupt { .. } => "state_corrupt",
                StateError::Locked(_) => "state_locked",
                StateError::Store { .. } | StateError::Io { .. } => "state_io",
                StateError::Interrupted(_) => "internal",
            },
            Error::Server(e) => e.code(),
            Error::Unconfirmed(_) => "unconfirmed",
            Error::EarlierChangePending => "earlier_change_pending",
            Error::Trust(TrustError::Chain { .. }) => "bad_credential",
            Error::Trust(TrustError::WrongDomain { .. }) => "wrong_domain",
            Error::Trust(TrustError::Server(e)) => e.code(),
            Error::CredentialMismatch(_) => "credential_mismatch",
            Error::SaveAfterRegistration { .. } => "save_failed",
            Error::BadConnectionPackage { .. } => "bad_connection_package",
            Error::NoReachableClients(_) => "no_reachable_clients",
            Error::UnknownRequest(_) => "unknown_request",
            Error::Seal(_) => "seal_failed",
            Error::MlsStore(_) => "state_io",
            Error::Mls(_) => "mls",
            Error::OutOfStep(_) => "out_of_step",
            Error::BadKeyPackage { .. } => "bad_key_package",
            Error::BadConnectionGroup(_) => "bad_connection_group",
            Error::ConnectionFailed { .. } => "connection_failed",
            Error::ConnectToSelf => "connect_to_self",
            Error::Profile(_) => "bad_profile",
            Error::NoProfile(_) => "no_profile",
            Error::NotConnected(_) => "not_connected",
            Error::NoFriendshipToken(_) => "no_friendship_token",
            Error::NoKeyPackages(_) => "no_key_packages",
            Error::UnknownGroup(_) => "unknown_group",
            Error::AmbiguousGroup { .. } => "ambiguous_group",
            Error::RemovedFromGroup(_) => "removed_from_group",
            Error::AlreadyMember(_) => "already_member",
            Error::NotAMember(_) => "not_a_member",
            Error::RemoveSelf => "remove_self",
            Error::BadGroupName(_) => "bad_group_name",
        }
    }

    /// The HTTP status if the server refused the request.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Server(e) => e.status(),
            _ => None,
        }
    }
}

/// Why a discovered connection package is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackageProblem {
    /// Its signature does not verify, or it is not valid now.
    #[error("{0}")]
    Package(ConnectionError),
    #[error("it belongs to {found}")]
    WrongUser { found: UserName },
    /// Its client credential does not chain to the AS credentials of the user's domain.
    #[error("its client credential does not verify: {0}")]
    Chain(ChainError),
    #[error("the server sent more than one package for this client")]
    Duplicate,
}
