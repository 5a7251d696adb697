//! Discovery and connection requests, up to the user's decision: publishing connection packages
//! (and keeping their secret keys), finding a user's clients by name, sending a sealed
//! invitation to one of them, and reading, checking and keeping the requests others sent.
//!
//! Accepting a request (joining the connection group) is in [`crate::groups`].
//!
//! Every check happens here, in the client: the AS serves packages and queues sealed requests
//! but is not trusted with them. A discovered package must be signed by its client, valid now,
//! of the user asked for, and carry a credential that chains to the AS credentials of that
//! user's domain; one failing package stops the attempt. A received request must open with the
//! key of a package this client published, be signed by the sender's credential, be bound to this
//! user and that package, and the sender's credential must chain to the AS credentials of the
//! sender's domain; one failing is dropped and reported, never shown as a request.

use std::collections::{HashMap, HashSet};

use roost_protocol::{
    api::{ConnectionPackageCount, QueueItem, QueueMessage, MAX_PUBLISH},
    codec,
    connection::{
        ConnectionError, ConnectionEstablishmentPackage, ConnectionPackage, ConnectionPackageHash,
        SealedConnectionRequest,
    },
    credentials::{AsCredentials, ChainError, Validity},
    crypto::{self, CryptoError},
    ClientId, Domain, HpkeSecretKey, Timestamp, UserName,
};

use crate::{
    client::{blocking, fetch_as_credentials, Client, QueueReader},
    error::{Error, PackageProblem},
    server::{QueueKind, ServerError},
    state::{ConnectionBatch, ConnectionKey, PendingRequest, QueuePosition},
};

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
/// Hex characters of a request id; more only where two pending requests would share one.
const REQUEST_ID_LEN: usize = 8;

/// What reading the connection queue came to.
#[derive(Debug, Clone)]
pub struct ConnectionRequests {
    /// Requests that passed every check, now pending (see [`Client::pending_requests`]).
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
    /// Publishes `count` new one-time connection packages; answers how many the AS now holds.
    pub async fn publish_connection_packages(
        &self,
        count: usize,
    ) -> Result<ConnectionPackageCount, Error> {
        self.publish_connection_packages_with(count, false).await
    }

    /// Publishes a last-resort package if the AS has none, or if this client's newest one ends
    /// within [`RENEW_LAST_RESORT_SECS`].
    pub async fn ensure_last_resort(&self) -> Result<ConnectionPackageCount, Error> {
        self.top_up(0, 0).await
    }

    /// Publishes `batch` one-time packages if the AS holds fewer than `min`, and a last-resort
    /// package as [`Client::ensure_last_resort`] does, in one request; answers the count after.
    pub async fn top_up(&self, min: u32, batch: usize) -> Result<ConnectionPackageCount, Error> {
        let count = self.connection_package_count().await?;
        let one_time = if count.remaining < min { batch } else { 0 };
        let last_resort = !count.has_last_resort || self.last_resort_ends_soon()?;
        if one_time == 0 && !last_resort {
            return Ok(count);
        }
        self.publish_connection_packages_with(one_time, last_resort)
            .await
    }

    /// How many packages the AS holds for this client.
    pub async fn connection_package_count(&self) -> Result<ConnectionPackageCount, Error> {
        Ok(self
            .server()
            .connection_package_count(self.signer())
            .await?)
    }

    /// Makes `one_time` packages (and a last-resort one), stores their secret keys, and only
    /// then publishes them, at most [`MAX_PUBLISH`] per request: a request sealed to a package
    /// must always find its key.
    pub(crate) async fn publish_connection_packages_with(
        &self,
        one_time: usize,
        last_resort: bool,
    ) -> Result<ConnectionPackageCount, Error> {
        let made: Vec<(ConnectionPackage, ConnectionKey)> = std::iter::once(true)
            .filter(|_| last_resort)
            .chain(std::iter::repeat_n(false, one_time))
            .map(|last_resort| self.new_connection_package(last_resort))
            .collect();
        let keys: Vec<(ConnectionPackageHash, ConnectionKey)> =
            made.iter().map(|(p, k)| (p.hash(), k.clone())).collect();
        let state = self.state.clone();
        blocking(move || state.save_connection_keys(&keys)).await?;
        let packages: Vec<ConnectionPackage> = made.into_iter().map(|(p, _)| p).collect();
        let mut count = None;
        for chunk in packages.chunks(MAX_PUBLISH) {
            count = Some(
                self.server()
                    .publish_connection_packages(self.signer(), chunk.to_vec())
                    .await?,
            );
        }
        match count {
            Some(count) => Ok(count),
            None => self.connection_package_count().await,
        }
    }

