//! The token issuer: this server's Privacy Pass issuer keys, one per *epoch*, and each user's
//! budget of tokens per period. Shared rather than an actor (like the [`crate::keys::KeyRing`]):
//! the front end asks it for keys on every redemption; its one mutable record, a user's count,
//! changes only under its lock.
//!
//! Epoch `e` spans `[e·epoch_secs, (e+1)·epoch_secs)`: its key signs during it, and its tokens
//! are taken until `overlap_secs` after it ends, so a token fetched late in an epoch can still
//! be spent. The next epoch's key is made ahead and published with the others, so peers that
//! cache the key list know it before it signs. The blind signing itself (a 2048-bit RSA private
//! operation per token) runs on [`ComputeThreads`] of its own at background priority: a client
//! buys ahead, so no request waits on it directly, and the request handlers come first.

use std::sync::{Arc, Mutex, MutexGuard};

use roost_protocol::{
    tokens::{self, policy::PublishedKey, IssuerSecretKey, TokenError, TokenRequest},
    Timestamp, UserName,
};
use roost_storage::{Durability, IssuerKeyRecord, StorageError, TokenStore};

use crate::compute::{ComputeThreads, Stopped};

/// Issuance policy (`[tokens]` in the server's settings).
#[derive(Debug, Clone, Copy)]
pub struct IssuerSettings {
    pub epoch_secs: u64,
    pub overlap_secs: u64,
    pub period_secs: u64,
    pub per_user_per_period: u64,
}

/// Why tokens were not issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error(
        "{user} took its {budget} tokens for this period; more in {retry_after_secs} s \
         (tokens.per_user_per_period)"
    )]
    OverBudget {
        user: UserName,
        budget: u64,
        retry_after_secs: u64,
    },
    #[error("no issuer key signs now under that key id; fetch the token policy again")]
    UnknownKey,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

#[derive(Clone)]
struct EpochKey {
    epoch: u64,
    secret: Arc<IssuerSecretKey>,
    published: PublishedKey,
    key_id: [u8; 32],
}

#[derive(Clone)]
pub struct TokenIssuer {
    keys: Arc<Mutex<Vec<EpochKey>>>,
    /// Held while a user's count is read and written.
    counting: Arc<Mutex<()>>,
    store: TokenStore,
    durability: Durability,
    settings: IssuerSettings,
    signers: ComputeThreads<()>,
}

impl TokenIssuer {
    /// Loads the stored keys and makes the current and next epochs' if missing.
    pub fn load(
        store: TokenStore,
        durability: Durability,
        settings: IssuerSettings,
        signers: ComputeThreads<()>,
    ) -> Result<TokenIssuer, StorageError> {
        let mut keys = Vec::new();
        for (epoch, record) in store.issuer_keys()? {
            let secret = IssuerSecretKey::from_pkcs8_der(&record.pkcs8)
                .map_err(|e| StorageError::Corrupt(format!("token issuer key {epoch}: {e}")))?;
            keys.push(EpochKey {
                epoch,
                key_id: secret.public_key().key_id(),
                secret: Arc::new(secret),
                published: record.published,
            });
        }
        let issuer = TokenIssuer {
            keys: Arc::new(Mutex::new(keys)),
            counting: Arc::default(),
            store,
            durability,
            settings,
            signers,
        };
        issuer.keep_keys(Timestamp::now())?;
        Ok(issuer)
    }

    fn keys(&self) -> MutexGuard<'_, Vec<EpochKey>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The token epoch `now` is in.
    pub fn epoch_of(&self, now: Timestamp) -> u64 {
        now.0 / self.settings.epoch_secs
    }

    /// Makes the keys of the current and the next epoch if missing, and forgets those whose
    /// tokens are redeemable no more. Answers how many keys it made or dropped. Slow when it
    /// makes a key (RSA key generation): run it off the actor threads.
    pub fn keep_keys(&self, now: Timestamp) -> Result<usize, StorageError> {
        let current = self.epoch_of(now);
        let mut changed = 0;
        for epoch in [current, current + 1] {
            if self.keys().iter().any(|k| k.epoch == epoch) {
                continue;
            }
            let secret = IssuerSecretKey::generate();
            let start = epoch * self.settings.epoch_secs;
            let published = PublishedKey {
                spki: secret.public_key().spki().to_vec(),
                issues_from: Timestamp(start),
                issues_until: Timestamp(start + self.settings.epoch_secs),
                redeemable_until: Timestamp(
                    start + self.settings.epoch_secs + self.settings.overlap_secs,
                ),
            };
            self.store.put_issuer_key(
                epoch,
                &IssuerKeyRecord {
                    pkcs8: secret.to_pkcs8_der(),
                    published: published.clone(),
                },
            )?;
            self.durability.persist_blocking()?;
            self.keys().push(EpochKey {
                epoch,
                key_id: secret.public_key().key_id(),
                secret: Arc::new(secret),
                published,
            });
            changed += 1;
        }
        let before = self.keys().len();
        self.keys().retain(|k| k.published.redeemable_until > now);
        changed += before - self.keys().len();
        self.store.remove_issuer_keys_before(now)?;
        Ok(changed)
    }

