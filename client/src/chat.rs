//! Chat in a group: sending an application message ([`Client::send`] to a connection,
//! [`Client::send_content_locked`] for any content and group), the per-group message log
//! ([`Client::messages`]), and telling who sent a received message.
//!
//! A message's MLS payload is a [`Content`] (a chat text, or a friendship token in a
//! connection group). The sender keeps its own text in its log once the DS accepted it (the DS
//! does not send it back); the others store it when [`Client::sync`] processes it. Sending
//! syncs first, so a client's log has what was delivered before its own message in front of it.
//!
//! Leaves carry pseudonyms only. The sender of a received message is found through the
//! members' cards the DS keeps encrypted under the credential EAR key (each a client
//! credential bound to the leaf's MLS signature key by the client's signature), matched with
//! the local group's leaves by that key and learnt once per pseudonym, in the `member_users`
//! tree. If that fails (the sender has left the DS's list since), the connection's peer is
//! assumed, or else the sender shows as this user.

use std::{collections::HashMap, time::Duration};

use openmls::prelude::{tls_codec::Serialize as _, *};
use roost_protocol::{
    codec,
    content::Content,
    credentials::ClientCredential,
    ds::{MemberCard, SendMessage},
    AsCredentials, Domain, Timestamp, UserName,
};

use crate::{
    client::{blocking, Client},
    error::Error,
    state::{Contact, GroupAccess, StoredMessage},
    SyncReport,
};

fn mls_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Mls(format!("{what}: {e}"))
}

/// A leaf of a group, with the client credential the DS keeps for it if that verifies.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedMember {
    pub leaf: u32,
    pub pseudonym: Vec<u8>,
    pub credential: Option<ClientCredential>,
}

impl Client {
    /// Sends `text` to `peer` (and this user's other clients) in their connection group, and
    /// keeps it in this client's log.
    pub async fn send(&self, peer: &UserName, text: &str) -> Result<StoredMessage, Error> {
        let _mls = self.mls_lock.lock().await;
        let contact = self.contact_with(peer)?;
        self.send_text_locked(&contact.access(), text).await
    }

    /// Syncs, sends `text` into a group and keeps it in this client's log; MLS lock held.
    pub(crate) async fn send_text_locked(
        &self,
        access: &GroupAccess,
        text: &str,
    ) -> Result<StoredMessage, Error> {
        self.sync_locked(Duration::ZERO).await?;
        self.send_content_locked(access, &Content::Text(text.to_owned()))
            .await?;
        let stored = self
            .store_message(&access.group_id, self.user(), text, None)
            .await?;
        stored.ok_or_else(|| Error::Mls("the message was not stored".into()))
    }

