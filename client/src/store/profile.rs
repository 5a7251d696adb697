//! Profiles (see `roost_protocol::profile`): this user's own as this client last set it
//! (`own_profile`, default tree: the profile and the reference that fetches and opens it), which
//! of them each connection was given (`profiles_shared`), and each contact's as it shared it
//! (`peer_profiles`).

use roost_protocol::{
    profile::{Profile, ProfileId, ProfileRef},
    UserName,
};
use serde::{Deserialize, Serialize};

use super::{State, StateError};

const KEY_OWN_PROFILE: &[u8] = b"own_profile";
pub(super) const TREE_SHARED: &str = "profiles_shared";
pub(super) const TREE_PEERS: &str = "peer_profiles";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnProfile {
    pub profile: Profile,
    pub reference: ProfileRef,
}

/// A contact's profile: where it is, and what it said when this client last fetched it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerProfile {
    pub reference: ProfileRef,
    pub profile: Option<Profile>,
}

impl State {
    pub fn own_profile(&self) -> Result<Option<OwnProfile>, StateError> {
        self.get(KEY_OWN_PROFILE)
    }

    pub fn save_own_profile(&self, own: &OwnProfile) -> Result<(), StateError> {
        self.put(KEY_OWN_PROFILE, own)
    }

    /// Which of this user's profiles the connection `group_id` was given.
    pub fn profile_shared(&self, group_id: &[u8]) -> Result<Option<ProfileId>, StateError> {
        self.tree_get(&self.profiles_shared, TREE_SHARED, group_id)
    }

    pub fn mark_profile_shared(&self, group_id: &[u8], id: &ProfileId) -> Result<(), StateError> {
        self.tree_put(&self.profiles_shared, group_id, id)
    }

    /// `user`'s profile, as it shared it.
    pub fn peer_profile(&self, user: &UserName) -> Result<Option<PeerProfile>, StateError> {
        self.tree_get(&self.peer_profiles, TREE_PEERS, user.to_string().as_bytes())
    }

    pub fn save_peer_profile(&self, user: &UserName, peer: &PeerProfile) -> Result<(), StateError> {
        self.tree_put(&self.peer_profiles, user.to_string().as_bytes(), peer)
    }
}
