//! What a server publishes about its tokens (its issuer keys and what each anonymous operation
//! costs), and the issuance request a client signs.

use serde::{Deserialize, Serialize};

use super::TokenRequest;
use crate::{Domain, Timestamp};

/// `GET`: this server's [`TokenPolicy`], public (clients and other servers read it).
pub const AS_TOKEN_POLICY: &str = "/as/v1/token-policy";
/// `POST` (signed): an [`IssueRequest`], answered with an [`IssueResponse`].
pub const AS_TOKENS: &str = "/as/v1/tokens";

/// The anonymous operations a token pays for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Operation {
    CreateGroup,
    /// A commit, or a member taking a group's state again (rejoin).
    Commit,
    Message,
    /// The external join of a connection group.
    ExternalJoin,
    ConnectionRequest,
    KeyPackageClaim,
    /// Discovery beyond the free burst an address has.
    Discovery,
}

impl Operation {
    pub const ALL: [Operation; 7] = [
        Operation::CreateGroup,
        Operation::Commit,
        Operation::Message,
        Operation::ExternalJoin,
        Operation::ConnectionRequest,
        Operation::KeyPackageClaim,
        Operation::Discovery,
    ];

    /// The operation an unsigned request is, by its method and path (the server's routes);
    /// `None` for one that costs nothing.
    pub fn of_request(method: &str, path: &str) -> Option<Operation> {
        use crate::{api, ds, route::matches};
        let path = path.split('?').next().unwrap_or(path);
        let routes: [(&str, &str, Operation); 8] = [
            ("POST", ds::DS_GROUPS, Operation::CreateGroup),
            ("POST", ds::DS_COMMIT_ROUTE, Operation::Commit),
            ("POST", ds::DS_REJOIN_ROUTE, Operation::Commit),
            ("POST", ds::DS_MESSAGES_ROUTE, Operation::Message),
            (
                "POST",
                ds::DS_JOIN_CONNECTION_GROUP_ROUTE,
                Operation::ExternalJoin,
            ),
            (
                "POST",
                api::AS_CONNECTION_QUEUE_ROUTE,
                Operation::ConnectionRequest,
            ),
            (
                "POST",
                api::QS_CLAIM_KEY_PACKAGES,
                Operation::KeyPackageClaim,
            ),
            (
                "GET",
                api::AS_USER_CONNECTION_PACKAGES_ROUTE,
                Operation::Discovery,
            ),
        ];
        routes
            .into_iter()
            .find(|(m, pattern, _)| *m == method && matches(pattern, path))
            .map(|(_, _, operation)| operation)
    }

    /// The name settings and errors use.
    pub fn name(self) -> &'static str {
        match self {
            Operation::CreateGroup => "create_group",
            Operation::Commit => "commit",
            Operation::Message => "message",
            Operation::ExternalJoin => "external_join",
            Operation::ConnectionRequest => "connection_request",
            Operation::KeyPackageClaim => "key_package_claim",
            Operation::Discovery => "discovery",
        }
    }
}

/// Tokens each operation costs (0: free).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Costs {
    pub create_group: u8,
    pub commit: u8,
    pub message: u8,
    pub external_join: u8,
    pub connection_request: u8,
    pub key_package_claim: u8,
    pub discovery: u8,
}

/// Most tokens one request may carry.
pub const MAX_TOKENS_PER_REQUEST: u8 = 8;

impl Costs {
    pub const ONE_EACH: Costs = Costs {
        create_group: 1,
        commit: 1,
        message: 1,
        external_join: 1,
        connection_request: 1,
        key_package_claim: 1,
        discovery: 1,
    };

    pub fn of(&self, operation: Operation) -> u8 {
        match operation {
            Operation::CreateGroup => self.create_group,
            Operation::Commit => self.commit,
            Operation::Message => self.message,
            Operation::ExternalJoin => self.external_join,
            Operation::ConnectionRequest => self.connection_request,
            Operation::KeyPackageClaim => self.key_package_claim,
            Operation::Discovery => self.discovery,
        }
    }
}

/// One issuer key: when the issuer signs with it, and until when tokens under it are taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedKey {
    /// RFC 9578's SubjectPublicKeyInfo of the key.
    pub spki: Vec<u8>,
    pub issues_from: Timestamp,
    pub issues_until: Timestamp,
    pub redeemable_until: Timestamp,
}

impl PublishedKey {
    pub fn issues_at(&self, now: Timestamp) -> bool {
        self.issues_from <= now && now < self.issues_until
    }
}

/// What a server says about tokens: the keys it issues with (its own users' tokens are checked
/// against them anywhere) and what each anonymous operation costs there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenPolicy {
    pub domain: Domain,
    pub keys: Vec<PublishedKey>,
    pub costs: Costs,
}

impl TokenPolicy {
    /// The key the issuer signs with at `now` (tokens are bought under it).
    pub fn issuing_key(&self, now: Timestamp) -> Option<&PublishedKey> {
        self.keys.iter().find(|k| k.issues_at(now))
    }
}

/// Largest policy a server or client reads.
pub const MAX_POLICY_BYTES: usize = 16 * 1024;

/// Tokens asked of the user's own AS, all under the key with `key_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueRequest {
    pub key_id: [u8; 32],
    pub requests: Vec<TokenRequest>,
}

/// A blind signature for each request, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueResponse {
    pub blind_signatures: Vec<Vec<u8>>,
}
