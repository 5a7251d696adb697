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
    client_packages::{ClientPackage, ClientPackages},
    table::{encode, Table},
    Result, StorageError,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedPackage {
    pub client: ClientId,
    pub not_after: Timestamp,
    pub last_resort: bool,
}

/// Which kind of package a sealed request was let in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redeemed {
    /// Used up now.
    OneTime,
    /// Never used up: how often it is redeemed is limited elsewhere.
    LastResort,
}

#[derive(Clone)]
pub struct ConnectionPackageStore {
    packages: ClientPackages<ConnectionPackage>,
    served: Table<ServedPackage>,
}

impl ClientPackage for ConnectionPackage {
    fn client_id(&self) -> ClientId {
        ConnectionPackage::client_id(self)
    }
    fn last_resort(&self) -> bool {
        self.body.last_resort
    }
    fn hash(&self) -> [u8; 32] {
        ConnectionPackage::hash(self).0
    }
    fn valid_at(&self, now: Timestamp) -> bool {
        self.body.validity.contains(now)
    }
}

impl ConnectionPackageStore {
    pub(crate) fn check(&self, report: &mut crate::CheckReport) {
        self.packages.check("as_connection_packages", report);
        self.served.check("as_served_packages", |_| true, report);
    }

    pub(crate) fn open(db: &crate::gate::Db) -> Result<Self> {
        Ok(ConnectionPackageStore {
            packages: ClientPackages::open(db, "as_connection_packages")?,
            served: Table::open(db, "as_served_packages")?,
        })
    }

    /// Stores packages of one client; a new last-resort package replaces the old one. (A
    /// replaced last resort that was already handed out stays redeemable until it expires: an
    /// initiator may have fetched it a moment before. Clients keep its key as long.)
    /// `None` (nothing stored) if the client would hold more than `max_one_time` one-time
    /// packages.
    pub fn publish(
        &self,
        user: &UserName,
        client: &ClientId,
        packages: &[ConnectionPackage],
        max_one_time: u32,
        now: Timestamp,
    ) -> Result<Option<ConnectionPackageCount>> {
        self.packages
            .publish(user, client, packages, max_one_time, now)
    }

    pub fn count(
        &self,
        user: &UserName,
        client: &ClientId,
        now: Timestamp,
    ) -> Result<ConnectionPackageCount> {
        self.packages.count(user, client, now)
    }

    /// One package per client of `clients`: an unexpired one-time package (the first in key
    /// order; one-time packages are interchangeable), used up by this call, or else the
    /// unexpired last-resort package. Expired packages met on the way are deleted. What is
    /// handed out is recorded as served in the same transaction.
    pub fn take(
        &self,
        user: &UserName,
        clients: &[ClientId],
        now: Timestamp,
    ) -> Result<Vec<ConnectionPackage>> {
        let (chosen, removals) = self.packages.select(user, clients, now)?;
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
            self.served.tree.gate().passing(|| {
                (&self.packages.tree().sled(), &self.served.tree.sled()).transaction(
                    |(packages, served_tree)| {
                        packages.apply_batch(&removals)?;
                        for (hash, record) in &served {
                            served_tree.insert(&hash.0, encode(record))?;
                        }
                        Ok::<_, ConflictableTransactionError<()>>(())
                    },
                )
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
    ) -> Result<Option<Redeemed>> {
        let Some(record) = self.served.get(&hash.0)? else {
            return Ok(None);
        };
        if now >= record.not_after {
            self.served.tree.remove(hash.0)?;
            return Ok(None);
        }
        if &record.client != client {
            return Ok(None);
        }
        if record.last_resort {
            return Ok(Some(Redeemed::LastResort));
        }
        self.served.tree.remove(hash.0)?;
        Ok(Some(Redeemed::OneTime))
    }

    /// Forgets every one-time package and every record of a one-time package handed out (after
    /// a restore: either could be used a second time). Answers how many packages went.
    pub fn forget_one_time(&self) -> Result<usize> {
        self.served.sweep(|record| !record.last_resort)?;
        self.packages.forget_one_time()
    }

    /// Deletes the records of served packages that have expired (handed out, never redeemed);
    /// returns how many.
    pub fn sweep_served(&self, now: Timestamp) -> Result<usize> {
        self.served.sweep(|record| now >= record.not_after)
    }

    /// Forgets every package of a client (it was deleted).
    pub fn remove_client(&self, user: &UserName, client: &ClientId) -> Result<()> {
        self.packages.remove_client(user, client)
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
        let now = Timestamp::now();
        packages
            .publish(&user, &client, &[short.clone(), long.clone()], 10, now)
            .unwrap()
            .expect("under the cap");
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
        assert_eq!(packages.redeem(&client, &short.hash(), now).unwrap(), None);
        assert!(packages
            .redeem(&client, &long.hash(), now)
            .unwrap()
            .is_some());
    }
}
