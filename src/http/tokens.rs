//! Privacy Pass at the front end: the token policy this server publishes, issuance to its own
//! users (signed, within each user's budget), and redemption — the one check every costly
//! anonymous endpoint runs ([`redeem`]) before it does any work.
//!
//! A request pays with `Authorization: PrivateToken token="…", issuer="DOMAIN"` (one `token`
//! per token the operation costs, `tokens.costs`). Tokens of this server's users are checked
//! against its own issuer keys; another domain's against the keys that domain publishes
//! (fetched and cached like its server key), and that domain's redemptions here are capped as a
//! whole (`tokens.redemptions_per_minute_per_issuer`), so a rogue domain minting tokens at will
//! gets no more than its share. Each token is spent once: a spent record (key id and nonce,
//! never a user) remembers the request it paid for, so a retry of the same request after a lost
//! answer passes and any other request is refused.

use actix_web::{
    http::{header, StatusCode},
    web, HttpRequest, HttpResponse,
};

use roost_actors::tokens::{IssueError, TokenIssuer};
use roost_protocol::{
    crypto,
    tokens::{
        self,
        policy::{
            Costs, IssueRequest, IssueResponse, Operation, TokenPolicy, AS_TOKENS, AS_TOKEN_POLICY,
        },
        IssuerPublicKey, Token, TokenChallenge, TokenError, MAX_BATCH,
    },
    Domain, Timestamp,
};
use roost_storage::{Spend, TokenStore};

use super::{
    decode, encoded, error::ApiError, limit_address, method_not_allowed, rate_limit::RateLimiter,
    signed_request, AppState, State,
};
use crate::federation::PeerCache;

/// The longest a peer's issuer key is honoured here, whatever it says: how long a spent record
/// may have to be kept.
const MAX_KEY_LIFE_SECS: u64 = 90 * 24 * 3600;

/// What the token endpoints and [`redeem`] need.
pub struct TokenState {
    pub issuer: TokenIssuer,
    pub store: TokenStore,
    pub costs: Costs,
    /// Redemptions of other domains' tokens, per issuing domain.
    pub issuer_limit: RateLimiter<Domain>,
    pub peers: PeerCache<TokenPolicy>,
    /// Groups this DS creates with one domain's tokens per token epoch.
    pub groups_per_issuer_epoch: u64,
}

/// Why a token did not pay.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(
        "this operation ({operation}) costs {cost} Privacy Pass token(s) (tokens.costs.{operation}); \
         send them as Authorization: PrivateToken token=\"…\", issuer=\"your homeserver\""
    )]
    Required { operation: &'static str, cost: u8 },
    #[error("the request carries {carried} token(s); {operation} costs {cost}")]
    WrongCount {
        operation: &'static str,
        cost: u8,
        carried: usize,
    },
    #[error("the token is not valid here: {0}")]
    Invalid(String),
    #[error("the token was spent on another request")]
    Spent,
    #[error(
        "{0}'s users have spent as many tokens here as this server takes from one domain \
         (tokens.redemptions_per_minute_per_issuer); retry in {1} s"
    )]
    IssuerOverBudget(Domain, u64),
    #[error(
        "{issuer}'s users have created as many groups here this token epoch as this server \
         takes from one domain ({limit}, tokens.groups_per_issuer_epoch); retry in {retry_after} s"
    )]
    GroupsPerEpoch {
        issuer: Domain,
        limit: u64,
        retry_after: u64,
    },
    #[error(transparent)]
    Issue(#[from] IssueError),
    #[error("an issuance request asks for 1 to {MAX_BATCH} tokens, not {0}")]
    BadBatch(usize),
}

