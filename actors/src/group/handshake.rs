//! Handshake messages checked against a group's public state, as a receiving member's client
//! would: a commit is validated and merged (answering who gets it and who was added), a
//! proposal validated and kept until a commit covers it.

use openmls::{
    messages::group_info::VerifiableGroupInfo,
    prelude::{
        tls_codec::Deserialize as _, MlsMessageBodyIn, MlsMessageIn, ProcessedMessage,
        ProcessedMessageContent, Proposal, ProtocolMessage, PublicProcessMessageError, Sender,
        ValidationError,
    },
};
use roost_protocol::ds::SealedQueueRef;
use roost_storage::StorageError;

use super::{invalid, GroupActor, GroupError, Opened};

pub(super) fn parse_group_info(bytes: &[u8]) -> Result<VerifiableGroupInfo, GroupError> {
    match MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(invalid)?
        .extract()
    {
        MlsMessageBodyIn::GroupInfo(info) => Ok(info),
        _ => Err(invalid("expected a GroupInfo")),
    }
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
    pub added: Vec<u32>,
    pub joiner: Option<u32>,
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
            Some(
                opened
                    .public
                    .ext_commit_sender_index(&staged)
                    .map_err(invalid)?
                    .u32(),
            )
        } else {
            None
        };
        let added_keys: Vec<Vec<u8>> = staged
            .add_proposals()
            .map(|a| {
                a.add_proposal()
                    .key_package()
                    .leaf_node()
                    .signature_key()
                    .as_slice()
                    .to_vec()
            })
            .collect();
        opened
            .public
            .merge_commit(&opened.storage, *staged)
            .map_err(|e| StorageError::Corrupt(format!("merging a commit: {e:?}")))?;
        let added = added_keys
            .iter()
            .map(|key| {
                opened
                    .public
                    .members()
                    .find(|m| &m.signature_key == key)
                    .map(|m| m.index.u32())
                    .ok_or_else(|| invalid("an added member is missing after the commit"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let epoch = opened.public.group_context().epoch().as_u64();
        let info = parse_group_info(group_info)?;
        if info.epoch().as_u64() != epoch || info.group_id().as_slice() != self.group_id.as_slice()
        {
            return Err(invalid(
                "the GroupInfo is not of the epoch this commit creates",
            ));
        }
        opened.state.group_info = group_info.to_vec();
        for leaf in &removed {
            opened.state.members.remove(leaf);
        }
        Ok(Applied {
            epoch,
            recipients,
            added,
            joiner,
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
