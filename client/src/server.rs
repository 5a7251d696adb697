//! The homeserver's HTTP API, one method per endpoint.
//!
//! Bodies are [`codec`]-encoded both ways; error responses carry a JSON [`ErrorBody`] whose code
//! and message are kept in [`ServerError::Http`]. Signed requests sign exactly the path and
//! query that go on the wire, taken from the final URL, so the server checks what it received.

use std::time::Duration;

use reqwest::{header, Method, StatusCode, Url};
use roost_protocol::{
    api::{
        self, Ack, AddClient, ClaimKeyPackages, ClaimedKeyPackages, ClientList,
        ConnectionPackageCount, ConnectionPackages, Enqueue, Enqueued, ErrorBody, KeyPackageCount,
        PublishConnectionPackages, PublishKeyPackages, QueueBatch, RegisterUser,
    },
    auth::RequestSignature,
    codec,
    connection::{ConnectionPackage, EarKey, SealedConnectionRequest},
    credentials::{AsCredentials, ClientCredential},
    ds,
    ids::now_millis,
    key_packages::FriendshipToken,
    ClientId, HpkePublicKey, SigningKey, UserName,
};
use serde::de::DeserializeOwned;

/// Largest error body read; anything past it is not a message for people.
const ERROR_BODY_LIMIT: usize = 64 * 1024;
/// Time allowed for a request beyond any long-poll wait it asks for.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerError {
    #[error("invalid server URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("the server refused the request ({status} {code}): {message}")]
    Http {
        status: u16,
        /// The server's machine-readable code; `http_<status>` if it sent no JSON error body.
        code: String,
        message: String,
    },
    #[error("cannot reach the server: {0}")]
    Network(String),
    #[error("the server's response is malformed: {0}")]
    Malformed(String),
}

impl ServerError {
    /// The HTTP status of a refused request.
    pub fn status(&self) -> Option<u16> {
        match self {
            ServerError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A stable code: the server's own for refused requests, else one naming the failure.
    pub fn code(&self) -> &str {
        match self {
            ServerError::BadUrl { .. } => "bad_server_url",
            ServerError::Http { code, .. } => code,
            ServerError::Network(_) => "network",
            ServerError::Malformed(_) => "bad_response",
        }
    }

    fn network(error: reqwest::Error) -> Self {
        ServerError::Network(error_chain(&error))
    }
}

/// The error and its causes on one line: reqwest's own message rarely says what went wrong.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// What signs a request: a client's id and its signature key.
#[derive(Clone, Copy)]
pub struct Signer<'a> {
    pub client_id: ClientId,
    pub key: &'a SigningKey,
}

impl std::fmt::Debug for Signer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.client_id)
    }
}

/// A client's two queues on its home server. Both are read the same way (fetch from a position,
/// then acknowledge), so one implementation serves both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKind {
    /// The QS message queue: notices and messages from the user's own clients.
    Messages,
    /// The AS connection queue: sealed connection requests from anyone.
    Connections,
}

/// One queue of one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queue {
    pub kind: QueueKind,
    pub client: ClientId,
}

impl Queue {
    /// Where messages are fetched from.
    fn messages_path(&self) -> String {
        match self.kind {
            QueueKind::Messages => api::qs_queue_messages(&self.client),
            QueueKind::Connections => api::as_connection_queue(&self.client),
        }
    }

    fn ack_path(&self) -> String {
        match self.kind {
            QueueKind::Messages => api::qs_queue_ack(&self.client),
            QueueKind::Connections => api::as_connection_queue_ack(&self.client),
        }
    }
}

/// One homeserver, reached over HTTP(S). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Server {
    base: Url,
    base_text: String,
    http: reqwest::Client,
}

impl Server {
    /// `base_url` is e.g. `http://127.0.0.1:8080` or `https://roost.example.org/`: scheme and
    /// host (and port), nothing else, since signatures cover the path the server sees.
    pub fn new(base_url: &str) -> Result<Server, ServerError> {
        let base_text = normalize_base_url(base_url)?;
        let base = Url::parse(&base_text).map_err(|e| bad_url(base_url, &e.to_string()))?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("roost-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ServerError::network)?;
        Ok(Server {
            base,
            base_text,
            http,
        })
    }

    /// The base URL without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_text
    }

