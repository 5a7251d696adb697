//! The homeserver's signing keys in force, shared by all who sign or serve them: the AS
//! intermediate key that signs client credentials (the accounts actor), the AS credentials the
//! AS serves (`/as/v1/credentials`), and the key that signs server-to-server requests (relays)
//! and is served to peers. An admin rotates either (`roost admin keys rotate`); only this owner
//! changes them, store first, then what is in memory.
//!
//! After a rotation the old intermediate is still served, retired, for as long as a client
//! credential it signed can be valid (`credentials.client_lifetime_secs` after the rotation), so
//! every client credential verifies until it expires. A peer that cached the old federation key
//! fetches the new one at the first signature it cannot verify (`PeerKeys`); a relay signed with
//! the old key and refused is signed again when it is retried.

use std::sync::{Arc, RwLock};

use roost_protocol::{
    credentials::Validity, AsCredentials, AsIntermediateCredential, SigningKey, Timestamp,
};
use roost_storage::{Durability, RetiredIntermediate, ServerKeys, ServerKeysStore, StorageError};

/// How long the AS credential and each intermediate credential are valid: ten years, the first
/// ones made at the first start and every one a rotation makes.
pub const AS_CREDENTIAL_LIFETIME_SECS: u64 = 10 * 365 * 24 * 3600;

#[derive(Clone)]
pub struct KeyRing {
    in_force: Arc<RwLock<InForce>>,
    store: ServerKeysStore,
    durability: Durability,
    /// How long a client credential is valid: how long a retired intermediate stays served.
    client_lifetime_secs: u64,
}

struct InForce {
    as_keys: Arc<ServerKeys>,
    retired: Vec<RetiredIntermediate>,
    federation: SigningKey,
}

/// What a rotation replaced and put in force, by fingerprint.
#[derive(Debug, Clone)]
pub struct Rotated {
    pub old: String,
    pub new: String,
}

impl KeyRing {
    pub fn load(
        as_keys: ServerKeys,
        store: ServerKeysStore,
        durability: Durability,
        client_lifetime_secs: u64,
    ) -> Result<KeyRing, StorageError> {
        let in_force = InForce {
            as_keys: Arc::new(as_keys),
            retired: store.retired_intermediates()?,
            federation: store.federation_key()?,
        };
        Ok(KeyRing {
            in_force: Arc::new(RwLock::new(in_force)),
            store,
            durability,
            client_lifetime_secs,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, InForce> {
        self.in_force.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, InForce> {
        self.in_force.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The AS keys in force (the intermediate key signs new client credentials).
    pub fn as_keys(&self) -> Arc<ServerKeys> {
        self.read().as_keys.clone()
    }

    /// What the AS serves: its credential, the intermediate in force, and the retired ones that
    /// may still have signed a valid client credential.
    pub fn as_credentials(&self) -> AsCredentials {
        let in_force = self.read();
        let now = Timestamp::now();
        let mut intermediates = vec![in_force.as_keys.intermediate.clone()];
        intermediates.extend(
            in_force
                .retired
                .iter()
                .filter(|retired| self.still_needed(retired, now))
                .map(|retired| retired.credential.clone()),
        );
        AsCredentials {
            as_credentials: vec![in_force.as_keys.as_credential.clone()],
            intermediates,
        }
    }

    /// The key server-to-server requests are signed with.
    pub fn federation_key(&self) -> SigningKey {
        self.read().federation.clone()
    }

    fn still_needed(&self, retired: &RetiredIntermediate, now: Timestamp) -> bool {
        now < retired.retired_at.plus_secs(self.client_lifetime_secs)
    }

    /// A new intermediate key and credential (signed by the AS key) signs client credentials
    /// from now on; the old one is retired.
    pub async fn rotate_intermediate(&self) -> Result<Rotated, StorageError> {
        let current = self.as_keys();
        let key = SigningKey::generate();
        let domain = current.as_credential.body.domain.clone();
        let fresh = ServerKeys {
            intermediate: AsIntermediateCredential::issue(
                domain,
                &key,
                Validity::starting_now(AS_CREDENTIAL_LIFETIME_SECS),
                &current.as_key,
            ),
            intermediate_key: key,
            ..(*current).clone()
        };
        let now = Timestamp::now();
        let retired = self
            .store
            .rotate_intermediate(&fresh, now, |r| self.still_needed(r, now))?;
        self.durability.persist().await?;
        let fingerprint = |keys: &ServerKeys| keys.intermediate.body.verifying_key.fingerprint();
        let rotated = Rotated {
            old: fingerprint(&current).to_string(),
            new: fingerprint(&fresh).to_string(),
        };
        let mut in_force = self.write();
        in_force.as_keys = Arc::new(fresh);
        in_force.retired = retired;
        Ok(rotated)
    }

    /// A new key signs this server's requests to other homeservers from now on.
    pub async fn rotate_federation(&self) -> Result<Rotated, StorageError> {
        let old = self.federation_key();
        let fresh = SigningKey::generate();
        self.store.replace_federation_key(&fresh)?;
        self.durability.persist().await?;
        let rotated = Rotated {
            old: old.verifying_key().fingerprint().to_string(),
            new: fresh.verifying_key().fingerprint().to_string(),
        };
        self.write().federation = fresh;
        Ok(rotated)
    }
}
