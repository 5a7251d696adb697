//! Profiles: what this user says of itself (display name, avatar, about line), beyond its user
//! name. Setting one encrypts it under a fresh key, stores the ciphertext on this user's own
//! homeserver under a fresh unguessable id, and only then deletes the one before (so a contact
//! holding the old reference finds either it or the new one's announcement, never nothing).
//!
//! The reference (server, id, key) travels inside the sealed connection request, so the
//! responder *can* see who asks — but this client never fetches a requester's profile by itself:
//! only [`Profiles::of_request`], when its user asks. What it shows is self-declared.

use roost_protocol::{
    connection::EarKey,
    profile::{Profile, ProfileId, ProfileRef},
};

use crate::{client::Client, error::Error, store::OwnProfile};

impl Client {
    /// This user's profile, and others' when asked for.
    pub fn profiles(&self) -> Profiles<'_> {
        Profiles { client: self }
    }
}

/// A handle: cheap to copy, borrowing the client.
#[derive(Clone, Copy)]
pub struct Profiles<'a> {
    client: &'a Client,
}

impl Profiles<'_> {
    /// Sets this user's profile: checks it, stores it sealed under a fresh id and key on the
    /// home server, then deletes the one before. Answers the new reference.
    pub async fn set(self, profile: Profile) -> Result<ProfileRef, Error> {
        profile.check()?;
        let device = self.client.device();
        let reference = ProfileRef {
            domain: device.user().domain().clone(),
            id: ProfileId::random(),
            key: EarKey::random(),
        };
        let sealed = profile.seal(&reference.id, &reference.key)?;
        let home = device.home();
        home.store_profile(device.signer(), &reference.id, &sealed)
            .await?;
        let before = device.store().own_profile()?;
        let own = OwnProfile {
            profile,
            reference: reference.clone(),
        };
        device.store().save_own_profile(&own)?;
        if let Some(before) = before {
            // Best effort: the server bounds how many a user keeps, and the next set tries
            // again through the same path.
            let _ = home
                .delete_profile(device.signer(), &before.reference.id)
                .await;
        }
        Ok(reference)
    }

    /// This user's profile as this client last set it.
    pub fn own(self) -> Result<Option<OwnProfile>, Error> {
        Ok(self.client.device().store().own_profile()?)
    }

    /// Fetches and opens the profile `reference` points to (on whichever server holds it;
    /// the fetch carries nothing of who asks).
    pub async fn fetch(self, reference: &ProfileRef) -> Result<Profile, Error> {
        let server = self.client.device().servers().of(&reference.domain)?;
        let sealed = server.fetch_profile(&reference.id).await?;
        Ok(sealed.open(&reference.id, &reference.key)?)
    }

    /// The profile of whoever sent the pending connection request `id`, fetched now because
    /// this client's user asked for it.
    pub async fn of_request(self, id: &str) -> Result<Profile, Error> {
        let request = self
            .client
            .device()
            .store()
            .pending_request(id)?
            .ok_or_else(|| Error::UnknownRequest(id.to_owned()))?;
        let reference = request
            .package
            .body
            .initiator_profile
            .ok_or_else(|| Error::NoProfile(id.to_owned()))?;
        self.fetch(&reference).await
    }
}
