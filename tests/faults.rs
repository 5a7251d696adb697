//! Faults between a client and its server, and between servers: answers lost after the server
//! did the work, requests lost or sent twice, connections cut in the middle of a body — made by
//! a proxy standing between them. Whatever the network does, each message is shown once, in one
//! order on every client, from the right sender; no ratchet key is used twice, and a committer
//! whose answer was lost does not stay behind its group.

mod common;

use std::time::Duration;

use common::{
    devices::{connect, Devices},
    free_port,
    proxy::{proxied_pair, Fault, FaultProxy, ProxiedPair},
    Options, TestServer,
};
use roost_client::{Client, StoredMessage};
use roost_protocol::{api::QueueItem, federation::FED_DELIVER, UserName};

fn texts(messages: &[StoredMessage]) -> Vec<(Option<String>, String)> {
    messages
        .iter()
        .map(|m| (m.from.as_ref().map(|u| u.to_string()), m.text.clone()))
        .collect()
}

fn from(user: &UserName, text: &str) -> (Option<String>, String) {
    (Some(user.to_string()), text.to_owned())
}

/// Syncs `client` and checks that nothing it read was unusable.
async fn sync_clean(client: &Client) -> roost_client::SyncReport {
    let report = client.sync().await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    report
}

/// carol, one client, connected with alice.
async fn carol_connected_with_alice(server: &TestServer, p: &ProxiedPair) -> Client {
    let carol = p
        .devices
        .register(server, "carol", &server.user("carol"))
        .await;
    connect(&p.alice, &carol, &[]).await;
    carol
}

/// Both logs of the connection hold `expected`, each message at the same place.
async fn same_log(p: &ProxiedPair, expected: &[(Option<String>, String)]) {
    let of_alice = p.alice.chat().messages(p.bob.user()).await.unwrap();
    let of_bob = p.bob.chat().messages(p.alice.user()).await.unwrap();
    assert_eq!(texts(&of_bob), expected);
    assert_eq!(of_alice, {
        // Times differ (sent and received); everything else is the same.
        of_bob
            .iter()
            .zip(&of_alice)
            .map(|(b, a)| StoredMessage {
                at: a.at,
                ..b.clone()
            })
            .collect::<Vec<_>>()
    });
}

#[tokio::test]
async fn a_message_whose_answer_is_lost_once_is_delivered_once() {
    let server = TestServer::start(Options::default());
    let p = proxied_pair(&server).await;
    p.proxy.inject("POST", "/messages", Fault::DropResponse, 1);
    let sent = p.alice.chat().send(p.bob.user(), "first").await.unwrap();
    assert!(p.proxy.all_applied());
    assert_eq!(sent.text, "first");
    p.alice.chat().send(p.bob.user(), "second").await.unwrap();
    sync_clean(&p.bob).await;
    sync_clean(&p.alice).await;
    let alice = p.alice.user();
    same_log(&p, &[from(alice, "first"), from(alice, "second")]).await;
}

#[tokio::test]
async fn a_message_whose_answers_are_all_lost_is_settled_by_the_next_sync_and_no_key_is_used_twice()
{
    let server = TestServer::start(Options::default());
    let p = proxied_pair(&server).await;
    // The first attempt and all three retries reach the DS; no answer comes back.
    p.proxy.inject("POST", "/messages", Fault::DropResponse, 4);
    let unanswered = p
        .alice
        .chat()
        .send(p.bob.user(), "first")
        .await
        .unwrap_err();
    assert_eq!(unanswered.code(), "unconfirmed", "{unanswered}");
    assert!(unanswered.is_transient());
    assert!(p.proxy.all_applied());

    // bob got it once; alice learns its place from her own copy.
    sync_clean(&p.bob).await;
    let report = sync_clean(&p.alice).await;
    assert_eq!(report.settled.len(), 1, "{report:?}");
    // Her next message uses the next ratchet key: bob reads it.
    p.alice.chat().send(p.bob.user(), "second").await.unwrap();
    sync_clean(&p.bob).await;
    let alice = p.alice.user();
    same_log(&p, &[from(alice, "first"), from(alice, "second")]).await;
}

