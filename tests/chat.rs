//! Chat in the connection group: alice and bob, each with a phone and a laptop, send messages;
//! every client ends up with the same log, also across a server crash; the command line sends,
//! lists and watches.

mod common;

use std::time::Duration;

use common::{
    devices::{run_json as run, Devices},
    Options, TestServer,
};
use roost_client::{Client, Error, ServerError, StoredMessage, SyncReport};
use roost_protocol::UserName;

/// alice and bob, each with a phone and a laptop, all four in their connection group.
struct People {
    alice: UserName,
    bob: UserName,
    alice_phone: Client,
    alice_laptop: Client,
    bob_phone: Client,
    bob_laptop: Client,
}

impl People {
    fn all(&self) -> [&Client; 4] {
        [
            &self.alice_phone,
            &self.alice_laptop,
            &self.bob_phone,
            &self.bob_laptop,
        ]
    }

    /// The other user, as seen from `client`.
    fn peer_of(&self, client: &Client) -> &UserName {
        if client.user() == &self.alice {
            &self.bob
        } else {
            &self.alice
        }
    }
}

/// Connects alice and bob as `tests/connect.rs` does: alice's phone connects, bob's phone
/// accepts, and every client syncs.
async fn connected(server: &TestServer, devices: &Devices) -> People {
    let alice = server.user("alice");
    let bob = server.user("bob");
    let p = People {
        alice_phone: devices.register(server, "alice-phone", &alice).await,
        alice_laptop: devices.add_client(server, "alice-laptop", &alice).await,
        bob_phone: devices.register(server, "bob-phone", &bob).await,
        bob_laptop: devices.add_client(server, "bob-laptop", &bob).await,
        alice,
        bob,
    };
    let group_id = p
        .alice_phone
        .connections()
        .connect(&p.bob)
        .await
        .unwrap()
        .group_id;
    let requests = p.bob_phone.connections().requests().await.unwrap();
    let [request] = requests.received.as_slice() else {
        panic!("expected one request, got {:?}", requests.received);
    };
    p.bob_phone.connections().accept(&request.id).await.unwrap();
    for client in [&p.alice_laptop, &p.bob_laptop, &p.alice_phone] {
        let report = client.sync().await.unwrap();
        assert!(report.failed.is_empty(), "{:?}", report.failed);
    }
    p.alice_laptop.sync().await.unwrap();
    let status = p.alice_phone.groups().status(&group_id).unwrap().unwrap();
    assert_eq!(status.members, 4);
    for client in p.all() {
        let seen = client.groups().status(&group_id).unwrap().unwrap();
        assert_eq!((seen.epoch, seen.members), (status.epoch, status.members));
    }
    p
}

/// A client's first request after the server crashed may meet a connection the crash closed;
/// the user tries again.
async fn send(client: &Client, peer: &UserName, text: &str) -> StoredMessage {
    for _ in 0..3 {
        match client.chat().send(peer, text).await {
            Ok(sent) => return sent,
            Err(Error::Server(ServerError::Network(_))) => {}
            Err(e) => panic!("sending {text}: {e}"),
        }
    }
    panic!("sending {text}: the server stays unreachable")
}

async fn sync(client: &Client) -> SyncReport {
    for _ in 0..3 {
        match client.sync().await {
            Ok(report) => return report,
            Err(Error::Server(ServerError::Network(_))) => {}
            Err(e) => panic!("sync: {e}"),
        }
    }
    panic!("sync: the server stays unreachable")
}

fn log(messages: &[StoredMessage]) -> Vec<(String, String)> {
    messages
        .iter()
        .map(|m| (sender(m), m.text.clone()))
        .collect()
}

