//! `roost-client app` against a real server: the web interface answers only the person who
//! started it — the access token it printed (then its cookie), its own Host, its own Origin for
//! changes — and binds loopback only.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
};

use common::{devices::run_json, Options, TestServer};

/// A running `roost-client app` on a registered client state: the process and the address it
/// printed.
struct RunningApp {
    child: Child,
    url: String,
}

impl Drop for RunningApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_app(state: &std::path::Path) -> RunningApp {
    let mut child = Command::new(common::client_binary())
        .env("ROOST_CLIENT_STATE", state)
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

#[tokio::test]
async fn the_app_answers_only_its_token_its_host_and_its_own_pages() {
    let server = TestServer::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("alice");
    run_json(
        state.clone(),
        &["register", "alice@localhost", "--server", &server.url],
    )
    .await;
    let app = start_app(&state);
    let (base, token) = app.url.split_once("/?token=").unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let error_of = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        let body: serde_json::Value =
            serde_json::from_str(&response.text().await.unwrap()).unwrap_or_default();
        (
            status,
            body["error"].as_str().unwrap_or_default().to_owned(),
        )
    };

    // Without the token: nothing, not even the page.
    for path in ["/", "/api/me", "/app.js"] {
        let refused = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(
            error_of(refused).await,
            (401, "no_access_token".into()),
            "{path}"
        );
    }
    let wrong = http
        .get(format!("{base}/api/me"))
        .header("cookie", "roost_app=0000")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(wrong).await, (401, "no_access_token".into()));

    // The printed address sets the cookie and sends the browser on without the token.
    let first = http.get(&app.url).send().await.unwrap();
    assert_eq!(first.status(), 303);
    assert_eq!(first.headers()["location"], "/");
    let cookie = first.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = format!("roost_app={token}");
    let page = http
        .get(format!("{base}/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'self'"));
    assert!(page.text().await.unwrap().contains("<title>Roost</title>"));
    let me = http
        .get(format!("{base}/api/me"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let me: serde_json::Value = serde_json::from_str(&me).unwrap();
    assert_eq!(me["user"], "alice@localhost");

    // Another name for 127.0.0.1 (DNS rebinding) is refused, token or not.
    let rebound = http
        .get(format!("{base}/api/me"))
        .header("cookie", &cookie)
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(rebound).await, (403, "wrong_host".into()));

    // A change must come from the app's own pages.
    let port = base.rsplit_once(':').unwrap().1;
    for origin in [None, Some("http://evil.example".to_owned())] {
        let mut request = http
            .post(format!("{base}/api/anything"))
            .header("cookie", &cookie)
            .body("{}");
        if let Some(origin) = &origin {
            request = request.header("origin", origin);
        }
        let refused = request.send().await.unwrap();
        assert_eq!(
            error_of(refused).await,
            (403, "wrong_origin".into()),
            "{origin:?}"
        );
    }
    let own = http
        .post(format!("{base}/api/anything"))
        .header("cookie", &cookie)
        .header("origin", format!("http://127.0.0.1:{port}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(own).await, (404, "not_found".into()));

    // Only loopback.
    let (ok, error) = common::devices::cli(&state, &["app", "--bind", "0.0.0.0:0"]);
    assert!(!ok);
    assert!(
        error["message"].as_str().unwrap().contains("loopback"),
        "{error}"
    );
}

/// Requests to a running app as its own pages make them: with its cookie and Origin.
struct Pages {
    http: reqwest::Client,
    base: String,
    cookie: String,
    origin: String,
}

impl Pages {
    fn of(app: &RunningApp) -> Pages {
        let (base, token) = app.url.split_once("/?token=").unwrap();
        Pages {
            http: reqwest::Client::new(),
            base: base.to_owned(),
            cookie: format!("roost_app={token}"),
            origin: base.to_owned(),
        }
    }

    async fn answer(request: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let request = self.http.get(format!("{}{path}", self.base));
        Self::answer(request.header("cookie", &self.cookie)).await
    }

    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, serde_json::Value) {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .header("origin", &self.origin)
            .body(body);
        Self::answer(request).await
    }
}

#[tokio::test]
async fn the_app_shows_a_request_and_its_profile_on_request_accepts_it_and_chats() {
    let server = TestServer::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    for (state, user) in [(&alice, "alice@localhost"), (&bob, "bob@localhost")] {
        run_json(state.clone(), &["register", user, "--server", &server.url]).await;
    }
    let avatar: Vec<u8> = b"\x89PNG\r\n\x1a\n"
        .iter()
        .copied()
        .chain([5u8; 500])
        .collect();
    let avatar_file = dir.path().join("bob.png");
    std::fs::write(&avatar_file, &avatar).unwrap();
    let avatar_arg = avatar_file.display().to_string();
    run_json(
        bob.clone(),
        &[
            "profile",
            "set",
            "--name",
            "Bob the Builder",
            "--avatar",
            &avatar_arg,
        ],
    )
    .await;
    run_json(bob.clone(), &["connect", "alice@localhost"]).await;

    let app = start_app(&alice);
    let pages = Pages::of(&app);
    let (status, listed) = pages.get("/api/requests").await;
    assert_eq!(status, 200, "{listed}");
    let request = &listed["requests"][0];
    assert_eq!(request["from"], "bob@localhost");
    assert_eq!(request["has_profile"], true);
    let id = request["id"].as_str().unwrap().to_owned();

    let (status, profile) = pages.get(&format!("/api/requests/{id}/profile")).await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["display_name"], "Bob the Builder");
    assert_eq!(profile["self_declared"], true);
    let image = pages
        .http
        .get(format!("{}/api/requests/{id}/avatar", pages.base))
        .header("cookie", &pages.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(image.headers()["content-type"], "image/png");
    assert_eq!(image.headers()["x-content-type-options"], "nosniff");
    assert_eq!(image.bytes().await.unwrap().to_vec(), avatar);

    // Bad input: a clear error, nothing changed.
    assert_eq!(pages.get("/api/requests/ffff/profile").await.0, 404);
    assert_eq!(pages.post("/api/requests/ffff/accept", "").await.0, 404);
    let chat = "/api/chat/bob@localhost";
    assert_eq!(pages.post(chat, "garbage").await.1["error"], "bad_body");
    assert_eq!(
        pages.post(chat, r#"{"text": "  "}"#).await.1["error"],
        "bad_text"
    );
    let huge = format!(r#"{{"text": "{}"}}"#, "x".repeat(600 * 1024));
    assert_eq!(pages.post(chat, huge).await, {
        let (status, body) = (413, "body_too_large");
        (
            status,
            serde_json::json!({ "error": body, "message": "the app takes at most 524288 bytes in a request" }),
        )
    });
    assert_eq!(
        pages.get("/api/chat/not-a-user").await.1["error"],
        "bad_user"
    );
    let (_, still) = pages.get("/api/requests").await;
    assert_eq!(still["requests"].as_array().unwrap().len(), 1);

    let (status, accepted) = pages.post(&format!("/api/requests/{id}/accept"), "").await;
    assert_eq!(status, 200, "{accepted}");
    assert_eq!(accepted["peer"], "bob@localhost");
    run_json(bob.clone(), &["sync"]).await;
    run_json(bob.clone(), &["send", "alice@localhost", "hello from bob"]).await;
    let (status, messages) = pages.get(chat).await;
    assert_eq!(status, 200, "{messages}");
    assert_eq!(
        messages["messages"][0]["text"], "hello from bob",
        "{messages}"
    );
    let (status, sent) = pages.post(chat, r#"{"text": "hi bob"}"#).await;
    assert_eq!(status, 200, "{sent}");
    run_json(bob.clone(), &["sync"]).await;
    let bobs = run_json(bob.clone(), &["messages", "alice@localhost"]).await;
    let texts: Vec<&str> = bobs["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert!(texts.contains(&"hi bob"), "{bobs}");
}
