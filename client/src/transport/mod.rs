//! The transport: the homeserver's HTTP API, one method per endpoint, and where each domain's
//! homeserver is reached.
//!
//! Owns: the HTTP plumbing ([`Server`]: requests signed where the API requires it, bodies
//! bounded, error bodies read into [`ServerError`]), the endpoints grouped by service
//! (`as_api`, `qs_api`, `ds_api`) and the map from domains to servers
//! ([`Homeservers`]). Must not touch: the local store or MLS state; it knows requests and
//! answers, not what a client keeps.
//!
//! Bodies are [`codec`]-encoded both ways; error responses carry a JSON [`ErrorBody`] whose code
//! and message are kept in [`ServerError::Http`]. Signed requests sign exactly the path and
//! query that go on the wire, taken from the final URL, so the server checks what it received.

mod as_api;
mod ds_api;
mod homeservers;
mod pay;
mod qs_api;
mod queues;

use std::time::Duration;

use reqwest::{header, Method, StatusCode, Url};
use roost_protocol::{
    api::{self, ErrorBody},
    auth::RequestSignature,
    codec,
    ids::now_millis,
    tokens::policy::Operation,
    ClientId, SigningKey,
};
use serde::de::DeserializeOwned;

pub use homeservers::{fetch_as_credentials, verify_with, Homeservers, TrustError};
pub use pay::{Pay, Payer};
pub use queues::{Queue, QueueKind};

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
    #[error("cannot read the CA file {path}: {why}")]
    CaFile { path: String, why: String },
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
            ServerError::CaFile { .. } => "bad_ca_file",
        }
    }

    /// Whether trying again may succeed: the server was not reached, or failed on its side.
    pub fn is_transient(&self) -> bool {
        match self {
            ServerError::Network(_) => true,
            ServerError::Http { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    fn network(error: reqwest::Error) -> Self {
        ServerError::Network(roost_protocol::error_chain(&error))
    }
}

/// Pauses before each further attempt of an idempotent request (one whose repeat the server
/// answers as it answered the first).
const RETRY_PAUSES: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(400),
    Duration::from_millis(1500),
];

/// Runs `attempt` until it succeeds, fails for good, or has failed transiently once more than
/// there are [`RETRY_PAUSES`]. Only for requests whose repeat changes nothing: those that carry
/// an operation id, and reading and acknowledging a queue.
async fn retrying<T, F: std::future::Future<Output = Result<T, ServerError>>>(
    mut attempt: impl FnMut() -> F,
) -> Result<T, ServerError> {
    let mut pauses = RETRY_PAUSES.iter();
    loop {
        match attempt().await {
            Err(e) if e.is_transient() => match pauses.next() {
                Some(pause) => tokio::time::sleep(*pause).await,
                None => return Err(e),
            },
            outcome => return outcome,
        }
    }
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

/// One homeserver, reached over HTTP(S). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Server {
    base: Url,
    base_text: String,
    http: reqwest::Client,
    /// What pays for its costly anonymous operations, if anything does.
    payer: Option<Payer>,
}

/// CA certificates trusted beside the system's roots, for a private deployment's own CA (the
/// `--ca-file` of `roost-client`). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ExtraRoots(std::sync::Arc<[reqwest::Certificate]>);

impl ExtraRoots {
    /// The certificates of a PEM file.
    pub fn from_pem_file(path: &std::path::Path) -> Result<ExtraRoots, ServerError> {
        let error = |why: String| ServerError::CaFile {
            path: path.display().to_string(),
            why,
        };
        let pem = std::fs::read(path).map_err(|e| error(e.to_string()))?;
        let roots =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| error(e.to_string()))?;
        if roots.is_empty() {
            return Err(error("it holds no PEM certificate".into()));
        }
        Ok(ExtraRoots(roots.into()))
    }
}

/// Where a client reaches a homeserver: a URL, or a [`Server`] already made (with
/// [`ExtraRoots`], say).
pub trait ToServer {
    fn to_server(self) -> Result<Server, ServerError>;
}

impl ToServer for &str {
    fn to_server(self) -> Result<Server, ServerError> {
        Server::new(self)
    }
}

impl ToServer for &String {
    fn to_server(self) -> Result<Server, ServerError> {
        Server::new(self)
    }
}

impl ToServer for Server {
    fn to_server(self) -> Result<Server, ServerError> {
        Ok(self)
    }
}

impl Server {
    /// `base_url` is e.g. `http://127.0.0.1:8080` or `https://roost.example.org/`: scheme and
    /// host (and port), nothing else, since signatures cover the path the server sees.
    pub fn new(base_url: &str) -> Result<Server, ServerError> {
        Server::with_roots(base_url, &ExtraRoots::default())
    }

    /// A server whose certificate may also be signed by one of `roots`.
    pub fn with_roots(base_url: &str, roots: &ExtraRoots) -> Result<Server, ServerError> {
        let base_text = normalize_base_url(base_url)?;
        let base = Url::parse(&base_text).map_err(|e| bad_url(base_url, &e.to_string()))?;
        let http = roots
            .0
            .iter()
            .fold(reqwest::Client::builder(), |builder, root| {
                builder.add_root_certificate(root.clone())
            })
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("roost-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ServerError::network)?;
        Ok(Server {
            base,
            base_text,
            http,
            payer: None,
        })
    }

    /// This server, paying for its costly anonymous operations with `payer`.
    pub fn paying(self, payer: Payer) -> Server {
        Server {
            payer: Some(payer),
            ..self
        }
    }

    /// The base URL without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_text
    }

    /// A `GET` answered with a body.
    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        signer: Option<Signer<'_>>,
    ) -> Result<T, ServerError> {
        self.call(Method::GET, path, None, signer, REQUEST_TIMEOUT)
            .await
    }

    /// A `POST` of `body`, answered with a body.
    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Vec<u8>,
        signer: Option<Signer<'_>>,
    ) -> Result<T, ServerError> {
        self.call(Method::POST, path, Some(body), signer, REQUEST_TIMEOUT)
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

    /// Sends a request, paying for it if it is a costly anonymous operation, and turns any
    /// non-2xx answer into [`ServerError::Http`].
    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        signer: Option<Signer<'_>>,
        timeout: Duration,
    ) -> Result<reqwest::Response, ServerError> {
        let operation = signer
            .is_none()
            .then(|| Operation::of_request(method.as_str(), path_and_query))
            .flatten();
        match (&self.payer, operation) {
            (Some(payer), Some(operation)) => {
                self.send_paying(payer, operation, method, path_and_query, body, timeout)
                    .await
            }
            _ => {
                self.send_once(method, path_and_query, body, signer, timeout, None)
                    .await
            }
        }
    }

    /// Sends a request once, with `tokens` as its Authorization if given.
    async fn send_once(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        signer: Option<Signer<'_>>,
        timeout: Duration,
        tokens: Option<&str>,
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
        } else if let Some(tokens) = tokens {
            request = request.header(header::AUTHORIZATION, tokens);
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

#[cfg(test)]
mod tests {
    use super::*;
    use roost_protocol::UserName;

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
}
