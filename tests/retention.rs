//! Retention against real `roost` processes, with short settings: messages a client does not
//! fetch in time are dropped and the client is told; a device that stays silent is deleted and
//! its user's other devices are told; a group that takes no request is deleted and its members
//! are told when they next use it; what is still in time is kept.

mod common;

use std::time::{Duration, Instant};

use common::{
    devices::{connect, Devices},
    pair::{chat_texts, connected_pair, settle},
    phone_and_laptop, Identity, Options, TestServer,
};
use roost_protocol::api::{self, Notice, QueueItem, QueueKind};

fn with_retention(messages_secs: u64, idle_clients_secs: u64) -> Options {
    Options {
        settings: vec![
            ("ROOST_RETENTION__MESSAGES_SECS", messages_secs.to_string()),
            (
                "ROOST_RETENTION__IDLE_CLIENTS_SECS",
                idle_clients_secs.to_string(),
            ),
        ],
        ..Options::default()
    }
}

/// What `who`'s message queue holds, opened in order.
async fn queued(server: &TestServer, who: &Identity) -> Vec<(u64, QueueItem)> {
    let messages = server.http().fetch_all(who).await;
    messages
        .iter()
        .map(|m| (m.seq, who.open(QueueKind::Messages, m).expect("opens")))
        .collect()
}

#[tokio::test]
async fn messages_not_fetched_within_the_retention_are_dropped_and_the_client_is_told() {
    let server = TestServer::start(with_retention(2, 0));
    let http = server.http();
    let (phone, laptop) = phone_and_laptop(&server, "alice").await;
    assert_eq!(
        http.enqueue(&phone, &laptop.client_id(), b"old")
            .await
            .status,
        200
    );

    // The laptop does not fetch for a while: its message goes, and it is told so.
    let started = std::time::Instant::now();
    let expired = QueueItem::Notice(Notice::MessagesExpired {
        count: 1,
        after_secs: 2,
    });
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let batch: api::QueueBatch = http.fetch(&laptop, 0, 10, 0).await.decode();
        if batch.messages.first().map(|m| m.seq) != Some(1) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "never dropped");
    }
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "dropped before its time: {:?}",
        started.elapsed()
    );
    let phone_told = queued(&server, &phone).await;
    assert_eq!(
        phone_told,
        [(
            2,
            QueueItem::Notice(Notice::MessagesExpired {
                count: 1,
                after_secs: 2
            })
        )],
        "the phone's notice that the laptop was added waited as long"
    );

    // A message queued now is in time, and opens after the notice.
    assert_eq!(
        http.enqueue(&phone, &laptop.client_id(), b"new")
            .await
            .status,
        200
    );
    let items = queued(&server, &laptop).await;
    assert_eq!(
        items,
        [
            (2, expired),
            (
                3,
                QueueItem::FromOwnClient {
                    sender: phone.client_id(),
                    payload: b"new".to_vec(),
                }
            ),
        ]
    );
    let shown = server.admin_json(&["users", "show", "alice"]);
    assert!(shown["clients"][1]["last_seen"].is_string(), "{shown}");
}

#[tokio::test]
async fn a_device_silent_past_the_retention_is_deleted_and_the_users_other_devices_are_told() {
    let server = TestServer::start(with_retention(0, 3));
    let http = server.http();
    let mut carol = Identity::new(&server.user("carol"));
    assert_eq!(http.register(&mut carol, None).await.status, 201);
    server.admin(&["users", "deactivate", "carol"]);
    let (phone, laptop) = phone_and_laptop(&server, "alice").await;

    // The laptop fetches once and then stays silent; the phone keeps fetching.
    assert_eq!(http.fetch(&laptop, 0, 1, 0).await.status, 200);
    let started = std::time::Instant::now();
    let mut from = 1;
    let mut phone_saw = Vec::new();
    loop {
        let batch: api::QueueBatch = http.fetch(&phone, from, 10, 500).await.decode();
        for message in &batch.messages {
            phone_saw.push(phone.open(QueueKind::Messages, message).unwrap());
            from = message.seq + 1;
        }
        if phone_saw.iter().any(|item| {
            matches!(item, QueueItem::Notice(Notice::ClientDeleted { client_id }) if *client_id == laptop.client_id())
        }) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the laptop was never expired; the phone saw {phone_saw:?}"
        );
    }
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "expired before its time: {:?}",
        started.elapsed()
    );
    let refused = http.fetch(&laptop, 0, 10, 0).await;
    assert_eq!(refused.status, 401, "{}", refused.error_message());

    // The phone, active all along, is kept; so is the deactivated user's device.
    assert_eq!(http.fetch(&phone, from, 10, 0).await.status, 200);
    let shown = server.admin_json(&["users", "show", "alice"]);
    let clients = shown["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 1, "{shown}");
    assert_eq!(clients[0]["client"], phone.client_id().to_string());
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.admin(&["users", "reactivate", "carol"]);
    assert_eq!(http.fetch(&carol, 0, 10, 0).await.status, 200);
}

