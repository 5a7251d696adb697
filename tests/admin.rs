//! `roost admin` against real `roost` processes — through the running server's admin socket and
//! on a stopped server's store — and what users notice of each command: a deactivated user
//! locked out and not to be found, a deleted user gone with its name kept, a revoked device,
//! registration tokens with uses and an expiry, a domain blocked at run time; and bad input
//! refused with a clear error and nothing changed.

mod common;

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    time::Duration,
};

use common::{
    pair::{chat_texts, connected_pair, settle},
    peer::{beside_a_stand_in_peer, relay},
    Identity, Options, TestServer, PASSWORD,
};
use roost_protocol::api;

/// alice (one client, with a connection package published) and bob, registered.
async fn alice_and_bob(server: &TestServer) -> (Identity, Identity) {
    let http = server.http();
    let mut alice = Identity::new(&server.user("alice"));
    assert_eq!(http.register(&mut alice, None).await.status, 201);
    let (package, _) = alice.connection_package(3600, true);
    assert_eq!(http.publish(&alice, vec![package]).await.status, 200);
    let mut bob = Identity::new(&server.user("bob"));
    assert_eq!(http.register(&mut bob, None).await.status, 201);
    (alice, bob)
}

/// The status and, for an error, its code.
fn code(response: &common::Response) -> (u16, String) {
    match response.status {
        status @ 200..=299 => (status, String::new()),
        status => (status, response.error_code()),
    }
}

#[tokio::test]
async fn a_deactivated_user_is_locked_out_and_cannot_be_found_until_reactivated() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let (alice, bob) = alice_and_bob(&server).await;
    let token = http.friendship_token(&alice).await;
    assert_eq!(http.discover(&alice.user).await.status, 200);
    assert_eq!(http.claim_key_packages(&token).await.status, 200);

    // A user of this server may be named without its domain.
    let answer = server.admin_json(&["users", "deactivate", "alice"]);
    assert_eq!(answer["standing"], "deactivated");
    assert_eq!(answer["changed"], true);

    let fetched = http.fetch(&alice, 0, 10, 0).await;
    assert_eq!(code(&fetched), (403, "account_deactivated".into()));
    let mut laptop = Identity::new(&alice.user);
    let added = http.add_client(&mut laptop, PASSWORD).await;
    assert_eq!(code(&added), (403, "account_deactivated".into()));
    // Nobody can find alice or add her to a group: as if there were no such user.
    let unknown = http.discover(&server.user("nobody")).await;
    assert_eq!(code(&http.discover(&alice.user).await), code(&unknown));
    assert_eq!(http.claim_key_packages(&token).await.status, 404);
    // Others are not affected.
    assert_eq!(http.fetch(&bob, 0, 10, 0).await.status, 200);
    let shown = server.admin_json(&["users", "show", "alice@localhost"]);
    assert_eq!(shown["standing"], "deactivated");
    assert_eq!(shown["clients"].as_array().unwrap().len(), 1);

    let answer = server.admin_json(&["users", "reactivate", "alice"]);
    assert_eq!(answer["standing"], "active");
    assert_eq!(http.fetch(&alice, 0, 10, 0).await.status, 200);
    assert_eq!(http.discover(&alice.user).await.status, 200);
    assert_eq!(http.claim_key_packages(&token).await.status, 200);
}

