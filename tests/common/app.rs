//! `roost-client app` for the tests: started on a state directory (registered or not), and
//! asked as its own pages ask it (its cookie, its Origin).

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A running `roost-client app` on a client state directory (registered or not yet): the
/// process and the address it printed.
pub struct RunningApp {
    child: Child,
    /// The address it printed, with its access token.
    pub url: String,
}

impl Drop for RunningApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_app(state: &std::path::Path) -> RunningApp {
    start_app_with(state, &[])
}

/// [`start_app`] with global options before the command (`--resolve DOMAIN=URL`, …).
pub fn start_app_with(state: &std::path::Path, options: &[&str]) -> RunningApp {
    let mut child = Command::new(super::client_binary())
        .env("ROOST_CLIENT_STATE", state)
        .args(options)
        .args(["app", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run roost-client app");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let printed: serde_json::Value = serde_json::from_str(&line).expect("one JSON line");
    let url = printed["url"]
        .as_str()
        .expect("the app's address")
        .to_owned();
    RunningApp { child, url }
}

/// Requests to a running app as its own pages make them: with its cookie and Origin.
pub struct Pages {
    pub http: reqwest::Client,
    pub base: String,
    pub cookie: String,
    pub origin: String,
}

impl Pages {
    pub fn of(app: &RunningApp) -> Pages {
        let (base, token) = app.url.split_once("/?token=").unwrap();
        Pages {
            http: reqwest::Client::new(),
            base: base.to_owned(),
            cookie: format!("roost_app={token}"),
            origin: base.to_owned(),
        }
    }

    pub async fn answer(request: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// A request to `path` with the app's cookie, as the pages' own are sent.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        Self::answer(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn post(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, serde_json::Value) {
        self.change(reqwest::Method::POST, path, body).await
    }

    /// A request that changes something (any method but GET), from the app's own page.
    pub async fn change(
        &self,
        method: reqwest::Method,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, serde_json::Value) {
        let request = self
            .request(method, path)
            .header("origin", &self.origin)
            .body(body);
        Self::answer(request).await
    }

    /// GETs `path` until `check` holds of its answer (the live loop brings news by itself).
    pub async fn until(
        &self,
        path: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, answer) = self.get(path).await;
            if status == 200 && check(&answer) {
                return answer;
            }
            assert!(
                Instant::now() < deadline,
                "{path} never came to what was expected: {answer}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The app's event stream, read as a page reads it.
pub struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Pages {
    pub async fn events(&self) -> Events {
        let response = self
            .request(reqwest::Method::GET, "/api/events")
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Events {
            response,
            buffer: String::new(),
        }
    }
}

impl Events {
    /// The next event called `name` whose data passes `check`; fails after 30 s.
    pub async fn until(
        &mut self,
        name: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field = |prefix: &str| {
                    block
                        .lines()
                        .find_map(|line| line.strip_prefix(prefix))
                        .map(str::to_owned)
                };
                let (Some(event), Some(data)) = (field("event: "), field("data: ")) else {
                    continue;
                };
                let data: serde_json::Value = serde_json::from_str(&data).unwrap();
                if event == name && check(&data) {
                    return data;
                }
                seen.push(format!("{event} {data}"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no {name} event as expected; saw {seen:?}"))
                .unwrap()
                .expect("the event stream does not end");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}
