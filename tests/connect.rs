//! Connection establishment end to end, through the client library against a real `roost`
//! server: the initiator creates the connection group with its other clients, a responder
//! client joins by external commit and adds its own other clients, a sibling that did not
//! accept joins from the Welcome, a refused join discards the request, and two clients
//! accepting at once end in one connection.

mod common;

use std::path::PathBuf;

use common::{
    devices::{cli, Devices},
    mls::{self, Keys, Member},
    Options, TestServer,
};
use roost_client::{Client, Error, GroupStatus, JoinedVia, PendingRequest};
use roost_protocol::UserName;

/// alice and bob, each with a phone and a laptop.
struct People {
    alice: UserName,
    bob: UserName,
    alice_phone: Client,
    alice_laptop: Client,
    bob_phone: Client,
    bob_laptop: Client,
}

async fn people(server: &TestServer, devices: &Devices) -> People {
    let alice = server.user("alice");
    let bob = server.user("bob");
    People {
        alice_phone: devices.register(server, "alice-phone", &alice).await,
        alice_laptop: devices.add_client(server, "alice-laptop", &alice).await,
        bob_phone: devices.register(server, "bob-phone", &bob).await,
        bob_laptop: devices.add_client(server, "bob-laptop", &bob).await,
        alice,
        bob,
    }
}

/// Reads `client`'s connection queue; expects exactly one new request, into `group_id`.
async fn one_request(client: &Client, from: &UserName, group_id: &[u8]) -> PendingRequest {
    let fetched = client.connections().requests().await.unwrap();
    assert!(fetched.rejected.is_empty(), "{:?}", fetched.rejected);
    let [request] = fetched.received.as_slice() else {
        panic!("expected one request, got {:?}", fetched.received);
    };
    assert_eq!(request.from(), from);
    assert_eq!(request.package.body.connection_group_id, group_id);
    assert_eq!(client.connections().pending().await.unwrap().len(), 1);
    request.clone()
}

fn status(client: &Client, group_id: &[u8]) -> GroupStatus {
    client
        .groups()
        .status(group_id)
        .unwrap()
        .unwrap_or_else(|| panic!("{} is not in the group", client.client_id()))
}

/// Every client is in the group, in one epoch, and the group has `members` members.
fn same_epoch(clients: &[&Client], group_id: &[u8], members: usize) -> u64 {
    let first = status(clients[0], group_id);
    for client in clients {
        let status = status(client, group_id);
        assert_eq!((status.epoch, status.members), (first.epoch, first.members));
    }
    assert_eq!(first.members, members);
    first.epoch
}

/// `client` has exactly one connection: with `peer`, through `group_id`.
async fn one_contact(client: &Client, peer: &UserName, group_id: &[u8]) {
    let contacts = client.contacts().list().await.unwrap();
    let [contact] = contacts.as_slice() else {
        panic!("expected one contact, got {contacts:?}");
    };
    assert_eq!(contact.group_id, group_id);
    assert_eq!(contact.peer.as_ref(), Some(peer));
}

#[tokio::test]
async fn a_connection_brings_all_four_clients_into_one_group() {
    let server = TestServer::start(Options::default());
    let devices = Devices::new();
    let p = people(&server, &devices).await;

    let connected = p.alice_phone.connections().connect(&p.bob).await.unwrap();
    assert_eq!(connected.peer, p.bob);
    assert_eq!(connected.invited, 2);
    assert_eq!(connected.own_clients_added, 1);
    let group_id = connected.group_id;

    // Both of bob's clients list the request.
    let on_phone = one_request(&p.bob_phone, &p.alice, &group_id).await;
    let on_laptop = one_request(&p.bob_laptop, &p.alice, &group_id).await;

    // alice's laptop learns of the group from its Welcome.
    let report = p.alice_laptop.sync().await.unwrap();
    assert_eq!(report.joined, vec![group_id.clone()]);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    same_epoch(&[&p.alice_phone, &p.alice_laptop], &group_id, 2);

    // bob's phone accepts: an external join, then bob's laptop is added.
    let accepted = p
        .bob_phone
        .connections()
        .accept(&on_phone.id)
        .await
        .unwrap();
    assert_eq!(accepted.via, JoinedVia::ExternalCommit);
    assert_eq!(accepted.peer, p.alice);
    assert_eq!(accepted.group_id, group_id);
    assert_eq!(accepted.own_clients_added, 1);
    assert_eq!(accepted.own_clients_error, None);
    assert!(p
        .bob_phone
        .connections()
        .pending()
        .await
        .unwrap()
        .is_empty());

    // bob's laptop joins from the Welcome, and its request for the group is settled.
    let report = p.bob_laptop.sync().await.unwrap();
    assert_eq!(report.joined, vec![group_id.clone()]);
    assert!(p
        .bob_laptop
        .connections()
        .pending()
        .await
        .unwrap()
        .is_empty());

    // alice's clients apply bob's join and the addition of bob's laptop.
    for client in [&p.alice_phone, &p.alice_laptop] {
        let report = client.sync().await.unwrap();
        assert_eq!(report.commits, 2, "{:?}", report.failed);
        assert!(report.failed.is_empty(), "{:?}", report.failed);
    }
    let clients = [&p.alice_phone, &p.alice_laptop, &p.bob_phone, &p.bob_laptop];
    let epoch = same_epoch(&clients, &group_id, 4);

    one_contact(&p.alice_phone, &p.bob, &group_id).await;
    one_contact(&p.alice_laptop, &p.bob, &group_id).await;
    one_contact(&p.bob_phone, &p.alice, &group_id).await;
    one_contact(&p.bob_laptop, &p.alice, &group_id).await;

    // Accepting the settled request again does nothing: no second external join.
    let again = p
        .bob_laptop
        .connections()
        .accept(&on_laptop.id)
        .await
        .unwrap_err();
    assert!(matches!(again, Error::UnknownRequest(_)), "{again}");
    for client in clients {
        let report = client.sync().await.unwrap();
        assert_eq!((report.commits, report.joined.len()), (0, 0));
    }
    assert_eq!(same_epoch(&clients, &group_id, 4), epoch);
}

