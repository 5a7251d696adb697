//! Named groups: a user adds the users they are connected with (every client of each, through
//! the friendship token shared in the connection group and the QS key-package claim), everyone
//! chats, a user is removed, two members change the group at once, and the command line does
//! it all.

mod common;

use std::time::Duration;

use common::{
    devices::{connect, log, run_json, Devices},
    Options, TestServer,
};
use roost_client::Client;
use roost_protocol::UserName;

/// alice (phone and laptop), bob (phone and laptop) and carol (phone); alice is connected with
/// bob and with carol, bob and carol are not connected.
struct People {
    alice_phone: Client,
    alice_laptop: Client,
    bob_phone: Client,
    bob_laptop: Client,
    carol_phone: Client,
}

impl People {
    fn all(&self) -> [&Client; 5] {
        [
            &self.alice_phone,
            &self.alice_laptop,
            &self.bob_phone,
            &self.bob_laptop,
            &self.carol_phone,
        ]
    }
}

async fn people(server: &TestServer, devices: &Devices) -> People {
    let (alice, bob, carol) = (
        server.user("alice"),
        server.user("bob"),
        server.user("carol"),
    );
    let p = People {
        alice_phone: devices.register(server, "alice-phone", &alice).await,
        alice_laptop: devices.add_client(server, "alice-laptop", &alice).await,
        bob_phone: devices.register(server, "bob-phone", &bob).await,
        bob_laptop: devices.add_client(server, "bob-laptop", &bob).await,
        carol_phone: devices.register(server, "carol-phone", &carol).await,
    };
    connect(
        &p.alice_phone,
        &p.bob_phone,
        &[&p.alice_laptop, &p.bob_laptop],
    )
    .await;
    connect(&p.alice_laptop, &p.carol_phone, &[&p.alice_phone]).await;
    p
}

/// alice's phone creates the group "plans" and adds `users`; then everyone syncs.
async fn plans_with(p: &People, users: &[&UserName]) {
    p.alice_phone.groups().create("plans").await.unwrap();
    for user in users {
        p.alice_phone.groups().add("plans", user).await.unwrap();
    }
    sync_all(&p.all()).await;
}

async fn sync_all(clients: &[&Client]) {
    for client in clients {
        let report = client.sync().await.unwrap();
        assert!(report.failed.is_empty(), "{:?}", report.failed);
    }
}

#[tokio::test]
async fn a_connected_user_is_added_with_all_clients_and_everyone_chats_in_the_group() {
    let server = TestServer::start(Options::default());
    let devices = Devices::new();
    let p = people(&server, &devices).await;
    let (bob, carol) = (server.user("bob"), server.user("carol"));

    let created = p.alice_phone.groups().create("book club").await.unwrap();
    // alice's other client is in it from the start.
    assert_eq!(
        p.alice_phone.groups().add("book club", &bob).await.unwrap(),
        2
    );
    assert_eq!(
        p.alice_phone
            .groups()
            .add("book club", &carol)
            .await
            .unwrap(),
        1
    );
    sync_all(&p.all()).await;
    for client in p.all() {
        let groups = client.groups().list().await.unwrap();
        assert_eq!(groups.len(), 1, "{}", client.user());
        assert_eq!(groups[0].name, "book club");
        assert_eq!(groups[0].group_id, created.group_id);
        assert_eq!(groups[0].members, 5, "{}", client.user());
    }
    let members = p.bob_laptop.groups().members("book club").await.unwrap();
    let names: Vec<&str> = members.iter().map(|u| u.local()).collect();
    assert_eq!(names, ["alice", "bob", "carol"]);

    // Adding someone twice is refused.
    let error = p
        .alice_laptop
        .groups()
        .add("book club", &bob)
        .await
        .unwrap_err();
    assert_eq!(error.code(), "already_member");

    let script = [
        (&p.alice_phone, "hello, book club"),
        (&p.bob_laptop, "hi all"),
        (&p.carol_phone, "hi from carol"),
        (&p.bob_phone, "bob again"),
        (&p.alice_laptop, "alice from the laptop"),
    ];
    for (client, text) in script {
        client.groups().send("book club", text).await.unwrap();
    }
    sync_all(&p.all()).await;
    let expected = vec![
        ("alice".to_owned(), "hello, book club".to_owned()),
        ("bob".to_owned(), "hi all".to_owned()),
        ("carol".to_owned(), "hi from carol".to_owned()),
        ("bob".to_owned(), "bob again".to_owned()),
        ("alice".to_owned(), "alice from the laptop".to_owned()),
    ];
    for client in p.all() {
        let messages = client.groups().messages("book club").await.unwrap();
        assert_eq!(log(&messages), expected, "on {}", client.user());
    }
    // The group's chat stays out of the connections' logs.
    assert!(p
        .alice_phone
        .chat()
        .messages(&bob)
        .await
        .unwrap()
        .iter()
        .all(|m| m.text != "hi all"));
}

