//! Paying for raw requests: every test server gets a *purse*, a user of its own registered on
//! first need, which buys real Privacy Pass tokens from the server's real issuer (signed, blind
//! RSA) and spends them on the costly anonymous requests [`Raw`] sends without an Authorization
//! of their own — so tests about other things need not spell payment out. Discovery is never
//! paid here: its free burst is what the tests of it check.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

use roost_protocol::{
    codec,
    tokens::{
        self,
        policy::{IssueRequest, IssueResponse, Operation, TokenPolicy, AS_TOKENS, AS_TOKEN_POLICY},
        IssuerPublicKey, Token, TokenChallenge,
    },
    Timestamp,
};

use super::raw::{Identity, Raw, Response};

/// Tokens a purse buys at once.
const BATCH: usize = 20;

pub struct Purse {
    /// `None` once registering failed (a server that takes registrations by token only).
    owner: tokio::sync::Mutex<Option<Option<Identity>>>,
    tokens: Mutex<Vec<Token>>,
    /// The server's token policy, as last read.
    policy: Mutex<Option<(TokenPolicy, std::time::Instant)>>,
}

/// How long a purse trusts the policy it read (tests rotate keys in seconds).
const POLICY_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// The purse of the server at `base`.
fn purse_of(base: &str) -> Arc<Purse> {
    static PURSES: OnceLock<Mutex<HashMap<String, Arc<Purse>>>> = OnceLock::new();
    PURSES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap()
        .entry(base.to_owned())
        .or_insert_with(|| {
            Arc::new(Purse {
                owner: tokio::sync::Mutex::new(None),
                tokens: Mutex::default(),
                policy: Mutex::default(),
            })
        })
        .clone()
}

impl Raw {
    /// The Authorization paying for `method path` at this server, if it is a costly operation
    /// (not discovery) and the server charges for it.
    pub(super) async fn payment(&self, method: &str, path: &str) -> Option<String> {
        let operation = Operation::of_request(method, path)?;
        if operation == Operation::Discovery {
            return None;
        }
        let unpaid = self.unpaid();
        let purse = purse_of(&self.base);
        let cached = purse
            .policy
            .lock()
            .unwrap()
            .clone()
            .filter(|(_, at)| at.elapsed() < POLICY_TTL);
        let policy = match cached {
            Some((policy, _)) => policy,
            None => {
                let policy: TokenPolicy = unpaid.get_decoded(AS_TOKEN_POLICY).await?;
                *purse.policy.lock().unwrap() = Some((policy.clone(), std::time::Instant::now()));
                policy
            }
        };
        let cost = usize::from(policy.costs.of(operation));
        if cost == 0 {
            return None;
        }
        let mut paying = Vec::new();
        for _ in 0..cost {
            let kept = purse.tokens.lock().unwrap().pop();
            match kept {
                Some(token) => paying.push(token),
                None => {
                    let mut bought = purse.buy(&unpaid, &policy).await?;
                    paying.push(bought.pop()?);
                    purse.tokens.lock().unwrap().extend(bought);
                }
            }
        }
        Some(tokens::to_header(&paying, policy.domain.as_str()))
    }
}

impl Purse {
    async fn buy(&self, raw: &Raw, policy: &TokenPolicy) -> Option<Vec<Token>> {
        let mut owner = self.owner.lock().await;
        if owner.is_none() {
            let name = format!("purse{:08x}@{}", rand::random::<u32>(), policy.domain);
            let mut who = Identity::new(&name.parse().unwrap());
            let registered = raw.register(&mut who, None).await.status == 201;
            *owner = Some(registered.then_some(who));
        }
        let who = owner.as_ref()?.as_ref()?;
        buy(raw, who, policy, policy.domain.as_str(), BATCH)
            .await
            .ok()
    }
}

/// Buys `n` tokens for `who` from its server `raw` (whose token policy is `policy`), good at
/// `origin`; the server's answer if it refuses.
pub async fn buy(
    raw: &Raw,
    who: &Identity,
    policy: &TokenPolicy,
    origin: &str,
    n: usize,
) -> Result<Vec<Token>, Response> {
    let now = Timestamp::now();
    let key = policy.issuing_key(now).expect("an issuer key signs now");
    let key = IssuerPublicKey::from_spki(&key.spki).unwrap();
    let challenge = TokenChallenge::new(policy.domain.as_str(), origin);
    let (requests, pending): (Vec<_>, Vec<_>) = (0..n)
        .map(|_| tokens::request_token(&key, &challenge).unwrap())
        .unzip();
    let body = codec::encode(&IssueRequest {
        key_id: key.key_id(),
        requests,
    });
    let answer = raw.signed(who, "POST", AS_TOKENS, body).await;
    if answer.status != 200 {
        return Err(answer);
    }
    let answer: IssueResponse = answer.decode();
    Ok(pending
        .into_iter()
        .zip(&answer.blind_signatures)
        .map(|(one, signature)| one.finish(&key, signature).unwrap())
        .collect())
}