#[tokio::test]
async fn accepting_on_a_second_client_joins_from_the_welcome_not_by_a_second_join() {
    let server = TestServer::start(Options::default());
    let devices = Devices::new();
    let p = people(&server, &devices).await;
    let group_id = p
        .alice_phone
        .connections()
        .connect(&p.bob)
        .await
        .unwrap()
        .group_id;
    let on_phone = one_request(&p.bob_phone, &p.alice, &group_id).await;
    let on_laptop = one_request(&p.bob_laptop, &p.alice, &group_id).await;

    let accepted = p
        .bob_phone
        .connections()
        .accept(&on_phone.id)
        .await
        .unwrap();
    assert_eq!(accepted.via, JoinedVia::ExternalCommit);

    // The laptop has not synced: accepting finds the Welcome in its queue first.
    let accepted = p
        .bob_laptop
        .connections()
        .accept(&on_laptop.id)
        .await
        .unwrap();
    assert_eq!(accepted.via, JoinedVia::Welcome);
    assert_eq!(accepted.peer, p.alice);
    assert!(p
        .bob_laptop
        .connections()
        .pending()
        .await
        .unwrap()
        .is_empty());

    for client in [&p.alice_phone, &p.alice_laptop] {
        let report = client.sync().await.unwrap();
        assert!(report.failed.is_empty(), "{:?}", report.failed);
    }
    // Two commits after the group's creation with alice's laptop: bob's join, bob's laptop.
    let epoch = same_epoch(
        &[&p.alice_phone, &p.alice_laptop, &p.bob_phone, &p.bob_laptop],
        &group_id,
        4,
    );
    assert_eq!(epoch, 3);
    one_contact(&p.bob_laptop, &p.alice, &group_id).await;
}

#[tokio::test]
async fn a_refused_join_without_a_welcome_discards_the_request_with_a_clear_error() {
    let server = TestServer::start(Options::default());
    let devices = Devices::new();
    let alice = server.user("alice");
    let bob = server.user("bob");
    let alice_phone = devices.register(&server, "alice-phone", &alice).await;
    let bob_phone = devices.register(&server, "bob-phone", &bob).await;
    let group_id = alice_phone
        .connections()
        .connect(&bob)
        .await
        .unwrap()
        .group_id;
    let request = one_request(&bob_phone, &alice, &group_id).await;

    // Someone else takes the group's one external join; nobody sends bob a Welcome.
    let http = server.http();
    let mut mallory = Member::register(&server, "mallory").await;
    let keys = Keys {
        state: request.package.body.group_state_ear_key.clone(),
        credentials: request.package.body.credential_ear_key.clone(),
    };
    let response =
        mls::join_connection_group(&http, server.domain(), &group_id, &keys, &mut mallory).await;
    assert_eq!(response.status, 200);

    let error = bob_phone
        .connections()
        .accept(&request.id)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::ConnectionFailed { peer, .. } if *peer == alice),
        "{error}"
    );
    assert_eq!(error.code(), "connection_failed");
    let text = error.to_string();
    assert!(text.contains("cannot connect with alice@"), "{text}");
    assert!(text.contains("discarded"), "{text}");
    assert!(bob_phone.connections().pending().await.unwrap().is_empty());
    assert!(bob_phone.contacts().list().await.unwrap().is_empty());
    assert!(bob_phone.groups().status(&group_id).unwrap().is_none());
}