#[tokio::test]
async fn a_user_you_are_not_connected_with_cannot_be_added() {
    let server = TestServer::start(Options::default());
    let devices = Devices::new();
    let p = people(&server, &devices).await;
    let carol = server.user("carol");
    p.bob_phone.groups().create("bob's").await.unwrap();
    let error = p.bob_phone.groups().add("bob's", &carol).await.unwrap_err();
    assert_eq!(error.code(), "not_connected");
    let error = p
        .bob_phone
        .groups()
        .add("no such group", &carol)
        .await
        .unwrap_err();
    assert_eq!(error.code(), "unknown_group");
    // carol never hears of the group.
    let report = p.carol_phone.sync().await.unwrap();
    assert!(report.joined.is_empty());
    assert!(p.carol_phone.groups().list().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_removed_user_gets_no_further_messages_and_cannot_send() {
    let server = TestServer::start(Options::default());
    let devices = Devices::new();
    let p = people(&server, &devices).await;
    let (bob, carol) = (server.user("bob"), server.user("carol"));
    plans_with(&p, &[&bob, &carol]).await;
    p.carol_phone
        .groups()
        .send("plans", "before")
        .await
        .unwrap();

    // carol (a member, not alice) removes bob: both of bob's clients go.
    assert_eq!(
        p.carol_phone.groups().remove("plans", &bob).await.unwrap(),
        2
    );
    for client in [&p.bob_phone, &p.bob_laptop] {
        let report = client.sync().await.unwrap();
        assert_eq!(report.removed_from.len(), 1, "{report:?}");
        let groups = client.groups().list().await.unwrap();
        assert!(groups[0].removed);
        let error = client
            .groups()
            .send("plans", "still here?")
            .await
            .unwrap_err();
        assert_eq!(error.code(), "removed_from_group");
    }
    p.alice_laptop
        .groups()
        .send("plans", "after")
        .await
        .unwrap();
    sync_all(&p.all()).await;
    for client in [&p.bob_phone, &p.bob_laptop] {
        let texts = log(&client.groups().messages("plans").await.unwrap());
        assert_eq!(texts, [("carol".to_owned(), "before".to_owned())]);
    }
    for client in [&p.alice_phone, &p.carol_phone] {
        let texts = log(&client.groups().messages("plans").await.unwrap());
        assert_eq!(
            texts,
            [
                ("carol".to_owned(), "before".to_owned()),
                ("alice".to_owned(), "after".to_owned())
            ]
        );
        let members = client.groups().members("plans").await.unwrap();
        assert!(!members.contains(&bob));
    }
    let error = p
        .alice_phone
        .groups()
        .remove("plans", &bob)
        .await
        .unwrap_err();
    assert_eq!(error.code(), "not_a_member");
}

#[tokio::test]
async fn a_member_who_leaves_is_removed_by_the_next_member_to_sync_and_gets_nothing_after() {
    let server = TestServer::start(Options::default());
    let devices = Devices::new();
    let p = people(&server, &devices).await;
    let (bob, carol) = (server.user("bob"), server.user("carol"));
    plans_with(&p, &[&bob, &carol]).await;
    p.bob_phone.groups().send("plans", "bye").await.unwrap();

    // bob leaves from his phone: both of his clients go, and he sends nothing more.
    assert_eq!(p.bob_phone.groups().leave("plans").await.unwrap(), 2);
    let error = p
        .bob_phone
        .groups()
        .send("plans", "one more")
        .await
        .unwrap_err();
    assert_eq!(error.code(), "removed_from_group");
    // carol's next sync commits the removal (after applying the commit that removed bob's
    // laptop).
    let report = p.carol_phone.sync().await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.commits, 2, "{report:?}");
    assert_eq!(
        p.carol_phone.groups().members("plans").await.unwrap(),
        [server.user("alice"), carol.clone()]
    );
    for client in [&p.bob_phone, &p.bob_laptop] {
        let report = client.sync().await.unwrap();
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        assert!(client.groups().list().await.unwrap()[0].removed);
    }
    p.alice_laptop
        .groups()
        .send("plans", "after bob left")
        .await
        .unwrap();
    sync_all(&p.all()).await;
    for client in [&p.alice_phone, &p.alice_laptop, &p.carol_phone] {
        let members = client.groups().members("plans").await.unwrap();
        assert_eq!(members, [server.user("alice"), carol.clone()]);
        let texts = log(&client.groups().messages("plans").await.unwrap());
        assert_eq!(
            texts,
            [
                ("bob".to_owned(), "bye".to_owned()),
                ("alice".to_owned(), "after bob left".to_owned())
            ]
        );
    }
    for client in [&p.bob_phone, &p.bob_laptop] {
        let texts = log(&client.groups().messages("plans").await.unwrap());
        assert_eq!(texts, [("bob".to_owned(), "bye".to_owned())]);
    }
}

#[tokio::test]
async fn a_message_read_after_its_sender_was_removed_still_shows_its_sender() {
    let server = TestServer::start(Options::default());
    let devices = Devices::new();
    let p = people(&server, &devices).await;
    let (bob, carol) = (server.user("bob"), server.user("carol"));
    plans_with(&p, &[&bob, &carol]).await;
    p.bob_phone
        .groups()
        .send("plans", "said before leaving")
        .await
        .unwrap();
    // alice's phone reads it (syncing before the removal), then removes bob; alice's laptop
    // and carol read it only afterwards, when the DS no longer lists bob's clients.
    p.alice_phone.groups().remove("plans", &bob).await.unwrap();
    for client in [&p.alice_phone, &p.alice_laptop, &p.carol_phone] {
        client.sync().await.unwrap();
        let texts = log(&client.groups().messages("plans").await.unwrap());
        assert_eq!(
            texts,
            [("bob".to_owned(), "said before leaving".to_owned())],
            "on {}",
            client.client_id()
        );
    }
}

#[tokio::test]
async fn a_removed_user_who_is_added_again_rejoins_fully_without_what_was_said_meanwhile() {
    let server = TestServer::start(Options::default());
    let devices = Devices::new();
    let p = people(&server, &devices).await;
    let bob = server.user("bob");
    plans_with(&p, &[&bob]).await;
    p.bob_phone.groups().send("plans", "first").await.unwrap();
    p.alice_phone.groups().remove("plans", &bob).await.unwrap();
    sync_all(&p.all()).await;
    p.alice_phone
        .groups()
        .send("plans", "while bob is out")
        .await
        .unwrap();

    assert_eq!(p.alice_phone.groups().add("plans", &bob).await.unwrap(), 2);
    for client in [&p.bob_phone, &p.bob_laptop] {
        let report = client.sync().await.unwrap();
        assert_eq!(report.joined.len(), 1, "{report:?}");
        let groups = client.groups().list().await.unwrap();
        assert_eq!(groups.len(), 1, "one group, not a second copy");
        assert!(!groups[0].removed, "{:?}", groups[0]);
        assert_eq!(groups[0].members, 4, "alice's and bob's clients");
    }
    p.bob_laptop.groups().send("plans", "back").await.unwrap();
    p.alice_laptop
        .groups()
        .send("plans", "welcome back")
        .await
        .unwrap();
    sync_all(&p.all()).await;
    let bobs_view = [("bob", "first"), ("bob", "back"), ("alice", "welcome back")];
    let alices_view = [
        ("bob", "first"),
        ("alice", "while bob is out"),
        ("bob", "back"),
        ("alice", "welcome back"),
    ];
    for (client, expected) in [
        (&p.bob_phone, &bobs_view[..]),
        (&p.bob_laptop, &bobs_view[..]),
        (&p.alice_phone, &alices_view[..]),
        (&p.alice_laptop, &alices_view[..]),
    ] {
        let texts = log(&client.groups().messages("plans").await.unwrap());
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(from, text)| (from.to_string(), text.to_string()))
            .collect();
        assert_eq!(texts, expected, "on {}", client.client_id());
    }
}

