//! `privacy_pass`: tokens bought from the home AS and not spent yet, per domain that takes them
//! (a token names the one server it is good for). `origin ‖ 0 ‖ nonce` → [`Kept`]. A token is
//! taken out before it is sent, so it is never sent twice; one lost with its request costs a
//! token, nothing else.

use roost_protocol::{tokens::Token, Domain, Timestamp};
use serde::{Deserialize, Serialize};

use super::{State, StateError};

pub(super) const TREE: &str = "privacy_pass";

#[derive(Serialize, Deserialize)]
struct Kept {
    /// The token, RFC 9578-encoded.
    token: Vec<u8>,
    /// Until when its issuer key's tokens are taken.
    until: Timestamp,
}

fn prefix(origin: &Domain) -> Vec<u8> {
    [origin.as_str().as_bytes(), &[0]].concat()
}

impl State {
    /// Keeps `tokens` for `origin`, each redeemable until `until`.
    pub(crate) fn keep_tokens(
        &self,
        origin: &Domain,
        tokens: &[Token],
        until: Timestamp,
    ) -> Result<(), StateError> {
        for token in tokens {
            let key = [prefix(origin), token.nonce.to_vec()].concat();
            let kept = Kept {
                token: token.encode(),
                until,
            };
            self.privacy_pass
                .insert(key, roost_protocol::codec::encode(&kept))
                .map_err(|e| self.store_error(e))?;
        }
        self.flush()
    }

    /// Takes up to `n` tokens for `origin` that are still good at `now` (dropping those that
    /// are not).
    pub(crate) fn take_tokens(
        &self,
        origin: &Domain,
        n: usize,
        now: Timestamp,
    ) -> Result<Vec<Token>, StateError> {
        let mut taken = Vec::new();
        for entry in self.privacy_pass.scan_prefix(prefix(origin)) {
            if taken.len() == n {
                break;
            }
            let (key, _) = entry.map_err(|e| self.store_error(e))?;
            // Whoever removes it has it.
            let Some(bytes) = self
                .privacy_pass
                .remove(&key)
                .map_err(|e| self.store_error(e))?
            else {
                continue;
            };
            let kept: Kept = roost_protocol::codec::decode(&bytes)
                .map_err(|e| self.corrupt(TREE, &key, &e.to_string()))?;
            if kept.until > now {
                if let Ok(token) = Token::decode(&kept.token) {
                    taken.push(token);
                }
            }
        }
        self.flush()?;
        Ok(taken)
    }

    /// Drops every token kept for `origin` (its server refused one as not valid there).
    pub(crate) fn drop_tokens(&self, origin: &Domain) -> Result<(), StateError> {
        for key in self.privacy_pass.scan_prefix(prefix(origin)).keys() {
            let key = key.map_err(|e| self.store_error(e))?;
            self.privacy_pass
                .remove(key)
                .map_err(|e| self.store_error(e))?;
        }
        self.flush()
    }

    /// How many tokens are kept for `origin`.
    pub fn token_count(&self, origin: &Domain) -> usize {
        self.privacy_pass.scan_prefix(prefix(origin)).count()
    }
}
