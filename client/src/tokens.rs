//! The client's Privacy Pass wallet: it buys tokens from the home AS in batches (a signed
//! request, so the home server counts them against this user's budget), keeps them in the
//! state store per server that takes them, and pays for costly anonymous requests to any
//! homeserver with them ([`Pay`]). The home server sees how many tokens this user buys, never
//! which request spends one; the server that takes a token cannot tell whose it is.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use roost_protocol::{
    tokens::{
        self,
        policy::{IssueRequest, Operation, TokenPolicy},
        IssuerPublicKey, TokenChallenge, MAX_BATCH,
    },
    ClientId, Domain, SigningKey, Timestamp,
};

use crate::{
    store::State,
    transport::{Pay, Server, ServerError, Signer},
};

/// Tokens bought at once for a server, at least: fewer purchases, and a purchase's time says
/// less about when one is spent.
pub const BATCH: usize = 20;
/// How long a server's token policy is trusted without asking again.
const POLICY_TTL: Duration = Duration::from_secs(600);

pub struct Wallet {
    state: State,
    issuer: Domain,
    client_id: ClientId,
    key: SigningKey,
    policies: Mutex<HashMap<Domain, (TokenPolicy, Instant)>>,
}

impl Wallet {
    pub fn new(state: State, issuer: Domain, client_id: ClientId, key: SigningKey) -> Arc<Wallet> {
        Arc::new(Wallet {
            state,
            issuer,
            client_id,
            key,
            policies: Mutex::default(),
        })
    }

    /// `origin`'s token policy, cached unless `fresh`.
    async fn policy(
        &self,
        origin: &Domain,
        server: &Server,
        fresh: bool,
    ) -> Result<TokenPolicy, ServerError> {
        let cached = self
            .policies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(origin)
            .filter(|(_, at)| !fresh && at.elapsed() < POLICY_TTL)
            .map(|(policy, _)| policy.clone());
        if let Some(policy) = cached {
            return Ok(policy);
        }
        let policy = server.token_policy().await?;
        if &policy.domain != origin {
            return Err(ServerError::Malformed(format!(
                "the token policy of {origin} names {}",
                policy.domain
            )));
        }
        self.policies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(origin.clone(), (policy.clone(), Instant::now()));
        Ok(policy)
    }

    /// Buys at least `n` tokens for `origin` from the home server: answers `n`, keeps the rest.
    async fn buy(
        &self,
        home: &Server,
        origin: &Domain,
        n: usize,
        fresh: bool,
    ) -> Result<Vec<tokens::Token>, ServerError> {
        let now = Timestamp::now();
        let own = self.policy(&self.issuer, home, fresh).await?;
        let published = own.keys.iter().find(|k| k.issues_at(now)).ok_or_else(|| {
            ServerError::Malformed("the home server publishes no issuer key for now".into())
        })?;
        let key = IssuerPublicKey::from_spki(&published.spki)
            .map_err(|e| ServerError::Malformed(format!("the home server's issuer key: {e}")))?;
        let challenge = TokenChallenge::new(self.issuer.as_str(), origin.as_str());
        let count = n.clamp(BATCH, MAX_BATCH);
        let (requests, pending): (Vec<_>, Vec<_>) = (0..count)
            .map(|_| tokens::request_token(&key, &challenge))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ServerError::Malformed(e.to_string()))?
            .into_iter()
            .unzip();
        let signer = Signer {
            client_id: self.client_id,
            key: &self.key,
        };
        let answer = home
            .issue_tokens(
                &IssueRequest {
                    key_id: key.key_id(),
                    requests,
                },
                signer,
            )
            .await?;
        if answer.blind_signatures.len() != pending.len() {
            return Err(ServerError::Malformed(
                "the issuer answered another number of tokens".into(),
            ));
        }
        let mut bought = pending
            .into_iter()
            .zip(&answer.blind_signatures)
            .map(|(one, signature)| one.finish(&key, signature))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ServerError::Malformed(format!("an issued token: {e}")))?;
        let rest = bought.split_off(n.min(bought.len()));
        self.state
            .keep_tokens(origin, &rest, published.redeemable_until)
            .map_err(|e| ServerError::Malformed(format!("keeping tokens: {e}")))?;
        Ok(bought)
    }
}

impl Pay for Wallet {
    fn pay<'a>(
        &'a self,
        origin: &'a Domain,
        server: &'a Server,
        home: &'a Server,
        operation: Operation,
        fresh: bool,
    ) -> Pin<Box<dyn Future<Output = Result<Option<String>, ServerError>> + Send + 'a>> {
        Box::pin(async move {
            let cost = usize::from(
                self.policy(origin, server, fresh)
                    .await?
                    .costs
                    .of(operation),
            );
            if cost == 0 {
                return Ok(None);
            }
            let kept =
                |e: crate::store::StateError| ServerError::Malformed(format!("kept tokens: {e}"));
            if fresh {
                self.state.drop_tokens(origin).map_err(kept)?;
            }
            let mut paying = self
                .state
                .take_tokens(origin, cost, Timestamp::now())
                .map_err(kept)?;
            if paying.len() < cost {
                paying.extend(self.buy(home, origin, cost - paying.len(), fresh).await?);
            }
            Ok(Some(tokens::to_header(&paying, self.issuer.as_str())))
        })
    }
}