#[tokio::test]
async fn two_members_changing_the_group_at_once_both_succeed_after_one_syncs_and_retries() {
    let server = TestServer::start(Options::default());
    let devices = Devices::new();
    let p = people(&server, &devices).await;
    let (bob, carol) = (server.user("bob"), server.user("carol"));
    let dave = server.user("dave");
    let dave_phone = devices.register(&server, "dave-phone", &dave).await;
    connect(&p.bob_phone, &dave_phone, &[&p.bob_laptop]).await;

    p.alice_phone.groups().create("party").await.unwrap();
    p.alice_phone.groups().add("party", &bob).await.unwrap();
    sync_all(&p.all()).await;
    // alice adds carol while bob adds dave: one commit per epoch wins at the DS, the other
    // client gets 409 stale_epoch, catches up and commits again.
    let (by_alice, by_bob) = tokio::join!(
        p.alice_phone.groups().add("party", &carol),
        p.bob_phone.groups().add("party", &dave),
    );
    assert_eq!(by_alice.unwrap(), 1);
    assert_eq!(by_bob.unwrap(), 1);
    let everyone = [
        &p.alice_phone,
        &p.alice_laptop,
        &p.bob_phone,
        &p.bob_laptop,
        &p.carol_phone,
        &dave_phone,
    ];
    sync_all(&everyone).await;
    for client in everyone {
        let groups = client.groups().list().await.unwrap();
        assert_eq!(groups[0].members, 6, "on {}", client.user());
    }
    dave_phone
        .groups()
        .send("party", "thanks bob")
        .await
        .unwrap();
    sync_all(&everyone).await;
    for client in everyone {
        let texts = log(&client.groups().messages("party").await.unwrap());
        assert_eq!(texts, [("dave".to_owned(), "thanks bob".to_owned())]);
    }
}

