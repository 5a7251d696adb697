//! The `roost` server under load: a process this tool starts (with its own store in a temporary
//! directory) or one given by `--server URL`, which this tool cannot restart or weigh; and two
//! federated processes, each resolving the other ([`federation`]).

use std::{
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// How to start a server; the default is one named `localhost` on any free port.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// `server.domain`.
    pub domain: String,
    /// Port to listen on (0: any free one).
    pub port: u16,
    /// Further settings, as `ROOST_…` environment variables and their values.
    pub settings: Vec<(String, String)>,
    /// Keep the shipped discovery and connection-request rate limits; otherwise they are
    /// raised, since this tool's load all comes from one address.
    pub shipped_rate_limits: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            domain: "localhost".into(),
            port: 0,
            settings: Vec::new(),
            shipped_rate_limits: false,
        }
    }
}

/// A `roost serve` started by this tool.
pub struct RoostProcess {
    binary: PathBuf,
    dir: tempfile::TempDir,
    options: ServerOptions,
    port: u16,
    child: Option<Child>,
    pub url: String,
}

/// A loopback port that was free a moment ago, for servers that must know each other's
/// address before they start.
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Federated servers, one per domain, each with its own store and port and each told where
/// all of them are; returns them with the `DOMAIN=URL` entries their clients need.
pub fn federation(
    binary: &Path,
    domains: &[&str],
) -> Result<(Vec<RoostProcess>, Vec<String>), String> {
    let ports = domains
        .iter()
        .map(|_| free_port())
        .collect::<Result<Vec<u16>, String>>()?;
    let resolve: Vec<String> = domains
        .iter()
        .zip(&ports)
        .map(|(domain, port)| format!("{domain}=http://127.0.0.1:{port}"))
        .collect();
    let servers = domains
        .iter()
        .zip(&ports)
        .map(|(domain, port)| {
            RoostProcess::start(
                binary,
                ServerOptions {
                    domain: (*domain).to_owned(),
                    port: *port,
                    settings: vec![
                        ("ROOST_FEDERATION__RESOLVE".into(), resolve.join(",")),
                        // A relay that failed (the other server not up yet) is retried soon.
                        ("ROOST_FEDERATION__RETRY_INITIAL_MS".into(), "100".into()),
                    ],
                    ..ServerOptions::default()
                },
            )
        })
        .collect::<Result<Vec<RoostProcess>, String>>()?;
    Ok((servers, resolve))
}

impl RoostProcess {
    /// Starts `binary` as `options` say, with a fresh store.
    pub fn start(binary: &Path, options: ServerOptions) -> Result<RoostProcess, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut process = RoostProcess {
            binary: binary.to_path_buf(),
            dir,
            port: options.port,
            options,
            child: None,
            url: String::new(),
        };
        process.spawn()?;
        Ok(process)
    }

    pub fn domain(&self) -> &str {
        &self.options.domain
    }

    fn spawn(&mut self) -> Result<Duration, String> {
        let started = Instant::now();
        let mut command = Command::new(&self.binary);
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ROOST_SERVER__BIND", format!("127.0.0.1:{}", self.port))
            .env("ROOST_SERVER__DOMAIN", &self.options.domain)
            .env("ROOST_STORAGE__PATH", self.store_path())
            .env("ROOST_LOG__FILTER", "warn");
        if !self.options.shipped_rate_limits {
            // The load comes from one address: discovery, connection requests and the bytes of
            // request bodies must not be throttled; nor may relays from the one peer, whose
            // shipped limit (100 deliveries a second) the federated chat would measure instead
            // of relaying.
            command
                .env("ROOST_CONNECTIONS__DISCOVERY_BURST", "1000000")
                .env("ROOST_CONNECTIONS__DISCOVERY_PER_MINUTE", "1000000")
                .env("ROOST_LIMITS__CONNECTION_REQUESTS_BURST", "1000000")
                .env("ROOST_LIMITS__CONNECTION_REQUESTS_PER_MINUTE", "1000000")
                .env(
                    "ROOST_LIMITS__BODY_BYTES_PER_MINUTE_PER_ADDRESS",
                    "4000000000",
                )
                .env("ROOST_LIMITS__BODY_BYTES_BURST_PER_ADDRESS", "4000000000")
                .env("ROOST_LIMITS__RELAYS_PER_MINUTE_PER_DOMAIN", "100000000")
                // The memory figures queue 100 000 messages for one client.
                .env("ROOST_LIMITS__QUEUE_MAX_MESSAGES", "1000000")
                .env("ROOST_LIMITS__QUEUE_MAX_BYTES", "4000000000")
                .env("ROOST_LIMITS__RELAYS_BURST_PER_DOMAIN", "1000000")
                // The fan-out groups are clients of one user, up to 100 of them.
                .env("ROOST_LIMITS__CLIENTS_PER_USER", "1000");
        }
        let mut child = command
            .envs(self.options.settings.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line).map_err(|e| e.to_string())?;
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("roost did not start: {line:?}"))?
            .to_owned();
        let took = started.elapsed();
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stdout.read_to_string(&mut rest);
        });
        self.port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        self.url = url;
        self.child = Some(child);
        Ok(took)
    }

    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// CPU time the server has used so far (user and system), in seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(self.pid()?)
    }

    /// The running server's process id.
    pub fn pid(&self) -> Option<u32> {
        Some(self.child.as_ref()?.id())
    }

    /// The server's resident memory, in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// The server's largest resident memory, sampled every 50 ms until `until`, in bytes.
    pub async fn peak_rss_until(&self, until: Instant) -> u64 {
        let mut peak = 0;
        while Instant::now() < until {
            peak = peak.max(self.rss_bytes().unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        peak
    }

    /// Bytes of the store on disk.
    pub fn store_bytes(&self) -> u64 {
        fn walk(dir: &Path) -> u64 {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.store_path())
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed server again on the same port and store; answers how long it took
    /// from start to listening.
    pub fn start_again(&mut self) -> Result<Duration, String> {
        self.spawn()
    }

    /// Stops the server with SIGTERM and starts it again on the same port and store; answers
    /// how long it took from start to listening.
    pub fn restart(&mut self) -> Result<Duration, String> {
        self.stop();
        self.spawn()
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for RoostProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// CPU time (user + system) process `pid` has used, in seconds; `/proc/PID/stat` counts it in
/// clock ticks of 1/100 s on Linux.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    stat_cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// CPU time (user + system) in a `/proc/…/stat` line (a process's or a thread's), in seconds.
pub fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some((user + system) as f64 / 100.0)
}
