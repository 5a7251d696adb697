//! Authenticating signed requests: client requests ([`authenticate`]) and other homeservers'
//! requests ([`authenticate_server`]), each signature taken once (the replay guard is
//! `roost_actors::replay`'s).
//!
//! A server-signed request is refused unless its signer's domain may federate with this server
//! (403 `domain_not_allowed`) and is not this server's own, and it carries a valid, fresh,
//! first-seen signature by the key the signer's own domain serves (401): so a server speaks
//! only for its own domain. Fetching a key the cache lacks is rate limited per IP address, like
//! discovery, so an unsigned request cannot make this server fetch keys from anywhere at will.
//!
//! Every 401 names the scheme that would have been taken ([`name_the_scheme`]).

use actix_web::{
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::{
        header::{HeaderValue, WWW_AUTHENTICATE},
        StatusCode,
    },
    middleware::Next,
    HttpRequest,
};

use roost_actors::{
    accounts::AccountsError,
    directory::Directory,
    replay::{Replay, ReplayGuard},
};
use roost_protocol::{
    auth::{AuthError, RequestSignature, RequestSigner, ServerSignature},
    federation::FED_DELIVER,
    ids::now_millis,
    tokens::policy::Operation,
    ClientId, Domain, Timestamp, UserName,
};

use super::{error::ApiError, rate_limit, AppState, State};

/// The client a request was signed by.
#[derive(Debug, Clone)]
pub struct Caller {
    pub client: ClientId,
    pub user: UserName,
}

/// The request's Authorization header, as text.
fn authorization(request: &HttpRequest) -> Result<&str, ApiError> {
    request
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?
        .to_str()
        .map_err(|_| ApiError::Unauthenticated("the Authorization header is not text".into()))
}

/// Checks a server-signed request's signature (over `method`, `path` and `body`) and returns
/// the domain that signed it.
pub async fn authenticate_server(
    state: &AppState,
    request: &HttpRequest,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<Domain, ApiError> {
    let signature = ServerSignature::parse_header(authorization(request)?)?;
    let from = &signature.signer;
    if from == &state.domain {
        return Err(ApiError::Unauthenticated(
            "a relay claims to come from this server's own domain".into(),
        ));
    }
    if !state.federation.policy.allows(from) {
        return Err(ApiError::DomainNotAllowed(from.clone()));
    }
    let verify = |key| signature.verify(&key, method, path, body, now_millis());
    // An unsigned claim to be some domain makes this server fetch that domain's key: limit how
    // often anyone can make it do that.
    if !state.federation.peers.is_cached(from) {
        rate_limit(state, request)?;
    }
    let key = state.federation.peers.key(from, false).await?;
    if let Err(e) = verify(key) {
        let fresh = state.federation.peers.key(from, true).await?;
        if fresh == key {
            return Err(e.into());
        }
        verify(fresh)?;
    }
    if !state.replay.first_use(
        signature.signature.0,
        signature.timestamp_ms,
        now_millis(),
        Replay::Refuse,
    )? {
        return Err(ApiError::Unauthenticated(
            "this signed request was already used".into(),
        ));
    }
    Ok(signature.signer)
}

/// Checks the request's signature and returns who signed it.
pub fn authenticate(
    request: &HttpRequest,
    body: &[u8],
    directory: &Directory,
    replay: &ReplayGuard,
    replayed: Replay,
) -> Result<Caller, ApiError> {
    let signature = RequestSignature::parse_header(authorization(request)?)?;
    let record = directory
        .client(&signature.signer)
        .map_err(|e| ApiError::Accounts(e.into()))?
        .ok_or_else(|| ApiError::Unauthenticated("unknown or deleted client".into()))?;
    let credential = &record.credential.body;
    if directory
        .is_deactivated(&credential.user)
        .map_err(|e| ApiError::Accounts(e.into()))?
    {
        return Err(ApiError::Accounts(AccountsError::Deactivated));
    }
    if !credential.validity.contains(Timestamp::now()) {
        return Err(ApiError::Unauthenticated(
            "the client credential has expired".into(),
        ));
    }
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let now = now_millis();
    signature.verify(
        &credential.verifying_key,
        request.method().as_str(),
        path,
        body,
        now,
    )?;
    if !replay.first_use(signature.signature.0, signature.timestamp_ms, now, replayed)? {
        return Err(ApiError::Unauthenticated(
            "this signed request was already used, or signed before the server started".into(),
        ));
    }
    Ok(Caller {
        client: signature.signer,
        user: credential.user.clone(),
    })
}

/// Middleware: a 401 says how to authenticate (`WWW-Authenticate`, which HTTP requires of it):
/// on a costly anonymous operation a Privacy Pass challenge for this server as origin, naming
/// its own issuer and current key (a user of another domain answers it with its own domain's
/// tokens, `issuer` saying which); the server signature on the federation route; the client
/// signature everywhere else.
pub async fn name_the_scheme(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut response = next.call(request).await?;
    if response.status() != StatusCode::UNAUTHORIZED
        || response.headers().contains_key(WWW_AUTHENTICATE)
    {
        return Ok(response);
    }
    let request = response.request();
    let (method, path) = (request.method().as_str(), request.path());
    let value = if Operation::of_request(method, path).is_some() {
        request
            .app_data::<State>()
            .and_then(|state| super::tokens::challenge(state))
            .and_then(|challenge| HeaderValue::from_str(&challenge).ok())
    } else if path == FED_DELIVER {
        Some(HeaderValue::from_static(<Domain as RequestSigner>::SCHEME))
    } else {
        Some(HeaderValue::from_static(
            <ClientId as RequestSigner>::SCHEME,
        ))
    };
    if let Some(value) = value {
        response.headers_mut().insert(WWW_AUTHENTICATE, value);
    }
    Ok(response)
}
