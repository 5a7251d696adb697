//! A tree of packages that a user's clients publish for others to take, one record per package.
//!
//! Key: `user ‖ 0 ‖ client id ‖ last-resort flag ‖ package hash`. User names never contain a
//! zero byte, so one user's keys never run into another's, and a client's last-resort package
//! sorts after its one-time ones. Each client keeps at most one last-resort package.
//!
//! Used by the QS's key packages and the AS's connection packages.

use serde::{de::DeserializeOwned, Serialize};
use sled::transaction::Transactional;

use roost_protocol::{api::PackageCount, ClientId, Timestamp, UserName};

use crate::{
    table::{decode, encode, flatten, Table},
    Result,
};

/// What a stored package must tell the table.
pub(crate) trait ClientPackage: Serialize + DeserializeOwned {
    fn client_id(&self) -> ClientId;
    fn last_resort(&self) -> bool;
    fn hash(&self) -> [u8; 32];
    /// Whether it may still be served at `now`.
    fn valid_at(&self, now: Timestamp) -> bool;
}

pub(crate) struct ClientPackages<P> {
    table: Table<P>,
}

impl<P> Clone for ClientPackages<P> {
    fn clone(&self) -> Self {
        ClientPackages {
            table: self.table.clone(),
        }
    }
}

fn client_prefix(user: &UserName, client: &ClientId) -> Vec<u8> {
    let mut key = user.to_string().into_bytes();
    key.push(0);
    key.extend_from_slice(&client.0);
    key
}

impl<P: ClientPackage> ClientPackages<P> {
    pub(crate) fn open(db: &crate::gate::Db, name: &str) -> Result<Self> {
        Ok(ClientPackages {
            table: Table::open(db, name)?,
        })
    }

    fn key(user: &UserName, package: &P) -> Vec<u8> {
        let mut key = client_prefix(user, &package.client_id());
        key.push(package.last_resort() as u8);
        key.extend_from_slice(&package.hash());
        key
    }

    pub(crate) fn check(&self, name: &str, report: &mut crate::CheckReport) {
        self.table.check(name, |_| true, report);
    }

    /// Stores packages of `client`, all or nothing, unless that would leave it more than
    /// `max_one_time` valid one-time packages; a new last-resort package replaces the client's
    /// old one. Answers the client's count after, or `None` (nothing stored) over the cap.
    pub(crate) fn publish(
        &self,
        user: &UserName,
        client: &ClientId,
        packages: &[P],
        max_one_time: u32,
        now: Timestamp,
    ) -> Result<Option<PackageCount>> {
        self.publish_with(user, client, packages, max_one_time, now, None)
    }

    /// [`publish`](Self::publish), applying `also` (writes to another tree) in the same
    /// transaction.
    pub(crate) fn publish_with(
        &self,
        user: &UserName,
        client: &ClientId,
        packages: &[P],
        max_one_time: u32,
        now: Timestamp,
        also: Option<(&crate::gate::Tree, sled::Batch)>,
    ) -> Result<Option<PackageCount>> {
        let before = self.count(user, client, now)?;
        let new_one_time = packages.iter().filter(|p| !p.last_resort()).count();
        if before.remaining as usize + new_one_time > max_one_time as usize {
            return Ok(None);
        }
        let batch = self.store(user, packages)?;
        match also {
            None => self.table.tree.apply_batch(batch)?,
            Some((other, other_batch)) => {
                flatten(self.table.tree.gate().passing(|| {
                    (&self.table.tree.sled(), &other.sled()).transaction(|(tree, other)| {
                        tree.apply_batch(&batch)?;
                        other.apply_batch(&other_batch)?;
                        Ok(())
                    })
                }))?;
            }
        }
        self.count(user, client, now).map(Some)
    }

    /// The writes that store `packages`.
    fn store(&self, user: &UserName, packages: &[P]) -> Result<sled::Batch> {
        let mut batch = sled::Batch::default();
        for package in packages.iter().filter(|p| p.last_resort()) {
            let mut prefix = client_prefix(user, &package.client_id());
            prefix.push(1);
            for key in self.table.tree.scan_prefix(&prefix).keys() {
                batch.remove(key?);
            }
        }
        for package in packages {
            batch.insert(Self::key(user, package), encode(package));
        }
        Ok(batch)
    }

    fn of_client(&self, user: &UserName, client: &ClientId) -> Result<Vec<(sled::IVec, P)>> {
        self.table
            .tree
            .scan_prefix(client_prefix(user, client))
            .map(|entry| {
                let (key, bytes) = entry?;
                Ok((key, decode(&bytes)?))
            })
            .collect()
    }

    pub(crate) fn count(
        &self,
        user: &UserName,
        client: &ClientId,
        now: Timestamp,
    ) -> Result<PackageCount> {
        let mut count = PackageCount {
            remaining: 0,
            has_last_resort: false,
        };
        for (_, package) in self.of_client(user, client)? {
            if !package.valid_at(now) {
                continue;
            }
            if package.last_resort() {
                count.has_last_resort = true;
            } else {
                count.remaining += 1;
            }
        }
        Ok(count)
    }

    /// One package per client of `clients` that has one: its first valid one-time package,
    /// used up by this call, or else its valid last-resort package. Expired packages met on the
    /// way are deleted too.
    pub(crate) fn take(
        &self,
        user: &UserName,
        clients: &[ClientId],
        now: Timestamp,
    ) -> Result<Vec<P>> {
        let (chosen, removals) = self.select(user, clients, now)?;
        self.table.tree.apply_batch(removals)?;
        Ok(chosen)
    }

    /// What [`take`](Self::take) would hand out, and the removals that use it up — for a
    /// caller that applies them together with writes of its own, in one transaction.
    pub(crate) fn select(
        &self,
        user: &UserName,
        clients: &[ClientId],
        now: Timestamp,
    ) -> Result<(Vec<P>, sled::Batch)> {
        let mut chosen = Vec::new();
        let mut batch = sled::Batch::default();
        for client in clients {
            let mut one_time = None;
            let mut last_resort = None;
            for (key, package) in self.of_client(user, client)? {
                if !package.valid_at(now) {
                    batch.remove(key);
                } else if package.last_resort() {
                    last_resort = Some(package);
                } else if one_time.is_none() {
                    batch.remove(key);
                    one_time = Some(package);
                }
            }
            chosen.extend(one_time.or(last_resort));
        }
        Ok((chosen, batch))
    }

    /// Deletes every one-time package (a store restored from a backup could hand one out a
    /// second time); last-resort packages stay. Answers how many went.
    pub(crate) fn forget_one_time(&self) -> Result<usize> {
        self.table.sweep(|package| !package.last_resort())
    }

    pub(crate) fn tree(&self) -> &crate::gate::Tree {
        &self.table.tree
    }

    /// Forgets every package of a client.
    pub(crate) fn remove_client(&self, user: &UserName, client: &ClientId) -> Result<()> {
        let mut batch = sled::Batch::default();
        for key in self
            .table
            .tree
            .scan_prefix(client_prefix(user, client))
            .keys()
        {
            batch.remove(key?);
        }
        self.table.tree.apply_batch(batch)?;
        Ok(())
    }
}
