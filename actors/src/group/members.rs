//! Requests of a group's members that change it or speak in it: creating the group, a commit
//! (taking new EAR keys when it removes someone), and an application message.

use std::collections::BTreeMap;

use actix::prelude::*;
use openmls_memory_storage::MemoryStorage;
use roost_protocol::{
    connection::EarKey,
    ds::{self, Accepted, Committed},
};

use super::{
    cache::MessageView,
    committed,
    handshake::{parse_group_info, parse_protocol_message, Applied},
    invalid,
    ledger::{digest_of, Fanout, Ledger, Outcome, Seen},
    Commit, CreateGroup, Done, DsRequest, GroupActor, GroupError, GroupState, Opened, SendMessage,
};
use crate::once_durable;

/// Takes a commit's new keys ([`ds::Rekey`]) into `state`: required if the commit removed a
/// member, so the removed member's keys open nothing from now on. Each staying member's card
/// is replaced by its copy under the new credential key. Answers the new group-state key.
fn rekey(
    state: &mut GroupState,
    applied: &Applied,
    rekey: Option<&ds::Rekey>,
) -> Result<Option<EarKey>, GroupError> {
    let Some(rekey) = rekey else {
        return match applied.removed.is_empty() {
            true => Ok(None),
            false => Err(invalid(
                "a commit that removes a member must bring new EAR keys",
            )),
        };
    };
    // The leaves the group keeps (the commit's removals are gone from `members` already).
    if !rekey.credentials.keys().eq(state.members.keys()) {
        return Err(invalid(
            "the new keys must re-encrypt the card of exactly every staying member",
        ));
    }
    for (leaf, card) in &rekey.credentials {
        if let Some(member) = state.members.get_mut(leaf) {
            member.encrypted_credential = card.clone();
        }
    }
    Ok(Some(rekey.group_state_ear_key.clone()))
}

impl Handler<CreateGroup> for GroupActor {
    type Result = AtomicResponse<Self, Result<(), GroupError>>;

    fn handle(&mut self, DsRequest(msg): CreateGroup, _ctx: &mut Self::Context) -> Self::Result {
        let created = (|| -> Result<(), GroupError> {
            let digest = digest_of(&msg);
            if self.deps.groups.get(&self.group_id)?.is_some() {
                // A retry of the request that created it is answered as the first was.
                let stored = self.deps.groups.ledger(&self.group_id)?;
                return match Ledger::open(&self.group_id, &msg.ear_key, stored)
                    .and_then(|ledger| ledger.seen(&msg.op, &digest))
                {
                    Ok(Seen::Repeat(Outcome::Created)) => Ok(()),
                    _ => Err(GroupError::GroupExists),
                };
            }
            let info = parse_group_info(&msg.group_info)?;
            if info.group_id().as_slice() != self.group_id.as_slice() {
                return Err(invalid("the GroupInfo names another group"));
            }
            let storage = MemoryStorage::default();
            let public = self.public_group_from(info, &storage)?;
            if public.members().count() != 1 {
                return Err(invalid("a new group must hold only its creator"));
            }
            let mut opened = Opened {
                state: GroupState {
                    mls: Vec::new(),
                    group_info: msg.group_info.clone(),
                    members: BTreeMap::from([(0, msg.creator.clone())]),
                    connection_group: msg.connection_group,
                    epoch_key: Some(msg.epoch_key),
                },
                storage,
                public,
            };
            let sealed = self.seal(&msg.ear_key, &mut opened)?;
            let mut ledger = Ledger::default();
            ledger.record(msg.op, digest, Outcome::Created, None);
            let ledger = ledger.seal(&self.group_id, &msg.ear_key);
            if !self.deps.groups.create(&self.group_id, sealed, ledger)? {
                return Err(GroupError::GroupExists);
            }
            self.deps.activity.saw(&self.group_id);
            Ok(())
        })();
        AtomicResponse::new(Box::pin(
            once_durable(&self.deps.durability, created).into_actor(self),
        ))
    }
}

impl Handler<Commit> for GroupActor {
    type Result = AtomicResponse<Self, Result<Committed, GroupError>>;

