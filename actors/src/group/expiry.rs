//! An idle group's end: the retention sweep asks the group's actor, which alone writes the
//! group, to delete it if it still took no request since the sweep looked. What is left is a
//! record of when, so that a member's next request is told the group expired (410) rather than
//! that it never existed.
//!
//! The DS cannot tell the members at that moment: it reaches them only through the sealed
//! queue references inside the group's state, which it can open only with the key a member's
//! request brings. Keeping them readable beside the state would let the server's store say
//! which of its clients share a group — for a connection, who is connected to whom.

use actix::prelude::*;
use roost_protocol::Timestamp;

use super::{GroupActor, GroupError};

/// Delete the group if it took no request since `seen_before`; answers whether it did.
pub struct ExpireIdle {
    pub seen_before: Timestamp,
    pub now: Timestamp,
}

impl Message for ExpireIdle {
    type Result = Result<bool, GroupError>;
}

impl Handler<ExpireIdle> for GroupActor {
    type Result = Result<bool, GroupError>;

    fn handle(&mut self, msg: ExpireIdle, _ctx: &mut Self::Context) -> Self::Result {
        let groups = &self.deps.groups;
        if groups.get(&self.group_id)?.is_none() {
            return Ok(false);
        }
        match groups.activity().last_seen(&self.group_id)? {
            // A group with no record (kept from before records were kept) starts its clock.
            None => {
                groups.activity().record(&self.group_id, msg.now)?;
                return Ok(false);
            }
            Some(at) if at >= msg.seen_before => return Ok(false),
            Some(_) => {}
        }
        groups.expire(&self.group_id, msg.now)?;
        self.cache = None;
        Ok(true)
    }
}
