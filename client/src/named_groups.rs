//! Named groups: [`Client::create_group`], adding a connected user with all of their clients
//! ([`Client::add_to_group`]), removing one ([`Client::remove_from_group`]), listing, and chat
//! in a group.
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
use roost_protocol::{content::check_group_name, ds::CommitRequest, Timestamp, UserName};

use crate::{
    chat::VerifiedMember,
    client::{blocking, Client},
    error::Error,
    groups::MlsSigner,
    state::{GroupAccess, NamedGroup, StoredMessage},
};

fn mls_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Mls(format!("{what}: {e}"))
}

fn is_stale(e: &Error) -> bool {
    e.status() == Some(409) && e.code() == "stale_epoch"
}

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
    /// Creates a named group on the home DS with this user's other clients in it.
    pub async fn create_group(&self, name: &str) -> Result<NamedGroup, Error> {
        check_group_name(name).map_err(Error::BadGroupName)?;
        let _mls = self.mls_lock.lock().await;
        let signer = self.mls_signer()?;
        let siblings = self.claim_own_clients().await?;
        let (mut group, access) = self.create_ds_group(&signer, false).await?;
        let record = NamedGroup {
            group_id: access.group_id.clone(),
            name: name.to_owned(),
            ds: access.ds.clone(),
            keys: access.keys.clone(),
            since: Timestamp::now(),
            removed: false,
        };
        self.save_named_group(&record).await?;
        self.add_clients(&mut group, &signer, &access, Some(name), siblings)
            .await?;
        Ok(record)
    }

    /// Every named group of this client, oldest first.
    pub async fn groups(&self) -> Result<Vec<GroupSummary>, Error> {
        let state = self.state.clone();
        let groups = blocking(move || state.named_groups()).await?;
        groups
            .into_iter()
            .map(|g| {
                let members = if g.removed {
                    0
                } else {
                    self.group_status(&g.group_id)?.map_or(0, |s| s.members)
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

    /// The named group `reference` names: its name, or its id's hex (or a prefix of it of at
    /// least four digits).
    pub fn find_group(&self, reference: &str) -> Result<NamedGroup, Error> {
        let groups = self.state.named_groups()?;
        let by_name: Vec<&NamedGroup> = groups.iter().filter(|g| g.name == reference).collect();
        match by_name.as_slice() {
            [one] => return Ok((*one).clone()),
            [] => {}
            many => {
                return Err(Error::AmbiguousGroup {
                    name: reference.to_owned(),
                    count: many.len(),
                })
            }
        }
        let prefix = reference.to_ascii_lowercase();
        let by_id: Vec<&NamedGroup> = groups
            .iter()
            .filter(|g| prefix.len() >= 4 && hex::encode(&g.group_id).starts_with(&prefix))
            .collect();
        match by_id.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::UnknownGroup(reference.to_owned())),
            many => Err(Error::AmbiguousGroup {
                name: reference.to_owned(),
                count: many.len(),
            }),
        }
    }

    /// A group this client may still act in.
    fn active_group(&self, reference: &str) -> Result<NamedGroup, Error> {
        let group = self.find_group(reference)?;
        if group.removed {
            return Err(Error::RemovedFromGroup(group.name));
        }
        Ok(group)
    }

    /// Adds every client of `user`, a user this one is connected with, to a named group.
    /// Answers how many clients were added.
    pub async fn add_to_group(&self, reference: &str, user: &UserName) -> Result<usize, Error> {
        let _mls = self.mls_lock.lock().await;
        self.sync_locked(Duration::ZERO).await?;
        let record = self.active_group(reference)?;
        let (claimed, owner) = if user == self.user() {
            (self.claim_own_clients().await?, user)
        } else {
            let contact = self.contact_with(user)?;
            let token = contact
                .peer_token
                .ok_or_else(|| Error::NoFriendshipToken(user.clone()))?;
            let entries = self
                .as_server_for(user.domain())?
                .claim_key_packages(&token)
                .await?
                .entries;
            (self.check_entries(entries, user).await?, user)
        };
        if claimed.is_empty() {
            return Err(Error::NoKeyPackages(owner.clone()));
        }
        let access = record.access();
        let signer = self.mls_signer()?;
        self.change_group(&access, async |mut group, members| {
            let present = members
                .iter()
                .filter_map(|m| m.credential.as_ref())
                .any(|c| claimed.iter().any(|(_, e)| e.client_id() == c.client_id()));
            if present {
                return Err(Error::AlreadyMember(user.clone()));
            }
            let name = Some(record.name.as_str());
            self.add_clients(&mut group, &signer, &access, name, claimed.clone())
                .await
        })
        .await
    }

    /// Removes every client of `user` from a named group. Answers how many were removed.
    pub async fn remove_from_group(
        &self,
        reference: &str,
        user: &UserName,
    ) -> Result<usize, Error> {
        if user == self.user() {
            return Err(Error::RemoveSelf);
        }
        let _mls = self.mls_lock.lock().await;
        self.sync_locked(Duration::ZERO).await?;
        let record = self.active_group(reference)?;
        let access = record.access();
        let signer = self.mls_signer()?;
        self.change_group(&access, async |mut group, members| {
            let leaves: Vec<LeafNodeIndex> = members
                .iter()
                .filter(|m| m.credential.as_ref().is_some_and(|c| c.user() == user))
                .map(|m| LeafNodeIndex::new(m.leaf))
                .collect();
            if leaves.is_empty() {
                return Err(Error::NotAMember(user.clone()));
            }
            self.commit_removal(&mut group, &signer, &access, &leaves)
                .await
                .map(|()| leaves.len())
        })
        .await
    }

    /// Runs `change` on the group as this client holds it, with its verified members; a 409
    /// `stale_epoch` from the DS makes it catch up and run once more.
    async fn change_group<T>(
        &self,
        access: &GroupAccess,
        mut change: impl AsyncFnMut(MlsGroup, Vec<VerifiedMember>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut retried = false;
        loop {
            let group = self.load_group(access)?;
            let members = self.verified_members(&group, access).await?;
            match change(group, members).await {
                Err(e) if !retried && is_stale(&e) => {
                    retried = true;
                    self.catch_up().await?;
                }
                outcome => return outcome,
            }
        }
    }

    async fn commit_removal(
        &self,
        group: &mut MlsGroup,
        signer: &MlsSigner,
        access: &GroupAccess,
        leaves: &[LeafNodeIndex],
    ) -> Result<(), Error> {
        let staged = (|| {
            let (commit, _, _) = group
                .remove_members(&self.mls, &signer.key, leaves)
                .map_err(|e| mls_error("cannot remove the members", e))?;
            group
                .merge_pending_commit(&self.mls)
                .map_err(|e| mls_error("cannot merge the commit", e))?;
            Ok::<_, Error>(CommitRequest {
                ear_key: access.keys.group_state_ear_key.clone(),
                commit: commit
                    .to_bytes()
                    .map_err(|e| mls_error("cannot encode the commit", e))?,
                group_info: self.group_info_bytes(group, signer)?,
                added: Vec::new(),
                welcome: None,
            })
        })();
        let committed = match staged {
            Ok(request) => match self.as_server_for(&access.ds) {
                Ok(ds) => ds
                    .commit(&access.group_id, &request)
                    .await
                    .map_err(Error::from),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match committed {
            Ok(_) => Ok(self.mls.commit()?),
            Err(e) => {
                self.mls.discard();
                Err(e)
            }
        }
    }

    /// The users in a named group, as the DS's verified credentials say (each once).
    pub async fn group_members(&self, reference: &str) -> Result<Vec<UserName>, Error> {
        let _mls = self.mls_lock.lock().await;
        let record = self.active_group(reference)?;
        let access = record.access();
        let group = self.load_group(&access)?;
        let mut users: Vec<UserName> = self
            .verified_members(&group, &access)
            .await?
            .into_iter()
            .filter_map(|m| Some(m.credential?.user().clone()))
            .collect();
        users.sort();
        users.dedup();
        Ok(users)
    }

    /// Sends `text` to a named group and keeps it in this client's log.
    pub async fn send_to_group(&self, reference: &str, text: &str) -> Result<StoredMessage, Error> {
        let _mls = self.mls_lock.lock().await;
        let record = self.active_group(reference)?;
        self.send_text_locked(&record.access(), text).await
    }

    /// The messages of a named group, in order (as far as this client has synced).
    pub async fn group_messages(&self, reference: &str) -> Result<Vec<StoredMessage>, Error> {
        let record = self.find_group(reference)?;
        self.group_log(&record.group_id).await
    }

    /// Marks a named group as one this client was removed from.
    pub(crate) async fn mark_removed(&self, group_id: &[u8]) -> Result<(), Error> {
        let Some(mut group) = self.state.named_group(group_id)? else {
            return Ok(());
        };
        group.removed = true;
        self.save_named_group(&group).await
    }

    async fn save_named_group(&self, group: &NamedGroup) -> Result<(), Error> {
        let (state, group) = (self.state.clone(), group.clone());
        blocking(move || state.save_named_group(&group)).await
    }

    fn load_group(&self, access: &GroupAccess) -> Result<MlsGroup, Error> {
        MlsGroup::load(self.mls.storage(), &GroupId::from_slice(&access.group_id))?
            .ok_or_else(|| Error::Mls("this client is not in the group".into()))
    }
}
