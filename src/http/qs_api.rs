//! QS endpoints: a client's queue.

use std::time::Duration;

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};
use serde::Deserialize;

use roost_actors::{
    queue::{Ack, Enqueue, Fetch},
    Route,
};
use roost_protocol::{
    api::{self, Enqueued, QueueItem, MAX_FETCH, MAX_WAIT_MS},
    ClientId,
};

use super::{
    auth::Caller, decode, encoded, error::ApiError, method_not_allowed, path_param, signed_request,
    State,
};

pub fn routes(config: &mut web::ServiceConfig) {
    let resource = |path: &str| web::resource(path).default_service(web::to(method_not_allowed));
    config
        .service(
            resource("/qs/v1/queues/{client}/messages")
                .route(web::post().to(enqueue))
                .route(web::get().to(fetch)),
        )
        .service(resource("/qs/v1/queues/{client}/ack").route(web::post().to(ack)));
}

#[derive(Deserialize)]
struct FetchQuery {
    #[serde(default)]
    from: u64,
    max: Option<u32>,
    #[serde(default)]
    wait_ms: u64,
}

/// Authenticates the caller and checks that it owns the queue in the path.
fn own_queue(caller: &Caller, queue: &ClientId) -> Result<(), ApiError> {
    if &caller.client == queue {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "only a queue's own client may read or acknowledge it",
        ))
    }
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
        .account_store
        .client(&queue)
        .map_err(|e| ApiError::Accounts(e.into()))?;
    if target.is_none_or(|t| t.credential.user() != &caller.user) {
        return Err(ApiError::Forbidden(
            "clients may only write to the queues of their own user's clients",
        ));
    }
    let seq = state
        .queues
        .send(Route {
            key: queue,
            message: Enqueue(QueueItem::FromOwnClient {
                sender: caller.client,
                payload: message.payload,
            }),
        })
        .await???;
    Ok(encoded(StatusCode::OK, &Enqueued { seq }))
}

async fn fetch(
    state: State,
    request: HttpRequest,
    queue: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let queue: ClientId = path_param(&queue, "client id")?;
    let query = web::Query::<FetchQuery>::from_query(request.query_string())
        .map_err(|e| ApiError::BadPath(format!("bad query: {e}")))?;
    let (caller, _) = signed_request(&state, &request, payload).await?;
    own_queue(&caller, &queue)?;
    let batch = state
        .queues
        .send(Route {
            key: queue,
            message: Fetch {
                from: query.from,
                max: query.max.unwrap_or(MAX_FETCH).clamp(1, MAX_FETCH),
                wait: Duration::from_millis(query.wait_ms.min(MAX_WAIT_MS)),
            },
        })
        .await???;
    Ok(encoded(StatusCode::OK, &batch))
}

async fn ack(
    state: State,
    request: HttpRequest,
    queue: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let queue: ClientId = path_param(&queue, "client id")?;
    let (caller, body) = signed_request(&state, &request, payload).await?;
    own_queue(&caller, &queue)?;
    let ack: api::Ack = decode(&body)?;
    state
        .queues
        .send(Route {
            key: queue,
            message: Ack { up_to: ack.up_to },
        })
        .await???;
    Ok(HttpResponse::NoContent().finish())
}
