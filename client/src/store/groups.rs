//! Connections and named groups (`contacts`, `groups`: group id → record) and which user each
//! member pseudonym of a group belongs to (`member_users`).

use roost_protocol::{
    codec, ds::GroupKeys, key_packages::FriendshipToken, Domain, Timestamp, UserName,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::{group_prefix, State, StateError, TREE_CONTACTS, TREE_GROUPS, TREE_MEMBER_USERS};

/// A connection: the connection group shared with another user, and its keys. Contains secret
/// keys: never print it whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub group_id: Vec<u8>,
    /// The other user; `None` while not known yet (a client that joined through a Welcome
    /// before the responder joined).
    pub peer: Option<UserName>,
    /// Whose DS holds the group: the initiator's.
    pub ds: Domain,
    pub keys: GroupKeys,
    pub since: Timestamp,
    /// Whether this user asked for the connection (then it shares its friendship token only
    /// in answer to the peer's, once the peer is surely in the group).
    pub initiated: bool,
    /// The peer's friendship token, which lets this user add the peer to groups.
    pub peer_token: Option<FriendshipToken>,
    /// Whether this user's token is in the group (sent by this client or another of the user's).
    pub token_shared: bool,
}

/// A named group this client is in (not a connection). Contains secret keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedGroup {
    pub group_id: Vec<u8>,
    /// The name its creator gave it; not unique.
    pub name: String,
    /// Whose DS holds the group: its creator's.
    pub ds: Domain,
    pub keys: GroupKeys,
    pub since: Timestamp,
    /// This client was removed from the group: it keeps the log, but can no longer send.
    pub removed: bool,
}

/// What talking to a group's DS takes: where the DS is, and the group's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupAccess {
    pub group_id: Vec<u8>,
    pub ds: Domain,
    pub keys: GroupKeys,
}

impl Contact {
    /// Whether the peer is surely a member of the connection group, so that what is sent there
    /// reaches it: this user accepted its request (the peer made the group), or the peer's
    /// friendship token came (it shares it only once in).
    pub fn peer_surely_in(&self) -> bool {
        !self.initiated || self.peer_token.is_some()
    }

    pub fn access(&self) -> GroupAccess {
        GroupAccess {
            group_id: self.group_id.clone(),
            ds: self.ds.clone(),
            keys: self.keys.clone(),
        }
    }
}

impl NamedGroup {
    pub fn access(&self) -> GroupAccess {
        GroupAccess {
            group_id: self.group_id.clone(),
            ds: self.ds.clone(),
            keys: self.keys.clone(),
        }
    }
}

impl State {
    /// Every connection, oldest first.
    pub fn contacts(&self) -> Result<Vec<Contact>, StateError> {
        self.group_records(&self.contacts, TREE_CONTACTS, |c: &Contact| {
            (c.since, c.group_id.clone())
        })
    }

    pub fn contact(&self, group_id: &[u8]) -> Result<Option<Contact>, StateError> {
        self.tree_get(&self.contacts, TREE_CONTACTS, group_id)
    }

    pub fn save_contact(&self, contact: &Contact) -> Result<(), StateError> {
        self.tree_put(&self.contacts, &contact.group_id, contact)
    }

    /// Changes a connection's record as it is stored now (answers whether there is one). For a
    /// change of some fields, never a save of a copy read earlier: a removal may have given the
    /// group new keys meanwhile, and writing the copy back would put the old ones in their place.
    pub fn update_contact(
        &self,
        group_id: &[u8],
        change: impl FnOnce(&mut Contact),
    ) -> Result<bool, StateError> {
        self.update_group_record(&self.contacts, TREE_CONTACTS, group_id, change)
    }

    /// Every named group, oldest first.
    pub fn named_groups(&self) -> Result<Vec<NamedGroup>, StateError> {
        self.group_records(&self.groups, TREE_GROUPS, |g: &NamedGroup| {
            (g.since, g.group_id.clone())
        })
    }

    pub fn named_group(&self, group_id: &[u8]) -> Result<Option<NamedGroup>, StateError> {
        self.tree_get(&self.groups, TREE_GROUPS, group_id)
    }

    pub fn save_named_group(&self, group: &NamedGroup) -> Result<(), StateError> {
        self.tree_put(&self.groups, &group.group_id, group)
    }