impl PassError {
    pub(crate) fn code(&self) -> &'static str {
        match self {
            PassError::Required { .. } | PassError::WrongCount { .. } => "privacy_pass_required",
            PassError::Invalid(_) => "privacy_pass_invalid",
            PassError::Spent => "privacy_pass_spent",
            PassError::IssuerOverBudget(..) => "issuer_over_budget",
            PassError::GroupsPerEpoch { .. } => "groups_per_issuer_epoch",
            PassError::Issue(IssueError::OverBudget { .. }) => "token_budget_exhausted",
            PassError::Issue(IssueError::UnknownKey) => "unknown_issuer_key",
            PassError::Issue(IssueError::Storage(_)) => "internal",
            PassError::BadBatch(_) => "bad_batch",
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            PassError::Required { .. }
            | PassError::WrongCount { .. }
            | PassError::Invalid(_)
            | PassError::Spent => StatusCode::UNAUTHORIZED,
            PassError::IssuerOverBudget(..)
            | PassError::GroupsPerEpoch { .. }
            | PassError::Issue(IssueError::OverBudget { .. }) => StatusCode::TOO_MANY_REQUESTS,
            PassError::Issue(IssueError::UnknownKey) => StatusCode::CONFLICT,
            PassError::Issue(IssueError::Storage(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            PassError::BadBatch(_) => StatusCode::BAD_REQUEST,
        }
    }

    pub(crate) fn retry_after_secs(&self) -> Option<u64> {
        match self {
            PassError::IssuerOverBudget(_, secs)
            | PassError::GroupsPerEpoch {
                retry_after: secs, ..
            }
            | PassError::Issue(IssueError::OverBudget {
                retry_after_secs: secs,
                ..
            }) => Some(*secs),
            _ => None,
        }
    }
}

pub fn routes(config: &mut web::ServiceConfig) {
    let resource = |path: &str| web::resource(path).default_service(web::to(method_not_allowed));
    config
        .service(resource(AS_TOKEN_POLICY).route(web::get().to(policy)))
        .service(resource(AS_TOKENS).route(web::post().to(issue)));
}

/// This server's issuer keys and costs.
pub fn own_policy(state: &AppState) -> TokenPolicy {
    TokenPolicy {
        domain: state.domain.clone(),
        keys: state.tokens.issuer.published(Timestamp::now()),
        costs: state.tokens.costs,
    }
}

/// The `WWW-Authenticate` challenge a missing or refused token is answered with: this server as
/// origin, under its own issuer and the key it signs with now.
pub(crate) fn challenge(state: &AppState) -> Option<String> {
    let policy = own_policy(state);
    let key = policy.issuing_key(Timestamp::now())?;
    let challenge = TokenChallenge::new(state.domain.as_str(), state.domain.as_str());
    Some(tokens::challenge_header(&challenge, &key.spki))
}

async fn policy(state: State) -> HttpResponse {
    encoded(StatusCode::OK, &own_policy(&state))
}

async fn issue(
    state: State,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (caller, body) = signed_request(&state, &request, payload).await?;
    let asked: IssueRequest = decode(&body)?;
    if asked.requests.is_empty() || asked.requests.len() > MAX_BATCH {
        return Err(PassError::BadBatch(asked.requests.len()).into());
    }
    let secret = state
        .tokens
        .issuer
        .take(
            &caller.user,
            &asked.key_id,
            asked.requests.len() as u64,
            Timestamp::now(),
        )
        .await
        .map_err(PassError::from)?;
    let signed = state
        .tokens
        .issuer
        .sign(secret, asked.requests)
        .await
        .map_err(|_| ApiError::Unavailable)?
        .map_err(|e| ApiError::MalformedBody(format!("a token request: {e}")))?;
    Ok(encoded(
        StatusCode::OK,
        &IssueResponse {
            blind_signatures: signed,
        },
    ))
}

/// Takes what `operation` costs from the request's tokens, or refuses it. `body` is what the
/// request carries: a retry of the same request spends nothing twice.
pub(crate) async fn redeem(
    state: &AppState,
    request: &HttpRequest,
    operation: Operation,
    body: &[u8],
) -> Result<(), ApiError> {
    let cost = state.tokens.costs.of(operation);
    if cost == 0 {
        return Ok(());
    }
    let required = || PassError::Required {
        operation: operation.name(),
        cost,
    };
    let value = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with(tokens::AUTH_SCHEME))
        .ok_or_else(required)?;
    let (presented, issuer) = tokens::from_header(value).map_err(invalid)?;
    if presented.len() != usize::from(cost) {
        return Err(PassError::WrongCount {
            operation: operation.name(),
            cost,
            carried: presented.len(),
        }
        .into());
    }
    let issuer: Domain = issuer
        .parse()
        .map_err(|_| PassError::Invalid(format!("{issuer:?} is not a domain")))?;
    let challenge = TokenChallenge::new(issuer.as_str(), state.domain.as_str());
    let digest = request_digest(request, body);
    let now = Timestamp::now();
    let store = &state.tokens.store;
    let mut checked = Vec::with_capacity(presented.len());
    let mut fresh = false;
    for token in &presented {
        let (key, until) = issuer_key(state, &issuer, token, cost, now).await?;
        token.verify(&challenge, &key).map_err(invalid)?;
        let until = store
            .key_until(&token.key_id, until)
            .map_err(ApiError::Storage)?;
        if until <= now {
            return Err(PassError::Invalid("its key's tokens are taken no more".into()).into());
        }
        match store
            .spent_on(until, &token.key_id, &token.nonce, &digest)
            .map_err(ApiError::Storage)?
        {
            Spend::Fresh => fresh = true,
            Spend::Retry => {}
            Spend::Spent => return Err(PassError::Spent.into()),
        }
        checked.push((token, until));
    }
    // A retry of a creation was counted the first time.
    if operation == Operation::CreateGroup && fresh {
        count_group(state, &issuer, now)?;
    }
    for (token, until) in checked {
        match store
            .spend(until, &token.key_id, &token.nonce, &digest)
            .map_err(ApiError::Storage)?
        {
            Spend::Fresh | Spend::Retry => {}
            Spend::Spent => return Err(PassError::Spent.into()),
        }
    }
    Ok(())
}

