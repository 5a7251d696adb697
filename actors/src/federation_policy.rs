//! Which domains may federate with this server: the settings' allow and deny lists, and the
//! domains an admin blocked at run time (`roost admin federation block`), which are stored so
//! that a block outlives a restart. Read on every relay in and out; written only by the admin.
//!
//! A blocked domain is refused everything it sends (403 `domain_not_allowed`) and sent nothing:
//! deliveries for it are dropped, and so is what waited for it in the outbox (its federation
//! actor drops it when woken).

use std::{
    collections::BTreeSet,
    sync::{Arc, RwLock},
};

use roost_protocol::{federation::DomainPolicy, Domain, Timestamp};
use roost_storage::{BlockedDomains, Durability, StorageError};

#[derive(Clone)]
pub struct FederationPolicy {
    configured: Arc<DomainPolicy>,
    blocked: Arc<RwLock<BTreeSet<Domain>>>,
    store: BlockedDomains,
    durability: Durability,
}

impl FederationPolicy {
    /// The configured policy with the blocks stored before.
    pub fn load(
        configured: DomainPolicy,
        store: BlockedDomains,
        durability: Durability,
    ) -> Result<Self, StorageError> {
        let blocked = store
            .list()?
            .into_iter()
            .map(|(domain, _)| domain)
            .collect();
        Ok(FederationPolicy {
            configured: Arc::new(configured),
            blocked: Arc::new(RwLock::new(blocked)),
            store,
            durability,
        })
    }

    pub fn allows(&self, domain: &Domain) -> bool {
        self.configured.allows(domain) && !self.read().contains(domain)
    }

    /// Blocks `domain` from now on, durably; answers whether it was not blocked before.
    pub async fn block(&self, domain: &Domain) -> Result<bool, StorageError> {
        let added = self.store.insert(domain, Timestamp::now())?;
        self.durability.persist().await?;
        self.write().insert(domain.clone());
        Ok(added)
    }

    /// Lifts an admin's block of `domain`, durably; answers whether it was blocked. (A domain the
    /// settings deny stays denied.)
    pub async fn unblock(&self, domain: &Domain) -> Result<bool, StorageError> {
        let removed = self.store.remove(domain)?;
        self.durability.persist().await?;
        self.write().remove(domain);
        Ok(removed)
    }

    /// The domains an admin blocked, with when.
    pub fn blocked(&self) -> Result<Vec<(Domain, Timestamp)>, StorageError> {
        self.store.list()
    }

    /// The settings' own lists.
    pub fn configured(&self) -> &DomainPolicy {
        &self.configured
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeSet<Domain>> {
        self.blocked.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeSet<Domain>> {
        self.blocked.write().unwrap_or_else(|p| p.into_inner())
    }
}
