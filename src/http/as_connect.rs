//! AS endpoints for discovery and connection establishment: connection packages and connection
//! queues. Discovery and queuing a sealed request are public — the AS must not learn who the
//! initiator is — so they carry no identity, and discovery is rate limited.

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};

use roost_actors::{
    queue::{Enqueue, QueueId},
    registry::{Count, Publish, Redeem, Take},
    Ask,
};
use roost_protocol::{
    api::{self, ConnectionPackages, QueueItem, QueueKind, MAX_PUBLISH},
    connection::{SealedConnectionRequest, MAX_SEALED_REQUEST},
    tokens::policy::Operation,
    ClientId, UserName,
};
use roost_storage::Redeemed;

use super::{
    decode, encoded,
    error::ApiError,
    limited, method_not_allowed, path_param,
    queues::{ack, fetch, Connections},
    rate_limit::source,
    read_body_up_to, signed_request,
    tokens::{free_then_paid, paid_or_limited},
    State, DISCOVERY_SETTING,
};

pub fn routes(config: &mut web::ServiceConfig) {
    let resource = |path: &str| web::resource(path).default_service(web::to(method_not_allowed));
    config
        .service(
            resource(api::AS_CONNECTION_PACKAGES)
                .route(web::post().to(publish))
                .route(web::get().to(count)),
        )
        .service(resource(api::AS_USER_CONNECTION_PACKAGES_ROUTE).route(web::get().to(discover)))
        .service(
            resource(QueueKind::Connections.route())
                .route(web::post().to(enqueue_request))
                .route(web::get().to(fetch::<Connections>)),
        )
        .service(
            resource(QueueKind::Connections.ack_route()).route(web::post().to(ack::<Connections>)),
        );
}

async fn publish(
    state: State,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (caller, body) = signed_request(&state, &request, payload).await?;
    let body: api::PublishConnectionPackages = decode(&body)?;
    if body.packages.len() > MAX_PUBLISH {
        return Err(ApiError::MalformedBody(format!(
            "at most {MAX_PUBLISH} connection packages per request"
        )));
    }
    let count = state
        .registries
        .ask(
            caller.user,
            Publish {
                client: caller.client,
                packages: body.packages,
            },
        )
        .await?;
    Ok(encoded(StatusCode::OK, &count))
}

async fn count(
    state: State,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (caller, _) = signed_request(&state, &request, payload).await?;
    let count = state
        .registries
        .ask(
            caller.user,
            Count {
                client: caller.client,
            },
        )
        .await?;
    Ok(encoded(StatusCode::OK, &count))
}

async fn discover(
    state: State,
    request: HttpRequest,
    user: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    free_then_paid(
        &state,
        &request,
        Operation::Discovery,
        (&state.discovery_limit, DISCOVERY_SETTING),
    )
    .await?;
    let user: UserName = path_param(&user, "user name")?;
    if user.domain() != &state.domain {
        return Err(ApiError::Registry(
            roost_actors::registry::RegistryError::UnknownUser,
        ));
    }
    let packages = state.registries.ask(user, Take).await?;
    Ok(encoded(StatusCode::OK, &ConnectionPackages { packages }))
}

async fn enqueue_request(
    state: State,
    request: HttpRequest,
    client: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let client: ClientId = path_param(&client, "client id")?;
    // A little more than the largest request a client opens: the larger it may be refused by
    // name below, anything beyond is not read at all.
    let body = read_body_up_to(&state, &request, payload, 2 * MAX_SEALED_REQUEST).await?;
    paid_or_limited(
        &state,
        &request,
        Operation::ConnectionRequest,
        &body,
        (
            &state.request_limit,
            "limits.connection_requests_per_minute",
        ),
    )
    .await?;
    let sealed: SealedConnectionRequest = decode(&body)?;
    // Before the package is redeemed: a request no client would open must not use it up.
    if !sealed.within_limit() {
        return Err(ApiError::ConnectionRequestTooLarge(
            sealed.sealed.ciphertext.len(),
        ));
    }
    let owner = state
        .directory
        .client(&client)
        .map_err(|e| ApiError::Accounts(e.into()))?
        .ok_or(ApiError::UnknownConnectionPackage)?;
    let redeemed = state
        .registries
        .ask(
            owner.credential.user().clone(),
            Redeem {
                client,
                package: sealed.connection_package,
            },
        )
        .await?;
    match redeemed {
        None => return Err(ApiError::UnknownConnectionPackage),
        Some(Redeemed::OneTime) => {}
        // Anyone who once discovered the user holds it: it must not let in requests at will.
        Some(Redeemed::LastResort) => {
            let from = request.peer_addr().map(|addr| source(addr.ip()));
            let from = from.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
            limited(
                state
                    .last_resort_limit
                    .check((sealed.connection_package, from)),
                "limits.requests_per_last_resort_per_hour",
            )?
        }
    }
    state
        .queues
        .ask(
            QueueId::connections(client),
            Enqueue(QueueItem::ConnectionRequest(sealed)),
        )
        .await?;
    Ok(HttpResponse::Accepted().finish())
}