    /// Changes a named group's record as it is stored now, as [`Self::update_contact`] does.
    pub fn update_named_group(
        &self,
        group_id: &[u8],
        change: impl FnOnce(&mut NamedGroup),
    ) -> Result<bool, StateError> {
        self.update_group_record(&self.groups, TREE_GROUPS, group_id, change)
    }

    fn update_group_record<T: Serialize + DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        name: &str,
        group_id: &[u8],
        change: impl FnOnce(&mut T),
    ) -> Result<bool, StateError> {
        let Some(mut record) = self.tree_get(tree, name, group_id)? else {
            return Ok(false);
        };
        change(&mut record);
        self.tree_put(tree, group_id, &record).map(|()| true)
    }

    /// Every record of a per-group tree, ordered by `order` (when made, then id).
    fn group_records<T: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        name: &str,
        order: impl Fn(&T) -> (Timestamp, Vec<u8>),
    ) -> Result<Vec<T>, StateError> {
        let mut records: Vec<T> = self
            .tree_all(tree, name)?
            .into_iter()
            .map(|(_, record)| record)
            .collect();
        records.sort_by_key(|r| order(r));
        Ok(records)
    }

    /// Gives a group (connection or named) the keys a commit that removed a member brought.
    pub fn set_group_keys(&self, group_id: &[u8], keys: &GroupKeys) -> Result<(), StateError> {
        if !self.update_contact(group_id, |contact| contact.keys = keys.clone())? {
            self.update_named_group(group_id, |group| group.keys = keys.clone())?;
        }
        Ok(())
    }

    /// `access` as the store holds it now: a removal may have brought the group new keys since
    /// it was read (as it was, if the group's record is gone).
    pub fn current_access(&self, access: &GroupAccess) -> Result<GroupAccess, StateError> {
        Ok(self
            .group_access(&access.group_id)?
            .unwrap_or_else(|| access.clone()))
    }

    /// How to reach any group this client is in, connection or named.
    pub fn group_access(&self, group_id: &[u8]) -> Result<Option<GroupAccess>, StateError> {
        if let Some(contact) = self.contact(group_id)? {
            return Ok(Some(contact.access()));
        }
        Ok(self.named_group(group_id)?.map(|group| group.access()))
    }

    /// Notes the MLS signature key of each leaf of a group as it is before a commit changes it,
    /// so a message sent from a leaf that the commit removed can still be tied to its sender.
    pub fn save_leaf_keys(
        &self,
        group_id: &[u8],
        leaves: &[(u32, Vec<u8>)],
    ) -> Result<(), StateError> {
        let mut batch = sled::Batch::default();
        for (leaf, key) in leaves {
            let mut k = group_prefix(group_id);
            k.extend_from_slice(&leaf.to_be_bytes());
            batch.insert(k, key.as_slice());
        }
        self.leaf_keys
            .apply_batch(batch)
            .map_err(|e| self.store_error(e))
    }

    /// The signature key a leaf of a group had when last noted.
    pub fn leaf_key(&self, group_id: &[u8], leaf: u32) -> Result<Option<Vec<u8>>, StateError> {
        let mut k = group_prefix(group_id);
        k.extend_from_slice(&leaf.to_be_bytes());
        Ok(self
            .leaf_keys
            .get(k)
            .map_err(|e| self.store_error(e))?
            .map(|v| v.to_vec()))
    }

    /// The user behind a member's leaf pseudonym in a group, as learnt before.
    pub fn member_user(
        &self,
        group_id: &[u8],
        pseudonym: &[u8],
    ) -> Result<Option<UserName>, StateError> {
        let mut key = group_prefix(group_id);
        key.extend_from_slice(pseudonym);
        self.tree_get(&self.member_users, TREE_MEMBER_USERS, &key)
    }

    pub fn save_member_users(
        &self,
        group_id: &[u8],
        users: &[(Vec<u8>, UserName)],
    ) -> Result<(), StateError> {
        let mut batch = sled::Batch::default();
        for (pseudonym, user) in users {
            let mut key = group_prefix(group_id);
            key.extend_from_slice(pseudonym);
            batch.insert(key, codec::encode(user));
        }
        self.member_users
            .apply_batch(batch)
            .map_err(|e| self.store_error(e))?;
        self.flush()
    }
}
