//! The HTTP API between clients and a homeserver: paths, request and response bodies.
//!
//! Bodies are [`codec`](crate::codec)-encoded with content type [`CONTENT_TYPE`]; errors are
//! JSON ([`ErrorBody`]) so that a person with `curl` can read them.

use serde::{Deserialize, Serialize};

use crate::{
    connection::ConnectionPackage,
    credentials::ClientCredential,
    crypto::{CryptoError, HpkePublicKey, Signature, SigningKey, VerifyingKey},
    ids::{ClientId, Timestamp, UserName},
    key_packages::{FriendshipToken, KeyPackageEntry},
    route::fill_route,
};

pub const CONTENT_TYPE: &str = "application/x-roost-bincode";

/// GET: the domain's [`AsCredentials`](crate::credentials::AsCredentials). Public.
pub const AS_CREDENTIALS: &str = "/as/v1/credentials";
/// POST [`RegisterUser`] → [`ClientCredential`]. Public.
pub const AS_USERS: &str = "/as/v1/users";

/// POST [`AddClient`] → [`ClientCredential`]; authenticated by the user's password.
pub const AS_USER_CLIENTS_ROUTE: &str = "/as/v1/users/{user}/clients";

/// [`AS_USER_CLIENTS_ROUTE`] of `user`.
pub fn as_user_clients(user: &UserName) -> String {
    fill_route(AS_USER_CLIENTS_ROUTE, user)
}

/// GET → [`ClientList`] of the caller's user. Signed.
pub const AS_OWN_CLIENTS: &str = "/as/v1/clients";

/// DELETE one of the caller's user's clients. Signed.
pub const AS_OWN_CLIENT_ROUTE: &str = "/as/v1/clients/{client}";

/// [`AS_OWN_CLIENT_ROUTE`] of `client`.
pub fn as_own_client(client: &ClientId) -> String {
    fill_route(AS_OWN_CLIENT_ROUTE, client)
}

/// POST [`Enqueue`] → [`Enqueued`] (signed, by a client of the same user);
/// GET with a [`FetchQuery`] → [`QueueBatch`] (signed, by the queue's own client).
pub const QS_QUEUE_MESSAGES_ROUTE: &str = "/qs/v1/queues/{client}/messages";

/// [`QS_QUEUE_MESSAGES_ROUTE`] of `client`.
pub fn qs_queue_messages(client: &ClientId) -> String {
    fill_route(QS_QUEUE_MESSAGES_ROUTE, client)
}

/// POST [`Ack`]: delete every message up to and including a sequence number. Signed.
pub const QS_QUEUE_ACK_ROUTE: &str = "/qs/v1/queues/{client}/ack";

/// [`QS_QUEUE_ACK_ROUTE`] of `client`.
pub fn qs_queue_ack(client: &ClientId) -> String {
    fill_route(QS_QUEUE_ACK_ROUTE, client)
}

/// POST [`PublishConnectionPackages`] → [`ConnectionPackageCount`] (signed);
/// GET → [`ConnectionPackageCount`] of the calling client (signed).
pub const AS_CONNECTION_PACKAGES: &str = "/as/v1/connection-packages";

/// A user's encrypted profile (see [`crate::profile`]): stored or replaced (`PUT`, an
/// [`EncryptedProfile`](crate::profile::EncryptedProfile), signed by one of the user's clients)
/// and deleted (`DELETE`, signed) by its owner; fetched by anyone who knows the id (`GET`,
/// unauthenticated, rate limited like discovery).
pub const AS_PROFILE_ROUTE: &str = "/as/v1/profiles/{profile}";

/// [`AS_PROFILE_ROUTE`] of `id`.
pub fn as_profile(id: &crate::profile::ProfileId) -> String {
    fill_route(AS_PROFILE_ROUTE, id)
}

/// Profiles one user may store at once: a client stores the new one before deleting the old.
pub const MAX_PROFILES_PER_USER: usize = 4;

/// GET → [`ConnectionPackages`]: one package per client of the user. Public, rate limited.
pub const AS_USER_CONNECTION_PACKAGES_ROUTE: &str = "/as/v1/users/{user}/connection-packages";

/// [`AS_USER_CONNECTION_PACKAGES_ROUTE`] of `user`.
pub fn as_user_connection_packages(user: &UserName) -> String {
    fill_route(AS_USER_CONNECTION_PACKAGES_ROUTE, user)
}

/// POST a [`SealedConnectionRequest`](crate::connection::SealedConnectionRequest) into a client's connection queue (public; 202);
/// GET with a [`FetchQuery`] → [`QueueBatch`] (signed, by that client).
pub const AS_CONNECTION_QUEUE_ROUTE: &str = "/as/v1/connection-queues/{client}";

/// [`AS_CONNECTION_QUEUE_ROUTE`] of `client`.
pub fn as_connection_queue(client: &ClientId) -> String {
    fill_route(AS_CONNECTION_QUEUE_ROUTE, client)
}