#[tokio::test]
async fn every_client_has_the_same_messages_in_the_same_order_across_a_server_crash() {
    let mut server = TestServer::start(Options::default());
    let devices = Devices::new();
    let p = connected(&server, &devices).await;
    let (alice, bob) = (p.alice.to_string(), p.bob.to_string());

    let script = [
        (true, "a1"),
        (true, "a2"),
        (false, "b1"),
        (true, "a3"),
        (false, "b2"),
        (true, "a4"),
        (false, "b3"),
        (true, "a5"),
    ];
    let mut expected = Vec::new();
    for (i, (from_alice, text)) in script.into_iter().enumerate() {
        if i == 4 {
            // The laptops read part of it, then the server crashes and comes back.
            p.alice_laptop.sync().await.unwrap();
            p.bob_laptop.sync().await.unwrap();
            server.restart();
        }
        let (client, peer, from) = if from_alice {
            (&p.alice_phone, &p.bob, &alice)
        } else {
            (&p.bob_phone, &p.alice, &bob)
        };
        let sent = send(client, peer, text).await;
        assert_eq!((sender(&sent), sent.text.as_str()), (from.clone(), text));
        expected.push((from.clone(), text.to_owned()));
    }

    for client in p.all() {
        let report = sync(client).await;
        assert!(report.failed.is_empty(), "{:?}", report.failed);
    }
    let mut places = Vec::new();
    for client in p.all() {
        let messages = client.chat().messages(p.peer_of(client)).await.unwrap();
        assert_eq!(log(&messages), expected, "on {}", client.client_id());
        let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        places.push(seqs);
    }
    // Each message has one place in the group's order, the same on every client.
    assert!(places.windows(2).all(|w| w[0] == w[1]), "{places:?}");
    // Nothing more comes, and nothing is stored twice.
    for client in p.all() {
        let report = client.sync().await.unwrap();
        assert_eq!(report.messages, 0);
        assert_eq!(
            client
                .chat()
                .messages(p.peer_of(client))
                .await
                .unwrap()
                .len(),
            8
        );
    }
}

#[tokio::test]
async fn sending_to_someone_not_connected_is_refused() {
    let server = TestServer::start(Options::default());
    let devices = Devices::new();
    let alice = server.user("alice");
    let phone = devices.register(&server, "alice-phone", &alice).await;
    let error = phone
        .chat()
        .send(&server.user("carol"), "hi")
        .await
        .unwrap_err();
    assert_eq!(error.code(), "not_connected");
}

#[tokio::test]
async fn the_command_line_sends_lists_and_watches_messages() {
    let server = TestServer::start(Options::default());
    let devices = Devices::new();
    let p = connected(&server, &devices).await;
    let (alice, bob) = (p.alice.to_string(), p.bob.to_string());
    let People {
        alice_phone,
        bob_phone,
        bob_laptop,
        ..
    } = p;
    // The command line opens these state directories itself.
    drop(bob_phone);
    drop(bob_laptop);

    alice_phone
        .chat()
        .send(&server.user("bob"), "from the library")
        .await
        .unwrap();
    let sent = run(
        devices.path("bob-phone"),
        &["send", &alice, "from the command line"],
    )
    .await;
    assert_eq!(sent["from"], bob);
    assert_eq!(sent["text"], "from the command line");
    run(devices.path("bob-laptop"), &["sync"]).await;
    let listed = run(devices.path("bob-laptop"), &["messages", &alice]).await;
    let messages = listed["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{listed}");
    assert_eq!(messages[0]["from"], alice);
    assert_eq!(messages[0]["text"], "from the library");
    assert_eq!(messages[1]["from"], bob);
    assert_eq!(messages[1]["text"], "from the command line");
    // Its place in the group's order, as the sender was told it.
    assert_eq!(messages[1]["seq"], sent["seq"]);
    assert!(messages[0]["seq"].as_u64() < sent["seq"].as_u64());
    assert!(messages[1]["at"].as_u64().unwrap() > 0);

    // `watch --for 3` prints what arrives while it runs, then stops by itself.
    let watcher = std::process::Command::new(common::client_binary())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ROOST_CLIENT_STATE", devices.path("bob-laptop"))
        .args(["watch", "--for", "3"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run roost-client watch");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    alice_phone
        .chat()
        .send(&server.user("bob"), "while watching")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let output = tokio::task::spawn_blocking(move || watcher.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("{alice}: while watching")),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // It was stored, too.
    let listed = run(devices.path("bob-laptop"), &["messages", &alice]).await;
    assert_eq!(listed["messages"][2]["text"], "while watching");
}

/// Who a stored message says sent it; "(unknown)" if it could not tell.
fn sender(message: &StoredMessage) -> String {
    message
        .from
        .as_ref()
        .map_or("(unknown)".to_owned(), ToString::to_string)
}
