//! Hostile load: what one caller, address or peer server can make a homeserver hold or do is
//! bounded, and a user's queues stay readable whatever was put into them.

mod common;

use std::time::Duration;

use common::{
    devices::Devices,
    peer::{self, delivery_for, signed_relay},
    phone_and_laptop, Identity, Options, TestServer,
};
use roost_protocol::{
    api::{self, ConnectionPackages, QueueBatch, QueueItem},
    codec,
    connection::{ConnectionPackage, SealedConnectionRequest},
    crypto::Sealed,
    federation::{RelayOutcome, RelayReceipt, FED_DELIVER},
    SigningKey,
};

/// Asserts that `response` is a refusal with `status` and `code` whose sentence names the
/// `setting` an admin would change.
fn refused_naming(response: &common::Response, status: u16, code: &str, setting: &str) {
    assert_eq!(
        (response.status, response.error_code().as_str()),
        (status, code)
    );
    let message = response.error_message();
    assert!(message.contains(setting), "{message}");
}

/// A sealed request for `package` that no client can open: `size` bytes of junk.
fn junk_request(package: &ConnectionPackage, size: usize) -> Vec<u8> {
    codec::encode(&SealedConnectionRequest {
        connection_package: package.hash(),
        sealed: Sealed {
            encapsulated_key: [7; 32],
            ciphertext: vec![0xAB; size],
        },
    })
}

/// Discovers `user` until its last-resort package comes back (the one-time ones are used up).
async fn last_resort_of(server: &TestServer, user: &roost_protocol::UserName) -> ConnectionPackage {
    for _ in 0..100 {
        let found: ConnectionPackages = server.http().discover(user).await.decode();
        if let Some(package) = found.packages.into_iter().find(|p| p.body.last_resort) {
            return package;
        }
    }
    panic!("no last-resort package of {user}");
}

#[tokio::test]
async fn a_connection_request_no_client_would_open_is_refused_and_uses_up_nothing() {
    let server = TestServer::start(Options {
        max_body_bytes: 2 * 1024 * 1024,
        settings: vec![("ROOST_LIMITS__QUEUE_MESSAGE_BYTES", "3145728".into())],
        ..Options::default()
    });
    let http = server.http();
    let mut bob = Identity::new(&server.user("bob"));
    http.register(&mut bob, None).await;
    let (package, _) = bob.connection_package(3600, false);
    http.publish(&bob, vec![package]).await;
    let found: ConnectionPackages = http.discover(&bob.user).await.decode();
    let served = &found.packages[0];
    let path = api::as_connection_queue(&bob.client_id());

    // Larger than any client opens: refused by name. Much larger: not even read.
    for (size, refused) in [
        (100 * 1024, "connection_request_too_large"),
        (1024 * 1024, "body_too_large"),
    ] {
        let response = http
            .send("POST", &path, junk_request(served, size), None)
            .await;
        assert_eq!(
            (response.status, response.error_code().as_str()),
            (413, refused)
        );
    }
    // The one-time package was not used up by it: a request of the size clients open is taken.
    let response = http
        .send("POST", &path, junk_request(served, 1000), None)
        .await;
    assert_eq!(response.status, 202);
}

#[tokio::test]
async fn junk_in_a_connection_queue_never_hides_a_real_request() {
    let server = TestServer::start(Options {
        max_body_bytes: 1024 * 1024,
        settings: vec![(
            "ROOST_LIMITS__REQUESTS_PER_LAST_RESORT_PER_HOUR",
            "100".into(),
        )],
        ..Options::default()
    });
    let devices = Devices::new();
    let bob = devices.register(&server, "bob", &server.user("bob")).await;
    let alice = devices
        .register(&server, "alice", &server.user("alice"))
        .await;

    // 70 requests of 60 KiB each: more than a client reads in one answer (4 MiB).
    let package = last_resort_of(&server, bob.user()).await;
    let path = api::as_connection_queue(&package.client_id());
    for _ in 0..70 {
        let response = server
            .http()
            .send("POST", &path, junk_request(&package, 60 * 1024), None)
            .await;
        assert_eq!(response.status, 202);
    }
    alice.connections().connect(bob.user()).await.unwrap();

    let requests = bob.connections().requests().await.unwrap();
    assert_eq!(requests.rejected.len(), 70);
    assert_eq!(requests.received.len(), 1);
    assert_eq!(requests.received[0].from(), alice.user());
}

