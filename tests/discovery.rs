//! Discovery and connection requests through the client library and the `roost-client` binary,
//! against real `roost` servers: publishing connection packages (on registration, topping up),
//! discovering a user's clients with every package verified, sending sealed requests, and the
//! responder's checks, pending list and decline.

mod common;

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{Identity, Options, TestServer, PASSWORD};
use roost_client::{Client, Error, PackageProblem, RejectReason, Server, State};
use roost_protocol::{
    api::{ConnectionPackageCount, ConnectionPackages},
    codec,
    connection::{
        ConnectionError, ConnectionEstablishmentBody, ConnectionEstablishmentPackage,
        ConnectionPackage, EarKey, SealedConnectionRequest,
    },
    credentials::{ChainError, Validity},
    ClientId, HpkeSecretKey, SigningKey, Timestamp, UserName,
};
use serde_json::Value;

/// State directories for one test's clients.
struct Devices(tempfile::TempDir);

impl Devices {
    fn new() -> Devices {
        Devices(tempfile::tempdir().unwrap())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    /// Registers `user` at `server_url`, with the state directory `name`.
    async fn register(&self, server_url: &str, name: &str, user: &UserName) -> Client {
        Client::register(self.path(name), server_url, user, PASSWORD, None)
            .await
            .unwrap_or_else(|e| panic!("registering {name}: {e}"))
    }

    async fn add_client(&self, server: &TestServer, name: &str, user: &UserName) -> Client {
        Client::add_client(self.path(name), &server.url, user, PASSWORD)
            .await
            .unwrap_or_else(|e| panic!("adding {name}: {e}"))
    }

    /// alice and bob, one client each.
    async fn alice_and_bob(&self, server: &TestServer) -> (Client, Client) {
        let alice = self
            .register(&server.url, "alice", &server.user("alice"))
            .await;
        let bob = self.register(&server.url, "bob", &server.user("bob")).await;
        (alice, bob)
    }

    /// alice, and bob with a phone and a laptop.
    async fn alice_and_bobs_two(&self, server: &TestServer) -> (Client, Client, Client) {
        let bob = server.user("bob");
        let phone = self.register(&server.url, "phone", &bob).await;
        let laptop = self.add_client(server, "laptop", &bob).await;
        let alice = self
            .register(&server.url, "alice", &server.user("alice"))
            .await;
        (alice, phone, laptop)
    }
}

fn full_count(remaining: u32) -> ConnectionPackageCount {
    ConnectionPackageCount {
        remaining,
        has_last_resort: true,
    }
}

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

/// The one package `discover` returns for a single-client user.
async fn discover_one(by: &Client, user: &UserName) -> ConnectionPackage {
    let mut found = by.connections().discover(user).await.expect("discover");
    assert_eq!(found.len(), 1, "{user} has one client");
    found.remove(0)
}

fn client_ids(packages: &[ConnectionPackage]) -> BTreeSet<ClientId> {
    packages.iter().map(|p| p.client_id()).collect()
}

fn codes(rejected: &[roost_client::Rejected]) -> Vec<&'static str> {
    rejected.iter().map(|r| r.reason.code()).collect()
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
    let (alice, bob) = Devices::new().alice_and_bob(&server).await;
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
        discover_one(&bob, alice.user()).await.client_id(),
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
    let bob = devices.register(&real.url, "bob", &bob_name).await;
    let carol = devices
        .register(&real.url, "carol", &real.user("carol"))
        .await;
    // mallory registers bob's name on another server claiming the same domain.
    let mallory = devices.register(&forger.url, "mallory", &bob_name).await;
    assert_eq!(mallory.user(), bob.user());
    // alice's server, as she reaches it, can swap what it serves for bob.
    let proxy = Proxy::start(&real.url, &bob_name);
    let alice = devices
        .register(&proxy.url, "alice", &real.user("alice"))
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
    let mallory = devices.register(&forger.url, "mallory", alice.user()).await;

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

/// Runs `roost-client --json ARGS` on a state directory; exit status, stdout JSON (or stderr
/// JSON on failure).
fn cli(state: &Path, args: &[&str]) -> (bool, Value) {
    let output = Command::new(common::client_binary())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ROOST_CLIENT_STATE", state)
        .env("ROOST_PASSWORD", PASSWORD)
        .args(args)
        .arg("--json")
        .output()
        .expect("run roost-client");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    let text = if output.status.success() {
        assert!(stderr.is_empty(), "stderr on success: {stderr}");
        stdout.trim().to_owned()
    } else {
        assert!(stdout.is_empty(), "stdout on failure: {stdout}");
        stderr.trim().to_owned()
    };
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not one JSON value ({e}): {text:?} / {stderr}"));
    (output.status.success(), value)
}

fn cli_ok(state: &Path, args: &[&str]) -> Value {
    let (ok, value) = cli(state, args);
    assert!(ok, "roost-client {args:?} failed: {value}");
    value
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
        cli_ok(&state, &["register", &bob_name, "--server", &url])
    })
    .await
    .unwrap();
    let bob_id = registered["client_id"].as_str().unwrap().to_owned();
    let alice = devices
        .register(&server.url, "alice", &server.user("alice"))
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
        let listed = cli_ok(&state, &["requests"]);
        assert_eq!(listed["rejected"], Value::Array(vec![]), "{listed}");
        let requests = listed["requests"].as_array().unwrap();
        assert_eq!(requests.len(), 2, "{listed}");
        for request in requests {
            let object = request.as_object().unwrap();
            assert_eq!(
                object.keys().collect::<Vec<_>>(),
                ["from", "id", "received_at"],
                "{listed}"
            );
            assert_eq!(request["from"], "alice@localhost");
            assert!(request["received_at"].as_u64().unwrap() > 1_700_000_000);
        }
        let id = requests[0]["id"].as_str().unwrap().to_owned();

        let declined = cli_ok(&state, &["decline", &id]);
        assert_eq!(declined, serde_json::json!({ "declined": id }));
        let listed = cli_ok(&state, &["requests"]);
        let remaining = listed["requests"].as_array().unwrap();
        assert_eq!(remaining.len(), 1, "{listed}");
        assert_ne!(remaining[0]["id"], id.as_str());

        let (ok, error) = cli(&state, &["decline", &id]);
        assert!(!ok);
        assert_eq!(error["error"], "unknown_request", "{error}");

        // Two of bob's 20 packages were used up; five more.
        let count = cli_ok(&state, &["publish-packages", "--count", "5"]);
        assert_eq!(
            count,
            serde_json::json!({
                "remaining": 23,
                "has_last_resort": true,
                "key_packages": { "remaining": 20, "has_last_resort": true },
            })
        );

        let found = cli_ok(&state, &["discover", "alice@localhost"]);
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
