//! DS endpoints: groups. Every call proves knowledge of the group-state EAR key by sending it;
//! members are never named, only their sealed queue references are stored.

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;

use roost_actors::{
    group::{DsRequest, GroupActor, GroupError},
    pool::Routed,
    Ask,
};
use roost_protocol::{
    ds::{self, MAX_GROUP_ID},
    tokens::policy::Operation,
};

use super::{
    decode, encoded, error::ApiError, method_not_allowed, read_body, tokens::redeem, State,
};

pub fn routes(config: &mut web::ServiceConfig) {
    let resource = |path: &str| web::resource(path).default_service(web::to(method_not_allowed));
    config
        .service(resource(ds::DS_GROUPS).route(web::post().to(create)))
        .service(resource(ds::DS_COMMIT_ROUTE).route(web::post().to(commit)))
        .service(resource(ds::DS_MESSAGES_ROUTE).route(web::post().to(send)))
        .service(
            resource(ds::DS_EXTERNAL_COMMIT_INFO_ROUTE).route(web::post().to(external_commit_info)),
        )
        .service(
            resource(ds::DS_JOIN_CONNECTION_GROUP_ROUTE)
                .route(web::post().to(join_connection_group)),
        )
        .service(resource(ds::DS_REJOIN_ROUTE).route(web::post().to(rejoin)));
}

fn group_id(hex_id: &str) -> Result<Vec<u8>, ApiError> {
    match hex::decode(hex_id) {
        Ok(id) if !id.is_empty() && id.len() <= MAX_GROUP_ID => Ok(id),
        _ => Err(ApiError::BadPath(format!(
            "group id {hex_id:?} is not 1 to {MAX_GROUP_ID} hex-encoded bytes"
        ))),
    }
}

/// Takes what `operation` costs, decodes the body as `B` and hands it to the group's actor.
async fn call<B, R>(
    state: &State,
    request: &HttpRequest,
    payload: web::Payload,
    group: &str,
    operation: Option<Operation>,
) -> Result<R, ApiError>
where
    B: DeserializeOwned + Send + 'static,
    DsRequest<B>: actix::Message<Result = Result<R, GroupError>>,
    R: Send + 'static,
    GroupActor: actix::Handler<Routed<DsRequest<B>>>,
{
    let group = group_id(group)?;
    let body = read_body(state, request, payload).await?;
    if let Some(operation) = operation {
        redeem(state, request, operation, &body).await?;
    }
    let body: B = decode(&body)?;
    Ok(state.groups.ask(group, DsRequest(body)).await?)
}

async fn create(
    state: State,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(&state, &request, payload).await?;
    redeem(&state, &request, Operation::CreateGroup, &body).await?;
    let body: ds::CreateGroup = decode(&body)?;
    if body.group_id.is_empty() || body.group_id.len() > MAX_GROUP_ID {
        return Err(ApiError::Group(GroupError::Invalid(format!(
            "a group id has 1 to {MAX_GROUP_ID} bytes"
        ))));
    }
    state
        .groups
        .ask(body.group_id.clone(), DsRequest(body))
        .await?;
    Ok(HttpResponse::Created().finish())
}

async fn commit(
    state: State,
    request: HttpRequest,
    group: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let committed =
        call::<ds::CommitRequest, _>(&state, &request, payload, &group, Some(Operation::Commit))
            .await?;
    Ok(encoded(StatusCode::OK, &committed))
}

async fn send(
    state: State,
    request: HttpRequest,
    group: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let accepted =
        call::<ds::SendMessage, _>(&state, &request, payload, &group, Some(Operation::Message))
            .await?;
    Ok(encoded(StatusCode::ACCEPTED, &accepted))
}

async fn external_commit_info(
    state: State,
    request: HttpRequest,
    group: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let info = call::<ds::EarKeyProof, _>(&state, &request, payload, &group, None).await?;
    Ok(encoded(StatusCode::OK, &info))
}

async fn join_connection_group(
    state: State,
    request: HttpRequest,
    group: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let committed = call::<ds::JoinConnectionGroup, _>(
        &state,
        &request,
        payload,
        &group,
        Some(Operation::ExternalJoin),
    )
    .await?;
    Ok(encoded(StatusCode::OK, &committed))
}

async fn rejoin(
    state: State,
    request: HttpRequest,
    group: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let committed =
        call::<ds::Rejoin, _>(&state, &request, payload, &group, Some(Operation::Commit)).await?;
    Ok(encoded(StatusCode::OK, &committed))
}
