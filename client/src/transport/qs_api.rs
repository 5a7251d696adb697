//! The queuing service's endpoints: a user's own message queues, the queue-reference key, MLS
//! key packages and friendship tokens.

use std::time::Duration;

use roost_protocol::{
    api::{
        self, ClaimKeyPackages, ClaimedKeyPackages, Enqueue, Enqueued, KeyPackageCount,
        PublishKeyPackages, QueueBatch,
    },
    codec,
    key_packages::FriendshipToken,
    ClientId, HpkePublicKey, OpId,
};

use super::{retrying, Queue, QueueKind, Server, ServerError, Signer};

impl Server {
    /// `POST /qs/v1/queues/{target}/messages`: puts a payload into a queue of the signer's user;
    /// retried (freshly signed, same operation id) on a transient failure, queued once.
    pub async fn enqueue(
        &self,
        signer: Signer<'_>,
        target: &ClientId,
        payload: Vec<u8>,
    ) -> Result<Enqueued, ServerError> {
        let body = codec::encode(&Enqueue {
            op: OpId::random(),
            payload,
        });
        let path = api::qs_queue_messages(target);
        retrying(|| self.post(&path, body.clone(), Some(signer))).await
    }

    /// `GET /qs/v1/queues/{queue}/messages`: the QS message queue; see [`Server::fetch_queue`].
    pub async fn fetch(
        &self,
        signer: Signer<'_>,
        queue: &ClientId,
        from: u64,
        max: u32,
        wait: Duration,
    ) -> Result<QueueBatch, ServerError> {
        let queue = Queue::new(QueueKind::Messages, *queue);
        self.fetch_queue(signer, queue, from, max, wait, None).await
    }

    /// `POST /qs/v1/queues/{queue}/ack`: see [`Server::ack_queue`].
    pub async fn ack(
        &self,
        signer: Signer<'_>,
        queue: &ClientId,
        up_to: u64,
    ) -> Result<(), ServerError> {
        let queue = Queue::new(QueueKind::Messages, *queue);
        self.ack_queue(signer, queue, up_to).await
    }

    /// `GET /qs/v1/queue-ref-key`: the key this QS opens sealed queue references with. Public.
    pub async fn queue_ref_key(&self) -> Result<HpkePublicKey, ServerError> {
        self.get(api::QS_QUEUE_REF_KEY, None).await
    }

    /// `POST /qs/v1/key-packages`: publishes key-package entries of the signer.
    pub async fn publish_key_packages(
        &self,
        signer: Signer<'_>,
        body: &PublishKeyPackages,
    ) -> Result<KeyPackageCount, ServerError> {
        self.post(api::QS_KEY_PACKAGES, codec::encode(body), Some(signer))
            .await
    }

    /// `GET /qs/v1/key-packages`: how many entries the QS holds for the signer.
    pub async fn key_package_count(
        &self,
        signer: Signer<'_>,
    ) -> Result<KeyPackageCount, ServerError> {
        self.get(api::QS_KEY_PACKAGES, Some(signer)).await
    }

    /// `GET /qs/v1/own-key-packages`: one entry per other client of the signer's user, or
    /// only `client`'s.
    pub async fn own_key_packages(
        &self,
        signer: Signer<'_>,
        client: Option<ClientId>,
    ) -> Result<ClaimedKeyPackages, ServerError> {
        let path = match client {
            Some(client) => format!("{}?client={client}", api::QS_OWN_KEY_PACKAGES),
            None => api::QS_OWN_KEY_PACKAGES.to_owned(),
        };
        self.get(&path, Some(signer)).await
    }

    /// `GET /qs/v1/friendship-token`: the signer's user's friendship token.
    pub async fn friendship_token(
        &self,
        signer: Signer<'_>,
    ) -> Result<FriendshipToken, ServerError> {
        self.get(api::QS_FRIENDSHIP_TOKEN, Some(signer)).await
    }

    /// `POST /qs/v1/friendship-token`: a new token for the signer's user; the old one stops
    /// working.
    pub async fn rotate_friendship_token(
        &self,
        signer: Signer<'_>,
    ) -> Result<FriendshipToken, ServerError> {
        self.post(api::QS_FRIENDSHIP_TOKEN, Vec::new(), Some(signer))
            .await
    }

    /// `POST /qs/v1/key-packages/claim`: one entry per client of the token's user, unchecked.
    /// Public (the QS must not learn who adds whom) and rate limited (429 `rate_limited`).
    pub async fn claim_key_packages(
        &self,
        token: &FriendshipToken,
    ) -> Result<ClaimedKeyPackages, ServerError> {
        let body = codec::encode(&ClaimKeyPackages {
            token: token.clone(),
        });
        self.post(api::QS_CLAIM_KEY_PACKAGES, body, None).await
    }
}
