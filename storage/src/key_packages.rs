//! The QS's key packages and friendship tokens.
//!
//! `qs_key_packages`: `user ‖ 0 ‖ client id ‖ last-resort flag ‖ entry hash` →
//! [`StoredKeyPackage`] (the layout of [`crate::client_packages`]).
//! `qs_published_key_packages`: KeyPackage reference → the entry that published it (see
//! [`crate::references`]), so a KeyPackage is published once.
//! `qs_friendship_tokens`: `0 ‖ token` → user name, and `1 ‖ user name` → the user's current
//! token. Both keys of a user change in one batch, so a rotated token stops working at once.

use serde::{Deserialize, Serialize};

use roost_protocol::{
    api::KeyPackageCount,
    key_packages::{FriendshipToken, KeyPackageEntry},
    ClientId, Timestamp, UserName,
};

use crate::{
    client_packages::{ClientPackage, ClientPackages},
    references::{UsedReference, UsedReferences},
    table::{decode, encode},
    Result,
};

/// A published entry, with what the QS learnt when it validated the KeyPackage inside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKeyPackage {
    pub entry: KeyPackageEntry,
    pub last_resort: bool,
    /// The KeyPackage's lifetime ends here; it is not served from then on.
    pub not_after: Timestamp,
}

impl ClientPackage for StoredKeyPackage {
    fn client_id(&self) -> ClientId {
        self.entry.client_id()
    }

    fn last_resort(&self) -> bool {
        self.last_resort
    }

    fn hash(&self) -> [u8; 32] {
        self.entry.hash()
    }

    fn valid_at(&self, now: Timestamp) -> bool {
        now < self.not_after
    }
}

/// Why entries were not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotPublished {
    /// The client would hold more one-time entries than it may.
    TooMany,
    /// The KeyPackage of the entry at this index was published in another entry, or comes
    /// twice in this request.
    PublishedBefore(usize),
}

/// An entry to publish, and the reference of the KeyPackage inside.
pub struct Publication {
    pub reference: Vec<u8>,
    pub package: StoredKeyPackage,
}

#[derive(Clone)]
pub struct KeyPackageStore {
    packages: ClientPackages<StoredKeyPackage>,
    published: UsedReferences,
    tokens: crate::gate::Tree,
}

const TOKEN_TO_USER: u8 = 0;
const USER_TO_TOKEN: u8 = 1;

fn token_key(token: &FriendshipToken) -> Vec<u8> {
    [&[TOKEN_TO_USER][..], &token.0].concat()
}

fn user_key(user: &UserName) -> Vec<u8> {
    [&[USER_TO_TOKEN][..], user.to_string().as_bytes()].concat()
}

impl KeyPackageStore {
    pub(crate) fn open(db: &crate::gate::Db) -> Result<Self> {
        Ok(KeyPackageStore {
            packages: ClientPackages::open(db, "qs_key_packages")?,
            published: UsedReferences::open(db, "qs_published_key_packages")?,
            tokens: db.open_tree("qs_friendship_tokens")?,
        })
    }

    pub(crate) fn check(&self, report: &mut crate::CheckReport) {
        self.packages.check("qs_key_packages", report);
        self.published.check("qs_published_key_packages", report);
        report.readable("qs_friendship_tokens", &self.tokens.sled());
    }

    /// Stores entries of one client, all or nothing; a new last-resort entry replaces the old.
    /// An entry published before is a repeat (of a request whose answer was lost): it is not
    /// stored again, so a used-up one-time entry stays used up. Refused, with nothing stored,
    /// if another entry published the same KeyPackage, or if the client would hold more than
    /// `max_one_time` one-time entries.
    pub fn publish(
        &self,
        user: &UserName,
        client: &ClientId,
        publications: &[Publication],
        max_one_time: u32,
        now: Timestamp,
    ) -> Result<std::result::Result<KeyPackageCount, NotPublished>> {
        let mut fresh = Vec::new();
        let mut uses = Vec::new();
        for (index, Publication { reference, package }) in publications.iter().enumerate() {
            let tag = package.entry.hash();
            let twice = publications[..index]
                .iter()
                .any(|earlier| &earlier.reference == reference);
            match self.published.get(reference)? {
                _ if twice => return Ok(Err(NotPublished::PublishedBefore(index))),
                Some(used) if used.tag == tag => continue,
                Some(_) => return Ok(Err(NotPublished::PublishedBefore(index))),
                None => {
                    fresh.push(package.clone());
                    let not_after = package.not_after;
                    uses.push((reference.clone(), UsedReference { tag, not_after }));
                }
            }
        }
        let also = Some((self.published.tree(), UsedReferences::batch(&uses)));
        Ok(self
            .packages
            .publish_with(user, client, &fresh, max_one_time, now, also)?
            .ok_or(NotPublished::TooMany))
    }

    /// Deletes the records of published KeyPackages past their end; answers how many.
    pub fn sweep_published(&self, now: Timestamp) -> Result<usize> {
        self.published.sweep(now)
    }

    pub fn count(
        &self,
        user: &UserName,
        client: &ClientId,
        now: Timestamp,
    ) -> Result<KeyPackageCount> {
        self.packages.count(user, client, now)
    }

    /// One entry per client of `clients` that has one, using up one-time entries and falling
    /// back to the last resort.
    pub fn take(
        &self,
        user: &UserName,
        clients: &[ClientId],
        now: Timestamp,
    ) -> Result<Vec<KeyPackageEntry>> {
        Ok(self
            .packages
            .take(user, clients, now)?
            .into_iter()
            .map(|p| p.entry)
            .collect())
    }

