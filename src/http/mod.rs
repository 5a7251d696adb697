//! The HTTP front-end: turns requests into actor messages and answers into responses.
//!
//! Owns: routing, body limits, decoding of untrusted bytes, request authentication, and the
//! error-to-HTTP mapping ([`error`]). Must not touch: stored state directly, except reading
//! client records to authenticate requests and looking up whose a friendship token is — every
//! change goes through an actor.

mod as_api;
mod as_connect;
pub mod auth;
pub mod connections;
mod ds_api;
pub mod error;
mod federation;
pub mod health;
mod profiles;
mod qs_api;
mod qs_keys;
mod queues;
pub mod rate_limit;
pub mod tokens;

use std::sync::Arc;

use actix::Addr;
use actix_web::{
    web::{self, Bytes},
    HttpRequest, HttpResponse,
};
use futures_util::StreamExt;
use serde::{de::DeserializeOwned, Serialize};

use self::{error::ApiError, rate_limit::RateLimiter};
use roost_actors::{
    accounts::AccountsActor,
    directory::Directory,
    group::GroupActor,
    replay::{Replay, ReplayGuard},
    KeyPackageActor, Pool, QueueActor, RegistryActor,
};
use roost_protocol::{api::CONTENT_TYPE, codec, Domain, HpkePublicKey};

/// What every handler can reach.
pub struct AppState {
    pub domain: Domain,
    pub max_body_bytes: usize,
    /// How long a request's body may take to arrive.
    pub body_deadline: std::time::Duration,
    pub accounts: Addr<AccountsActor>,
    pub queues: Addr<Pool<QueueActor>>,
    pub registries: Addr<Pool<RegistryActor>>,
    pub groups: Addr<Pool<GroupActor>>,
    pub key_packages: Addr<Pool<KeyPackageActor>>,
    /// Public half of the key sealed queue references are opened with.
    pub queue_ref_key: HpkePublicKey,
    /// Per client IP address, for discovery and key-package claims alike.
    pub discovery_limit: RateLimiter,
    /// Sealed connection requests, per client IP address.
    pub request_limit: RateLimiter,
    /// Relayed deliveries, per peer domain.
    pub relay_limit: RateLimiter<Domain>,
    /// Sealed connection requests one address gets in through one last-resort package (not the
    /// package's alone: then a few addresses could make its user unreachable for new contacts).
    pub last_resort_limit: RateLimiter<(
        roost_protocol::connection::ConnectionPackageHash,
        std::net::IpAddr,
    )>,
    /// Request body bytes, per client IP address: whatever a request is, what one address can
    /// make the server write per minute.
    pub body_bytes_limit: RateLimiter,
    /// Whose a client or a friendship token is, read before a request reaches an actor.
    pub directory: Directory,
    /// When each client was last seen, for expiring idle ones.
    pub activity: roost_actors::activity::ActivityRecorder,
    /// For the disk's free space and whether writes are becoming durable.
    pub store: roost_storage::Store,
    /// The signing keys in force: the AS credentials served, the federation key.
    pub keys: roost_actors::keys::KeyRing,
    pub replay: ReplayGuard,
    pub federation: FederationState,
    pub tokens: tokens::TokenState,
}

/// What the federation endpoints need.
pub struct FederationState {
    pub peers: crate::federation::PeerKeys,
    pub policy: roost_actors::federation_policy::FederationPolicy,
    /// Where relayed deliveries go: the QS's one path into queues by sealed reference.
    pub deliveries: roost_actors::qs::SealedDelivery,
}

pub type State = web::Data<Arc<AppState>>;

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/health")
                .route(web::get().to(health::health))
                .default_service(web::to(method_not_allowed)),
        )
        .configure(as_api::routes)
        .configure(as_connect::routes)
        .configure(ds_api::routes)
        .configure(federation::routes)
        .configure(qs_api::routes)
        .configure(qs_keys::routes)
        .configure(profiles::routes)
        .configure(tokens::routes)
        .default_service(web::to(not_found));
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

pub(crate) async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

/// Largest body of a public request that carries only names, a password, keys or a token
/// (registration, adding a client, claiming key packages): far below the general limit.
pub(crate) const SMALL_BODY: usize = 16 * 1024;

