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
