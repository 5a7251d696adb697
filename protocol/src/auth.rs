//! Authentication of client requests to their home server.
//!
//! A client signs method, path (with query), a millisecond timestamp, a random nonce and a hash
//! of the body with its client key, and sends the result in the `Authorization` header:
//!
//! ```text
//! Authorization: Roost-Signature client=<hex id>, ts=<ms>, nonce=<hex>, sig=<base64url>
//! ```
//!
//! The server accepts a signature only within [`REPLAY_WINDOW_MS`] of its own clock and only
//! once (it remembers the signatures it saw within the window).

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde::Serialize;

use crate::{
    crypto::{hash, Signature, SigningKey, VerifyingKey},
    ids::ClientId,
};

pub const SCHEME: &str = "Roost-Signature";
const LABEL: &str = "roost client request v1";

/// How far a request's timestamp may be from the server's clock, either way.
pub const REPLAY_WINDOW_MS: u64 = 60_000;

#[derive(Serialize)]
struct SignedRequest<'a> {
    method: &'a str,
    path_and_query: &'a str,
    timestamp_ms: u64,
    nonce: [u8; 16],
    body_hash: [u8; 32],
}

/// The parsed `Authorization` header of a signed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSignature {
    pub client_id: ClientId,
    pub timestamp_ms: u64,
    pub nonce: [u8; 16],
    pub signature: Signature,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the Authorization header is missing")]
    Missing,
    #[error("the Authorization header is malformed: {0}")]
    Malformed(&'static str),
    #[error("the request's timestamp is outside the replay window")]
    Stale,
    #[error("the request signature does not verify")]
    BadSignature,
}

fn body_hash(body: &[u8]) -> [u8; 32] {
    hash("roost request body v1", body)
}

impl RequestSignature {
    /// Signs a request about to be sent.
    pub fn sign(
        key: &SigningKey,
        client_id: ClientId,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        timestamp_ms: u64,
    ) -> Self {
        let nonce: [u8; 16] = rand::random();
        let signature = key.sign(
            LABEL,
            &SignedRequest {
                method,
                path_and_query,
                timestamp_ms,
                nonce,
                body_hash: body_hash(body),
            },
        );
        RequestSignature {
            client_id,
            timestamp_ms,
            nonce,
            signature,
        }
    }

    /// Checks the timestamp against `now_ms` and the signature against `key`.
    pub fn verify(
        &self,
        key: &VerifyingKey,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        now_ms: u64,
    ) -> Result<(), AuthError> {
        if self.timestamp_ms.abs_diff(now_ms) > REPLAY_WINDOW_MS {
            return Err(AuthError::Stale);
        }
        key.verify(
            LABEL,
            &SignedRequest {
                method,
                path_and_query,
                timestamp_ms: self.timestamp_ms,
                nonce: self.nonce,
                body_hash: body_hash(body),
            },
            &self.signature,
        )
        .map_err(|_| AuthError::BadSignature)
    }

    pub fn to_header(&self) -> String {
        format!(
            "{SCHEME} client={}, ts={}, nonce={}, sig={}",
            self.client_id,
            self.timestamp_ms,
            hex::encode(self.nonce),
            URL_SAFE_NO_PAD.encode(self.signature.0)
        )
    }

    pub fn parse_header(header: &str) -> Result<Self, AuthError> {
        let rest = header
            .strip_prefix(SCHEME)
            .and_then(|r| r.strip_prefix(' '))
            .ok_or(AuthError::Malformed("expected the Roost-Signature scheme"))?;
        let (mut client, mut ts, mut nonce, mut sig) = (None, None, None, None);
        for part in rest.split(',') {
            let (key, value) = part
                .trim()
                .split_once('=')
                .ok_or(AuthError::Malformed("expected key=value pairs"))?;
            match key {
                "client" => client = Some(value),
                "ts" => ts = Some(value),
                "nonce" => nonce = Some(value),
                "sig" => sig = Some(value),
                _ => return Err(AuthError::Malformed("unknown parameter")),
            }
        }
        let client_id = client
            .ok_or(AuthError::Malformed("client is missing"))?
            .parse()
            .map_err(|_| AuthError::Malformed("client is not a client id"))?;
        let timestamp_ms = ts
            .ok_or(AuthError::Malformed("ts is missing"))?
            .parse()
            .map_err(|_| AuthError::Malformed("ts is not a number"))?;
        let mut nonce_bytes = [0u8; 16];
        hex::decode_to_slice(
            nonce.ok_or(AuthError::Malformed("nonce is missing"))?,
            &mut nonce_bytes,
        )
        .map_err(|_| AuthError::Malformed("nonce is not 16 hex bytes"))?;
        let sig_bytes: [u8; 64] = URL_SAFE_NO_PAD
            .decode(sig.ok_or(AuthError::Malformed("sig is missing"))?)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(AuthError::Malformed("sig is not a base64url signature"))?;
        Ok(RequestSignature {
            client_id,
            timestamp_ms,
            nonce: nonce_bytes,
            signature: Signature(sig_bytes),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_request_verifies_only_unchanged_and_in_time() {
        let key = SigningKey::generate();
        let id = ClientId::random();
        let sig = RequestSignature::sign(&key, id, "POST", "/qs/v1/x?a=1", b"body", 1_000_000);
        let parsed = RequestSignature::parse_header(&sig.to_header()).unwrap();
        assert_eq!(parsed, sig);
        let vk = key.verifying_key();
        assert_eq!(
            parsed.verify(&vk, "POST", "/qs/v1/x?a=1", b"body", 1_000_500),
            Ok(())
        );
        assert_eq!(
            parsed.verify(&vk, "GET", "/qs/v1/x?a=1", b"body", 1_000_500),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            parsed.verify(&vk, "POST", "/qs/v1/x?a=2", b"body", 1_000_500),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            parsed.verify(&vk, "POST", "/qs/v1/x?a=1", b"bodY", 1_000_500),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            parsed.verify(
                &vk,
                "POST",
                "/qs/v1/x?a=1",
                b"body",
                1_000_000 + REPLAY_WINDOW_MS + 1
            ),
            Err(AuthError::Stale)
        );
    }

    #[test]
    fn malformed_headers_are_named() {
        for bad in [
            "",
            "Bearer x",
            "Roost-Signature client=zz, ts=1, nonce=00, sig=AA",
        ] {
            assert!(RequestSignature::parse_header(bad).is_err(), "{bad}");
        }
    }
}
