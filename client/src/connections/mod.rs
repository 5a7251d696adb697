//! Discovery and connection requests, up to the user's decision: publishing connection packages
//! (and keeping their secret keys), finding a user's clients by name, sending a sealed
//! invitation to one of them, and reading, checking and keeping the requests others sent.
//!
//! Asking a user to connect and accepting a request (the connection group) are in
//! `establish`; reading the connection queue is in `requests`.
//!
//! Every check happens here, in the client: the AS serves packages and queues sealed requests
//! but is not trusted with them. A discovered package must be signed by its client, valid now,
//! of the user asked for, and carry a credential that chains to the AS credentials of that
//! user's domain; one failing package stops the attempt. A received request must open with the
//! key of a package this client published, be signed by the sender's credential, be bound to this
//! user and that package, and the sender's credential must chain to the AS credentials of the
//! sender's domain; one failing is dropped and reported, never shown as a request.

mod establish;
mod requests;

use std::collections::HashSet;

use roost_protocol::{
    api::{ConnectionPackageCount, MAX_PUBLISH},
    connection::{
        ConnectionError, ConnectionEstablishmentPackage, ConnectionPackage, ConnectionPackageHash,
    },
    credentials::{AsCredentials, ChainError, Validity},
    crypto::CryptoError,
    ClientId, HpkeSecretKey, Timestamp, UserName,
};

use crate::{
    client::Client,
    error::{Error, PackageProblem},
    store::{ConnectionKey, PendingRequest},
    transport::fetch_as_credentials,
};

pub use establish::{Accepted, Connected, JoinedVia, WELCOME_GRACE};

/// How many one-time connection packages a new client publishes (with a last-resort one).
pub const INITIAL_PACKAGES: usize = 20;
/// How long a published connection package is valid.
pub const PACKAGE_LIFETIME_SECS: u64 = 7 * 24 * 3600;
/// A last-resort package closer than this to its end is replaced.
pub const RENEW_LAST_RESORT_SECS: u64 = 24 * 3600;
/// Clocks of client and server may differ this much: a package's validity starts this long
/// before it is made (else a server a second behind would find it not yet valid), and a key is
/// kept this long past its package's end.
pub const CLOCK_SKEW_SECS: u64 = 300;

/// What reading the connection queue came to.
#[derive(Debug, Clone)]
pub struct ConnectionRequests {
    /// Requests that passed every check, now pending (see [`Connections::pending`]).
    pub received: Vec<PendingRequest>,
    /// Requests that failed a check: dropped, never shown as requests.
    pub rejected: Vec<Rejected>,
}

/// A queue message that was not a valid connection request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Its position in the connection queue.
    pub seq: u64,
    pub reason: RejectReason,
}

/// Why a connection request was dropped. The sender's name is left out on purpose wherever the
/// request did not verify: it would be a claim, not a fact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    #[error("the queue message cannot be opened with this client's queue key: {0}")]
    Unreadable(CryptoError),
    #[error("the connection queue held something other than a connection request")]
    NotARequest,
    #[error("the same sealed request was received before")]
    Replay,
    #[error("it was sealed to a connection package this client does not hold (used up, expired or never published)")]
    UnknownPackage,
    #[error("{0}")]
    Invalid(ConnectionError),
    #[error("the sender's credential (client {client_id}) does not verify: {source}")]
    Chain {
        client_id: ClientId,
        source: ChainError,
    },
    #[error("the sender's credential cannot be checked: {0}")]
    Unverifiable(String),
}

