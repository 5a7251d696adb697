//! QS endpoints: a client's message queue.

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};

use roost_actors::{
    queue::{EnqueueMany, QueueId},
    Ask,
};
use roost_protocol::{
    api::{self, Enqueued, QueueItem, QueueKind},
    ClientId,
};

use super::{
    decode, encoded,
    error::ApiError,
    method_not_allowed, path_param,
    queues::{ack, fetch, Messages},
    signed_request, State,
};

pub fn routes(config: &mut web::ServiceConfig) {
    let resource = |path: &str| web::resource(path).default_service(web::to(method_not_allowed));
    config
        .service(
            resource(QueueKind::Messages.route())
                .route(web::post().to(enqueue))
                .route(web::get().to(fetch::<Messages>)),
        )
        .service(resource(QueueKind::Messages.ack_route()).route(web::post().to(ack::<Messages>)))
        .service(resource(api::QS_QUEUE_REF_KEY).route(web::get().to(queue_ref_key)));
}

async fn queue_ref_key(state: State) -> HttpResponse {
    encoded(StatusCode::OK, &state.queue_ref_key)
}

async fn enqueue(
    state: State,
    request: HttpRequest,
    queue: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let queue: ClientId = path_param(&queue, "client id")?;
    let (caller, body) = signed_request(&state, &request, payload).await?;
    let message: api::Enqueue = decode(&body)?;
    // For now only a user's own clients write to its queues; the DS and federation come later.
    let target = state
        .directory
        .client(&queue)
        .map_err(|e| ApiError::Accounts(e.into()))?;
    if target.is_none_or(|t| t.credential.user() != &caller.user) {
        return Err(ApiError::Forbidden(
            "clients may only write to the queues of their own user's clients",
        ));
    }
    let key = message.dedup_key(&caller.client);
    let item = QueueItem::FromOwnClient {
        sender: caller.client,
        payload: message.payload,
    };
    let mut outcomes = state
        .queues
        .ask(
            QueueId::messages(queue),
            EnqueueMany {
                items: vec![(item, Some(key))],
            },
        )
        .await?;
    let seq = outcomes.pop().ok_or(ApiError::Unavailable)??;
    Ok(encoded(StatusCode::OK, &Enqueued { seq }))
}
