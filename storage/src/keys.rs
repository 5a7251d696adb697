//! The homeserver's own long-term keys: the AS credential and the AS intermediate credential
//! with their signing keys, the QS's queue-reference key and the server-to-server signing key.
//! Created once, reused on every later start; the intermediate and the federation key can be
//! rotated (`roost admin keys rotate`), and a rotated intermediate is kept, retired, for as long
//! as credentials it signed may be valid.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use roost_protocol::{
    AsCredential, AsIntermediateCredential, HpkeSecretKey, SigningKey, Timestamp,
};

use crate::{
    table::{decode, encode},
    Result,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerKeys {
    pub as_key: SigningKey,
    pub as_credential: AsCredential,
    pub intermediate_key: SigningKey,
    pub intermediate: AsIntermediateCredential,
}

/// An AS intermediate credential a rotation replaced: still served, so that the client
/// credentials it signed verify until they expire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetiredIntermediate {
    pub credential: AsIntermediateCredential,
    pub retired_at: Timestamp,
}

#[derive(Clone)]
pub struct ServerKeysStore {
    tree: crate::gate::Tree,
}

const AS_KEYS: &[u8] = b"current";
const QUEUE_REF_KEY: &[u8] = b"qs_queue_ref";
const FEDERATION_KEY: &[u8] = b"federation";
const RETIRED_INTERMEDIATES: &[u8] = b"retired_intermediates";

impl ServerKeysStore {
    pub(crate) fn open(db: &crate::gate::Db) -> Result<Self> {
        Ok(ServerKeysStore {
            tree: db.open_tree("as_keys")?,
        })
    }

    pub(crate) fn check(&self, report: &mut crate::CheckReport) {
        match self.current() {
            Ok(_) => report.readable("as_keys", &self.tree.sled()),
            Err(e) => report.damaged("as_keys", format!("the AS credentials: {e}")),
        }
    }

    pub fn current(&self) -> Result<Option<ServerKeys>> {
        self.tree.get(AS_KEYS)?.map(|b| decode(&b)).transpose()
    }

    /// Stores `keys` unless keys exist already; returns the keys in force either way.
    pub fn get_or_insert(&self, keys: ServerKeys) -> Result<ServerKeys> {
        self.get_or_insert_with(AS_KEYS, || keys)
    }

    /// The key the QS opens sealed queue references with, made on first use.
    pub fn queue_ref_key(&self) -> Result<HpkeSecretKey> {
        self.get_or_insert_with(QUEUE_REF_KEY, || HpkeSecretKey::generate().0)
    }

    /// The key this homeserver signs its server-to-server requests with, made on first use.
    pub fn federation_key(&self) -> Result<SigningKey> {
        self.get_or_insert_with(FEDERATION_KEY, SigningKey::generate)
    }

    /// The intermediates rotations replaced, oldest first.
    pub fn retired_intermediates(&self) -> Result<Vec<RetiredIntermediate>> {
        match self.tree.get(RETIRED_INTERMEDIATES)? {
            Some(bytes) => decode(&bytes),
            None => Ok(Vec::new()),
        }
    }

    /// Makes `keys` the keys in force, retiring the intermediate they replace, and forgetting
    /// retired ones that `still_needed` rejects — all in one write.
    pub fn rotate_intermediate(
        &self,
        keys: &ServerKeys,
        now: Timestamp,
        still_needed: impl Fn(&RetiredIntermediate) -> bool,
    ) -> Result<Vec<RetiredIntermediate>> {
        let previous = self
            .current()?
            .ok_or_else(|| crate::StorageError::Corrupt("no AS keys to rotate".into()))?;
        let mut retired = self.retired_intermediates()?;
        retired.push(RetiredIntermediate {
            credential: previous.intermediate,
            retired_at: now,
        });
        retired.retain(still_needed);
        let mut batch = sled::Batch::default();
        batch.insert(AS_KEYS, encode(keys));
        batch.insert(RETIRED_INTERMEDIATES, encode(&retired));
        self.tree.apply_batch(batch)?;
        Ok(retired)
    }

    /// Makes `key` the key this homeserver signs its server-to-server requests with.
    pub fn replace_federation_key(&self, key: &SigningKey) -> Result<()> {
        self.tree.insert(FEDERATION_KEY, encode(key))?;
        Ok(())
    }

    fn get_or_insert_with<T: Serialize + DeserializeOwned>(
        &self,
        name: &[u8],
        make: impl FnOnce() -> T,
    ) -> Result<T> {
        if let Some(existing) = self.tree.get(name)? {
            return decode(&existing);
        }
        let fresh = make();
        match self
            .tree
            .compare_and_swap(name, None as Option<&[u8]>, Some(encode(&fresh)))?
        {
            Ok(()) => Ok(fresh),
            // Someone else stored one first: theirs is in force.
            Err(lost) => match lost.current {
                Some(existing) => decode(&existing),
                None => Ok(fresh),
            },
        }
    }
}
