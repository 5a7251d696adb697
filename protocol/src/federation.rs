//! Server-to-server calls between homeservers: the only one is a QS handing group deliveries to
//! the QS of the domain they are for, many in one request ([`RelayBatch`]). Each is signed with
//! the sending homeserver's key ([`crate::auth::ServerSignature`]), whose public half the
//! receiver fetches from the sender's domain ([`FED_SERVER_KEY`]).

use serde::{Deserialize, Serialize};

use crate::{
    api::ErrorBody,
    crypto::{hash, VerifyingKey},
    ds::{GroupDelivery, SealedQueueRef},
    Domain,
};

/// GET → [`ServerKey`]: the key this homeserver signs its server-to-server requests with.
/// Public.
pub const FED_SERVER_KEY: &str = "/federation/v1/server-key";
/// POST [`RelayBatch`] (server-signed) → 200 [`RelayReceipt`] once every delivery in it is
/// durably queued (or was queued before) or refused for good.
pub const FED_DELIVER: &str = "/federation/v1/deliveries";

/// The most deliveries one relay request may carry.
pub const MAX_RELAY_DELIVERIES: usize = 256;
/// A sender fills a batch up to about this many encoded bytes (a larger delivery goes alone),
/// well below any receiver's body limit.
pub const RELAY_BATCH_BYTES: usize = 256 * 1024;

/// Deliveries for the receiving domain, in the order they are to be queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayBatch {
    pub deliveries: Vec<FederatedDelivery>,
}

/// The receiver's answer to a [`RelayBatch`]: one outcome per delivery, in its order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayReceipt {
    pub outcomes: Vec<RelayOutcome>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayOutcome {
    /// Durably queued, now or before.
    Queued,
    /// Refused for good (e.g. `unknown_queue`, `wrong_domain`): sending it again cannot help.
    /// Anything worth retrying fails the whole request instead.
    Refused(ErrorBody),
}

/// A homeserver's request-signing key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerKey {
    pub domain: Domain,
    pub verifying_key: VerifyingKey,
}

/// A group delivery for a client of the receiving domain, relayed by the DS's home QS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederatedDelivery {
    /// The sender's id for this delivery, random: a retried delivery is queued once.
    pub id: [u8; 16],
    /// The domain it is for; the receiver refuses any other.
    pub to: Domain,
    /// The member's queue, sealed to the receiving QS.
    pub queue: SealedQueueRef,
    pub item: GroupDelivery,
}

impl FederatedDelivery {
    /// What the receiver remembers the delivery by: its id, bound to the sending domain so no
    /// domain can shadow another's deliveries.
    pub fn dedup_key(&self, from: &Domain) -> [u8; 32] {
        hash(
            "roost federated delivery id v1",
            &crate::codec::encode(&(from, &self.id)),
        )
    }
}

/// Which domains a homeserver federates with: only `allow` (if not empty), never `deny`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainPolicy {
    pub allow: Vec<Domain>,
    pub deny: Vec<Domain>,
}

impl DomainPolicy {
    pub fn allows(&self, domain: &Domain) -> bool {
        !self.deny.contains(domain) && (self.allow.is_empty() || self.allow.contains(domain))
    }
}

/// Where each domain's homeserver is reached: `https://DOMAIN`, unless an override says
/// otherwise (tests and private deployments). Server and client resolve the same way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolver {
    overrides: std::collections::BTreeMap<Domain, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("{0:?} is not DOMAIN=URL")]
    NotAnEntry(String),
    #[error("{entry:?}: {why}")]
    Bad { entry: String, why: String },
}

impl Resolver {
    /// Builds a resolver from `DOMAIN=URL` entries (`URL`: `http://` or `https://`, no path).
    pub fn from_entries<S: AsRef<str>>(entries: &[S]) -> Result<Resolver, ResolveError> {
        let mut overrides = std::collections::BTreeMap::new();
        for entry in entries {
            let entry = entry.as_ref();
            let (domain, url) = entry
                .split_once('=')
                .ok_or_else(|| ResolveError::NotAnEntry(entry.to_owned()))?;
            let bad = |why: String| ResolveError::Bad {
                entry: entry.to_owned(),
                why,
            };
            let domain: Domain = domain.trim().parse().map_err(|e| bad(format!("{e}")))?;
            let url = url.trim().trim_end_matches('/');
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .ok_or_else(|| bad("the URL must start with http:// or https://".into()))?;
            if rest.is_empty() || rest.contains('/') {
                return Err(bad("the URL must be scheme://host[:port], no path".into()));
            }
            overrides.insert(domain, url.to_owned());
        }
        Ok(Resolver { overrides })
    }

    /// The base URL of `domain`'s homeserver.
    pub fn base_url(&self, domain: &Domain) -> String {
        self.overrides
            .get(domain)
            .cloned()
            .unwrap_or_else(|| format!("https://{}", domain.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_resolve_to_https_unless_overridden() {
        let resolver =
            Resolver::from_entries(&["b.test=http://127.0.0.1:9000/", " c.test = https://c:1 "])
                .unwrap();
        assert_eq!(
            resolver.base_url(&"b.test".parse().unwrap()),
            "http://127.0.0.1:9000"
        );
        assert_eq!(resolver.base_url(&"c.test".parse().unwrap()), "https://c:1");
        assert_eq!(
            resolver.base_url(&"d.test".parse().unwrap()),
            "https://d.test"
        );
        for bad in [
            "b.test",
            "B A D=http://x",
            "b.test=ftp://x",
            "b.test=http://x/path",
        ] {
            assert!(Resolver::from_entries(&[bad]).is_err(), "{bad}");
        }
    }
}