#[tokio::test]
async fn a_deleted_user_loses_every_client_queue_and_profile_and_its_name_stays_reserved() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let (alice, _bob) = alice_and_bob(&server).await;
    let mut laptop = Identity::new(&alice.user);
    assert_eq!(http.add_client(&mut laptop, PASSWORD).await.status, 201);
    // The notice of the laptop waits in the phone's queue.
    let queue = server.admin_json(&["inspect", "queue", &alice.client_id().to_string()]);
    assert_eq!(queue["messages"]["waiting"], 1, "{queue}");
    let profile = roost_protocol::profile::ProfileId::random();
    let sealed = roost_protocol::profile::Profile {
        display_name: "Alice".into(),
        about: String::new(),
        avatar: None,
    }
    .seal(&profile, &roost_protocol::connection::EarKey::random())
    .unwrap();
    let path = api::as_profile(&profile);
    let stored = http
        .signed(&alice, "PUT", &path, roost_protocol::codec::encode(&sealed))
        .await;
    assert_eq!(stored.status, 204);

    let answer = server.admin_json(&["users", "delete", "alice"]);
    assert_eq!(answer["clients_deleted"], 2);

    for client in [&alice, &laptop] {
        assert_eq!(http.fetch(client, 0, 10, 0).await.status, 401);
        let queue = server.admin_json(&["inspect", "queue", &client.client_id().to_string()]);
        assert_eq!(queue["registered"], false);
        assert_eq!(queue["messages"]["waiting"], 0, "{queue}");
    }
    assert_eq!(http.discover(&alice.user).await.status, 404);
    assert_eq!(http.send("GET", &path, Vec::new(), None).await.status, 404);
    let mut again = Identity::new(&alice.user);
    let response = http.register(&mut again, None).await;
    assert_eq!(code(&response), (409, "user_taken".into()));

    let users = server.admin_json(&["users", "list"]);
    let standings: Vec<(&str, &str)> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["user"].as_str().unwrap(), u["standing"].as_str().unwrap()))
        .collect();
    assert_eq!(
        standings,
        [("alice@localhost", "deleted"), ("bob@localhost", "active")]
    );
    let status = server.admin_json(&["status"]);
    assert_eq!(status["users"]["deleted"], 1);
    assert_eq!(status["users"]["active"], 1);
    assert_eq!(status["clients"], 1);
    assert_eq!(
        server.admin_json(&["users", "show", "alice"])["standing"],
        "deleted"
    );
}

