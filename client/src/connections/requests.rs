//! Reading the connection queue: each request opened with the key of the package it was sealed
//! to, checked (see [`super`]) and kept as pending, or dropped and reported as rejected.

use std::collections::HashMap;

use roost_protocol::{
    api::QueueItem,
    codec,
    connection::{ConnectionEstablishmentPackage, SealedConnectionRequest},
    credentials::AsCredentials,
    crypto, Domain, Timestamp,
};

use super::{ConnectionRequests, Connections, RejectReason, Rejected, CLOCK_SKEW_SECS};
use crate::{
    device::Device,
    error::Error,
    queues::{Opened, QueueReader},
    store::{ConnectionBatch, PendingRequest, QueuePosition},
    transport::QueueKind,
};

/// Hex characters of a request id; more only where two pending requests would share one.
const REQUEST_ID_LEN: usize = 8;

impl Connections<'_> {
    /// Reads this client's connection queue to its end: each request is opened and checked;
    /// those that pass become pending requests (kept in the state directory), the others are
    /// dropped and returned as rejected. Keys of packages that ended before the queue was read
    /// are forgotten afterwards, as the AS queues nothing more for them.
    pub async fn requests(self) -> Result<ConnectionRequests, Error> {
        let started = Timestamp::now();
        let device = self.client.device();
        let mut reader = RequestReader {
            device,
            credentials: HashMap::new(),
        };
        let drained = self
            .client
            .queues()
            .drain(device, &mut reader, std::time::Duration::ZERO)
            .await?;
        let mut outcome = ConnectionRequests {
            received: Vec::new(),
            rejected: Vec::new(),
        };
        for item in drained.items {
            match item {
                Ok(request) => outcome.received.push(request),
                Err(rejected) => outcome.rejected.push(rejected),
            }
        }
        if drained.complete {
            let before = Timestamp(started.0.saturating_sub(CLOCK_SKEW_SECS));
            device
                .store()
                .run(move |s| s.prune_connection_keys(before))
                .await?;
        }
        Ok(outcome)
    }
}

/// Reads the connection queue; keeps the AS credentials of each sender domain for one pass.
struct RequestReader<'a> {
    device: &'a Device,
    credentials: HashMap<Domain, Result<AsCredentials, String>>,
}

impl QueueReader for RequestReader<'_> {
    type Item = Result<PendingRequest, Rejected>;
    const KIND: QueueKind = QueueKind::Connections;

    async fn take(
        &mut self,
        messages: &[Opened],
        position: QueuePosition,
    ) -> Result<Vec<Self::Item>, Error> {
        let mut batch = ConnectionBatch {
            position,
            ..ConnectionBatch::default()
        };
        let mut items = Vec::new();
        for message in messages {
            let checked = self.check(message, &mut batch).await?;
            let item = match checked {
                Ok(Some(request)) => {
                    batch.requests.push(request.clone());
                    Ok(request)
                }
                Ok(None) => continue,
                Err(reason) => Err(Rejected {
                    seq: message.seq,
                    reason,
                }),
            };
            items.push(item);
        }
        let store = self.device.store();
        store.run(move |s| s.save_connection_batch(&batch)).await?;
        Ok(items)
    }
}

