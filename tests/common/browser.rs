//! A real headless Chromium for the tests, driven over WebDriver as a person would use a page.
//! Each [`Browser`] owns a `chromedriver` on its own loopback port, the Chromium it starts and a
//! fresh profile directory, so a test can run several side by side (one per user); dropping it
//! ends the session and kills both processes.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them); `CHROMIUM` and
//! `CHROMEDRIVER` name other binaries. The helpers wait as a person waits for a page: they poll
//! every 100 ms for up to [`TIMEOUT`], then panic naming the selector, the text and the page's
//! address.
//!
//! fantoccini runs each session as a task spawned on the test's runtime, so plain
//! `#[tokio::test]` (current thread) works; that task only moves while the test awaits, so a
//! test must not block its thread while it waits on the browser.

use std::{
    fs::File,
    future::Future,
    io::{Read, Write},
    net::TcpStream,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{
    elements::Element,
    error::{CmdError, ErrorStatus},
    Client, ClientBuilder, Locator,
};
use hyper_util::client::legacy::connect::HttpConnector;

/// How long a helper waits for what it needs before it fails the test.
pub const TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);
/// A first Chromium start on a busy two-core machine (tests run in parallel) can take seconds.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Headless, with nothing that reaches outside the machine or needs what a container lacks: no
/// sandbox (we run as root), no GPU, no /dev/shm (small in containers), and a fixed window so
/// screenshots have the same size everywhere (the page gets 1280×761 of it: new headless keeps
/// room for a toolbar it does not draw).
const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,900",
];

/// A headless Chromium and the chromedriver that drives it.
pub struct Browser {
    // Declared first so the session's task lets go before the driver is killed.
    client: Client,
    driver: Driver,
}

