//! Named groups: creating one ([`Groups::create`]), adding a connected user with all of their
//! clients ([`Groups::add`]), removing one ([`Groups::remove`]), listing, and chat in a group.
//!
//! A named group lives on its creator's DS, like a connection group, but takes no external
//! joiner: members come in only through commits with a Welcome. To add a user, a client needs
//! that user's friendship token, which only a connection brings (see [`crate::friendship`]):
//! it claims one key package per client of the user from the user's QS, checks each (signature,
//! credential chain, owner, the KeyPackage), and adds them all in one commit. The group's name
//! travels encrypted in the Welcome bundle. Every member may add and remove; a commit that
//! meets a newer epoch at the DS (409 `stale_epoch`) is retried once after catching up.
//!
//! A group is named on the command line by its name, or by its id (or a prefix of the id's
//! hex of at least four digits) when names clash.

use std::time::Duration;

use openmls::prelude::*;
use roost_protocol::{content::check_group_name, Timestamp, UserName};

use crate::{
    chat::{group_log, send_text},
    client::Client,
    device::Device,
    error::Error,
    inbox,
    mls::{
        is_stale,
        members::{verified_members, VerifiedMember},
        GroupStatus, MlsSession,
    },
    store::{GroupAccess, NamedGroup, StoredMessage},
};

/// A named group as `roost-client groups` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    pub group_id: Vec<u8>,
    pub name: String,
    /// Members (clients) in this client's view; 0 once removed.
    pub members: usize,
    pub removed: bool,
    pub since: Timestamp,
}

impl Client {
    /// The named groups of this client.
    pub fn groups(&self) -> Groups<'_> {
        Groups { client: self }
    }
}

/// A handle: cheap to copy, borrowing the client.
#[derive(Clone, Copy)]
pub struct Groups<'a> {
    client: &'a Client,
}

