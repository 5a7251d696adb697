//! Requests about joining a group from outside by external commit: what a joiner needs (the
//! GroupInfo and the members' encrypted cards), a responder's join into a connection group
//! (once), and a member's rejoin in its own place after it fell out of step.

use actix::prelude::*;
use roost_protocol::ds::{Committed, ExternalCommitInfo};

use super::{
    committed, invalid, DsRequest, GetExternalCommitInfo, GroupActor, GroupError,
    JoinConnectionGroup, Rejoin,
};

impl Handler<GetExternalCommitInfo> for GroupActor {
    type Result = Result<ExternalCommitInfo, GroupError>;

    fn handle(
        &mut self,
        DsRequest(msg): GetExternalCommitInfo,
        _ctx: &mut Self::Context,
    ) -> Self::Result {
        let opened = self.open(&msg.ear_key)?;
        Ok(ExternalCommitInfo {
            group_info: opened.state.group_info.clone(),
            encrypted_credentials: opened
                .state
                .members
                .values()
                .map(|m| m.encrypted_credential.clone())
                .collect(),
        })
    }
}

impl Handler<JoinConnectionGroup> for GroupActor {
    type Result = AtomicResponse<Self, Result<Committed, GroupError>>;

    fn handle(
        &mut self,
        DsRequest(msg): JoinConnectionGroup,
        _ctx: &mut Self::Context,
    ) -> Self::Result {
        let handled = self.handle_op(&msg.ear_key, None, msg.op, &msg, committed, |actor, seq| {
            let mut opened = actor.open(&msg.ear_key)?;
            if !opened.state.connection_group {
                return Err(GroupError::NotJoinable);
            }
            let mut applied =
                actor.apply_commit(&mut opened, &msg.commit, &msg.group_info, true)?;
            let joiner = applied
                .joiner
                .ok_or_else(|| invalid("no joiner in the external commit"))?;
            opened.state.members.insert(joiner, msg.joiner.clone());
            // The joiner gets its own copy, as every committer does.
            applied.recipients.push(msg.joiner.queue.clone());
            // From now on the group holds two users' clients: no further responder joins.
            opened.state.connection_group = false;
            opened.state.epoch_key = Some(msg.epoch_key);
            let commit = msg.commit.clone();
            actor.store_commit(&msg.ear_key, opened, applied, commit, None, seq)
        });
        self.finish(handled)
    }
}

impl Handler<Rejoin> for GroupActor {
    type Result = AtomicResponse<Self, Result<Committed, GroupError>>;

    fn handle(&mut self, DsRequest(msg): Rejoin, _ctx: &mut Self::Context) -> Self::Result {
        let handled = self.handle_op(&msg.ear_key, None, msg.op, &msg, committed, |actor, seq| {
            let mut opened = actor.open(&msg.ear_key)?;
            let before = opened.state.members.clone();
            // apply_commit lets an external commit remove only its joiner's own leaf.
            let applied = actor.apply_commit(&mut opened, &msg.commit, &msg.group_info, true)?;
            let (Some(joiner), [replaced]) = (applied.joiner, applied.removed.as_slice()) else {
                return Err(invalid("a rejoin must replace the joiner's own leaf"));
            };
            // The same client: its queue and its card (which names the same signature key).
            let entry = before
                .get(replaced)
                .cloned()
                .ok_or_else(|| invalid("the replaced leaf has no member entry"))?;
            opened.state.members.insert(joiner, entry);
            opened.state.epoch_key = Some(msg.epoch_key);
            let commit = msg.commit.clone();
            actor.store_commit(&msg.ear_key, opened, applied, commit, None, seq)
        });
        self.finish(handled)
    }
}
