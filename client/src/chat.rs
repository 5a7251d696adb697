//! Chat: text messages in a connection ([`Chat::send`]) or any group (`send_text`), and each
//! group's log ([`Chat::messages`]); the contacts themselves ([`Contacts`]).
//!
//! A message's MLS payload is a [`Content`]. The sender keeps its own text in its log once the
//! DS accepted it (the DS does not send it back); the others store it when the inbox processes
//! it. Sending syncs first, so a client's log has what was delivered before its own message in
//! front of it.

use std::time::Duration;

use roost_protocol::{content::Content, UserName};

use crate::{
    client::Client,
    error::Error,
    friendship, inbox,
    mls::MlsSession,
    store::{Contact, GroupAccess, StoredMessage},
};

impl Client {
    /// Chat with connected users.
    pub fn chat(&self) -> Chat<'_> {
        Chat { client: self }
    }

    /// The connections of this client.
    pub fn contacts(&self) -> Contacts<'_> {
        Contacts { client: self }
    }
}

/// A handle: cheap to copy, borrowing the client.
#[derive(Clone, Copy)]
pub struct Chat<'a> {
    client: &'a Client,
}

impl Chat<'_> {
    /// Sends `text` to `peer` (and this user's other clients) in their connection group, and
    /// keeps it in this client's log.
    pub async fn send(self, peer: &UserName, text: &str) -> Result<StoredMessage, Error> {
        let mls = self.client.mls().lock().await;
        let contact = self.client.contacts().with(peer)?;
        send_text(self.client, &mls, &contact.access(), text).await
    }

    /// The messages of the connection with `peer`, in order (as far as this client has synced).
    pub async fn messages(self, peer: &UserName) -> Result<Vec<StoredMessage>, Error> {
        let contact = self.client.contacts().with(peer)?;
        group_log(self.client, &contact.group_id).await
    }
}

/// Syncs, sends `text` into a group and keeps it in this client's log.
pub(crate) async fn send_text(
    client: &Client,
    mls: &MlsSession<'_>,
    access: &GroupAccess,
    text: &str,
) -> Result<StoredMessage, Error> {
    inbox::sync(client, mls, Duration::ZERO).await?;
    let sent = inbox::send_content(client, mls, access, &Content::Text(text.to_owned())).await?;
    sent.stored
        .ok_or_else(|| Error::Mls("the message was not stored".into()))
}

/// A group's log, in order.
pub(crate) async fn group_log(
    client: &Client,
    group_id: &[u8],
) -> Result<Vec<StoredMessage>, Error> {
    let group_id = group_id.to_vec();
    Ok(client
        .device()
        .store()
        .run(move |s| s.messages(&group_id))
        .await?)
}

/// A handle: cheap to copy, borrowing the client.
#[derive(Clone, Copy)]
pub struct Contacts<'a> {
    client: &'a Client,
}

impl Contacts<'_> {
    /// Every connection of this client, oldest first.
    pub async fn list(self) -> Result<Vec<Contact>, Error> {
        Ok(self.client.device().store().run(|s| s.contacts()).await?)
    }

    /// Replaces this user's friendship token, so that whoever holds only the old one can no
    /// longer add the user to groups, and shares the new one in every connection (a
    /// connection where that fails gets it at the next sync). Answers in how many it was
    /// shared now.
    pub async fn rotate_token(self) -> Result<usize, Error> {
        let device = self.client.device();
        let mls = self.client.mls().lock().await;
        inbox::sync(self.client, &mls, Duration::ZERO).await?;
        device
            .home()
            .rotate_friendship_token(device.signer())
            .await?;
        friendship::all_due(device).await?;
        Ok(inbox::share_due_tokens(self.client, &mls, true).await)
    }

    /// The connection with `peer`.
    pub fn with(self, peer: &UserName) -> Result<Contact, Error> {
        self.client
            .device()
            .store()
            .contacts()?
            .into_iter()
            .find(|c| c.peer.as_ref() == Some(peer))
            .ok_or_else(|| Error::NotConnected(peer.clone()))
    }
}