/// Reads the whole body, refusing more than the configured limit without buffering it, and a
/// body that takes longer than the body deadline.
pub(crate) async fn read_body(
    state: &AppState,
    request: &HttpRequest,
    payload: web::Payload,
) -> Result<Bytes, ApiError> {
    read_body_up_to(state, request, payload, state.max_body_bytes).await
}

/// [`read_body`] for a route whose bodies are smaller: at most `limit` bytes (and never more
/// than the general limit).
pub(crate) async fn read_body_up_to(
    state: &AppState,
    request: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let limit = limit.min(state.max_body_bytes);
    let declared = request
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::BodyTooLarge(limit));
    }
    let read = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| ApiError::MalformedBody(e.to_string()))?;
            if body.len() + chunk.len() > limit {
                return Err(ApiError::BodyTooLarge(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    // A body trickling in would hold its connection, and a slot of its address, for ever.
    let body = tokio::time::timeout(state.body_deadline, read)
        .await
        .map_err(|_| ApiError::BodyTimeout(state.body_deadline.as_secs()))??;
    if let (false, Some(addr)) = (body.is_empty(), request.peer_addr()) {
        let bytes = u32::try_from(body.len()).unwrap_or(u32::MAX);
        limited(
            state
                .body_bytes_limit
                .take(rate_limit::source(addr.ip()), bytes),
            "limits.body_bytes_per_minute_per_address",
        )?;
    }
    Ok(body)
}

/// Whether a request may add data or change state: every POST and PUT but acknowledgements
/// (which, like GETs and DELETEs, only read, free or repeat harmlessly). Such requests are
/// refused on a full disk, and only their signatures need to outlive a restart. (Discovery and
/// the first friendship token are GETs that write a few bytes: the disk reserve covers them.)
pub(crate) fn adds_data(method: &actix_web::http::Method, path: &str) -> bool {
    use actix_web::http::Method;
    matches!(*method, Method::POST | Method::PUT) && !path.ends_with("/ack")
}

/// Reads the body and checks the request's signature over it: for every non-public endpoint.
pub(crate) async fn signed_request(
    state: &AppState,
    request: &HttpRequest,
    payload: web::Payload,
) -> Result<(auth::Caller, Bytes), ApiError> {
    let body = read_body(state, request, payload).await?;
    let replay = if adds_data(request.method(), request.path()) {
        Replay::Refuse
    } else {
        Replay::Harmless
    };
    let caller = auth::authenticate(request, &body, &state.directory, &state.replay, replay)?;
    state.activity.saw(&caller.client.0);
    Ok((caller, body))
}

/// Takes one token from the caller's IP address's bucket: for public endpoints that could be
/// used to enumerate users or drain their packages.
pub(crate) fn rate_limit(state: &AppState, request: &HttpRequest) -> Result<(), ApiError> {
    limit_address(&state.discovery_limit, request, DISCOVERY_SETTING)
}

/// The setting of [`AppState::discovery_limit`].
pub(crate) const DISCOVERY_SETTING: &str = "connections.discovery_per_minute";

/// Takes one token from the caller's IP address's bucket in `limiter`, whose rate `setting`
/// names.
pub(crate) fn limit_address(
    limiter: &RateLimiter,
    request: &HttpRequest,
    setting: &'static str,
) -> Result<(), ApiError> {
    match request.peer_addr() {
        Some(addr) => limited(limiter.check(rate_limit::source(addr.ip())), setting),
        None => Ok(()),
    }
}

/// A refused token as the caller sees it: 429 with Retry-After, naming the setting.
pub(crate) fn limited(
    check: Result<(), std::time::Duration>,
    setting: &'static str,
) -> Result<(), ApiError> {
    check.map_err(|wait| ApiError::RateLimited {
        retry_after_secs: wait.as_secs().max(1),
        setting,
    })
}

pub(crate) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    Ok(codec::decode(body)?)
}

pub(crate) fn encoded<T: Serialize>(
    status: actix_web::http::StatusCode,
    value: &T,
) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(CONTENT_TYPE)
        .body(codec::encode(value))
}

/// Parses a path segment, naming it in the error.
pub(crate) fn path_param<T: std::str::FromStr>(value: &str, what: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| ApiError::BadPath(format!("{what} {value:?} is invalid: {e}")))
}
