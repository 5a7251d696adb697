//! Profiles: what this user says of itself (display name, avatar, about line), beyond its user
//! name. Setting one encrypts it under a fresh key, stores the ciphertext on this user's own
//! homeserver under a fresh unguessable id, and only then deletes the one before (so a contact
//! holding the old reference finds either it or the new one's announcement, never nothing).
//!
//! The reference (server, id, key) travels inside the sealed connection request, so the
//! responder *can* see who asks — but this client never fetches a requester's profile by itself:
//! only [`Profiles::of_request`], when its user asks. What it shows is self-declared.
//!
//! Contacts are no strangers: at each sync a client shares its user's profile reference in
//! every connection where the peer is surely a member (as friendship tokens are, see
//! [`crate::friendship`]) and has not got the current one, and a client that receives a
//! contact's reference fetches and keeps the profile ([`Profiles::of_contact`]).

use roost_protocol::{
    connection::EarKey,
    content::Content,
    profile::{Profile, ProfileId, ProfileRef},
    UserName,
};

use crate::{
    client::Client,
    device::Device,
    error::Error,
    store::{Contact, OwnProfile, PeerProfile},
};

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

    /// Sets this user's profile to its current one (an empty one if there is none yet) with
    /// `change` made to it, like [`Profiles::set`]; answers the profile set.
    pub async fn update(self, change: impl FnOnce(&mut Profile)) -> Result<Profile, Error> {
        let mut profile = self.own()?.map(|own| own.profile).unwrap_or_default();
        change(&mut profile);
        self.set(profile.clone()).await?;
        Ok(profile)
    }

    /// This user's profile as this client last set it.
    pub fn own(self) -> Result<Option<OwnProfile>, Error> {
        Ok(self.client.device().store().own_profile()?)
    }

    /// Fetches and opens the profile `reference` points to (on whichever server holds it;
    /// the fetch carries nothing of who asks).
    pub async fn fetch(self, reference: &ProfileRef) -> Result<Profile, Error> {
        fetch(self.client.device(), reference).await
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

    /// A contact's profile as it shared it: fetched again if the last fetch failed.
    pub async fn of_contact(self, user: &UserName) -> Result<Option<Profile>, Error> {
        let device = self.client.device();
        let Some(peer) = device.store().peer_profile(user)? else {
            return Ok(None);
        };
        match peer.profile {
            Some(profile) => Ok(Some(profile)),
            None => Ok(Some(fetch_and_keep(device, user, peer.reference).await?)),
        }
    }

    /// The profile `user` shared as this client holds it (nothing is fetched: `None` also
    /// while a fetch is due).
    pub fn shared(self, user: &UserName) -> Result<Option<Profile>, Error> {
        let shared = self.client.device().store().peer_profile(user)?;
        Ok(shared.and_then(|peer| peer.profile))
    }

    /// What to call `user`: see [`display_name`].
    pub fn display_name(self, user: &UserName) -> Result<String, Error> {
        Ok(display_name(user, self.shared(user)?.as_ref()))
    }
}

/// What to call `user`, who shared `profile`: its display name if non-empty, else its user name.
pub fn display_name(user: &UserName, profile: Option<&Profile>) -> String {
    profile
        .map(|profile| profile.display_name.clone())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| user.to_string())
}

/// Fetches and opens the profile `reference` points to.
async fn fetch(device: &Device, reference: &ProfileRef) -> Result<Profile, Error> {
    let server = device.servers().of(&reference.domain)?;
    let sealed = server.fetch_profile(&reference.id).await?;
    Ok(sealed.open(&reference.id, &reference.key)?)
}

async fn fetch_and_keep(
    device: &Device,
    user: &UserName,
    reference: ProfileRef,
) -> Result<Profile, Error> {
    let profile = fetch(device, &reference).await?;
    let peer = PeerProfile {
        reference,
        profile: Some(profile.clone()),
    };
    device.store().save_peer_profile(user, &peer)?;
    Ok(profile)
}

/// Takes in a profile reference `from` shared in the connection `group_id`: its own user's
/// (another client of this user shared it there) marks it shared; a contact's is kept, and its
/// profile fetched now (kept without it if that fails, and fetched when shown). A reference to
/// a profile on another server than its user's is ignored: a profile lives on its user's own.
pub(crate) async fn note_shared(
    device: &Device,
    group_id: &[u8],
    from: &UserName,
    reference: ProfileRef,
) -> Result<(), Error> {
    if from == device.user() {
        device
            .store()
            .mark_profile_shared(group_id, &reference.id)?;
        return Ok(());
    }
    if &reference.domain != from.domain() {
        return Ok(());
    }
    let known = device.store().peer_profile(from)?;
    if known
        .as_ref()
        .is_some_and(|k| k.reference == reference && k.profile.is_some())
    {
        return Ok(());
    }
    if fetch_and_keep(device, from, reference.clone())
        .await
        .is_err()
    {
        let peer = PeerProfile {
            reference,
            profile: None,
        };
        device.store().save_peer_profile(from, &peer)?;
    }
    Ok(())
}

/// What sharing this user's profile takes now: the message, and the connections where the
/// peer is surely a member and has not got the current one (none without a profile).
pub(crate) fn due(device: &Device) -> Result<Option<(Content, ProfileId, Vec<Contact>)>, Error> {
    let Some(own) = device.store().own_profile()? else {
        return Ok(None);
    };
    let mut due = Vec::new();
    for contact in device.store().contacts()? {
        let given = device.store().profile_shared(&contact.group_id)?;
        if contact.peer_surely_in() && given != Some(own.reference.id) {
            due.push(contact);
        }
    }
    let id = own.reference.id;
    Ok(Some((Content::Profile(own.reference), id, due)))
}

/// Records that the connection `group_id` got this user's profile `id`.
pub(crate) fn mark_shared(device: &Device, group_id: &[u8], id: &ProfileId) -> Result<(), Error> {
    Ok(device.store().mark_profile_shared(group_id, id)?)
}
