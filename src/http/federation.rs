//! Federation endpoints: this server's request-signing key (public), and batches of relayed
//! group deliveries from other homeservers (server-signed), each of which goes into the named
//! local queue once per delivery id.
//!
//! A relay request is refused as a whole unless its sender's domain may federate with this
//! server (403 `domain_not_allowed`) and it carries a valid, fresh, first-seen signature by the
//! key the sender's own domain serves (401): so a server speaks only for its own domain. Then
//! each delivery is queued, or refused by itself in the receipt when it is not addressed to
//! this domain with a queue reference this QS opens (`wrong_domain` / `bad_queue_ref`) or its
//! queue does not exist (`unknown_queue`); a failure worth retrying fails the whole request,
//! and the sender's retry queues nothing twice. Fetching a key the cache lacks is rate limited per IP address, like discovery, so an
//! unsigned request cannot make this server fetch keys from anywhere at will.

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse, ResponseError};

use super::auth::Replay;
use roost_actors::{
    queue::{EnqueueRelayed, QueueError, QueueId},
    Route,
};
use roost_protocol::{
    api::QueueItem,
    auth::{AuthError, ServerSignature},
    federation::{
        FederatedDelivery, RelayBatch, RelayOutcome, RelayReceipt, ServerKey, FED_DELIVER,
        FED_SERVER_KEY, MAX_RELAY_DELIVERIES,
    },
    ids::now_millis,
    ClientId,
};

use super::{
    decode, encoded, error::ApiError, limited, method_not_allowed, rate_limit, read_body, State,
};

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
    if !state.replay.first_use(
        signature.signature.0,
        signature.timestamp_ms,
        now_millis(),
        Replay::Refuse,
    )? {
        return Err(ApiError::Unauthenticated(
            "this signed request was already used".into(),
        ));
    }
    let batch: RelayBatch = decode(&body)?;
    if batch.deliveries.len() > MAX_RELAY_DELIVERIES {
        return Err(ApiError::TooManyDeliveries(batch.deliveries.len()));
    }
    // A peer may queue only so much for this server's clients; it retries later, in order.
    limited(
        state
            .relay_limit
            .take(from.clone(), batch.deliveries.len() as u32),
        "limits.relays_per_minute_per_domain",
    )?;
    tracing::debug!(from = %from, deliveries = batch.deliveries.len(), "queueing relayed deliveries");
    let mut outcomes = vec![RelayOutcome::Queued; batch.deliveries.len()];
    let mut queues: Vec<QueuePart> = Vec::new();
    for (index, delivery) in batch.deliveries.into_iter().enumerate() {
        let client = match queue_of(&state, &delivery) {
            Ok(client) => client,
            Err(e) => {
                outcomes[index] = RelayOutcome::Refused(e.body());
                continue;
            }
        };
        let dedup_key = delivery.dedup_key(from);
        let item = (QueueItem::Group(delivery.item), dedup_key);
        match queues.iter_mut().find(|part| part.client == client) {
            Some(part) => {
                part.indices.push(index);
                part.items.push(item);
            }
            None => queues.push(QueuePart {
                client,
                indices: vec![index],
                items: vec![item],
            }),
        }
    }
    // Each queue takes its part in one append (one flush); the queues run side by side.
    let appends = queues.into_iter().map(|part| {
        let state = &state;
        async move {
            let appended = append_relayed(state, part.client, part.items).await;
            (part.indices, appended)
        }
    });
    for (indices, appended) in futures_util::future::join_all(appends).await {
        match appended {
            Ok(each) => {
                for (index, queued) in indices.into_iter().zip(each) {
                    if let Err(refused) = queued {
                        outcomes[index] = RelayOutcome::Refused(ApiError::from(refused).body());
                    }
                }
            }
            // Worth retrying: the sender sends the whole batch again, and what was queued now
            // is not queued twice.
            Err(e) if e.status_code().is_server_error() => return Err(e),
            Err(e) => {
                for index in indices {
                    outcomes[index] = RelayOutcome::Refused(e.body());
                }
            }
        }
    }
    Ok(encoded(StatusCode::OK, &RelayReceipt { outcomes }))
}

/// Appends one queue's part; an outcome per item (a full queue or an oversized message refuses
/// only its items, for good: the sender drops them, and one abandoned queue cannot hold up a
/// peer's relays to every other queue).
async fn append_relayed(
    state: &State,
    client: ClientId,
    items: Vec<(QueueItem, [u8; 32])>,
) -> Result<Vec<Result<u64, QueueError>>, ApiError> {
    let outcomes = state
        .queues
        .send(Route {
            key: QueueId::messages(client),
            message: EnqueueRelayed { items },
        })
        .await???;
    Ok(outcomes)
}

/// One queue's part of a relay batch, in the batch's order: which deliveries, and what to
/// append.
struct QueuePart {
    client: ClientId,
    indices: Vec<usize>,
    items: Vec<(QueueItem, [u8; 32])>,
}

/// The local client whose queue `delivery` names; refused unless it is for this domain and its
/// queue reference opens here.
fn queue_of(state: &State, delivery: &FederatedDelivery) -> Result<ClientId, ApiError> {
    if delivery.to != state.domain || delivery.queue.domain != state.domain {
        return Err(ApiError::WrongDomain(delivery.to.to_string()));
    }
    delivery
        .queue
        .open(&state.federation.queue_ref_key)
        .map_err(|_| ApiError::BadQueueRef)
}
