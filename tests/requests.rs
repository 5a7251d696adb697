//! Connection requests through the client library and the `roost-client` binary, against real
//! `roost` servers: sending sealed requests to every client of the responder, the responder's
//! checks (forged requests are dropped and reported, never listed), its pending list and decline.

mod common;

use std::time::Duration;

use common::{
    devices::{cli, cli_json, discover_one, Devices},
    Options, TestServer,
};
use roost_client::{Client, RejectReason, State};
use roost_protocol::{
    codec,
    connection::{
        ConnectionError, ConnectionEstablishmentBody, ConnectionEstablishmentPackage,
        ConnectionPackage, EarKey, SealedConnectionRequest,
    },
    credentials::ChainError,
    ClientId, SigningKey, Timestamp, UserName,
};
use serde_json::Value;

/// An invitation from `from` into a fresh (random) connection group, bound to `to`'s owner and
/// to `to` itself, signed by `from`'s key.
fn invitation(from: &Client, to: &ConnectionPackage) -> ConnectionEstablishmentPackage {
    invitation_with(from, to, |_| {}, &from.identity().signing_key)
}

/// An invitation as [`invitation`] makes it, with its body changed by `edit` and signed by
/// `key`.
fn invitation_with(
    from: &Client,
    to: &ConnectionPackage,
    edit: impl FnOnce(&mut ConnectionEstablishmentBody),
    key: &SigningKey,
) -> ConnectionEstablishmentPackage {
    let mut body = ConnectionEstablishmentBody {
        sender_client_credential: from.credential().clone(),
        connection_group_id: ClientId::random().0.to_vec(),
        group_state_ear_key: EarKey::random(),
        credential_ear_key: EarKey::random(),
        responder: to.user().clone(),
        connection_package: to.hash(),
        initiator_profile: None,
    };
    edit(&mut body);
    ConnectionEstablishmentPackage::new(body, key)
}

/// Discovers `user`'s one client and sends it the invitation `make` builds for its package.
async fn ask(
    from: &Client,
    user: &UserName,
    make: impl FnOnce(&ConnectionPackage) -> ConnectionEstablishmentPackage,
) {
    let package = discover_one(from, user).await;
    from.connections()
        .send_request(&package, &make(&package))
        .await
        .unwrap();
}

fn codes(rejected: &[roost_client::Rejected]) -> Vec<&'static str> {
    rejected.iter().map(|r| r.reason.code()).collect()
}

#[tokio::test]
async fn a_request_reaches_every_client_of_the_responder_and_decline_removes_it() {
    let server = TestServer::start(Options::default());
    let devices = Devices::new();
    let (alice, phone, laptop) = devices.alice_and_bobs_two(&server).await;
    let bob_name = server.user("bob");

    let packages = alice.connections().discover(&bob_name).await.unwrap();
    let group_id = ClientId::random().0.to_vec();
    for package in &packages {
        let invitation = invitation_with(
            &alice,
            package,
            |body| body.connection_group_id = group_id.clone(),
            &alice.identity().signing_key,
        );
        alice
            .connections()
            .send_request(package, &invitation)
            .await
            .unwrap();
    }

    let mut ids = Vec::new();
    for bob in [&phone, &laptop] {
        let fetched = bob.connections().requests().await.unwrap();
        assert!(fetched.rejected.is_empty(), "{:?}", fetched.rejected);
        assert_eq!(fetched.received.len(), 1);
        let request = &fetched.received[0];
        assert_eq!(request.from(), alice.user());
        assert_eq!(request.package.body.connection_group_id, group_id);
        assert_eq!(request.package.body.responder, bob_name);
        assert_eq!(request.id.len(), 8, "{}", request.id);
        assert!(request.received_at.0.abs_diff(Timestamp::now().0) < 60);
        assert_eq!(bob.connections().pending().await.unwrap(), fetched.received);
        // Read once: a second read finds nothing new, and the request stays pending.
        let again = bob.connections().requests().await.unwrap();
        assert!(again.received.is_empty() && again.rejected.is_empty());
        assert_eq!(bob.connections().pending().await.unwrap(), fetched.received);
        ids.push(request.id.clone());
    }

    // Pending requests are kept in the state directory; the one-time key that opened the
    // request is gone, the last-resort key is kept.
    let used = packages
        .iter()
        .find(|p| p.client_id() == phone.client_id())
        .unwrap()
        .hash();
    drop(phone);
    let state = State::open(devices.path("phone")).unwrap();
    assert!(state.connection_key(&used).unwrap().is_none());
    let keys = state.connection_keys().unwrap();
    assert_eq!(keys.len(), 20, "19 one-time keys and the last-resort one");
    assert_eq!(keys.iter().filter(|(_, k)| k.last_resort).count(), 1);
    drop(state);
    let phone = Client::open(devices.path("phone")).unwrap();
    assert_eq!(phone.connections().pending().await.unwrap().len(), 1);

    phone.connections().decline(&ids[0]).await.unwrap();
    assert!(phone.connections().pending().await.unwrap().is_empty());
    let err = phone.connections().decline(&ids[0]).await.unwrap_err();
    assert_eq!(err.code(), "unknown_request", "{err}");
    assert!(err.to_string().contains(&ids[0]), "{err}");
    // Declining on one client does not touch the other's.
    assert_eq!(laptop.connections().pending().await.unwrap().len(), 1);
    // Nothing was sent to alice.
    assert!(alice.receive(Duration::ZERO).await.unwrap().is_empty());
    assert!(alice
        .connections()
        .requests()
        .await
        .unwrap()
        .received
        .is_empty());
}