    /// The keys this server publishes: those whose tokens are still redeemable, and the next.
    pub fn published(&self, now: Timestamp) -> Vec<PublishedKey> {
        let mut keys: Vec<_> = self
            .keys()
            .iter()
            .filter(|k| k.published.redeemable_until > now)
            .map(|k| k.published.clone())
            .collect();
        keys.sort_by_key(|k| k.issues_from);
        keys
    }

    /// This server's key with `key_id`, if its tokens are redeemable at `now`.
    pub fn redeemable(&self, key_id: &[u8; 32], now: Timestamp) -> Option<PublishedKey> {
        self.keys()
            .iter()
            .find(|k| &k.key_id == key_id && k.published.issues_from <= now)
            .map(|k| k.published.clone())
            .filter(|published| published.redeemable_until > now)
    }

    /// Takes `count` tokens of `user`'s budget for this period (durably, before any is
    /// signed) and answers the key that signs them, which must be the one with `key_id`
    /// signing now.
    pub async fn take(
        &self,
        user: &UserName,
        key_id: &[u8; 32],
        count: u64,
        now: Timestamp,
    ) -> Result<Arc<IssuerSecretKey>, IssueError> {
        let secret = self
            .keys()
            .iter()
            .find(|k| &k.key_id == key_id && k.published.issues_at(now))
            .map(|k| k.secret.clone())
            .ok_or(IssueError::UnknownKey)?;
        let period = now.0 / self.settings.period_secs;
        {
            let _counting = self.counting.lock().unwrap_or_else(|p| p.into_inner());
            let taken = self.store.issued_to(user, period)?;
            let budget = self.settings.per_user_per_period;
            if taken + count > budget {
                return Err(IssueError::OverBudget {
                    user: user.clone(),
                    budget,
                    retry_after_secs: (period + 1) * self.settings.period_secs - now.0,
                });
            }
            self.store.record_issued(user, period, count)?;
        }
        self.durability.persist().await?;
        Ok(secret)
    }

    /// Blind-signs `requests` with `secret` (from [`Self::take`]) on the signing threads.
    pub async fn sign(
        &self,
        secret: Arc<IssuerSecretKey>,
        requests: Vec<TokenRequest>,
    ) -> Result<Result<Vec<Vec<u8>>, TokenError>, Stopped> {
        self.signers
            .run(move |()| {
                requests
                    .iter()
                    .map(|one| tokens::issue(&secret, one))
                    .collect()
            })
            .await
    }

    /// Tokens issued to anyone, per period, for the last `periods` periods: `(period start,
    /// count)`, oldest first. Never what was spent where.
    pub fn totals(
        &self,
        now: Timestamp,
        periods: u64,
    ) -> Result<Vec<(Timestamp, u64)>, StorageError> {
        let period = now.0 / self.settings.period_secs;
        Ok(self
            .store
            .issued_totals(period, periods)?
            .into_iter()
            .map(|(p, n)| (Timestamp(p * self.settings.period_secs), n))
            .collect())
    }

    pub fn settings(&self) -> IssuerSettings {
        self.settings
    }

    /// Forgets spent tokens and per-user counts that can matter no more; answers how many.
    fn sweep(&self, now: Timestamp) -> Result<usize, StorageError> {
        let period = now.0 / self.settings.period_secs;
        Ok(self.store.sweep_spent(now)?
            + self.store.sweep_group_counts(self.epoch_of(now))?
            + self
                .store
                .sweep_issued(period, period.saturating_sub(KEPT_TOTALS))?)
    }

    /// Keeps the keys ([`Self::keep_keys`]) and sweeps, off the actor threads, as often as an
    /// epoch needs (at most every minute), for as long as the actix system runs.
    pub fn start_upkeep(&self) {
        let issuer = self.clone();
        let every = std::time::Duration::from_secs((self.settings.epoch_secs / 4).clamp(1, 60));
        actix::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                let issuer = issuer.clone();
                let kept = tokio::task::spawn_blocking(move || {
                    let now = Timestamp::now();
                    Ok::<_, StorageError>(issuer.keep_keys(now)? + issuer.sweep(now)?)
                })
                .await;
                match kept {
                    Ok(Ok(changed)) => {
                        tracing::debug!(changed, "token keys kept, spent tokens swept")
                    }
                    other => {
                        tracing::warn!(outcome = ?other.map(|r| r.err()), "token upkeep failed")
                    }
                }
            }
        });
    }
}

/// How many periods of issuance totals an admin can look back on.
pub const KEPT_TOTALS: u64 = 30;
