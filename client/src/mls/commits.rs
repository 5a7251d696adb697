//! Operations that change a group at its DS: creating one, adding and removing members, and
//! sending an application message (joins by external commit are in [`super::external`]).
//! Commits and messages go out as kept operations (see [`super::outbox`]); creating a group
//! stages its MLS writes and commits them only if the DS took the request.

use std::collections::HashMap;

use openmls::{
    ciphersuite::hash_ref::ProposalRef,
    group::MlsGroupState,
    prelude::{tls_codec::Serialize as _, *},
};
use openmls_traits::storage::StorageProvider as _;
use roost_protocol::{
    connection::EarKey,
    content::{Content, Envelope},
    ds::{
        CommitRequest, CreateGroup, GroupKeys, MemberEntry, Rekey, WelcomeBundle, WelcomeSecrets,
    },
    key_packages::KeyPackageEntry,
    OpId,
};

use super::{
    create_config, epoch_key, exported_key, keys_after_removal, members::member_cards, mls_error,
    outbox::Resolved, signer::member_entry, signer::MlsSigner, MlsSession,
};
use crate::{
    device::Device,
    error::Error,
    store::{GroupAccess, Outgoing, PendingOp},
};

impl MlsSession<'_> {
    /// Creates a group with fresh EAR keys on the home DS, this client its only member. The
    /// local group is kept only if the DS took it.
    pub async fn create_group(
        &self,
        device: &Device,
        signer: &MlsSigner,
        connection_group: bool,
    ) -> Result<(MlsGroup, GroupAccess), Error> {
        let queue = device.own_queue_ref().await?;
        let staged = MlsGroup::new(
            self.provider(),
            &signer.key,
            &create_config(),
            signer.credential.clone(),
        )
        .map_err(|e| mls_error("cannot create the group", e))
        .and_then(|group| {
            let access = GroupAccess {
                group_id: group.group_id().as_slice().to_vec(),
                ds: device.user().domain().clone(),
                keys: GroupKeys {
                    group_state_ear_key: EarKey::random(),
                    credential_ear_key: EarKey::random(),
                },
            };
            let create = CreateGroup {
                op: OpId::random(),
                group_id: access.group_id.clone(),
                ear_key: access.keys.group_state_ear_key.clone(),
                group_info: self.group_info_bytes(&group, signer)?,
                epoch_key: epoch_key(self, &group)?.public(),
                creator: member_entry(
                    queue,
                    &access.group_id,
                    &access.keys,
                    &signer.own_card(device),
                ),
                connection_group,
            };
            Ok((group, access, create))
        });
        let created = match staged {
            Ok((group, access, create)) => device
                .home()
                .create_group(&create)
                .await
                .map(|()| (group, access))
                .map_err(Error::from),
            Err(e) => Err(e),
        };
        self.settle(created)
    }

    /// Adds claimed clients to `group` in one commit with a Welcome bundle carrying the
    /// group's keys and `name` (`None` for a connection group). The local state moves on only
    /// if the DS takes the commit (see [`super::outbox`]).
    pub async fn add_clients(
        &self,
        device: &Device,
        group: &mut MlsGroup,
        signer: &MlsSigner,
        access: &GroupAccess,
        name: Option<&str>,
        claimed: Vec<(KeyPackage, KeyPackageEntry)>,
    ) -> Result<usize, Error> {
        if claimed.is_empty() {
            return Ok(0);
        }
        let (group_id, keys) = (&access.group_id, &access.keys);
        let staged = (|| {
            let key_packages = claimed.iter().map(|(k, _)| k.clone()).collect();
            let (commit, welcome) = self.own_commit(group, signer, key_packages)?;
            let welcome = welcome.ok_or_else(|| Error::Mls("no Welcome for the added".into()))?;
            let bundle_key = exported_key(self, group)?;
            let secrets = WelcomeSecrets::new(
                keys.clone(),
                name.map(str::to_owned),
                access.ds.clone(),
                group_id,
                signer.key.public(),
                device.credential().clone(),
                &device.identity().signing_key,
            );
            let welcome = WelcomeBundle {
                group_id: group_id.clone(),
                welcome: welcome
                    .to_bytes()
                    .map_err(|e| mls_error("cannot encode the welcome", e))?,
                encrypted_keys: bundle_key.encrypt(group_id, &secrets.encode()),
            };
            let added: Vec<MemberEntry> = claimed
                .iter()
                .map(|(key_package, entry)| {
                    let card = entry.card(key_package.leaf_node().signature_key().as_slice());
                    member_entry(entry.queue.clone(), group_id, keys, &card)
                })
                .collect();
            let request = self.commit_request(group, signer, access, commit, added, Some(welcome));
            Ok((request?, None))
        })();
        self.send_commit(device, group, access, staged)
            .await
            .map(|()| claimed.len())
    }

    /// Removes the members at `leaves` from `group` in one commit.
    pub async fn remove_members(
        &self,
        device: &Device,
        group: &mut MlsGroup,
        signer: &MlsSigner,
        access: &GroupAccess,
        leaves: &[LeafNodeIndex],
    ) -> Result<(), Error> {
        let cards = member_cards(device, access).await?;
        let staged = (|| {
            let (commit, _, _) = group
                .remove_members(self.provider(), &signer.key, leaves)
                .map_err(|e| mls_error("cannot remove the members", e))?;
            group
                .merge_pending_commit(self.provider())
                .map_err(|e| mls_error("cannot merge the commit", e))?;
            self.removal_request(group, signer, access, commit, &cards)
        })();
        self.send_commit(device, group, access, staged).await
    }

    /// Renews this client's own leaf in a group: a commit with a fresh path and a leaf whose
    /// keys are new and whose lifetime no longer ends (a leaf made from a KeyPackage expires
    /// with it, and then no one can be welcomed into the group). Pending proposals are left for
    /// `commit_proposals`, which brings the new keys a removal needs.
    pub async fn renew_own_leaf(&self, device: &Device, access: &GroupAccess) -> Result<(), Error> {
        let mut group = self.group(&access.group_id)?;
        let signer = self.signer(device)?;
        let staged = (|| {
            let (commit, _) = self.own_commit(&mut group, &signer, Vec::new())?;
            let request = self.commit_request(&group, &signer, access, commit, Vec::new(), None);
            Ok((request?, None))
        })();
        self.send_commit(device, &mut group, access, staged).await
    }

    /// Makes and merges (in the overlay) a commit of `adds` alone, with a fresh path: pending
    /// proposals (removals) are left to `commit_proposals`, which brings the new keys a removal
    /// needs. Answers the commit and, if it adds anyone, its Welcome.
    fn own_commit(
        &self,
        group: &mut MlsGroup,
        signer: &MlsSigner,
        adds: Vec<KeyPackage>,
    ) -> Result<(MlsMessageOut, Option<MlsMessageOut>), Error> {
        let cannot = |e: &dyn std::fmt::Debug| Error::Mls(format!("cannot make the commit: {e:?}"));
        let (commit, welcome, _) = group
            .commit_builder()
            .consume_proposal_store(false)
            .force_self_update(true)
            .propose_adds(adds)
            .load_psks(self.storage())
            .map_err(|e| cannot(&e))?
            .build(self.rand(), self.crypto(), &signer.key, |_| true)
            .map_err(|e| cannot(&e))?
            .stage_commit(self.provider())
            .map_err(|e| cannot(&e))?
            .into_messages();
        group
            .merge_pending_commit(self.provider())
            .map_err(|e| mls_error("cannot merge the commit", e))?;
        Ok((commit, welcome))
    }

    /// The DS's request for a commit that removed members, merged into `group`, with the
    /// group's new keys (see [`Rekey`]): each staying member's card (from `cards`, by leaf key,
    /// as the DS held them) encrypted under the new credential key.
    fn removal_request(
        &self,
        group: &MlsGroup,
        signer: &MlsSigner,
        access: &GroupAccess,
        commit: MlsMessageOut,
        cards: &HashMap<Vec<u8>, Vec<u8>>,
    ) -> Result<(CommitRequest, Option<GroupKeys>), Error> {
        let keys = keys_after_removal(self, group)?;
        let group_id = &access.group_id;
        let credentials = group
            .members()
            .map(|member| {
                let card = cards
                    .get(&member.signature_key)
                    .map(|plain| keys.credential_ear_key.encrypt(group_id, plain));
                (member.index.u32(), card.unwrap_or_default())
            })
            .collect();
        let mut request = self.commit_request(group, signer, access, commit, Vec::new(), None)?;
        request.rekey = Some(Rekey {
            group_state_ear_key: keys.group_state_ear_key.clone(),
            credentials,
        });
        Ok((request, Some(keys)))
    }

    /// The DS's request for a commit already merged into `group`.
    fn commit_request(
        &self,
        group: &MlsGroup,
        signer: &MlsSigner,
        access: &GroupAccess,
        commit: MlsMessageOut,
        added: Vec<MemberEntry>,
        welcome: Option<WelcomeBundle>,
    ) -> Result<CommitRequest, Error> {
        Ok(CommitRequest {
            op: OpId::random(),
            ear_key: access.keys.group_state_ear_key.clone(),
            commit: commit
                .to_bytes()
                .map_err(|e| mls_error("cannot encode the commit", e))?,
            group_info: self.group_info_bytes(group, signer)?,
            added,
            welcome,
            epoch_key: epoch_key(self, group)?.public(),
            rekey: None,
        })
    }

    /// Keeps a commit already merged into `group` with its MLS writes held back, brings
    /// `group` back to the epoch storage holds, and sends the commit to the group's DS; the
    /// writes are applied once the DS takes it (see [`super::outbox`]).
    async fn send_commit(
        &self,
        device: &Device,
        group: &mut MlsGroup,
        access: &GroupAccess,
        staged: Result<(CommitRequest, Option<GroupKeys>), Error>,
    ) -> Result<(), Error> {
        let (request, rekeyed) = match staged.and_then(|r| {
            self.ensure_settled(device, &access.group_id)?;
            Ok(r)
        }) {
            Ok(staged) => staged,
            Err(e) => {
                self.reload_after_discard(group);
                return Err(e);
            }
        };
        let op = PendingOp {
            group_id: access.group_id.clone(),
            ds: access.ds.clone(),
            request: Outgoing::Commit {
                request,
                staged: self.storage().take_pending(),
                rekeyed: rekeyed.map(Box::new),
            },
        };
        self.reload_after_discard(group);
        self.dispatch(device, op).await?;
        if let Ok(Some(stored)) = MlsGroup::load(self.storage(), &group.group_id().clone()) {
            *group = stored;
        }
        Ok(())
    }

    /// Sends `content` into a group once. The MLS state that made the message is stored
    /// before it goes out, so its key is never used again. A DS in a later epoch answers 409
    /// `stale_epoch`, which says the message was not taken (see `inbox::send_content`, which
    /// catches up and sends it anew).
    pub async fn send_content(
        &self,
        device: &Device,
        access: &GroupAccess,
        content: &Content,
    ) -> Result<Resolved, Error> {
        self.ensure_settled(device, &access.group_id)?;
        let signer = self.signer(device)?;
        let mut group = self.group(&access.group_id)?;
        let envelope = Envelope {
            sender: signer.own_card(device),
            content: content.clone(),
        };
        let created = group
            .create_message(self.provider(), &signer.key, &envelope.encode())
            .map_err(|e| mls_error("cannot make the message", e))
            .and_then(|m| {
                m.tls_serialize_detached()
                    .map_err(|e| mls_error("cannot encode the message", e))
            });
        let message = self.settle(created)?;
        let op = self.message_op(access, &group, message, Some(content.clone()))?;
        self.dispatch(device, op).await
    }

    /// Proposes this client's removal from a group (it leaves), sent like a message (the MLS
    /// state that made it is stored first); another member's client commits it
    /// ([`commit_proposals`](Self::commit_proposals)). Nothing if the proposal stands already
    /// in the group's current epoch.
    pub async fn propose_leaving(
        &self,
        device: &Device,
        access: &GroupAccess,
    ) -> Result<(), Error> {
        // Every sync asks this of every group this client left or was removed from: read the
        // group's state alone first, and load the group only if this client is still in it.
        let state: Option<MlsGroupState> = self
            .storage()
            .group_state(&GroupId::from_slice(&access.group_id))?;
        if matches!(state, None | Some(MlsGroupState::Inactive)) {
            return Ok(());
        }
        let mut group = self.group(&access.group_id)?;
        if !group.is_active() || proposes_leaving(&group) {
            return Ok(());
        }
        self.ensure_settled(device, &access.group_id)?;
        let signer = self.signer(device)?;
        let made = group
            .leave_group(self.provider(), &signer.key)
            .map_err(|e| mls_error("cannot propose leaving", e))
            .and_then(|m| {
                m.to_bytes()
                    .map_err(|e| mls_error("cannot encode the proposal", e))
            });
        let proposal = self.settle(made)?;
        let op = self.message_op(access, &group, proposal, None)?;
        self.dispatch(device, op).await.map(drop)
    }

    /// Commits the proposals this client holds for a group (a member leaving), unless one
    /// removes this client itself, which only another member may commit. Answers whether it
    /// sent a commit.
    pub async fn commit_proposals(
        &self,
        device: &Device,
        access: &GroupAccess,
    ) -> Result<bool, Error> {
        // Every sync asks this of every group: read the proposal queue alone first, and load
        // the group only if it holds something.
        let queued: Vec<ProposalRef> = self
            .storage()
            .queued_proposal_refs(&GroupId::from_slice(&access.group_id))?;
        if queued.is_empty() {
            return Ok(false);
        }
        let mut group = self.group(&access.group_id)?;
        if proposes_leaving(&group) {
            return Ok(false);
        }
        let signer = self.signer(device)?;
        let cards = member_cards(device, access).await?;
        let staged = (|| {
            // Only removals are ever proposed (the DS takes no other proposal).
            let (commit, _, _) = group
                .commit_to_pending_proposals(self.provider(), &signer.key)
                .map_err(|e| mls_error("cannot commit the proposals", e))?;
            group
                .merge_pending_commit(self.provider())
                .map_err(|e| mls_error("cannot merge the commit", e))?;
            self.removal_request(&group, &signer, access, commit, &cards)
        })();
        self.send_commit(device, &mut group, access, staged)
            .await
            .map(|()| true)
    }
}

/// Whether the group's current epoch holds a proposal to remove this client.
fn proposes_leaving(group: &MlsGroup) -> bool {
    let own = group.own_leaf_index();
    group
        .pending_proposals()
        .any(|p| matches!(p.proposal(), Proposal::Remove(r) if r.removed() == own))
}
