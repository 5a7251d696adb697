//! Wire types and cryptography shared by the Roost server and its clients.
//!
//! Owns: the codec (the only encoding of values to bytes), names and ids, signatures and HPKE,
//! the AS credential chain and its verification, request authentication, how a queued message
//! is sealed (queue key chains), and the HTTP API's bodies. Touches no storage, network or clock
//! beyond reading the time: everything here is a pure function of its inputs (and, for fresh
//! keys, the system's randomness), so server and client agree by construction.

pub mod api;
pub mod auth;
pub mod codec;
pub mod connection;
pub mod content;
pub mod credentials;
pub mod crypto;
pub mod ds;
pub mod federation;
pub mod ids;
pub mod key_packages;
pub mod profile;
pub mod queue;
pub mod route;
pub mod tokens;

pub use credentials::{AsCredential, AsCredentials, AsIntermediateCredential, ClientCredential};
pub use crypto::{HpkePublicKey, HpkeSecretKey, Signature, SigningKey, VerifyingKey};
pub use ids::{ClientId, Domain, OpId, Timestamp, UserName};

/// An error with the errors it was caused by, as one line: what a person needs to see when a
/// connection fails ("error sending request" says nothing; its source names the bad
/// certificate). Causes already in the text are not repeated.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
