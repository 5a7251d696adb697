//! The homeserver's own long-term keys: the AS credential and the AS intermediate credential
//! with their signing keys, and the QS's queue-reference key. Created once, reused on every
//! later start.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use roost_protocol::{AsCredential, AsIntermediateCredential, HpkeSecretKey, SigningKey};

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

#[derive(Clone)]
pub struct ServerKeysStore {
    tree: sled::Tree,
}

const AS_KEYS: &[u8] = b"current";
const QUEUE_REF_KEY: &[u8] = b"qs_queue_ref";
const FEDERATION_KEY: &[u8] = b"federation";

impl ServerKeysStore {
    pub(crate) fn open(db: &sled::Db) -> Result<Self> {
        Ok(ServerKeysStore {
            tree: db.open_tree("as_keys")?,
        })
    }

    pub(crate) fn check(&self, report: &mut crate::CheckReport) {
        match self.current() {
            Ok(_) => report.readable("as_keys", &self.tree),
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
