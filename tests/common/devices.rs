//! Client devices made through the client library, each with its own state directory.

use std::path::{Path, PathBuf};

use roost_client::{Client, ExtraRoots, Server, StoredMessage};
use roost_protocol::federation::Resolver;
use roost_protocol::UserName;

use super::{TestServer, PASSWORD};

/// The state directories of the test's client devices, where their clients find other
/// domains' servers, and the CA certificates they trust beside the system's.
pub struct Devices {
    dir: tempfile::TempDir,
    resolver: Resolver,
    roots: ExtraRoots,
}

impl Devices {
    pub fn new() -> Devices {
        Devices::federated(&[])
    }

    /// Devices whose clients reach other domains as `resolve` (`DOMAIN=URL`) says.
    pub fn federated(resolve: &[String]) -> Devices {
        Devices {
            dir: tempfile::tempdir().unwrap(),
            resolver: Resolver::from_entries(resolve).unwrap(),
            roots: ExtraRoots::default(),
        }
    }

    /// These devices also trust the CA certificates of `roots`.
    pub fn trusting(self, roots: ExtraRoots) -> Devices {
        Devices { roots, ..self }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A client as this test's devices reach servers.
    fn reaching(&self, client: Client) -> Client {
        client
            .with_resolver(self.resolver.clone())
            .with_roots(self.roots.clone())
            .unwrap()
    }

    /// The server at `url`, as these devices reach it.
    fn server(&self, url: &str) -> Server {
        Server::with_roots(url, &self.roots).unwrap()
    }

    /// Opens a device's client again (as the command line does for every command).
    pub fn open(&self, name: &str) -> Client {
        self.reaching(Client::open(self.path(name)).unwrap())
    }

    pub async fn register(&self, server: &TestServer, name: &str, user: &UserName) -> Client {
        self.register_at(&server.url, name, user).await
    }

    /// Registers `user` at the server (or proxy) at `url`, with the state directory `name`.
    pub async fn register_at(&self, url: &str, name: &str, user: &UserName) -> Client {
        let registered = Client::register(self.path(name), self.server(url), user, PASSWORD, None)
            .await
            .unwrap_or_else(|e| panic!("registering {name}: {e}"));
        let client = self.reaching(registered);
        if let Some(Err(e)) = client.initial_key_packages() {
            panic!("key packages of {name}: {e}");
        }
        client
    }

    pub async fn add_client(&self, server: &TestServer, name: &str, user: &UserName) -> Client {
        let added = Client::add_client(self.path(name), self.server(&server.url), user, PASSWORD)
            .await
            .unwrap_or_else(|e| panic!("adding {name}: {e}"));
        let client = self.reaching(added);
        if let Some(Err(e)) = client.initial_key_packages() {
            panic!("key packages of {name}: {e}");
        }
        client
    }

    /// alice and bob, one client each.
    pub async fn alice_and_bob(&self, server: &TestServer) -> (Client, Client) {
        let alice = self.register(server, "alice", &server.user("alice")).await;
        let bob = self.register(server, "bob", &server.user("bob")).await;
        (alice, bob)
    }

    /// alice, and bob with a phone and a laptop.
    pub async fn alice_and_bobs_two(&self, server: &TestServer) -> (Client, Client, Client) {
        let bob = server.user("bob");
        let phone = self.register(server, "phone", &bob).await;
        let laptop = self.add_client(server, "laptop", &bob).await;
        let alice = self.register(server, "alice", &server.user("alice")).await;
        (alice, phone, laptop)
    }
}

impl Default for Devices {
    fn default() -> Self {
        Devices::new()
    }
}

/// A log as (the sender's name before the `@`, text) pairs; `(unknown)` for a sender the
/// message did not establish.
pub fn log(messages: &[StoredMessage]) -> Vec<(String, String)> {
    messages
        .iter()
        .map(|m| {
            let from = m.from.as_ref().map_or("(unknown)", |user| user.local());
            (from.to_owned(), m.text.clone())
        })
        .collect()
}

/// `initiator`'s user connects with `responder`'s: `responder` accepts, then every client in
/// `others` and both of them sync twice, so the friendship tokens go both ways.
pub async fn connect(initiator: &Client, responder: &Client, others: &[&Client]) {
    initiator
        .connections()
        .connect(responder.user())
        .await
        .unwrap();
    let requests = responder.connections().requests().await.unwrap();
    let request = requests
        .received
        .iter()
        .find(|r| r.from() == initiator.user())
        .unwrap_or_else(|| panic!("no request from {}", initiator.user()));
    responder.connections().accept(&request.id).await.unwrap();
    for _ in 0..2 {
        for client in [initiator, responder].iter().chain(others) {
            let report = client.sync().await.unwrap();
            assert!(report.failed.is_empty(), "{:?}", report.failed);
        }
    }
}

/// Runs `roost-client ARGS --json` on the state directory `state` (the password in
/// `ROOST_PASSWORD`); the exit status and the one JSON value printed, on stdout on success and
/// on stderr on failure, the other stream staying empty.
pub fn cli(state: &Path, args: &[&str]) -> (bool, serde_json::Value) {
    let output = std::process::Command::new(super::client_binary())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ROOST_CLIENT_STATE", state)
        .env("ROOST_PASSWORD", PASSWORD)
        .args(args)
        .arg("--json")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run roost-client");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    let text = if output.status.success() {
        assert!(stderr.is_empty(), "{args:?}: stderr on success: {stderr}");
        stdout.trim()
    } else {
        assert!(stdout.is_empty(), "{args:?}: stdout on failure: {stdout}");
        stderr.trim()
    };
    let value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{args:?}: not one JSON value ({e}): {stdout}{stderr}"));
    (output.status.success(), value)
}

/// [`cli`], expecting success.
pub fn cli_json(state: &Path, args: &[&str]) -> serde_json::Value {
    let (ok, value) = cli(state, args);
    assert!(ok, "roost-client {args:?} failed: {value}");
    value
}

/// [`cli_json`] off the async runtime.
pub async fn run_json(state: PathBuf, args: &[&str]) -> serde_json::Value {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli_json(&state, &args)
    })
    .await
    .unwrap()
}

/// The one package `discover` returns for a single-client user.
pub async fn discover_one(
    by: &Client,
    user: &UserName,
) -> roost_protocol::connection::ConnectionPackage {
    let mut found = by.connections().discover(user).await.expect("discover");
    assert_eq!(found.len(), 1, "{user} has one client");
    found.remove(0)
}
