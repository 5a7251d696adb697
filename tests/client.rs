//! The client library (`roost_client`) against real `roost` servers: enrolment, the client
//! list, credential checks, the queue, and the errors a user gets.

mod common;

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use common::{Options, TestServer, PASSWORD};
use roost_client::{Client, Error, Received, TrustError};
use roost_protocol::{
    api::{self, Notice, QueueItem},
    credentials::ChainError,
    ClientId, UserName,
};

/// Registers `local@domain` with a fresh state directory under `dir`.
async fn register(server: &TestServer, dir: &Path, local: &str) -> Client {
    Client::register(
        dir.join(local),
        &server.url,
        &server.user(local),
        PASSWORD,
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("registering {local}: {e}\nserver log:\n{}", server.log()))
}

/// alice's first client ("phone") and a second one ("laptop"), with the phone's "client added"
/// notice already taken, so both queues start empty.
async fn alice_phone_and_laptop(server: &TestServer, dir: &Path) -> (Client, Client) {
    let phone = Client::register(
        dir.join("phone"),
        &server.url,
        &server.user("alice"),
        PASSWORD,
        None,
    )
    .await
    .expect("register alice");
    let laptop = Client::add_client(
        dir.join("laptop"),
        &server.url,
        &server.user("alice"),
        PASSWORD,
    )
    .await
    .expect("add alice's laptop");
    let notices = items(phone.receive(Duration::ZERO).await.unwrap());
    assert_eq!(notices, vec![(1, added(laptop.client_id()))]);
    (phone, laptop)
}

fn added(client_id: ClientId) -> QueueItem {
    QueueItem::Notice(Notice::ClientAdded { client_id })
}

fn from(sender: &Client, text: &str) -> QueueItem {
    QueueItem::FromOwnClient {
        sender: sender.client_id(),
        payload: text.as_bytes().to_vec(),
    }
}

/// Sequence numbers and opened items; panics on a message that could not be opened.
fn items(received: Vec<Received>) -> Vec<(u64, QueueItem)> {
    received
        .into_iter()
        .map(|r| {
            (
                r.seq,
                r.item
                    .unwrap_or_else(|e| panic!("message {} unreadable: {e}", r.seq)),
            )
        })
        .collect()
}

/// Reopens a state directory, waiting for the previous handle's lock to be released.
fn reopen(dir: impl AsRef<Path>) -> Client {
    Client::open(dir).expect("reopen the state directory")
}

#[tokio::test]
async fn a_registered_client_has_a_verifiable_credential_and_keeps_its_identity_on_reopen() {
    let server = TestServer::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("alice");
    let alice = Client::register(
        &state_dir,
        &server.url,
        &server.user("alice"),
        PASSWORD,
        None,
    )
    .await
    .unwrap();

    alice
        .device()
        .verify_credential(alice.credential())
        .await
        .unwrap();
    let me = alice.whoami();
    assert_eq!(me.user, server.user("alice"));
    assert_eq!(me.client_id, alice.client_id());
    assert_eq!(me.client_id, alice.credential().client_id());
    assert_eq!(me.server_url, server.url);
    assert!(me.valid_now);
    let credential = alice.credential().clone();
    drop(alice);

    let again = reopen(&state_dir);
    assert_eq!(again.whoami(), me);
    assert_eq!(again.credential(), &credential);
    // The reopened client still holds the right keys: the server accepts its signature.
    let clients = again.clients().await.unwrap();
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0].client_id, me.client_id);
    assert!(clients[0].this_client);
}

#[tokio::test]
async fn registering_into_a_state_directory_that_holds_an_identity_is_refused_locally() {
    let server = TestServer::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("alice");
    let alice = register(&server, dir.path(), "alice").await;
    let before = alice.whoami();
    drop(alice);

    // An unreachable server: getting past the local check would be a network error.
    let err = Client::register(
        &state_dir,
        "http://127.0.0.1:1",
        &server.user("bob"),
        PASSWORD,
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), "already_registered", "{err}");
    assert_eq!(err.status(), None);
    assert!(
        err.to_string().contains(&before.client_id.to_string()),
        "{err}"
    );
    // Through the real server too: bob is not created there.
    let err = Client::register(&state_dir, &server.url, &server.user("bob"), PASSWORD, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "already_registered", "{err}");
    let err = Client::add_client(&state_dir, &server.url, &server.user("alice"), PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "already_registered", "{err}");

    let alice = reopen(&state_dir);
    assert_eq!(alice.whoami(), before);
    assert_eq!(
        alice.clients().await.unwrap().len(),
        1,
        "no client was added to alice"
    );
    drop(alice);
    // bob's name is still free.
    register(&server, dir.path(), "bob").await;
}

