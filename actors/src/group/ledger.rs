//! A group's ledger: the order the DS gives the group's messages, the operations it remembers,
//! and what it has yet to hand on.
//!
//! Every commit and application message the DS accepts takes the group's next sequence number,
//! returned to the sender and carried with every copy delivered, so all clients list a group's
//! messages in one order. Each request carries an operation id the client chose; the ledger
//! remembers the last [`REMEMBERED_OPS`] ids with a digest of their request and their outcome,
//! so a retry after a lost response is answered with the original outcome and changes nothing.
//! What a request sends on is written into the ledger (in the same transaction as its effect)
//! before it goes out and cleared once delivered: a crash in between, or a delivery that
//! failed for a reason worth retrying (a queue's actor down, the store failing), leaves it
//! there, and the group's next request — any member's, even one the DS refuses — delivers it
//! again first. A copy delivered twice has the same sequence
//! number, which is how clients recognise it.
//!
//! Stored encrypted under the group-state EAR key, like the group's state.

use std::collections::VecDeque;

use roost_protocol::{
    codec,
    connection::EarKey,
    crypto,
    ds::{SealedQueueRef, WelcomeBundle},
    OpId,
};
use serde::{Deserialize, Serialize};

use super::GroupError;
use roost_storage::StorageError;

/// How many recent operations a group remembers. A client retries at once and then reads its
/// queue (where its own copy of anything the DS accepted is) before it retries again, so this
/// need only outlast a burst of other members' traffic.
pub const REMEMBERED_OPS: usize = 256;

const LEDGER_CONTEXT: &[u8] = b"roost ds group ledger v1";

/// What an accepted operation answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Created,
    Committed { epoch: u64, seq: u64 },
    Accepted { seq: u64 },
}

#[derive(Clone, Serialize, Deserialize)]
struct Remembered {
    op: OpId,
    /// Tells a retry (the same bytes) from another request reusing the id.
    digest: [u8; 16],
    outcome: Outcome,
}

/// What a request sends on: its message to the members' queues, and a Welcome to new ones.
#[derive(Clone, Serialize, Deserialize)]
pub struct Fanout {
    pub seq: u64,
    pub message: Vec<u8>,
    pub recipients: Vec<SealedQueueRef>,
    pub welcome: Option<(Vec<SealedQueueRef>, WelcomeBundle)>,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Ledger {
    next_seq: u64,
    ops: VecDeque<Remembered>,
    /// Fan-outs written but not yet known to be delivered, oldest first.
    undelivered: Vec<Fanout>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            next_seq: 1,
            ops: VecDeque::new(),
            undelivered: Vec::new(),
        }
    }
}

/// What the ledger says of a request's operation id.
pub enum Seen {
    /// New: do it.
    New,
    /// Done before: answer this again.
    Repeat(Outcome),
}

fn context(group_id: &[u8]) -> Vec<u8> {
    [LEDGER_CONTEXT, group_id].concat()
}

/// The digest of a request body as the client sent it.
pub fn digest_of<T: Serialize>(request: &T) -> [u8; 16] {
    let hash = crypto::hash("roost ds operation v1", &codec::encode(request));
    let mut digest = [0; 16];
    digest.copy_from_slice(&hash[..16]);
    digest
}

impl Ledger {
    /// Opens a stored ledger; a group stored before ledgers existed starts a fresh one.
    pub fn open(
        group_id: &[u8],
        ear_key: &EarKey,
        stored: Option<Vec<u8>>,
    ) -> Result<Ledger, GroupError> {
        let Some(ciphertext) = stored else {
            return Ok(Ledger::default());
        };
        let plain = ear_key
            .decrypt(&context(group_id), &ciphertext)
            .map_err(|_| GroupError::WrongKey)?;
        codec::decode(&plain)
            .map_err(|e| GroupError::Storage(StorageError::Corrupt(format!("group ledger: {e}"))))
    }

    pub fn seal(&self, group_id: &[u8], ear_key: &EarKey) -> Vec<u8> {
        ear_key.encrypt(&context(group_id), &codec::encode(self))
    }

    /// Whether `op` was done before; the same id with other bytes is refused.
    pub fn seen(&self, op: &OpId, digest: &[u8; 16]) -> Result<Seen, GroupError> {
        match self.ops.iter().find(|r| &r.op == op) {
            None => Ok(Seen::New),
            Some(r) if &r.digest == digest => Ok(Seen::Repeat(r.outcome)),
            Some(_) => Err(GroupError::OperationReused),
        }
    }

    /// The sequence number the next accepted message takes.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Records an accepted operation, and what it sends on (which took the next sequence
    /// number).
    pub fn record(&mut self, op: OpId, digest: [u8; 16], outcome: Outcome, fanout: Option<Fanout>) {
        if self.ops.len() == REMEMBERED_OPS {
            self.ops.pop_front();
        }
        self.ops.push_back(Remembered {
            op,
            digest,
            outcome,
        });
        if let Some(fanout) = fanout {
            self.next_seq = fanout.seq + 1;
            self.undelivered.push(fanout);
        }
    }

    /// Takes what is to be delivered; the ledger left behind says it all went out.
    pub fn take_undelivered(&mut self) -> Vec<Fanout> {
        std::mem::take(&mut self.undelivered)
    }

    pub fn has_undelivered(&self) -> bool {
        !self.undelivered.is_empty()
    }
}
