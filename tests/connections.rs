//! AS discovery and connection queues over real HTTP: publishing connection packages, fetching
//! them by user name, and queuing sealed connection requests.

mod common;

use std::time::Duration;

use common::{
    scan::{assert_holds, assert_holds_none, Secret},
    Identity, Options, TestServer, PASSWORD,
};
use roost_protocol::{
    api::{self, ConnectionPackageCount, ConnectionPackages, QueueBatch, QueueItem},
    codec,
    connection::{
        ConnectionEstablishmentBody, ConnectionEstablishmentPackage, ConnectionPackage, EarKey,
    },
    Timestamp,
};

async fn count(server: &TestServer, who: &Identity) -> ConnectionPackageCount {
    server
        .http()
        .signed(who, "GET", api::AS_CONNECTION_PACKAGES, vec![])
        .await
        .decode()
}

async fn discover(server: &TestServer, who: &Identity) -> Vec<ConnectionPackage> {
    let found: ConnectionPackages = server.http().discover(&who.user).await.decode();
    found.packages
}

/// An invitation from `from` to the owner of `package`, sealed to it.
fn invitation(from: &Identity, package: &ConnectionPackage) -> api::Enqueue {
    let body = ConnectionEstablishmentBody {
        sender_client_credential: from.credential.clone().unwrap(),
        connection_group_id: vec![9; 16],
        group_state_ear_key: EarKey::random(),
        credential_ear_key: EarKey::random(),
        responder: package.user().clone(),
        connection_package: package.hash(),
        initiator_profile: None,
    };
    let sealed = ConnectionEstablishmentPackage::new(body, &from.key)
        .seal(package)
        .unwrap();
    api::Enqueue {
        op: roost_protocol::OpId::random(),
        payload: codec::encode(&sealed),
    }
}

#[tokio::test]
async fn discovery_returns_one_package_per_client_and_uses_up_the_one_time_ones() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let mut phone = Identity::new(&server.user("alice"));
    http.register(&mut phone, None).await;
    let mut laptop = Identity::new(&server.user("alice"));
    http.add_client(&mut laptop, PASSWORD).await;
    for client in [&phone, &laptop] {
        let mut packages: Vec<_> = (0..3)
            .map(|_| client.connection_package(3600, false).0)
            .collect();
        packages.push(client.connection_package(3600, true).0);
        let published: ConnectionPackageCount = http.publish(client, packages).await.decode();
        assert_eq!(
            published,
            ConnectionPackageCount {
                remaining: 3,
                has_last_resort: true
            }
        );
    }

    let found = discover(&server, &phone).await;
    let mut owners: Vec<_> = found.iter().map(|p| p.client_id()).collect();
    owners.sort();
    let mut expected = vec![phone.client_id(), laptop.client_id()];
    expected.sort();
    assert_eq!(owners, expected);
    assert!(found
        .iter()
        .all(|p| !p.body.last_resort && p.verify(Timestamp::now()).is_ok()));
    assert_eq!(count(&server, &phone).await.remaining, 2);
    assert_eq!(count(&server, &laptop).await.remaining, 2);

    // Each fetch hands out a different package.
    let again = discover(&server, &phone).await;
    assert!(again.iter().all(|p| !found.contains(p)));
}

#[tokio::test]
async fn the_last_resort_package_is_served_when_nothing_else_is_left_and_never_used_up() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let mut alice = Identity::new(&server.user("alice"));
    http.register(&mut alice, None).await;
    let (one_time, _) = alice.connection_package(3600, false);
    let (last_resort, _) = alice.connection_package(3600, true);
    http.publish(&alice, vec![one_time.clone(), last_resort.clone()])
        .await
        .decode::<ConnectionPackageCount>();

    assert_eq!(discover(&server, &alice).await, vec![one_time]);
    for _ in 0..3 {
        assert_eq!(discover(&server, &alice).await, vec![last_resort.clone()]);
    }
    assert_eq!(
        count(&server, &alice).await,
        ConnectionPackageCount {
            remaining: 0,
            has_last_resort: true
        }
    );

    // A new last-resort package replaces the old one.
    let (newer, _) = alice.connection_package(3600, true);
    http.publish(&alice, vec![newer.clone()])
        .await
        .decode::<ConnectionPackageCount>();
    assert_eq!(discover(&server, &alice).await, vec![newer]);
}

