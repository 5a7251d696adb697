//! This homeserver as a federation peer: the signed HTTP client the federation actors relay
//! through ([`HttpTransport`]), and the caches of what other homeservers publish
//! ([`PeerCache`]): their request-signing keys, which incoming relays are checked against
//! ([`PeerKeys`]), and their token policies, whose issuer keys their users' Privacy Pass tokens
//! are checked against.
//!
//! What a homeserver publishes is fetched from its own domain (resolved by the
//! `federation.resolve` table, else `https://DOMAIN`), so a server can only ever speak for the
//! domain it is reached at. It is cached for [`KEY_TTL`]; a signature or token that fails
//! against a cached copy older than [`REFETCH_AFTER`] fetches it once more (the peer may have
//! a new key).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::{future::BoxFuture, FutureExt};
use reqwest::{header, StatusCode};

use roost_actors::{
    federation::{RelayError, Transport},
    keys::KeyRing,
};
use roost_protocol::{
    api::CONTENT_TYPE,
    auth::ServerSignature,
    codec,
    federation::{
        FederatedDelivery, RelayBatch, RelayOutcome, RelayReceipt, Resolver, ServerKey,
        FED_DELIVER, FED_SERVER_KEY,
    },
    ids::now_millis,
    tokens::policy::{TokenPolicy, AS_TOKEN_POLICY, MAX_POLICY_BYTES},
    Domain, VerifyingKey,
};

/// How long a peer's key is trusted without asking again.
pub const KEY_TTL: Duration = Duration::from_secs(600);
/// A failing signature makes a key at least this old be fetched again.
pub const REFETCH_AFTER: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_secs(15);
/// Largest server-key answer read.
const KEY_BODY_LIMIT: usize = 4096;
/// Largest relay receipt read: an outcome per delivery, a refusal with its sentence.
const RECEIPT_BODY_LIMIT: usize = 256 * 1024;
/// The most of an error answer read, to quote it in the log.
const ERROR_BODY_LIMIT: usize = 4096;

/// Reads an answer's body, giving up as soon as it passes `limit` bytes: another server decides
/// what it sends, so nothing of it is taken whole.
async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(BodyError::TooLarge(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Broken)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("the answer exceeds {0} bytes")]
    TooLarge(usize),
    #[error("the answer broke off: {0}")]
    Broken(reqwest::Error),
}

/// The HTTP client this server reaches other homeservers with: their certificates are checked
/// against the system's roots and `extra_roots` (`federation.ca_file`). One serves relays and
/// key fetches alike, sharing its connections.
pub fn http_client(extra_roots: &[reqwest::Certificate]) -> reqwest::Client {
    extra_roots
        .iter()
        .fold(reqwest::Client::builder(), |builder, root| {
            builder.add_root_certificate(root.clone())
        })
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .build()
        .expect("the HTTP client builds")
}

/// Relays deliveries to other homeservers, signed with this server's key in force (asked at
/// every batch: a retry after a rotation is signed with the new key).
pub struct HttpTransport {
    client: reqwest::Client,
    resolver: Resolver,
    domain: Domain,
    keys: KeyRing,
}

impl HttpTransport {
    pub fn new(domain: Domain, keys: KeyRing, resolver: Resolver, client: reqwest::Client) -> Self {
        HttpTransport {
            client,
            resolver,
            domain,
            keys,
        }
    }
}

impl Transport for HttpTransport {
    fn deliver(
        &self,
        to: &Domain,
        deliveries: Vec<FederatedDelivery>,
    ) -> BoxFuture<'static, Result<Vec<RelayOutcome>, RelayError>> {
        let url = format!("{}{FED_DELIVER}", self.resolver.base_url(to));
        let body = codec::encode(&RelayBatch { deliveries });
        let signature = ServerSignature::sign(
            &self.keys.federation_key(),
            self.domain.clone(),
            "POST",
            FED_DELIVER,
            &body,
            now_millis(),
        );
        let request = self
            .client
            .post(url)
            .header(header::AUTHORIZATION, signature.to_header())
            .header(header::CONTENT_TYPE, CONTENT_TYPE)
            .body(body);
        async move {
            let response = request.send().await.map_err(|e| {
                RelayError::Retry(format!(
                    "cannot reach the homeserver: {}",
                    roost_protocol::error_chain(&e)
                ))
            })?;
            let status = response.status();
            if status.is_success() {
                let bytes = read_limited(response, RECEIPT_BODY_LIMIT)
                    .await
                    .map_err(|e| RelayError::Retry(format!("the homeserver's receipt: {e}")))?;
                let receipt: RelayReceipt = codec::decode(&bytes).map_err(|e| {
                    RelayError::Refused(format!("the homeserver's answer is unreadable: {e}"))
                })?;
                return Ok(receipt.outcomes);
            }
            let text = read_limited(response, ERROR_BODY_LIMIT)
                .await
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_else(|e| e.to_string());
            let why = format!(
                "answered {status}: {}",
                text.chars().take(300).collect::<String>()
            );
            let worth_retrying = status.is_server_error()
                || matches!(
                    status,
                    StatusCode::UNAUTHORIZED
                        | StatusCode::REQUEST_TIMEOUT
                        | StatusCode::TOO_MANY_REQUESTS
                );
            Err(if worth_retrying {
                RelayError::Retry(why)
            } else {
                RelayError::Refused(why)
            })
        }
        .boxed()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PeerKeyError {
    #[error("cannot fetch the {what} of {domain}: {why}")]
    Unreachable {
        what: &'static str,
        domain: Domain,
        why: String,
    },
    #[error("{0} served what another domain publishes")]
    WrongDomain(Domain),
}

/// Something each homeserver publishes about itself, at a path of its own domain.
pub trait Published: Clone + Send + 'static {
    const PATH: &'static str;
    /// Largest answer read.
    const LIMIT: usize;
    /// What it is, for errors.
    const WHAT: &'static str;
    type Served: serde::de::DeserializeOwned;
    /// What was served, if it is `domain`'s own.
    fn of(served: Self::Served, domain: &Domain) -> Option<Self>;
}

