//! Handshake messages checked against a group's public state, as a receiving member's client
//! would: a commit is validated and merged (answering who gets it and who was added), a
//! proposal validated and kept until a commit covers it. Beyond what openmls's `PublicGroup`
//! checks, the DS checks what it alone can: the GroupInfo a joiner will trust agrees with the
//! merged state, an external commit removes no one but its joiner's old leaf, and a Welcome
//! is for exactly the KeyPackages the commit adds.

use openmls::{
    messages::group_info::VerifiableGroupInfo,
    prelude::{
        tls_codec::{Deserialize as _, Serialize as _},
        KeyPackage, KeyPackageRef, LeafNodeIndex, MlsMessageBodyIn, MlsMessageIn,
        OpenMlsSignaturePublicKey, ProcessedMessage, ProcessedMessageContent, Proposal,
        ProposalStore, ProtocolMessage, PublicGroup, PublicProcessMessageError, RatchetTreeIn,
        Sender, StagedCommit, ValidationError, Verifiable,
    },
};
use openmls_memory_storage::MemoryStorage;
use roost_protocol::{
    ds::{SealedQueueRef, WelcomeBundle},
    Timestamp,
};
use roost_storage::StorageError;

use super::{invalid, GroupActor, GroupError, Opened};
use crate::key_packages::{queue_of, CIPHERSUITE};

pub(super) fn parse_group_info(bytes: &[u8]) -> Result<VerifiableGroupInfo, GroupError> {
    match MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(invalid)?
        .extract()
    {
        MlsMessageBodyIn::GroupInfo(info) => Ok(info),
        _ => Err(invalid("expected a GroupInfo")),
    }
}

/// The ratchet tree a GroupInfo carries in its extension (which Roost's GroupInfos must have).
fn carried_tree(info: &VerifiableGroupInfo) -> Result<&RatchetTreeIn, GroupError> {
    Ok(info
        .extensions()
        .ratchet_tree()
        .ok_or_else(|| invalid("the GroupInfo lacks the ratchet-tree extension"))?
        .ratchet_tree())
}

pub(super) fn parse_protocol_message(bytes: &[u8]) -> Result<ProtocolMessage, GroupError> {
    MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(invalid)?
        .try_into_protocol_message()
        .map_err(invalid)
}

/// What an applied commit changed.
pub(super) struct Applied {
    pub epoch: u64,
    /// Everyone who was a member before the commit — the committer, for its own copy, and
    /// removed members, so they learn of their removal.
    pub recipients: Vec<SealedQueueRef>,
    /// In the order of the commit's Add proposals.
    pub added: Vec<AddedMember>,
    /// The leaves it removed.
    pub removed: Vec<u32>,
    pub joiner: Option<u32>,
}

/// A member a commit added: its leaf, and what its KeyPackage says.
pub(super) struct AddedMember {
    pub leaf: u32,
    pub package: AddedPackage,
}

/// What the DS reads from an added member's KeyPackage before the commit is merged.
pub(super) struct AddedPackage {
    signature_key: Vec<u8>,
    /// The queue the KeyPackage names: the one its Welcome goes to.
    pub queue: SealedQueueRef,
    pub reference: KeyPackageRef,
    /// When a one-time KeyPackage's lifetime ends (a one-time package adds one member once);
    /// `None` for a last-resort package.
    pub one_time_until: Option<Timestamp>,
}

