//! Reading and acknowledging a client's own queue: the same for its message queue (QS) and its
//! connection queue (AS).

use std::time::Duration;

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};

use roost_actors::{
    queue::{Ack, Fetch, QueueId},
    Ask,
};
use roost_protocol::{
    api::{self, FetchQuery, QueueKind, MAX_FETCH, MAX_WAIT_MS},
    ClientId,
};

use super::{decode, encoded, error::ApiError, path_param, signed_request, State};

/// Which queue a route serves.
pub(crate) trait Kind {
    const KIND: QueueKind;
}

pub(crate) struct Messages;
impl Kind for Messages {
    const KIND: QueueKind = QueueKind::Messages;
}

pub(crate) struct Connections;
impl Kind for Connections {
    const KIND: QueueKind = QueueKind::Connections;
}

fn queue_id<K: Kind>(client: ClientId) -> QueueId {
    QueueId {
        kind: K::KIND,
        client,
    }
}

/// Authenticates the caller and checks that it owns the queue in the path; answers the queue
/// and the request's body.
async fn own_queue<K: Kind>(
    state: &State,
    request: &HttpRequest,
    queue: &str,
    payload: web::Payload,
) -> Result<(QueueId, web::Bytes), ApiError> {
    let queue: ClientId = path_param(queue, "client id")?;
    let (caller, body) = signed_request(state, request, payload).await?;
    if caller.client != queue {
        return Err(ApiError::Forbidden(
            "only a queue's own client may read or acknowledge it",
        ));
    }
    Ok((queue_id::<K>(queue), body))
}

pub(crate) async fn fetch<K: Kind>(
    state: State,
    request: HttpRequest,
    queue: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let query = web::Query::<FetchQuery>::from_query(request.query_string())
        .map_err(|e| ApiError::BadPath(format!("bad query: {e}")))?;
    let (queue, _) = own_queue::<K>(&state, &request, &queue, payload).await?;
    let batch = state
        .queues
        .ask(
            queue,
            Fetch {
                from: query.from,
                max: query.max.unwrap_or(MAX_FETCH).clamp(1, MAX_FETCH),
                wait: Duration::from_millis(query.wait_ms.min(MAX_WAIT_MS)),
                ack: query.ack,
            },
        )
        .await?;
    Ok(encoded(StatusCode::OK, &batch))
}

pub(crate) async fn ack<K: Kind>(
    state: State,
    request: HttpRequest,
    queue: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (queue, body) = own_queue::<K>(&state, &request, &queue, payload).await?;
    let ack: api::Ack = decode(&body)?;
    state.queues.ask(queue, Ack { up_to: ack.up_to }).await?;
    Ok(HttpResponse::NoContent().finish())
}
