//! A sled tree whose values are one record type, encoded with the codec.

use std::marker::PhantomData;

use serde::{de::DeserializeOwned, Serialize};

use crate::{Result, StorageError};

pub(crate) struct Table<V> {
    pub(crate) tree: crate::gate::Tree,
    _value: PhantomData<fn() -> V>,
}

impl<V> Clone for Table<V> {
    fn clone(&self) -> Self {
        Table {
            tree: self.tree.clone(),
            _value: PhantomData,
        }
    }
}

impl<V: Serialize + DeserializeOwned> Table<V> {
    pub(crate) fn open(db: &crate::gate::Db, name: &str) -> Result<Self> {
        Ok(Table {
            tree: db.open_tree(name)?,
            _value: PhantomData,
        })
    }

    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<V>> {
        self.tree.get(key)?.map(|bytes| decode(&bytes)).transpose()
    }

    pub(crate) fn insert(&self, key: &[u8], value: &V) -> Result<()> {
        self.tree.insert(key, encode(value))?;
        Ok(())
    }

    /// Every record whose key is a name in text (a user name, a domain), parsed as `K`, in key
    /// order; `tree` names the tree in the error a bad key gives.
    pub(crate) fn by_name<K: std::str::FromStr>(
        &self,
        tree: &'static str,
    ) -> impl Iterator<Item = Result<(K, V)>> + '_ {
        self.tree.iter().map(move |entry| {
            let (key, bytes) = entry?;
            let name = std::str::from_utf8(&key)
                .ok()
                .and_then(|name| name.parse().ok())
                .ok_or_else(|| StorageError::Corrupt(format!("a key of {tree}")))?;
            Ok((name, decode(&bytes)?))
        })
    }

    /// Deletes every record `expired` says is; answers how many.
    pub(crate) fn sweep(&self, expired: impl Fn(&V) -> bool) -> Result<usize> {
        let mut batch = sled::Batch::default();
        let mut swept = 0;
        for entry in self.tree.iter() {
            let (key, bytes) = entry?;
            if expired(&decode(&bytes)?) {
                batch.remove(key);
                swept += 1;
            }
        }
        self.tree.apply_batch(batch)?;
        Ok(swept)
    }
}

impl<V: DeserializeOwned> Table<V> {
    /// Reads every record whose key `is_record` accepts and decodes it as a `V`, reporting what
    /// cannot be; other keys are counted if readable.
    pub(crate) fn check(
        &self,
        name: &str,
        is_record: impl Fn(&[u8]) -> bool,
        report: &mut crate::CheckReport,
    ) {
        for entry in self.tree.iter() {
            match entry {
                Ok((key, value)) if is_record(&key) => match decode::<V>(&value) {
                    Ok(_) => report.record(name),
                    Err(e) => report.damaged(name, format!("key {}: {e}", hex(&key))),
                },
                Ok(_) => report.record(name),
                Err(e) => report.damaged(name, format!("unreadable record: {e}")),
            }
        }
    }
}

/// A counter stored as a big-endian u64 under `key` (`what` names it in an error), or
/// `default` if there is none.
pub(crate) fn read_u64(tree: &sled::Tree, key: &[u8], what: &str, default: u64) -> Result<u64> {
    match tree.get(key)? {
        Some(bytes) => Ok(u64::from_be_bytes(
            bytes
                .as_ref()
                .try_into()
                .map_err(|_| StorageError::Corrupt(what.into()))?,
        )),
        None => Ok(default),
    }
}

/// A key as an admin can quote it.
pub(crate) fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn encode<V: Serialize>(value: &V) -> Vec<u8> {
    roost_protocol::codec::encode(value)
}

/// Decodes a stored record. Our own records are trusted in shape but still size-limited.
pub(crate) fn decode<V: DeserializeOwned>(bytes: &[u8]) -> Result<V> {
    roost_protocol::codec::decode(bytes).map_err(|e| StorageError::Corrupt(e.to_string()))
}

/// A transaction's outcome as this crate's result: an abort carries its own error.
pub(crate) fn flatten<T>(
    outcome: std::result::Result<T, sled::transaction::TransactionError<StorageError>>,
) -> Result<T> {
    use sled::transaction::TransactionError;
    outcome.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => e.into(),
    })
}