#[tokio::test]
async fn a_message_whose_request_is_lost_or_cut_or_sent_twice_arrives_once() {
    let server = TestServer::start(Options::default());
    let p = proxied_pair(&server).await;
    let alice = p.alice.user();
    let mut expected = Vec::new();
    for (i, fault) in [Fault::DropRequest, Fault::ResetMidBody, Fault::Duplicate]
        .into_iter()
        .enumerate()
    {
        p.proxy.inject("POST", "/messages", fault, 1);
        let text = format!("message {i} ({fault:?})");
        p.alice.chat().send(p.bob.user(), &text).await.unwrap();
        assert!(p.proxy.all_applied(), "{fault:?}");
        expected.push(from(alice, &text));
    }
    sync_clean(&p.bob).await;
    sync_clean(&p.alice).await;
    same_log(&p, &expected).await;
}

#[tokio::test]
async fn a_committer_whose_answers_are_all_lost_catches_up_by_its_own_copy() {
    let server = TestServer::start(Options::default());
    let p = proxied_pair(&server).await;
    p.alice.groups().create("walks").await.unwrap();
    p.proxy.inject("POST", "/commit", Fault::DropResponse, 4);
    let unanswered = p
        .alice
        .groups()
        .add("walks", p.bob.user())
        .await
        .unwrap_err();
    assert_eq!(unanswered.code(), "unconfirmed", "{unanswered}");
    // The DS took the commit: bob is in.
    let report = sync_clean(&p.bob).await;
    assert_eq!(report.joined.len(), 1, "{report:?}");
    // alice's next sync finds her own copy and moves to the epoch the DS is at.
    let report = sync_clean(&p.alice).await;
    assert_eq!(report.settled.len(), 1, "{report:?}");
    let mut members = p.alice.groups().members("walks").await.unwrap();
    members.sort();
    let mut expected = vec![p.alice.user().clone(), p.bob.user().clone()];
    expected.sort();
    assert_eq!(members, expected);
    p.alice
        .groups()
        .send("walks", "welcome, bob")
        .await
        .unwrap();
    p.bob.groups().send("walks", "thanks").await.unwrap();
    sync_clean(&p.alice).await;
    sync_clean(&p.bob).await;
    let want = [
        from(p.alice.user(), "welcome, bob"),
        from(p.bob.user(), "thanks"),
    ];
    for client in [&p.alice, &p.bob] {
        let log = client.groups().messages("walks").await.unwrap();
        assert_eq!(texts(&log), want);
    }
}

#[tokio::test]
async fn a_commit_whose_answer_is_lost_once_or_which_is_sent_twice_is_taken_once() {
    let server = TestServer::start(Options::default());
    let p = proxied_pair(&server).await;
    p.alice.groups().create("walks").await.unwrap();
    p.proxy.inject("POST", "/commit", Fault::DropResponse, 1);
    assert_eq!(
        p.alice.groups().add("walks", p.bob.user()).await.unwrap(),
        1
    );
    sync_clean(&p.bob).await;
    p.proxy.inject("POST", "/commit", Fault::Duplicate, 1);
    assert_eq!(
        p.alice
            .groups()
            .remove("walks", p.bob.user())
            .await
            .unwrap(),
        1
    );
    assert!(p.proxy.all_applied());
    let report = sync_clean(&p.bob).await;
    assert_eq!(report.removed_from.len(), 1, "{report:?}");
    assert_eq!(
        p.alice.groups().members("walks").await.unwrap(),
        [p.alice.user().clone()]
    );
    p.alice.groups().send("walks", "just me").await.unwrap();
    sync_clean(&p.alice).await;
}

