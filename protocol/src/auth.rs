//! Authentication of requests: a client's to its home server, and a server's to another server.
//!
//! The signer signs method, path (with query), a millisecond timestamp, a random nonce and a
//! hash of the body with its key, and sends the result in the `Authorization` header:
//!
//! ```text
//! Authorization: Roost-Signature client=<hex id>, ts=<ms>, nonce=<hex>, sig=<base64url>
//! Authorization: Roost-Server-Signature server=<domain>, ts=<ms>, nonce=<hex>, sig=<base64url>
//! ```
//!
//! The two kinds use different signature labels, so one can never pass for the other. The
//! receiver accepts a signature only within [`REPLAY_WINDOW_MS`] of its own clock and only once
//! (it remembers the signatures it saw within the window).

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde::Serialize;

use crate::{
    crypto::{hash, Signature, SigningKey, VerifyingKey},
    ids::{ClientId, Domain},
};

/// Who signs a request: a client (by id) or a homeserver (by domain).
pub trait RequestSigner: Sized + std::fmt::Display + std::str::FromStr {
    /// The `Authorization` scheme.
    const SCHEME: &'static str;
    /// The header parameter naming the signer.
    const PARAM: &'static str;
    /// The signature's domain-separation label.
    const LABEL: &'static str;
}

impl RequestSigner for ClientId {
    const SCHEME: &'static str = "Roost-Signature";
    const PARAM: &'static str = "client";
    const LABEL: &'static str = "roost client request v1";
}

impl RequestSigner for Domain {
    const SCHEME: &'static str = "Roost-Server-Signature";
    const PARAM: &'static str = "server";
    const LABEL: &'static str = "roost server request v1";
}

pub const SCHEME: &str = <ClientId as RequestSigner>::SCHEME;

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

/// The parsed `Authorization` header of a signed request, by a signer of kind `S`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed<S> {
    pub signer: S,
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

/// A client's request signature.
pub type RequestSignature = Signed<ClientId>;
/// A homeserver's request signature, for server-to-server calls.
pub type ServerSignature = Signed<Domain>;

impl<S: RequestSigner> Signed<S> {
    /// Signs a request about to be sent.
    pub fn sign(
        key: &SigningKey,
        signer: S,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        timestamp_ms: u64,
    ) -> Self {
        let nonce: [u8; 16] = rand::random();
        let signature = key.sign(
            S::LABEL,
            &SignedRequest {
                method,
                path_and_query,
                timestamp_ms,
                nonce,
                body_hash: body_hash(body),
            },
        );
        Signed {
            signer,
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
            S::LABEL,
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
            "{} {}={}, ts={}, nonce={}, sig={}",
            S::SCHEME,
            S::PARAM,
            self.signer,
            self.timestamp_ms,
            hex::encode(self.nonce),
            URL_SAFE_NO_PAD.encode(self.signature.0)
        )
    }

    pub fn parse_header(header: &str) -> Result<Self, AuthError> {
        let rest = header
            .strip_prefix(S::SCHEME)
            .and_then(|r| r.strip_prefix(' '))
            .ok_or(AuthError::Malformed("expected another signature scheme"))?;
        let (mut signer, mut ts, mut nonce, mut sig) = (None, None, None, None);
        for part in rest.split(',') {
            let (key, value) = part
                .trim()
                .split_once('=')
                .ok_or(AuthError::Malformed("expected key=value pairs"))?;
            match key {
                key if key == S::PARAM => signer = Some(value),
                "ts" => ts = Some(value),
                "nonce" => nonce = Some(value),
                "sig" => sig = Some(value),
                _ => return Err(AuthError::Malformed("unknown parameter")),
            }
        }
        let signer = signer
            .ok_or(AuthError::Malformed("the signer is missing"))?
            .parse()
            .map_err(|_| AuthError::Malformed("the signer is not a client id or domain"))?;
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
        Ok(Signed {
            signer,
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
    fn a_server_signature_never_passes_for_a_client_signature() {
        let key = SigningKey::generate();
        let domain: Domain = "a.test".parse().unwrap();
        let server = ServerSignature::sign(&key, domain.clone(), "POST", "/f", b"x", 5_000);
        let header = server.to_header();
        assert!(header.starts_with("Roost-Server-Signature server=a.test, "));
        assert_eq!(ServerSignature::parse_header(&header).unwrap(), server);
        assert!(RequestSignature::parse_header(&header).is_err());
        // The same key's client signature does not verify as a server's.
        let client = RequestSignature::sign(&key, ClientId::random(), "POST", "/f", b"x", 5_000);
        let forged = ServerSignature {
            signer: domain,
            timestamp_ms: client.timestamp_ms,
            nonce: client.nonce,
            signature: client.signature,
        };
        assert_eq!(
            forged.verify(&key.verifying_key(), "POST", "/f", b"x", 5_000),
            Err(AuthError::BadSignature)
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
