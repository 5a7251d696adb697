//! The homeserver's own long-term keys: the AS credential and the AS intermediate credential,
//! with their signing keys. Created once, reused on every later start.

use serde::{Deserialize, Serialize};

use roost_protocol::{AsCredential, AsIntermediateCredential, SigningKey};

use crate::{table::Table, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerKeys {
    pub as_key: SigningKey,
    pub as_credential: AsCredential,
    pub intermediate_key: SigningKey,
    pub intermediate: AsIntermediateCredential,
}

#[derive(Clone)]
pub struct ServerKeysStore {
    table: Table<ServerKeys>,
}

const CURRENT: &[u8] = b"current";

impl ServerKeysStore {
    pub(crate) fn open(db: &sled::Db) -> Result<Self> {
        Ok(ServerKeysStore {
            table: Table::open(db, "as_keys")?,
        })
    }

    pub fn current(&self) -> Result<Option<ServerKeys>> {
        self.table.get(CURRENT)
    }

    /// Stores `keys` unless keys exist already; returns the keys in force either way.
    pub fn get_or_insert(&self, keys: ServerKeys) -> Result<ServerKeys> {
        let encoded = crate::table::encode(&keys);
        match self
            .table
            .tree
            .compare_and_swap(CURRENT, None as Option<&[u8]>, Some(encoded))?
        {
            Ok(()) => Ok(keys),
            Err(existing) => crate::table::decode(
                existing
                    .current
                    .as_deref()
                    .expect("compare_and_swap failed on an existing value"),
            ),
        }
    }
}
