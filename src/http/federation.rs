//! Federation endpoints: this server's request-signing key (public), and relayed group
//! deliveries from other homeservers (server-signed), which go into the named local queue once
//! per delivery id.
//!
//! A relay is refused unless: its sender's domain may federate with this server (403
//! `domain_not_allowed`), it carries a valid, fresh, first-seen signature by the key the
//! sender's own domain serves (401), and it is addressed to this domain with a queue reference
//! this QS opens (400 `wrong_domain` / `bad_queue_ref`). So a server speaks only for its own
//! domain. Fetching a key the cache lacks is rate limited per IP address, like discovery, so an
//! unsigned request cannot make this server fetch keys from anywhere at will.

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};

use roost_actors::{
    queue::{EnqueueRelayed, QueueId},
    Route,
};
use roost_protocol::{
    api::QueueItem,
    auth::{AuthError, ServerSignature},
    federation::{FederatedDelivery, ServerKey, FED_DELIVER, FED_SERVER_KEY},
    ids::now_millis,
};

use super::{decode, encoded, error::ApiError, method_not_allowed, rate_limit, read_body, State};

pub fn routes(config: &mut web::ServiceConfig) {
    let resource = |path: &str| web::resource(path).default_service(web::to(method_not_allowed));
    config
        .service(resource(FED_SERVER_KEY).route(web::get().to(server_key)))
        .service(resource(FED_DELIVER).route(web::post().to(deliver)));
}

async fn server_key(state: State) -> HttpResponse {
    encoded(
        StatusCode::OK,
        &ServerKey {
            domain: state.domain.clone(),
            verifying_key: state.federation.key.verifying_key(),
        },
    )
}

async fn deliver(
    state: State,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(&state, &request, payload).await?;
    let header = request
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?
        .to_str()
        .map_err(|_| ApiError::Unauthenticated("the Authorization header is not text".into()))?;
    let signature = ServerSignature::parse_header(header)?;
    let from = &signature.signer;
    if from == &state.domain {
        return Err(ApiError::Unauthenticated(
            "a relay claims to come from this server's own domain".into(),
        ));
    }
    if !state.federation.policy.allows(from) {
        return Err(ApiError::DomainNotAllowed(from.clone()));
    }
    let verify = |key| signature.verify(&key, "POST", FED_DELIVER, &body, now_millis());
    // An unsigned claim to be some domain makes this server fetch that domain's key: limit how
    // often anyone can make it do that.
    if !state.federation.peers.is_cached(from) {
        rate_limit(&state, &request)?;
    }
    let key = state.federation.peers.key(from, false).await?;
    if let Err(e) = verify(key) {
        let fresh = state.federation.peers.key(from, true).await?;
        if fresh == key {
            return Err(e.into());
        }
        verify(fresh)?;
    }
    if !state.replay.first_use(signature.signature.0, now_millis()) {
        return Err(ApiError::Unauthenticated(
            "this signed request was already used".into(),
        ));
    }
    let delivery: FederatedDelivery = decode(&body)?;
    if delivery.to != state.domain || delivery.queue.domain != state.domain {
        return Err(ApiError::WrongDomain(delivery.to.to_string()));
    }
    let client = delivery
        .queue
        .open(&state.federation.queue_ref_key)
        .map_err(|_| ApiError::BadQueueRef)?;
    tracing::debug!(from = %from, "queueing a relayed delivery");
    let _seq = state
        .queues
        .send(Route {
            key: QueueId::messages(client),
            message: EnqueueRelayed {
                delivery: delivery.dedup_key(from),
                item: QueueItem::Group(delivery.item),
            },
        })
        .await???;
    Ok(HttpResponse::NoContent().finish())
}