    /// Sends `content` into a group, the MLS lock held. The MLS state is committed only once
    /// the DS took the message; a DS in a later epoch (409 `stale_epoch`) makes it catch up
    /// and try once more.
    pub(crate) async fn send_content_locked(
        &self,
        access: &GroupAccess,
        content: &Content,
    ) -> Result<(), Error> {
        let signer = self.mls_signer()?;
        let group_id = GroupId::from_slice(&access.group_id);
        let ds = self.as_server_for(&access.ds)?;
        let payload = content.encode();
        let mut retried = false;
        loop {
            let mut group = MlsGroup::load(self.mls.storage(), &group_id)?
                .ok_or_else(|| Error::Mls("this client is not in the group".into()))?;
            let created = group
                .create_message(&self.mls, &signer.key, &payload)
                .map_err(|e| mls_error("cannot make the message", e))
                .and_then(|m| {
                    m.tls_serialize_detached()
                        .map_err(|e| mls_error("cannot encode the message", e))
                });
            let message = created.inspect_err(|_| self.mls.discard())?;
            let body = SendMessage {
                ear_key: access.keys.group_state_ear_key.clone(),
                message,
                sender_leaf: group.own_leaf_index().u32(),
            };
            match ds.send_message(&access.group_id, &body).await {
                Ok(()) => return Ok(self.mls.commit()?),
                Err(e) => {
                    self.mls.discard();
                    if !retried && e.status() == Some(409) && e.code() == "stale_epoch" {
                        retried = true;
                        self.catch_up().await?;
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
        self.group_log(&contact.group_id).await
    }

    pub(crate) async fn group_log(&self, group_id: &[u8]) -> Result<Vec<StoredMessage>, Error> {
        let (state, group_id) = (self.state.clone(), group_id.to_vec());
        blocking(move || state.messages(&group_id)).await
    }

    /// Syncs, waiting up to `wait` (at most 30 s) for a first message; for `watch`.
    pub async fn sync_waiting(&self, wait: Duration) -> Result<SyncReport, Error> {
        let _mls = self.mls_lock.lock().await;
        self.sync_locked(wait).await
    }

    pub(crate) fn contact_with(&self, peer: &UserName) -> Result<Contact, Error> {
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

    /// The user behind the leaf that sent a message, if the credentials tell (see the module
    /// documentation).
    pub(crate) async fn sender_of(&self, group_id: &[u8], pseudonym: &[u8]) -> Option<UserName> {
        if let Ok(Some(own)) = self.state.mls_identity() {
            if own.pseudonym == pseudonym {
                return Some(self.user().clone());
            }
        }
        if let Ok(Some(user)) = self.state.member_user(group_id, pseudonym) {
            return Some(user);
        }
        self.learn_members(group_id).await.ok()?;
        self.state.member_user(group_id, pseudonym).ok().flatten()
    }

    /// [`Client::sender_of`] a chat message; failing that, the connection's peer is assumed.
    pub(crate) async fn resolve_sender(&self, group_id: &[u8], pseudonym: &[u8]) -> UserName {
        if let Some(user) = self.sender_of(group_id, pseudonym).await {
            return user;
        }
        self.state
            .contact(group_id)
            .ok()
            .flatten()
            .and_then(|c| c.peer)
            .unwrap_or_else(|| self.user().clone())
    }

    /// Learns which user each member pseudonym of a group belongs to.
    async fn learn_members(&self, group_id: &[u8]) -> Result<(), Error> {
        let access = self
            .state
            .group_access(group_id)?
            .ok_or_else(|| Error::Mls("this client does not know the group".into()))?;
        let group = MlsGroup::load(self.mls.storage(), &GroupId::from_slice(group_id))?
            .ok_or_else(|| Error::Mls("this client is not in the group".into()))?;
        let members = self.verified_members(&group, &access).await?;
        self.remember_members(group_id, members).await
    }

    /// Keeps which user each pseudonym of `members` belongs to.
    pub(crate) async fn remember_members(
        &self,
        group_id: &[u8],
        members: Vec<VerifiedMember>,
    ) -> Result<(), Error> {
        let learnt: Vec<(Vec<u8>, UserName)> = members
            .into_iter()
            .filter_map(|m| Some((m.pseudonym, m.credential?.user().clone())))
            .collect();
        let (state, group_id) = (self.state.clone(), group_id.to_vec());
        blocking(move || state.save_member_users(&group_id, &learnt)).await
    }

    /// The members of `group` with the client credentials of the member cards the DS keeps
    /// (matched to leaves by their MLS signature key, so the DS's list may be of another
    /// epoch), each card's signature and credential chain checked against the AS credentials
    /// of its domain; `None` where no valid card names the leaf's key.
    pub(crate) async fn verified_members(
        &self,
        group: &MlsGroup,
        access: &GroupAccess,
    ) -> Result<Vec<VerifiedMember>, Error> {
        let info = self
            .as_server_for(&access.ds)?
            .external_commit_info(&access.group_id, &access.keys.group_state_ear_key)
            .await?;
        let mut authorities: HashMap<Domain, AsCredentials> = HashMap::new();
        let mut cards: HashMap<Vec<u8>, ClientCredential> = HashMap::new();
        for encrypted in &info.encrypted_credentials {
            let Some(card) = access
                .keys
                .credential_ear_key
                .decrypt(&access.group_id, encrypted)
                .ok()
                .and_then(|plain| codec::decode::<MemberCard>(&plain).ok())
                .filter(|card| card.verify().is_ok())
            else {
                continue;
            };
            let domain = card.credential.user().domain().clone();
            if !authorities.contains_key(&domain) {
                let Ok(fetched) = self.as_credentials_of(&domain).await else {
                    continue;
                };
                authorities.insert(domain.clone(), fetched);
            }
            if authorities[&domain]
                .verify_client(&card.credential, Timestamp::now())
                .is_ok()
            {
                cards.insert(card.leaf_key, card.credential);
            }
        }
        let mut members: Vec<VerifiedMember> = group
            .members()
            .map(|m| VerifiedMember {
                leaf: m.index.u32(),
                credential: cards.get(m.signature_key.as_slice()).cloned(),
                pseudonym: BasicCredential::try_from(m.credential)
                    .map(|c| c.identity().to_vec())
                    .unwrap_or_default(),
            })
            .collect();
        members.sort_by_key(|m| m.leaf);
        Ok(members)
    }
}