#[tokio::test]
async fn a_queue_of_large_messages_is_read_in_batches_a_client_accepts() {
    let server = TestServer::start(Options {
        max_body_bytes: 1024 * 1024,
        ..Options::default()
    });
    let devices = Devices::new();
    let user = server.user("bob");
    let phone = devices.register(&server, "phone", &user).await;
    let laptop = devices.add_client(&server, "laptop", &user).await;
    phone.receive(Duration::ZERO).await.unwrap();
    for n in 0..6u8 {
        laptop
            .send_to_own_client(phone.client_id(), vec![n; 900 * 1024])
            .await
            .unwrap();
    }
    let received = phone.receive(Duration::ZERO).await.unwrap();
    let payloads: Vec<u8> = received
        .iter()
        .filter_map(|r| match &r.item {
            Ok(QueueItem::FromOwnClient { payload, .. }) => Some(payload[0]),
            _ => None,
        })
        .collect();
    assert_eq!(payloads, [0, 1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn a_full_queue_refuses_more_by_name_until_its_client_reads_it_even_after_a_restart() {
    let mut server = TestServer::start(Options {
        settings: vec![("ROOST_LIMITS__QUEUE_MAX_MESSAGES", "5".into())],
        ..Options::default()
    });
    let http = server.http();
    let (phone, laptop) = phone_and_laptop(&server, "bob").await;
    // The phone was told the laptop was added: one message.
    for _ in 0..4 {
        assert_eq!(
            http.enqueue(&laptop, &phone.client_id(), b"hi")
                .await
                .status,
            200
        );
    }
    let full = http
        .enqueue(&laptop, &phone.client_id(), b"one too many")
        .await;
    refused_naming(&full, 507, "queue_full", "limits.queue_max_messages");

    server.restart();
    let http = server.http();
    let full = http
        .enqueue(&laptop, &phone.client_id(), b"one too many")
        .await;
    assert_eq!(full.status, 507);
    // The admin sees the full queue, largest first, against the limits.
    let usage: serde_json::Value = server.admin_json(&["inspect", "usage"]);
    let largest = &usage["message_queues"]["largest"][0];
    assert_eq!(largest["client"], phone.client_id().to_string());
    assert_eq!(largest["messages"], 5);
    let batch: QueueBatch = http.fetch(&phone, 0, 100, 0).await.decode();
    assert_eq!(batch.messages.len(), 5);
    assert_eq!(http.ack(&phone, batch.messages[1].seq).await.status, 204);
    assert_eq!(
        http.enqueue(&laptop, &phone.client_id(), b"room")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_peer_server_cannot_jam_a_queue_with_large_relays() {
    let peer_key = SigningKey::generate();
    let stand_in = peer::stand_in("peer.test", &peer_key).await;
    let server = TestServer::start(Options {
        domain: "b.test".into(),
        max_body_bytes: 1024 * 1024,
        resolve: vec![format!("peer.test=http://127.0.0.1:{}", stand_in.port)],
        ..Options::default()
    });
    let devices = Devices::new();
    let bob = devices.register(&server, "bob", &server.user("bob")).await;
    bob.receive(Duration::ZERO).await.unwrap();
    // 30 deliveries of 200 KB: 6 MB in all, relayed four at a time.
    for _ in 0..8 {
        let mut deliveries = Vec::new();
        for _ in 0..4 {
            deliveries.push(
                delivery_for(&server, "b.test", Some(bob.client_id()), vec![1; 200_000]).await,
            );
        }
        let (body, header) = signed_relay("peer.test", &peer_key, deliveries);
        let response = server
            .http()
            .send("POST", FED_DELIVER, body, Some(header))
            .await;
        let receipt: RelayReceipt = response.decode();
        assert!(receipt.outcomes.iter().all(|o| *o == RelayOutcome::Queued));
    }
    // They are no group messages bob knows of, but reading past them must work.
    let report = bob.sync().await.unwrap();
    assert_eq!(report.failed.len(), 32, "{report:?}");
}

#[tokio::test]
async fn a_peer_key_answer_is_read_only_up_to_its_limit() {
    let endless = peer::endless().await;
    let server = TestServer::start(Options {
        domain: "b.test".into(),
        resolve: vec![format!("endless.test=http://127.0.0.1:{}", endless.port)],
        ..Options::default()
    });
    let started = std::time::Instant::now();
    let delivery = delivery_for(&server, "b.test", None, vec![1]).await;
    let (body, header) = signed_relay("endless.test", &SigningKey::generate(), vec![delivery]);
    let response = server
        .http()
        .send("POST", FED_DELIVER, body, Some(header))
        .await;
    assert_eq!(
        (response.status, response.error_code().as_str()),
        (401, "peer_unreachable")
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // What the kernel's buffers took, not the gigabyte on offer.
    assert!(
        endless.written() < 64 * 1024 * 1024,
        "{}",
        endless.written()
    );
}

#[tokio::test]
async fn free_sealed_requests_are_limited_per_address_and_per_last_resort_package() {
    // Free, as an admin may make them: paid ones (the default) are limited by their tokens
    // instead of per address, so that users behind one address are not one (tests/tokens.rs).
    let server = TestServer::start(Options {
        settings: vec![
            ("ROOST_TOKENS__COSTS__CONNECTION_REQUEST", "0".into()),
            ("ROOST_LIMITS__CONNECTION_REQUESTS_BURST", "12".into()),
            ("ROOST_LIMITS__CONNECTION_REQUESTS_PER_MINUTE", "1".into()),
            (
                "ROOST_LIMITS__REQUESTS_PER_LAST_RESORT_PER_HOUR",
                "5".into(),
            ),
        ],
        ..Options::default()
    });
    let http = server.http();
    let mut bob = Identity::new(&server.user("bob"));
    http.register(&mut bob, None).await;
    let (last_resort, _) = bob.connection_package(3600, true);
    let one_time: Vec<ConnectionPackage> = (0..6)
        .map(|_| bob.connection_package(3600, false).0)
        .collect();
    http.publish(&bob, one_time).await;
    http.publish(&bob, vec![last_resort]).await;
    let mut served = Vec::new();
    for _ in 0..7 {
        let found: ConnectionPackages = http.discover(&bob.user).await.decode();
        served.push(found.packages[0].clone());
    }
    let path = api::as_connection_queue(&bob.client_id());
    let post =
        |package: &ConnectionPackage| http.send("POST", &path, junk_request(package, 100), None);

    // The last resort lets in five, then says when to come back.
    let last_resort = served.pop().unwrap();
    assert!(last_resort.body.last_resort);
    for _ in 0..5 {
        assert_eq!(post(&last_resort).await.status, 202);
    }
    let refused = post(&last_resort).await;
    refused_naming(
        &refused,
        429,
        "rate_limited",
        "limits.requests_per_last_resort_per_hour",
    );
    // One-time packages are not held up by it: each lets in its one request...
    for package in &served {
        assert_eq!(post(package).await.status, 202);
    }
    // ... until this address has used up its burst of 12.
    let refused = post(&served[0]).await;
    refused_naming(
        &refused,
        429,
        "rate_limited",
        "limits.connection_requests_per_minute",
    );
}

/// Sends `head` on a new connection to `server`; returns the stream.
async fn raw_connection(server: &TestServer, head: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = server.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Reads what the server answers on `stream`, up to its first blank line and a little more.
async fn answer(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buffer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
        .await
        .expect("an answer in time")
        .unwrap();
    String::from_utf8_lossy(&buffer[..n]).into_owned()
}

#[tokio::test]
async fn a_body_that_trickles_in_is_cut_off_at_the_deadline() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start(Options {
        settings: vec![("ROOST_LIMITS__BODY_READ_SECS", "2".into())],
        ..Options::default()
    });
    let started = std::time::Instant::now();
    let mut stream = raw_connection(
        &server,
        &format!(
            "POST {} HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n",
            api::AS_USERS
        ),
    )
    .await;
    let trickle = async {
        for _ in 0..10 {
            if stream.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    };
    trickle.await;
    let answer = answer(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[tokio::test]
async fn connections_beyond_an_addresss_limit_are_refused_and_others_still_served() {
    let server = TestServer::start(Options {
        settings: vec![("ROOST_LIMITS__CONNECTIONS_PER_ADDRESS", "5".into())],
        ..Options::default()
    });
    // Five connections holding a request each, whose bodies never come.
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(
            raw_connection(
                &server,
                &format!(
                    "POST {} HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n",
                    api::AS_USERS
                ),
            )
            .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut sixth = raw_connection(&server, "GET /health HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let refused = answer(&mut sixth).await;
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    assert!(
        refused.contains("limits.connections_per_address"),
        "{refused}"
    );
    // Once they are gone, the address is served again.
    drop(held);
    drop(sixth);
    let mut served = false;
    for _ in 0..50 {
        let health = reqwest::get(format!("{}/health", server.url)).await;
        if health.is_ok_and(|r| r.status() == 200) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served);
}

#[tokio::test]
async fn a_peer_server_may_relay_only_so_much_and_is_told_when_to_come_back() {
    let peer_key = SigningKey::generate();
    let stand_in = peer::stand_in("peer.test", &peer_key).await;
    let server = TestServer::start(Options {
        domain: "b.test".into(),
        resolve: vec![format!("peer.test=http://127.0.0.1:{}", stand_in.port)],
        settings: vec![
            ("ROOST_LIMITS__RELAYS_PER_MINUTE_PER_DOMAIN", "60".into()),
            ("ROOST_LIMITS__RELAYS_BURST_PER_DOMAIN", "300".into()),
        ],
        ..Options::default()
    });
    let relay = || async {
        let mut deliveries = Vec::new();
        for _ in 0..200 {
            deliveries.push(delivery_for(&server, "b.test", None, vec![1]).await);
        }
        let (body, header) = signed_relay("peer.test", &peer_key, deliveries);
        server
            .http()
            .send("POST", FED_DELIVER, body, Some(header))
            .await
    };
    assert_eq!(relay().await.status, 200);
    let refused = relay().await;
    refused_naming(
        &refused,
        429,
        "rate_limited",
        "limits.relays_per_minute_per_domain",
    );
}

#[tokio::test]
async fn malformed_http_cannot_flood_the_log() {
    let server = TestServer::start(Options::default());
    for _ in 0..20 {
        let mut stream =
            raw_connection(&server, "GET /health HTTP/1.1\r\nbad header\r\n\r\n").await;
        assert!(answer(&mut stream).await.starts_with("HTTP/1.1 400"));
    }
    let health = server.http().send("GET", "/health", vec![], None).await;
    assert_eq!(health.status, 200);
    let lines = server.log().matches("request parse error").count();
    assert_eq!(lines, 1, "{}", server.log());
}

#[tokio::test]
async fn a_user_may_have_only_so_many_clients() {
    let server = TestServer::start(Options {
        settings: vec![("ROOST_LIMITS__CLIENTS_PER_USER", "2".into())],
        ..Options::default()
    });
    let http = server.http();
    let (phone, laptop) = phone_and_laptop(&server, "bob").await;
    let mut tablet = Identity::new(&server.user("bob"));
    let refused = http.add_client(&mut tablet, common::PASSWORD).await;
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (409, "too_many_clients")
    );
    // Room again once one is deleted.
    let path = api::as_own_client(&laptop.client_id());
    assert_eq!(
        http.signed(&phone, "DELETE", &path, vec![]).await.status,
        204
    );
    assert_eq!(
        http.add_client(&mut tablet, common::PASSWORD).await.status,
        201
    );
}

#[tokio::test]
async fn a_group_may_have_only_so_many_members() {
    use common::mls::{self, create_group, Member};
    let server = TestServer::start(Options {
        settings: vec![("ROOST_LIMITS__MEMBERS_PER_GROUP", "2".into())],
        ..Options::default()
    });
    let http = server.http();
    let mut alice = Member::register(&server, "alice").await;
    let bob = Member::register(&server, "bob").await;
    let carol = Member::register(&server, "carol").await;
    let (group_id, keys) = create_group(&http, server.domain(), &mut alice, false).await;
    for (joiner, expected) in [(&bob, 200), (&carol, 409)] {
        let (status, _) =
            mls::add_member(&http, server.domain(), &group_id, &keys, &mut alice, joiner).await;
        assert_eq!(status, expected);
        if status == 409 {
            break;
        }
    }
}

#[tokio::test]
async fn an_address_may_send_only_so_many_bytes_a_minute() {
    let server = TestServer::start(Options {
        settings: vec![
            (
                "ROOST_LIMITS__BODY_BYTES_BURST_PER_ADDRESS",
                "100000".into(),
            ),
            (
                "ROOST_LIMITS__BODY_BYTES_PER_MINUTE_PER_ADDRESS",
                "1000".into(),
            ),
        ],
        ..Options::default()
    });
    let http = server.http();
    let (phone, laptop) = phone_and_laptop(&server, "bob").await;
    let payload = vec![7u8; 40_000];
    assert_eq!(
        http.enqueue(&laptop, &phone.client_id(), &payload)
            .await
            .status,
        200
    );
    assert_eq!(
        http.enqueue(&laptop, &phone.client_id(), &payload)
            .await
            .status,
        200
    );
    let refused = http.enqueue(&laptop, &phone.client_id(), &payload).await;
    refused_naming(
        &refused,
        429,
        "rate_limited",
        "limits.body_bytes_per_minute_per_address",
    );
    // Reads are not held up.
    assert_eq!(http.fetch(&phone, 0, 10, 0).await.status, 200);
}

#[tokio::test]
async fn a_groups_state_may_take_only_so_many_bytes() {
    use common::mls::{self, create_group, Member};
    // What a group of two takes, measured on a server of its own.
    let state_bytes = |server: &TestServer, group_id: &[u8]| {
        let inspected = server.admin_json(&["inspect", "group", &hex::encode(group_id)]);
        inspected["state_bytes"].as_u64().unwrap()
    };
    let measured = TestServer::start(Options::default());
    let http = measured.http();
    let mut alice = Member::register(&measured, "alice").await;
    let bob = Member::register(&measured, "bob").await;
    let (group_id, keys) = create_group(&http, measured.domain(), &mut alice, false).await;
    let one = state_bytes(&measured, &group_id);
    let (status, _) =
        mls::add_member(&http, measured.domain(), &group_id, &keys, &mut alice, &bob).await;
    assert_eq!(status, 200);
    let two = state_bytes(&measured, &group_id);
    eprintln!("a group's sealed state: {one} bytes with one member, {two} with two");
    assert!(two > one + 200, "{one} → {two}");

    let server = TestServer::start(Options {
        settings: vec![(
            "ROOST_LIMITS__GROUP_STATE_BYTES",
            ((one + two) / 2).to_string(),
        )],
        ..Options::default()
    });
    let http = server.http();
    let mut alice = Member::register(&server, "alice").await;
    let bob = Member::register(&server, "bob").await;
    let (group_id, keys) = create_group(&http, server.domain(), &mut alice, false).await;
    let before = state_bytes(&server, &group_id);
    // Made now: the adder's own copy of the group moves on with its commit, refused or not.
    let message = alice.message_request(&keys, b"still here");
    let (status, refused) =
        mls::add_member(&http, server.domain(), &group_id, &keys, &mut alice, &bob).await;
    assert_eq!(status, 413);
    let again = http
        .post(&roost_protocol::ds::ds_commit(&group_id), &refused)
        .await;
    assert_eq!(again.error_code(), "group_state_too_large");
    assert!(again.error_message().contains("limits.group_state_bytes"));
    // Refused by name; the group is as it was and goes on.
    assert_eq!(state_bytes(&server, &group_id), before);
    let sent = http
        .send(
            "POST",
            &roost_protocol::ds::ds_messages(&group_id),
            roost_protocol::codec::encode(&message),
            None,
        )
        .await;
    assert_eq!(sent.status, 202);
}