#[tokio::test]
async fn two_clients_sending_at_once_list_the_messages_in_the_same_order() {
    let server = TestServer::start(Options::default());
    let p = proxied_pair(&server).await;
    // alice's message is held on its way, so bob's, sent after hers, is taken first.
    p.proxy.inject(
        "POST",
        "/messages",
        Fault::Delay(Duration::from_millis(500)),
        1,
    );
    let (from_alice, from_bob) =
        tokio::join!(p.alice.chat().send(p.bob.user(), "alice first?"), async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            p.bob.chat().send(p.alice.user(), "bob first?").await
        });
    let (from_alice, from_bob) = (from_alice.unwrap(), from_bob.unwrap());
    assert!(from_bob.seq < from_alice.seq);
    sync_clean(&p.alice).await;
    sync_clean(&p.bob).await;
    same_log(
        &p,
        &[
            from(p.bob.user(), "bob first?"),
            from(p.alice.user(), "alice first?"),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_relay_whose_receipt_is_lost_is_queued_once() {
    // a.test reaches b.test only through the proxy.
    let (port_a, port_b) = (free_port(), free_port());
    let proxy = FaultProxy::start(&format!("127.0.0.1:{port_b}")).await;
    let url_a = format!("http://127.0.0.1:{port_a}");
    let url_b = format!("http://127.0.0.1:{port_b}");
    let clients_resolve = vec![format!("a.test={url_a}"), format!("b.test={url_b}")];
    let a = TestServer::start(Options {
        domain: "a.test".into(),
        port: port_a,
        resolve: vec![format!("a.test={url_a}"), format!("b.test={}", proxy.url())],
        ..Options::default()
    });
    let b = TestServer::start(Options {
        domain: "b.test".into(),
        port: port_b,
        resolve: clients_resolve.clone(),
        ..Options::default()
    });
    let devices = Devices::federated(&clients_resolve);
    let alice = devices.register(&a, "alice", &a.user("alice")).await;
    let bob = devices.register(&b, "bob", &b.user("bob")).await;
    connect(&alice, &bob, &[]).await;

    proxy.inject("POST", FED_DELIVER, Fault::DropResponse, 1);
    alice.chat().send(bob.user(), "across").await.unwrap();
    // a's outbox retries the batch with the same ids; b queues it once.
    let mut log = Vec::new();
    for _ in 0..50 {
        sync_clean(&bob).await;
        log = bob.chat().messages(alice.user()).await.unwrap();
        if !log.is_empty() && proxy.all_applied() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(proxy.all_applied());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = sync_clean(&bob).await;
    assert!(report.received.is_empty(), "{report:?}");
    let log = bob.chat().messages(alice.user()).await.unwrap_or(log);
    assert_eq!(texts(&log), [from(alice.user(), "across")]);
}

#[tokio::test]
async fn a_message_to_an_own_client_whose_answer_is_lost_is_queued_once() {
    let server = TestServer::start(Options::default());
    let proxy = FaultProxy::start(server.url.trim_start_matches("http://")).await;
    let devices = Devices::new();
    let user = server.user("alice");
    let phone = devices.register_at(&proxy.url(), "phone", &user).await;
    let laptop = devices.add_client(&server, "laptop", &user).await;
    proxy.inject("POST", "/qs/v1/queues/", Fault::DropResponse, 1);
    phone
        .send_to_own_client(laptop.client_id(), b"once".to_vec())
        .await
        .unwrap();
    assert!(proxy.all_applied());
    let received = laptop.receive(Duration::ZERO).await.unwrap();
    let payloads: Vec<Vec<u8>> = received
        .into_iter()
        .filter_map(|r| match r.item {
            Ok(QueueItem::FromOwnClient { payload, .. }) => Some(payload),
            _ => None,
        })
        .collect();
    assert_eq!(payloads, [b"once".to_vec()]);
}

#[tokio::test]
async fn registering_or_adding_a_client_whose_answer_is_lost_makes_one_client() {
    let server = TestServer::start(Options::default());
    let proxy = FaultProxy::start(server.url.trim_start_matches("http://")).await;
    let devices = Devices::new();
    let user = server.user("alice");
    proxy.inject("POST", "/as/v1/users", Fault::DropResponse, 2);
    let phone = devices.register_at(&proxy.url(), "phone", &user).await;
    let laptop = roost_client::Client::add_client(
        devices.path("laptop"),
        &proxy.url(),
        &user,
        common::PASSWORD,
    )
    .await
    .unwrap();
    assert!(proxy.all_applied(), "{:?}", proxy.applied());
    let mut clients: Vec<_> = phone
        .clients()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.client_id)
        .collect();
    clients.sort();
    let mut expected = vec![phone.client_id(), laptop.client_id()];
    expected.sort();
    assert_eq!(clients, expected);
}

#[tokio::test]
async fn a_group_created_or_a_connection_joined_whose_answer_is_lost_still_works() {
    let server = TestServer::start(Options::default());
    let proxy = FaultProxy::start(server.url.trim_start_matches("http://")).await;
    let devices = Devices::new();
    let alice = devices
        .register(&server, "alice", &server.user("alice"))
        .await;
    let bob = devices
        .register_at(&proxy.url(), "bob", &server.user("bob"))
        .await;
    // bob accepts alice's request; the DS's answer to his join is lost once.
    proxy.inject("POST", "/join-connection-group", Fault::DropResponse, 1);
    connect(&alice, &bob, &[]).await;
    assert!(proxy.all_applied());
    bob.chat().send(alice.user(), "joined").await.unwrap();
    // bob creates a group; the DS's answer is lost once.
    proxy.inject("POST", "/ds/v1/groups", Fault::DropResponse, 1);
    bob.groups().create("walks").await.unwrap();
    assert!(proxy.all_applied());
    bob.groups().add("walks", alice.user()).await.unwrap();
    let report = sync_clean(&alice).await;
    assert_eq!(report.joined.len(), 1, "{report:?}");
    alice.groups().send("walks", "in").await.unwrap();
    sync_clean(&bob).await;
    let log = bob.groups().messages("walks").await.unwrap();
    assert_eq!(texts(&log), [from(alice.user(), "in")]);
    let chat = alice.chat().messages(bob.user()).await.unwrap();
    assert_eq!(texts(&chat), [from(bob.user(), "joined")]);
}

/// alice and bob in the group "walks".
async fn walks_with_bob(p: &ProxiedPair) {
    p.alice.groups().create("walks").await.unwrap();
    p.alice.groups().add("walks", p.bob.user()).await.unwrap();
    sync_clean(&p.bob).await;
}

/// alice's `change` (one commit) is held on its way while bob says `text` in "walks", so the DS
/// takes bob's message in the epoch before the change; alice reads it only after merging her
/// commit, and must show it, from bob.
async fn bob_speaks_while_a_commit_is_held(
    p: &ProxiedPair,
    change: impl std::future::Future<Output = Result<usize, roost_client::Error>>,
    text: &str,
) {
    p.proxy.inject(
        "POST",
        "/commit",
        Fault::Delay(Duration::from_millis(600)),
        1,
    );
    let (changed, sent) = tokio::join!(change, async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        p.bob.groups().send("walks", text).await
    });
    assert_eq!(changed.unwrap(), 1);
    sent.unwrap();
    sync_clean(&p.alice).await;
    let log = p.alice.groups().messages("walks").await.unwrap();
    assert_eq!(texts(&log), [from(p.bob.user(), text)]);
}

#[tokio::test]
async fn a_message_the_ds_took_just_before_a_commit_is_still_read_by_the_committer() {
    let server = TestServer::start(Options::default());
    let p = proxied_pair(&server).await;
    let carol = carol_connected_with_alice(&server, &p).await;
    walks_with_bob(&p).await;
    let adding = p.alice.groups().add("walks", carol.user());
    bob_speaks_while_a_commit_is_held(&p, adding, "just before").await;
}

#[tokio::test]
async fn a_message_sent_just_before_its_sender_was_removed_shows_its_sender_to_the_remover() {
    let server = TestServer::start(Options::default());
    let p = proxied_pair(&server).await;
    walks_with_bob(&p).await;
    let removing = p.alice.groups().remove("walks", p.bob.user());
    bob_speaks_while_a_commit_is_held(&p, removing, "before I go").await;
}

/// Changes the commit request in a request body.
fn in_request(body: &mut Vec<u8>, change: impl FnOnce(&mut roost_protocol::ds::CommitRequest)) {
    let mut request = roost_protocol::codec::decode(body).unwrap();
    change(&mut request);
    *body = roost_protocol::codec::encode(&request);
}

/// Changes the commit inside a commit request's body.
fn in_commit(body: &mut Vec<u8>, change: impl FnOnce(&mut Vec<u8>)) {
    in_request(body, |request| change(&mut request.commit));
}

/// Flips the last byte of a commit request's commit: the MAC that closes a public message (its
/// membership tag), which the DS cannot check.
fn flip_membership_tag(body: &mut Vec<u8>) {
    in_commit(body, |commit| *commit.last_mut().unwrap() ^= 1);
}

#[tokio::test]
async fn a_commit_the_members_cannot_process_leaves_no_member_behind() {
    let server = TestServer::start(Options::default());
    let p = proxied_pair(&server).await;
    let carol = carol_connected_with_alice(&server, &p).await;
    p.alice.groups().create("plans").await.unwrap();
    p.alice.groups().add("plans", p.bob.user()).await.unwrap();
    sync_clean(&p.bob).await;

    // alice's next commit reaches the DS with a broken membership tag: the DS takes it (it
    // cannot check the tag), bob's client cannot process it.
    p.proxy
        .inject("POST", "/commit", Fault::Tamper(flip_membership_tag), 1);
    p.alice.groups().add("plans", carol.user()).await.unwrap();
    assert!(p.proxy.all_applied());

    // bob rejoins the group in its current state; carol joins from her Welcome.
    let report = sync_clean(&p.bob).await;
    assert_eq!(report.rejoined.len(), 1, "{report:?}");
    for client in [&carol, &p.alice] {
        sync_clean(client).await;
    }
    p.bob.groups().send("plans", "back in step").await.unwrap();
    p.alice
        .groups()
        .send("plans", "welcome back")
        .await
        .unwrap();
    for client in [&p.alice, &p.bob, &carol] {
        sync_clean(client).await;
    }
    for client in [&p.alice, &p.bob, &carol] {
        let log = p_log(client).await;
        assert_eq!(
            log,
            [
                from(p.bob.user(), "back in step"),
                from(p.alice.user(), "welcome back")
            ],
            "{}",
            client.user()
        );
        let mut members = client.groups().members("plans").await.unwrap();
        members.sort();
        assert_eq!(members.len(), 3, "{}: {members:?}", client.user());
    }
}

async fn p_log(client: &Client) -> Vec<(Option<String>, String)> {
    texts(&client.groups().messages("plans").await.unwrap())
}

/// Flips the last byte of a commit request's confirmation tag (just before the membership tag
/// and the two length bytes).
fn flip_confirmation_tag(body: &mut Vec<u8>) {
    in_commit(body, |commit| {
        let at = commit.len() - 34;
        commit[at] ^= 1;
    });
}

#[tokio::test]
async fn a_commit_whose_confirmation_tag_disagrees_with_its_group_info_is_refused() {
    let server = TestServer::start(Options::default());
    let p = proxied_pair(&server).await;
    p.alice.groups().create("plans").await.unwrap();
    p.proxy
        .inject("POST", "/commit", Fault::Tamper(flip_confirmation_tag), 1);
    let error = p
        .alice
        .groups()
        .add("plans", p.bob.user())
        .await
        .unwrap_err();
    assert!(p.proxy.all_applied());
    assert_eq!(error.code(), "invalid_mls_message", "{error}");
    assert!(error.to_string().contains("GroupInfo"), "{error}");
    // Nothing was taken: the same change goes through untouched, and bob is in step.
    p.alice.groups().add("plans", p.bob.user()).await.unwrap();
    sync_clean(&p.bob).await;
    p.bob.groups().send("plans", "here").await.unwrap();
    sync_clean(&p.alice).await;
    assert_eq!(p_log(&p.alice).await, [from(p.bob.user(), "here")]);
}

/// Replaces the epoch key a commit request announces with one no member can sign with.
fn announce_a_wrong_epoch_key(body: &mut Vec<u8>) {
    in_request(body, |request| {
        request.epoch_key = roost_protocol::SigningKey::generate().verifying_key();
    });
}

#[tokio::test]
async fn a_wrong_epoch_key_announced_by_a_committer_is_mended_by_the_next_sender() {
    let server = TestServer::start(Options::default());
    let p = proxied_pair(&server).await;
    p.alice.groups().create("plans").await.unwrap();
    p.proxy.inject(
        "POST",
        "/commit",
        Fault::Tamper(announce_a_wrong_epoch_key),
        1,
    );
    p.alice.groups().add("plans", p.bob.user()).await.unwrap();
    assert!(p.proxy.all_applied());
    sync_clean(&p.bob).await;
    // The DS refuses bob's message (no member can prove the announced key); bob's client
    // commits, announcing the key members derive, and sends again.
    p.bob
        .groups()
        .send("plans", "can you hear me")
        .await
        .unwrap();
    sync_clean(&p.alice).await;
    p.alice
        .groups()
        .send("plans", "loud and clear")
        .await
        .unwrap();
    sync_clean(&p.bob).await;
    for client in [&p.alice, &p.bob] {
        assert_eq!(
            p_log(client).await,
            [
                from(p.bob.user(), "can you hear me"),
                from(p.alice.user(), "loud and clear")
            ]
        );
    }
}

/// alice leaves "walks" from one of her two clients: her removal of the other rotates the
/// group's keys, then her proposal to leave is held on its way while bob, who has not read it,
/// makes a commit (the renewal of his leaf that a removal calls for) which is held longer, so
/// the DS takes it after the proposal and passes it over. alice's next sync proposes again —
/// with the group's current keys — and bob's next sync commits her removal.
#[tokio::test]
async fn a_leave_whose_proposal_a_commit_passed_over_is_proposed_again_and_committed() {
    let server = TestServer::start(Options::default());
    let p = proxied_pair(&server).await;
    let bob_proxy = FaultProxy::start(server.url.trim_start_matches("http://")).await;
    let devices = Devices::new();
    let bob = devices
        .register_at(&bob_proxy.url(), "bob-2", &server.user("bob2"))
        .await;
    connect(&p.alice, &bob, &[]).await;
    let alice_tablet = devices
        .add_client(&server, "alice-tablet", p.alice.user())
        .await;
    p.alice.groups().create("walks").await.unwrap();
    p.alice.groups().add("walks", bob.user()).await.unwrap();
    sync_clean(&alice_tablet).await;
    sync_clean(&p.alice).await;
    sync_clean(&bob).await;
    assert_eq!(
        bob.groups().members("walks").await.unwrap(),
        [p.alice.user().clone(), bob.user().clone()]
    );

    p.proxy.inject(
        "POST",
        "/messages",
        Fault::Delay(Duration::from_millis(2000)),
        1,
    );
    let held = async {
        // Once alice's proposal is held, her removal of the tablet is in.
        while p.proxy.applied().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bob_proxy.inject(
            "POST",
            "/commit",
            Fault::Delay(Duration::from_millis(4000)),
            1,
        );
        sync_clean(&bob).await
    };
    let (left, bob_synced) = tokio::join!(p.alice.groups().leave("walks"), held);
    assert_eq!(left.unwrap(), 2);
    assert_eq!(bob_synced.commits, 1, "{bob_synced:?}");
    assert!(bob_proxy.all_applied());

    sync_clean(&p.alice).await;
    sync_clean(&bob).await;
    assert_eq!(
        bob.groups().members("walks").await.unwrap(),
        [bob.user().clone()]
    );
}
