//! Stand-ins for another homeserver: one that serves its server key so that the test can sign
//! relays as a real peer would, and one that answers every request with an endless body; and
//! relay requests made by hand.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use roost_protocol::{
    auth::ServerSignature,
    codec,
    ds::{GroupDelivery, SealedQueueRef},
    federation::{
        FederatedDelivery, RelayBatch, RelayOutcome, RelayReceipt, ServerKey, FED_DELIVER,
    },
    ids::now_millis,
    ClientId, Domain, HpkePublicKey, SigningKey,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{federation, Options, TestServer};

/// A stand-in homeserver listening on `port`.
pub struct StandIn {
    pub port: u16,
    /// Body bytes it has written, over all requests.
    pub written: Arc<AtomicU64>,
}

impl StandIn {
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }
}

/// Serves `body` (with its length) to every request.
async fn serve(body: Option<Vec<u8>>) -> StandIn {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let (body, counter) = (body.clone(), counter.clone());
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                match body {
                    Some(body) => {
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = stream.write_all(head.as_bytes()).await;
                        if stream.write_all(&body).await.is_ok() {
                            counter.fetch_add(body.len() as u64, Ordering::SeqCst);
                        }
                    }
                    None => {
                        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/x-roost-bincode\r\nconnection: close\r\n\r\n";
                        let _ = stream.write_all(head.as_bytes()).await;
                        let chunk = vec![0u8; 64 * 1024];
                        // Until the reader hangs up (or a gigabyte went out).
                        for _ in 0..16 * 1024 {
                            if stream.write_all(&chunk).await.is_err() {
                                break;
                            }
                            counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                        }
                    }
                }
            });
        }
    });
    StandIn { port, written }
}

/// A homeserver that serves only its server key, for `domain`.
pub async fn stand_in(domain: &str, key: &SigningKey) -> StandIn {
    serve(Some(codec::encode(&ServerKey {
        domain: domain.parse().unwrap(),
        verifying_key: key.verifying_key(),
    })))
    .await
}

/// A "homeserver" that answers every request 200 with a body that never ends.
pub async fn endless() -> StandIn {
    serve(None).await
}

/// A delivery for the queue of `client` (a made-up one if none) at `target`, said to be for
/// domain `to`, carrying `message`.
pub async fn delivery_for(
    target: &TestServer,
    to: &str,
    client: Option<ClientId>,
    message: Vec<u8>,
) -> FederatedDelivery {
    let to: Domain = to.parse().unwrap();
    let qs_key: HpkePublicKey = target
        .http()
        .send("GET", roost_protocol::api::QS_QUEUE_REF_KEY, vec![], None)
        .await
        .decode();
    FederatedDelivery {
        id: rand::random(),
        to: to.clone(),
        queue: SealedQueueRef::seal(to, &qs_key, &client.unwrap_or_else(ClientId::random)).unwrap(),
        item: GroupDelivery::Message {
            group_id: vec![1],
            seq: 1,
            message,
        },
    }
}

/// A relay request as another server would send it, signed by `key` in the name of `from`:
/// the body and the Authorization header.
pub fn signed_relay(
    from: &str,
    key: &SigningKey,
    deliveries: Vec<FederatedDelivery>,
) -> (Vec<u8>, String) {
    let body = codec::encode(&RelayBatch { deliveries });
    let signature = ServerSignature::sign(
        key,
        from.parse().unwrap(),
        "POST",
        FED_DELIVER,
        &body,
        now_millis(),
    );
    (body, signature.to_header())
}

/// The outcome of each delivery as its code (`queued` or why it was refused).
pub fn outcome_codes(receipt: &RelayReceipt) -> Vec<String> {
    receipt
        .outcomes
        .iter()
        .map(|outcome| match outcome {
            RelayOutcome::Queued => "queued".to_owned(),
            RelayOutcome::Refused(why) => why.error.clone(),
        })
        .collect()
}

/// Relays one delivery for a made-up queue of `to` at `target`: the status and the error code
/// of the request, or of the delivery when the request was taken.
pub async fn relay(target: &TestServer, from: &str, key: &SigningKey, to: &str) -> (u16, String) {
    let delivery = delivery_for(target, to, None, vec![1]).await;
    let (body, header) = signed_relay(from, key, vec![delivery]);
    let response = target
        .http()
        .send("POST", FED_DELIVER, body, Some(header))
        .await;
    let code = if response.status < 300 {
        outcome_codes(&response.decode()).join(",")
    } else {
        response.error_code()
    };
    (response.status, code)
}

/// a.test and b.test, which know where the stand-in `peer.test` is and federate with any domain
/// but `deny`; with the key the test signs as peer.test with.
pub async fn beside_a_stand_in_peer(deny: Vec<String>) -> (SigningKey, Vec<TestServer>) {
    let peer_key = SigningKey::generate();
    let peer_port = stand_in("peer.test", &peer_key).await.port;
    let (servers, _) = federation(
        &["a.test", "b.test"],
        Options {
            resolve: vec![format!("peer.test=http://127.0.0.1:{peer_port}")],
            deny,
            ..Options::default()
        },
    );
    (peer_key, servers)
}