/// Deliveries waiting for `domain` in `server`'s outbox.
fn waiting_for(server: &TestServer, domain: &str) -> u64 {
    let status = server.admin_json(&["status"]);
    status["outbox"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["domain"] == domain)
        .map_or(0, |d| d["waiting"].as_u64().unwrap())
}

#[tokio::test]
async fn deliveries_for_a_domain_that_takes_nothing_past_the_retention_are_dropped() {
    let mut p = connected_pair("alice", "bob", Options::default()).await;
    // a keeps messages 3 s (and so deliveries for a domain that takes nothing), and retries
    // at least every second.
    let a = &mut p.servers[0];
    assert!(a.terminate().success());
    a.options.settings.extend([
        ("ROOST_RETENTION__MESSAGES_SECS", "3".to_owned()),
        ("ROOST_FEDERATION__RETRY_MAX_MS", "1000".to_owned()),
    ]);
    a.start_again();
    p.servers[1].kill();
    p.alice_phone
        .chat()
        .send(&p.bob, "while b is gone")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    assert!(waiting_for(&p.servers[0], "b.test") >= 1);
    let dropped = common::eventually(
        || waiting_for(&p.servers[0], "b.test") == 0,
        Duration::from_secs(20),
    )
    .await;
    assert!(dropped, "{}", p.servers[0].log());
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "dropped before its time: {:?}",
        started.elapsed()
    );
    // The log is read from the server's stderr as it comes: the line may trail the drop.
    let said = common::eventually(
        || {
            p.servers[0]
                .log()
                .contains("took nothing for longer than the retention")
        },
        Duration::from_secs(5),
    )
    .await;
    assert!(said, "{}", p.servers[0].log());

    // b is back: what is sent now arrives; what was dropped never does.
    p.servers[1].start_again();
    p.alice_phone
        .chat()
        .send(&p.bob, "b is back")
        .await
        .unwrap();
    let alice = p.alice.clone();
    let bob_phone = &p.bob_phone;
    settle(&[bob_phone], async || {
        chat_texts(bob_phone, &alice)
            .await
            .contains(&"b is back".to_owned())
    })
    .await;
    assert!(!chat_texts(bob_phone, &alice)
        .await
        .contains(&"while b is gone".to_owned()));
}

/// Groups the server holds, as its admin sees them.
fn groups_held(server: &TestServer) -> u64 {
    let status = server.admin_json(&["status"]);
    status["groups"]
        .as_u64()
        .unwrap_or_else(|| panic!("{status}"))
}

#[tokio::test]
async fn a_group_that_takes_no_request_past_the_retention_is_deleted_and_its_members_are_told() {
    const IDLE_SECS: u64 = 4;
    let server = TestServer::start(Options {
        settings: vec![("ROOST_RETENTION__IDLE_GROUPS_SECS", IDLE_SECS.to_string())],
        ..Options::default()
    });
    let devices = Devices::new();
    let (alice, bob) = (server.user("alice"), server.user("bob"));
    let alice_phone = devices.register(&server, "alice-phone", &alice).await;
    let bob_phone = devices.register(&server, "bob-phone", &bob).await;
    connect(&alice_phone, &bob_phone, &[]).await;
    for name in ["quiet", "busy"] {
        alice_phone.groups().create(name).await.unwrap();
        alice_phone.groups().add(name, &bob).await.unwrap();
    }
    bob_phone.sync().await.unwrap();
    // Their connection's group, "quiet" and "busy".
    assert_eq!(groups_held(&server), 3);

    // alice keeps writing in "busy"; "quiet" and the connection take nothing.
    let quiet_since = Instant::now();
    loop {
        alice_phone
            .groups()
            .send("busy", "still here")
            .await
            .unwrap();
        if groups_held(&server) == 1 {
            break;
        }
        assert!(
            quiet_since.elapsed() < Duration::from_secs(20),
            "the idle groups were never deleted"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        quiet_since.elapsed() >= Duration::from_secs(IDLE_SECS),
        "deleted before its time: {:?}",
        quiet_since.elapsed()
    );

    // bob's next word in "quiet" is refused as such, and his client marks the group ended.
    let refused = bob_phone
        .groups()
        .send("quiet", "anyone?")
        .await
        .unwrap_err();
    assert_eq!(
        (refused.status(), refused.code()),
        (Some(410), "group_expired"),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("retention.idle_groups_secs"),
        "{refused}"
    );
    let listed = bob_phone.groups().list().await.unwrap();
    let quiet = listed.iter().find(|g| g.name == "quiet").unwrap();
    assert!(quiet.removed, "{listed:?}");
    let again = bob_phone
        .groups()
        .send("quiet", "anyone?")
        .await
        .unwrap_err();
    assert_eq!(again.code(), "removed_from_group", "{again}");
    // Their connection is gone the same way.
    let chat = bob_phone.chat().send(&alice, "hello?").await.unwrap_err();
    assert_eq!(chat.code(), "group_expired", "{chat}");

    // The group in use goes on for both.
    bob_phone.sync().await.unwrap();
    bob_phone.groups().send("busy", "me too").await.unwrap();
    assert_eq!(groups_held(&server), 1);
}
