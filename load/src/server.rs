//! The `roost` server under load: a process this tool starts (with its own store in a temporary
//! directory) or one given by `--server URL`, which this tool cannot restart or weigh.

use std::{
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A `roost serve` started by this tool.
pub struct RoostProcess {
    binary: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    pub url: String,
}

impl RoostProcess {
    /// Starts `binary` on a free loopback port with a fresh store.
    pub fn start(binary: &Path) -> Result<RoostProcess, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut process = RoostProcess {
            binary: binary.to_path_buf(),
            dir,
            port: 0,
            child: None,
            url: String::new(),
        };
        process.spawn()?;
        Ok(process)
    }

    fn spawn(&mut self) -> Result<Duration, String> {
        let started = Instant::now();
        let mut child = Command::new(&self.binary)
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ROOST_SERVER__BIND", format!("127.0.0.1:{}", self.port))
            .env("ROOST_STORAGE__PATH", self.store_path())
            .env("ROOST_LOG__FILTER", "warn")
            // The load comes from one address: discovery must not be throttled.
            .env("ROOST_CONNECTIONS__DISCOVERY_BURST", "1000000")
            .env("ROOST_CONNECTIONS__DISCOVERY_PER_MINUTE", "1000000")
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

    /// The server's resident memory, in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
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