    fn handle(&mut self, DsRequest(msg): Commit, _ctx: &mut Self::Context) -> Self::Result {
        let new_key = msg.rekey.as_ref().map(|r| &r.group_state_ear_key);
        let handled = self.handle_op(
            &msg.ear_key,
            new_key,
            msg.op,
            &msg,
            committed,
            |actor, seq| {
                let mut opened = actor.open(&msg.ear_key)?;
                let applied =
                    actor.apply_commit(&mut opened, &msg.commit, &msg.group_info, false)?;
                if applied.added.len() != msg.added.len() {
                    return Err(invalid("one member entry is needed per added member"));
                }
                let rekeyed = rekey(&mut opened.state, &applied, msg.rekey.as_ref())?;
                for (index, (added, entry)) in applied.added.iter().zip(&msg.added).enumerate() {
                    if entry.queue != added.package.queue {
                        return Err(invalid(format!(
                            "member entry {index} names another queue than its KeyPackage"
                        )));
                    }
                    opened.state.members.insert(added.leaf, entry.clone());
                }
                if opened.state.members.len() > actor.deps.max_members {
                    return Err(GroupError::GroupFull(actor.deps.max_members));
                }
                opened.state.epoch_key = Some(msg.epoch_key);
                let welcome = match &msg.welcome {
                    None if applied.added.is_empty() => None,
                    None => return Err(invalid("a commit adding members needs a Welcome")),
                    Some(_) if applied.added.is_empty() => {
                        return Err(invalid("a Welcome needs a commit that adds members"))
                    }
                    Some(welcome) => {
                        actor.check_welcome(welcome, &applied.added)?;
                        let queues = applied.added.iter().map(|a| a.package.queue.clone());
                        let queues = queues.collect();
                        Some((queues, welcome.clone()))
                    }
                };
                let sealed_under = rekeyed.as_ref().unwrap_or(&msg.ear_key);
                let commit = msg.commit.clone();
                let mut done =
                    actor.store_commit(sealed_under, opened, applied, commit, welcome, seq)?;
                done.rekeyed = rekeyed;
                Ok(done)
            },
        );
        self.finish(handled)
    }
}

impl Handler<SendMessage> for GroupActor {
    type Result = AtomicResponse<Self, Result<Accepted, GroupError>>;

    fn handle(&mut self, DsRequest(msg): SendMessage, _ctx: &mut Self::Context) -> Self::Result {
        let repeat = |outcome| match outcome {
            Outcome::Accepted { seq } => Some(Accepted { seq }),
            _ => None,
        };
        let handled = self.handle_op(&msg.ear_key, None, msg.op, &msg, repeat, |actor, seq| {
            let message = parse_protocol_message(&msg.message)?;
            // A proposal changes the state (it is kept for the commit that covers it); an
            // application message needs only the view of it, cached while the actor lives.
            let mut opened = match message.is_handshake_message() {
                true => Some(actor.open(&msg.ear_key)?),
                false => None,
            };
            let view = match &opened {
                Some(opened) => MessageView::of(opened),
                None => actor.message_view(&msg.ear_key)?,
            };
            if message.epoch().as_u64() != view.epoch {
                return Err(GroupError::StaleEpoch);
            }
            if let Some(key) = &view.epoch_key {
                let (group, epoch) = (&actor.group_id, view.epoch);
                ds::verify_epoch_proof(key, group, epoch, &msg.message, &msg.proof)
                    .map_err(|_| GroupError::NotAMember)?;
            }
            let state = match opened.as_mut() {
                Some(opened) => {
                    actor.keep_proposal(opened, message)?;
                    Some(actor.seal(&msg.ear_key, opened)?)
                }
                None => None,
            };
            Ok(Done {
                answer: Accepted { seq },
                outcome: Outcome::Accepted { seq },
                state,
                fanout: Some(Fanout {
                    seq,
                    message: msg.message.clone(),
                    recipients: view.recipients.clone(),
                    welcome: None,
                }),
                one_time: Vec::new(),
                rekeyed: None,
                view: Some(view),
            })
        });
        self.finish(handled)
    }
}
