//! QS queue key chains over real HTTP: one HPKE seal starts a chain, its messages are sealed
//! under keys the server keeps only in memory, and no key that opens a queued message is ever
//! in the store.

mod common;

use common::{scan::Secret, Identity, Options, TestServer, PASSWORD};
use roost_protocol::{
    api::{Enqueued, QueueBatch, QueueItem, QueueKind, QueueMessage},
    codec,
    queue::{QueueChain, Sealing},
};

/// alice's phone, and her laptop, which sends to the phone's queue.
async fn phone_and_laptop(server: &TestServer) -> (Identity, Identity) {
    let http = server.http();
    let mut phone = Identity::new(&server.user("alice"));
    assert_eq!(http.register(&mut phone, None).await.status, 201);
    let mut laptop = Identity::new(&server.user("alice"));
    assert_eq!(http.add_client(&mut laptop, PASSWORD).await.status, 201);
    (phone, laptop)
}

async fn send(server: &TestServer, from: &Identity, to: &Identity, text: &str) -> u64 {
    let http = server.http();
    let sent: Enqueued = http
        .enqueue(from, &to.client_id(), text.as_bytes())
        .await
        .decode();
    sent.seq
}

fn starts_chain(message: &QueueMessage) -> bool {
    matches!(message.sealing, Sealing::Chain { start: Some(_), .. })
}

/// The chain's key: the last 32 bytes of its encoding (its position, then its key).
fn chain_key(chain: &QueueChain) -> Vec<u8> {
    let bytes = codec::encode(chain);
    bytes[bytes.len() - 32..].to_vec()
}

fn text(item: QueueItem) -> String {
    match item {
        QueueItem::FromOwnClient { payload, .. } => String::from_utf8(payload).unwrap(),
        other => panic!("not a message from an own client: {other:?}"),
    }
}

#[tokio::test]
async fn no_key_that_opens_a_queued_message_is_ever_written_to_the_store() {
    let mut server = TestServer::start(Options::default());
    let (phone, laptop) = phone_and_laptop(&server).await;
    for i in 0..5 {
        send(&server, &laptop, &phone, &format!("m{i}")).await;
    }
    // The phone reads everything (and so learns each key) but acknowledges nothing: the store
    // still holds every message.
    let batch: QueueBatch = server.http().fetch(&phone, 1, 100, 0).await.decode();
    assert_eq!(batch.messages.len(), 6, "the notice of the laptop and five");
    let mut keys = Vec::new();
    for message in &batch.messages {
        phone.open(QueueKind::Messages, message).unwrap();
        // The key of the next message: the server has used it already for this one's
        // successor, or holds it for the next message to come.
        let chain = phone.chain(QueueKind::Messages).unwrap();
        keys.push(Secret::new(
            format!("the chain key for message {}", chain.seq()),
            chain_key(&chain),
        ));
    }
    assert!(server.terminate().success());
    let files = server.store_files();
    assert!(files.iter().any(|(path, _)| path.ends_with("db")));
    for (path, bytes) in &files {
        common::scan::assert_holds_none(&path.display().to_string(), bytes, &keys);
    }
}

#[tokio::test]
async fn one_hpke_seal_starts_a_chain_and_a_restart_starts_the_next() {
    let mut server = TestServer::start(Options::default());
    let (phone, laptop) = phone_and_laptop(&server).await;
    for i in 0..4 {
        send(&server, &laptop, &phone, &format!("before {i}")).await;
    }
    server.restart(); // kill -9: the chain, held in memory only, is gone with the process.
    for i in 0..3 {
        send(&server, &laptop, &phone, &format!("after {i}")).await;
    }
    let batch: QueueBatch = server.http().fetch(&phone, 1, 100, 0).await.decode();
    let starts: Vec<u64> = batch
        .messages
        .iter()
        .filter(|m| starts_chain(m))
        .map(|m| m.seq)
        .collect();
    // The notice of the laptop started the first chain; the first message after the restart
    // started the second.
    assert_eq!(starts, [1, 6]);
    let texts: Vec<String> = batch
        .messages
        .iter()
        .map(|m| phone.open(QueueKind::Messages, m).unwrap())
        .filter(|item| !matches!(item, QueueItem::Notice(_)))
        .map(text)
        .collect();
    assert_eq!(
        texts,
        ["before 0", "before 1", "before 2", "before 3", "after 0", "after 1", "after 2"]
    );
}

#[tokio::test]
async fn a_client_reading_in_batches_keeps_its_chain_between_them() {
    let server = TestServer::start(Options::default());
    let (phone, laptop) = phone_and_laptop(&server).await;
    let http = server.http();
    let mut from = 1;
    let mut read = Vec::new();
    for round in 0..3 {
        for i in 0..3 {
            send(&server, &laptop, &phone, &format!("{round}.{i}")).await;
        }
        let batch: QueueBatch = http.fetch(&phone, from, 100, 0).await.decode();
        for message in &batch.messages {
            match phone.open(QueueKind::Messages, message).unwrap() {
                QueueItem::Notice(_) => {}
                item => read.push(text(item)),
            }
        }
        let last = batch.messages.last().unwrap().seq;
        assert_eq!(http.ack(&phone, last).await.status, 204);
        from = last + 1;
    }
    let expected: Vec<String> = (0..3)
        .flat_map(|round| (0..3).map(move |i| format!("{round}.{i}")))
        .collect();
    assert_eq!(read, expected);
}