#[tokio::test]
async fn an_added_client_is_listed_by_both_and_announced_to_the_first() {
    let server = TestServer::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let phone = register(&server, dir.path(), "alice").await;
    let laptop = Client::add_client(
        dir.path().join("laptop"),
        &server.url,
        &server.user("alice"),
        PASSWORD,
    )
    .await
    .unwrap();
    assert_eq!(laptop.user(), phone.user());
    assert_ne!(laptop.client_id(), phone.client_id());
    phone
        .device()
        .verify_credential(laptop.credential())
        .await
        .unwrap();

    for (me, other) in [(&phone, &laptop), (&laptop, &phone)] {
        let clients = me.clients().await.unwrap();
        let listed: Vec<_> = clients
            .iter()
            .map(|c| (c.client_id, c.this_client))
            .collect();
        assert_eq!(
            listed,
            vec![
                (phone.client_id(), me.client_id() == phone.client_id()),
                (laptop.client_id(), me.client_id() == laptop.client_id())
            ],
            "as seen by {}",
            me.client_id()
        );
        let entry = clients
            .iter()
            .find(|c| c.client_id == other.client_id())
            .unwrap();
        assert_eq!(&entry.credential, other.credential());
    }

    let received = items(phone.receive(Duration::from_secs(5)).await.unwrap());
    assert_eq!(received, vec![(1, added(laptop.client_id()))]);
    // The new client itself is not told about its own arrival.
    assert!(laptop.receive(Duration::ZERO).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_credential_from_another_server_claiming_the_same_domain_does_not_verify() {
    let real = TestServer::start(Options::default());
    let forger = TestServer::start(Options::default());
    assert_eq!(real.domain(), forger.domain());
    let dir = tempfile::tempdir().unwrap();
    let alice = register(&real, dir.path(), "alice").await;
    let mallory = Client::register(
        dir.path().join("mallory"),
        &forger.url,
        &forger.user("alice"),
        PASSWORD,
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        mallory.user(),
        alice.user(),
        "same user name, different server"
    );

    let err = alice
        .device()
        .verify_credential(mallory.credential())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Trust(TrustError::Chain { source: ChainError::UnknownIntermediate(_), client_id, .. }) if *client_id == mallory.client_id()),
        "{err:?}"
    );
    assert_eq!(err.code(), "bad_credential");
    let message = err.to_string();
    assert!(
        message.contains("does not verify") && message.contains("intermediate"),
        "{message}"
    );
    // Each server vouches for its own.
    alice
        .device()
        .verify_credential(alice.credential())
        .await
        .unwrap();
    mallory
        .device()
        .verify_credential(mallory.credential())
        .await
        .unwrap();
}

