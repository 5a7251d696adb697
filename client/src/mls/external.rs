//! Joining a group by external commit, from the GroupInfo its DS holds: a responder joining a
//! connection group, and a member that fell out of step with its group (a commit it could not
//! process, or one it never got) taking the group's current state again. The local group is
//! kept only if the DS takes the commit.

use openmls::{messages::group_info::VerifiableGroupInfo, prelude::*};
use roost_protocol::{
    connection::EarKey,
    ds::{JoinConnectionGroup, MemberEntry, Rejoin},
    OpId, VerifyingKey,
};

use super::{
    epoch_key, join_config, mls_error, outbox, parse_message, signer::MlsSigner, MlsSession,
};
use crate::{device::Device, error::Error, store::GroupAccess, transport::Server};

/// An external commit made (not yet taken by the DS), with what the DS needs beside it.
struct ExternalCommit {
    group: MlsGroup,
    commit: Vec<u8>,
    group_info: Vec<u8>,
    epoch_key: VerifyingKey,
}

impl MlsSession<'_> {
    /// Joins a connection group by external commit from its `group_info`, with `joiner` as
    /// what the DS keeps of this client. The local group is stored only if the DS takes the
    /// join; answers it with the commit's place in the group's order (whose copy this client
    /// must skip).
    pub async fn join_by_external_commit(
        &self,
        ds: &Server,
        signer: &MlsSigner,
        group_id: &[u8],
        group_info: VerifiableGroupInfo,
        ear_key: &EarKey,
        joiner: MemberEntry,
    ) -> Result<(MlsGroup, u64), Error> {
        let joined = match self.external_commit(signer, group_info) {
            Ok(made) => {
                let join = JoinConnectionGroup {
                    op: OpId::random(),
                    ear_key: ear_key.clone(),
                    commit: made.commit,
                    group_info: made.group_info,
                    joiner,
                    epoch_key: made.epoch_key,
                };
                ds.join_connection_group(group_id, &join)
                    .await
                    .map(|committed| (made.group, committed.seq))
                    .map_err(Error::from)
            }
            Err(e) => Err(e),
        };
        self.settle(joined)
    }

    /// Takes a group's current state again after this client fell out of step with it: an
    /// external commit, from the DS's GroupInfo, that replaces this client's own leaf (openmls
    /// removes the leaf with this client's signature key). What this client held of the group
    /// is dropped, and with it any change it had on its way; messages of the epochs it missed
    /// stay unread. Answers the commit's place in the group's order (whose copy to skip).
    pub async fn rejoin(&self, device: &Device, access: &GroupAccess) -> Result<u64, Error> {
        let group_id = &access.group_id;
        let ds = device.server_of(&access.ds)?;
        let info = ds
            .external_commit_info(group_id, &access.keys.group_state_ear_key)
            .await?;
        let MlsMessageBodyIn::GroupInfo(group_info) = parse_message(&info.group_info)? else {
            return Err(Error::Mls("the DS's group info is not a GroupInfo".into()));
        };
        outbox::forget(device, group_id).await?;
        let signer = self.signer(device)?;
        let rejoined = async {
            // Dropped in the overlay only: kept if the DS does not take the commit.
            if let Ok(mut held) = self.group(group_id) {
                held.delete(self.storage())
                    .map_err(|e| mls_error("cannot drop the group's old state", e))?;
            }
            let made = self.external_commit(&signer, group_info)?;
            let rejoin = Rejoin {
                op: OpId::random(),
                ear_key: access.keys.group_state_ear_key.clone(),
                commit: made.commit,
                group_info: made.group_info,
                epoch_key: made.epoch_key,
            };
            Ok(ds.rejoin(group_id, &rejoin).await?.seq)
        };
        let rejoined = rejoined.await;
        self.settle(rejoined)
    }

    fn external_commit(
        &self,
        signer: &MlsSigner,
        group_info: VerifiableGroupInfo,
    ) -> Result<ExternalCommit, Error> {
        let cannot = |e: &dyn std::fmt::Display| mls_error("cannot build the external commit", e);
        let (group, bundle) = MlsGroup::external_commit_builder()
            .with_config(join_config())
            .build_group(self.provider(), group_info, signer.credential.clone())
            .map_err(|e| cannot(&e))?
            .load_psks(self.storage())
            .map_err(|e| cannot(&e))?
            .build(self.rand(), self.crypto(), &signer.key, |_| true)
            .map_err(|e| cannot(&e))?
            .finalize(self.provider())
            .map_err(|e| cannot(&e))?;
        let commit = bundle
            .commit()
            .to_bytes()
            .map_err(|e| mls_error("cannot encode the commit", e))?;
        Ok(ExternalCommit {
            group_info: self.group_info_bytes(&group, signer)?,
            epoch_key: epoch_key(self, &group)?.public(),
            group,
            commit,
        })
    }
}
