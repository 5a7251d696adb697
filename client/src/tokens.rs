//! The client's Privacy Pass wallet: it buys tokens from the home AS in batches (a signed
//! request, so the home server counts them against this user's budget), keeps them in the
//! state store per server that takes them, and pays for costly anonymous requests to any
//! homeserver with them ([`Pay`]). The home server sees how many tokens this user buys, never
//! which request spends one; the server that takes a token cannot tell whose it is.
//!
//! A long-lived client (the app, the load generator) buys ahead: once a payment leaves fewer
//! than [`BUY_AHEAD_BELOW`] kept for a server, the next batch is bought in the background, so a
//! send does not wait for the issuer's signatures. A one-shot command does not, as the process
//! would end before the purchase is kept, and the user's budget would pay for nothing.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, Weak,
    },
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
    lock,
    store::State,
    transport::{Pay, Server, ServerError, Signer},
};

/// Tokens bought at once for a server, at least: fewer purchases, and a purchase's time says
/// less about when one is spent.
pub const BATCH: usize = 20;
/// A wallet that buys ahead buys the next batch for a server once a payment leaves fewer than
/// this many kept for it.
pub const BUY_AHEAD_BELOW: usize = BATCH / 2;
/// How long a server's token policy is trusted without asking again.
const POLICY_TTL: Duration = Duration::from_secs(600);

pub struct Wallet {
    state: State,
    issuer: Domain,
    client_id: ClientId,
    key: SigningKey,
    policies: Mutex<HashMap<Domain, (TokenPolicy, Instant)>>,
    ahead: AtomicBool,
    /// Servers whose next batch is being bought in the background.
    buying: Mutex<HashSet<Domain>>,
    /// This wallet, for a purchase it starts in the background.
    me: Weak<Wallet>,
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Wallet(issued by {})", self.issuer)
    }
}

impl Wallet {
    pub fn new(state: State, issuer: Domain, client_id: ClientId, key: SigningKey) -> Arc<Wallet> {
        Arc::new_cyclic(|me| Wallet {
            state,
            issuer,
            client_id,
            key,
            policies: Mutex::default(),
            ahead: AtomicBool::new(false),
            buying: Mutex::default(),
            me: me.clone(),
        })
    }

    /// Buys the next batch in the background once a server's kept tokens run low.
    pub fn buy_ahead(&self) {
        self.ahead.store(true, Ordering::Relaxed);
    }

    /// Starts buying a batch for `origin` in the background if this wallet buys ahead, keeps
    /// few, and is not buying one already.
    fn restock(&self, origin: &Domain, home: &Server) {
        if !self.ahead.load(Ordering::Relaxed) || self.state.token_count(origin) >= BUY_AHEAD_BELOW
        {
            return;
        }
        let (Some(me), Ok(runtime)) = (self.me.upgrade(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        if !lock(&self.buying).insert(origin.clone()) {
            return;
        }
        let (origin, home) = (origin.clone(), home.clone());
        runtime.spawn(async move {
            // What fails here is bought when it is needed, as without buying ahead.
            let _ = me.buy(&home, &origin, 0, false).await;
            lock(&me.buying).remove(&origin);
        });
    }

    /// `origin`'s token policy, cached unless `fresh`.
    async fn policy(
        &self,
        origin: &Domain,
        server: &Server,
        fresh: bool,
    ) -> Result<TokenPolicy, ServerError> {
        let cached = lock(&self.policies)
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
        lock(&self.policies).insert(origin.clone(), (policy.clone(), Instant::now()));
        Ok(policy)
    }

    /// Buys at least `n` tokens for `origin` from the home server (a batch at least): answers
    /// `n`, keeps the rest.
    async fn buy(
        &self,
        home: &Server,
        origin: &Domain,
        n: usize,
        fresh: bool,
    ) -> Result<Vec<tokens::Token>, ServerError> {
        let now = Timestamp::now();
        let own = self.policy(&self.issuer, home, fresh).await?;
        let published = own.issuing_key(now).ok_or_else(|| {
            ServerError::Malformed("the home server publishes no issuer key for now".into())
        })?;
        let key = IssuerPublicKey::from_spki(&published.spki)
            .map_err(|e| ServerError::Malformed(format!("the home server's issuer key: {e}")))?;
        let challenge = TokenChallenge::new(self.issuer.as_str(), origin.as_str());
        let count = n.clamp(BATCH, MAX_BATCH);
        // Blinding and finalizing cost about a millisecond of CPU per token: off the runtime's
        // threads, so the client's other requests go on meanwhile.
        let blinding_key = key.clone();
        let (requests, pending): (Vec<_>, Vec<_>) = off_runtime(move || {
            (0..count)
                .map(|_| tokens::request_token(&blinding_key, &challenge))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?
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
        let mut bought = off_runtime(move || {
            pending
                .into_iter()
                .zip(&answer.blind_signatures)
                .map(|(one, signature)| one.finish(&key, signature))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?
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
            self.restock(origin, home);
            Ok(Some(tokens::to_header(&paying, self.issuer.as_str())))
        })
    }
}

/// Runs `work` on the runtime's blocking threads.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ServerError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ServerError::Malformed(format!("token work failed: {e}")))
}
