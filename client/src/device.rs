//! What every part of the client shares: who this client is ([`Identity`]), its local store
//! ([`State`]) and where the homeservers are ([`Homeservers`]).
//!
//! Owns nothing that changes after the client is opened; the MLS engine, the queue readers and
//! the features all work through a `&Device`. Must not touch: MLS state (see [`crate::mls`]).

use std::{path::Path, sync::Arc};

use roost_protocol::{
    credentials::{AsCredentials, ClientCredential},
    ds::SealedQueueRef,
    ClientId, Domain, UserName,
};

use crate::{
    error::Error,
    store::{Identity, State},
    tokens::Wallet,
    transport::{Homeservers, Server, Signer},
};

#[derive(Debug)]
pub struct Device {
    identity: Identity,
    store: State,
    servers: Homeservers,
    wallet: Arc<Wallet>,
}

impl Device {
    pub(crate) fn new(identity: Identity, store: State, mut servers: Homeservers) -> Self {
        let wallet = Wallet::new(
            store.clone(),
            identity.user.domain().clone(),
            identity.client_id,
            identity.signing_key.clone(),
        );
        servers.set_payer(wallet.clone());
        Device {
            identity,
            store,
            servers,
            wallet,
        }
    }

    pub(crate) fn servers_mut(&mut self) -> &mut Homeservers {
        &mut self.servers
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn store(&self) -> &State {
        &self.store
    }

    /// The Privacy Pass tokens this device pays with.
    pub(crate) fn wallet(&self) -> &Wallet {
        &self.wallet
    }

    pub fn servers(&self) -> &Homeservers {
        &self.servers
    }

    /// The home server.
    pub fn home(&self) -> &Server {
        self.servers.home()
    }

    pub fn user(&self) -> &UserName {
        &self.identity.user
    }

    pub fn client_id(&self) -> ClientId {
        self.identity.client_id
    }

    pub fn credential(&self) -> &ClientCredential {
        &self.identity.credential
    }

    pub fn state_dir(&self) -> &Path {
        self.store.dir()
    }

    /// Signs requests as this client.
    pub fn signer(&self) -> Signer<'_> {
        Signer {
            client_id: self.identity.client_id,
            key: &self.identity.signing_key,
        }
    }

    /// The homeserver of `domain` (see [`Homeservers`]).
    pub fn server_of(&self, domain: &Domain) -> Result<Server, Error> {
        Ok(self.servers.of(domain)?)
    }

    /// Fetches the AS credentials of `domain`, refusing any of another domain.
    pub async fn as_credentials_of(&self, domain: &Domain) -> Result<AsCredentials, Error> {
        Ok(self.servers.as_credentials_of(domain).await?)
    }

    /// Checks a client credential's chain against the AS credentials of its user's domain.
    pub async fn verify_credential(&self, credential: &ClientCredential) -> Result<(), Error> {
        Ok(self.servers.verify_credential(credential).await?)
    }

    /// This client's own queue, sealed to its home QS's queue-reference key.
    pub async fn own_queue_ref(&self) -> Result<SealedQueueRef, Error> {
        let qs_key = self.home().queue_ref_key().await?;
        SealedQueueRef::seal(self.user().domain().clone(), &qs_key, &self.client_id())
            .map_err(Error::Seal)
    }
}