    /// `GET /as/v1/credentials`: the domain's AS credential chain roots. Public.
    pub async fn as_credentials(&self) -> Result<AsCredentials, ServerError> {
        self.call(
            Method::GET,
            api::AS_CREDENTIALS,
            None,
            None,
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `POST /as/v1/users`: creates a user with its first client.
    pub async fn register_user(
        &self,
        body: &RegisterUser,
    ) -> Result<ClientCredential, ServerError> {
        let bytes = codec::encode(body);
        self.call(
            Method::POST,
            api::AS_USERS,
            Some(bytes),
            None,
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `POST /as/v1/users/{user}/clients`: adds a client, authenticated by the user's password.
    pub async fn add_client(
        &self,
        user: &UserName,
        body: &AddClient,
    ) -> Result<ClientCredential, ServerError> {
        let bytes = codec::encode(body);
        let path = api::as_user_clients(user);
        self.call(Method::POST, &path, Some(bytes), None, REQUEST_TIMEOUT)
            .await
    }

    /// `GET /as/v1/clients`: every client of the signer's user.
    pub async fn list_clients(&self, signer: Signer<'_>) -> Result<ClientList, ServerError> {
        self.call(
            Method::GET,
            api::AS_OWN_CLIENTS,
            None,
            Some(signer),
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `DELETE /as/v1/clients/{id}`: removes one of the signer's user's clients.
    pub async fn delete_client(
        &self,
        signer: Signer<'_>,
        client: &ClientId,
    ) -> Result<(), ServerError> {
        let path = api::as_own_client(client);
        self.call_no_content(Method::DELETE, &path, None, Some(signer))
            .await
    }

    /// `POST /qs/v1/queues/{target}/messages`: puts a payload into a queue of the signer's user.
    pub async fn enqueue(
        &self,
        signer: Signer<'_>,
        target: &ClientId,
        payload: Vec<u8>,
    ) -> Result<Enqueued, ServerError> {
        let bytes = codec::encode(&Enqueue { payload });
        let path = api::qs_queue_messages(target);
        self.call(
            Method::POST,
            &path,
            Some(bytes),
            Some(signer),
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `GET /qs/v1/queues/{queue}/messages`: the QS message queue; see [`Server::fetch_queue`].
    pub async fn fetch(
        &self,
        signer: Signer<'_>,
        queue: &ClientId,
        from: u64,
        max: u32,
        wait: Duration,
    ) -> Result<QueueBatch, ServerError> {
        let queue = Queue {
            kind: QueueKind::Messages,
            client: *queue,
        };
        self.fetch_queue(signer, queue, from, max, wait).await
    }

    /// `POST /qs/v1/queues/{queue}/ack`: see [`Server::ack_queue`].
    pub async fn ack(
        &self,
        signer: Signer<'_>,
        queue: &ClientId,
        up_to: u64,
    ) -> Result<(), ServerError> {
        let queue = Queue {
            kind: QueueKind::Messages,
            client: *queue,
        };
        self.ack_queue(signer, queue, up_to).await
    }

    /// Up to `max` messages of `queue` from `from` on; with `wait` above zero the server holds
    /// the request until one exists (capped at [`api::MAX_WAIT_MS`]).
    pub async fn fetch_queue(
        &self,
        signer: Signer<'_>,
        queue: Queue,
        from: u64,
        max: u32,
        wait: Duration,
    ) -> Result<QueueBatch, ServerError> {
        let wait_ms = u64::try_from(wait.as_millis())
            .unwrap_or(u64::MAX)
            .min(api::MAX_WAIT_MS);
        let path = format!(
            "{}?from={from}&max={max}&wait_ms={wait_ms}",
            queue.messages_path()
        );
        let timeout = REQUEST_TIMEOUT + Duration::from_millis(wait_ms);
        let batch: QueueBatch = self
            .call(Method::GET, &path, None, Some(signer), timeout)
            .await?;
        check_batch(&batch, from, max)?;
        Ok(batch)
    }

    /// Deletes every message of `queue` up to and including `up_to`.
    pub async fn ack_queue(
        &self,
        signer: Signer<'_>,
        queue: Queue,
        up_to: u64,
    ) -> Result<(), ServerError> {
        let bytes = codec::encode(&Ack { up_to });
        self.call_no_content(Method::POST, &queue.ack_path(), Some(bytes), Some(signer))
            .await
    }

    /// `POST /as/v1/connection-packages`: publishes at most [`api::MAX_PUBLISH`] packages of
    /// the signer; answers how many it now has.
    pub async fn publish_connection_packages(
        &self,
        signer: Signer<'_>,
        packages: Vec<ConnectionPackage>,
    ) -> Result<ConnectionPackageCount, ServerError> {
        let bytes = codec::encode(&PublishConnectionPackages { packages });
        self.call(
            Method::POST,
            api::AS_CONNECTION_PACKAGES,
            Some(bytes),
            Some(signer),
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `GET /as/v1/connection-packages`: how many packages the AS holds for the signer.
    pub async fn connection_package_count(
        &self,
        signer: Signer<'_>,
    ) -> Result<ConnectionPackageCount, ServerError> {
        self.call(
            Method::GET,
            api::AS_CONNECTION_PACKAGES,
            None,
            Some(signer),
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `GET /as/v1/users/{user}/connection-packages`: one package per client of `user`, unchecked
    /// (see `Client::discover`). Public and rate limited (429 `rate_limited`).
    pub async fn connection_packages(
        &self,
        user: &UserName,
    ) -> Result<ConnectionPackages, ServerError> {
        let path = api::as_user_connection_packages(user);
        self.call(Method::GET, &path, None, None, REQUEST_TIMEOUT)
            .await
    }

    /// `POST /as/v1/connection-queues/{client}`: queues a sealed connection request for
    /// `client`. Unauthenticated: the responder's AS must not learn who asks.
    pub async fn send_connection_request(
        &self,
        client: &ClientId,
        request: &SealedConnectionRequest,
    ) -> Result<(), ServerError> {
        let bytes = codec::encode(request);
        let path = api::as_connection_queue(client);
        self.call_no_content(Method::POST, &path, Some(bytes), None)
            .await
    }

    /// `GET /qs/v1/queue-ref-key`: the key this QS opens sealed queue references with. Public.
    pub async fn queue_ref_key(&self) -> Result<HpkePublicKey, ServerError> {
        self.call(
            Method::GET,
            api::QS_QUEUE_REF_KEY,
            None,
            None,
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `POST /qs/v1/key-packages`: publishes key-package entries of the signer.
    pub async fn publish_key_packages(
        &self,
        signer: Signer<'_>,
        body: &PublishKeyPackages,
    ) -> Result<KeyPackageCount, ServerError> {
        let bytes = codec::encode(body);
        self.call(
            Method::POST,
            api::QS_KEY_PACKAGES,
            Some(bytes),
            Some(signer),
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `GET /qs/v1/key-packages`: how many entries the QS holds for the signer.
    pub async fn key_package_count(
        &self,
        signer: Signer<'_>,
    ) -> Result<KeyPackageCount, ServerError> {
        self.call(
            Method::GET,
            api::QS_KEY_PACKAGES,
            None,
            Some(signer),
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `GET /qs/v1/own-key-packages`: one entry per other client of the signer's user.
    pub async fn own_key_packages(
        &self,
        signer: Signer<'_>,
    ) -> Result<ClaimedKeyPackages, ServerError> {
        self.call(
            Method::GET,
            api::QS_OWN_KEY_PACKAGES,
            None,
            Some(signer),
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `GET /qs/v1/friendship-token`: the signer's user's friendship token.
    pub async fn friendship_token(
        &self,
        signer: Signer<'_>,
    ) -> Result<FriendshipToken, ServerError> {
        self.call(
            Method::GET,
            api::QS_FRIENDSHIP_TOKEN,
            None,
            Some(signer),
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `POST /qs/v1/key-packages/claim`: one entry per client of the token's user, unchecked.
    /// Public (the QS must not learn who adds whom) and rate limited (429 `rate_limited`).
    pub async fn claim_key_packages(
        &self,
        token: &FriendshipToken,
    ) -> Result<ClaimedKeyPackages, ServerError> {
        let body = codec::encode(&ClaimKeyPackages {
            token: token.clone(),
        });
        self.call(
            Method::POST,
            api::QS_CLAIM_KEY_PACKAGES,
            Some(body),
            None,
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `POST /ds/v1/groups`: creates a group with its creator as the only member.
    pub async fn create_group(&self, body: &ds::CreateGroup) -> Result<(), ServerError> {
        self.call_no_content(Method::POST, ds::DS_GROUPS, Some(codec::encode(body)), None)
            .await
    }

    /// `POST /ds/v1/groups/{id}/commit`.
    pub async fn commit(
        &self,
        group_id: &[u8],
        body: &ds::CommitRequest,
    ) -> Result<ds::Committed, ServerError> {
        let path = ds::ds_commit(group_id);
        self.call(
            Method::POST,
            &path,
            Some(codec::encode(body)),
            None,
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `POST /ds/v1/groups/{id}/messages`: an application message for the other members.
    pub async fn send_message(
        &self,
        group_id: &[u8],
        body: &ds::SendMessage,
    ) -> Result<(), ServerError> {
        let path = ds::ds_messages(group_id);
        self.call_no_content(Method::POST, &path, Some(codec::encode(body)), None)
            .await
    }

    /// `POST /ds/v1/groups/{id}/external-commit-info`.
    pub async fn external_commit_info(
        &self,
        group_id: &[u8],
        ear_key: &EarKey,
    ) -> Result<ds::ExternalCommitInfo, ServerError> {
        let path = ds::ds_external_commit_info(group_id);
        let body = ds::EarKeyProof {
            ear_key: ear_key.clone(),
        };
        self.call(
            Method::POST,
            &path,
            Some(codec::encode(&body)),
            None,
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `POST /ds/v1/groups/{id}/join-connection-group`: succeeds once per connection group.
    pub async fn join_connection_group(
        &self,
        group_id: &[u8],
        body: &ds::JoinConnectionGroup,
    ) -> Result<ds::Committed, ServerError> {
        let path = ds::ds_join_connection_group(group_id);
        self.call(
            Method::POST,
            &path,
            Some(codec::encode(body)),
            None,
            REQUEST_TIMEOUT,
        )
        .await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        signer: Option<Signer<'_>>,
        timeout: Duration,
    ) -> Result<T, ServerError> {
        let response = self
            .send(method, path_and_query, body, signer, timeout)
            .await?;
        check_content_type(&response)?;
        let bytes = read_limited(response, codec::DEFAULT_LIMIT).await?;
        codec::decode(&bytes).map_err(|e| ServerError::Malformed(e.to_string()))
    }

    async fn call_no_content(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        signer: Option<Signer<'_>>,
    ) -> Result<(), ServerError> {
        self.send(method, path, body, signer, REQUEST_TIMEOUT)
            .await
            .map(drop)
    }

    /// Sends a request and turns any non-2xx answer into [`ServerError::Http`].
    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        signer: Option<Signer<'_>>,
        timeout: Duration,
    ) -> Result<reqwest::Response, ServerError> {
        let url = self
            .base
            .join(path_and_query)
            .map_err(|e| ServerError::BadUrl {
                url: format!("{}{path_and_query}", self.base_text),
                reason: e.to_string(),
            })?;
        let body = body.unwrap_or_default();
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .timeout(timeout)
            .header(header::ACCEPT, api::CONTENT_TYPE);
        if let Some(signer) = signer {
            let signature = RequestSignature::sign(
                signer.key,
                signer.client_id,
                method.as_str(),
                &wire_path_and_query(&url),
                &body,
                now_millis(),
            );
            request = request.header(header::AUTHORIZATION, signature.to_header());
        }
        if !body.is_empty() {
            request = request
                .header(header::CONTENT_TYPE, api::CONTENT_TYPE)
                .body(body);
        }
        let response = request.send().await.map_err(ServerError::network)?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(http_error(response).await)
        }
    }
}

/// The path and query exactly as reqwest puts them in the request line.
fn wire_path_and_query(url: &Url) -> String {
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    }
}

fn bad_url(url: &str, reason: &str) -> ServerError {
    ServerError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Checks a base URL and returns it without a trailing slash.
fn normalize_base_url(base_url: &str) -> Result<String, ServerError> {
    if !base_url.contains("://") {
        return Err(bad_url(
            base_url,
            "give the scheme too, e.g. http://127.0.0.1:8080",
        ));
    }
    let url = Url::parse(base_url.trim()).map_err(|e| bad_url(base_url, &e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad_url(base_url, "the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad_url(base_url, "a host is required"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad_url(base_url, "credentials do not belong in the URL"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(bad_url(
            base_url,
            "give only scheme, host and port (no path, query or fragment)",
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn check_content_type(response: &reqwest::Response) -> Result<(), ServerError> {
    let Some(value) = response.headers().get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    if essence.eq_ignore_ascii_case(api::CONTENT_TYPE) {
        Ok(())
    } else {
        Err(ServerError::Malformed(format!(
            "expected content type {}, got {value:?}",
            api::CONTENT_TYPE
        )))
    }
}

/// Reads a body, refusing one longer than `limit` without buffering it.
async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ServerError> {
    let too_large = || ServerError::Malformed(format!("the body exceeds {limit} bytes"));
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(ServerError::network)? {
        if bytes.len() + chunk.len() > limit {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

async fn http_error(response: reqwest::Response) -> ServerError {
    let status = response.status();
    let fallback_code = format!("http_{}", status.as_u16());
    let body = match read_limited(response, ERROR_BODY_LIMIT).await {
        Ok(body) => body,
        Err(e) => {
            return ServerError::Http {
                status: status.as_u16(),
                code: fallback_code,
                message: format!("{} (and its body was unreadable: {e})", reason(status)),
            }
        }
    };
    match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(ErrorBody { error, message }) => ServerError::Http {
            status: status.as_u16(),
            code: error,
            message,
        },
        Err(_) => {
            let text = String::from_utf8_lossy(&body);
            let text: String = text.trim().chars().take(200).collect();
            ServerError::Http {
                status: status.as_u16(),
                code: fallback_code,
                message: if text.is_empty() {
                    reason(status).to_owned()
                } else {
                    text
                },
            }
        }
    }
}

fn reason(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("unexpected status")
}

/// A batch must be in increasing order, start at or after `from` and respect `max`: anything
/// else would move the queue position wrongly.
fn check_batch(batch: &QueueBatch, from: u64, max: u32) -> Result<(), ServerError> {
    if batch.messages.len() > max as usize {
        return Err(ServerError::Malformed(format!(
            "{} messages returned where at most {max} were asked for",
            batch.messages.len()
        )));
    }
    let mut floor = from;
    for (i, message) in batch.messages.iter().enumerate() {
        if message.seq < floor || (i > 0 && message.seq == floor) {
            return Err(ServerError::Malformed(format!(
                "message {} is out of order (asked from {from})",
                message.seq
            )));
        }
        floor = message.seq;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalized_or_refused() {
        assert_eq!(
            normalize_base_url("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            normalize_base_url("https://roost.example.org").unwrap(),
            "https://roost.example.org"
        );
        for bad in [
            "127.0.0.1:8080",
            "ftp://x.org",
            "http://x.org/prefix",
            "http://x.org/?a=1",
            "http://u:p@x.org",
            "",
        ] {
            assert!(normalize_base_url(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn the_signed_path_is_the_wire_path() {
        let server = Server::new("http://127.0.0.1:9/").unwrap();
        let id = ClientId([0xab; 16]);
        let url = server
            .base
            .join(&format!(
                "{}?from=1&max=2&wait_ms=0",
                api::qs_queue_messages(&id)
            ))
            .unwrap();
        assert_eq!(
            wire_path_and_query(&url),
            format!("/qs/v1/queues/{id}/messages?from=1&max=2&wait_ms=0")
        );
        let user: UserName = "alice@localhost:8080".parse().unwrap();
        let url = server.base.join(&api::as_user_clients(&user)).unwrap();
        assert_eq!(url.path(), "/as/v1/users/alice@localhost:8080/clients");
    }

    #[test]
    fn out_of_order_batches_are_refused() {
        use roost_protocol::{api::QueueMessage, crypto::Sealed};
        let message = |seq| QueueMessage {
            seq,
            sealed: Sealed {
                encapsulated_key: [0; 32],
                ciphertext: vec![],
            },
        };
        let batch = |seqs: &[u64]| QueueBatch {
            messages: seqs.iter().map(|&s| message(s)).collect(),
            has_more: false,
        };
        assert!(check_batch(&batch(&[3, 4, 9]), 3, 10).is_ok());
        assert!(check_batch(&batch(&[2, 4]), 3, 10).is_err());
        assert!(check_batch(&batch(&[4, 4]), 3, 10).is_err());
        assert!(check_batch(&batch(&[5, 4]), 3, 10).is_err());
        assert!(check_batch(&batch(&[3, 4]), 3, 1).is_err());
    }
}
