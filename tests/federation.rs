//! Federation: users on two (or three) real homeservers, each with its own store, domain and
//! port, connect, chat and share groups exactly as on one; relays survive an outage and
//! restarts; server-to-server requests are refused unless signed by the domain they claim; and
//! neither server learns the other side's user name.

mod common;

use std::time::Duration;

use common::{
    federation,
    pair::{chat_texts, connected_pair, settle, texts, Pair},
    peer::{beside_a_stand_in_peer, delivery_for, outcome_codes, relay, signed_relay},
    Options, TestServer,
};
use roost_client::Client;
use roost_protocol::{
    auth::ServerSignature,
    codec,
    ds::GroupDelivery,
    federation::{FederatedDelivery, FED_DELIVER, MAX_RELAY_DELIVERIES},
    ids::now_millis,
    SigningKey,
};

#[tokio::test]
async fn users_on_two_homeservers_connect_and_chat_on_all_four_clients() {
    let p = connected_pair("alice", "bob", Options::default()).await;
    for client in p.all() {
        let contacts = client.contacts().list().await.unwrap();
        let peer = p.peer_of(client);
        assert_eq!(contacts[0].peer.as_ref(), Some(peer));
    }
    let script = [
        (&p.alice_phone, &p.bob, "hello from a"),
        (&p.bob_laptop, &p.alice, "hello from b"),
        (&p.alice_laptop, &p.bob, "how is b?"),
        (&p.bob_phone, &p.alice, "fine, and a?"),
    ];
    let mut expected = Vec::new();
    for (client, peer, text) in script {
        // Each sender first sees what came before, as a person would.
        let all = p.all();
        let before = expected.len();
        settle(&all, async || {
            let mut ok = true;
            for client in all {
                let peer = p.peer_of(client);
                ok &= client.chat().messages(peer).await.unwrap().len() == before;
            }
            ok
        })
        .await;
        client.chat().send(peer, text).await.unwrap();
        expected.push((client.user().to_string(), text.to_owned()));
    }
    let all = p.all();
    settle(&all, async || {
        let mut ok = true;
        for client in all {
            let peer = p.peer_of(client);
            ok &= client.chat().messages(peer).await.unwrap().len() == expected.len();
        }
        ok
    })
    .await;
    for client in p.all() {
        let peer = p.peer_of(client);
        assert_eq!(
            texts(&client.chat().messages(peer).await.unwrap()),
            expected
        );
    }
}

/// alice's laptop (on a) creates a group on a's DS and adds bob (on b, both clients); once all
/// four clients are in it, bob's phone says `text` there, and every client gets it.
async fn shared_group(p: &Pair, name: &str, text: &str) {
    p.alice_laptop.groups().create(name).await.unwrap();
    assert_eq!(p.alice_laptop.groups().add(name, &p.bob).await.unwrap(), 2);
    let all = p.all();
    settle(&all, async || {
        let mut ok = true;
        for client in all {
            let groups = client.groups().list().await.unwrap();
            ok &= groups.len() == 1 && groups[0].members == 4;
        }
        ok
    })
    .await;
    p.bob_phone.groups().send(name, text).await.unwrap();
    settle(&all, async || {
        let mut ok = true;
        for client in all {
            ok &= client.groups().messages(name).await.unwrap().len() == 1;
        }
        ok
    })
    .await;
}

#[tokio::test]
async fn a_group_on_one_homeserver_takes_members_from_both_and_loses_them_again() {
    let p = connected_pair("alice", "bob", Options::default()).await;
    shared_group(&p, "across", "b in a's group").await;
    let members = p.alice_phone.groups().members("across").await.unwrap();
    assert_eq!(members, [p.alice.clone(), p.bob.clone()]);

    // alice (on a) removes bob (on b): both of his clients.
    assert_eq!(
        p.alice_phone
            .groups()
            .remove("across", &p.bob)
            .await
            .unwrap(),
        2
    );
    let bobs = [&p.bob_phone, &p.bob_laptop];
    settle(&bobs, async || {
        let mut ok = true;
        for client in bobs {
            ok &= client.groups().list().await.unwrap()[0].removed;
        }
        ok
    })
    .await;
    let error = p
        .bob_laptop
        .groups()
        .send("across", "still there?")
        .await
        .unwrap_err();
    assert_eq!(error.code(), "removed_from_group");
}

