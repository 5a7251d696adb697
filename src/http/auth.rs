//! Authenticating signed requests, with a replay guard: client requests ([`authenticate`]) and
//! other homeservers' requests ([`authenticate_server`]).
//!
//! A server-signed request is refused unless its signer's domain may federate with this server
//! (403 `domain_not_allowed`) and is not this server's own, and it carries a valid, fresh,
//! first-seen signature by the key the signer's own domain serves (401): so a server speaks
//! only for its own domain. Fetching a key the cache lacks is rate limited per IP address, like
//! discovery, so an unsigned request cannot make this server fetch keys from anywhere at will.

use std::{collections::HashSet, sync::Mutex};

use actix_web::HttpRequest;

use roost_protocol::{
    auth::{AuthError, RequestSignature, ServerSignature, REPLAY_WINDOW_MS},
    ids::now_millis,
    ClientId, Domain, Timestamp, UserName,
};
use roost_storage::{AccountStore, SeenSignatures, Space, StorageError};

use super::{error::ApiError, rate_limit, AppState};

/// What a replay of a request would do, and so how far back the guard must remember it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// It would add data or change state again: refused across restarts too (the signature
    /// is recorded in the store).
    Refuse,
    /// It would only read, or repeat what is done (an acknowledgement): refused within this
    /// run, which is all the memory-only guard can do.
    Harmless,
}

/// The client a request was signed by.
#[derive(Debug, Clone)]
pub struct Caller {
    pub client: ClientId,
    pub user: UserName,
}

/// Remembers the signatures seen within the replay window, so each is accepted once (client
/// and server signatures alike).
///
/// Two generations of signatures, the current one and the one before; the current one becomes
/// the previous one every two windows, and the previous one is forgotten then. A signature is
/// accepted only within one window of its timestamp, so it is remembered as long as it could be
/// replayed (at least two windows after it was first seen), and each request costs O(1) — the
/// guard never scans what it holds.
///
/// What it holds in memory is lost in a restart; so every accepted signature is also recorded
/// in the store (while the disk has room), and one made before this server started is looked up
/// there: a request replayed across a restart is refused like any other replay.
pub struct ReplayGuard {
    generations: Mutex<Generations>,
    started_ms: u64,
    stored: Option<Stored>,
}

struct Stored {
    seen: SeenSignatures,
    space: Space,
}

#[derive(Default)]
struct Generations {
    current: HashSet<[u8; 64]>,
    previous: HashSet<[u8; 64]>,
    current_since_ms: u64,
}

impl ReplayGuard {
    /// A guard for a server started at `started_ms` that records what it accepts in `seen`.
    pub fn new(started_ms: u64, seen: SeenSignatures, space: Space) -> Self {
        ReplayGuard {
            generations: Mutex::default(),
            started_ms,
            stored: Some(Stored { seen, space }),
        }
    }

    /// A guard that forgets everything in a restart.
    #[cfg(test)]
    fn in_memory() -> Self {
        ReplayGuard {
            generations: Mutex::default(),
            started_ms: 0,
            stored: None,
        }
    }

    /// Records a signature made at `signed_ms` (which the caller checked to be within the
    /// window); false if it was seen before — in this run, or, for a request whose replay
    /// would do harm, in the one before.
    pub fn first_use(
        &self,
        signature: [u8; 64],
        signed_ms: u64,
        now_ms: u64,
        replayed: Replay,
    ) -> Result<bool, StorageError> {
        if !self.first_in_memory(signature, now_ms) {
            return Ok(false);
        }
        let (Some(stored), Replay::Refuse) = (&self.stored, replayed) else {
            return Ok(true);
        };
        if signed_ms < self.started_ms && stored.seen.contains(&signature, signed_ms)? {
            return Ok(false);
        }
        // On a full disk nothing that adds data is taken, and a read replayed after a restart
        // does no harm: then the signature is only remembered in memory.
        if stored.space.check().is_ok() {
            stored.seen.record(&signature, signed_ms)?;
        }
        Ok(true)
    }

    fn first_in_memory(&self, signature: [u8; 64], now_ms: u64) -> bool {
        let mut generations = self
            .generations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if now_ms.saturating_sub(generations.current_since_ms) >= 2 * REPLAY_WINDOW_MS {
            let current = std::mem::take(&mut generations.current);
            generations.previous = current;
            generations.current_since_ms = now_ms;
        }
        if generations.previous.contains(&signature) {
            return false;
        }
        generations.current.insert(signature)
    }
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
    accounts: &AccountStore,
    replay: &ReplayGuard,
    replayed: Replay,
) -> Result<Caller, ApiError> {
    let signature = RequestSignature::parse_header(authorization(request)?)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const W: u64 = REPLAY_WINDOW_MS;

    #[test]
    fn a_signature_is_refused_again_for_as_long_as_its_timestamp_is_accepted() {
        let guard = ReplayGuard::in_memory();
        let start = 10 * W;
        let first_use = |signature, now| {
            guard
                .first_use(signature, now, now, Replay::Refuse)
                .unwrap()
        };
        assert!(first_use([1; 64], start));
        assert!(!first_use([1; 64], start + 1));
        // Seen at the end of a generation: still remembered two windows later.
        let late = start + 2 * W - 1;
        assert!(first_use([2; 64], late));
        assert!(!first_use([2; 64], late + 2 * W - 1));
        assert!(!first_use([1; 64], start + 2 * W));
        // Other signatures are untouched by either.
        assert!(first_use([3; 64], late + 1));
    }

    #[test]
    fn signatures_are_forgotten_once_no_timestamp_could_pass_any_more() {
        let guard = ReplayGuard::in_memory();
        assert!(guard.first_use([1; 64], W, W, Replay::Refuse).unwrap());
        for step in 1..=2 {
            guard
                .first_use([9; 64], W + step * 2 * W, W + step * 2 * W, Replay::Refuse)
                .unwrap();
        }
        let generations = guard.generations.lock().unwrap();
        assert_eq!(
            generations.previous.len() + generations.current.len(),
            1,
            "only the newest signature is held"
        );
    }
}
