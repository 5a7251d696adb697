//! When this client last renewed its own leaf in each group (`leaf_renewals`: group id → time),
//! so it renews it on a schedule.

use roost_protocol::{codec, Timestamp};

use super::{State, StateError};

const TREE: &str = "leaf_renewals";

impl State {
    /// When this client last renewed its leaf in the group; `None` if it has not noted one.
    pub fn leaf_renewed_at(&self, group_id: &[u8]) -> Result<Option<Timestamp>, StateError> {
        self.tree_get(&self.leaf_renewals, TREE, group_id)
    }

    pub fn note_leaf_renewed(&self, group_id: &[u8], at: Timestamp) -> Result<(), StateError> {
        self.leaf_renewals
            .insert(group_id, codec::encode(&at))
            .map_err(|e| self.store_error(e))?;
        self.flush()
    }
}