/// The chromedriver process, the session it holds and the directory with its log and the
/// browser's profile; dropping it ends all of them.
struct Driver {
    child: Child,
    port: u16,
    session: Option<String>,
    dir: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Ending the session makes chromedriver quit Chromium cleanly. Drop cannot await, and the
        // session's task may never run again, so this asks chromedriver directly.
        if let Some(session) = self.session.take() {
            let _ = http(
                self.port,
                "DELETE",
                &format!("/session/{session}"),
                Duration::from_secs(10),
            );
        }
        // chromedriver leads its own process group, which Chromium's processes join (all but
        // its crash handler, which exits with it): killing the group also ends a Chromium that
        // did not quit. The unreaped chromedriver keeps
        // the group's id from being reused until the wait below.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    /// The end of chromedriver's output (where it and Chromium say why they failed).
    fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default();
        let start = log.len().saturating_sub(2000);
        let start = (start..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(log.len());
        log[start..].to_owned()
    }
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a session with a headless Chromium
    /// on a fresh profile.
    pub async fn start() -> Browser {
        let chromium = std::env::var_os("CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/usr/bin/chromium".into());
        assert!(
            chromium.is_file(),
            "no Chromium at {}: install Debian's `chromium` (as .ci/run does) or name it in CHROMIUM",
            chromium.display()
        );
        let mut driver = start_driver().await;
        let profile = driver.dir.path().join("profile");
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|arg| (*arg).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let serde_json::Value::Object(capabilities) = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
        }) else {
            unreachable!("a JSON object")
        };
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(capabilities);
        let address = format!("http://127.0.0.1:{}", driver.port);
        let connect = builder.connect(&address);
        let client = match tokio::time::timeout(START_TIMEOUT, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => panic!(
                "chromedriver could not start {}: {e}\nchromedriver's log:\n{}",
                chromium.display(),
                driver.log_tail()
            ),
            Err(_) => panic!(
                "no Chromium session within {START_TIMEOUT:?}\nchromedriver's log:\n{}",
                driver.log_tail()
            ),
        };
        driver.session = client.session_id().await.ok().flatten();
        Browser { client, driver }
    }

    /// The fantoccini client, for what the helpers do not cover (scripts, windows, cookies).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&self, url: &str) {
        match tokio::time::timeout(TIMEOUT, self.client.goto(url)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("could not open {url}: {e}"),
            Err(_) => panic!("{url} did not load within {TIMEOUT:?}"),
        }
    }

    /// The address of the page shown now.
    pub async fn current_url(&self) -> String {
        match tokio::time::timeout(TIMEOUT, self.client.current_url()).await {
            Ok(Ok(url)) => url.to_string(),
            Ok(Err(e)) => panic!("no current URL: {e}"),
            Err(_) => panic!("no current URL within {TIMEOUT:?}"),
        }
    }

    /// Waits for an element matching `css` that is shown (present and displayed).
    pub async fn wait_for(&self, css: &str) -> Element {
        let client = &self.client;
        self.poll(&format!("`{css}` shown"), move || async move {
            let element = client.find(Locator::Css(css)).await?;
            Ok(element.is_displayed().await?.then_some(element))
        })
        .await
    }

    /// Waits for an element matching `css` whose shown text contains `text`; that element.
    pub async fn wait_for_text(&self, css: &str, text: &str) -> Element {
        let client = &self.client;
        self.poll(&format!("`{css}` showing {text:?}"), move || async move {
            for element in client.find_all(Locator::Css(css)).await? {
                if element.text().await?.contains(text) {
                    return Ok(Some(element));
                }
            }
            Ok(None)
        })
        .await
    }

    /// The shown text of the first element matching `css`, once there is one.
    pub async fn text_of(&self, css: &str) -> String {
        let client = &self.client;
        self.poll(&format!("the text of `{css}`"), move || async move {
            Ok(Some(client.find(Locator::Css(css)).await?.text().await?))
        })
        .await
    }

    /// Clicks the element matching `css` once it can be clicked (shown, enabled, not covered).
    pub async fn click(&self, css: &str) {
        let client = &self.client;
        self.poll(&format!("a click on `{css}`"), move || async move {
            client.find(Locator::Css(css)).await?.click().await?;
            Ok(Some(()))
        })
        .await
    }

    /// Replaces what the field matching `css` holds with `text`, typed as keys.
    pub async fn fill(&self, css: &str, text: &str) {
        let client = &self.client;
        self.poll(
            &format!("`{css}` filled with {text:?}"),
            move || async move {
                let field = client.find(Locator::Css(css)).await?;
                field.clear().await?;
                field.send_keys(text).await?;
                Ok(Some(()))
            },
        )
        .await
    }

    /// Chooses the file at `path` in the `<input type=file>` matching `css`, which may be
    /// hidden behind a styled label as pages often have it.
    pub async fn upload(&self, css: &str, path: &Path) {
        let path = path
            .canonicalize()
            .unwrap_or_else(|e| panic!("no file to upload at {}: {e}", path.display()));
        let path = path.to_str().expect("a UTF-8 path");
        let client = &self.client;
        self.poll(&format!("`{css}` given {path}"), move || async move {
            client
                .find(Locator::Css(css))
                .await?
                .send_keys(path)
                .await?;
            Ok(Some(()))
        })
        .await
    }

    /// Accepts the alert or confirmation the page shows, if any; its text.
    pub async fn accept_alert_if_any(&self) -> Option<String> {
        match self.client.get_alert_text().await {
            Ok(text) => {
                self.client
                    .accept_alert()
                    .await
                    .unwrap_or_else(|e| panic!("could not accept the alert {text:?}: {e}"));
                Some(text)
            }
            Err(e) if e.is_no_such_alert() => None,
            Err(e) => panic!("could not look for an alert: {e}"),
        }
    }

    /// Writes a PNG of the window to `path`, making its directory if need be.
    pub async fn screenshot(&self, path: &Path) {
        let png = match tokio::time::timeout(TIMEOUT, self.client.screenshot()).await {
            Ok(Ok(png)) => png,
            Ok(Err(e)) => panic!("no screenshot: {e}"),
            Err(_) => panic!("no screenshot within {TIMEOUT:?}"),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// Ends the session and waits for Chromium to quit (dropping the Browser does the same
    /// without waiting for the session's task).
    pub async fn close(self) {
        let Browser { client, mut driver } = self;
        if tokio::time::timeout(TIMEOUT, client.close()).await.is_ok() {
            driver.session = None;
        }
    }

    /// Tries `attempt` every [`POLL`] until it gives a value. A missing, stale, hidden or
    /// covered element is the page not being there yet; any other error fails at once. Panics
    /// after [`TIMEOUT`] with `what`, the page's address and the last error.
    async fn poll<T, F, Fut>(&self, what: &str, mut attempt: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, CmdError>>,
    {
        let deadline = Instant::now() + TIMEOUT;
        let mut last = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, attempt()).await {
                Ok(Ok(Some(value))) => return value,
                Ok(Ok(None)) => last = None,
                Ok(Err(e)) if not_there_yet(&e) => last = Some(e),
                Ok(Err(e)) => panic!("{what}: {e}\n{}", self.whereabouts().await),
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                let last = last.map(|e| format!(" (last: {e})")).unwrap_or_default();
                panic!(
                    "{what}: not within {TIMEOUT:?}{last}\n{}",
                    self.whereabouts().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The page's address and the start of its text, for a failure's message.
    async fn whereabouts(&self) -> String {
        let within = Duration::from_secs(5);
        let url = match tokio::time::timeout(within, self.client.current_url()).await {
            Ok(Ok(url)) => url.to_string(),
            _ => "(unknown)".into(),
        };
        let text = match tokio::time::timeout(within, async {
            self.client.find(Locator::Css("body")).await?.text().await
        })
        .await
        {
            Ok(Ok(text)) => text.chars().take(400).collect(),
            _ => String::new(),
        };
        format!("page: {url}\nits text: {text:?}")
    }
}

fn not_there_yet(e: &CmdError) -> bool {
    e.is_no_such_element()
        || e.is_stale_element_reference()
        || e.is_element_not_interactable()
        || e.is_invalid_element_state()
        || matches!(e, CmdError::Standard(w) if w.error == ErrorStatus::ElementClickIntercepted)
}

/// A chromedriver answering on a free loopback port. The port is free when picked but can be
/// taken before chromedriver binds it; then chromedriver exits and another port is tried.
async fn start_driver() -> Driver {
    let binary = std::env::var_os("CHROMEDRIVER").unwrap_or_else(|| "chromedriver".into());
    let mut failures = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = File::create(dir.path().join("chromedriver.log")).unwrap();
        let port = super::free_port();
        let child = Command::new(&binary)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            // Its own process group, so that Drop can end Chromium with it.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {}: {e}; install Debian's `chromium-driver` (as .ci/run does) \
                     or name it in CHROMEDRIVER",
                    binary.to_string_lossy()
                )
            });
        let mut driver = Driver {
            child,
            port,
            session: None,
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = driver.child.try_wait().unwrap() {
                failures.push(format!(
                    "port {port}: exited ({status}):\n{}",
                    driver.log_tail()
                ));
                break;
            }
            let ready = http(port, "GET", "/status", Duration::from_secs(2))
                .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
                .is_some_and(|status| status["value"]["ready"] == true);
            if ready {
                return driver;
            }
            if Instant::now() >= deadline {
                panic!(
                    "chromedriver on port {port} not ready within {START_TIMEOUT:?}:\n{}",
                    driver.log_tail()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
    panic!("chromedriver would not start:\n{}", failures.join("\n"));
}

/// One plain HTTP/1.1 request to chromedriver; the body of its answer, if it answered. Blocking,
/// so that Drop can use it too; chromedriver is on loopback.
fn http(port: u16, method: &str, path: &str, timeout: Duration) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n"
    )
    .ok()?;
    // chromedriver says `Connection:close` but keeps the connection open: read by the length.
    let mut answer = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        answer.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&answer);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length = head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, value)| value.trim().parse::<usize>().ok())?;
        if body.len() >= length {
            return Some(body.to_owned());
        }
    }
}
