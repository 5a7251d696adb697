//! This homeserver as a federation peer: the signed HTTP client the federation actors relay
//! through ([`HttpTransport`]), and the cache of other homeservers' request-signing keys that
//! incoming relays are checked against ([`PeerKeys`]).
//!
//! A homeserver's key is fetched from its own domain (resolved by the `federation.resolve`
//! table, else `https://DOMAIN`), so a server can only ever speak for the domain it is reached
//! at. Keys are cached for [`KEY_TTL`]; a signature that fails against a cached key older than
//! [`REFETCH_AFTER`] fetches the key once more (the peer may have a new one).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::{future::BoxFuture, FutureExt};
use reqwest::{header, StatusCode};

use roost_actors::federation::{RelayError, Transport};
use roost_protocol::{
    api::CONTENT_TYPE,
    auth::ServerSignature,
    codec,
    federation::{
        FederatedDelivery, RelayBatch, RelayOutcome, RelayReceipt, Resolver, ServerKey,
        FED_DELIVER, FED_SERVER_KEY,
    },
    ids::now_millis,
    Domain, SigningKey, VerifyingKey,
};

/// How long a peer's key is trusted without asking again.
pub const KEY_TTL: Duration = Duration::from_secs(600);
/// A failing signature makes a key at least this old be fetched again.
pub const REFETCH_AFTER: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_secs(15);
/// Largest server-key answer read.
const KEY_BODY_LIMIT: usize = 4096;

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .build()
        .expect("the HTTP client builds")
}

/// Relays deliveries to other homeservers, signed with this server's key.
pub struct HttpTransport {
    client: reqwest::Client,
    resolver: Resolver,
    domain: Domain,
    key: SigningKey,
}

impl HttpTransport {
    pub fn new(domain: Domain, key: SigningKey, resolver: Resolver) -> Self {
        HttpTransport {
            client: http_client(),
            resolver,
            domain,
            key,
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
            &self.key,
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
            let response = request
                .send()
                .await
                .map_err(|e| RelayError::Retry(format!("cannot reach the homeserver: {e}")))?;
            let status = response.status();
            if status.is_success() {
                let bytes = response.bytes().await.map_err(|e| {
                    RelayError::Retry(format!("the homeserver's answer broke off: {e}"))
                })?;
                let receipt: RelayReceipt = codec::decode(&bytes).map_err(|e| {
                    RelayError::Refused(format!("the homeserver's answer is unreadable: {e}"))
                })?;
                return Ok(receipt.outcomes);
            }
            let text = response.text().await.unwrap_or_default();
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
    #[error("cannot fetch the server key of {domain}: {why}")]
    Unreachable { domain: Domain, why: String },
    #[error("{0} served a server key of another domain")]
    WrongDomain(Domain),
}

/// Other homeservers' request-signing keys, fetched from their domains and cached.
#[derive(Clone)]
pub struct PeerKeys {
    client: reqwest::Client,
    resolver: Resolver,
    cache: Arc<Mutex<HashMap<Domain, (VerifyingKey, Instant)>>>,
}

impl PeerKeys {
    pub fn new(resolver: Resolver) -> Self {
        PeerKeys {
            client: http_client(),
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

    /// `domain`'s key: cached if fresh (and, with `refresh`, younger than [`REFETCH_AFTER`]),
    /// else fetched from the domain.
    pub async fn key(&self, domain: &Domain, refresh: bool) -> Result<VerifyingKey, PeerKeyError> {
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(domain)
            .copied();
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
            .insert(domain.clone(), (key, Instant::now()));
        Ok(key)
    }

    async fn fetch(&self, domain: &Domain) -> Result<VerifyingKey, PeerKeyError> {
        let unreachable = |why: String| PeerKeyError::Unreachable {
            domain: domain.clone(),
            why,
        };
        let url = format!("{}{FED_SERVER_KEY}", self.resolver.base_url(domain));
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(unreachable(format!("it answered {}", response.status())));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        if body.len() > KEY_BODY_LIMIT {
            return Err(unreachable("the answer is too large".into()));
        }
        let served: ServerKey =
            codec::decode(&body).map_err(|e| unreachable(format!("unreadable answer: {e}")))?;
        if &served.domain != domain {
            return Err(PeerKeyError::WrongDomain(domain.clone()));
        }
        Ok(served.verifying_key)
    }
}