/// Counts a group created with `issuer`'s tokens in this token epoch, or refuses it once the
/// domain's users created as many as this server takes (before their tokens are spent).
fn count_group(state: &AppState, issuer: &Domain, now: Timestamp) -> Result<(), ApiError> {
    let tokens = &state.tokens;
    let (epoch, limit) = (tokens.issuer.epoch_of(now), tokens.groups_per_issuer_epoch);
    if tokens
        .store
        .count_group(issuer, epoch, limit)
        .map_err(ApiError::Storage)?
    {
        return Ok(());
    }
    let epoch_secs = tokens.issuer.settings().epoch_secs;
    let next_epoch = (epoch + 1).saturating_mul(epoch_secs);
    Err(PassError::GroupsPerEpoch {
        issuer: issuer.clone(),
        limit,
        retry_after: next_epoch.saturating_sub(now.0).max(1),
    }
    .into())
}

/// The key `token` names, of `issuer`, and until when its tokens are taken.
async fn issuer_key(
    state: &AppState,
    issuer: &Domain,
    token: &Token,
    cost: u8,
    now: Timestamp,
) -> Result<(IssuerPublicKey, Timestamp), ApiError> {
    let published = if issuer == &state.domain {
        state.tokens.issuer.redeemable(&token.key_id, now)
    } else {
        if !state.federation.policy.allows(issuer) {
            return Err(ApiError::DomainNotAllowed(issuer.clone()));
        }
        state
            .tokens
            .issuer_limit
            .take(issuer.clone(), u32::from(cost))
            .map_err(|wait| PassError::IssuerOverBudget(issuer.clone(), wait.as_secs().max(1)))?;
        let find = |policy: &TokenPolicy| {
            policy
                .keys
                .iter()
                .find(|k| {
                    IssuerPublicKey::from_spki(&k.spki)
                        .is_ok_and(|key| key.key_id() == token.key_id)
                })
                .filter(|k| k.issues_from <= now && k.redeemable_until > now)
                .cloned()
        };
        let cached = state.tokens.peers.key(issuer, false).await?;
        match find(&cached) {
            Some(found) => Some(found),
            None => find(&state.tokens.peers.key(issuer, true).await?),
        }
    };
    let published = published.ok_or_else(|| {
        PassError::Invalid(format!("{issuer} publishes no key of this token now"))
    })?;
    let key = IssuerPublicKey::from_spki(&published.spki).map_err(|e| invalid(e.into()))?;
    let until = published
        .redeemable_until
        .min(now.plus_secs(MAX_KEY_LIFE_SECS));
    Ok((key, until))
}

/// For an operation that was free within a rate per address: paid instead when it costs
/// tokens (then no address limit applies: many users may share one), else limited per address.
pub(crate) async fn paid_or_limited(
    state: &AppState,
    request: &HttpRequest,
    operation: Operation,
    body: &[u8],
    (limiter, setting): (&RateLimiter, &'static str),
) -> Result<(), ApiError> {
    if state.tokens.costs.of(operation) == 0 {
        return limit_address(limiter, request, setting);
    }
    redeem(state, request, operation, body).await
}

/// For discovery: free within the address's burst; beyond it, paid if the request carries
/// tokens, else refused (429) as before.
pub(crate) async fn free_then_paid(
    state: &AppState,
    request: &HttpRequest,
    operation: Operation,
    (limiter, setting): (&RateLimiter, &'static str),
) -> Result<(), ApiError> {
    let over = match limit_address(limiter, request, setting) {
        Ok(()) => return Ok(()),
        Err(over) => over,
    };
    let pays = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(tokens::AUTH_SCHEME));
    if state.tokens.costs.of(operation) > 0 && pays {
        redeem(state, request, operation, &[]).await
    } else {
        Err(over)
    }
}

fn invalid(e: TokenError) -> ApiError {
    PassError::Invalid(e.to_string()).into()
}

/// What a token is spent on: the method, path and body of the request.
fn request_digest(request: &HttpRequest, body: &[u8]) -> [u8; 16] {
    let mut input = format!("{} {}\n", request.method(), request.path()).into_bytes();
    input.extend_from_slice(body);
    let hash = crypto::hash("roost token spent on", &input);
    let mut digest = [0; 16];
    digest.copy_from_slice(&hash[..16]);
    digest
}