#[tokio::test]
async fn two_clients_accepting_at_once_make_one_connection() {
    let server = TestServer::start(Options::default());
    let devices = Devices::new();
    let p = people(&server, &devices).await;
    let group_id = p
        .alice_phone
        .connections()
        .connect(&p.bob)
        .await
        .unwrap()
        .group_id;
    let on_phone = one_request(&p.bob_phone, &p.alice, &group_id).await;
    let on_laptop = one_request(&p.bob_laptop, &p.alice, &group_id).await;

    let (phone, laptop) = tokio::join!(
        p.bob_phone.connections().accept(&on_phone.id),
        p.bob_laptop.connections().accept(&on_laptop.id)
    );
    let outcomes = [&phone, &laptop];
    let external = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(a) if a.via == JoinedVia::ExternalCommit))
        .count();
    assert_eq!(external, 1, "phone: {phone:?}, laptop: {laptop:?}");
    for outcome in outcomes {
        match outcome {
            Ok(accepted) => assert!(matches!(
                accepted.via,
                JoinedVia::ExternalCommit | JoinedVia::Welcome
            )),
            // The loser saw no Welcome within the grace period; it comes with the next sync.
            Err(e) => assert!(matches!(e, Error::ConnectionFailed { .. }), "{e}"),
        }
    }

    for client in [&p.bob_phone, &p.bob_laptop, &p.alice_phone, &p.alice_laptop] {
        let report = client.sync().await.unwrap();
        assert!(report.failed.is_empty(), "{:?}", report.failed);
    }
    same_epoch(
        &[&p.alice_phone, &p.alice_laptop, &p.bob_phone, &p.bob_laptop],
        &group_id,
        4,
    );
    one_contact(&p.alice_phone, &p.bob, &group_id).await;
    one_contact(&p.alice_laptop, &p.bob, &group_id).await;
    one_contact(&p.bob_phone, &p.alice, &group_id).await;
    one_contact(&p.bob_laptop, &p.alice, &group_id).await;
    assert!(p
        .bob_phone
        .connections()
        .pending()
        .await
        .unwrap()
        .is_empty());
    assert!(p
        .bob_laptop
        .connections()
        .pending()
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn the_command_line_connects_accepts_syncs_and_lists_contacts() {
    let server = TestServer::start(Options::default());
    let devices = Devices::new();
    let (alice, bob) = (server.user("alice"), server.user("bob"));
    let (alice_dir, bob_dir) = (devices.path("alice"), devices.path("bob"));
    let run = move |state: PathBuf, args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(&state, &args)
        })
    };
    let ok = |(success, value): (bool, serde_json::Value)| {
        assert!(success, "{value}");
        value
    };
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for (dir, user) in [(&alice_dir, &alice), (&bob_dir, &bob)] {
        let user = user.to_string();
        ok(run(
            dir.clone(),
            args(&["register", &user, "--server", &server.url]),
        )
        .await
        .unwrap());
    }

    let connected = ok(run(alice_dir.clone(), args(&["connect", &bob.to_string()]))
        .await
        .unwrap());
    assert_eq!(connected["peer"], bob.to_string());
    assert_eq!(connected["invited"], 1);
    let group = connected["group_id"].as_str().unwrap().to_owned();

    let requests = ok(run(bob_dir.clone(), args(&["requests"])).await.unwrap());
    let id = requests["requests"][0]["id"].as_str().unwrap().to_owned();
    let accepted = ok(run(bob_dir.clone(), args(&["accept", &id])).await.unwrap());
    assert_eq!(accepted["via"], "external_commit");
    assert_eq!(accepted["group_id"], group);
    assert_eq!(accepted["peer"], alice.to_string());

    let synced = ok(run(alice_dir.clone(), args(&["sync"])).await.unwrap());
    assert_eq!(synced["commits"], 1);
    for (dir, peer) in [(&alice_dir, &bob), (&bob_dir, &alice)] {
        let contacts = ok(run(dir.clone(), args(&["contacts"])).await.unwrap());
        assert_eq!(
            contacts["contacts"].as_array().unwrap().len(),
            1,
            "{contacts}"
        );
        assert_eq!(contacts["contacts"][0]["group_id"], group);
        assert_eq!(contacts["contacts"][0]["peer"], peer.to_string());
    }

    let (success, error) = run(bob_dir.clone(), args(&["accept", &id])).await.unwrap();
    assert!(!success);
    assert_eq!(error["error"], "unknown_request");
}
