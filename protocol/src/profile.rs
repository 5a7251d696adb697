//! Profiles: what a user says of itself — a display name, an avatar, an "about" line — beyond
//! its user name. The client encrypts its profile under a random key ([`EarKey`]) and stores
//! the ciphertext on its own homeserver under an unguessable [`ProfileId`]; whoever holds a
//! [`ProfileRef`] (the server, the id, the key) can fetch and open it. The server never sees the
//! contents, and fetching is unauthenticated, so it never learns who fetched.
//!
//! A profile is self-declared: anyone can claim any display name. Clients show it as such and
//! keep the user name beside it. Everything opened is checked again ([`Profile::check`]): a
//! profile comes from whoever wrote the ciphertext, and is as untrusted as any input.

use serde::{Deserialize, Serialize};

use crate::{
    codec,
    crypto::{CryptoError, EarKey},
    Domain,
};

/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 64;
/// Longest "about" line, in characters.
pub const MAX_ABOUT_CHARS: usize = 280;
/// Largest avatar image, in bytes.
pub const MAX_AVATAR_BYTES: usize = 256 * 1024;
/// Largest encrypted profile a server stores or a client opens: the avatar and the texts,
/// encoded, with the nonce and tag.
pub const MAX_ENCRYPTED_PROFILE: usize = MAX_AVATAR_BYTES + 4 * 1024;

/// Names a stored profile: 32 random bytes, so nobody finds one without being given its id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProfileId(pub [u8; 32]);

impl ProfileId {
    pub fn random() -> Self {
        ProfileId(rand::random())
    }
}

impl std::fmt::Display for ProfileId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for ProfileId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProfileId({self})")
    }
}

impl std::str::FromStr for ProfileId {
    type Err = ProfileError;
    fn from_str(s: &str) -> Result<Self, ProfileError> {
        let mut id = [0u8; 32];
        hex::decode_to_slice(s, &mut id).map_err(|_| ProfileError::BadId)?;
        Ok(ProfileId(id))
    }
}

/// The image formats an avatar may be in, told apart by their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageFormat {
    Png,
    Jpeg,
    Webp,
}

impl ImageFormat {
    /// The format `bytes` are in, by their signature.
    pub fn of(bytes: &[u8]) -> Option<ImageFormat> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(ImageFormat::Png)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(ImageFormat::Jpeg)
        } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            Some(ImageFormat::Webp)
        } else {
            None
        }
    }

    pub fn mime_type(self) -> &'static str {
        match self {
            ImageFormat::Png => "image/png",
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::Webp => "image/webp",
        }
    }
}

/// What a user says of itself (the default: nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub display_name: String,
    pub about: String,
    /// An image in one of the [`ImageFormat`]s.
    pub avatar: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("the display name is longer than {MAX_DISPLAY_NAME_CHARS} characters")]
    DisplayNameTooLong,
    #[error("the about line is longer than {MAX_ABOUT_CHARS} characters")]
    AboutTooLong,
    #[error("the {0} holds control characters")]
    ControlCharacters(&'static str),
    #[error("the avatar takes {0} bytes; at most {MAX_AVATAR_BYTES} are allowed")]
    AvatarTooLarge(usize),
    #[error("the avatar is not a PNG, JPEG or WebP image")]
    AvatarNotAnImage,
    #[error("the encrypted profile takes {0} bytes; at most {MAX_ENCRYPTED_PROFILE} are allowed")]
    TooLarge(usize),
    #[error("the profile does not open with its key (tampered with, or another profile)")]
    Tampered,
    #[error("the profile does not decode: {0}")]
    Malformed(String),
    #[error("a profile id is 64 hex digits")]
    BadId,
}

impl Profile {
    /// Checks every field against the limits; what [`EncryptedProfile::open`] also does to a
    /// profile someone else wrote.
    pub fn check(&self) -> Result<(), ProfileError> {
        if self.display_name.chars().count() > MAX_DISPLAY_NAME_CHARS {
            return Err(ProfileError::DisplayNameTooLong);
        }
        if self.about.chars().count() > MAX_ABOUT_CHARS {
            return Err(ProfileError::AboutTooLong);
        }
        if self.display_name.chars().any(char::is_control) {
            return Err(ProfileError::ControlCharacters("display name"));
        }
        if self.about.chars().any(char::is_control) {
            return Err(ProfileError::ControlCharacters("about line"));
        }
        if let Some(avatar) = &self.avatar {
            if avatar.len() > MAX_AVATAR_BYTES {
                return Err(ProfileError::AvatarTooLarge(avatar.len()));
            }
            if ImageFormat::of(avatar).is_none() {
                return Err(ProfileError::AvatarNotAnImage);
            }
        }
        Ok(())
    }

    /// The avatar's format, if there is one.
    pub fn avatar_format(&self) -> Option<ImageFormat> {
        self.avatar.as_deref().and_then(ImageFormat::of)
    }

