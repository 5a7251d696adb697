//! Test harness: real `roost` processes on loopback ports with temporary stores.
#![allow(dead_code)]

pub mod app;
pub mod browser;
pub mod devices;
pub mod fuzz;
pub mod garble;
pub mod mls;
pub mod mls_client;
pub mod pair;
pub mod peer;
pub mod proxy;
pub mod purse;
mod raw;
pub mod scan;
pub mod tls;

pub use raw::{Identity, Raw, Response};

use std::{
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use roost_protocol::UserName;

pub const PASSWORD: &str = "correct horse battery staple";

/// How to start a server.
#[derive(Clone)]
pub struct Options {
    pub domain: String,
    pub policy: &'static str,
    pub client_lifetime_secs: u64,
    pub idle_secs: u64,
    pub max_body_bytes: usize,
    pub log: &'static str,
    pub discovery_burst: u32,
    /// Port to listen on (0: any free one).
    pub port: u16,
    /// `federation.resolve` entries (`DOMAIN=URL`).
    pub resolve: Vec<String>,
    /// `federation.deny`.
    pub deny: Vec<String>,
    /// Any other settings, as `ROOST_SECTION__KEY` variables.
    pub settings: Vec<(&'static str, String)>,
    /// Where the store lives, if not in the server's own temporary directory.
    pub store: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            domain: "localhost".into(),
            policy: "open",
            client_lifetime_secs: 3600,
            idle_secs: 60,
            max_body_bytes: 65536,
            log: "info",
            discovery_burst: 1000,
            port: 0,
            resolve: Vec::new(),
            deny: Vec::new(),
            settings: Vec::new(),
            store: None,
        }
    }
}

/// A running `roost serve` with its own store directory.
pub struct TestServer {
    pub url: String,
    pub options: Options,
    dir: Option<tempfile::TempDir>,
    store: PathBuf,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    /// What the server printed after its first line.
    stdout: Arc<Mutex<String>>,
}

/// A port that was free a moment ago, for servers that must know each other's address before
/// they start.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Federated servers, one per domain, each told where the others are (and where
/// `options.resolve` says); returns them with the `DOMAIN=URL` entries clients need.
pub fn federation(domains: &[&str], options: Options) -> (Vec<TestServer>, Vec<String>) {
    let ports: Vec<u16> = domains.iter().map(|_| free_port()).collect();
    let tls = options
        .settings
        .iter()
        .any(|(key, _)| *key == "ROOST_SERVER__TLS__CERT");
    let scheme = if tls { "https" } else { "http" };
    let mut resolve: Vec<String> = domains
        .iter()
        .zip(&ports)
        .map(|(domain, port)| format!("{domain}={scheme}://127.0.0.1:{port}"))
        .collect();
    resolve.extend(options.resolve.iter().cloned());
    let servers = domains
        .iter()
        .zip(&ports)
        .map(|(domain, port)| {
            TestServer::start(Options {
                domain: (*domain).to_owned(),
                port: *port,
                resolve: resolve.clone(),
                ..options.clone()
            })
        })
        .collect();
    (servers, resolve)
}

pub fn roost_binary() -> &'static str {
    env!("CARGO_BIN_EXE_roost")
}