impl Published for VerifyingKey {
    const PATH: &'static str = FED_SERVER_KEY;
    const LIMIT: usize = KEY_BODY_LIMIT;
    const WHAT: &'static str = "server key";
    type Served = ServerKey;
    fn of(served: ServerKey, domain: &Domain) -> Option<VerifyingKey> {
        (&served.domain == domain).then_some(served.verifying_key)
    }
}

impl Published for TokenPolicy {
    const PATH: &'static str = AS_TOKEN_POLICY;
    const LIMIT: usize = MAX_POLICY_BYTES;
    const WHAT: &'static str = "token policy";
    type Served = TokenPolicy;
    fn of(served: TokenPolicy, domain: &Domain) -> Option<TokenPolicy> {
        (&served.domain == domain).then_some(served)
    }
}

/// Other homeservers' request-signing keys.
pub type PeerKeys = PeerCache<VerifyingKey>;

/// What other homeservers publish, fetched from their domains and cached.
#[derive(Clone)]
pub struct PeerCache<T> {
    client: reqwest::Client,
    resolver: Resolver,
    cache: Arc<Mutex<HashMap<Domain, (T, Instant)>>>,
}

impl<T: Published> PeerCache<T> {
    pub fn new(resolver: Resolver, client: reqwest::Client) -> Self {
        PeerCache {
            client,
            resolver,
            cache: Arc::default(),
        }
    }

    /// Whether a fresh key of `domain` is at hand (so no fetch is needed).
    pub fn is_cached(&self, domain: &Domain) -> bool {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(domain)
            .is_some_and(|(_, at)| at.elapsed() < KEY_TTL)
    }

    /// What `domain` publishes: cached if fresh (and, with `refresh`, younger than
    /// [`REFETCH_AFTER`]), else fetched from the domain.
    pub async fn key(&self, domain: &Domain, refresh: bool) -> Result<T, PeerKeyError> {
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(domain)
            .cloned();
        if let Some((key, at)) = cached {
            let age = at.elapsed();
            if age < KEY_TTL && !(refresh && age >= REFETCH_AFTER) {
                return Ok(key);
            }
        }
        let key = self.fetch(domain).await?;
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(domain.clone(), (key.clone(), Instant::now()));
        Ok(key)
    }

    async fn fetch(&self, domain: &Domain) -> Result<T, PeerKeyError> {
        let unreachable = |why: String| PeerKeyError::Unreachable {
            what: T::WHAT,
            domain: domain.clone(),
            why,
        };
        let url = format!("{}{}", self.resolver.base_url(domain), T::PATH);
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| unreachable(roost_protocol::error_chain(&e)))?;
        if !response.status().is_success() {
            return Err(unreachable(format!("it answered {}", response.status())));
        }
        let body = read_limited(response, T::LIMIT)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let served: T::Served =
            codec::decode(&body).map_err(|e| unreachable(format!("unreadable answer: {e}")))?;
        T::of(served, domain).ok_or_else(|| PeerKeyError::WrongDomain(domain.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers 200 with an endless body; counts what it wrote.
    async fn endless(written: Arc<AtomicU64>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let written = written.clone();
                tokio::spawn(async move {
                    let _ = stream.read(&mut [0u8; 8192]).await;
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
                    let chunk = vec![0u8; 64 * 1024];
                    for _ in 0..16 * 1024 {
                        if stream.write_all(&chunk).await.is_err() {
                            break;
                        }
                        written.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                    }
                });
            }
        });
        url
    }

    #[tokio::test]
    async fn an_endless_relay_receipt_is_given_up_on_at_its_limit() {
        let written = Arc::new(AtomicU64::new(0));
        let url = endless(written.clone()).await;
        let peer: Domain = "endless.test".parse().unwrap();
        let resolver = Resolver::from_entries(&[format!("endless.test={url}")]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = roost_storage::Store::open(dir.path()).unwrap();
        let domain: Domain = "a.test".parse().unwrap();
        let keys = KeyRing::load(
            crate::server::server_keys(&store, &domain).unwrap(),
            store.server_keys().unwrap(),
            store.durability().clone(),
            3600,
        )
        .unwrap();
        let transport = HttpTransport::new(domain, keys, resolver.clone(), http_client(&[]));
        let outcome = transport.deliver(&peer, Vec::new()).await;
        assert!(
            matches!(&outcome, Err(RelayError::Retry(why)) if why.contains("exceeds")),
            "{outcome:?}"
        );
        let keys = PeerKeys::new(resolver, http_client(&[]));
        let key = keys.key(&peer, false).await;
        assert!(
            matches!(&key, Err(PeerKeyError::Unreachable { why, .. }) if why.contains("exceeds")),
            "{key:?}"
        );
        // What the kernel's buffers took, not the gigabyte on offer.
        assert!(written.load(Ordering::SeqCst) < 64 * 1024 * 1024);
    }
}