#[tokio::test]
async fn the_command_line_creates_a_group_adds_a_user_and_chats_in_it() {
    let server = TestServer::start(Options::default());
    let devices = Devices::new();
    let p = people(&server, &devices).await;
    let (bob, carol) = (
        server.user("bob").to_string(),
        server.user("carol").to_string(),
    );
    drop(p);
    let run = |device: &str, args: &'static [&'static str]| run_json(devices.path(device), args);

    let created = run("alice-phone", &["group", "create", "hikers"]).await;
    assert_eq!(created["name"], "hikers");
    let added = run_json(
        devices.path("alice-phone"),
        &["group", "add", "hikers", &bob],
    )
    .await;
    assert_eq!(added["added"], 2);
    run("bob-laptop", &["sync"]).await;
    let listed = run("bob-laptop", &["groups"]).await;
    assert_eq!(listed["groups"][0]["name"], "hikers");
    assert_eq!(listed["groups"][0]["members"], 4);
    run("bob-laptop", &["group", "send", "hikers", "see you at 8"]).await;
    run("alice-laptop", &["sync"]).await;
    let messages = run("alice-laptop", &["group", "messages", "hikers"]).await;
    assert_eq!(messages["messages"][0]["from"], bob);
    assert_eq!(messages["messages"][0]["text"], "see you at 8");
    let members = run("alice-laptop", &["group", "members", "hikers"]).await;
    assert_eq!(members["members"].as_array().unwrap().len(), 2);
    // Members show by the display name their profile gives, beside their user name.
    run(
        "bob-laptop",
        &["profile", "set", "--name", "Bob the Builder"],
    )
    .await;
    for device in ["bob-laptop", "alice-laptop", "bob-laptop", "alice-laptop"] {
        run(device, &["sync"]).await;
    }
    let members = run("alice-laptop", &["group", "members", "hikers"]).await;
    let bob_member = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"] == bob.as_str())
        .cloned();
    assert_eq!(
        bob_member,
        Some(serde_json::json!({ "user": bob, "display_name": "Bob the Builder" })),
        "{members}"
    );

    // Errors come as JSON with a code, and a non-zero exit.
    let output = std::process::Command::new(common::client_binary())
        .env_clear()
        .env("ROOST_CLIENT_STATE", devices.path("bob-laptop"))
        .args(["group", "add", "hikers", &carol, "--json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let error: serde_json::Value = serde_json::from_slice(&output.stderr).unwrap();
    assert_eq!(error["error"], "not_connected");
}

#[tokio::test]
async fn a_client_whose_key_packages_ran_out_publishes_more_after_joining() {
    let server = TestServer::start(Options::default());
    let devices = Devices::new();
    let p = people(&server, &devices).await;
    let carol = server.user("carol");
    // Someone holding carol's token claims all her one-time key packages.
    let token = p
        .alice_phone
        .contacts()
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.peer.as_ref() == Some(&carol))
        .and_then(|c| c.peer_token)
        .expect("carol's token");
    let count = || async {
        p.carol_phone
            .server()
            .key_package_count(p.carol_phone.signer())
            .await
            .unwrap()
    };
    while count().await.remaining > 0 {
        p.alice_phone
            .server()
            .claim_key_packages(&token)
            .await
            .unwrap();
    }
    // She can still be added (by her last-resort key package), and then tops up.
    p.alice_phone.groups().create("late").await.unwrap();
    assert_eq!(p.alice_phone.groups().add("late", &carol).await.unwrap(), 1);
    let report = p.carol_phone.sync().await.unwrap();
    assert_eq!(report.joined.len(), 1);
    let after = count().await;
    assert_eq!(
        after.remaining,
        roost_client::mls::key_packages::INITIAL_KEY_PACKAGES as u32
    );
    assert!(after.has_last_resort);
}

