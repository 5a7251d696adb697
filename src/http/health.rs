//! The store's disk, seen from the front-end: `/health` says whether the server can take new
//! data, and a middleware refuses requests that would add data while the disk is below its
//! reserve (507 `storage_full`) — reads and acknowledgements, which free space, go on.

use actix_web::{
    body::{BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::StatusCode,
    middleware::Next,
    HttpResponse, ResponseError,
};

use super::{adds_data, error::ApiError, State};

/// `GET /health`: 200 `ok`, or 503 `storage_full` / `store_failing` with what is known.
pub(crate) async fn health(state: State) -> HttpResponse {
    let space = state.store.space();
    let free = space.free_bytes().ok();
    let body = |status: &str| {
        serde_json::json!({
            "status": status,
            "free_bytes": free,
            "reserve_bytes": space.reserve_bytes(),
        })
    };
    if state.store.durability().is_failing() {
        HttpResponse::ServiceUnavailable().json(body("store_failing"))
    } else if space.check().is_err() {
        HttpResponse::ServiceUnavailable().json(body("storage_full"))
    } else {
        HttpResponse::Ok().json(body("ok"))
    }
}

/// Middleware: refuses requests that add data while the disk is below its reserve.
pub async fn refuse_new_data_when_full(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if adds_data(request.method(), request.path()) {
        if let Some(state) = request.app_data::<State>() {
            if let Err(full) = state.store.space().check() {
                let response = ApiError::from(full).error_response();
                debug_assert_eq!(response.status(), StatusCode::INSUFFICIENT_STORAGE);
                return Ok(request.into_response(response));
            }
        }
    }
    Ok(next.call(request).await?.map_into_boxed_body())
}
