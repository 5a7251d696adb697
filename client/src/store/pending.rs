//! Operations on their way to a group's DS (`pending_ops`: group id → [`PendingOp`]), at most
//! one per group. Each is written before its request is first sent, and removed only once the
//! DS answered it definitely (or this client's queue showed what became of it), so a lost
//! response or a crash never leaves a group behind its DS, and a message is never encrypted
//! twice.

use roost_protocol::{
    content::Content,
    ds::{CommitRequest, GroupKeys, SendMessage},
    Domain,
};
use serde::{Deserialize, Serialize};

use super::{State, StateError, TREE_PENDING_OPS};

/// MLS storage writes held back until the DS takes the commit that made them: `Some(value)`
/// to insert, `None` to delete.
pub type StagedWrites = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// A request to a group's DS that may or may not have been taken.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Outgoing {
    /// A commit; its MLS writes are applied once the DS takes it, with the group's new keys
    /// if it removed a member (`request.rekey`).
    Commit {
        request: CommitRequest,
        staged: StagedWrites,
        rekeyed: Option<Box<GroupKeys>>,
    },
    /// An application message; the MLS state that made it is stored already (its key must
    /// never be used again), and `content` goes into the log once the DS takes it.
    Message {
        request: SendMessage,
        content: Content,
    },
    /// A proposal (to remove a member: leaving proposes one's own removal), sent like a
    /// message and committed by another member.
    Proposal { request: SendMessage },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingOp {
    pub group_id: Vec<u8>,
    /// The DS holding the group.
    pub ds: Domain,
    pub request: Outgoing,
}

impl PendingOp {
    /// The MLS message the request carries, as the DS hands it on.
    pub fn mls_message(&self) -> &[u8] {
        match &self.request {
            Outgoing::Commit { request, .. } => &request.commit,
            Outgoing::Message { request, .. } | Outgoing::Proposal { request } => &request.message,
        }
    }
}

impl State {
    /// Keeps `op` (replacing any other of its group).
    pub fn save_pending_op(&self, op: &PendingOp) -> Result<(), StateError> {
        self.tree_put(&self.pending_ops, &op.group_id, op)
    }

    /// The operation on its way to the DS of a group, if any.
    pub fn pending_op(&self, group_id: &[u8]) -> Result<Option<PendingOp>, StateError> {
        self.tree_get(&self.pending_ops, TREE_PENDING_OPS, group_id)
    }

    /// Every operation on its way.
    pub fn pending_ops(&self) -> Result<Vec<PendingOp>, StateError> {
        Ok(self
            .tree_all(&self.pending_ops, TREE_PENDING_OPS)?
            .into_iter()
            .map(|(_, op)| op)
            .collect())
    }

    pub fn remove_pending_op(&self, group_id: &[u8]) -> Result<(), StateError> {
        self.pending_ops
            .remove(group_id)
            .map_err(|e| self.store_error(e))?;
        self.flush()
    }
}
