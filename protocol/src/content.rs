//! What clients say to each other inside MLS: the payload of an application message. The
//! servers never see it in the clear; it is here so every client encodes it the same way.

use serde::{Deserialize, Serialize};

use crate::{codec, ds::MemberCard, key_packages::FriendshipToken};

/// Largest encoded [`Content`] a client accepts, in bytes.
pub const MAX_CONTENT: usize = 64 * 1024;
/// Largest encoded [`Envelope`]: its content and the sender's card.
pub const MAX_ENVELOPE: usize = MAX_CONTENT + 8 * 1024;
/// Longest group name, in bytes of UTF-8.
pub const MAX_GROUP_NAME: usize = 100;

/// One application message of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Content {
    /// A chat message.
    Text(String),
    /// The sender's user's friendship token, shared in a connection group so the peer can
    /// claim that user's key packages and add them to groups.
    FriendshipToken(FriendshipToken),
    /// Where the sender's user's profile is and how to open it, shared in a connection group
    /// (again whenever it changes).
    Profile(crate::profile::ProfileRef),
}

impl Content {
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Content, codec::CodecError> {
        codec::decode_limited::<Content, MAX_CONTENT>(bytes)
    }
}

/// An application message as it travels inside MLS: what it says, and who says it. The sender's
/// card (its client credential bound to its leaf's MLS signature key) lets every reader tell
/// the sender from the message itself, checked against the leaf that sent it, whatever the
/// group has become by the time the reader gets to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub sender: MemberCard,
    pub content: Content,
}

impl Envelope {
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Envelope, codec::CodecError> {
        codec::decode_limited::<Envelope, MAX_ENVELOPE>(bytes)
    }
}

/// Checks a group name: not empty, not only blanks, at most [`MAX_GROUP_NAME`] bytes, no
/// control characters.
pub fn check_group_name(name: &str) -> Result<(), &'static str> {
    if name.trim().is_empty() {
        return Err("a group name cannot be empty");
    }
    if name.len() > MAX_GROUP_NAME {
        return Err("a group name has at most 100 bytes");
    }
    if name.chars().any(char::is_control) {
        return Err("a group name cannot hold control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_round_trips_and_garbage_is_refused() {
        let text = Content::Text("hello".into());
        assert_eq!(Content::decode(&text.encode()).unwrap(), text);
        let token = Content::FriendshipToken(FriendshipToken([7; 32]));
        assert_eq!(Content::decode(&token.encode()).unwrap(), token);
        assert!(Content::decode(b"\xff\xff\xff").is_err());
    }

    #[test]
    fn an_envelope_round_trips_with_its_sender_card() {
        use crate::{
            credentials::{ClientCredential, Validity},
            ClientId, SigningKey,
        };
        let key = SigningKey::generate();
        let credential = ClientCredential::issue(
            "alice@a.test".parse().unwrap(),
            ClientId::random(),
            key.verifying_key(),
            Validity::starting_now(60),
            &SigningKey::generate(),
        );
        let envelope = Envelope {
            sender: MemberCard::new(credential, &key, &[7; 32]),
            content: Content::Text("hello".into()),
        };
        let back = Envelope::decode(&envelope.encode()).unwrap();
        assert_eq!(back, envelope);
        assert!(back.sender.verify().is_ok());
        // A bare content is not an envelope.
        assert!(Envelope::decode(&Content::Text("hi".into()).encode()).is_err());
    }

    #[test]
    fn group_names_are_checked() {
        assert!(check_group_name("book club").is_ok());
        assert!(check_group_name("  ").is_err());
        assert!(check_group_name("a\nb").is_err());
        assert!(check_group_name(&"x".repeat(101)).is_err());
    }
}
