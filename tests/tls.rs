//! TLS built in: real `roost` servers serving HTTPS with certificates from a CA made in the test,
//! federating over TLS and verifying each other (`federation.ca_file`), clients verifying them
//! (`ExtraRoots`, the command line's `--ca-file`), SIGHUP reloading the certificate without
//! dropping open connections, and what is refused: an unknown CA, unreadable certificate files.

mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    sync::Arc,
    time::Duration,
};

use common::{
    devices::Devices,
    pair::{connected_pair_trusting, settle},
    tls::TestCa,
    Options, TestServer,
};
use roost_client::Client;

/// One server speaking HTTPS with a certificate of `ca`.
fn tls_server(ca: &TestCa) -> TestServer {
    let issued = ca.issue("server");
    TestServer::start(Options {
        settings: ca.settings(&issued),
        ..Options::default()
    })
}

#[tokio::test]
async fn federated_servers_and_their_clients_speak_tls_verified_against_the_deployments_ca() {
    let ca = TestCa::new();
    let issued = ca.issue("server");
    let options = Options {
        settings: ca.settings(&issued),
        ..Options::default()
    };
    let p = connected_pair_trusting("alice", "bob", options, ca.roots()).await;
    assert!(p.servers.iter().all(|s| s.url.starts_with("https://")));
    p.alice_phone.chat().send(&p.bob, "over TLS").await.unwrap();
    p.bob_laptop
        .chat()
        .send(&p.alice, "and back")
        .await
        .unwrap();
    let all = p.all();
    settle(&all, async || {
        let mut ok = true;
        for client in all {
            let peer = p.peer_of(client);
            ok &= client.chat().messages(peer).await.unwrap().len() == 2;
        }
        ok
    })
    .await;
    for server in &p.servers {
        let log = server.log();
        assert!(!log.contains("relaying failed"), "{log}");
    }
}

#[tokio::test]
async fn a_certificate_of_an_unknown_ca_is_refused_by_clients_and_servers() {
    let ca = TestCa::new();
    let server = tls_server(&ca);
    // A client that does not trust the deployment's CA.
    let devices = tempfile::tempdir().unwrap();
    let Err(err) = Client::register(
        devices.path().join("alice"),
        &server.url,
        &server.user("alice"),
        common::PASSWORD,
        None,
    )
    .await
    else {
        panic!("an unknown CA is refused");
    };
    assert_eq!(err.code(), "network", "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");

    // A server that does not trust its peer's CA does not relay to it: what a group sends
    // waits in its outbox. (The clients here trust both CAs.)
    let other_ca = TestCa::new();
    let ports = [common::free_port(), common::free_port()];
    let resolve: Vec<String> = ["a.test", "b.test"]
        .iter()
        .zip(ports)
        .map(|(domain, port)| format!("{domain}=https://127.0.0.1:{port}"))
        .collect();
    let servers: Vec<TestServer> = [("a.test", &ca), ("b.test", &other_ca)]
        .iter()
        .zip(ports)
        .map(|((domain, issuer), port)| {
            let issued = issuer.issue(domain);
            let mut settings = issuer.settings(&issued);
            // Neither server can check the other's users' tokens (neither reaches the other's
            // token policy, tests/tokens.rs): everything is free here, so that it is the
            // relay this shows failing.
            settings.extend(
                roost_protocol::tokens::policy::Operation::ALL
                    .map(|operation| (cost_setting(operation), "0".to_string())),
            );
            TestServer::start(Options {
                domain: (*domain).into(),
                port,
                resolve: resolve.clone(),
                settings,
                ..Options::default()
            })
        })
        .collect();
    let both = devices.path().join("both.pem");
    let pem = [ca.file(), other_ca.file()].map(|f| std::fs::read_to_string(f).unwrap());
    std::fs::write(&both, pem.concat()).unwrap();
    let devices = Devices::federated(&resolve)
        .trusting(roost_client::ExtraRoots::from_pem_file(&both).unwrap());
    let bob = servers[1].user("bob");
    let bobs_client = devices.register(&servers[1], "bob", &bob).await;
    let alice = devices
        .register(&servers[0], "alice", &servers[0].user("alice"))
        .await;
    alice.connections().connect(&bob).await.unwrap();
    // bob joins the group at a's DS (his client trusts a); a relays the join to bob's queue.
    let requests = bobs_client.connections().requests().await.unwrap();
    bobs_client
        .connections()
        .accept(&requests.received[0].id)
        .await
        .unwrap();
    assert!(
        common::eventually(
            || {
                let log = servers[0].log();
                log.contains("relaying failed") && log.contains("certificate")
            },
            Duration::from_secs(10)
        )
        .await,
        "{}",
        servers[0].log()
    );
    let outbox = servers[0].admin_json(&["inspect", "outbox"]);
    assert_eq!(outbox["outbox"][0]["domain"], "b.test", "{outbox}");
}