#[tokio::test]
async fn forged_requests_are_dropped_and_reported_never_listed() {
    let server = TestServer::start(Options::default());
    let forger = TestServer::start(Options::default());
    let devices = Devices::new();
    let (alice, bob) = devices.alice_and_bob(&server).await;
    let bob_name = server.user("bob");
    // mallory holds alice's name on a server claiming the same domain.
    let mallory = devices
        .register_at(&forger.url, "mallory", alice.user())
        .await;

    // Signed by a key that is not the sender credential's.
    let stranger = SigningKey::generate();
    ask(&alice, &bob_name, |p| {
        invitation_with(&alice, p, |_| {}, &stranger)
    })
    .await;
    // Made for another user.
    let carol = server.user("carol");
    ask(&alice, &bob_name, |p| {
        let key = &alice.identity().signing_key;
        invitation_with(&alice, p, |body| body.responder = carol.clone(), key)
    })
    .await;
    // Made for another of bob's packages than the one it is sealed to.
    let named = discover_one(&alice, &bob_name).await;
    ask(&alice, &bob_name, |_| invitation(&alice, &named)).await;
    // Well signed, by a credential the real AS never issued.
    ask(&alice, &bob_name, |p| invitation(&mallory, p)).await;

    // Not openable at all.
    let package = discover_one(&alice, &bob_name).await;
    let garbage = SealedConnectionRequest {
        connection_package: package.hash(),
        sealed: roost_protocol::crypto::Sealed {
            encapsulated_key: [7; 32],
            ciphertext: vec![1, 2, 3],
        },
    };
    server
        .http()
        .send(
            "POST",
            &roost_protocol::api::as_connection_queue(&bob.client_id()),
            codec::encode(&garbage),
            None,
        )
        .await;

    // A valid request, sent twice to the last-resort package (which the AS keeps accepting).
    let last_resort = loop {
        let package = discover_one(&alice, &bob_name).await;
        if package.body.last_resort {
            break package;
        }
    };
    let valid = invitation(&alice, &last_resort).seal(&last_resort).unwrap();
    for _ in 0..2 {
        alice
            .server()
            .send_connection_request(&bob.client_id(), &valid)
            .await
            .unwrap();
    }

    let fetched = bob.connections().requests().await.unwrap();
    assert_eq!(
        codes(&fetched.rejected),
        [
            "bad_signature",
            "wrong_responder",
            "wrong_package",
            "bad_credential",
            "unsealable",
            "replay"
        ],
        "{:?}",
        fetched.rejected
    );
    assert_eq!(
        fetched.rejected[0].reason,
        RejectReason::Invalid(ConnectionError::BadSignature)
    );
    assert_eq!(
        fetched.rejected[3].reason,
        RejectReason::Chain {
            client_id: mallory.client_id(),
            source: ChainError::UnknownIntermediate(alice.user().domain().clone())
        }
    );
    let seqs: Vec<u64> = fetched.rejected.iter().map(|r| r.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // Only the valid one is listed.
    assert_eq!(fetched.received.len(), 1);
    assert_eq!(fetched.received[0].from(), alice.user());
    assert_eq!(
        fetched.received[0].package.body.sender_client_credential,
        *alice.credential()
    );
    assert_eq!(bob.connections().pending().await.unwrap(), fetched.received);
    // Rejected ones are not kept to be shown later.
    let again = bob.connections().requests().await.unwrap();
    assert!(again.received.is_empty() && again.rejected.is_empty());

    // The same request replayed after it was read: still refused.
    alice
        .server()
        .send_connection_request(&bob.client_id(), &valid)
        .await
        .unwrap();
    let replayed = bob.connections().requests().await.unwrap();
    assert_eq!(codes(&replayed.rejected), ["replay"]);
    assert_eq!(bob.connections().pending().await.unwrap().len(), 1);
}

#[tokio::test]
async fn the_command_line_publishes_discovers_lists_and_declines() {
    let server = TestServer::start(Options::default());
    let devices = Devices::new();
    let bob_state = devices.path("bob");
    let bob_name = server.user("bob").to_string();
    let state = bob_state.clone();
    let url = server.url.clone();
    let registered = tokio::task::spawn_blocking(move || {
        cli_json(&state, &["register", &bob_name, "--server", &url])
    })
    .await
    .unwrap();
    let bob_id = registered["client_id"].as_str().unwrap().to_owned();
    let alice = devices
        .register(&server, "alice", &server.user("alice"))
        .await;

    // alice finds bob (registered by the command line, so already discoverable) and asks twice.
    for _ in 0..2 {
        let package = discover_one(&alice, &server.user("bob")).await;
        assert_eq!(package.client_id().to_string(), bob_id);
        alice
            .connections()
            .send_request(&package, &invitation(&alice, &package))
            .await
            .unwrap();
    }

    let alice_id = alice.client_id().to_string();
    let state = bob_state.clone();
    tokio::task::spawn_blocking(move || {
        let listed = cli_json(&state, &["requests"]);
        assert_eq!(listed["rejected"], Value::Array(vec![]), "{listed}");
        let requests = listed["requests"].as_array().unwrap();
        assert_eq!(requests.len(), 2, "{listed}");
        for request in requests {
            let object = request.as_object().unwrap();
            let mut keys = object.keys().collect::<Vec<_>>();
            keys.sort();
            assert_eq!(keys, ["from", "id", "received_at"], "{listed}");
            assert_eq!(request["from"], "alice@localhost");
            assert!(request["received_at"].as_u64().unwrap() > 1_700_000_000);
        }
        let id = requests[0]["id"].as_str().unwrap().to_owned();

        let declined = cli_json(&state, &["decline", &id]);
        assert_eq!(declined, serde_json::json!({ "declined": id }));
        let listed = cli_json(&state, &["requests"]);
        let remaining = listed["requests"].as_array().unwrap();
        assert_eq!(remaining.len(), 1, "{listed}");
        assert_ne!(remaining[0]["id"], id.as_str());

        let (ok, error) = cli(&state, &["decline", &id]);
        assert!(!ok);
        assert_eq!(error["error"], "unknown_request", "{error}");

        // Two of bob's 20 packages were used up; five more.
        let count = cli_json(&state, &["publish-packages", "--count", "5"]);
        assert_eq!(
            count,
            serde_json::json!({
                "remaining": 23,
                "has_last_resort": true,
                "key_packages": { "remaining": 20, "has_last_resort": true },
            })
        );

        let found = cli_json(&state, &["discover", "alice@localhost"]);
        assert_eq!(found["user"], "alice@localhost");
        let clients = found["clients"].as_array().unwrap();
        assert_eq!(clients.len(), 1, "{found}");
        assert_eq!(clients[0]["client_id"], alice_id.as_str());
        assert_eq!(clients[0]["last_resort"], false);
        let now = Timestamp::now().0;
        assert!(clients[0]["valid_until"].as_u64().unwrap() > now + 6 * 24 * 3600);

        let (ok, error) = cli(&state, &["discover", "nobody@localhost"]);
        assert!(!ok);
        assert_eq!(
            (error["error"].as_str(), error["status"].as_u64()),
            (Some("unknown_user"), Some(404)),
            "{error}"
        );
    })
    .await
    .unwrap();
}
