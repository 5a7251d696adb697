//! Privacy Pass tokens (see `roost_protocol::tokens`): the issuer's keys, how many tokens each
//! user took per period, and the tokens redeemed here.
//!
//! - `token_issuer`: key epoch (u64, big-endian) → [`IssuerKeyRecord`].
//! - `token_issued`: `0 ‖ period ‖ user` → tokens that user took in that period; `1 ‖ period`
//!   → tokens issued to anyone in it (what an admin sees). Only the current and the previous
//!   period are kept per user. `2 ‖ epoch ‖ domain` → groups created here with that domain's
//!   tokens in that token epoch (this and the previous epoch are kept).
//! - `token_spent`: `redeemable until (secs) ‖ key id ‖ nonce` → a digest of the request the
//!   token paid for, so a retry of that request is told from a second spending. Swept by
//!   time: once its key is past, a token is refused anyway.
//! - `token_key_until`: key id → until when its tokens are redeemable, as first seen here. A
//!   spent record's place depends on it, so a peer publishing a later date cannot move records
//!   out of the way and have a token taken twice.
//!
//! Nothing here joins a redemption to an issuance: issued counts name users and no token;
//! spent records name tokens (which the issuer never saw) and no user.

use roost_protocol::{tokens::policy::PublishedKey, Domain, Timestamp, UserName};
use serde::{Deserialize, Serialize};

use crate::{
    table::{decode, encode},
    Result,
};

/// An issuer key of this server, for one epoch.
#[derive(Clone, Serialize, Deserialize)]
pub struct IssuerKeyRecord {
    /// The private key, PKCS #8 DER.
    pub pkcs8: Vec<u8>,
    pub published: PublishedKey,
}

/// What spending a token found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    /// Never spent: now it is.
    Fresh,
    /// Spent before on this same request (a retry).
    Retry,
    /// Spent before on another request.
    Spent,
}

impl Spend {
    /// What a token's spent record, `stored` (if any), says of spending it for `digest`.
    fn found(stored: Option<&[u8]>, digest: &[u8; 16]) -> Spend {
        match stored {
            None => Spend::Fresh,
            Some(spent) if spent == &digest[..] => Spend::Retry,
            Some(_) => Spend::Spent,
        }
    }
}

/// Adds the removal of every key `keys` yields to `batch`; answers how many.
fn remove_all(
    batch: &mut sled::Batch,
    keys: impl Iterator<Item = sled::Result<sled::IVec>>,
) -> Result<usize> {
    let mut removed = 0;
    for key in keys {
        batch.remove(key?);
        removed += 1;
    }
    Ok(removed)
}

const PER_USER: u8 = 0;
const TOTAL: u8 = 1;
const GROUPS: u8 = 2;

fn groups_key(epoch: u64, domain: &Domain) -> Vec<u8> {
    [
        &[GROUPS][..],
        &epoch.to_be_bytes(),
        domain.as_str().as_bytes(),
    ]
    .concat()
}

#[derive(Clone)]
pub struct TokenStore {
    issuer: crate::gate::Tree,
    issued: crate::gate::Tree,
    spent: crate::gate::Tree,
    key_until: crate::gate::Tree,
}

fn issued_key(period: u64, user: &UserName) -> Vec<u8> {
    [
        &[PER_USER][..],
        &period.to_be_bytes(),
        user.to_string().as_bytes(),
    ]
    .concat()
}

fn total_key(period: u64) -> [u8; 9] {
    let mut key = [TOTAL; 9];
    key[1..].copy_from_slice(&period.to_be_bytes());
    key
}

fn spent_key(until: Timestamp, key_id: &[u8; 32], nonce: &[u8; 32]) -> Vec<u8> {
    [&until.0.to_be_bytes()[..], key_id, nonce].concat()
}

fn count(bytes: Option<sled::IVec>) -> u64 {
    bytes
        .and_then(|b| <[u8; 8]>::try_from(&b[..]).ok())
        .map_or(0, u64::from_be_bytes)
}

impl TokenStore {
    pub(crate) fn open(db: &crate::gate::Db) -> Result<Self> {
        Ok(TokenStore {
            issuer: db.open_tree("token_issuer")?,
            issued: db.open_tree("token_issued")?,
            spent: db.open_tree("token_spent")?,
            key_until: db.open_tree("token_key_until")?,
        })
    }

    pub(crate) fn check(&self, report: &mut crate::CheckReport) {
        match self.issuer_keys() {
            Ok(_) => report.readable("token_issuer", &self.issuer.sled()),
            Err(e) => report.damaged("token_issuer", format!("the issuer keys: {e}")),
        }
        report.readable("token_issued", &self.issued.sled());
        report.readable("token_spent", &self.spent.sled());
        report.readable("token_key_until", &self.key_until.sled());
    }

