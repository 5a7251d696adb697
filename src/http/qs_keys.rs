//! QS endpoints for key packages and friendship tokens. A client publishes its entries and
//! reads its user's token (signed); whoever knows the token claims one entry per client of that
//! user (public, so the QS does not learn who adds whom, and rate limited like discovery).

use actix::{Handler, Message};
use actix_web::{http::StatusCode, web, web::Bytes, HttpRequest, HttpResponse};

use roost_actors::{
    key_packages::{
        Claim, Claimant, Count, GetToken, KeyPackageActor, KeyPackageError, Publish, RotateToken,
    },
    pool::Routed,
    Ask,
};
use roost_protocol::{
    api::{self, MAX_PUBLISH},
    tokens::policy::Operation,
    ClientId,
};

use super::{
    auth::Caller, decode, encoded, error::ApiError, method_not_allowed, read_body_up_to,
    signed_request, tokens::paid_or_limited, State, DISCOVERY_SETTING, SMALL_BODY,
};

pub fn routes(config: &mut web::ServiceConfig) {
    let resource = |path: &str| web::resource(path).default_service(web::to(method_not_allowed));
    config
        .service(
            resource(api::QS_KEY_PACKAGES)
                .route(web::post().to(publish))
                .route(web::get().to(count)),
        )
        .service(resource(api::QS_CLAIM_KEY_PACKAGES).route(web::post().to(claim)))
        .service(
            resource(api::QS_FRIENDSHIP_TOKEN)
                .route(web::get().to(token))
                .route(web::post().to(rotate_token)),
        )
        .service(resource(api::QS_OWN_KEY_PACKAGES).route(web::get().to(own_key_packages)));
}

/// Authenticates the request and hands the message made from its caller and body to the
/// caller's user's key-package actor; encodes the answer.
async fn for_own_user<M, R>(
    state: State,
    request: HttpRequest,
    payload: web::Payload,
    message: impl FnOnce(&Caller, Bytes) -> Result<M, ApiError>,
) -> Result<HttpResponse, ApiError>
where
    M: Message<Result = Result<R, KeyPackageError>> + Send + 'static,
    R: serde::Serialize + Send + 'static,
    KeyPackageActor: Handler<Routed<M>>,
{
    let (caller, body) = signed_request(&state, &request, payload).await?;
    let message = message(&caller, body)?;
    let answer = state.key_packages.ask(caller.user, message).await?;
    Ok(encoded(StatusCode::OK, &answer))
}

async fn publish(
    state: State,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    for_own_user(state, request, payload, |caller, body| {
        let body: api::PublishKeyPackages = decode(&body)?;
        if body.entries.len() > MAX_PUBLISH {
            return Err(ApiError::MalformedBody(format!(
                "at most {MAX_PUBLISH} key packages per request"
            )));
        }
        Ok(Publish {
            client: caller.client,
            entries: body.entries,
            last_resort: body.last_resort,
        })
    })
    .await
}

async fn count(
    state: State,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    for_own_user(state, request, payload, |caller, _| {
        Ok(Count {
            client: caller.client,
        })
    })
    .await
}

async fn token(
    state: State,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    for_own_user(state, request, payload, |_, _| Ok(GetToken)).await
}

async fn rotate_token(
    state: State,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    for_own_user(state, request, payload, |_, _| Ok(RotateToken)).await
}

/// `?client=ID` claims only that client's entry.
#[derive(serde::Deserialize)]
struct OwnClaimQuery {
    client: Option<String>,
}

async fn own_key_packages(
    state: State,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let query = web::Query::<OwnClaimQuery>::from_query(request.query_string())
        .map_err(|e| ApiError::BadPath(format!("bad query: {e}")))?;
    let only = query
        .client
        .as_deref()
        .map(str::parse::<ClientId>)
        .transpose()
        .map_err(|e| ApiError::BadPath(format!("bad query: {e}")))?;
    for_own_user(state, request, payload, move |caller, _| {
        Ok(Claim(Claimant::OwnClient {
            caller: caller.client,
            only,
        }))
    })
    .await
}

async fn claim(
    state: State,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body_up_to(&state, &request, payload, SMALL_BODY).await?;
    paid_or_limited(
        &state,
        &request,
        Operation::KeyPackageClaim,
        &body,
        (&state.discovery_limit, DISCOVERY_SETTING),
    )
    .await?;
    let body: api::ClaimKeyPackages = decode(&body)?;
    let user = state
        .directory
        .user_of_token(&body.token)
        .map_err(|e| ApiError::KeyPackages(e.into()))?
        .ok_or(ApiError::KeyPackages(KeyPackageError::UnknownToken))?;
    let claimed = state
        .key_packages
        .ask(user, Claim(Claimant::Friend(body.token)))
        .await?;
    Ok(encoded(StatusCode::OK, &claimed))
}