impl RequestReader<'_> {
    /// Opens and checks one message. The outer error aborts the batch (something that may
    /// work next time, such as the network); the inner one rejects the request. `Ok(None)`:
    /// the request is settled without being shown (joined through a Welcome).
    async fn check(
        &mut self,
        message: &Opened,
        batch: &mut ConnectionBatch,
    ) -> Result<Result<Option<PendingRequest>, RejectReason>, Error> {
        let (identity, store) = (self.device.identity(), self.device.store());
        let sealed = match &message.item {
            Ok(QueueItem::ConnectionRequest(sealed)) => sealed.clone(),
            Ok(_) => return Ok(Err(RejectReason::NotARequest)),
            Err(e) => return Ok(Err(RejectReason::Unreadable(e.clone()))),
        };
        let hash = request_hash(&sealed);
        if store.request_seen(&hash)? || batch.seen.iter().any(|(h, _)| *h == hash) {
            return Ok(Err(RejectReason::Replay));
        }
        let package = sealed.connection_package;
        let key = match store.connection_key(&package)? {
            Some(key) if !batch.used_keys.contains(&package) => key,
            _ => return Ok(Err(RejectReason::UnknownPackage)),
        };
        // Opened (or tried): the AS takes no other request for a one-time package.
        batch.seen.push((hash, key.not_after));
        if !key.last_resort {
            batch.used_keys.push(package);
        }
        let opened = match sealed.open(&key.secret) {
            Ok(opened) => opened,
            Err(e) => return Ok(Err(RejectReason::Invalid(e))),
        };
        if let Err(e) = opened.verify_for(&identity.user, &package) {
            return Ok(Err(RejectReason::Invalid(e)));
        }
        if let Err(reason) = self.verify_sender(&opened).await? {
            return Ok(Err(reason));
        }
        // The user may have accepted this request on another client already: then this
        // client's QS queue holds a Welcome into the same group, and the inbox joins from it.
        // Only the local record is consulted here (the connection queue is read without the MLS
        // lock); `accept` and the inbox read the QS queue itself.
        if store.contact(&opened.body.connection_group_id)?.is_some() {
            return Ok(Ok(None));
        }
        let id = request_id(&hash, |id| {
            Ok(batch.requests.iter().any(|r| r.id == id) || store.request_id_taken(id)?)
        })?;
        Ok(Ok(Some(PendingRequest {
            id,
            received_at: Timestamp::now(),
            package: opened,
        })))
    }

    /// Checks the sender's credential chain against the AS credentials of its domain.
    async fn verify_sender(
        &mut self,
        request: &ConnectionEstablishmentPackage,
    ) -> Result<Result<(), RejectReason>, Error> {
        let credential = &request.body.sender_client_credential;
        let domain = credential.user().domain();
        if !self.credentials.contains_key(domain) {
            let fetched = match self.device.as_credentials_of(domain).await {
                Ok(credentials) => Ok(credentials),
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => Err(e.to_string()),
            };
            self.credentials.insert(domain.clone(), fetched);
        }
        Ok(match &self.credentials[domain] {
            Ok(credentials) => credentials
                .verify_client(credential, Timestamp::now())
                .map_err(|source| RejectReason::Chain {
                    client_id: credential.client_id(),
                    source,
                }),
            Err(reason) => Err(RejectReason::Unverifiable(reason.clone())),
        })
    }
}

/// Names one sealed request, for replay detection and its id.
fn request_hash(sealed: &SealedConnectionRequest) -> [u8; 32] {
    crypto::hash("roost-client connection request v1", &codec::encode(sealed))
}

/// The shortest prefix of the hash (in hex, at least [`REQUEST_ID_LEN`] characters) that
/// `taken` says is free.
fn request_id(
    hash: &[u8; 32],
    mut taken: impl FnMut(&str) -> Result<bool, Error>,
) -> Result<String, Error> {
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    for len in (REQUEST_ID_LEN..hex.len()).step_by(4) {
        if !taken(&hex[..len])? {
            return Ok(hex[..len].to_owned());
        }
    }
    Ok(hex)
}

// `verify_packages` is tested end to end, one case per reason, against real servers with a
// proxy serving forged packages: `tests/discovery.rs`.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_short_and_grow_only_on_a_clash() {
        let hash = [0xab; 32];
        assert_eq!(request_id(&hash, |_| Ok(false)).unwrap(), "abababab");
        let clash = request_id(&hash, |id| Ok(id.len() == 8)).unwrap();
        assert_eq!(clash, "abababababab");
        assert_eq!(request_id(&hash, |_| Ok(true)).unwrap().len(), 64);
    }
}
