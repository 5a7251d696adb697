//! What arrives for a group: a Welcome into it, or a message of it (a commit, a proposal, an
//! application message). Processing stages the MLS writes; the caller commits them once it has
//! stored what the message brought (see `crate::inbox`).

use openmls::prelude::{tls_codec::Deserialize as _, *};
use roost_protocol::{
    codec, content,
    ds::{GroupKeys, WelcomeBundle, WelcomeSecrets},
};

use super::{exported_key, join_config, keys_after_removal, mls_error, parse_message, MlsSession};
use crate::{device::Device, error::Error};

/// A group message processed into the MLS overlay, its writes not committed yet.
pub enum Incoming {
    /// A commit, merged; with the group's new keys if it removed a member.
    Commit { rekeyed: Option<GroupKeys> },
    /// A commit that removed this client, merged.
    Removed,
    /// A proposal (stored), an external join proposal, or this client's own message.
    Proposal,
    /// An application message from the member whose leaf carries `pseudonym` and the MLS
    /// signature key `sender_key`, as the group is at the message's epoch.
    Application {
        pseudonym: Vec<u8>,
        sender_key: Vec<u8>,
        payload: Vec<u8>,
    },
}

impl MlsSession<'_> {
    /// Joins the group a Welcome bundle invites into, decrypting its keys with the secret
    /// exported from the epoch it opens, and checks who added this client: a valid client of
    /// its domain, and into a connection group only one of this user's own clients. Committed
    /// only if every check passes; answers the group's keys and name. With `replace`, the
    /// state this client kept of the group (it was removed from it) gives way to the new one.
    pub async fn join_from_welcome(
        &self,
        device: &Device,
        bundle: &WelcomeBundle,
        replace: bool,
    ) -> Result<WelcomeSecrets, Error> {
        let MlsMessageBodyIn::Welcome(welcome) = parse_message(&bundle.welcome)? else {
            return Err(Error::Mls("the bundle holds no Welcome".into()));
        };
        let joined = (|| {
            if replace {
                if let Some(mut old) =
                    MlsGroup::load(self.storage(), &GroupId::from_slice(&bundle.group_id))?
                {
                    old.delete(self.storage())?;
                }
            }
            let staged =
                StagedWelcome::new_from_welcome(self.provider(), &join_config(), welcome, None)
                    .map_err(|e| mls_error("cannot join from the Welcome", e))?;
            let sender_key = staged
                .welcome_sender()
                .map_err(|e| mls_error("the Welcome names no sender", e))?
                .signature_key()
                .as_slice()
                .to_vec();
            let group = staged
                .into_group(self.provider())
                .map_err(|e| mls_error("cannot join from the Welcome", e))?;
            if group.group_id().as_slice() != bundle.group_id.as_slice() {
                return Err(Error::Mls("the Welcome is into another group".into()));
            }
            let plain = exported_key(self, &group)?
                .decrypt(&bundle.group_id, &bundle.encrypted_keys)
                .map_err(|_| Error::Mls("the group keys do not decrypt".into()))?;
            let secrets = codec::decode::<WelcomeSecrets>(&plain)
                .map_err(|e| mls_error("the group keys are unreadable", e))?;
            secrets
                .verify_adder(&bundle.group_id, &sender_key)
                .map_err(|_| Error::Mls("the adder's signature does not verify".into()))?;
            if let Some(name) = &secrets.name {
                content::check_group_name(name)
                    .map_err(|e| Error::Mls(format!("the group's name is refused: {e}")))?;
            }
            Ok::<_, Error>(secrets)
        })();
        let secrets = joined.inspect_err(|_| self.discard())?;
        let adder = &secrets.adder;
        let checked = match device.verify_credential(adder).await {
            Ok(()) if secrets.name.is_none() && adder.user() != device.user() => {
                Err(Error::Mls(format!(
                    "{} invited this client into a connection group",
                    adder.user()
                )))
            }
            checked => checked,
        };
        self.settle(checked.map(|()| secrets))
    }

    /// Processes a message of `group_id` into the MLS overlay, without committing it. Before a
    /// commit is merged, each leaf's signature key is noted (`leaf_keys`): a message the DS took
    /// before that commit, read after it, is then still tied to the leaf that sent it, even if
    /// the commit removed that leaf.
    pub fn process(
        &self,
        device: &Device,
        group_id: &[u8],
        message: &[u8],
    ) -> Result<Incoming, Error> {
        let mut group = self.group(group_id)?;
        let protocol = MlsMessageIn::tls_deserialize_exact(message)
            .map_err(|e| mls_error("unreadable message", e))?
            .try_into_protocol_message()
            .map_err(|e| mls_error("not a group message", e))?;
        if protocol.content_type() == ContentType::Proposal && protocol.epoch() < group.epoch() {
            // A commit since took that epoch without it: it is void (a member who proposed
            // leaving proposes again).
            return Ok(Incoming::Proposal);
        }
        let commit_now_or_later =
            protocol.content_type() == ContentType::Commit && protocol.epoch() >= group.epoch();
        let processed = group
            .process_message(self.provider(), protocol)
            .map_err(|e| match commit_now_or_later {
                // The DS took it, so the rest of the group moved on with it (or this client
                // missed the commits before it).
                true => Error::OutOfStep(e.to_string()),
                false => mls_error("cannot process the message", e),
            })?;
        let sender = processed.sender().clone();
        let credential = processed.credential().clone();
        let past_epoch = processed.epoch() < group.epoch();
        match processed.into_content() {
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                let removed = staged.self_removed();
                // A member's commit that removes a member brings new keys (the DS requires it);
                // a joiner's external commit replacing its own old leaf does not.
                let rekeys = staged.remove_proposals().next().is_some()
                    && matches!(sender, Sender::Member(_));
                note_leaf_keys(device, &group)?;
                group
                    .merge_staged_commit(self.provider(), *staged)
                    .map_err(|e| mls_error("cannot merge the commit", e))?;
                if removed {
                    return Ok(Incoming::Removed);
                }
                let rekeyed = match rekeys {
                    true => Some(keys_after_removal(self, &group)?),
                    false => None,
                };
                Ok(Incoming::Commit { rekeyed })
            }
            ProcessedMessageContent::ApplicationMessage(message) => {
                let Sender::Member(leaf) = sender else {
                    return Err(Error::Mls(
                        "an application message not from a member".into(),
                    ));
                };
                let noted = if past_epoch {
                    device.store().leaf_key(group_id, leaf.u32())?
                } else {
                    None
                };
                let sender_key = noted
                    .or_else(|| group.member_at(leaf).map(|member| member.signature_key))
                    .ok_or_else(|| Error::Mls("the sending leaf is not in the group".into()))?;
                Ok(Incoming::Application {
                    pseudonym: pseudonym_of(credential),
                    sender_key,
                    payload: message.into_bytes(),
                })
            }
            ProcessedMessageContent::ProposalMessage(proposal) => {
                group
                    .store_pending_proposal(self.storage(), *proposal)
                    .map_err(|e| mls_error("cannot store the proposal", e))?;
                Ok(Incoming::Proposal)
            }
            // External join proposals, and this client's own messages: nothing to do.
            _ => Ok(Incoming::Proposal),
        }
    }
}

/// Notes each leaf's signature key as `group` is now, before a commit changes it.
pub(crate) fn note_leaf_keys(device: &Device, group: &MlsGroup) -> Result<(), Error> {
    let leaves: Vec<(u32, Vec<u8>)> = group
        .members()
        .map(|m| (m.index.u32(), m.signature_key))
        .collect();
    Ok(device
        .store()
        .save_leaf_keys(group.group_id().as_slice(), &leaves)?)
}

/// The pseudonym a leaf's basic credential carries (empty for any other credential).
pub(crate) fn pseudonym_of(credential: Credential) -> Vec<u8> {
    BasicCredential::try_from(credential)
        .map(|c| c.identity().to_vec())
        .unwrap_or_default()
}