#[test]
fn an_unreadable_certificate_stops_the_start_with_a_message_naming_the_file() {
    let ca = TestCa::new();
    let issued = ca.issue("server");
    let missing = issued.cert.with_file_name("missing.pem");
    let mut settings = ca.settings(&issued);
    settings[0].1 = missing.display().to_string();
    let mut server = TestServer::start(Options::default());
    assert!(server.terminate().success());
    server.options.settings = settings;
    let said = server.start_fails().expect("the start is refused");
    assert!(said.contains("missing.pem"), "{said}");

    // A key that is not the certificate's.
    let other = ca.issue("other");
    server.options.settings = ca.settings(&issued);
    server.options.settings[1].1 = other.key.display().to_string();
    let said = server.start_fails().expect("the start is refused");
    assert!(said.contains("does not belong"), "{said}");
}

/// A TLS connection to `port` made by hand, trusting `ca`: kept open across requests.
struct Connection {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl Connection {
    fn open(port: u16, ca: &TestCa) -> Connection {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(ca.root_store())
            .with_no_client_auth();
        let connection =
            rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap())
                .unwrap();
        let socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Connection {
            tls: rustls::StreamOwned::new(connection, socket),
        }
    }

    /// `GET /health` on this connection, kept alive: the status line and body.
    fn health(&mut self) -> (String, String) {
        self.tls
            .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut reader = BufReader::new(&mut self.tls);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        (status.trim().to_owned(), String::from_utf8(body).unwrap())
    }

    /// The certificate the server presented.
    fn certificate(&self) -> Vec<u8> {
        self.tls.conn.peer_certificates().unwrap()[0].to_vec()
    }
}

fn port_of(server: &TestServer) -> u16 {
    server.url.rsplit(':').next().unwrap().parse().unwrap()
}

/// Sends the server SIGHUP and waits until its log says `logged`.
async fn hang_up(server: &TestServer, logged: &str) {
    server.signal("HUP");
    let said = common::eventually(|| server.log().contains(logged), Duration::from_secs(10));
    assert!(said.await, "no {logged:?} in {}", server.log());
}

#[tokio::test]
async fn sighup_reloads_the_certificate_for_new_connections_and_keeps_open_ones() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let first = ca.issue_into(dir.path(), "server");
    let server = TestServer::start(Options {
        settings: ca.settings(&first),
        ..Options::default()
    });
    let port = port_of(&server);
    let mut open = Connection::open(port, &ca);
    assert_eq!(open.health().0, "HTTP/1.1 200 OK");
    assert_eq!(open.certificate(), first.der);

    // The admin renews the certificate in place and sends SIGHUP.
    let second = ca.issue_into(dir.path(), "server");
    hang_up(&server, "reloaded the TLS certificate").await;
    let mut fresh = Connection::open(port, &ca);
    assert_eq!(fresh.health().0, "HTTP/1.1 200 OK");
    assert_eq!(fresh.certificate(), second.der);
    // The connection opened before the reload was not dropped.
    assert_eq!(open.health().0, "HTTP/1.1 200 OK");
    assert_eq!(open.certificate(), first.der);

    // A broken file on reload: the certificate in use stays, and the log says why.
    std::fs::write(&second.cert, "not a certificate").unwrap();
    hang_up(&server, "kept the TLS certificate in use").await;
    let mut after = Connection::open(port, &ca);
    assert_eq!(after.health().0, "HTTP/1.1 200 OK");
    assert_eq!(after.certificate(), second.der);
}

#[tokio::test]
async fn the_command_line_client_trusts_a_ca_file() {
    let ca = TestCa::new();
    let server = tls_server(&ca);
    let state = tempfile::tempdir().unwrap();
    let state = state.path().join("alice");
    let register = |ca_file: Option<&std::path::Path>| {
        let mut command = std::process::Command::new(common::client_binary());
        command
            .env("ROOST_PASSWORD", common::PASSWORD)
            .args(["--json", "--state"])
            .arg(&state)
            .args(["register", "alice@localhost", "--server", &server.url]);
        if let Some(file) = ca_file {
            command.arg("--ca-file").arg(file);
        }
        command.output().unwrap()
    };
    let refused = register(None);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("certificate"), "{said}");
    let registered = register(Some(&ca.file()));
    assert!(
        registered.status.success(),
        "{}",
        String::from_utf8_lossy(&registered.stderr)
    );
    let clients = std::process::Command::new(common::client_binary())
        .args(["--json", "--state"])
        .arg(&state)
        .arg("--ca-file")
        .arg(ca.file())
        .arg("clients")
        .output()
        .unwrap();
    assert!(
        clients.status.success(),
        "{}",
        String::from_utf8_lossy(&clients.stderr)
    );
}

/// The variable setting what `operation` costs.
fn cost_setting(operation: roost_protocol::tokens::policy::Operation) -> &'static str {
    format!("ROOST_TOKENS__COSTS__{}", operation.name().to_uppercase()).leak()
}
