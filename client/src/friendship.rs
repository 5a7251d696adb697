//! Friendship tokens in connection groups: what lets a connected user claim the other's key
//! packages and add them to named groups, without the QS learning who adds whom.
//!
//! The responder shares its user's token right after it joined the connection group; the
//! initiator shares its own once the responder's arrives (only then is the responder surely a
//! member, able to read it). Any client of a user may share it; a client that sees its own
//! user's token in the group does not share it again. A token received is kept on the contact.

use roost_protocol::{content::Content, key_packages::FriendshipToken, UserName};

use crate::{client::Client, error::Error};

impl Client {
    /// Records a token received in group `group_id` from `from`: the peer's is kept, one's own
    /// user's marks the token as shared. Tokens in other groups, or from others, are ignored.
    pub(crate) async fn note_token(
        &self,
        group_id: &[u8],
        from: &UserName,
        token: FriendshipToken,
    ) -> Result<(), Error> {
        let Some(mut contact) = self.state.contact(group_id)? else {
            return Ok(());
        };
        if from == self.user() {
            contact.token_shared = true;
        } else if contact.peer.as_ref().is_none_or(|peer| peer == from) {
            // Only the two users' clients are in a connection group: whoever else sent it is
            // the peer.
            contact.peer = Some(from.clone());
            contact.peer_token = Some(token);
        } else {
            return Ok(());
        }
        self.save_contact(&contact).await
    }

    /// Shares this user's token in every connection where it is due (see the module
    /// documentation). Best effort: whatever fails is tried again at the next sync.
    pub(crate) async fn share_due_tokens(&self) {
        let Ok(contacts) = self.state.contacts() else {
            return;
        };
        let due: Vec<_> = contacts
            .into_iter()
            .filter(|c| !c.token_shared && (c.peer_token.is_some() || !c.initiated))
            .collect();
        if due.is_empty() {
            return;
        }
        let Ok(token) = self.server().friendship_token(self.signer()).await else {
            return;
        };
        for mut contact in due {
            let content = Content::FriendshipToken(token.clone());
            if self
                .send_content_locked(&contact.access(), &content)
                .await
                .is_ok()
            {
                contact.token_shared = true;
                let _ = self.save_contact(&contact).await;
            }
        }
    }
}
