//! The delivery service's endpoints: groups, commits, application messages and the external
//! join of a connection group. None is signed: a member proves itself with the group-state EAR
//! key it sends along. Every request that changes a group carries an operation id, so each is
//! retried on a transient failure with the same bytes (see `retrying`).

use reqwest::Method;
use roost_protocol::{codec, connection::EarKey, ds};

use super::{retrying, Server, ServerError};

impl Server {
    /// `POST /ds/v1/groups`: creates a group with its creator as the only member.
    pub async fn create_group(&self, body: &ds::CreateGroup) -> Result<(), ServerError> {
        let body = codec::encode(body);
        retrying(|| self.call_no_content(Method::POST, ds::DS_GROUPS, Some(body.clone()), None))
            .await
    }

    /// `POST /ds/v1/groups/{id}/commit`.
    pub async fn commit(
        &self,
        group_id: &[u8],
        body: &ds::CommitRequest,
    ) -> Result<ds::Committed, ServerError> {
        let (path, body) = (ds::ds_commit(group_id), codec::encode(body));
        retrying(|| self.post(&path, body.clone(), None)).await
    }

    /// `POST /ds/v1/groups/{id}/messages`: an application message for every member.
    pub async fn send_message(
        &self,
        group_id: &[u8],
        body: &ds::SendMessage,
    ) -> Result<ds::Accepted, ServerError> {
        let (path, body) = (ds::ds_messages(group_id), codec::encode(body));
        retrying(|| self.post(&path, body.clone(), None)).await
    }

    /// `POST /ds/v1/groups/{id}/external-commit-info`.
    pub async fn external_commit_info(
        &self,
        group_id: &[u8],
        ear_key: &EarKey,
    ) -> Result<ds::ExternalCommitInfo, ServerError> {
        let body = ds::EarKeyProof {
            ear_key: ear_key.clone(),
        };
        let path = ds::ds_external_commit_info(group_id);
        self.post(&path, codec::encode(&body), None).await
    }

    /// `POST /ds/v1/groups/{id}/rejoin`: this member takes the group's current state again.
    pub async fn rejoin(
        &self,
        group_id: &[u8],
        body: &ds::Rejoin,
    ) -> Result<ds::Committed, ServerError> {
        let (path, body) = (ds::ds_rejoin(group_id), codec::encode(body));
        retrying(|| self.post(&path, body.clone(), None)).await
    }

    /// `POST /ds/v1/groups/{id}/join-connection-group`: succeeds once per connection group.
    pub async fn join_connection_group(
        &self,
        group_id: &[u8],
        body: &ds::JoinConnectionGroup,
    ) -> Result<ds::Committed, ServerError> {
        let (path, body) = (ds::ds_join_connection_group(group_id), codec::encode(body));
        retrying(|| self.post(&path, body.clone(), None)).await
    }
}
