//! Authenticating signed client requests, with a replay guard.

use std::{collections::HashMap, sync::Mutex};

use actix_web::HttpRequest;

use roost_protocol::{
    auth::{RequestSignature, REPLAY_WINDOW_MS},
    ids::now_millis,
    ClientId, Timestamp, UserName,
};
use roost_storage::AccountStore;

use super::error::ApiError;

/// The client a request was signed by.
#[derive(Debug, Clone)]
pub struct Caller {
    pub client: ClientId,
    pub user: UserName,
}

/// Remembers the signatures seen within the replay window, so each is accepted once (client
/// and server signatures alike).
#[derive(Default)]
pub struct ReplayGuard {
    seen: Mutex<HashMap<[u8; 64], u64>>,
}

impl ReplayGuard {
    /// Records a signature; false if it was seen before.
    pub fn first_use(&self, signature: [u8; 64], timestamp_ms: u64, now_ms: u64) -> bool {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if seen.len() > 10_000 {
            // Outside the window a timestamp is refused anyway, so forgetting is safe.
            seen.retain(|_, ts| ts.abs_diff(now_ms) <= REPLAY_WINDOW_MS);
        }
        seen.insert(signature, timestamp_ms).is_none()
    }
}

/// Checks the request's signature and returns who signed it.
pub fn authenticate(
    request: &HttpRequest,
    body: &[u8],
    accounts: &AccountStore,
    replay: &ReplayGuard,
) -> Result<Caller, ApiError> {
    let header = request
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or(roost_protocol::auth::AuthError::Missing)?
        .to_str()
        .map_err(|_| ApiError::Unauthenticated("the Authorization header is not text".into()))?;
    let signature = RequestSignature::parse_header(header)?;
    let record = accounts
        .client(&signature.signer)
        .map_err(|e| ApiError::Accounts(e.into()))?
        .ok_or_else(|| ApiError::Unauthenticated("unknown or deleted client".into()))?;
    let credential = &record.credential.body;
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
    if !replay.first_use(signature.signature.0, signature.timestamp_ms, now) {
        return Err(ApiError::Unauthenticated(
            "this signed request was already used".into(),
        ));
    }
    Ok(Caller {
        client: signature.signer,
        user: credential.user.clone(),
    })
}
