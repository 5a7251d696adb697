//! `as_profiles`: users' encrypted profiles (see `roost_protocol::profile`). `0 ‖ profile id` →
//! [`StoredProfile`] (its owner and the ciphertext); `1 ‖ user ‖ 0 ‖ profile id` → nothing, so a
//! user's profiles are counted and deleted with it. The server cannot read a profile; it knows
//! only whose it is, which its own user's server knows anyway.

use roost_protocol::{
    profile::{EncryptedProfile, ProfileId},
    Timestamp, UserName,
};

use crate::{table::Table, Result};

const PROFILE: u8 = 0;
const BY_USER: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredProfile {
    pub owner: UserName,
    pub profile: EncryptedProfile,
    pub stored_at: Timestamp,
}

/// Why a profile was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// Another user stores a profile under that id.
    OtherOwner,
    /// The user holds as many profiles as it may.
    TooMany,
}

fn profile_key(id: &ProfileId) -> Vec<u8> {
    [&[PROFILE][..], &id.0].concat()
}

fn user_prefix(user: &UserName) -> Vec<u8> {
    [&[BY_USER][..], user.to_string().as_bytes(), &[0]].concat()
}

fn user_key(user: &UserName, id: &ProfileId) -> Vec<u8> {
    [user_prefix(user), id.0.to_vec()].concat()
}

#[derive(Clone)]
pub struct ProfileStore {
    table: Table<StoredProfile>,
}

impl ProfileStore {
    pub(crate) fn open(db: &crate::gate::Db) -> Result<Self> {
        Ok(ProfileStore {
            table: Table::open(db, "as_profiles")?,
        })
    }

    pub(crate) fn check(&self, report: &mut crate::CheckReport) {
        self.table
            .check("as_profiles", |key| key.first() == Some(&PROFILE), report);
    }

    pub fn get(&self, id: &ProfileId) -> Result<Option<StoredProfile>> {
        self.table.get(&profile_key(id))
    }

    /// The ids of `user`'s profiles.
    pub fn ids_of(&self, user: &UserName) -> Result<Vec<ProfileId>> {
        let prefix = user_prefix(user);
        self.table
            .tree
            .scan_prefix(&prefix)
            .keys()
            .map(|key| {
                let key = key?;
                let id = <[u8; 32]>::try_from(&key[prefix.len()..])
                    .map_err(|_| crate::StorageError::Corrupt("a key of as_profiles".into()))?;
                Ok(ProfileId(id))
            })
            .collect()
    }

    /// Stores (or replaces) `user`'s profile `id`, unless the id is another user's or `user`
    /// already holds `max` other profiles.
    pub fn put(
        &self,
        user: &UserName,
        id: &ProfileId,
        profile: EncryptedProfile,
        max: usize,
        now: Timestamp,
    ) -> Result<Result<(), NotStored>> {
        match self.get(id)? {
            Some(stored) if &stored.owner != user => return Ok(Err(NotStored::OtherOwner)),
            Some(_) => {}
            None if self.ids_of(user)?.len() >= max => return Ok(Err(NotStored::TooMany)),
            None => {}
        }
        let record = StoredProfile {
            owner: user.clone(),
            profile,
            stored_at: now,
        };
        let mut batch = sled::Batch::default();
        batch.insert(profile_key(id), crate::table::encode(&record));
        batch.insert(user_key(user, id), &[][..]);
        self.table.tree.apply_batch(batch)?;
        Ok(Ok(()))
    }

    /// Deletes `user`'s profile `id`; answers whether there was one of `user`'s.
    pub fn remove(&self, user: &UserName, id: &ProfileId) -> Result<bool> {
        match self.get(id)? {
            Some(stored) if &stored.owner == user => {
                let mut batch = sled::Batch::default();
                batch.remove(profile_key(id));
                batch.remove(user_key(user, id));
                self.table.tree.apply_batch(batch)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Deletes every profile of `user` (deleted); answers how many.
    pub fn remove_all(&self, user: &UserName) -> Result<usize> {
        let ids = self.ids_of(user)?;
        for id in &ids {
            self.remove(user, id)?;
        }
        Ok(ids.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_id_is_its_owners_and_a_user_holds_a_bounded_number() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path()).unwrap();
        let profiles = store.profiles().unwrap();
        let (alice, mallory): (UserName, UserName) = (
            "alice@a.test".parse().unwrap(),
            "mallory@a.test".parse().unwrap(),
        );
        let (first, second) = (ProfileId::random(), ProfileId::random());
        let sealed = |n: u8| EncryptedProfile(vec![n; 40]);
        let now = Timestamp(1000);
        assert_eq!(
            profiles.put(&alice, &first, sealed(1), 2, now).unwrap(),
            Ok(())
        );
        assert_eq!(
            profiles.put(&mallory, &first, sealed(9), 2, now).unwrap(),
            Err(NotStored::OtherOwner)
        );
        assert_eq!(
            profiles.put(&alice, &first, sealed(2), 2, now).unwrap(),
            Ok(())
        );
        assert_eq!(
            profiles.put(&alice, &second, sealed(3), 2, now).unwrap(),
            Ok(())
        );
        assert_eq!(
            profiles
                .put(&alice, &ProfileId::random(), sealed(4), 2, now)
                .unwrap(),
            Err(NotStored::TooMany)
        );
        assert_eq!(profiles.get(&first).unwrap().unwrap().profile, sealed(2));
        assert!(!profiles.remove(&mallory, &first).unwrap());
        assert!(profiles.remove(&alice, &first).unwrap());
        assert_eq!(profiles.ids_of(&alice).unwrap(), vec![second]);
        assert_eq!(profiles.remove_all(&alice).unwrap(), 1);
        assert_eq!(profiles.get(&second).unwrap(), None);
    }
}