/// POST [`Ack`] for a connection queue. Signed.
pub const AS_CONNECTION_QUEUE_ACK_ROUTE: &str = "/as/v1/connection-queues/{client}/ack";

/// [`AS_CONNECTION_QUEUE_ACK_ROUTE`] of `client`.
pub fn as_connection_queue_ack(client: &ClientId) -> String {
    fill_route(AS_CONNECTION_QUEUE_ACK_ROUTE, client)
}

/// Which of a client's queues: both are read and acknowledged alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueKind {
    /// The QS message queue: notices, group deliveries and messages from the user's own
    /// clients.
    Messages,
    /// The AS connection queue, where sealed connection requests arrive.
    Connections,
}

impl QueueKind {
    /// The route pattern a queue of this kind is fetched from.
    pub const fn route(self) -> &'static str {
        match self {
            QueueKind::Messages => QS_QUEUE_MESSAGES_ROUTE,
            QueueKind::Connections => AS_CONNECTION_QUEUE_ROUTE,
        }
    }

    /// The route pattern a queue of this kind is acknowledged at.
    pub const fn ack_route(self) -> &'static str {
        match self {
            QueueKind::Messages => QS_QUEUE_ACK_ROUTE,
            QueueKind::Connections => AS_CONNECTION_QUEUE_ACK_ROUTE,
        }
    }

    /// Where `client`'s queue of this kind is fetched from.
    pub fn path(self, client: &ClientId) -> String {
        fill_route(self.route(), client)
    }

    /// Where `client`'s queue of this kind is acknowledged.
    pub fn ack_path(self, client: &ClientId) -> String {
        fill_route(self.ack_route(), client)
    }
}

/// Most connection packages, or one-time key-package entries, one publish may carry.
pub const MAX_PUBLISH: usize = 100;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishConnectionPackages {
    pub packages: Vec<ConnectionPackage>,
}

/// How many packages (connection packages at the AS, key packages at the QS) the server holds
/// for a client, so it knows when to top up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageCount {
    /// Usable (unexpired, not last-resort) packages left.
    pub remaining: u32,
    pub has_last_resort: bool,
}

pub type ConnectionPackageCount = PackageCount;
pub type KeyPackageCount = PackageCount;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectionPackages {
    pub packages: Vec<ConnectionPackage>,
}

/// GET → the [`HpkePublicKey`] this QS opens sealed queue references with. Public.
pub const QS_QUEUE_REF_KEY: &str = "/qs/v1/queue-ref-key";