impl GroupActor {
    /// Validates and merges a commit; `external` says whether it must be a joiner's.
    pub(super) fn apply_commit(
        &self,
        opened: &mut Opened,
        commit: &[u8],
        group_info: &[u8],
        external: bool,
    ) -> Result<Applied, GroupError> {
        let message = parse_protocol_message(commit)?;
        if message.group_id().as_slice() != self.group_id.as_slice() {
            return Err(invalid("the commit is for another group"));
        }
        let processed = self.process(opened, message)?;
        let sender = processed.sender().clone();
        let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
            return Err(invalid("expected a commit"));
        };
        match (&sender, external) {
            (Sender::Member(_), false) | (Sender::NewMemberCommit, true) => {}
            _ => return Err(invalid("unexpected sender for this endpoint")),
        }
        let members: Vec<u32> = opened.public.members().map(|m| m.index.u32()).collect();
        let recipients = Self::refs(&opened.state, &members);
        let removed: Vec<u32> = staged
            .remove_proposals()
            .map(|r| r.remove_proposal().removed().u32())
            .collect();
        let joiner = if external {
            let joiner = opened
                .public
                .ext_commit_sender_index(&staged)
                .map_err(invalid)?;
            self.check_external_removal(opened, &staged, &removed)?;
            Some(joiner.u32())
        } else {
            None
        };
        let packages = staged
            .add_proposals()
            .map(|add| self.added_package(add.add_proposal().key_package()))
            .collect::<Result<Vec<_>, _>>()?;
        opened
            .public
            .merge_commit(&opened.storage, *staged)
            .map_err(|e| StorageError::Corrupt(format!("merging a commit: {e:?}")))?;
        let added = packages
            .into_iter()
            .map(|package| {
                let leaf = opened
                    .public
                    .members()
                    .find(|m| m.signature_key == package.signature_key)
                    .map(|m| m.index.u32())
                    .ok_or_else(|| invalid("an added member is missing after the commit"))?;
                Ok(AddedMember { leaf, package })
            })
            .collect::<Result<Vec<_>, GroupError>>()?;
        self.check_group_info(opened, group_info)?;
        let epoch = opened.public.group_context().epoch().as_u64();
        opened.state.group_info = group_info.to_vec();
        for leaf in &removed {
            opened.state.members.remove(leaf);
        }
        Ok(Applied {
            epoch,
            recipients,
            added,
            removed,
            joiner,
        })
    }

    /// Checks that a GroupInfo uploaded with a commit is what a joiner may trust: signed by a
    /// member, and agreeing with the state the commit made — its group context (epoch, tree
    /// hash, transcript hash, extensions), confirmation tag and the ratchet tree it carries.
    ///
    /// A joiner checks the carried tree whole (every leaf's signature, the parent hashes); the
    /// DS asks that it be the group's own tree, byte for byte, which it checked commit by
    /// commit — the same outcome without a signature check per member (for a group of 100,
    /// most of a commit's cost before).
    fn check_group_info(&self, opened: &Opened, group_info: &[u8]) -> Result<(), GroupError> {
        let info = parse_group_info(group_info)?;
        let public = &opened.public;
        if info.group_id().as_slice() != self.group_id.as_slice()
            || info.epoch() != public.group_context().epoch()
        {
            return Err(invalid(
                "the GroupInfo is not of the epoch this commit creates",
            ));
        }
        let mismatch = || invalid("the GroupInfo does not match the state this commit creates");
        let encoded = |what: Result<Vec<u8>, _>| what.map_err(|_| mismatch());
        let carried = carried_tree(&info)?.tls_serialize_detached();
        if info.group_context() != public.group_context()
            || encoded(carried)? != encoded(public.export_ratchet_tree().tls_serialize_detached())?
        {
            return Err(mismatch());
        }
        // What is signed: the group context, the extensions, the confirmation tag, the signer.
        let signed = encoded(info.unsigned_payload())?;
        let Some((_, signer)) = signed.split_last_chunk::<4>() else {
            return Err(mismatch());
        };
        let expected = [
            encoded(info.group_context().tls_serialize_detached())?,
            encoded(info.extensions().tls_serialize_detached())?,
            encoded(public.confirmation_tag().tls_serialize_detached())?,
            signer.to_vec(),
        ]
        .concat();
        if signed != expected {
            return Err(mismatch());
        }
        let signer = LeafNodeIndex::new(u32::from_be_bytes(*signer));
        let leaf = public
            .leaf(signer)
            .ok_or_else(|| invalid("the GroupInfo's signer is not a member"))?;
        let key = OpenMlsSignaturePublicKey::new(
            leaf.signature_key().as_slice().into(),
            public.ciphersuite().signature_algorithm(),
        )
        .map_err(|_| mismatch())?;
        info.verify_no_out(&self.crypto, &key)
            .map_err(|_| invalid("the GroupInfo's signature does not verify"))
    }

    /// The public group a GroupInfo describes with its ratchet-tree extension, checked as a
    /// joiner would check it: signed by a member of that tree, the tree valid and matching the
    /// group context.
    pub(super) fn public_group_from(
        &self,
        info: VerifiableGroupInfo,
        storage: &MemoryStorage,
    ) -> Result<PublicGroup, GroupError> {
        let tree = carried_tree(&info)?.clone();
        PublicGroup::from_external(&self.crypto, storage, tree, info, ProposalStore::new())
            .map(|(public, _)| public)
            .map_err(|e| invalid(format!("the GroupInfo does not verify: {e}")))
    }

    /// An external commit may remove only its sender's own old leaf (a member rejoining with
    /// the same signature key): anyone else's removal needs a member's commit.
    fn check_external_removal(
        &self,
        opened: &Opened,
        staged: &StagedCommit,
        removed: &[u32],
    ) -> Result<(), GroupError> {
        let Some(joiner_key) = staged
            .update_path_leaf_node()
            .map(|leaf| leaf.signature_key().as_slice().to_vec())
        else {
            return Err(invalid("an external commit must carry its joiner's leaf"));
        };
        let own = |leaf: &u32| {
            opened
                .public
                .leaf(LeafNodeIndex::new(*leaf))
                .is_some_and(|node| node.signature_key().as_slice() == joiner_key)
        };
        match removed {
            [] => Ok(()),
            [leaf] if own(leaf) => Ok(()),
            _ => Err(invalid(
                "an external commit may remove only its joiner's own earlier leaf",
            )),
        }
    }

    /// Checks that a Welcome is for this group, in its ciphersuite, and for exactly the
    /// KeyPackages the commit adds — so it reaches exactly the queues they name.
    pub(super) fn check_welcome(
        &self,
        bundle: &WelcomeBundle,
        added: &[AddedMember],
    ) -> Result<(), GroupError> {
        if bundle.group_id != self.group_id {
            return Err(invalid("the Welcome bundle names another group"));
        }
        let MlsMessageBodyIn::Welcome(welcome) =
            MlsMessageIn::tls_deserialize_exact(&bundle.welcome)
                .map_err(|e| invalid(format!("the Welcome: {e}")))?
                .extract()
        else {
            return Err(invalid("the Welcome is another kind of MLS message"));
        };
        if welcome.ciphersuite() != CIPHERSUITE {
            return Err(invalid("the Welcome is of another ciphersuite"));
        }
        let mut named: Vec<KeyPackageRef> =
            welcome.secrets().iter().map(|s| s.new_member()).collect();
        let mut adds: Vec<KeyPackageRef> =
            added.iter().map(|a| a.package.reference.clone()).collect();
        named.sort_by(|a, b| a.as_slice().cmp(b.as_slice()));
        adds.sort_by(|a, b| a.as_slice().cmp(b.as_slice()));
        if named != adds {
            return Err(invalid(
                "the Welcome is not for exactly the members this commit adds",
            ));
        }
        Ok(())
    }

    fn added_package(&self, key_package: &KeyPackage) -> Result<AddedPackage, GroupError> {
        let queue = queue_of(key_package).map_err(|e| invalid(format!("an added member: {e}")))?;
        let reference = key_package.hash_ref(&self.crypto).map_err(invalid)?;
        let one_time_until =
            (!key_package.last_resort()).then(|| Timestamp(key_package.life_time().not_after()));
        Ok(AddedPackage {
            signature_key: key_package.leaf_node().signature_key().as_slice().to_vec(),
            queue,
            reference,
            one_time_until,
        })
    }

    /// Checks a handshake message against the public group state.
    fn process(
        &self,
        opened: &mut Opened,
        message: ProtocolMessage,
    ) -> Result<ProcessedMessage, GroupError> {
        opened
            .public
            .process_message(&self.crypto, message)
            .map_err(|e| match e {
                PublicProcessMessageError::ValidationError(ValidationError::WrongEpoch) => {
                    GroupError::StaleEpoch
                }
                other => invalid(other),
            })
    }

    /// Checks a member's proposal against the public group state and keeps it until a commit
    /// covers it (a member leaving proposes its own removal; another member commits it). Only
    /// removals are taken: anything else a member commits itself.
    pub(super) fn keep_proposal(
        &self,
        opened: &mut Opened,
        message: ProtocolMessage,
    ) -> Result<(), GroupError> {
        let processed = self.process(opened, message)?;
        if !matches!(processed.sender(), Sender::Member(_)) {
            return Err(invalid("a proposal must come from a member"));
        }
        let ProcessedMessageContent::ProposalMessage(proposal) = processed.into_content() else {
            return Err(invalid(
                "a handshake message here must be a proposal; commits go to the commit endpoint",
            ));
        };
        if !matches!(proposal.proposal(), Proposal::Remove(_)) {
            return Err(invalid("only removals may be proposed"));
        }
        opened
            .public
            .add_proposal(&opened.storage, *proposal)
            .map_err(|e| StorageError::Corrupt(format!("keeping a proposal: {e:?}")))?;
        Ok(())
    }
}
