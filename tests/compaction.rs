//! Compaction against real `roost` processes: sled keeps the space of deleted records, and a
//! compaction — an admin's, or the server's own when worth it — gives it back while clients go
//! on writing and reading, losing nothing acknowledged, also across a `kill -9` after it.

mod common;

use std::time::Duration;

use common::{phone_and_laptop, Identity, Options, TestServer};
use roost_protocol::api::{self, QueueItem, QueueKind};

fn store_size(server: &TestServer) -> u64 {
    server.admin_json(&["status"])["store"]["size_bytes"]
        .as_u64()
        .expect("a size")
}

/// The phone sends the laptop `count` messages of `bytes`; the laptop reads and acknowledges
/// them all, so the store holds their space and none of their records.
async fn send_and_delete(server: &TestServer, phone: &Identity, laptop: &Identity, count: usize) {
    let http = server.http();
    let payload = vec![7u8; 50_000];
    for _ in 0..count {
        let sent = http.enqueue(phone, &laptop.client_id(), &payload).await;
        assert_eq!(sent.status, 200, "{}", sent.error_message());
    }
    let messages = http.fetch_all(laptop).await;
    for message in &messages {
        laptop.open(QueueKind::Messages, message).unwrap();
    }
    let last = messages.last().expect("messages").seq;
    assert_eq!(http.ack(laptop, last).await.status, 204);
}

/// The phone's messages in what the laptop's queue holds, opened in order: their payloads.
fn payloads(laptop: &Identity, messages: &[api::QueueMessage]) -> Vec<Vec<u8>> {
    messages
        .iter()
        .map(|m| laptop.open(QueueKind::Messages, m).unwrap())
        .filter_map(|item| match item {
            QueueItem::FromOwnClient { payload, .. } => Some(payload),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_compaction_under_traffic_gives_the_space_back_and_loses_nothing_acknowledged() {
    let mut server = TestServer::start(Options::default());
    let (phone, laptop) = phone_and_laptop(&server, "alice").await;
    send_and_delete(&server, &phone, &laptop, 300).await;
    let before = store_size(&server);

    // The phone keeps sending while the admin compacts.
    let phone = std::sync::Arc::new(phone);
    let sender = {
        let (http, to, phone) = (server.http(), laptop.client_id(), phone.clone());
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for n in 0u32..150 {
                let sent = http.enqueue(&phone, &to, &n.to_be_bytes()).await;
                assert_eq!(sent.status, 200, "{}", sent.error_message());
                acknowledged.push(n.to_be_bytes().to_vec());
            }
            acknowledged
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let compacted = server.admin_json(&["compact"]);
    let acknowledged = sender.await.unwrap();
    eprintln!("compaction under traffic: {compacted}");
    let (bytes_before, bytes_after) = (
        compacted["bytes_before"].as_u64().unwrap(),
        compacted["bytes_after"].as_u64().unwrap(),
    );
    assert!(
        bytes_after * 3 < bytes_before,
        "not much given back: {compacted}"
    );
    assert!(store_size(&server) * 3 < before, "{compacted}");

    // Everything acknowledged is there, in order; also after a kill -9 and a start.
    let stored = server.http().fetch_all(&laptop).await;
    assert_eq!(payloads(&laptop, &stored), acknowledged);
    server.kill();
    server.start_again();
    assert_eq!(server.http().fetch_all(&laptop).await, stored);
    let sent = server
        .http()
        .enqueue(&phone, &laptop.client_id(), b"after")
        .await;
    assert_eq!(sent.status, 200);
    let check = server.admin_json(&["check"]);
    assert_eq!(check["problems"], serde_json::json!([]), "{check}");

    // On a stopped server's store too.
    let stored = server.http().fetch_all(&laptop).await;
    assert!(server.terminate().success());
    let compacted = server.admin_json(&["compact"]);
    assert!(compacted["records"].as_u64().unwrap() > 0, "{compacted}");
    server.start_again();
    assert_eq!(server.http().fetch_all(&laptop).await, stored);
}

#[tokio::test]
async fn the_server_compacts_its_store_by_itself_once_that_is_worth_it() {
    let server = TestServer::start(Options {
        settings: vec![
            ("ROOST_STORAGE__COMPACT_CHECK_SECS", "1".into()),
            ("ROOST_STORAGE__COMPACT_MIN_WASTED_MIB", "4".into()),
        ],
        ..Options::default()
    });
    let (phone, laptop) = phone_and_laptop(&server, "alice").await;
    send_and_delete(&server, &phone, &laptop, 300).await;
    let before = store_size(&server);
    let shrunk =
        common::eventually(|| store_size(&server) * 3 < before, Duration::from_secs(20)).await;
    assert!(shrunk, "still {} bytes of {before}", store_size(&server));
    assert!(server.log().contains("compacted the store"));
    let sent = server
        .http()
        .enqueue(&phone, &laptop.client_id(), b"x")
        .await;
    assert_eq!(sent.status, 200);
}
