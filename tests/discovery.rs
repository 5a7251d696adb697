//! Discovery through the client library against real `roost` servers: publishing connection
//! packages (on registration, topping up) and discovering a user's clients with every package
//! verified, also when a proxy forges what the server sent. Connection requests are in
//! `tests/requests.rs`.

mod common;

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{
    devices::{discover_one, Devices},
    Identity, Options, TestServer, PASSWORD,
};
use roost_client::{Client, Error, PackageProblem, Server};
use roost_protocol::{
    api::{ConnectionPackageCount, ConnectionPackages},
    codec,
    connection::{ConnectionError, ConnectionPackage},
    credentials::{ChainError, Validity},
    ClientId, HpkeSecretKey, Timestamp, UserName,
};

fn full_count(remaining: u32) -> ConnectionPackageCount {
    ConnectionPackageCount {
        remaining,
        has_last_resort: true,
    }
}

fn client_ids(packages: &[ConnectionPackage]) -> BTreeSet<ClientId> {
    packages.iter().map(|p| p.client_id()).collect()
}

#[tokio::test]
async fn registration_makes_every_client_discoverable_with_verified_packages() {
    let server = TestServer::start(Options::default());
    let devices = Devices::new();
    let (alice, phone, laptop) = devices.alice_and_bobs_two(&server).await;
    let bob_name = server.user("bob");
    for client in [&phone, &laptop, &alice] {
        let published = client.initial_packages().expect("a new client publishes");
        assert_eq!(published.as_ref().unwrap(), &full_count(20));
    }

    let found = alice.connections().discover(&bob_name).await.unwrap();
    assert_eq!(
        client_ids(&found),
        BTreeSet::from([phone.client_id(), laptop.client_id()])
    );
    for package in &found {
        assert_eq!(package.user(), &bob_name);
        assert!(!package.body.last_resort);
        assert_eq!(package.verify(Timestamp::now()), Ok(()));
        let lifetime = package.body.validity.not_after.0 - Timestamp::now().0;
        assert!(
            (6 * 24 * 3600..=7 * 24 * 3600).contains(&lifetime),
            "{lifetime}"
        );
    }
    // Each discovery used up one one-time package of each client.
    assert_eq!(
        phone.connections().package_count().await.unwrap(),
        full_count(19)
    );
    assert_eq!(
        laptop.connections().package_count().await.unwrap(),
        full_count(19)
    );
    // A reopened client is not "just enrolled".
    drop(phone);
    assert!(Client::open(devices.path("phone"))
        .unwrap()
        .initial_packages()
        .is_none());

    // An unknown user, and a user whose client never published anything.
    let err = alice
        .connections()
        .discover(&server.user("nobody"))
        .await
        .unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(404), "unknown_user"),
        "{err}"
    );
    let mut silent = Identity::new(&server.user("silent"));
    server.http().register(&mut silent, None).await;
    let err = alice
        .connections()
        .discover(&silent.user)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NoReachableClients(u) if *u == silent.user),
        "{err:?}"
    );
    assert_eq!(err.code(), "no_reachable_clients");
    assert!(err.to_string().contains("silent@localhost"), "{err}");
}

#[tokio::test]
async fn a_failed_first_publish_keeps_the_registration_and_top_up_mends_it() {
    // Too small a body limit for the first batch of packages, large enough for a few.
    let server = TestServer::start(Options {
        max_body_bytes: 2048,
        ..Options::default()
    });
    // Registered directly: the shared helpers refuse a client whose first publish failed.
    let devices = Devices::new();
    let mut clients = Vec::new();
    for name in ["alice", "bob"] {
        let user = server.user(name);
        let client = Client::register(devices.path(name), &server.url, &user, PASSWORD, None);
        clients.push(client.await.unwrap());
    }
    let (alice, bob) = (&clients[0], &clients[1]);
    let err = alice.initial_packages().unwrap().as_ref().unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(413), "body_too_large"),
        "{err}"
    );
    // Registered all the same, but not discoverable.
    assert_eq!(alice.clients().await.unwrap().len(), 1);
    let err = bob.connections().discover(alice.user()).await.unwrap_err();
    assert_eq!(err.code(), "no_reachable_clients", "{err}");

    let count = alice.connections().ensure_last_resort().await.unwrap();
    assert_eq!(
        count,
        ConnectionPackageCount {
            remaining: 0,
            has_last_resort: true
        }
    );
    assert_eq!(
        alice.connections().top_up(1, 2).await.unwrap(),
        full_count(2)
    );
    assert_eq!(
        discover_one(bob, alice.user()).await.client_id(),
        alice.client_id()
    );
}