    fn new_connection_package(&self, last_resort: bool) -> (ConnectionPackage, ConnectionKey) {
        let (secret, public) = HpkeSecretKey::generate();
        let now = Timestamp::now();
        let validity = Validity {
            not_before: Timestamp(now.0.saturating_sub(CLOCK_SKEW_SECS)),
            not_after: now.plus_secs(PACKAGE_LIFETIME_SECS),
        };
        let package = ConnectionPackage::new(
            self.identity.credential.clone(),
            &self.identity.signing_key,
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
    fn last_resort_ends_soon(&self) -> Result<bool, Error> {
        let newest = self
            .state
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
    pub async fn discover(&self, user: &UserName) -> Result<Vec<ConnectionPackage>, Error> {
        let domain = user.domain();
        let server = self.as_server_for(domain)?;
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
    pub async fn send_connection_request(
        &self,
        package: &ConnectionPackage,
        invitation: &ConnectionEstablishmentPackage,
    ) -> Result<(), Error> {
        let sealed = invitation.seal(package).map_err(Error::Seal)?;
        let server = self.as_server_for(package.user().domain())?;
        Ok(server
            .send_connection_request(&package.client_id(), &sealed)
            .await?)
    }

    /// Reads this client's connection queue to its end: each request is opened and checked;
    /// those that pass become pending requests (kept in the state directory), the others are
    /// dropped and returned as rejected. Keys of packages that ended before the queue was read
    /// are forgotten afterwards, as the AS queues nothing more for them.
    pub async fn connection_requests(&self) -> Result<ConnectionRequests, Error> {
        let started = Timestamp::now();
        let mut reader = RequestReader::default();
        let drained = self.drain(&mut reader, std::time::Duration::ZERO).await?;
        let mut outcome = ConnectionRequests {
            received: Vec::new(),
            rejected: Vec::new(),
        };
        for item in drained.items {
            match item {
                Ok(request) => outcome.received.push(request),
                Err(rejected) => outcome.rejected.push(rejected),
            }
        }
        if drained.complete {
            let before = Timestamp(started.0.saturating_sub(CLOCK_SKEW_SECS));
            let state = self.state.clone();
            blocking(move || state.prune_connection_keys(before)).await?;
        }
        Ok(outcome)
    }

    /// The requests waiting for the user's decision, oldest first (from the state directory).
    pub async fn pending_requests(&self) -> Result<Vec<PendingRequest>, Error> {
        let state = self.state.clone();
        blocking(move || state.pending_requests()).await
    }

    /// Declines a pending request: it is deleted here, and nothing is sent to anyone.
    pub async fn decline(&self, id: &str) -> Result<(), Error> {
        let state = self.state.clone();
        let owned = id.to_owned();
        if blocking(move || state.remove_request(&owned)).await? {
            Ok(())
        } else {
            Err(Error::UnknownRequest(id.to_owned()))
        }
    }

    /// Hook for the spec's first step on receiving a request: if the user already accepted it
    /// on another client, this client's QS queue holds a Welcome for the same group, which it
    /// should use to join instead, discarding the request.
    /// Here only the local record is consulted (the connection queue is read without the MLS
    /// lock); [`Client::accept`] and [`Client::sync`] read the QS queue itself.
    async fn joined_through_welcome(
        &self,
        request: &ConnectionEstablishmentPackage,
    ) -> Result<bool, Error> {
        Ok(self
            .state
            .contact(&request.body.connection_group_id)?
            .is_some())
    }
}

/// Reads the connection queue; keeps the AS credentials of each sender domain for one pass.
#[derive(Default)]
struct RequestReader {
    credentials: HashMap<Domain, Result<AsCredentials, String>>,
}

impl QueueReader for RequestReader {
    type Item = Result<PendingRequest, Rejected>;
    const KIND: QueueKind = QueueKind::Connections;

    async fn take(
        &mut self,
        client: &Client,
        messages: &[QueueMessage],
        position: QueuePosition,
    ) -> Result<Vec<Self::Item>, Error> {
        let mut batch = ConnectionBatch {
            position,
            ..ConnectionBatch::default()
        };
        let mut items = Vec::new();
        for message in messages {
            let checked = self.check(client, message, &mut batch).await?;
            let item = match checked {
                Ok(Some(request)) => {
                    batch.requests.push(request.clone());
                    Ok(request)
                }
                Ok(None) => continue,
                Err(reason) => Err(Rejected {
                    seq: message.seq,
                    reason,
                }),
            };
            items.push(item);
        }
        let state = client.state.clone();
        blocking(move || state.save_connection_batch(&batch)).await?;
        Ok(items)
    }
}

impl RequestReader {
    /// Opens and checks one message. The outer error aborts the batch (something that may
    /// work next time, such as the network); the inner one rejects the request. `Ok(None)`:
    /// the request is settled without being shown (joined through a Welcome).
    async fn check(
        &mut self,
        client: &Client,
        message: &QueueMessage,
        batch: &mut ConnectionBatch,
    ) -> Result<Result<Option<PendingRequest>, RejectReason>, Error> {
        let identity = &client.identity;
        let sealed = match message.open(&identity.queue_key, &identity.client_id) {
            Ok(QueueItem::ConnectionRequest(sealed)) => sealed,
            Ok(_) => return Ok(Err(RejectReason::NotARequest)),
            Err(e) => return Ok(Err(RejectReason::Unreadable(e))),
        };
        let hash = request_hash(&sealed);
        if client.state.request_seen(&hash)? || batch.seen.iter().any(|(h, _)| *h == hash) {
            return Ok(Err(RejectReason::Replay));
        }
        let package = sealed.connection_package;
        let key = match client.state.connection_key(&package)? {
            Some(key) if !batch.used_keys.contains(&package) => key,
            _ => return Ok(Err(RejectReason::UnknownPackage)),
        };
        // Opened (or tried): the AS takes no other request for a one-time package.
        batch.seen.push((hash, key.not_after));
        if !key.last_resort {
            batch.used_keys.push(package);
        }
        let opened = match sealed.open(&key.secret) {
            Ok(opened) => opened,
            Err(e) => return Ok(Err(RejectReason::Invalid(e))),
        };
        if let Err(e) = opened.verify_for(&identity.user, &package) {
            return Ok(Err(RejectReason::Invalid(e)));
        }
        if let Err(reason) = self.verify_sender(client, &opened).await? {
            return Ok(Err(reason));
        }
        if client.joined_through_welcome(&opened).await? {
            return Ok(Ok(None));
        }
        let id = request_id(&hash, |id| {
            Ok(batch.requests.iter().any(|r| r.id == id) || client.state.request_id_taken(id)?)
        })?;
        Ok(Ok(Some(PendingRequest {
            id,
            received_at: Timestamp::now(),
            package: opened,
        })))
    }

    /// Checks the sender's credential chain against the AS credentials of its domain.
    async fn verify_sender(
        &mut self,
        client: &Client,
        request: &ConnectionEstablishmentPackage,
    ) -> Result<Result<(), RejectReason>, Error> {
        let credential = &request.body.sender_client_credential;
        let domain = credential.user().domain();
        if !self.credentials.contains_key(domain) {
            let fetched = match client.as_credentials_of(domain).await {
                Ok(credentials) => Ok(credentials),
                Err(e) if is_transient(&e) => return Err(e),
                Err(e) => Err(e.to_string()),
            };
            self.credentials.insert(domain.clone(), fetched);
        }
        Ok(match &self.credentials[domain] {
            Ok(credentials) => credentials
                .verify_client(credential, Timestamp::now())
                .map_err(|source| RejectReason::Chain {
                    client_id: credential.client_id(),
                    source,
                }),
            Err(reason) => Err(RejectReason::Unverifiable(reason.clone())),
        })
    }
}

/// Names one sealed request, for replay detection and its id.
fn request_hash(sealed: &SealedConnectionRequest) -> [u8; 32] {
    crypto::hash("roost-client connection request v1", &codec::encode(sealed))
}

/// The shortest prefix of the hash (in hex, at least [`REQUEST_ID_LEN`] characters) that
/// `taken` says is free.
fn request_id(
    hash: &[u8; 32],
    mut taken: impl FnMut(&str) -> Result<bool, Error>,
) -> Result<String, Error> {
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    for len in (REQUEST_ID_LEN..hex.len()).step_by(4) {
        if !taken(&hex[..len])? {
            return Ok(hex[..len].to_owned());
        }
    }
    Ok(hex)
}

/// Failures that may pass: the outcome of a check must not depend on them.
pub(crate) fn is_transient(error: &Error) -> bool {
    match error {
        Error::Server(ServerError::Network(_)) | Error::Task(_) => true,
        Error::Server(ServerError::Http { status, .. }) => *status == 429 || *status >= 500,
        _ => false,
    }
}

// `verify_packages` is tested end to end, one case per reason, against real servers with a
// proxy serving forged packages: `tests/discovery.rs`.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_short_and_grow_only_on_a_clash() {
        let hash = [0xab; 32];
        assert_eq!(request_id(&hash, |_| Ok(false)).unwrap(), "abababab");
        let clash = request_id(&hash, |id| Ok(id.len() == 8)).unwrap();
        assert_eq!(clash, "abababababab");
        assert_eq!(request_id(&hash, |_| Ok(true)).unwrap().len(), 64);
    }
}