#[tokio::test]
async fn an_expired_package_is_never_served() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let mut alice = Identity::new(&server.user("alice"));
    http.register(&mut alice, None).await;
    // Two seconds, not one: validity is in whole seconds, so a one-second package made just
    // before a second turns could already be expired when the server checks the publish.
    let (short, _) = alice.connection_package(2, false);
    let (last_resort, _) = alice.connection_package(3600, true);
    let expires_ms = short.body.validity.not_after.0 * 1000;
    http.publish(&alice, vec![short, last_resort.clone()])
        .await
        .decode::<ConnectionPackageCount>();
    let left_ms = expires_ms.saturating_sub(roost_protocol::ids::now_millis());
    tokio::time::sleep(Duration::from_millis(left_ms + 100)).await;
    assert_eq!(count(&server, &alice).await.remaining, 0);
    assert_eq!(discover(&server, &alice).await, vec![last_resort]);
}

#[tokio::test]
async fn invalid_packages_are_refused_and_nothing_of_the_request_is_stored() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let mut alice = Identity::new(&server.user("alice"));
    http.register(&mut alice, None).await;
    let mut bob = Identity::new(&server.user("bob"));
    http.register(&mut bob, None).await;

    let good = alice.connection_package(3600, false).0;
    let mut tampered = alice.connection_package(3600, false).0;
    tampered.body.last_resort = true;
    let bobs = bob.connection_package(3600, false).0;
    let too_long = alice.connection_package(365 * 24 * 3600, false).0;
    let expired = {
        let (secret, _) = roost_protocol::HpkeSecretKey::generate();
        ConnectionPackage::new(
            alice.credential.clone().unwrap(),
            &alice.key,
            secret.public_key(),
            roost_protocol::credentials::Validity {
                not_before: Timestamp(1),
                not_after: Timestamp(2),
            },
            false,
        )
    };
    for bad in [tampered, bobs, too_long, expired] {
        let response = http.publish(&alice, vec![good.clone(), bad]).await;
        assert_eq!(
            (response.status, response.error_code().as_str()),
            (400, "invalid_connection_package")
        );
    }
    assert_eq!(count(&server, &alice).await.remaining, 0);
    let response = http.publish(&alice, vec![good; api::MAX_PUBLISH + 1]).await;
    assert_eq!(response.status, 400);
}

#[tokio::test]
async fn an_unknown_user_is_a_clear_404() {
    let server = TestServer::start(Options::default());
    let response = server.http().discover(&server.user("nobody")).await;
    assert_eq!(
        (response.status, response.error_code().as_str()),
        (404, "unknown_user")
    );
    let elsewhere = "alice@elsewhere.test".parse().unwrap();
    let response = server.http().discover(&elsewhere).await;
    assert_eq!(response.status, 404);
}

#[tokio::test]
async fn discovery_beyond_the_rate_limit_is_refused_for_known_and_unknown_names_alike() {
    let server = TestServer::start(Options {
        discovery_burst: 5,
        ..Options::default()
    });
    let http = server.http();
    let mut alice = Identity::new(&server.user("alice"));
    http.register(&mut alice, None).await;
    let mut statuses = Vec::new();
    for i in 0..8 {
        let name = if i % 2 == 0 {
            server.user("alice")
        } else {
            server.user(&format!("guess{i}"))
        };
        let response = http.discover(&name).await;
        if response.status == 429 {
            assert_eq!(response.error_code(), "rate_limited");
        }
        statuses.push(response.status);
    }
    assert_eq!(statuses[..5], [200, 404, 200, 404, 200]);
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
}