#[tokio::test]
async fn a_client_renews_its_leaf_on_schedule_so_it_never_expires_and_the_group_goes_on() {
    let server = TestServer::start(Options::default());
    let devices = Devices::new();
    let (alice, bob) = devices.alice_and_bob(&server).await;
    connect(&alice, &bob, &[]).await;
    alice.groups().create("plans").await.unwrap();
    alice.groups().add("plans", bob.user()).await.unwrap();
    sync_all(&[&bob]).await;
    let group_id = bob.groups().find("plans").unwrap().group_id;
    // bob's leaf came from his KeyPackage, and would expire with it.
    let status = bob.groups().status(&group_id).unwrap().unwrap();
    assert!(status.own_leaf_expires.is_some());

    drop(bob);
    let bob = devices.open("bob").with_leaf_renewal(Duration::ZERO);
    // bob's first sync started each group's clock; with renewal due at once, the next
    // renews every leaf.
    let report = bob.sync().await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.leaves_renewed, 2, "the connection and the group");
    let renewed = bob.groups().status(&group_id).unwrap().unwrap();
    assert_eq!(renewed.own_leaf_expires, None);
    assert_eq!(renewed.epoch, status.epoch + 1);

    sync_all(&[&alice]).await;
    assert_eq!(
        alice.groups().status(&group_id).unwrap().unwrap().epoch,
        renewed.epoch
    );
    alice.groups().send("plans", "still here").await.unwrap();
    bob.groups().send("plans", "me too").await.unwrap();
    sync_all(&[&alice, &bob]).await;
    for client in [&alice, &bob] {
        assert_eq!(
            log(&client.groups().messages("plans").await.unwrap()),
            [
                ("alice".to_owned(), "still here".to_owned()),
                ("bob".to_owned(), "me too".to_owned())
            ]
        );
    }
}

