//! Connection requests up to the user's decision: the secret keys of the connection packages
//! this client published (`connection_keys`), the requests waiting for a decision
//! (`connection_requests`) and the hashes of those already received (`connection_requests_seen`).

use roost_protocol::{
    codec,
    connection::{ConnectionEstablishmentPackage, ConnectionPackageHash},
    HpkeSecretKey, Timestamp, UserName,
};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::{
    identity::QueuePosition, State, StateError, KEY_CONNECTION_QUEUE, TREE_CONNECTION_KEYS,
    TREE_REQUESTS, TREE_SEEN_REQUESTS,
};

/// The secret half of a connection package this client published.
#[derive(Clone, Serialize, Deserialize)]
pub struct ConnectionKey {
    /// Opens the connection requests sealed to the package.
    pub secret: HpkeSecretKey,
    pub last_resort: bool,
    /// The package's end of validity: after it the AS queues no request sealed to it.
    pub not_after: Timestamp,
}

impl std::fmt::Debug for ConnectionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionKey")
            .field("last_resort", &self.last_resort)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// A connection request that passed every check, waiting for the user's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRequest {
    /// Short and stable: the start of the hash of the sealed request.
    pub id: String,
    pub received_at: Timestamp,
    /// The opened, verified invitation.
    pub package: ConnectionEstablishmentPackage,
}

impl PendingRequest {
    /// Who asks to connect (verified against the AS credentials of their domain).
    pub fn from(&self) -> &UserName {
        self.package.body.sender_client_credential.user()
    }
}

/// What one batch of the connection queue leaves behind, written all at once: a crash either
/// keeps all of it or none, and then the batch is fetched and handled again.
#[derive(Debug, Default)]
pub struct ConnectionBatch {
    pub requests: Vec<PendingRequest>,
    /// Every request opened, by hash, with the end of validity of the package it was sealed to.
    pub seen: Vec<([u8; 32], Timestamp)>,
    /// One-time keys a request was opened with: the AS takes no other request for them.
    pub used_keys: Vec<ConnectionPackageHash>,
    pub position: QueuePosition,
}

impl State {
    /// Stores the secret keys of connection packages about to be published.
    pub fn save_connection_keys(
        &self,
        keys: &[(ConnectionPackageHash, ConnectionKey)],
    ) -> Result<(), StateError> {
        let mut batch = sled::Batch::default();
        for (hash, key) in keys {
            batch.insert(&hash.0, codec::encode(key));
        }
        self.connection_keys
            .apply_batch(batch)
            .map_err(|e| self.store_error(e))?;
        self.flush()
    }

    pub fn connection_key(
        &self,
        package: &ConnectionPackageHash,
    ) -> Result<Option<ConnectionKey>, StateError> {
        self.tree_get(&self.connection_keys, TREE_CONNECTION_KEYS, &package.0)
    }

    /// Every stored connection key, by package hash.
    pub fn connection_keys(
        &self,
    ) -> Result<Vec<(ConnectionPackageHash, ConnectionKey)>, StateError> {
        self.tree_all(&self.connection_keys, TREE_CONNECTION_KEYS)?
            .into_iter()
            .map(|(key, value)| {
                let hash = <[u8; 32]>::try_from(key.as_ref()).map_err(|_| {
                    self.corrupt(TREE_CONNECTION_KEYS, &key, "the key is not a package hash")
                })?;
                Ok((ConnectionPackageHash(hash), value))
            })
            .collect()
    }

    /// Whether a sealed request with this hash was received before.
    pub fn request_seen(&self, hash: &[u8; 32]) -> Result<bool, StateError> {
        self.seen_requests
            .contains_key(hash)
            .map_err(|e| self.store_error(e))
    }

    /// Whether a pending request has this id.
    pub fn request_id_taken(&self, id: &str) -> Result<bool, StateError> {
        self.requests
            .contains_key(id.as_bytes())
            .map_err(|e| self.store_error(e))
    }

    /// Writes what a batch of the connection queue produced, and the position after it, at once.
    pub fn save_connection_batch(&self, batch: &ConnectionBatch) -> Result<(), StateError> {
        let position = codec::encode(&batch.position);
        let outcome: Result<(), TransactionError<()>> = (
            &*self.db,
            &self.connection_keys,
            &self.requests,
            &self.seen_requests,
        )
            .transaction(|(db, keys, requests, seen)| {
                for request in &batch.requests {
                    requests.insert(request.id.as_bytes(), codec::encode(request))?;
                }
                for (hash, not_after) in &batch.seen {
                    seen.insert(hash, codec::encode(not_after))?;
                }
                for used in &batch.used_keys {
                    keys.remove(&used.0)?;
                }
                db.insert(KEY_CONNECTION_QUEUE, position.clone())?;
                Ok::<_, ConflictableTransactionError<()>>(())
            });
        outcome.map_err(|e| match e {
            TransactionError::Storage(e) => self.store_error(e),
            TransactionError::Abort(()) => self.corrupt(TREE_REQUESTS, b"", "transaction aborted"),
        })?;
        self.flush()
    }

    /// The requests waiting for a decision, oldest first.
    pub fn pending_requests(&self) -> Result<Vec<PendingRequest>, StateError> {
        let mut requests: Vec<PendingRequest> = self
            .tree_all(&self.requests, TREE_REQUESTS)?
            .into_iter()
            .map(|(_, request)| request)
            .collect();
        requests.sort_by(|a, b| (a.received_at, &a.id).cmp(&(b.received_at, &b.id)));
        Ok(requests)
    }

    pub fn pending_request(&self, id: &str) -> Result<Option<PendingRequest>, StateError> {
        self.tree_get(&self.requests, TREE_REQUESTS, id.as_bytes())
    }

    /// Deletes a pending request; false if there was none with this id.
    pub fn remove_request(&self, id: &str) -> Result<bool, StateError> {
        let removed = self
            .requests
            .remove(id.as_bytes())
            .map_err(|e| self.store_error(e))?;
        self.flush()?;
        Ok(removed.is_some())
    }

    /// Forgets the connection keys, and the record of requests received, of packages whose
    /// validity ended before `before`: the AS queues no more requests for them.
    pub fn prune_connection_keys(&self, before: Timestamp) -> Result<usize, StateError> {
        let mut pruned = 0;
        for (hash, key) in self.connection_keys()? {
            if key.not_after < before {
                self.connection_keys
                    .remove(hash.0)
                    .map_err(|e| self.store_error(e))?;
                pruned += 1;
            }
        }
        for (hash, not_after) in
            self.tree_all::<Timestamp>(&self.seen_requests, TREE_SEEN_REQUESTS)?
        {
            if not_after < before {
                self.seen_requests
                    .remove(hash)
                    .map_err(|e| self.store_error(e))?;
            }
        }
        self.flush()?;
        Ok(pruned)
    }

    /// Deletes every pending request inviting into `group_id`; answers how many there were.
    pub fn remove_requests_for_group(&self, group_id: &[u8]) -> Result<usize, StateError> {
        let mut removed = 0;
        for request in self.pending_requests()? {
            if request.package.body.connection_group_id == group_id {
                self.requests
                    .remove(request.id.as_bytes())
                    .map_err(|e| self.store_error(e))?;
                removed += 1;
            }
        }
        self.flush()?;
        Ok(removed)
    }
}
