//! Privacy Pass tokens (RFC 9576/9578, publicly verifiable: token type 0x0002, blind RSA):
//! anonymous credentials a user's own homeserver issues and any Roost server accepts.
//!
//! A client asks its own AS (signed, so the AS can count per user) to blind-sign token inputs
//! it chose; it unblinds the answers into tokens. It spends one token per costly anonymous
//! request, on its own server or another domain's, which verifies the token with the issuer's
//! published key and cannot link it to the issuance (the issuer never saw the input). Each
//! token names, inside its challenge digest, the issuer domain and the *origin* that accepts it,
//! so a token spent at one server is worthless at another and each server's spent-token record
//! is enough to stop double spending. The redemption context is empty: tokens can be fetched
//! in batches ahead of use, which is what keeps issuance time from pointing at a redemption.
//!
//! Wire formats are RFC 9578's (TLS presentation language), checked against its reference test
//! vectors; `Authorization: PrivateToken token="…"` carries a token (RFC 9577), with an `issuer`
//! parameter naming the issuing domain.

pub mod blind_rsa;
pub mod policy;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use blind_rsa::{BlindRsaError, IssuerPublicKey, IssuerSecretKey, Unblinder, MODULUS_BYTES};

/// RFC 9578's publicly verifiable token type (blind RSA, 2048-bit).
pub const TOKEN_TYPE: u16 = 0x0002;
/// A token's encoded size: type, nonce, challenge digest, key id, authenticator.
pub const TOKEN_BYTES: usize = 2 + 32 + 32 + 32 + MODULUS_BYTES;
/// What the authenticator signs: the token without its authenticator.
const TOKEN_INPUT_BYTES: usize = TOKEN_BYTES - MODULUS_BYTES;
/// The HTTP authentication scheme (RFC 9577).
pub const AUTH_SCHEME: &str = "PrivateToken";
/// Most tokens one issuance request may ask for.
pub const MAX_BATCH: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("the token is not for this server")]
    WrongChallenge,
    #[error("the token's key is not one its issuer publishes")]
    UnknownKey,
    #[error(transparent)]
    Signature(#[from] BlindRsaError),
}

/// RFC 9577 TokenChallenge: what a token is good for. Roost's challenges name the issuer's
/// domain and the redeeming server's domain (`origin_info`), with no redemption context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenChallenge {
    pub issuer: String,
    pub origin: String,
}

impl TokenChallenge {
    pub fn new(issuer: &str, origin: &str) -> TokenChallenge {
        TokenChallenge {
            issuer: issuer.to_string(),
            origin: origin.to_string(),
        }
    }

    /// The challenge's TLS encoding.
    pub fn encode(&self) -> Vec<u8> {
        encode_challenge(self.issuer.as_bytes(), &[], self.origin.as_bytes())
    }

    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.encode()).into()
    }
}

fn encode_challenge(issuer: &[u8], context: &[u8], origin: &[u8]) -> Vec<u8> {
    let mut out = TOKEN_TYPE.to_be_bytes().to_vec();
    out.extend_from_slice(&(issuer.len() as u16).to_be_bytes());
    out.extend_from_slice(issuer);
    out.push(context.len() as u8);
    out.extend_from_slice(context);
    out.extend_from_slice(&(origin.len() as u16).to_be_bytes());
    out.extend_from_slice(origin);
    out
}

/// A spendable token (RFC 9578 §6.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub nonce: [u8; 32],
    pub challenge_digest: [u8; 32],
    pub key_id: [u8; 32],
    pub authenticator: Vec<u8>,
}

