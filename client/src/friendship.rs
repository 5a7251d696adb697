//! Friendship tokens in connection groups: what lets a connected user claim the other's key
//! packages and add them to named groups, without the QS learning who adds whom.
//!
//! The responder shares its user's token right after it joined the connection group; the
//! initiator shares its own once the responder's arrives (only then is the responder surely a
//! member, able to read it). Any client of a user may share it; a client that sees its own
//! user's token in the group does not share it again. A token received is kept on the contact,
//! replacing the one before: a user who replaces its token ([`crate::chat::Contacts::rotate_token`])
//! marks it due in every connection, so its contacts get the new one.

use roost_protocol::{key_packages::FriendshipToken, UserName};

use crate::{device::Device, error::Error, store::Contact};

/// Records a token received in group `group_id` from `from`: the peer's is kept, one's own
/// user's marks the token as shared. Tokens in other groups, or from others, are ignored.
pub async fn note_token(
    device: &Device,
    group_id: &[u8],
    from: &UserName,
    token: FriendshipToken,
) -> Result<(), Error> {
    let (group_id, from, own) = (group_id.to_vec(), from.clone(), from == device.user());
    let note = move |contact: &mut Contact| {
        if own {
            contact.token_shared = true;
        } else if contact.peer.as_ref().is_none_or(|peer| *peer == from) {
            // Only the two users' clients are in a connection group: whoever else sent it is
            // the peer.
            contact.peer = Some(from);
            contact.peer_token = Some(token);
        }
    };
    device
        .store()
        .run(move |s| s.update_contact(&group_id, note))
        .await?;
    Ok(())
}

/// The connections where this user's token is due (see the module documentation); with
/// `rotated`, every one where the current token is not shared yet, since the peer holds the
/// old one (even where this client joined after the connection was made and never got the
/// peer's token).
pub fn due(device: &Device, rotated: bool) -> Result<Vec<Contact>, Error> {
    Ok(device
        .store()
        .contacts()?
        .into_iter()
        .filter(|c| !c.token_shared && (rotated || c.peer_surely_in()))
        .collect())
}

/// Marks this user's token due in every connection (after it was replaced).
pub async fn all_due(device: &Device) -> Result<(), Error> {
    Ok(device
        .store()
        .run(|s| {
            for mut contact in s.contacts()? {
                contact.token_shared = false;
                s.save_contact(&contact)?;
            }
            Ok(())
        })
        .await?)
}

/// Records that this user's token is in the connection's group.
pub async fn mark_shared(device: &Device, group_id: Vec<u8>) -> Result<(), Error> {
    device
        .store()
        .run(move |s| s.update_contact(&group_id, |c| c.token_shared = true))
        .await?;
    Ok(())
}