#[tokio::test]
async fn a_revoked_device_is_refused_and_the_users_other_devices_are_told() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let (phone, _bob) = alice_and_bob(&server).await;
    let mut laptop = Identity::new(&phone.user);
    assert_eq!(http.add_client(&mut laptop, PASSWORD).await.status, 201);

    let answer = server.admin_json(&["clients", "revoke", &phone.client_id().to_string()]);
    assert_eq!(answer["user"], "alice@localhost");
    assert_eq!(http.fetch(&phone, 0, 10, 0).await.status, 401);
    let batch: api::QueueBatch = http.fetch(&laptop, 0, 10, 2000).await.decode();
    let notices: Vec<_> = batch
        .messages
        .iter()
        .map(|m| laptop.open(api::QueueKind::Messages, m).unwrap())
        .collect();
    assert_eq!(
        notices,
        [api::QueueItem::Notice(api::Notice::ClientDeleted {
            client_id: phone.client_id()
        })]
    );
    let shown = server.admin_json(&["users", "show", "alice"]);
    assert_eq!(
        shown["clients"][0]["client"],
        laptop.client_id().to_string()
    );
    assert_eq!(shown["clients"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn registration_tokens_admit_as_many_users_as_their_uses_until_expired_or_revoked() {
    let server = TestServer::start(Options {
        policy: "token",
        ..Options::default()
    });
    let http = server.http();
    let register = async |name: &str, token: &str| {
        let mut who = Identity::new(&server.user(name));
        code(&http.register(&mut who, Some(token.to_owned())).await)
    };
    let created = server.admin_json(&["token", "create", "--uses", "2"]);
    let twice = created["token"].as_str().unwrap();
    assert_eq!(register("ann", twice).await.0, 201);
    let listed = server.admin_json(&["token", "list"]);
    assert_eq!(listed[0]["id"], created["id"]);
    assert_eq!(listed[0]["uses_left"], 1);
    assert_eq!(register("ben", twice).await.0, 201);
    assert_eq!(register("cat", twice).await, (403, "bad_token".into()));
    assert_eq!(server.admin_json(&["token", "list"]), serde_json::json!([]));

    let brief = server.admin_json(&["token", "create", "--uses", "5", "--expires", "2s"]);
    assert!(brief["expires"].is_string());
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(
        register("dan", brief["token"].as_str().unwrap()).await,
        (403, "bad_token".into())
    );

    // Revoked by its id, or by the token itself.
    let by_id = server.admin_json(&["token", "create"]);
    let by_token = server.admin_json(&["token", "create"]);
    server.admin(&["token", "revoke", by_id["id"].as_str().unwrap()]);
    server.admin(&["token", "revoke", by_token["token"].as_str().unwrap()]);
    for token in [&by_id, &by_token] {
        let token = token["token"].as_str().unwrap();
        assert_eq!(register("eve", token).await, (403, "bad_token".into()));
    }
    assert_eq!(server.admin_json(&["token", "list"]), serde_json::json!([]));
}

#[tokio::test]
async fn a_blocked_domains_relays_are_refused_until_it_is_unblocked() {
    let (peer_key, servers) = beside_a_stand_in_peer(Vec::new()).await;
    let b = &servers[1];
    assert_eq!(
        relay(b, "peer.test", &peer_key, "b.test").await,
        (200, "unknown_queue".into())
    );
    b.admin(&["federation", "block", "peer.test"]);
    assert_eq!(
        relay(b, "peer.test", &peer_key, "b.test").await,
        (403, "domain_not_allowed".into())
    );
    b.admin(&["federation", "unblock", "peer.test"]);
    assert_eq!(
        relay(b, "peer.test", &peer_key, "b.test").await,
        (200, "unknown_queue".into())
    );
}

/// A block stops what this server relays: the DS does not know whose client sends to a group it
/// hosts (members are pseudonyms), so it cannot refuse a blocked domain's users who are members.
#[tokio::test]
async fn a_blocked_domain_is_sent_nothing_until_unblocked_even_across_a_restart() {
    let mut p = connected_pair("alice", "bob", Options::default()).await;
    // What waits for b.test while b is down is dropped by the block.
    p.servers[1].kill();
    p.alice_phone
        .chat()
        .send(&p.bob, "before the block")
        .await
        .unwrap();
    assert!(
        common::eventually(
            || p.servers[0].admin_json(&["inspect", "outbox"])["outbox"][0]["waiting"] == 2,
            Duration::from_secs(10)
        )
        .await
    );
    let answer = p.servers[0].admin_json(&["federation", "block", "b.test"]);
    assert_eq!(answer["blocked"], true);
    assert!(
        common::eventually(
            || p.servers[0].admin_json(&["inspect", "outbox"])["outbox"] == serde_json::json!([]),
            Duration::from_secs(10)
        )
        .await
    );
    p.servers[1].start_again();
    // The block outlives a restart.
    assert!(p.servers[0].terminate().success());
    p.servers[0].start_again();
    let listed = p.servers[0].admin_json(&["federation", "list"]);
    assert_eq!(listed["blocked"][0]["domain"], "b.test", "{listed}");
    let mut sent = false;
    for _ in 0..3 {
        // The first request after a's restart may meet a closed connection.
        sent = p
            .alice_phone
            .chat()
            .send(&p.bob, "while blocked")
            .await
            .is_ok();
        if sent {
            break;
        }
    }
    assert!(sent);
    assert_eq!(
        p.servers[0].admin_json(&["inspect", "outbox"])["outbox"],
        serde_json::json!([])
    );

    let answer = p.servers[0].admin_json(&["federation", "unblock", "b.test"]);
    assert_eq!(answer["federates"], true);
    p.alice_phone.chat().send(&p.bob, "after").await.unwrap();
    let bobs = [&p.bob_phone, &p.bob_laptop];
    let alice = p.alice.clone();
    settle(&bobs, async || {
        let mut ok = true;
        for client in bobs {
            ok &= !client.chat().messages(&alice).await.unwrap().is_empty();
        }
        ok
    })
    .await;
    for client in bobs {
        let got = chat_texts(client, &alice).await;
        assert_eq!(got, ["after"]);
    }
}

#[tokio::test]
async fn status_tells_the_version_uptime_counts_and_store_size_running_or_stopped() {
    let mut server = TestServer::start(Options::default());
    alice_and_bob(&server).await;
    let status = server.admin_json(&["status"]);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["running"], true);
    assert!(status["serving"]["uptime_secs"].is_u64(), "{status}");
    assert_eq!(status["users"]["active"], 2);
    assert_eq!(status["clients"], 2);
    assert!(status["store"]["size_bytes"].as_u64().unwrap() > 0);
    // The text form says the same to a person.
    let text = server.admin(&["status"]);
    assert!(text.contains("running: true"), "{text}");
    assert!(text.contains(&format!("version: {}", env!("CARGO_PKG_VERSION"))));

    assert!(server.terminate().success());
    let stopped = server.admin_json(&["status"]);
    assert_eq!(stopped["running"], false);
    assert_eq!(stopped["users"], status["users"]);
    let version = server.command().arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("roost {}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn commands_on_a_stopped_servers_store_hold_when_it_starts() {
    let mut server = TestServer::start(Options::default());
    let (alice, _bob) = alice_and_bob(&server).await;
    assert!(server.terminate().success());
    server.admin(&["users", "deactivate", "alice"]);
    server.admin(&["federation", "block", "b.test"]);
    let token = server.registration_token();
    server.start_again();
    let http = server.http();
    let fetched = http.fetch(&alice, 0, 10, 0).await;
    assert_eq!(code(&fetched), (403, "account_deactivated".into()));
    let listed = server.admin_json(&["federation", "list"]);
    assert_eq!(listed["blocked"][0]["domain"], "b.test");
    let mut carol = Identity::new(&server.user("carol"));
    assert_eq!(http.register(&mut carol, Some(token)).await.status, 201);
}

/// What the server would show an admin of its accounts and federation.
fn everything(server: &TestServer) -> Vec<serde_json::Value> {
    ["users list", "token list", "federation list"]
        .iter()
        .map(|args| server.admin_json(&args.split(' ').collect::<Vec<_>>()))
        .collect()
}

#[tokio::test]
async fn bad_input_to_every_admin_command_gets_a_clear_error_and_changes_nothing() {
    let server = TestServer::start(Options::default());
    let (alice, _bob) = alice_and_bob(&server).await;
    server.registration_token();
    let before = everything(&server);
    let cases: &[(&[&str], &str)] = &[
        (&["users", "show", "nobody"], "no user nobody@localhost"),
        (&["users", "show", "Not A Name"], "is not a user name"),
        (
            &["users", "show", "alice@elsewhere.test"],
            "not a user of this server",
        ),
        (&["users", "deactivate", "nobody"], "no such user"),
        (&["users", "reactivate", "nobody"], "no such user"),
        (&["users", "delete", "nobody"], "no such user"),
        (&["users", "frobnicate", "alice"], "unrecognized subcommand"),
        (&["clients", "revoke", "not-an-id"], "client id"),
        (
            &["clients", "revoke", "00000000000000000000000000000000"],
            "no client",
        ),
        (&["token", "create", "--uses", "0"], "--uses"),
        (
            &["token", "create", "--expires", "soon"],
            "is not a duration",
        ),
        (&["token", "create", "--expires", "0d"], "more than zero"),
        (
            &["token", "revoke", "123456789abc"],
            "no registration token",
        ),
        (&["federation", "block", "Not A Domain"], "domain"),
        (
            &["federation", "block", "localhost"],
            "this server's own domain",
        ),
        (&["inspect", "group", "xyz"], "is not hex"),
        (&["repair"], "stop it before"),
    ];
    for (args, expected) in cases {
        let said = server.admin_fails(args);
        assert!(said.contains(expected), "{args:?}: {said}");
    }
    // What reaches the socket unchecked by the command line is checked there.
    let socket = server.store_path().join("admin.sock");
    for body in [
        b"{\"users\": {\"command\": {\"shoe\": {}}}}".to_vec(),
        b"not json".to_vec(),
        vec![b' '; 100_000],
    ] {
        let (status, answer) = post_to_socket(&socket, &body);
        assert_eq!(status, "400", "{answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["error"], "refused", "{answer}");
        assert!(answer["message"].is_string());
    }
    let (status, answer) = post_to_socket_at(&socket, "/elsewhere", b"{}");
    assert_eq!(status, "404", "{answer}");
    assert!(answer.contains("POST /admin/v1"), "{answer}");
    assert_eq!(everything(&server), before);
    assert_eq!(server.http().fetch(&alice, 0, 10, 0).await.status, 200);
}

/// POSTs `body` to the admin socket as a command: the status and the body of the answer.
fn post_to_socket(socket: &std::path::Path, body: &[u8]) -> (String, String) {
    post_to_socket_at(socket, "/admin/v1", body)
}

/// POSTs `body` to `path` on the admin socket.
fn post_to_socket_at(socket: &std::path::Path, path: &str, body: &[u8]) -> (String, String) {
    let mut stream = UnixStream::connect(socket).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: roost-admin\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let _ = stream.write_all(body);
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split(' ').nth(1).unwrap_or("").to_owned();
    (status, body.to_owned())
}
