//! DS endpoints: groups. Every call proves knowledge of the group-state EAR key by sending it;
//! members are never named, only their sealed queue references are stored.

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;

use roost_actors::{
    group::{self, GroupActor, GroupError},
    Route,
};
use roost_protocol::ds::{self, Committed, MAX_GROUP_ID};

use super::{decode, encoded, error::ApiError, method_not_allowed, read_body, State};

pub fn routes(config: &mut web::ServiceConfig) {
    let resource = |path: &str| web::resource(path).default_service(web::to(method_not_allowed));
    config
        .service(resource(ds::DS_GROUPS).route(web::post().to(create)))
        .service(resource("/ds/v1/groups/{group}/commit").route(web::post().to(commit)))
        .service(resource("/ds/v1/groups/{group}/messages").route(web::post().to(send)))
        .service(
            resource("/ds/v1/groups/{group}/external-commit-info")
                .route(web::post().to(external_commit_info)),
        )
        .service(
            resource("/ds/v1/groups/{group}/join-connection-group")
                .route(web::post().to(join_connection_group)),
        );
}

fn group_id(hex_id: &str) -> Result<Vec<u8>, ApiError> {
    match hex::decode(hex_id) {
        Ok(id) if !id.is_empty() && id.len() <= MAX_GROUP_ID => Ok(id),
        _ => Err(ApiError::BadPath(format!(
            "group id {hex_id:?} is not 1 to {MAX_GROUP_ID} hex-encoded bytes"
        ))),
    }
}

/// Decodes the body and hands the message it makes to the group's actor.
async fn call<B, M, R>(
    state: &State,
    request: &HttpRequest,
    payload: web::Payload,
    group: Vec<u8>,
    message: impl FnOnce(B) -> M,
) -> Result<R, ApiError>
where
    B: DeserializeOwned,
    M: actix::Message<Result = Result<R, GroupError>> + Send + 'static,
    R: Send + 'static,
    GroupActor: actix::Handler<M>,
{
    let body: B = decode(&read_body(state, request, payload).await?)?;
    Ok(state
        .groups
        .send(Route {
            key: group,
            message: message(body),
        })
        .await???)
}

async fn create(
    state: State,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: ds::CreateGroup = decode(&read_body(&state, &request, payload).await?)?;
    if body.group_id.is_empty() || body.group_id.len() > MAX_GROUP_ID {
        return Err(ApiError::Group(GroupError::Invalid(format!(
            "a group id has 1 to {MAX_GROUP_ID} bytes"
        ))));
    }
    state
        .groups
        .send(Route {
            key: body.group_id,
            message: group::CreateGroup {
                ear_key: body.ear_key,
                group_info: body.group_info,
                creator: body.creator,
                connection_group: body.connection_group,
            },
        })
        .await???;
    Ok(HttpResponse::Created().finish())
}

async fn commit(
    state: State,
    request: HttpRequest,
    group: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let epoch = call(
        &state,
        &request,
        payload,
        group_id(&group)?,
        |body: ds::CommitRequest| group::Commit {
            ear_key: body.ear_key,
            commit: body.commit,
            group_info: body.group_info,
            added: body.added,
            welcome: body.welcome,
        },
    )
    .await?;
    Ok(encoded(StatusCode::OK, &Committed { epoch }))
}

async fn send(
    state: State,
    request: HttpRequest,
    group: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    call(
        &state,
        &request,
        payload,
        group_id(&group)?,
        |body: ds::SendMessage| group::SendMessage {
            ear_key: body.ear_key,
            message: body.message,
            sender_leaf: body.sender_leaf,
        },
    )
    .await?;
    Ok(HttpResponse::Accepted().finish())
}

async fn external_commit_info(
    state: State,
    request: HttpRequest,
    group: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let info = call(
        &state,
        &request,
        payload,
        group_id(&group)?,
        |body: ds::EarKeyProof| group::GetExternalCommitInfo {
            ear_key: body.ear_key,
        },
    )
    .await?;
    Ok(encoded(StatusCode::OK, &info))
}

async fn join_connection_group(
    state: State,
    request: HttpRequest,
    group: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let epoch = call(
        &state,
        &request,
        payload,
        group_id(&group)?,
        |body: ds::JoinConnectionGroup| group::JoinConnectionGroup {
            ear_key: body.ear_key,
            commit: body.commit,
            group_info: body.group_info,
            joiner: body.joiner,
        },
    )
    .await?;
    Ok(encoded(StatusCode::OK, &Committed { epoch }))
}