#[tokio::test]
async fn messages_arrive_once_in_order_and_acknowledgement_survives_reopen_and_kill_9() {
    let mut server = TestServer::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let (phone, laptop) = alice_phone_and_laptop(&server, dir.path()).await;

    let texts: Vec<String> = (0..20).map(|i| format!("message {i}")).collect();
    for (i, text) in texts.iter().enumerate() {
        let seq = laptop
            .send_to_own_client(phone.client_id(), text.clone().into_bytes())
            .await
            .unwrap();
        assert_eq!(seq, 2 + i as u64);
    }
    let received = items(phone.receive(Duration::ZERO).await.unwrap());
    let expected: Vec<_> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| (2 + i as u64, from(&laptop, t)))
        .collect();
    assert_eq!(received, expected);
    assert!(
        phone.receive(Duration::ZERO).await.unwrap().is_empty(),
        "delivered twice"
    );

    // The position is kept in the state directory.
    drop(phone);
    let phone = reopen(dir.path().join("phone"));
    assert!(
        phone.receive(Duration::ZERO).await.unwrap().is_empty(),
        "delivered again after reopen"
    );

    // Two messages are sent but not received, then the server is killed.
    for text in ["after 1", "after 2"] {
        laptop
            .send_to_own_client(phone.client_id(), text.as_bytes().to_vec())
            .await
            .unwrap();
    }
    // kill -9 and start again, while this process (and its clients' connections) runs on, as
    // a client's would.
    let server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();

    // The server itself no longer holds the acknowledged messages, only the unacknowledged ones.
    let batch = phone
        .server()
        .fetch(
            phone.signer(),
            &phone.client_id(),
            0,
            api::MAX_FETCH,
            Duration::ZERO,
        )
        .await
        .expect("fetch after the restart");
    assert_eq!(
        batch.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![22, 23]
    );

    let received = items(phone.receive(Duration::ZERO).await.unwrap());
    assert_eq!(
        received,
        vec![
            (22, from(&laptop, "after 1")),
            (23, from(&laptop, "after 2"))
        ]
    );
    assert!(phone.receive(Duration::ZERO).await.unwrap().is_empty());
    // Sequence numbers go on where they were.
    assert_eq!(
        laptop
            .send_to_own_client(phone.client_id(), b"later".to_vec())
            .await
            .unwrap(),
        24
    );
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[tokio::test]
async fn a_waiting_receive_returns_as_soon_as_a_message_is_sent() {
    let server = TestServer::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let (phone, laptop) = alice_phone_and_laptop(&server, dir.path()).await;
    let phone = Arc::new(phone);

    let started = Instant::now();
    let waiting = tokio::spawn({
        let phone = phone.clone();
        async move {
            let received = phone.receive(Duration::from_secs(10)).await;
            (received, Instant::now())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the receive did not wait");
    laptop
        .send_to_own_client(phone.client_id(), b"ping".to_vec())
        .await
        .unwrap();
    let sent_at = Instant::now();
    let (received, returned_at) = waiting.await.unwrap();

    assert_eq!(items(received.unwrap()), vec![(2, from(&laptop, "ping"))]);
    assert!(returned_at.duration_since(started) >= Duration::from_millis(300));
    assert!(
        returned_at.saturating_duration_since(sent_at) < Duration::from_secs(2),
        "the receive returned {:?} after the send",
        returned_at.saturating_duration_since(sent_at)
    );
}

#[tokio::test]
async fn a_deleted_client_is_refused_with_401_and_the_others_hear_of_it() {
    let server = TestServer::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let (phone, laptop) = alice_phone_and_laptop(&server, dir.path()).await;

    phone.delete_client(laptop.client_id()).await.unwrap();

    let err = laptop.clients().await.unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(401), "unauthenticated"),
        "{err}"
    );
    let err = laptop.receive(Duration::ZERO).await.unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    let err = laptop
        .send_to_own_client(phone.client_id(), b"ghost".to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    assert!(matches!(err, Error::Server(_)), "{err:?}");

    let received = items(phone.receive(Duration::from_secs(5)).await.unwrap());
    assert_eq!(
        received,
        vec![(
            2,
            QueueItem::Notice(Notice::ClientDeleted {
                client_id: laptop.client_id()
            })
        )]
    );
    let clients = phone.clients().await.unwrap();
    assert_eq!(
        clients.iter().map(|c| c.client_id).collect::<Vec<_>>(),
        vec![phone.client_id()]
    );
}

#[tokio::test]
async fn token_registration_needs_a_token_from_the_admin_and_uses_it_up() {
    let server = TestServer::start(Options {
        policy: "token",
        ..Options::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let alice: UserName = server.user("alice");

    let err = Client::register(
        dir.path().join("alice"),
        &server.url,
        &alice,
        PASSWORD,
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(403), "token_required"),
        "{err}"
    );

    let token = server.registration_token();

    // The refused attempt left the state directory usable.
    let client = Client::register(
        dir.path().join("alice"),
        &server.url,
        &alice,
        PASSWORD,
        Some(&token),
    )
    .await
    .unwrap();
    assert_eq!(client.user(), &alice);

    let err = Client::register(
        dir.path().join("bob"),
        &server.url,
        &server.user("bob"),
        PASSWORD,
        Some(&token),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(403), "bad_token"),
        "{err}"
    );
}

#[tokio::test]
async fn a_wrong_password_or_a_taken_name_is_refused_with_its_own_code() {
    let server = TestServer::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let alice = register(&server, dir.path(), "alice").await;

    let err = Client::add_client(
        dir.path().join("laptop"),
        &server.url,
        alice.user(),
        "not the password",
    )
    .await
    .unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(401), "wrong_password"),
        "{err}"
    );

    let err = Client::register(
        dir.path().join("again"),
        &server.url,
        alice.user(),
        PASSWORD,
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(409), "user_taken"),
        "{err}"
    );

    // Neither attempt added a client.
    assert_eq!(alice.clients().await.unwrap().len(), 1);
    assert!(alice.receive(Duration::ZERO).await.unwrap().is_empty());
}