#[tokio::test]
async fn a_sealed_request_reaches_the_clients_connection_queue_and_only_it_can_read_it() {
    let responder_server = TestServer::start(Options {
        domain: "b.test".into(),
        ..Options::default()
    });
    let initiator_server = TestServer::start(Options {
        domain: "a.test".into(),
        ..Options::default()
    });
    let (b, a) = (responder_server.http(), initiator_server.http());
    let mut bob = Identity::new(&responder_server.user("bob"));
    b.register(&mut bob, None).await;
    let mut bobs_laptop = Identity::new(&responder_server.user("bob"));
    b.add_client(&mut bobs_laptop, PASSWORD).await;
    let mut alice = Identity::new(&initiator_server.user("alicia-initiator"));
    a.register(&mut alice, None).await;

    let (package, secret) = bob.connection_package(3600, false);
    b.publish(&bob, vec![package])
        .await
        .decode::<ConnectionPackageCount>();
    let served = discover(&responder_server, &bob).await.remove(0);
    let sealed: roost_protocol::connection::SealedConnectionRequest =
        codec::decode(&invitation(&alice, &served).payload).unwrap();
    let body = codec::encode(&sealed);
    let path = api::as_connection_queue(&bob.client_id());
    assert_eq!(b.send("POST", &path, body.clone(), None).await.status, 202);

    // Replays: again to the same client (the one-time package is used up), or to another.
    let response = b.send("POST", &path, body.clone(), None).await;
    assert_eq!(
        (response.status, response.error_code().as_str()),
        (404, "unknown_connection_package")
    );
    let other = api::as_connection_queue(&bobs_laptop.client_id());
    assert_eq!(b.send("POST", &other, body, None).await.status, 404);

    // Only bob's client reads its connection queue.
    let read = format!("{path}?from=0&max=10&wait_ms=0");
    assert_eq!(
        b.signed(&bobs_laptop, "GET", &read, vec![]).await.status,
        403
    );
    let batch: QueueBatch = b.signed(&bob, "GET", &read, vec![]).await.decode();
    assert_eq!(batch.messages.len(), 1);
    let QueueItem::ConnectionRequest(request) = bob
        .open(
            roost_protocol::api::QueueKind::Connections,
            &batch.messages[0],
        )
        .unwrap()
    else {
        panic!("not a connection request");
    };
    let opened = request.open(&secret).unwrap();
    assert_eq!(opened.verify_for(&bob.user, &served.hash()), Ok(()));
    assert_eq!(opened.body.sender_client_credential.user(), &alice.user);
    let ack = codec::encode(&api::Ack {
        up_to: batch.messages[0].seq,
    });
    assert_eq!(
        b.signed(
            &bob,
            "POST",
            &api::as_connection_queue_ack(&bob.client_id()),
            ack
        )
        .await
        .status,
        204
    );

    // The responder's server never learnt who asked (in any encoding), though the scan does
    // find what it holds: bob's credential. (tests/privacy.rs scans while a request waits.)
    let mut responder_server = responder_server;
    assert!(responder_server.terminate().success());
    let files: Vec<u8> = responder_server
        .store_files()
        .into_iter()
        .flat_map(|(_, bytes)| bytes)
        .collect();
    let bobs = codec::encode(bob.credential.as_ref().unwrap());
    assert_holds(
        "the responder's store",
        &files,
        &Secret::new("bob's credential", bobs),
    );
    let initiator = [
        Secret::text("the initiator's name", "alicia-initiator"),
        Secret::new(
            "the initiator's credential",
            codec::encode(alice.credential.as_ref().unwrap()),
        ),
    ];
    assert_holds_none("the responder's store", &files, &initiator);
    assert_holds_none(
        "the responder's log",
        responder_server.log().as_bytes(),
        &initiator,
    );
}

#[tokio::test]
async fn a_request_for_a_package_never_served_is_refused() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let mut bob = Identity::new(&server.user("bob"));
    http.register(&mut bob, None).await;
    let mut alice = Identity::new(&server.user("alice"));
    http.register(&mut alice, None).await;
    // Published but never fetched through discovery.
    let (package, _) = bob.connection_package(3600, false);
    http.publish(&bob, vec![package.clone()])
        .await
        .decode::<ConnectionPackageCount>();
    let body = invitation(&alice, &package).payload;
    let response = http
        .send(
            "POST",
            &api::as_connection_queue(&bob.client_id()),
            body,
            None,
        )
        .await;
    assert_eq!(response.status, 404);
    let response = http
        .send(
            "POST",
            &api::as_connection_queue(&bob.client_id()),
            b"junk".to_vec(),
            None,
        )
        .await;
    assert_eq!(response.status, 400);
}

#[tokio::test]
async fn a_deleted_clients_packages_are_no_longer_served() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let mut phone = Identity::new(&server.user("alice"));
    http.register(&mut phone, None).await;
    let mut laptop = Identity::new(&server.user("alice"));
    http.add_client(&mut laptop, PASSWORD).await;
    for client in [&phone, &laptop] {
        http.publish(client, vec![client.connection_package(3600, true).0])
            .await
            .decode::<ConnectionPackageCount>();
    }
    let response = http
        .signed(
            &phone,
            "DELETE",
            &api::as_own_client(&laptop.client_id()),
            vec![],
        )
        .await;
    assert_eq!(response.status, 204);
    let found = discover(&server, &phone).await;
    assert_eq!(
        found.iter().map(|p| p.client_id()).collect::<Vec<_>>(),
        vec![phone.client_id()]
    );
}