impl Groups<'_> {
    /// Creates a named group on the home DS with this user's other clients in it.
    pub async fn create(self, name: &str) -> Result<NamedGroup, Error> {
        check_group_name(name).map_err(Error::BadGroupName)?;
        let device = self.client.device();
        let mls = self.client.mls().lock().await;
        let signer = mls.signer(device)?;
        let siblings = mls.claim_own_clients(device, None).await?;
        let (mut group, access) = mls.create_group(device, &signer, false).await?;
        let record = NamedGroup {
            group_id: access.group_id.clone(),
            name: name.to_owned(),
            ds: access.ds.clone(),
            keys: access.keys.clone(),
            since: Timestamp::now(),
            removed: false,
        };
        let saved = record.clone();
        device
            .store()
            .run(move |s| s.save_named_group(&saved))
            .await?;
        mls.add_clients(device, &mut group, &signer, &access, Some(name), siblings)
            .await?;
        Ok(record)
    }

    /// Every named group of this client, oldest first.
    pub async fn list(self) -> Result<Vec<GroupSummary>, Error> {
        let groups = self
            .client
            .device()
            .store()
            .run(|s| s.named_groups())
            .await?;
        groups
            .into_iter()
            .map(|g| {
                let members = if g.removed {
                    0
                } else {
                    self.status(&g.group_id)?.map_or(0, |s| s.members)
                };
                Ok(GroupSummary {
                    group_id: g.group_id,
                    name: g.name,
                    members,
                    removed: g.removed,
                    since: g.since,
                })
            })
            .collect()
    }

    /// The epoch and size of a group this client is in (a named group or a connection).
    pub fn status(self, group_id: &[u8]) -> Result<Option<GroupStatus>, Error> {
        self.client.mls().group_status(group_id)
    }

    /// The named group `reference` names: its name, or its id's hex (or a prefix of it of at
    /// least four digits).
    pub fn find(self, reference: &str) -> Result<NamedGroup, Error> {
        let groups = self.client.device().store().named_groups()?;
        let by_name: Vec<&NamedGroup> = groups.iter().filter(|g| g.name == reference).collect();
        let prefix = reference.to_ascii_lowercase();
        let by_id = || -> Vec<&NamedGroup> {
            groups
                .iter()
                .filter(|g| prefix.len() >= 4 && hex::encode(&g.group_id).starts_with(&prefix))
                .collect()
        };
        let found = if by_name.is_empty() { by_id() } else { by_name };
        match found.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::UnknownGroup(reference.to_owned())),
            many => Err(Error::AmbiguousGroup {
                name: reference.to_owned(),
                count: many.len(),
            }),
        }
    }

    /// A group this client may still act in.
    fn active(self, reference: &str) -> Result<NamedGroup, Error> {
        let group = self.find(reference)?;
        if group.removed {
            return Err(Error::RemovedFromGroup(group.name));
        }
        Ok(group)
    }

    /// Adds every client of `user`, a user this one is connected with, to a named group.
    /// Answers how many clients were added.
    pub async fn add(self, reference: &str, user: &UserName) -> Result<usize, Error> {
        let (client, device) = (self.client, self.client.device());
        let mls = client.mls().lock().await;
        inbox::sync(client, &mls, Duration::ZERO).await?;
        let record = self.active(reference)?;
        let claimed = if user == client.user() {
            mls.claim_own_clients(device, None).await?
        } else {
            let contact = client.contacts().with(user)?;
            let token = contact
                .peer_token
                .ok_or_else(|| Error::NoFriendshipToken(user.clone()))?;
            let entries = device
                .server_of(user.domain())?
                .claim_key_packages(&token)
                .await?
                .entries;
            mls.check_entries(device, entries, user).await?
        };
        if claimed.is_empty() {
            return Err(Error::NoKeyPackages(user.clone()));
        }
        let access = record.access();
        let signer = mls.signer(device)?;
        self.change(&mls, &access, async |mut group, members, access| {
            let present = members
                .iter()
                .filter_map(|m| m.credential.as_ref())
                .any(|c| claimed.iter().any(|(_, e)| e.client_id() == c.client_id()));
            if present {
                return Err(Error::AlreadyMember(user.clone()));
            }
            let name = Some(record.name.as_str());
            mls.add_clients(device, &mut group, &signer, access, name, claimed.clone())
                .await
        })
        .await
    }

    /// Removes every client of `user` from a named group. Answers how many were removed.
    pub async fn remove(self, reference: &str, user: &UserName) -> Result<usize, Error> {
        let (client, device) = (self.client, self.client.device());
        if user == client.user() {
            return Err(Error::RemoveSelf);
        }
        let mls = client.mls().lock().await;
        inbox::sync(client, &mls, Duration::ZERO).await?;
        let access = self.active(reference)?.access();
        let signer = mls.signer(device)?;
        self.change(&mls, &access, async |mut group, members, access| {
            let leaves: Vec<LeafNodeIndex> = members
                .iter()
                .filter(|m| m.credential.as_ref().is_some_and(|c| c.user() == user))
                .map(|m| LeafNodeIndex::new(m.leaf))
                .collect();
            if leaves.is_empty() {
                return Err(Error::NotAMember(user.clone()));
            }
            mls.remove_members(device, &mut group, &signer, access, &leaves)
                .await
                .map(|()| leaves.len())
        })
        .await
    }

    /// Leaves a named group with all of this user's clients: removes the others at once (one
    /// commit) and proposes its own removal, which the next member to sync commits; it sends
    /// nothing into the group from now on, and proposes again should a commit leave it in.
    /// Answers how many of the user's clients leave.
    pub async fn leave(self, reference: &str) -> Result<usize, Error> {
        let (client, device) = (self.client, self.client.device());
        let mls = client.mls().lock().await;
        inbox::sync(client, &mls, Duration::ZERO).await?;
        let access = self.active(reference)?.access();
        let signer = mls.signer(device)?;
        let leaving = self
            .change(&mls, &access, async |mut group, members, access| {
                let own = group.own_leaf_index();
                let siblings: Vec<LeafNodeIndex> = members
                    .iter()
                    .filter(|m| {
                        m.credential
                            .as_ref()
                            .is_some_and(|c| c.user() == client.user())
                    })
                    .map(|m| LeafNodeIndex::new(m.leaf))
                    .filter(|leaf| *leaf != own)
                    .collect();
                if !siblings.is_empty() {
                    mls.remove_members(device, &mut group, &signer, access, &siblings)
                        .await?;
                }
                // The removal brought the group new keys.
                let access = device.store().current_access(access)?;
                mls.propose_leaving(device, &access).await?;
                Ok(siblings.len() + 1)
            })
            .await?;
        inbox::mark_removed(device, &access.group_id).await?;
        Ok(leaving)
    }

    /// Runs `change` on the group as this client holds it, with its verified members and its
    /// current keys; a DS ahead of this client ([`is_stale`]) makes it catch up and run once
    /// more.
    async fn change<T>(
        self,
        mls: &MlsSession<'_>,
        access: &GroupAccess,
        mut change: impl AsyncFnMut(MlsGroup, Vec<VerifiedMember>, &GroupAccess) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let device = self.client.device();
        let mut retried = false;
        loop {
            // Read anew each time: catching up may have brought new keys.
            let access = device.store().current_access(access)?;
            let group = mls.group(&access.group_id)?;
            let attempt = async {
                let members = verified_members(device, &group, &access).await?;
                change(group, members, &access).await
            };
            match attempt.await {
                Err(e) if !retried && is_stale(&e) => {
                    retried = true;
                    inbox::catch_up(self.client, mls).await?;
                }
                outcome => return ended_if_expired(device, &access.group_id, outcome).await,
            }
        }
    }

    /// The users in a named group, as the DS's verified credentials say (each once).
    pub async fn members(self, reference: &str) -> Result<Vec<UserName>, Error> {
        let mls = self.client.mls().lock().await;
        let access = self.active(reference)?.access();
        let group = mls.group(&access.group_id)?;
        let mut users: Vec<UserName> = verified_members(self.client.device(), &group, &access)
            .await?
            .into_iter()
            .filter_map(|m| Some(m.credential?.user().clone()))
            .collect();
        users.sort();
        users.dedup();
        Ok(users)
    }

    /// Sends `text` to a named group and keeps it in this client's log.
    pub async fn send(self, reference: &str, text: &str) -> Result<StoredMessage, Error> {
        let mls = self.client.mls().lock().await;
        let record = self.active(reference)?;
        let sent = send_text(self.client, &mls, &record.access(), text).await;
        ended_if_expired(self.client.device(), &record.group_id, sent).await
    }

    /// The messages of a named group, in order (as far as this client has synced).
    pub async fn messages(self, reference: &str) -> Result<Vec<StoredMessage>, Error> {
        let record = self.find(reference)?;
        group_log(self.client, &record.group_id).await
    }
}

/// A group the DS deleted for being idle (410 `group_expired`) is over for this client too: it
/// is marked as one it can no longer act in, as if removed.
async fn ended_if_expired<T>(
    device: &Device,
    group_id: &[u8],
    outcome: Result<T, Error>,
) -> Result<T, Error> {
    if let Err(e) = &outcome {
        if e.code() == "group_expired" {
            inbox::mark_removed(device, group_id).await?;
        }
    }
    outcome
}