#[tokio::test]
async fn top_up_publishes_only_when_below_the_minimum() {
    let server = TestServer::start(Options::default());
    let (alice, bob) = Devices::new().alice_and_bob(&server).await;

    assert_eq!(
        alice.connections().top_up(10, 15).await.unwrap(),
        full_count(20)
    );
    assert_eq!(
        alice.connections().ensure_last_resort().await.unwrap(),
        full_count(20)
    );
    for _ in 0..11 {
        discover_one(&bob, alice.user()).await;
    }
    assert_eq!(
        alice.connections().top_up(10, 15).await.unwrap(),
        full_count(24)
    );
    assert_eq!(
        alice.connections().top_up(10, 15).await.unwrap(),
        full_count(24)
    );
    // More than one request may carry: sent in several.
    assert_eq!(
        alice.connections().publish(150).await.unwrap(),
        full_count(174)
    );
}

#[tokio::test]
async fn an_expired_package_is_neither_published_nor_served() {
    let server = TestServer::start(Options::default());
    let (alice, bob) = Devices::new().alice_and_bob(&server).await;
    let package = |validity| {
        let (_, public) = HpkeSecretKey::generate();
        ConnectionPackage::new(
            alice.credential().clone(),
            &alice.identity().signing_key,
            public,
            validity,
            false,
        )
    };
    let publish = |packages| {
        alice
            .server()
            .publish_connection_packages(alice.signer(), packages)
    };

    let expired = package(Validity {
        not_before: Timestamp(1),
        not_after: Timestamp(2),
    });
    let too_long = package(Validity::starting_now(31 * 24 * 3600));
    for refused in [expired, too_long] {
        let err = publish(vec![refused]).await.unwrap_err();
        assert_eq!(
            (err.status(), err.code()),
            (Some(400), "invalid_connection_package"),
            "{err}"
        );
    }

    let now = Timestamp::now();
    let short = package(Validity {
        not_before: Timestamp(now.0 - 10),
        not_after: now.plus_secs(2),
    });
    assert_eq!(publish(vec![short.clone()]).await.unwrap(), full_count(21));
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(
        alice.connections().package_count().await.unwrap(),
        full_count(20)
    );
    // Every one-time package is served once, then the last resort; never the expired one.
    let mut served = Vec::new();
    for _ in 0..21 {
        served.push(discover_one(&bob, alice.user()).await);
    }
    assert!(served.iter().all(|p| p != &short));
    assert!(served[..20].iter().all(|p| !p.body.last_resort));
    assert!(served[20].body.last_resort);
}

/// An HTTP proxy in front of a server that can replace the connection packages served for one
/// user: what a compromised server, or anyone between a client and its server, could do.
struct Proxy {
    url: String,
    replacement: Arc<Mutex<Option<Vec<ConnectionPackage>>>>,
}

impl Proxy {
    fn start(upstream: &str, user: &UserName) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let path = roost_protocol::api::as_user_connection_packages(user);
        let replacement: Arc<Mutex<Option<Vec<ConnectionPackage>>>> = Arc::default();
        let shared = replacement.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (upstream, path, replacement) =
                    (upstream.clone(), path.clone(), shared.clone());
                std::thread::spawn(move || {
                    let _ = forward(stream, &upstream, &path, &replacement);
                });
            }
        });
        Proxy { url, replacement }
    }

    fn serve(&self, packages: Option<Vec<ConnectionPackage>>) {
        *self.replacement.lock().unwrap() = packages;
    }
}

/// One request, one response, then the connection is closed.
fn forward(
    mut client: TcpStream,
    upstream: &str,
    path: &str,
    replacement: &Mutex<Option<Vec<ConnectionPackage>>>,
) -> std::io::Result<()> {
    let (head, body) = read_message(&mut client)?;
    let requested = head.split(' ').nth(1).unwrap_or_default().to_owned();
    let mut head: Vec<&str> = head
        .split("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    head.push("connection: close");
    let mut server = TcpStream::connect(upstream)?;
    server.write_all(format!("{}\r\n\r\n", head.join("\r\n")).as_bytes())?;
    server.write_all(&body)?;
    let mut response = Vec::new();
    server.read_to_end(&mut response)?;
    let replaced = replacement.lock().unwrap().clone();
    if let Some(packages) = replaced {
        if requested == path && response.starts_with(b"HTTP/1.1 200") {
            response = with_body(&response, &codec::encode(&ConnectionPackages { packages }));
        }
    }
    client.write_all(&response)
}

/// A request's head (without the blank line) and its body (by `content-length`).
fn read_message(stream: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 4096];
    let end = loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        bytes.extend_from_slice(&buffer[..n]);
    };
    let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
    let mut body = bytes[end + 4..].to_vec();
    let length = content_length(&head);
    while body.len() < length {
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buffer[..n]);
    }
    Ok((head, body))
}

fn content_length(head: &str) -> usize {
    head.split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

/// `response` with its body replaced.
fn with_body(response: &[u8], body: &[u8]) -> Vec<u8> {
    let end = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..end]);
    let mut lines: Vec<String> = head
        .split("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with("content-length:"))
        .map(str::to_owned)
        .collect();
    lines.push(format!("content-length: {}", body.len()));
    let mut out = format!("{}\r\n\r\n", lines.join("\r\n")).into_bytes();
    out.extend_from_slice(body);
    out
}