    /// Encrypts the profile under `key`, bound to `id` (the ciphertext cannot be served as
    /// another profile).
    pub fn seal(&self, id: &ProfileId, key: &EarKey) -> Result<EncryptedProfile, ProfileError> {
        self.check()?;
        let sealed = EncryptedProfile(key.encrypt(&id.0, &codec::encode(self)));
        sealed.check_size()?;
        Ok(sealed)
    }
}

/// A profile as its server stores and serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedProfile(pub Vec<u8>);

impl EncryptedProfile {
    pub fn check_size(&self) -> Result<(), ProfileError> {
        match self.0.len() {
            n if n > MAX_ENCRYPTED_PROFILE => Err(ProfileError::TooLarge(n)),
            _ => Ok(()),
        }
    }

    /// Opens the profile with the key and id it was sealed with, and checks it.
    pub fn open(&self, id: &ProfileId, key: &EarKey) -> Result<Profile, ProfileError> {
        self.check_size()?;
        let plain = key.decrypt(&id.0, &self.0).map_err(|e| match e {
            CryptoError::Decryption => ProfileError::Tampered,
            other => ProfileError::Malformed(other.to_string()),
        })?;
        let profile: Profile = codec::decode_limited::<_, MAX_ENCRYPTED_PROFILE>(&plain)
            .map_err(|e| ProfileError::Malformed(e.to_string()))?;
        profile.check()?;
        Ok(profile)
    }
}

/// Where a profile is and how to open it: given to those who may see it (a contact, or the
/// responder of a connection request, which fetches it only if it chooses to).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileRef {
    /// The homeserver that stores it (the user's own).
    pub domain: Domain,
    pub id: ProfileId,
    pub key: EarKey,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(bytes: usize) -> Vec<u8> {
        let mut image = b"\x89PNG\r\n\x1a\n".to_vec();
        image.resize(bytes, 0);
        image
    }

    fn alice() -> Profile {
        Profile {
            display_name: "Alice Liddell".into(),
            about: "down the rabbit hole".into(),
            avatar: Some(png(1000)),
        }
    }

    #[test]
    fn a_profile_opens_only_with_its_key_and_id() {
        let (id, key) = (ProfileId::random(), EarKey::random());
        let sealed = alice().seal(&id, &key).unwrap();
        assert_eq!(sealed.open(&id, &key).unwrap(), alice());
        assert_eq!(
            sealed.open(&id, &EarKey::random()),
            Err(ProfileError::Tampered)
        );
        assert_eq!(
            sealed.open(&ProfileId::random(), &key),
            Err(ProfileError::Tampered)
        );
        let mut tampered = sealed.clone();
        let last = tampered.0.len() - 1;
        tampered.0[last] ^= 1;
        assert_eq!(tampered.open(&id, &key), Err(ProfileError::Tampered));
    }

    #[test]
    fn a_profile_beyond_the_limits_is_refused_when_sealed_and_when_opened() {
        let (id, key) = (ProfileId::random(), EarKey::random());
        let too_long = Profile {
            display_name: "x".repeat(MAX_DISPLAY_NAME_CHARS + 1),
            ..alice()
        };
        assert_eq!(
            too_long.seal(&id, &key),
            Err(ProfileError::DisplayNameTooLong)
        );
        let not_an_image = Profile {
            avatar: Some(b"GIF89a........".to_vec()),
            ..alice()
        };
        assert_eq!(
            not_an_image.seal(&id, &key),
            Err(ProfileError::AvatarNotAnImage)
        );
        let too_large = Profile {
            avatar: Some(png(MAX_AVATAR_BYTES + 1)),
            ..alice()
        };
        assert!(matches!(
            too_large.seal(&id, &key),
            Err(ProfileError::AvatarTooLarge(_))
        ));
        // Sealed by a client that skipped the checks: the one opening it checks again.
        let hostile = EncryptedProfile(key.encrypt(&id.0, &codec::encode(&too_long)));
        assert_eq!(
            hostile.open(&id, &key),
            Err(ProfileError::DisplayNameTooLong)
        );
        let huge = EncryptedProfile(vec![0; MAX_ENCRYPTED_PROFILE + 1]);
        assert!(matches!(
            huge.open(&id, &key),
            Err(ProfileError::TooLarge(_))
        ));
    }

    #[test]
    fn avatars_are_told_apart_by_their_first_bytes() {
        assert_eq!(ImageFormat::of(&png(20)), Some(ImageFormat::Png));
        assert_eq!(
            ImageFormat::of(&[0xFF, 0xD8, 0xFF, 0xE0]),
            Some(ImageFormat::Jpeg)
        );
        assert_eq!(
            ImageFormat::of(b"RIFF\0\0\0\0WEBPVP8 "),
            Some(ImageFormat::Webp)
        );
        assert_eq!(ImageFormat::of(b"<svg>"), None);
    }
}
