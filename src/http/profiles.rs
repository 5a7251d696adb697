//! AS endpoints for profiles: a user's clients store, replace and delete the user's encrypted
//! profiles (signed; through the user's registry actor, which owns them), and anyone holding an
//! id fetches one (unauthenticated, so the server never learns who; rate limited per address
//! like discovery, so ids cannot be guessed at speed — 2^256 of them make that hopeless anyway).

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};

use roost_actors::{
    registry::{DeleteProfile, RegistryError, StoreProfile},
    Ask,
};
use roost_protocol::{
    api,
    profile::{EncryptedProfile, ProfileId, MAX_ENCRYPTED_PROFILE},
};

use super::{
    decode, encoded, error::ApiError, method_not_allowed, path_param, rate_limit, signed_request,
    State,
};

pub fn routes(config: &mut web::ServiceConfig) {
    config.service(
        web::resource(api::AS_PROFILE_ROUTE)
            .route(web::get().to(fetch))
            .route(web::put().to(store))
            .route(web::delete().to(delete))
            .default_service(web::to(method_not_allowed)),
    );
}

async fn fetch(
    state: State,
    request: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    rate_limit(&state, &request)?;
    let id: ProfileId = path_param(&id, "profile id")?;
    let profile = state
        .directory
        .profile(&id)
        .map_err(|e| ApiError::Registry(e.into()))?
        .ok_or(ApiError::Registry(RegistryError::UnknownProfile))?;
    Ok(encoded(StatusCode::OK, &profile))
}

async fn store(
    state: State,
    request: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id: ProfileId = path_param(&id, "profile id")?;
    let (caller, body) = signed_request(&state, &request, payload).await?;
    // The codec's framing around the ciphertext is a few bytes.
    if body.len() > MAX_ENCRYPTED_PROFILE + 16 {
        return Err(ApiError::Registry(RegistryError::ProfileTooLarge {
            size: body.len(),
            limit: MAX_ENCRYPTED_PROFILE,
        }));
    }
    let profile: EncryptedProfile = decode(&body)?;
    state
        .registries
        .ask(caller.user, StoreProfile { id, profile })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn delete(
    state: State,
    request: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id: ProfileId = path_param(&id, "profile id")?;
    let (caller, _) = signed_request(&state, &request, payload).await?;
    state
        .registries
        .ask(caller.user, DeleteProfile { id })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