impl TestServer {
    pub fn start(options: Options) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = options
            .store
            .clone()
            .unwrap_or_else(|| dir.path().join("store"));
        let mut server = TestServer {
            url: String::new(),
            options,
            dir: Some(dir),
            store,
            child: None,
            log: Arc::default(),
            stdout: Arc::default(),
        };
        server.spawn();
        server
    }

    pub fn store_path(&self) -> &Path {
        &self.store
    }

    /// How many flushes the store has completed (the durable mark kept beside it).
    pub fn flushes(&self) -> u64 {
        let mark = std::fs::read(self.store.join("durable")).unwrap();
        u64::from_be_bytes(mark[..8].try_into().unwrap())
    }

    /// Every file under the store directory, with its bytes.
    pub fn store_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if let Ok(bytes) = std::fs::read(&path) {
                    out.push((path, bytes));
                }
            }
        }
        let mut files = Vec::new();
        walk(&self.store, &mut files);
        files
    }

    pub fn domain(&self) -> &str {
        &self.options.domain
    }

    pub fn user(&self, local: &str) -> UserName {
        format!("{local}@{}", self.options.domain).parse().unwrap()
    }

    /// The command that runs this server's `roost`, with its settings in the environment.
    pub fn command(&self) -> Command {
        let mut command = Command::new(roost_binary());
        let bind = match &self.url {
            // Restart on the same port, so clients keep their server URL.
            url if !url.is_empty() => url
                .split_once("://")
                .map_or(url.as_str(), |(_, a)| a)
                .to_owned(),
            _ => format!("127.0.0.1:{}", self.options.port),
        };
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ROOST_SERVER__BIND", bind)
            .env("ROOST_SERVER__DOMAIN", &self.options.domain)
            .env(
                "ROOST_SERVER__MAX_BODY_BYTES",
                self.options.max_body_bytes.to_string(),
            )
            .env("ROOST_STORAGE__PATH", &self.store)
            .env("ROOST_REGISTRATION__POLICY", self.options.policy)
            .env(
                "ROOST_CREDENTIALS__CLIENT_LIFETIME_SECS",
                self.options.client_lifetime_secs.to_string(),
            )
            .env(
                "ROOST_ACTORS__IDLE_SECS",
                self.options.idle_secs.to_string(),
            )
            .env(
                "ROOST_CONNECTIONS__DISCOVERY_BURST",
                self.options.discovery_burst.to_string(),
            )
            .env("ROOST_LOG__FILTER", self.options.log)
            // Every test's clients come from one address; tests of the limits set them lower.
            .env("ROOST_LIMITS__CONNECTION_REQUESTS_BURST", "1000")
            .env("ROOST_LIMITS__BODY_BYTES_BURST_PER_ADDRESS", "4000000000")
            // Relays to a server that is down are retried quickly in tests.
            .env("ROOST_FEDERATION__RETRY_INITIAL_MS", "100")
            .env("ROOST_FEDERATION__RETRY_MAX_MS", "1000")
            .current_dir(self.dir.as_ref().unwrap().path());
        for (key, list) in [
            ("ROOST_FEDERATION__RESOLVE", &self.options.resolve),
            ("ROOST_FEDERATION__DENY", &self.options.deny),
        ] {
            if !list.is_empty() {
                command.env(key, list.join(","));
            }
        }
        command.envs(self.options.settings.iter().map(|(k, v)| (k, v)));
        command
    }

    fn spawn(&mut self) {
        let mut child = self
            .command()
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start roost");
        let stderr = child.stderr.take().unwrap();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read roost's stdout");
        let Some(url) = line.trim().strip_prefix("listening on ").map(str::to_owned) else {
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(200));
            panic!("unexpected first line {line:?}; log:\n{}", self.log());
        };
        let printed = self.stdout.clone();
        printed.lock().unwrap().clear();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let mut printed = printed.lock().unwrap();
                printed.push_str(&line);
                printed.push('\n');
            }
        });
        self.url = url;
        self.child = Some(child);
    }

    /// Runs `roost admin ARGS` against this server (through its admin socket when it runs,
    /// else on its store); its trimmed stdout, after checking it succeeded.
    pub fn admin(&self, args: &[&str]) -> String {
        let output = self.command().arg("admin").args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    /// `roost admin --json ARGS`: its answer, after checking it succeeded.
    pub fn admin_json(&self, args: &[&str]) -> serde_json::Value {
        let answer = self.admin(&[&["--json"], args].concat());
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer}"))
    }

    /// `roost admin ARGS`, which must fail: what it said on stderr.
    pub fn admin_fails(&self, args: &[&str]) -> String {
        let output = self.command().arg("admin").args(args).output().unwrap();
        assert!(
            !output.status.success(),
            "roost admin {args:?} succeeded: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8(output.stderr).unwrap()
    }

    /// A registration token from `roost admin token create`.
    pub fn registration_token(&self) -> String {
        let created = self.admin_json(&["token", "create"]);
        created["token"].as_str().expect("a token").to_owned()
    }

    /// Where the server serves `/metrics` (`metrics.bind` must be set), as it printed it.
    pub fn metrics_url(&self) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let printed = self.stdout.lock().unwrap().clone();
            if let Some(url) = printed
                .lines()
                .find_map(|line| line.strip_prefix("metrics on "))
            {
                return url.to_owned();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no metrics listener: {printed}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// `kill -9`: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends the running server a signal (`HUP`, `TERM`, …) and goes on.
    pub fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("server is running");
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// SIGTERM, then wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server is running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().expect("wait for roost")
    }

    /// Waits up to `within` for the server to exit by itself; its exit status.
    pub fn exited_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let status = exit_within(self.child.as_mut()?, within)?;
        self.child = None;
        Some(status)
    }

    /// Starts `roost serve` (this server must be stopped) expecting it to give up: its stderr,
    /// or `None` if it was still running after ten seconds (then it is killed).
    pub fn start_fails(&self) -> Option<String> {
        assert!(self.child.is_none(), "server still running");
        let mut child = self
            .command()
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if exit_within(&mut child, Duration::from_secs(10)).is_some() {
            let mut stderr = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
            return Some(stderr);
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Starts a server that was stopped with [`kill`](Self::kill) or [`terminate`](Self::terminate).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "server still running");
        self.spawn();
    }

    /// A raw client of this server. It opens a connection per request: a kept-alive one could
    /// be closed by the server (idle, or restarted) just as the next request goes out on it,
    /// which made slow tests fail with `IncompleteMessage`.
    pub fn http(&self) -> Raw {
        Raw {
            base: self.url.clone(),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            pays: true,
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits up to `within` for `child` to exit; its exit status, or `None` if it still runs.
pub fn exit_within(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A user `local` with two clients made by hand, a phone and a laptop (the phone was told the
/// laptop was added: one message in its queue).
pub async fn phone_and_laptop(server: &TestServer, local: &str) -> (Identity, Identity) {
    let http = server.http();
    let mut phone = Identity::new(&server.user(local));
    assert_eq!(http.register(&mut phone, None).await.status, 201);
    let mut laptop = Identity::new(&server.user(local));
    assert_eq!(http.add_client(&mut laptop, PASSWORD).await.status, 201);
    (phone, laptop)
}

/// Waits until `check` holds or the time is up.
pub async fn eventually(mut check: impl FnMut() -> bool, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// The `roost-client` binary, next to this test's own target directory (`target/<profile>/`).
///
/// Cargo builds only the tested package's binaries for its integration tests, and
/// `roost-client` lives in another package; so it is built here, once per test process, by
/// `$CARGO build -p roost-client` if it is missing or older than the sources it is built from
/// (a stale binary would silently test old code).
pub fn client_binary() -> PathBuf {
    static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BINARY
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("the test executable's path");
            // target/<profile>/deps/<test>
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("the test runs from target/<profile>/deps");
            let binary = profile_dir.join(format!("roost-client{}", std::env::consts::EXE_SUFFIX));
            if !binary.exists() || client_sources_are_newer_than(&binary) {
                let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
                let mut command = Command::new(cargo);
                command
                    .args(["build", "-p", "roost-client", "--bin", "roost-client"])
                    .current_dir(env!("CARGO_MANIFEST_DIR"));
                // Cargo runs tests with variables describing the test's own crate; some build
                // scripts (ring's) track them, and a build seeing them would not reuse, and
                // would then invalidate, what a plain `cargo build` compiled.
                for (name, _) in std::env::vars_os() {
                    let Some(name) = name.to_str() else { continue };
                    if name.starts_with("CARGO_PKG_")
                        || name.starts_with("CARGO_BIN_")
                        || [
                            "CARGO_MANIFEST_DIR",
                            "CARGO_MANIFEST_PATH",
                            "CARGO_CRATE_NAME",
                            "CARGO_PRIMARY_PACKAGE",
                            "CARGO_TARGET_TMPDIR",
                            "CARGO_RUSTC_CURRENT_DIR",
                            "OUT_DIR",
                        ]
                        .contains(&name)
                    {
                        command.env_remove(name);
                    }
                }
                match profile_dir.file_name().and_then(|n| n.to_str()) {
                    Some("debug") | None => {}
                    Some("release") => {
                        command.arg("--release");
                    }
                    Some(profile) => {
                        command.args(["--profile", profile]);
                    }
                }
                let status = command.status().expect("run cargo to build roost-client");
                assert!(status.success(), "building roost-client failed: {status}");
            }
            assert!(
                binary.exists(),
                "{} is missing after the build",
                binary.display()
            );
            binary
        })
        .clone()
}

/// Whether a file `roost-client` is built from changed after `binary` was written.
fn client_sources_are_newer_than(binary: &Path) -> bool {
    fn newest(path: &Path) -> Option<std::time::SystemTime> {
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_dir() {
            return meta.modified().ok();
        }
        std::fs::read_dir(path)
            .ok()?
            .flatten()
            .filter_map(|entry| newest(&entry.path()))
            .max()
    }
    let Some(built) = std::fs::metadata(binary).and_then(|m| m.modified()).ok() else {
        return true;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    ["Cargo.lock", "Cargo.toml", "client", "protocol"]
        .iter()
        .filter_map(|p| newest(&root.join(p)))
        .any(|changed| changed > built)
}
