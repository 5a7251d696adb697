//! Chat in a connection group: sending an application message ([`Client::send`]), the
//! per-group message log ([`Client::messages`]), and telling who sent a received message.
//!
//! A message's MLS payload is its text in UTF-8. The sender keeps its own message in its log
//! once the DS accepted it (the DS does not send it back); the others store it when
//! [`Client::sync`] processes it. Sending syncs first, so a client's log has what was
//! delivered before its own message in front of it.
//!
//! Leaves carry pseudonyms only. The sender of a received message is found through the
//! members' real client credentials the DS keeps encrypted under the credential EAR key: they
//! come in leaf order, which is matched with the local group's members (and learnt once per
//! pseudonym, in the `member_users` tree). If that fails, the contact record's peer is assumed.

use std::time::Duration;

use openmls::prelude::{tls_codec::Serialize as _, *};
use roost_protocol::{codec, credentials::ClientCredential, ds::SendMessage, UserName};

use crate::{
    client::{blocking, Client},
    error::Error,
    state::{Contact, StoredMessage},
    SyncReport,
};

fn mls_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Mls(format!("{what}: {e}"))
}

impl Client {
    /// Sends `text` to `peer` (and this user's other clients) in their connection group, and
    /// keeps it in this client's log. The MLS state is committed only once the DS took the
    /// message; a DS in a later epoch (409 `stale_epoch`) makes it sync and try once more.
    pub async fn send(&self, peer: &UserName, text: &str) -> Result<StoredMessage, Error> {
        let _mls = self.mls_lock.lock().await;
        let contact = self.contact_with(peer)?;
        self.sync_locked(Duration::ZERO).await?;
        let signer = self.mls_signer()?;
        let group_id = GroupId::from_slice(&contact.group_id);
        let mut retried = false;
        loop {
            let mut group = MlsGroup::load(self.mls.storage(), &group_id)?
                .ok_or_else(|| Error::Mls("this client is not in the group".into()))?;
            let created = group
                .create_message(&self.mls, &signer.key, text.as_bytes())
                .map_err(|e| mls_error("cannot make the message", e))
                .and_then(|m| {
                    m.tls_serialize_detached()
                        .map_err(|e| mls_error("cannot encode the message", e))
                });
            let message = created.inspect_err(|_| self.mls.discard())?;
            let body = SendMessage {
                ear_key: contact.group_state_ear_key.clone(),
                message,
                sender_leaf: group.own_leaf_index().u32(),
            };
            match self.server().send_message(&contact.group_id, &body).await {
                Ok(()) => {
                    self.mls.commit()?;
                    let stored = self
                        .store_message(&contact.group_id, self.user(), text, None)
                        .await?;
                    return stored.ok_or_else(|| Error::Mls("the message was not stored".into()));
                }
                Err(e) => {
                    self.mls.discard();
                    if !retried && e.status() == Some(409) && e.code() == "stale_epoch" {
                        retried = true;
                        self.sync_locked(Duration::ZERO).await?;
                        continue;
                    }
                    return Err(e.into());
                }
            }
        }
    }

    /// The messages of the connection with `peer`, in order (as far as this client has synced).
    pub async fn messages(&self, peer: &UserName) -> Result<Vec<StoredMessage>, Error> {
        let contact = self.contact_with(peer)?;
        let state = self.state.clone();
        blocking(move || state.messages(&contact.group_id)).await
    }

    /// Syncs, waiting up to `wait` (at most 30 s) for a first message; for `watch`.
    pub async fn sync_waiting(&self, wait: Duration) -> Result<SyncReport, Error> {
        let _mls = self.mls_lock.lock().await;
        self.sync_locked(wait).await
    }

    fn contact_with(&self, peer: &UserName) -> Result<Contact, Error> {
        self.state
            .contacts()?
            .into_iter()
            .find(|c| c.peer.as_ref() == Some(peer))
            .ok_or_else(|| Error::NotConnected(peer.clone()))
    }

    pub(crate) async fn store_message(
        &self,
        group_id: &[u8],
        from: &UserName,
        text: &str,
        queue_seq: Option<u64>,
    ) -> Result<Option<StoredMessage>, Error> {
        let (state, group_id, from, text) = (
            self.state.clone(),
            group_id.to_vec(),
            from.clone(),
            text.to_owned(),
        );
        blocking(move || state.append_message(&group_id, &from, &text, queue_seq)).await
    }

    /// The user behind the leaf that sent a message (see the module documentation).
    pub(crate) async fn resolve_sender(&self, group_id: &[u8], pseudonym: &[u8]) -> UserName {
        if let Ok(Some(own)) = self.state.mls_identity() {
            if own.pseudonym == pseudonym {
                return self.user().clone();
            }
        }
        if let Ok(Some(user)) = self.state.member_user(group_id, pseudonym) {
            return user;
        }
        if self.learn_members(group_id).await.is_ok() {
            if let Ok(Some(user)) = self.state.member_user(group_id, pseudonym) {
                return user;
            }
        }
        self.state
            .contact(group_id)
            .ok()
            .flatten()
            .and_then(|c| c.peer)
            .unwrap_or_else(|| self.user().clone())
    }

    /// Learns which user each member pseudonym of a group belongs to, from the verified
    /// credentials the DS holds for the members (in leaf order).
    async fn learn_members(&self, group_id: &[u8]) -> Result<(), Error> {
        let contact = self
            .state
            .contact(group_id)?
            .ok_or_else(|| Error::Mls("no contact for the group".into()))?;
        let server = self.as_server_for(self.user().domain())?;
        let info = server
            .external_commit_info(group_id, &contact.group_state_ear_key)
            .await?;
        let credentials = self.as_credentials_of(self.user().domain()).await?;
        let mut users = Vec::new();
        for encrypted in &info.encrypted_credentials {
            let credential = contact
                .credential_ear_key
                .decrypt(group_id, encrypted)
                .ok()
                .and_then(|plain| codec::decode::<ClientCredential>(&plain).ok())
                .filter(|c| {
                    credentials
                        .verify_client(c, roost_protocol::Timestamp::now())
                        .is_ok()
                });
            users.push(credential);
        }
        let group = MlsGroup::load(self.mls.storage(), &GroupId::from_slice(group_id))?
            .ok_or_else(|| Error::Mls("this client is not in the group".into()))?;
        let mut members: Vec<(u32, Vec<u8>)> = group
            .members()
            .map(|m| {
                let pseudonym = BasicCredential::try_from(m.credential)
                    .map(|c| c.identity().to_vec())
                    .unwrap_or_default();
                (m.index.u32(), pseudonym)
            })
            .collect();
        members.sort_by_key(|(index, _)| *index);
        if members.len() != users.len() {
            return Err(Error::Mls(
                "the DS lists other members than the group".into(),
            ));
        }
        // The list must put this client at its own leaf, or it is not in leaf order.
        let own = group.own_leaf_index().u32();
        let own_position = members.iter().position(|(index, _)| *index == own);
        let own_matches = own_position
            .and_then(|i| users[i].as_ref())
            .is_some_and(|c| c.client_id() == self.client_id());
        if !own_matches {
            return Err(Error::Mls(
                "the DS's member list is not in leaf order".into(),
            ));
        }
        let learnt: Vec<(Vec<u8>, UserName)> = members
            .into_iter()
            .zip(users)
            .filter_map(|((_, pseudonym), user)| Some((pseudonym, user?.user().clone())))
            .collect();
        let (state, group_id) = (self.state.clone(), group_id.to_vec());
        blocking(move || state.save_member_users(&group_id, &learnt)).await
    }
}