/// POST [`PublishKeyPackages`] → [`KeyPackageCount`] (signed);
/// GET → [`KeyPackageCount`] of the calling client (signed).
pub const QS_KEY_PACKAGES: &str = "/qs/v1/key-packages";
/// GET → the caller's user's [`FriendshipToken`], made on first use (signed);
/// POST → a new one; the old one stops working (signed).
pub const QS_FRIENDSHIP_TOKEN: &str = "/qs/v1/friendship-token";
/// POST [`ClaimKeyPackages`] → [`ClaimedKeyPackages`]: one entry per client of the token's
/// user, using up one-time entries. Public, rate limited like discovery.
pub const QS_CLAIM_KEY_PACKAGES: &str = "/qs/v1/key-packages/claim";
/// GET → [`ClaimedKeyPackages`]: one entry per *other* client of the caller's user, used up
/// like a claim (to add one's own clients to a new group); with `?client=ID` only that
/// client's (to add a new client to the groups the user is in). Signed.
pub const QS_OWN_KEY_PACKAGES: &str = "/qs/v1/own-key-packages";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishKeyPackages {
    /// One-time entries; at most [`MAX_PUBLISH`].
    pub entries: Vec<KeyPackageEntry>,
    /// Served whenever the client has no one-time entry left; replaces the previous one.
    pub last_resort: Option<KeyPackageEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimKeyPackages {
    pub token: FriendshipToken,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimedKeyPackages {
    pub entries: Vec<KeyPackageEntry>,
}

/// Most messages one fetch returns.
pub const MAX_FETCH: u32 = 1000;
/// Most encoded bytes of messages one fetch returns, beyond its first message (which always
/// comes): well below what a client reads of an answer ([`crate::codec::DEFAULT_LIMIT`]), so that no
/// queue can hold what its client cannot read.
pub const MAX_FETCH_BYTES: usize = 3 * 1024 * 1024;
/// Largest message, sealed and encoded, any queue may hold: a batch of one fits what a client
/// reads. Servers set their own lower limit per queue kind.
pub const MAX_QUEUE_MESSAGE: usize = MAX_FETCH_BYTES;
/// Longest a fetch may wait for a first message.
pub const MAX_WAIT_MS: u64 = 30_000;

const NEW_CLIENT_LABEL: &str = "roost new client v1";

/// A client asking to be registered: its keys and proof that it holds the signature key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewClient {
    pub verifying_key: VerifyingKey,
    /// Messages in this client's queue are sealed to this key at rest.
    pub queue_key: HpkePublicKey,
    /// Signature by the new client key over the user name and the queue key.
    pub proof: Signature,
}

impl NewClient {
    pub fn new(user: &UserName, key: &SigningKey, queue_key: HpkePublicKey) -> Self {
        NewClient {
            verifying_key: key.verifying_key(),
            queue_key,
            proof: key.sign(NEW_CLIENT_LABEL, &(user, &queue_key)),
        }
    }

    pub fn verify(&self, user: &UserName) -> Result<(), CryptoError> {
        self.verifying_key
            .verify(NEW_CLIENT_LABEL, &(user, &self.queue_key), &self.proof)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterUser {
    pub user: UserName,
    pub password: String,
    /// Required when the server's registration policy is `token`.
    pub registration_token: Option<String>,
    pub client: NewClient,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddClient {
    pub password: String,
    pub client: NewClient,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientInfo {
    pub credential: ClientCredential,
    pub added_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientList {
    pub clients: Vec<ClientInfo>,
}

/// A message for a queue of one's own user's client. `op` makes a retry queue nothing twice:
/// the QS answers it with the first one's [`Enqueued`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enqueue {
    pub op: crate::OpId,
    pub payload: Vec<u8>,
}

impl Enqueue {
    /// What the queue remembers the message by: its operation id, bound to the sending client
    /// so that no client can shadow another's.
    pub fn dedup_key(&self, sender: &ClientId) -> [u8; 32] {
        crate::crypto::hash(
            "roost own-client message v1",
            &crate::codec::encode(&(sender, &self.op)),
        )
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Enqueued {
    pub seq: u64,
}

/// The query of a queue fetch: `?from=SEQ&max=N&wait_ms=MS`, and `&ack=SEQ` to acknowledge
/// what came before in the same request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchQuery {
    /// Messages with a sequence number from this one on.
    #[serde(default)]
    pub from: u64,
    /// At most this many ([`MAX_FETCH`] if absent or larger).
    pub max: Option<u32>,
    /// How long to wait for a first message (at most [`MAX_WAIT_MS`]).
    #[serde(default)]
    pub wait_ms: u64,
    /// First delete every message up to and including this one, as an [`Ack`] would — but
    /// without waiting for the deletion to be durable: one a crash takes back only returns
    /// messages before `from`, which the fetch does not serve.
    pub ack: Option<u64>,
}

impl FetchQuery {
    /// The query string, without its `?`.
    pub fn to_query(&self) -> String {
        let mut query = format!("from={}&wait_ms={}", self.from, self.wait_ms);
        if let Some(max) = self.max {
            query.push_str(&format!("&max={max}"));
        }
        if let Some(ack) = self.ack {
            query.push_str(&format!("&ack={ack}"));
        }
        query
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Ack {
    /// Every message with a sequence number up to and including this one is deleted.
    pub up_to: u64,
}

pub use crate::queue::{Notice, QueueBatch, QueueItem, QueueMessage};

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable machine-readable code, e.g. `user_taken`.
    pub error: String,
    /// A sentence for people.
    pub message: String,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::HpkeSecretKey;

    #[test]
    fn each_route_pattern_matches_the_paths_built_for_it() {
        let user: UserName = "alice@a.test".parse().unwrap();
        let client = ClientId::random();
        for (pattern, path) in [
            (AS_USER_CLIENTS_ROUTE, as_user_clients(&user)),
            (AS_OWN_CLIENT_ROUTE, as_own_client(&client)),
            (QS_QUEUE_MESSAGES_ROUTE, qs_queue_messages(&client)),
            (QS_QUEUE_ACK_ROUTE, qs_queue_ack(&client)),
            (
                AS_USER_CONNECTION_PACKAGES_ROUTE,
                as_user_connection_packages(&user),
            ),
            (AS_CONNECTION_QUEUE_ROUTE, as_connection_queue(&client)),
            (
                AS_CONNECTION_QUEUE_ACK_ROUTE,
                as_connection_queue_ack(&client),
            ),
            (
                QueueKind::Messages.route(),
                QueueKind::Messages.path(&client),
            ),
            (
                QueueKind::Connections.ack_route(),
                QueueKind::Connections.ack_path(&client),
            ),
        ] {
            assert!(
                crate::route::matches(pattern, &path),
                "{pattern} does not match {path}"
            );
            assert!(
                path.contains(&client.to_string()) || path.contains(&user.to_string()),
                "{path}"
            );
        }
        assert_eq!(
            qs_queue_messages(&client),
            format!("/qs/v1/queues/{client}/messages")
        );
        assert_eq!(
            as_user_clients(&user),
            format!("/as/v1/users/{user}/clients")
        );
    }

    #[test]
    fn a_new_client_proof_names_the_user() {
        let key = SigningKey::generate();
        let (_, queue_key) = HpkeSecretKey::generate();
        let alice: UserName = "alice@a.test".parse().unwrap();
        let new = NewClient::new(&alice, &key, queue_key);
        assert!(new.verify(&alice).is_ok());
        assert!(new.verify(&"bob@a.test".parse().unwrap()).is_err());
    }
}
