//! This user's own profile as this client last set it (`own_profile`, default tree): the
//! profile itself and the reference that fetches and opens it (see `roost_protocol::profile`).

use roost_protocol::profile::{Profile, ProfileRef};
use serde::{Deserialize, Serialize};

use super::{State, StateError};

const KEY_OWN_PROFILE: &[u8] = b"own_profile";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnProfile {
    pub profile: Profile,
    pub reference: ProfileRef,
}

impl State {
    pub fn own_profile(&self) -> Result<Option<OwnProfile>, StateError> {
        self.get(KEY_OWN_PROFILE)
    }

    pub fn save_own_profile(&self, own: &OwnProfile) -> Result<(), StateError> {
        self.put(KEY_OWN_PROFILE, own)
    }
}
