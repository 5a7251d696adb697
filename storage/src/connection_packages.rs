//! Connection packages (the AS's discovery records) and the record of which were served.
//!
//! `as_connection_packages`: `user ‖ 0 ‖ client id ‖ last-resort flag ‖ package hash` → package.
//! User names never contain a zero byte, so one user's keys never run into another's.
//! `as_served_packages`: `package hash` → [`ServedPackage`], so that a sealed request can be
//! queued only for a package this AS actually handed out, and a one-time package only once.

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use roost_protocol::{
    api::ConnectionPackageCount,
    connection::{ConnectionPackage, ConnectionPackageHash},
    ClientId, Timestamp, UserName,
};

use crate::{
    table::{decode, encode, Table},
    Result, StorageError,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedPackage {
    pub client: ClientId,
    pub not_after: Timestamp,
    pub last_resort: bool,
}

#[derive(Clone)]
pub struct ConnectionPackageStore {
    packages: Table<ConnectionPackage>,
    served: Table<ServedPackage>,
}

fn user_prefix(user: &UserName) -> Vec<u8> {
    let mut key = user.to_string().into_bytes();
    key.push(0);
    key
}

fn client_prefix(user: &UserName, client: &ClientId) -> Vec<u8> {
    let mut key = user_prefix(user);
    key.extend_from_slice(&client.0);
    key
}

fn package_key(user: &UserName, package: &ConnectionPackage) -> Vec<u8> {
    let mut key = client_prefix(user, &package.client_id());
    key.push(package.body.last_resort as u8);
    key.extend_from_slice(&package.hash().0);
    key
}

impl ConnectionPackageStore {
    pub(crate) fn open(db: &sled::Db) -> Result<Self> {
        Ok(ConnectionPackageStore {
            packages: Table::open(db, "as_connection_packages")?,
            served: Table::open(db, "as_served_packages")?,
        })
    }

    /// Stores packages of one client; a new last-resort package replaces the old one. (A
    /// replaced last resort that was already handed out stays redeemable until it expires: an
    /// initiator may have fetched it a moment before. Clients keep its key as long.)
    pub fn publish(&self, user: &UserName, packages: &[ConnectionPackage]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for package in packages {
            if package.body.last_resort {
                let mut prefix = client_prefix(user, &package.client_id());
                prefix.push(1);
                for key in self.packages.tree.scan_prefix(&prefix).keys() {
                    batch.remove(key?);
                }
            }
        }
        for package in packages {
            batch.insert(package_key(user, package), encode(package));
        }
        self.packages.tree.apply_batch(batch)?;
        Ok(())
    }

    fn client_packages(
        &self,
        user: &UserName,
        client: &ClientId,
    ) -> Result<Vec<(sled::IVec, ConnectionPackage)>> {
        self.packages
            .tree
            .scan_prefix(client_prefix(user, client))
            .map(|entry| {
                let (key, bytes) = entry?;
                Ok((key, decode(&bytes)?))
            })
            .collect()
    }

    pub fn count(
        &self,
        user: &UserName,
        client: &ClientId,
        now: Timestamp,
    ) -> Result<ConnectionPackageCount> {
        let mut count = ConnectionPackageCount {
            remaining: 0,
            has_last_resort: false,
        };
        for (_, package) in self.client_packages(user, client)? {
            if !package.body.validity.contains(now) {
                continue;
            }
            if package.body.last_resort {
                count.has_last_resort = true;
            } else {
                count.remaining += 1;
            }
        }
        Ok(count)
    }

    /// One package per client of `clients`: an unexpired one-time package (the first in key
    /// order; one-time packages are interchangeable), used up by this call, or else the
    /// unexpired last-resort package. Expired packages met on the way are deleted.
    pub fn take(
        &self,
        user: &UserName,
        clients: &[ClientId],
        now: Timestamp,
    ) -> Result<Vec<ConnectionPackage>> {
        let mut chosen = Vec::new();
        let mut remove = Vec::new();
        for client in clients {
            let mut one_time = None;
            let mut last_resort = None;
            for (key, package) in self.client_packages(user, client)? {
                if !package.body.validity.contains(now) {
                    remove.push(key);
                } else if package.body.last_resort {
                    last_resort = Some(package);
                } else if one_time.is_none() {
                    remove.push(key);
                    one_time = Some(package);
                }
            }
            if let Some(package) = one_time.or(last_resort) {
                chosen.push(package);
            }
        }
        let served: Vec<(ConnectionPackageHash, ServedPackage)> = chosen
            .iter()
            .map(|p| {
                (
                    p.hash(),
                    ServedPackage {
                        client: p.client_id(),
                        not_after: p.body.validity.not_after,
                        last_resort: p.body.last_resort,
                    },
                )
            })
            .collect();
        let outcome: std::result::Result<(), TransactionError<()>> =
            (&self.packages.tree, &self.served.tree).transaction(|(packages, served_tree)| {
                for key in &remove {
                    packages.remove(key)?;
                }
                for (hash, record) in &served {
                    served_tree.insert(&hash.0, encode(record))?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            });
        outcome.map_err(|e| match e {
            TransactionError::Abort(()) => StorageError::Corrupt("aborted".into()),
            TransactionError::Storage(e) => e.into(),
        })?;
        Ok(chosen)
    }

    /// Checks that `hash` names a package of `client` this AS served and that has not expired;
    /// a one-time package can be redeemed once. (If queuing the request then fails, the package
    /// stays used up; the initiator fetches another.)
    pub fn redeem(
        &self,
        client: &ClientId,
        hash: &ConnectionPackageHash,
        now: Timestamp,
    ) -> Result<bool> {
        let Some(record) = self.served.get(&hash.0)? else {
            return Ok(false);
        };
        if now >= record.not_after {
            self.served.tree.remove(hash.0)?;
            return Ok(false);
        }
        if &record.client != client {
            return Ok(false);
        }
        if !record.last_resort {
            self.served.tree.remove(hash.0)?;
        }
        Ok(true)
    }

    /// Deletes the records of served packages that have expired (handed out, never redeemed);
    /// returns how many.
    pub fn sweep_served(&self, now: Timestamp) -> Result<usize> {
        let mut batch = sled::Batch::default();
        let mut swept = 0;
        for entry in self.served.tree.iter() {
            let (key, bytes) = entry?;
            let record: ServedPackage = decode(&bytes)?;
            if now >= record.not_after {
                batch.remove(key);
                swept += 1;
            }
        }
        self.served.tree.apply_batch(batch)?;
        Ok(swept)
    }

    /// Forgets every package of a client (it was deleted).
    pub fn remove_client(&self, user: &UserName, client: &ClientId) -> Result<()> {
        let mut batch = sled::Batch::default();
        for key in self
            .packages
            .tree
            .scan_prefix(client_prefix(user, client))
            .keys()
        {
            batch.remove(key?);
        }
        self.packages.tree.apply_batch(batch)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use roost_protocol::{
        credentials::Validity, ClientCredential, ClientId, HpkeSecretKey, SigningKey,
    };

    use super::*;

    #[test]
    fn expired_served_records_are_swept_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path()).unwrap();
        let packages = store.connection_packages().unwrap();
        let user: UserName = "alice@a.test".parse().unwrap();
        let key = SigningKey::generate();
        let client = ClientId::random();
        let credential = ClientCredential::issue(
            user.clone(),
            client,
            key.verifying_key(),
            Validity::starting_now(3600),
            &SigningKey::generate(),
        );
        let package = |lifetime, last_resort| {
            ConnectionPackage::new(
                credential.clone(),
                &key,
                HpkeSecretKey::generate().1,
                Validity::starting_now(lifetime),
                last_resort,
            )
        };
        let short = package(10, false);
        let long = package(3600, true);
        packages
            .publish(&user, &[short.clone(), long.clone()])
            .unwrap();
        let now = Timestamp::now();
        assert_eq!(
            packages.take(&user, &[client], now).unwrap(),
            vec![short.clone()]
        );
        assert_eq!(
            packages.take(&user, &[client], now).unwrap(),
            vec![long.clone()]
        );
        assert_eq!(packages.sweep_served(now).unwrap(), 0);
        assert_eq!(packages.sweep_served(now.plus_secs(20)).unwrap(), 1);
        assert!(!packages.redeem(&client, &short.hash(), now).unwrap());
        assert!(packages.redeem(&client, &long.hash(), now).unwrap());
    }
}