impl RejectReason {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            RejectReason::Unreadable(_) => "unreadable",
            RejectReason::NotARequest => "not_a_request",
            RejectReason::Replay => "replay",
            RejectReason::UnknownPackage => "unknown_package",
            RejectReason::Invalid(ConnectionError::BadSignature) => "bad_signature",
            RejectReason::Invalid(ConnectionError::Expired) => "expired",
            RejectReason::Invalid(ConnectionError::WrongResponder) => "wrong_responder",
            RejectReason::Invalid(ConnectionError::WrongConnectionPackage) => "wrong_package",
            RejectReason::Invalid(ConnectionError::Unsealable(_)) => "unsealable",
            RejectReason::Chain { .. } => "bad_credential",
            RejectReason::Unverifiable(_) => "unverifiable_sender",
        }
    }
}

/// Checks every package a server returned for `user`, against the AS credentials of `user`'s
/// domain (which the caller fetched from that domain): each must be signed by its client and
/// valid at `now`, belong to `user`, carry a credential that chains to those AS credentials,
/// and name a client no other package names. The first failure is the error.
pub fn verify_packages(
    user: &UserName,
    packages: &[ConnectionPackage],
    credentials: &AsCredentials,
    now: Timestamp,
) -> Result<(), Error> {
    let mut clients = HashSet::new();
    for package in packages {
        let refuse = |problem| Error::BadConnectionPackage {
            user: user.clone(),
            client_id: package.client_id(),
            problem,
        };
        package
            .verify(now)
            .map_err(|e| refuse(PackageProblem::Package(e)))?;
        if package.user() != user {
            return Err(refuse(PackageProblem::WrongUser {
                found: package.user().clone(),
            }));
        }
        credentials
            .verify_client(&package.body.client_credential, now)
            .map_err(|e| refuse(PackageProblem::Chain(e)))?;
        if !clients.insert(package.client_id()) {
            return Err(refuse(PackageProblem::Duplicate));
        }
    }
    Ok(())
}

impl Client {
    /// Discovery and connections: packages, requests, connect and accept.
    pub fn connections(&self) -> Connections<'_> {
        Connections { client: self }
    }
}

/// A handle: cheap to copy, borrowing the client.
#[derive(Clone, Copy)]
pub struct Connections<'a> {
    client: &'a Client,
}

