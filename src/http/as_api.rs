//! AS endpoints: credentials, registration, client management.

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};

use roost_actors::{
    accounts::{AddClient, DeleteClient, Register},
    Call,
};
use roost_protocol::{
    api::{self, ClientList},
    ClientId, UserName,
};

use super::{
    decode, encoded, error::ApiError, method_not_allowed, path_param, read_body_up_to,
    signed_request, State, SMALL_BODY,
};

pub fn routes(config: &mut web::ServiceConfig) {
    let resource = |path: &str| web::resource(path).default_service(web::to(method_not_allowed));
    config
        .service(resource(api::AS_CREDENTIALS).route(web::get().to(credentials)))
        .service(resource(api::AS_USERS).route(web::post().to(register)))
        .service(resource(api::AS_USER_CLIENTS_ROUTE).route(web::post().to(add_client)))
        .service(resource(api::AS_OWN_CLIENTS).route(web::get().to(list_clients)))
        .service(resource(api::AS_OWN_CLIENT_ROUTE).route(web::delete().to(delete_client)));
}

async fn credentials(state: State) -> HttpResponse {
    encoded(StatusCode::OK, &state.keys.as_credentials())
}

async fn register(
    state: State,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: api::RegisterUser =
        decode(&read_body_up_to(&state, &request, payload, SMALL_BODY).await?)?;
    let credential = state
        .accounts
        .call(Register {
            user: body.user,
            password: body.password,
            token: body.registration_token,
            client: body.client,
        })
        .await?;
    Ok(encoded(StatusCode::CREATED, &credential))
}

async fn add_client(
    state: State,
    request: HttpRequest,
    user: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let user: UserName = path_param(&user, "user name")?;
    let body: api::AddClient =
        decode(&read_body_up_to(&state, &request, payload, SMALL_BODY).await?)?;
    let credential = state
        .accounts
        .call(AddClient {
            user,
            password: body.password,
            client: body.client,
        })
        .await?;
    Ok(encoded(StatusCode::CREATED, &credential))
}

async fn list_clients(
    state: State,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (caller, _) = signed_request(&state, &request, payload).await?;
    let clients = state
        .directory
        .clients_of(&caller.user)
        .map_err(|e| ApiError::Accounts(e.into()))?
        .ok_or(ApiError::Unauthenticated("unknown user".into()))?;
    Ok(encoded(StatusCode::OK, &ClientList { clients }))
}

async fn delete_client(
    state: State,
    request: HttpRequest,
    client: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let client: ClientId = path_param(&client, "client id")?;
    let (caller, _) = signed_request(&state, &request, payload).await?;
    state
        .accounts
        .call(DeleteClient {
            user: caller.user,
            client,
        })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