/// alice, bob and carol, one client each, alice connected with both and all three in "plans".
async fn alice_bob_and_carol_in_plans(
    server: &TestServer,
    devices: &Devices,
) -> (Client, Client, Client) {
    let (alice, bob) = devices.alice_and_bob(server).await;
    let carol = devices
        .register(server, "carol", &server.user("carol"))
        .await;
    connect(&alice, &bob, &[]).await;
    connect(&alice, &carol, &[]).await;
    alice.groups().create("plans").await.unwrap();
    for user in [bob.user(), carol.user()] {
        alice.groups().add("plans", user).await.unwrap();
    }
    sync_all(&[&bob, &carol]).await;
    (alice, bob, carol)
}

#[tokio::test]
async fn a_member_whose_clients_never_come_back_is_removed_from_named_groups() {
    let server = TestServer::start(Options::default());
    let devices = Devices::new();
    let (alice, bob, carol) = alice_bob_and_carol_in_plans(&server, &devices).await;

    // alice and bob keep syncing, each renewing their leaf every time; carol is gone.
    let away = |name: &str| {
        devices
            .open(name)
            .with_leaf_renewal(Duration::ZERO)
            .with_idle_removal(2)
    };
    drop((alice, bob));
    let (alice, bob) = (away("alice"), away("bob"));
    let mut removed = 0;
    for _ in 0..3 {
        for client in [&alice, &bob] {
            let report = client.sync().await.unwrap();
            assert!(report.failed.is_empty(), "{:?}", report.failed);
            removed += report.idle_removed;
        }
    }
    assert_eq!(removed, 1, "carol's one client, once");
    sync_all(&[&bob]).await;
    for client in [&alice, &bob] {
        let members = client.groups().members("plans").await.unwrap();
        assert_eq!(members, [alice.user().clone(), bob.user().clone()]);
    }
    // carol learns it when she is back; her connection with alice stays.
    let report = carol.sync().await.unwrap();
    assert_eq!(report.removed_from.len(), 1);
    carol.chat().send(alice.user(), "back").await.unwrap();
}

#[tokio::test]
async fn after_a_removal_the_members_who_stay_renew_their_leaves() {
    let server = TestServer::start(Options::default());
    let devices = Devices::new();
    let (alice, bob, carol) = alice_bob_and_carol_in_plans(&server, &devices).await;
    alice.groups().remove("plans", bob.user()).await.unwrap();

    // carol takes the removal, then renews her leaf (the remover's commit renewed alice's).
    let report = carol.sync().await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.leaves_renewed, 1);
    assert_eq!(carol.sync().await.unwrap().leaves_renewed, 0, "once");
    sync_all(&[&alice]).await;
    carol.groups().send("plans", "just us").await.unwrap();
    sync_all(&[&alice]).await;
    assert_eq!(
        log(&alice.groups().messages("plans").await.unwrap()),
        [("carol".to_owned(), "just us".to_owned())]
    );
}