impl Token {
    fn input(nonce: &[u8; 32], challenge_digest: &[u8; 32], key_id: &[u8; 32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(TOKEN_INPUT_BYTES);
        out.extend_from_slice(&TOKEN_TYPE.to_be_bytes());
        out.extend_from_slice(nonce);
        out.extend_from_slice(challenge_digest);
        out.extend_from_slice(key_id);
        out
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Token::input(&self.nonce, &self.challenge_digest, &self.key_id);
        out.extend_from_slice(&self.authenticator);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Token, TokenError> {
        if bytes.len() != TOKEN_BYTES {
            return Err(TokenError::Malformed("a token has 354 bytes"));
        }
        if bytes[..2] != TOKEN_TYPE.to_be_bytes() {
            return Err(TokenError::Malformed("not a publicly verifiable token"));
        }
        let take = |at: usize| -> [u8; 32] { bytes[at..at + 32].try_into().expect("32 bytes") };
        Ok(Token {
            nonce: take(2),
            challenge_digest: take(34),
            key_id: take(66),
            authenticator: bytes[TOKEN_INPUT_BYTES..].to_vec(),
        })
    }

    /// Checks the token is for `challenge` and signed by `key`. Whether it was spent before is
    /// the redeeming server's record to keep.
    pub fn verify(
        &self,
        challenge: &TokenChallenge,
        key: &IssuerPublicKey,
    ) -> Result<(), TokenError> {
        if self.challenge_digest != challenge.digest() {
            return Err(TokenError::WrongChallenge);
        }
        if self.key_id != key.key_id() {
            return Err(TokenError::UnknownKey);
        }
        let input = Token::input(&self.nonce, &self.challenge_digest, &self.key_id);
        key.verify(&input, &self.authenticator)?;
        Ok(())
    }
}

/// The `Authorization` header value that spends `tokens` (one `token` parameter each: an
/// operation may cost more than one), naming their issuer.
pub fn to_header(tokens: &[Token], issuer: &str) -> String {
    let mut value = AUTH_SCHEME.to_string();
    for token in tokens {
        value.push_str(&format!(
            " token=\"{}\",",
            URL_SAFE_NO_PAD.encode(token.encode())
        ));
    }
    value + &format!(" issuer=\"{issuer}\"")
}

/// The `WWW-Authenticate` value that asks for a token (RFC 9577 §2.1): the challenge it must
/// answer and the issuer key (`spki`) it is signed under, both base64url.
pub fn challenge_header(challenge: &TokenChallenge, spki: &[u8]) -> String {
    format!(
        "{AUTH_SCHEME} challenge=\"{}\", token-key=\"{}\"",
        URL_SAFE_NO_PAD.encode(challenge.encode()),
        URL_SAFE_NO_PAD.encode(spki)
    )
}

/// Reads an `Authorization: PrivateToken token="…", …, issuer="…"` value: its tokens (at most
/// [`policy::MAX_TOKENS_PER_REQUEST`]) and the issuer it names.
pub fn from_header(value: &str) -> Result<(Vec<Token>, String), TokenError> {
    let params = value
        .strip_prefix(AUTH_SCHEME)
        .filter(|rest| rest.starts_with(' '))
        .ok_or(TokenError::Malformed("not a PrivateToken authorization"))?;
    let (mut tokens, mut issuer) = (Vec::new(), None);
    for param in params.split(',') {
        let (name, quoted) = param
            .trim()
            .split_once('=')
            .ok_or(TokenError::Malformed("a parameter without a value"))?;
        let value = quoted.trim().trim_matches('"');
        match name.trim() {
            "token" if tokens.len() == usize::from(policy::MAX_TOKENS_PER_REQUEST) => {
                return Err(TokenError::Malformed("too many tokens"))
            }
            "token" => {
                let bytes = URL_SAFE_NO_PAD
                    .decode(value.trim_end_matches('='))
                    .map_err(|_| TokenError::Malformed("a token is not base64url"))?;
                tokens.push(Token::decode(&bytes)?);
            }
            "issuer" => issuer = Some(value),
            _ => {}
        }
    }
    if tokens.is_empty() {
        return Err(TokenError::Malformed("no token parameter"));
    }
    let issuer = issuer.ok_or(TokenError::Malformed("no issuer parameter"))?;
    Ok((tokens, issuer.to_string()))
}

/// One token asked of an issuer (RFC 9578 §6.1): the blinded token input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRequest {
    pub truncated_key_id: u8,
    pub blinded: Vec<u8>,
}

impl TokenRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = TOKEN_TYPE.to_be_bytes().to_vec();
        out.push(self.truncated_key_id);
        out.extend_from_slice(&self.blinded);
        out
    }
}

/// What the client keeps of a [`TokenRequest`] until the issuer answers.
pub struct PendingToken {
    nonce: [u8; 32],
    challenge_digest: [u8; 32],
    unblinder: Unblinder,
}

/// Blinds a fresh token input for `challenge` under the issuer's `key`.
pub fn request_token(
    key: &IssuerPublicKey,
    challenge: &TokenChallenge,
) -> Result<(TokenRequest, PendingToken), TokenError> {
    let nonce: [u8; 32] = rand::random();
    let challenge_digest = challenge.digest();
    let input = Token::input(&nonce, &challenge_digest, &key.key_id());
    let blinded = key.blind(&input)?;
    Ok(pending(key, nonce, challenge_digest, blinded))
}

fn pending(
    key: &IssuerPublicKey,
    nonce: [u8; 32],
    challenge_digest: [u8; 32],
    (blinded, unblinder): (Vec<u8>, Unblinder),
) -> (TokenRequest, PendingToken) {
    (
        TokenRequest {
            truncated_key_id: key.truncated_key_id(),
            blinded,
        },
        PendingToken {
            nonce,
            challenge_digest,
            unblinder,
        },
    )
}

impl PendingToken {
    /// Unblinds the issuer's blind signature into a token, checking it.
    pub fn finish(
        self,
        key: &IssuerPublicKey,
        blind_signature: &[u8],
    ) -> Result<Token, TokenError> {
        let key_id = key.key_id();
        let input = Token::input(&self.nonce, &self.challenge_digest, &key_id);
        let authenticator = key.finalize(&input, blind_signature, &self.unblinder)?;
        Ok(Token {
            nonce: self.nonce,
            challenge_digest: self.challenge_digest,
            key_id,
            authenticator,
        })
    }
}

/// The issuer's side of [`TokenRequest`]: a blind signature (the TokenResponse).
pub fn issue(key: &IssuerSecretKey, request: &TokenRequest) -> Result<Vec<u8>, TokenError> {
    if request.truncated_key_id != key.public_key().truncated_key_id() {
        return Err(TokenError::UnknownKey);
    }
    Ok(key.blind_sign(&request.blinded)?)
}

#[cfg(test)]
mod tests;