    /// Forgets every one-time entry (after a restore: one could be handed out a second time);
    /// answers how many.
    pub fn forget_one_time(&self) -> Result<usize> {
        self.packages.forget_one_time()
    }

    /// Forgets every entry of a client (it was deleted).
    pub fn remove_client(&self, user: &UserName, client: &ClientId) -> Result<()> {
        self.packages.remove_client(user, client)
    }

    /// The user's current token, if it has one.
    pub fn token_of(&self, user: &UserName) -> Result<Option<FriendshipToken>> {
        self.tokens
            .get(user_key(user))?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    /// The user a token belongs to, if it is current.
    pub fn user_of(&self, token: &FriendshipToken) -> Result<Option<UserName>> {
        self.tokens
            .get(token_key(token))?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    /// Removes the user's token, if it has one: it stops working.
    pub fn remove_token(&self, user: &UserName) -> Result<()> {
        let mut batch = sled::Batch::default();
        if let Some(old) = self.token_of(user)? {
            batch.remove(token_key(&old));
        }
        batch.remove(user_key(user));
        self.tokens.apply_batch(batch)?;
        Ok(())
    }

    /// Makes `token` the user's token; the previous one stops working.
    pub fn set_token(&self, user: &UserName, token: &FriendshipToken) -> Result<()> {
        let mut batch = sled::Batch::default();
        if let Some(old) = self.token_of(user)? {
            batch.remove(token_key(&old));
        }
        batch.insert(token_key(token), encode(user));
        batch.insert(user_key(user), encode(token));
        self.tokens.apply_batch(batch)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use roost_protocol::{credentials::Validity, ds::SealedQueueRef, HpkeSecretKey, SigningKey};

    use super::*;

    fn stored(client: ClientId, last_resort: bool, lifetime_secs: u64) -> StoredKeyPackage {
        let key = SigningKey::generate();
        let credential = roost_protocol::ClientCredential::issue(
            "alice@a.test".parse().unwrap(),
            client,
            key.verifying_key(),
            Validity::starting_now(3600),
            &SigningKey::generate(),
        );
        let queue = SealedQueueRef::seal(
            "a.test".parse().unwrap(),
            &HpkeSecretKey::generate().1,
            &client,
        )
        .unwrap();
        StoredKeyPackage {
            entry: KeyPackageEntry::new(
                credential,
                &key,
                ClientId::random().0.to_vec(),
                queue,
                &[7; 32],
            ),
            last_resort,
            not_after: Timestamp::now().plus_secs(lifetime_secs),
        }
    }

    fn fresh() -> (tempfile::TempDir, KeyPackageStore, UserName) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path()).unwrap();
        let packages = store.key_packages().unwrap();
        (dir, packages, "alice@a.test".parse().unwrap())
    }

    #[test]
    fn one_time_entries_are_used_up_expired_ones_dropped_and_the_last_resort_kept() {
        let (_dir, store, alice) = fresh();
        let (phone, laptop) = (ClientId::random(), ClientId::random());
        let one_time = stored(phone, false, 60);
        let expired = stored(phone, false, 0);
        let old_last_resort = stored(phone, true, 60);
        let last_resort = stored(phone, true, 60);
        let now = Timestamp::now();
        let publish = |packages: &[StoredKeyPackage], max| {
            let publications: Vec<Publication> = packages
                .iter()
                .map(|package| Publication {
                    reference: package.entry.hash().to_vec(),
                    package: package.clone(),
                })
                .collect();
            store
                .publish(&alice, &phone, &publications, max, now)
                .unwrap()
                .ok()
        };
        publish(&[one_time.clone(), expired, old_last_resort], 2).expect("under the cap");
        // Over the cap nothing is stored, not even the last resort that came with it.
        let another = stored(phone, false, 60);
        assert_eq!(publish(&[another, last_resort.clone()], 1), None);
        // A repeat of what is stored stores nothing twice; another entry of a KeyPackage
        // published before is refused.
        assert!(publish(std::slice::from_ref(&one_time), 1).is_some());
        let same_reference = Publication {
            reference: one_time.entry.hash().to_vec(),
            package: stored(phone, false, 60),
        };
        assert_eq!(
            store
                .publish(&alice, &phone, &[same_reference], 1, now)
                .unwrap(),
            Err(NotPublished::PublishedBefore(0))
        );
        publish(std::slice::from_ref(&last_resort), 1).expect("a last resort is not capped");
        assert_eq!(
            store.count(&alice, &phone, now).unwrap(),
            KeyPackageCount {
                remaining: 1,
                has_last_resort: true
            }
        );
        let clients = [phone, laptop];
        assert_eq!(
            store.take(&alice, &clients, now).unwrap(),
            vec![one_time.entry]
        );
        for _ in 0..2 {
            assert_eq!(
                store.take(&alice, &clients, now).unwrap(),
                vec![last_resort.entry.clone()]
            );
        }
        store.remove_client(&alice, &phone).unwrap();
        assert!(store.take(&alice, &clients, now).unwrap().is_empty());
    }

    #[test]
    fn a_rotated_token_no_longer_names_its_user() {
        let (_dir, store, alice) = fresh();
        assert_eq!(store.token_of(&alice).unwrap(), None);
        let (first, second) = (FriendshipToken::random(), FriendshipToken::random());
        store.set_token(&alice, &first).unwrap();
        assert_eq!(store.user_of(&first).unwrap(), Some(alice.clone()));
        store.set_token(&alice, &second).unwrap();
        assert_eq!(store.user_of(&first).unwrap(), None);
        assert_eq!(store.user_of(&second).unwrap(), Some(alice.clone()));
        assert_eq!(store.token_of(&alice).unwrap(), Some(second));
    }
}