    /// This server's issuer keys by epoch, oldest first.
    pub fn issuer_keys(&self) -> Result<Vec<(u64, IssuerKeyRecord)>> {
        self.issuer
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                let epoch = <[u8; 8]>::try_from(&key[..])
                    .map_err(|_| crate::StorageError::Corrupt("a key of token_issuer".into()))?;
                Ok((u64::from_be_bytes(epoch), decode(&value)?))
            })
            .collect()
    }

    pub fn put_issuer_key(&self, epoch: u64, record: &IssuerKeyRecord) -> Result<()> {
        self.issuer.insert(epoch.to_be_bytes(), encode(record))?;
        Ok(())
    }

    /// Forgets issuer keys whose tokens are redeemable no more.
    pub fn remove_issuer_keys_before(&self, now: Timestamp) -> Result<usize> {
        let mut removed = 0;
        for (epoch, record) in self.issuer_keys()? {
            if record.published.redeemable_until <= now {
                self.issuer.remove(epoch.to_be_bytes())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Tokens `user` took in `period`.
    pub fn issued_to(&self, user: &UserName, period: u64) -> Result<u64> {
        Ok(count(self.issued.get(issued_key(period, user))?))
    }

    /// Records `n` more tokens issued to `user` in `period`; forgets `user`'s counts of periods
    /// before the previous one.
    pub fn record_issued(&self, user: &UserName, period: u64, n: u64) -> Result<()> {
        let mine = self.issued_to(user, period)? + n;
        let total = count(self.issued.get(total_key(period))?) + n;
        let mut batch = sled::Batch::default();
        batch.insert(issued_key(period, user), &mine.to_be_bytes()[..]);
        batch.insert(&total_key(period)[..], &total.to_be_bytes()[..]);
        if let Some(old) = period.checked_sub(2) {
            batch.remove(issued_key(old, user));
        }
        self.issued.apply_batch(batch)?;
        Ok(())
    }

    /// Tokens issued to anyone per period, for the last `periods` periods up to `period`,
    /// oldest first.
    pub fn issued_totals(&self, period: u64, periods: u64) -> Result<Vec<(u64, u64)>> {
        let first = period.saturating_sub(periods.saturating_sub(1));
        (first..=period)
            .map(|p| Ok((p, count(self.issued.get(total_key(p))?))))
            .collect()
    }

    /// Forgets per-user counts of periods before `period - 1`, and totals before `oldest_total`.
    pub fn sweep_issued(&self, period: u64, oldest_total: u64) -> Result<usize> {
        let mut batch = sled::Batch::default();
        let users_from = [&[PER_USER][..], &period.saturating_sub(1).to_be_bytes()].concat();
        let swept = remove_all(
            &mut batch,
            self.issued.range(vec![PER_USER]..users_from).keys(),
        )? + remove_all(
            &mut batch,
            self.issued
                .range(&[TOTAL][..]..&total_key(oldest_total)[..])
                .keys(),
        )?;
        self.issued.apply_batch(batch)?;
        Ok(swept)
    }

    /// Groups created here with `issuer`'s tokens in token epoch `epoch`.
    pub fn groups_created(&self, issuer: &Domain, epoch: u64) -> Result<u64> {
        Ok(count(self.issued.get(groups_key(epoch, issuer))?))
    }

    /// Counts one more group created with `issuer`'s tokens in `epoch`, unless `limit` are
    /// counted already; answers whether it counted it. Atomic: requests at once each count.
    pub fn count_group(&self, issuer: &Domain, epoch: u64, limit: u64) -> Result<bool> {
        let key = groups_key(epoch, issuer);
        loop {
            let current = self.issued.get(&key)?;
            let created = count(current.clone());
            if created >= limit {
                return Ok(false);
            }
            let next = (created + 1).to_be_bytes();
            match self
                .issued
                .compare_and_swap(&key, current, Some(&next[..]))?
            {
                Ok(()) => return Ok(true),
                Err(_) => continue,
            }
        }
    }

    /// Forgets the group counts of epochs before `epoch - 1`.
    pub fn sweep_group_counts(&self, epoch: u64) -> Result<usize> {
        let mut batch = sled::Batch::default();
        let kept_from = [&[GROUPS][..], &epoch.saturating_sub(1).to_be_bytes()].concat();
        let swept = remove_all(
            &mut batch,
            self.issued.range(vec![GROUPS]..kept_from).keys(),
        )?;
        self.issued.apply_batch(batch)?;
        Ok(swept)
    }

    /// Until when tokens under `key_id` are redeemable here: as first recorded, else `offered`
    /// (now recorded).
    pub fn key_until(&self, key_id: &[u8; 32], offered: Timestamp) -> Result<Timestamp> {
        let fresh = offered.0.to_be_bytes();
        let stored =
            match self
                .key_until
                .compare_and_swap(key_id, None::<&[u8]>, Some(&fresh[..]))?
            {
                Ok(()) => return Ok(offered),
                Err(e) => e.current,
            };
        Ok(Timestamp(count(stored)))
    }

    /// What [`Self::spend`] would find, without spending.
    pub fn spent_on(
        &self,
        until: Timestamp,
        key_id: &[u8; 32],
        nonce: &[u8; 32],
        digest: &[u8; 16],
    ) -> Result<Spend> {
        let stored = self.spent.get(spent_key(until, key_id, nonce))?;
        Ok(Spend::found(stored.as_deref(), digest))
    }

    /// Spends the token `(key_id, nonce)`, redeemable until `until` (see [`Self::key_until`]),
    /// for the request with `digest`.
    pub fn spend(
        &self,
        until: Timestamp,
        key_id: &[u8; 32],
        nonce: &[u8; 32],
        digest: &[u8; 16],
    ) -> Result<Spend> {
        let key = spent_key(until, key_id, nonce);
        Ok(
            match self
                .spent
                .compare_and_swap(key, None::<&[u8]>, Some(&digest[..]))?
            {
                Ok(()) => Spend::Fresh,
                Err(e) => Spend::found(e.current.as_deref(), digest),
            },
        )
    }

    /// Forgets spent tokens, and keys' dates, past `now`; answers how many records went.
    pub fn sweep_spent(&self, now: Timestamp) -> Result<usize> {
        let mut batch = sled::Batch::default();
        let mut swept = remove_all(
            &mut batch,
            self.spent.range(..&now.0.to_be_bytes()[..]).keys(),
        )?;
        self.spent.apply_batch(batch)?;
        for entry in self.key_until.iter() {
            let (key, until) = entry?;
            if count(Some(until)) < now.0 {
                self.key_until.remove(key)?;
                swept += 1;
            }
        }
        Ok(swept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_counted_per_domain_and_epoch_up_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path()).unwrap();
        let tokens = store.tokens().unwrap();
        let (a, b): (Domain, Domain) = ("a.test".parse().unwrap(), "b.test".parse().unwrap());
        assert!(tokens.count_group(&a, 7, 2).unwrap());
        assert!(tokens.count_group(&a, 7, 2).unwrap());
        assert!(!tokens.count_group(&a, 7, 2).unwrap());
        assert!(tokens.count_group(&b, 7, 2).unwrap());
        assert!(tokens.count_group(&a, 8, 2).unwrap());
        assert_eq!(tokens.groups_created(&a, 7).unwrap(), 2);
        // Epoch 9 keeps 8 and forgets 7.
        assert_eq!(tokens.sweep_group_counts(9).unwrap(), 2);
        assert_eq!(tokens.groups_created(&a, 7).unwrap(), 0);
        assert_eq!(tokens.groups_created(&a, 8).unwrap(), 1);
    }

    #[test]
    fn a_token_is_spent_once_and_a_retry_of_its_request_is_known() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path()).unwrap();
        let tokens = store.tokens().unwrap();
        let (key, nonce) = ([1; 32], [2; 32]);
        let until = tokens.key_until(&key, Timestamp(1000)).unwrap();
        assert_eq!(until, Timestamp(1000));
        // A later date offered for the same key changes nothing.
        assert_eq!(tokens.key_until(&key, Timestamp(9000)).unwrap(), until);
        assert_eq!(
            tokens.spend(until, &key, &nonce, &[7; 16]).unwrap(),
            Spend::Fresh
        );
        assert_eq!(
            tokens.spend(until, &key, &nonce, &[7; 16]).unwrap(),
            Spend::Retry
        );
        assert_eq!(
            tokens.spend(until, &key, &nonce, &[8; 16]).unwrap(),
            Spend::Spent
        );
        assert_eq!(
            tokens.spend(until, &key, &[3; 32], &[8; 16]).unwrap(),
            Spend::Fresh
        );
        assert_eq!(tokens.sweep_spent(Timestamp(999)).unwrap(), 0);
        assert_eq!(tokens.sweep_spent(Timestamp(1001)).unwrap(), 3);
    }

    #[test]
    fn issued_counts_are_per_user_and_period_and_totals_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path()).unwrap();
        let tokens = store.tokens().unwrap();
        let (alice, bob): (UserName, UserName) = (
            "alice@a.test".parse().unwrap(),
            "bob@a.test".parse().unwrap(),
        );
        tokens.record_issued(&alice, 10, 5).unwrap();
        tokens.record_issued(&alice, 10, 5).unwrap();
        tokens.record_issued(&bob, 10, 1).unwrap();
        tokens.record_issued(&alice, 11, 2).unwrap();
        assert_eq!(tokens.issued_to(&alice, 10).unwrap(), 10);
        assert_eq!(tokens.issued_to(&alice, 11).unwrap(), 2);
        assert_eq!(
            tokens.issued_totals(11, 3).unwrap(),
            vec![(9, 0), (10, 11), (11, 2)]
        );
        tokens.sweep_issued(12, 11).unwrap();
        assert_eq!(tokens.issued_to(&alice, 10).unwrap(), 0);
        assert_eq!(tokens.issued_to(&alice, 11).unwrap(), 2);
        assert_eq!(tokens.issued_totals(11, 2).unwrap(), vec![(10, 0), (11, 2)]);
    }
}
