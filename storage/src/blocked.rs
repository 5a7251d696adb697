//! `federation_blocked`: the domains an admin blocked at run time (domain → when), on top of the
//! settings' allow and deny lists.

use roost_protocol::{Domain, Timestamp};

use crate::{table::Table, Result};

#[derive(Clone)]
pub struct BlockedDomains {
    table: Table<Timestamp>,
}

impl BlockedDomains {
    pub(crate) fn open(db: &crate::gate::Db) -> Result<Self> {
        Ok(BlockedDomains {
            table: Table::open(db, "federation_blocked")?,
        })
    }

    pub(crate) fn check(&self, report: &mut crate::CheckReport) {
        self.table.check("federation_blocked", |_| true, report);
    }

    /// Every blocked domain with when it was blocked, in name order.
    pub fn list(&self) -> Result<Vec<(Domain, Timestamp)>> {
        self.table.by_name("federation_blocked").collect()
    }

    /// Blocks `domain`; answers whether it was not blocked before.
    pub fn insert(&self, domain: &Domain, at: Timestamp) -> Result<bool> {
        let key = domain.to_string();
        if self.table.tree.contains_key(key.as_bytes())? {
            return Ok(false);
        }
        self.table.insert(key.as_bytes(), &at)?;
        Ok(true)
    }

    /// Unblocks `domain`; answers whether it was blocked.
    pub fn remove(&self, domain: &Domain) -> Result<bool> {
        Ok(self
            .table
            .tree
            .remove(domain.to_string().as_bytes())?
            .is_some())
    }
}