/// A group on a's DS whose members are all on b (alice made it and left): a message's copies
/// all go through a's outbox, and the flush that makes them durable there makes the DS's own
/// write durable too — one flush on a, not one for the group and one for the outbox.
#[tokio::test]
async fn a_message_relayed_to_another_server_is_made_durable_with_its_group_write_in_one_flush() {
    let p = connected_pair("alice", "bob", Options::default()).await;
    shared_group(&p, "theirs", "hello").await;
    assert_eq!(p.alice_laptop.groups().leave("theirs").await.unwrap(), 2);
    // alice's clients sync too: a commit of bob's may pass over her proposal to leave, which
    // her next sync makes again.
    settle(&p.all(), async || {
        let members = p.bob_phone.groups().members("theirs").await.unwrap();
        members == [p.bob.clone()]
    })
    .await;
    let bobs = [&p.bob_phone, &p.bob_laptop];
    for client in bobs {
        client.sync().await.unwrap();
    }

    let a = &p.servers[0];
    let before = a.flushes();
    p.bob_phone.groups().send("theirs", "only b").await.unwrap();
    assert_eq!(a.flushes() - before, 1);
    settle(&bobs, async || {
        let log = p.bob_laptop.groups().messages("theirs").await.unwrap();
        log.last().is_some_and(|m| m.text == "only b")
    })
    .await;
}

