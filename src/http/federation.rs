//! Federation endpoints: this server's request-signing key (public), and batches of relayed
//! group deliveries from other homeservers (server-signed).
//!
//! A relay request is authenticated as a whole ([`super::auth::authenticate_server`]), then
//! its deliveries go to the QS's delivery by sealed reference
//! ([`roost_actors::qs::SealedDelivery::deliver_relayed`]), each into the named local queue once
//! per delivery id. A delivery that is not addressed to this domain with a queue reference this
//! QS opens (`wrong_domain` / `bad_queue_ref`), or whose queue does not exist (`unknown_queue`)
//! or refuses it (a limit), is refused by itself in the receipt; a failure worth retrying fails
//! the whole request, and the sender's retry queues nothing twice.

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};

use roost_protocol::federation::{
    RelayBatch, RelayOutcome, RelayReceipt, ServerKey, FED_DELIVER, FED_SERVER_KEY,
    MAX_RELAY_DELIVERIES,
};

use super::{
    auth::authenticate_server, decode, encoded, error::ApiError, limited, method_not_allowed,
    read_body, State,
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
            verifying_key: state.keys.federation_key().verifying_key(),
        },
    )
}

async fn deliver(
    state: State,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(&state, &request, payload).await?;
    let from = authenticate_server(&state, &request, "POST", FED_DELIVER, &body).await?;
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
    // A full queue or an oversized message refuses only its deliveries, for good: the sender
    // drops them, and one abandoned queue cannot hold up a peer's relays to every other queue.
    let outcomes = state
        .federation
        .deliveries
        .deliver_relayed(&from, batch.deliveries)
        .await?
        .into_iter()
        .map(|outcome| match outcome {
            Ok(_) => RelayOutcome::Queued,
            Err(refused) => RelayOutcome::Refused(ApiError::from(refused).body()),
        })
        .collect();
    Ok(encoded(StatusCode::OK, &RelayReceipt { outcomes }))
}