/// The reason a refused discovery names, with the client it names.
fn refused(result: Result<Vec<ConnectionPackage>, Error>) -> (ClientId, PackageProblem, String) {
    match result {
        Err(e @ Error::BadConnectionPackage { .. }) => {
            assert_eq!(e.code(), "bad_connection_package");
            let message = e.to_string();
            let Error::BadConnectionPackage {
                client_id, problem, ..
            } = e
            else {
                unreachable!()
            };
            (client_id, problem, message)
        }
        other => panic!("expected a refused package, got {other:?}"),
    }
}

#[tokio::test]
async fn forged_tampered_foreign_or_expired_packages_stop_discovery_with_the_reason() {
    let real = TestServer::start(Options::default());
    let forger = TestServer::start(Options::default());
    assert_eq!(real.domain(), forger.domain());
    let devices = Devices::new();
    let bob_name = real.user("bob");
    let bob = devices.register_at(&real.url, "bob", &bob_name).await;
    let carol = devices
        .register_at(&real.url, "carol", &real.user("carol"))
        .await;
    // mallory registers bob's name on another server claiming the same domain.
    let mallory = devices.register_at(&forger.url, "mallory", &bob_name).await;
    assert_eq!(mallory.user(), bob.user());
    // alice's server, as she reaches it, can swap what it serves for bob.
    let proxy = Proxy::start(&real.url, &bob_name);
    let alice = devices
        .register_at(&proxy.url, "alice", &real.user("alice"))
        .await;
    assert_eq!(
        alice.initial_packages().unwrap().as_ref().unwrap(),
        &full_count(20)
    );

    // Untouched, bob is found.
    let genuine = discover_one(&alice, &bob_name).await;
    assert_eq!(genuine.client_id(), bob.client_id());

    // mallory's packages, served by the forger as bob's: the chain does not reach the real AS.
    let forged = Server::new(&forger.url)
        .unwrap()
        .connection_packages(&bob_name)
        .await
        .unwrap()
        .packages;
    assert_eq!(forged.len(), 1);
    assert_eq!(
        forged[0].verify(Timestamp::now()),
        Ok(()),
        "well-formed, only forged"
    );
    for served in [forged.clone(), vec![genuine.clone(), forged[0].clone()]] {
        proxy.serve(Some(served));
        let (client_id, problem, message) = refused(alice.connections().discover(&bob_name).await);
        assert_eq!(client_id, mallory.client_id());
        assert_eq!(
            problem,
            PackageProblem::Chain(ChainError::UnknownIntermediate(bob_name.domain().clone()))
        );
        assert!(
            message.contains(&mallory.client_id().to_string()) && message.contains("intermediate"),
            "{message}"
        );
    }

    // A genuine package with one bit of its body changed.
    let mut tampered = genuine.clone();
    tampered.body.last_resort = true;
    proxy.serve(Some(vec![tampered]));
    let (client_id, problem, message) = refused(alice.connections().discover(&bob_name).await);
    assert_eq!(
        (client_id, problem),
        (
            bob.client_id(),
            PackageProblem::Package(ConnectionError::BadSignature)
        )
    );
    assert!(message.contains("signature"), "{message}");

    // carol's genuine package served as bob's.
    let carols = discover_one(&alice, carol.user()).await;
    proxy.serve(Some(vec![carols]));
    let (client_id, problem, _) = refused(alice.connections().discover(&bob_name).await);
    assert_eq!(
        (client_id, problem),
        (
            carol.client_id(),
            PackageProblem::WrongUser {
                found: carol.user().clone()
            }
        )
    );

    // bob's own signature, but expired.
    let (_, public) = HpkeSecretKey::generate();
    let expired = ConnectionPackage::new(
        bob.credential().clone(),
        &bob.identity().signing_key,
        public,
        Validity {
            not_before: Timestamp(1),
            not_after: Timestamp(2),
        },
        false,
    );
    proxy.serve(Some(vec![expired]));
    let (_, problem, _) = refused(alice.connections().discover(&bob_name).await);
    assert_eq!(problem, PackageProblem::Package(ConnectionError::Expired));

    // One client twice.
    proxy.serve(Some(vec![genuine.clone(), genuine.clone()]));
    let (client_id, problem, _) = refused(alice.connections().discover(&bob_name).await);
    assert_eq!(
        (client_id, problem),
        (bob.client_id(), PackageProblem::Duplicate)
    );

    // Nothing at all.
    proxy.serve(Some(vec![]));
    let err = alice.connections().discover(&bob_name).await.unwrap_err();
    assert_eq!(err.code(), "no_reachable_clients", "{err}");

    proxy.serve(None);
    assert_eq!(
        discover_one(&alice, &bob_name).await.client_id(),
        bob.client_id()
    );
}