#[tokio::test]
async fn messages_sent_while_the_other_homeserver_is_down_arrive_once_and_in_order() {
    let mut p = connected_pair("alice", "bob", Options::default()).await;
    p.servers[1].kill();
    let texts_sent: Vec<String> = (1..=6).map(|i| format!("while b is down {i}")).collect();
    for (i, text) in texts_sent.iter().enumerate() {
        if i == 3 {
            // a crashes too, with relays still in its outbox, and comes back.
            p.servers[0].restart();
        }
        let mut sent = None;
        for _ in 0..3 {
            match p.alice_phone.chat().send(&p.bob, text).await {
                Ok(message) => {
                    sent = Some(message);
                    break;
                }
                // The first request after a's restart may meet a closed connection.
                Err(roost_client::Error::Server(roost_client::ServerError::Network(_))) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert!(sent.is_some());
    }
    // Let a retry against the dead server a few times, then bring b back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = p.servers[0].log();
    assert!(log.contains("relaying failed, retrying"), "{log}");
    // The operator sees the backlog (through the running server's admin socket).
    let outbox = inspect(&p.servers[0], &["outbox".into()]);
    assert_eq!(outbox["outbox"][0]["domain"], "b.test", "{outbox}");
    assert!(
        outbox["outbox"][0]["waiting"].as_u64().unwrap() >= 6,
        "{outbox}"
    );
    assert!(
        log.contains("resuming relays"),
        "the backlog outlived a kill -9: {log}"
    );
    p.servers[1].start_again();
    let clients = [&p.bob_phone, &p.bob_laptop];
    let alice = p.alice.clone();
    settle(&clients, async || {
        let mut ok = true;
        for client in clients {
            ok &= client.chat().messages(&alice).await.unwrap().len() >= texts_sent.len();
        }
        ok
    })
    .await;
    for client in clients {
        // Nothing more comes: each message arrived exactly once.
        client.sync().await.unwrap();
        let got = chat_texts(client, &alice).await;
        assert_eq!(got, texts_sent);
    }
}

#[tokio::test]
async fn a_server_may_relay_only_for_its_own_domain_and_only_signed() {
    let (peer_key, servers) = beside_a_stand_in_peer(vec!["denied.test".into()]).await;
    let b = &servers[1];
    let forged = SigningKey::generate();

    // Signed properly by peer.test: taken, but the queue it names does not exist here.
    assert_eq!(
        relay(b, "peer.test", &peer_key, "b.test").await,
        (200, "unknown_queue".into())
    );
    // The same signed request again is a replay.
    let (status, _) = {
        let delivery = delivery_for(b, "b.test", None, vec![1]).await;
        let (body, header) = signed_relay("peer.test", &peer_key, vec![delivery]);
        let first = b
            .http()
            .send("POST", FED_DELIVER, body.clone(), Some(header.clone()))
            .await;
        assert_eq!(first.status, 200);
        let again = b.http().send("POST", FED_DELIVER, body, Some(header)).await;
        (again.status, again.error_code())
    };
    assert_eq!(status, 401);
    // Signed by peer.test, but addressed to another domain.
    assert_eq!(
        relay(b, "peer.test", &peer_key, "a.test").await,
        (200, "wrong_domain".into())
    );
    // Claiming to be a.test, signed by a key that is not a.test's: a server speaking for
    // another domain.
    assert_eq!(
        relay(b, "a.test", &peer_key, "b.test").await,
        (401, "unauthenticated".into())
    );
    assert_eq!(
        relay(b, "a.test", &forged, "b.test").await,
        (401, "unauthenticated".into())
    );
    // Unsigned, or signed as a client.
    let response = b
        .http()
        .send("POST", FED_DELIVER, vec![1, 2, 3], None)
        .await;
    assert_eq!(
        (response.status, response.error_code().as_str()),
        (401, "unauthenticated")
    );
    assert_eq!(
        response.challenge.as_deref(),
        Some("Roost-Server-Signature")
    );
    // A denied domain, whatever it signs; a domain whose key cannot be had; b itself.
    assert_eq!(
        relay(b, "denied.test", &forged, "b.test").await,
        (403, "domain_not_allowed".into())
    );
    assert_eq!(relay(b, "nowhere.test", &forged, "b.test").await.0, 401);
    assert_eq!(relay(b, "b.test", &forged, "b.test").await.0, 401);
    // Garbage, properly signed: a clear 400, and b keeps serving.
    let header = ServerSignature::sign(
        &peer_key,
        "peer.test".parse().unwrap(),
        "POST",
        FED_DELIVER,
        b"garbage",
        now_millis(),
    )
    .to_header();
    let response = b
        .http()
        .send("POST", FED_DELIVER, b"garbage".to_vec(), Some(header))
        .await;
    assert_eq!(
        (response.status, response.error_code().as_str()),
        (400, "malformed_body")
    );
    assert_eq!(
        b.http().send("GET", "/health", vec![], None).await.status,
        200
    );
}

#[tokio::test]
async fn a_batch_of_relays_is_queued_in_order_once_each_and_bad_deliveries_are_refused_by_name() {
    let (peer_key, servers) = beside_a_stand_in_peer(Vec::new()).await;
    let b = &servers[1];
    let mut bob = common::Identity::new(&b.user("bob"));
    assert_eq!(b.http().register(&mut bob, None).await.status, 201);
    let bob_id = bob.client_id();

    let mut deliveries = Vec::new();
    for (n, to, client) in [
        (1, "b.test", Some(bob_id)),
        (2, "b.test", None),
        (3, "b.test", Some(bob_id)),
        (4, "a.test", Some(bob_id)),
        (5, "b.test", Some(bob_id)),
    ] {
        deliveries.push(delivery_for(b, to, client, vec![n]).await);
    }
    // The first again, in the same batch: queued once.
    deliveries.push(deliveries[0].clone());
    let send = |deliveries: Vec<FederatedDelivery>| async {
        let (body, header) = signed_relay("peer.test", &peer_key, deliveries);
        b.http().send("POST", FED_DELIVER, body, Some(header)).await
    };
    let response = send(deliveries.clone()).await;
    assert_eq!(response.status, 200);
    let expected = [
        "queued",
        "unknown_queue",
        "queued",
        "wrong_domain",
        "queued",
        "queued",
    ];
    assert_eq!(outcome_codes(&response.decode()), expected);
    // Sent again (as after a sender's crash): the same answer, and nothing queued twice.
    let again = send(deliveries).await;
    assert_eq!(outcome_codes(&again.decode()), expected);

    let batch: roost_protocol::api::QueueBatch = b.http().fetch(&bob, 1, 100, 0).await.decode();
    let messages: Vec<u8> = batch
        .messages
        .iter()
        .map(|m| {
            match bob
                .open(roost_protocol::api::QueueKind::Messages, m)
                .unwrap()
            {
                roost_protocol::api::QueueItem::Group(GroupDelivery::Message {
                    message, ..
                }) => message[0],
                other => panic!("unexpected item {other:?}"),
            }
        })
        .collect();
    assert_eq!(messages, [1, 3, 5], "in the batch's order, once each");

    // Too many in one request: refused as a whole, by name.
    let one = delivery_for(b, "b.test", Some(bob_id), vec![9]).await;
    let response = send(vec![one; MAX_RELAY_DELIVERIES + 1]).await;
    assert_eq!(
        (response.status, response.error_code().as_str()),
        (400, "too_many_deliveries")
    );
}

/// `roost admin inspect ARGS` on `server`'s store (through its admin socket if it runs).
fn inspect(server: &TestServer, args: &[String]) -> serde_json::Value {
    let mut all = vec!["inspect"];
    all.extend(args.iter().map(String::as_str));
    server.admin_json(&all)
}

fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn neither_homeserver_learns_the_other_sides_user_name() {
    let mut p = connected_pair(
        "alicewonder",
        "bobbuilder",
        Options {
            log: "debug",
            ..Options::default()
        },
    )
    .await;
    p.alice_phone
        .chat()
        .send(&p.bob, "across the border")
        .await
        .unwrap();
    p.bob_laptop
        .chat()
        .send(&p.alice, "and back")
        .await
        .unwrap();
    shared_group(&p, "border club", "b speaks in a's group").await;
    for server in &mut p.servers {
        assert!(server.terminate().success());
    }

    // Server a (alice's) must hold no trace of bob's name or clients, b none of alice's —
    // in any store file or log line, even at debug level.
    let traces = |client: &Client| {
        vec![
            codec::encode(client.credential()),
            client.client_id().0.to_vec(),
            client.client_id().to_string().into_bytes(),
        ]
    };
    let mut of_bob = vec![b"bobbuilder".to_vec()];
    of_bob.extend(traces(&p.bob_phone));
    of_bob.extend(traces(&p.bob_laptop));
    let mut of_alice = vec![b"alicewonder".to_vec()];
    of_alice.extend(traces(&p.alice_phone));
    of_alice.extend(traces(&p.alice_laptop));
    // What an operator's inspection shows obeys the same rules.
    let contact_group = hex::encode(&p.alice_phone.contacts().list().await.unwrap()[0].group_id);
    let shown = [
        (
            &p.servers[0],
            vec!["group".to_owned(), contact_group.clone()],
            &of_bob,
        ),
        (&p.servers[0], vec!["outbox".to_owned()], &of_bob),
        (
            &p.servers[1],
            vec!["queue".to_owned(), p.bob_phone.client_id().to_string()],
            &of_alice,
        ),
    ];
    for (server, args, foreign) in shown {
        let found = inspect(server, &args);
        let text = found.to_string();
        for needle in foreign.iter() {
            assert!(!holds(text.as_bytes(), needle), "{text}");
        }
    }
    let group = inspect(&p.servers[0], &["group".into(), contact_group]);
    assert!(group["state_bytes"].as_u64().unwrap() > 0, "{group}");
    let queue = inspect(
        &p.servers[1],
        &["queue".into(), p.bob_phone.client_id().to_string()],
    );
    assert_eq!(queue["registered"], true, "{queue}");

    for (server, own) in [
        (&p.servers[0], &b"alicewonder"[..]),
        (&p.servers[1], &b"bobbuilder"[..]),
    ] {
        // The scan does find what a server may hold: its own user.
        assert!(server
            .store_files()
            .iter()
            .any(|(_, bytes)| holds(bytes, own)));
    }
    for (server, foreign) in [(&p.servers[0], &of_bob), (&p.servers[1], &of_alice)] {
        let log = server.log();
        assert!(log.contains("DEBUG"));
        for needle in foreign {
            assert!(
                !holds(log.as_bytes(), needle),
                "{}'s log holds {}",
                server.domain(),
                String::from_utf8_lossy(needle)
            );
            for (path, bytes) in server.store_files() {
                assert!(
                    !holds(&bytes, needle),
                    "{} holds {}",
                    path.display(),
                    String::from_utf8_lossy(needle)
                );
            }
        }
    }
}

#[tokio::test]
async fn unsigned_claims_cannot_make_a_server_fetch_keys_at_will() {
    let (servers, _) = federation(
        &["b.test"],
        Options {
            discovery_burst: 2,
            ..Options::default()
        },
    );
    let forged = SigningKey::generate();
    let mut statuses = Vec::new();
    for n in 0..4 {
        let claimed = format!("nowhere{n}.test");
        statuses.push(relay(&servers[0], &claimed, &forged, "b.test").await);
    }
    assert_eq!(statuses[0].0, 401);
    assert_eq!(statuses[3], (429, "rate_limited".into()), "{statuses:?}");
}
