//! Changes on their way to a group's DS: each is kept ([`PendingOp`]) before its request is
//! first sent, and settled only by a definite answer.
//!
//! - A commit's MLS writes are held back in the pending operation; storage stays at the old
//!   epoch until the DS takes the commit, then they are applied. Refused, they are dropped.
//! - An application message's MLS state is stored *before* it is sent: the ratchet key it used
//!   is gone for good, so no later message can reuse it, whatever becomes of this one.
//! - Transient failures are retried with the same bytes and operation id (the DS answers a
//!   repeat as it answered the first). If the DS still does not answer, the operation stays
//!   kept and the next sync settles it: by this client's own copy in its queue (the DS hands
//!   every accepted message to every member, its sender included) or by sending it again.
//!
//! A sent text goes into the group's log at the place the DS gave it, once it is taken.

use roost_protocol::{content::Content, ds::SendMessage, OpId};

use openmls::prelude::MlsGroup;

use super::{epoch_key, MlsSession};
use crate::{
    device::Device,
    error::Error,
    store::{Outgoing, PendingOp, StoredMessage},
};

/// A kept operation the DS took, at `seq` in the group's order.
#[derive(Debug)]
pub struct Resolved {
    pub group_id: Vec<u8>,
    pub seq: u64,
    /// The text message it put into the log.
    pub stored: Option<StoredMessage>,
}

impl MlsSession<'_> {
    /// Refuses a new change to a group while an earlier one is on its way: it would run ahead
    /// of it. (A sync settles the earlier one.)
    pub(crate) fn ensure_settled(&self, device: &Device, group_id: &[u8]) -> Result<(), Error> {
        match device.store().pending_op(group_id)? {
            None => Ok(()),
            Some(_) => Err(Error::EarlierChangePending),
        }
    }

    /// Keeps `op`, then sends it (see [`push`](Self::push)).
    pub(crate) async fn dispatch(&self, device: &Device, op: PendingOp) -> Result<Resolved, Error> {
        let kept = op.clone();
        device
            .store()
            .run(move |s| s.save_pending_op(&kept))
            .await?;
        self.push(device, op).await
    }

    /// Sends a kept operation (retrying transient failures with the same bytes) and settles it
    /// by the answer: taken, it is resolved; refused, it is forgotten and the refusal returned.
    /// Unanswered, it stays kept: [`Error::Unconfirmed`].
    pub(crate) async fn push(&self, device: &Device, op: PendingOp) -> Result<Resolved, Error> {
        let ds = device.server_of(&op.ds)?;
        let answer = match &op.request {
            Outgoing::Commit { request, .. } => {
                ds.commit(&op.group_id, request).await.map(|c| c.seq)
            }
            Outgoing::Message { request, .. } | Outgoing::Proposal { request } => {
                ds.send_message(&op.group_id, request).await.map(|a| a.seq)
            }
        };
        match answer {
            Ok(seq) => self.resolve(device, op, seq).await,
            Err(e) if e.is_transient() => Err(Error::Unconfirmed(Box::new(e.into()))),
            Err(refused) => {
                forget(device, &op.group_id).await?;
                Err(refused.into())
            }
        }
    }

    /// The DS took `op` at `seq` (its answer said so, or this client's copy arrived): applies
    /// a commit's writes, logs a text, marks `seq` handled, and forgets the operation.
    pub(crate) async fn resolve(
        &self,
        device: &Device,
        op: PendingOp,
        seq: u64,
    ) -> Result<Resolved, Error> {
        let store = device.store();
        let group_id = op.group_id.clone();
        let stored = match op.request {
            Outgoing::Commit {
                staged, rekeyed, ..
            } => {
                super::incoming::note_leaf_keys(device, &self.group(&group_id)?)?;
                // The keys first: a crash before the writes leaves the group at its old epoch,
                // and this commit's own copy settles it again.
                if let Some(keys) = rekeyed {
                    let group = group_id.clone();
                    store.run(move |s| s.set_group_keys(&group, &keys)).await?;
                }
                self.storage().apply(&staged)?;
                let group = group_id.clone();
                store.run(move |s| s.mark_seq(&group, seq)).await?;
                None
            }
            Outgoing::Message {
                content: Content::Text(text),
                ..
            } => {
                let (group, user) = (group_id.clone(), device.user().clone());
                store
                    .run(move |s| s.append_message(&group, seq, Some(&user), &text))
                    .await?
            }
            Outgoing::Message { .. } | Outgoing::Proposal { .. } => {
                let group = group_id.clone();
                store.run(move |s| s.mark_seq(&group, seq)).await?;
                None
            }
        };
        forget(device, &group_id).await?;
        Ok(Resolved {
            group_id,
            seq,
            stored,
        })
    }

    /// The request for an application message (with what it says) or, without `content`, a
    /// proposal, made under `group`'s current state, with the proof that its sender is a member
    /// of that epoch.
    pub(crate) fn message_op(
        &self,
        access: &crate::store::GroupAccess,
        group: &MlsGroup,
        message: Vec<u8>,
        content: Option<Content>,
    ) -> Result<PendingOp, Error> {
        let proof =
            epoch_key(self, group)?.prove(&access.group_id, group.epoch().as_u64(), &message);
        let request = SendMessage {
            op: OpId::random(),
            ear_key: access.keys.group_state_ear_key.clone(),
            message,
            proof,
        };
        Ok(PendingOp {
            group_id: access.group_id.clone(),
            ds: access.ds.clone(),
            request: match content {
                Some(content) => Outgoing::Message { request, content },
                None => Outgoing::Proposal { request },
            },
        })
    }
}

/// Drops a kept operation of a group (settled, or overtaken by another member's commit).
pub(crate) async fn forget(device: &Device, group_id: &[u8]) -> Result<(), Error> {
    let group_id = group_id.to_vec();
    Ok(device
        .store()
        .run(move |s| s.remove_pending_op(&group_id))
        .await?)
}