impl Connections<'_> {
    /// Publishes `count` new one-time connection packages; answers how many the AS now holds.
    pub async fn publish(self, count: usize) -> Result<ConnectionPackageCount, Error> {
        self.publish_with(count, false).await
    }

    /// Publishes a last-resort package if the AS has none, or if this client's newest one ends
    /// within [`RENEW_LAST_RESORT_SECS`].
    pub async fn ensure_last_resort(self) -> Result<ConnectionPackageCount, Error> {
        self.top_up(0, 0).await
    }

    /// Publishes `batch` one-time packages if the AS holds fewer than `min`, and a last-resort
    /// package as [`Connections::ensure_last_resort`] does, in one request; answers the count
    /// after.
    pub async fn top_up(self, min: u32, batch: usize) -> Result<ConnectionPackageCount, Error> {
        let count = self.package_count().await?;
        let one_time = if count.remaining < min { batch } else { 0 };
        let last_resort = !count.has_last_resort || self.last_resort_ends_soon()?;
        if one_time == 0 && !last_resort {
            return Ok(count);
        }
        self.publish_with(one_time, last_resort).await
    }

    /// How many packages the AS holds for this client.
    pub async fn package_count(self) -> Result<ConnectionPackageCount, Error> {
        let device = self.client.device();
        Ok(device
            .home()
            .connection_package_count(device.signer())
            .await?)
    }

    /// Makes `one_time` packages (and a last-resort one), stores their secret keys, and only
    /// then publishes them, at most [`MAX_PUBLISH`] per request: a request sealed to a package
    /// must always find its key.
    pub(crate) async fn publish_with(
        self,
        one_time: usize,
        last_resort: bool,
    ) -> Result<ConnectionPackageCount, Error> {
        let device = self.client.device();
        let made: Vec<(ConnectionPackage, ConnectionKey)> = std::iter::once(true)
            .filter(|_| last_resort)
            .chain(std::iter::repeat_n(false, one_time))
            .map(|last_resort| self.new_package(last_resort))
            .collect();
        let keys: Vec<(ConnectionPackageHash, ConnectionKey)> =
            made.iter().map(|(p, k)| (p.hash(), k.clone())).collect();
        device
            .store()
            .run(move |s| s.save_connection_keys(&keys))
            .await?;
        let packages: Vec<ConnectionPackage> = made.into_iter().map(|(p, _)| p).collect();
        let mut count = None;
        for chunk in packages.chunks(MAX_PUBLISH) {
            count = Some(
                device
                    .home()
                    .publish_connection_packages(device.signer(), chunk.to_vec())
                    .await?,
            );
        }
        match count {
            Some(count) => Ok(count),
            None => self.package_count().await,
        }
    }

    fn new_package(self, last_resort: bool) -> (ConnectionPackage, ConnectionKey) {
        let identity = self.client.identity();
        let (secret, public) = HpkeSecretKey::generate();
        let now = Timestamp::now();
        let validity = Validity {
            not_before: Timestamp(now.0.saturating_sub(CLOCK_SKEW_SECS)),
            not_after: now.plus_secs(PACKAGE_LIFETIME_SECS),
        };
        let package = ConnectionPackage::new(
            identity.credential.clone(),
            &identity.signing_key,
            public,
            validity,
            last_resort,
        );
        let key = ConnectionKey {
            secret,
            last_resort,
            not_after: validity.not_after,
        };
        (package, key)
    }

    /// Whether this client holds no last-resort key, or only ones that end soon.
    fn last_resort_ends_soon(self) -> Result<bool, Error> {
        let newest = self
            .client
            .device()
            .store()
            .connection_keys()?
            .into_iter()
            .filter(|(_, key)| key.last_resort)
            .map(|(_, key)| key.not_after)
            .max();
        let renew_from = Timestamp::now().plus_secs(RENEW_LAST_RESORT_SECS);
        Ok(newest.is_none_or(|end| end < renew_from))
    }

    /// Finds `user`'s clients: one connection package per client, from the AS of `user`'s
    /// domain, each checked as [`verify_packages`] says. Uses up a one-time package of each.
    pub async fn discover(self, user: &UserName) -> Result<Vec<ConnectionPackage>, Error> {
        let domain = user.domain();
        let server = self.client.device().server_of(domain)?;
        let packages = server.connection_packages(user).await?.packages;
        if packages.is_empty() {
            return Err(Error::NoReachableClients(user.clone()));
        }
        let credentials = fetch_as_credentials(&server, domain).await?;
        verify_packages(user, &packages, &credentials, Timestamp::now())?;
        Ok(packages)
    }

    /// Seals `invitation` to `package` and queues it for the package's client at the AS of that
    /// client's domain, without identifying this client (the request is not signed, and it
    /// does not pass through this client's own server unless that is the responder's).
    pub async fn send_request(
        self,
        package: &ConnectionPackage,
        invitation: &ConnectionEstablishmentPackage,
    ) -> Result<(), Error> {
        let sealed = invitation.seal(package).map_err(Error::Seal)?;
        let server = self.client.device().server_of(package.user().domain())?;
        Ok(server
            .send_connection_request(&package.client_id(), &sealed)
            .await?)
    }

    /// The requests waiting for the user's decision, oldest first (from the state directory).
    pub async fn pending(self) -> Result<Vec<PendingRequest>, Error> {
        Ok(self
            .client
            .device()
            .store()
            .run(|s| s.pending_requests())
            .await?)
    }

    /// Declines a pending request: it is deleted here, and nothing is sent to anyone.
    pub async fn decline(self, id: &str) -> Result<(), Error> {
        let owned = id.to_owned();
        let store = self.client.device().store();
        if store.run(move |s| s.remove_request(&owned)).await? {
            Ok(())
        } else {
            Err(Error::UnknownRequest(id.to_owned()))
        }
    }
}
