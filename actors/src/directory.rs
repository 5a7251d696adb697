//! Read-only answers about accounts that the front end needs before it can hand a request to an
//! actor: whose a client is (to authenticate a request, to check a queue's owner, to find the
//! registry of a connection request's package), a user's clients, whose a friendship token
//! is, and an encrypted profile by its id. Only committed records are read; every write goes through the accounts actor or the
//! key-package actors.

use roost_protocol::profile::{EncryptedProfile, ProfileId};
use roost_protocol::{api::ClientInfo, key_packages::FriendshipToken, ClientId, UserName};
use roost_storage::{AccountStore, ClientRecord, KeyPackageStore, ProfileStore, StorageError};

#[derive(Clone)]
pub struct Directory {
    accounts: AccountStore,
    key_packages: KeyPackageStore,
    profiles: ProfileStore,
}

impl Directory {
    pub fn new(
        accounts: AccountStore,
        key_packages: KeyPackageStore,
        profiles: ProfileStore,
    ) -> Self {
        Directory {
            accounts,
            key_packages,
            profiles,
        }
    }

    /// An encrypted profile, by its id (whoever asks: the id is the capability).
    pub fn profile(&self, id: &ProfileId) -> Result<Option<EncryptedProfile>, StorageError> {
        Ok(self.profiles.get(id)?.map(|stored| stored.profile))
    }

    /// A client's record: its credential (and so its user) and when it was added.
    pub fn client(&self, client: &ClientId) -> Result<Option<ClientRecord>, StorageError> {
        self.accounts.client(client)
    }

    /// Whether an admin deactivated `user`: its clients are then refused.
    pub fn is_deactivated(&self, user: &UserName) -> Result<bool, StorageError> {
        Ok(self.accounts.standing(user)?.is_some())
    }

    /// Every client of `user`, in the order they were added; `None` for an unknown user.
    pub fn clients_of(&self, user: &UserName) -> Result<Option<Vec<ClientInfo>>, StorageError> {
        let Some(record) = self.accounts.user(user)? else {
            return Ok(None);
        };
        let mut clients = Vec::with_capacity(record.clients.len());
        for id in &record.clients {
            if let Some(client) = self.accounts.client(id)? {
                clients.push(ClientInfo {
                    credential: client.credential,
                    added_at: client.added_at,
                });
            }
        }
        Ok(Some(clients))
    }

    /// The user a friendship token names.
    pub fn user_of_token(&self, token: &FriendshipToken) -> Result<Option<UserName>, StorageError> {
        self.key_packages.user_of(token)
    }
}
