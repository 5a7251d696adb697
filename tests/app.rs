//! `roost-client app` against a real server: the web interface answers only the person who
//! started it — the access token it printed (then its cookie), its own Host, its own Origin for
//! changes — and binds loopback only.

mod common;

use serde_json::json;

use common::{
    app::{start_app, Pages},
    devices::run_json,
    Options, TestServer,
};

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
        .request(reqwest::Method::GET, &format!("/api/requests/{id}/avatar"))
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
    let mut events = pages.events().await;
    run_json(bob.clone(), &["send", "alice@localhost", "hello from bob"]).await;
    events.until("changed", |c| c["messages"] == true).await;
    // Nobody asks the app to sync: its live loop brings the message.
    pages
        .until(chat, |m| m["messages"][0]["text"] == "hello from bob")
        .await;
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

/// The first run: an app on an empty state directory offers to enrol, refuses a bad
/// enrolment with a clear error and stays unenrolled; a good one makes it the client's app,
/// whose pages hear when the homeserver goes away and comes back.
#[tokio::test]
async fn the_first_run_enrols_this_device_and_the_pages_hear_when_the_homeserver_is_unreachable() {
    let mut server = TestServer::start(Options::default());
    run_json(
        tempfile::tempdir().unwrap().path().join("other"),
        &["register", "carol@localhost", "--server", &server.url],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("new");
    let app = start_app(&state);
    let pages = Pages::of(&app);
    assert_eq!(
        pages.get("/api/me").await,
        (200, json!({ "enrolled": false }))
    );
    assert_eq!(pages.get("/api/contacts").await.1["error"], "not_enrolled");

    let enrol = |mode: &str, user: &str, password: &str| {
        json!({ "mode": mode, "server": server.url, "user": user, "password": password })
            .to_string()
    };
    for (body, status, code) in [
        ("garbage".to_owned(), 400, "bad_body"),
        (r#"{"mode": "steal"}"#.to_owned(), 400, "bad_body"),
        (enrol("register", "no domain", "pw"), 400, "bad_user"),
        (enrol("register", "dave@localhost", ""), 400, "bad_password"),
        (
            enrol("add_device", "carol@localhost", "wrong password"),
            400,
            "wrong_password",
        ),
        (
            enrol("register", "carol@localhost", "a long password"),
            400,
            "user_taken",
        ),
    ] {
        let (got, answer) = pages.post("/api/enrol", body.clone()).await;
        assert_eq!(
            (got, answer["error"].as_str().unwrap_or_default()),
            (status, code),
            "{body}: {answer}"
        );
    }
    let bad_server = json!({ "mode": "register", "server": "not a url", "user": "dave@localhost", "password": "pw" });
    assert_eq!(
        pages.post("/api/enrol", bad_server.to_string()).await.0,
        400
    );
    assert_eq!(pages.get("/api/me").await.1["enrolled"], false);

    let (status, me) = pages
        .post(
            "/api/enrol",
            enrol("register", "dave@localhost", "a long password"),
        )
        .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user"], "dave@localhost");
    let (_, devices) = pages.get("/api/devices").await;
    assert_eq!(devices["devices"][0]["this_device"], true, "{devices}");
    // Enrolled once: a second enrolment is refused.
    let again = pages
        .post("/api/enrol", enrol("register", "erin@localhost", "pw"))
        .await;
    assert_eq!(again.1["error"], "already_registered", "{again:?}");

    // Another device of an existing user: added with its password.
    let laptop_app = start_app(&dir.path().join("laptop"));
    let laptop = Pages::of(&laptop_app);
    let (status, added) = laptop
        .post(
            "/api/enrol",
            enrol("add_device", "dave@localhost", "a long password"),
        )
        .await;
    assert_eq!(
        (status, &added["user"]),
        (200, &json!("dave@localhost")),
        "{added}"
    );
    let (_, devices) = pages.get("/api/devices").await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 2, "{devices}");

    let mut events = pages.events().await;
    events
        .until("status", |s| s["enrolled"] == true && s["online"] == true)
        .await;
    server.kill();
    let down = events.until("status", |s| s["online"] == false).await;
    assert!(
        down["problem"]
            .as_str()
            .unwrap()
            .contains("cannot be reached"),
        "{down}"
    );
    server.start_again();
    let back = std::time::Instant::now();
    events.until("status", |s| s["online"] == true).await;
    // Told at the next try (the pauses between tries grow to 30 s), not when a long poll that
    // reached the server again ends.
    assert!(
        back.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        back.elapsed()
    );
}

/// Every endpoint answers a bad request with a 4xx and a JSON error naming the problem, and
/// nothing the user has is changed by it.
#[tokio::test]
async fn every_app_endpoint_refuses_bad_requests_with_a_4xx_and_changes_nothing() {
    let server = TestServer::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    for (state, user) in [(&alice, "alice@localhost"), (&bob, "bob@localhost")] {
        run_json(state.clone(), &["register", user, "--server", &server.url]).await;
    }
    run_json(alice.clone(), &["profile", "set", "--name", "Alice"]).await;
    run_json(alice.clone(), &["connect", "bob@localhost"]).await;
    let requests = run_json(bob.clone(), &["requests"]).await;
    let id = requests["requests"][0]["id"].as_str().unwrap().to_owned();
    run_json(bob.clone(), &["accept", &id]).await;
    run_json(alice.clone(), &["sync"]).await;
    let group = run_json(alice.clone(), &["group", "create", "Friends"]).await;
    let group = group["group_id"].as_str().unwrap().to_owned();
    run_json(alice.clone(), &["group", "add", &group, "bob@localhost"]).await;

    let app = start_app(&alice);
    let pages = Pages::of(&app);
    let everything = [
        "/api/me".to_owned(),
        "/api/profile".to_owned(),
        "/api/contacts".to_owned(),
        "/api/groups".to_owned(),
        format!("/api/groups/{group}"),
        "/api/devices".to_owned(),
        "/api/requests".to_owned(),
        "/api/chat/bob@localhost".to_owned(),
    ];
    let mut before = Vec::new();
    for path in &everything {
        let (status, answer) = pages.get(path).await;
        assert_eq!(status, 200, "{path}: {answer}");
        before.push(answer);
    }
    let (_, me) = pages.get("/api/me").await;
    let own_device = me["client_id"].as_str().unwrap().to_owned();

    use reqwest::Method;
    let huge = vec![b'x'; 600 * 1024];
    let png_too_big = [b"\x89PNG\r\n\x1a\n".as_slice(), &[0u8; 300 * 1024]].concat();
    let cases: Vec<(Method, String, Vec<u8>, u16, &str)> = vec![
        (
            Method::POST,
            "/api/enrol".into(),
            br#"{"mode": "register", "server": "http://x", "user": "a@b", "password": "p"}"#
                .to_vec(),
            409,
            "already_registered",
        ),
        (
            Method::PUT,
            "/api/profile".into(),
            b"garbage".to_vec(),
            400,
            "bad_body",
        ),
        (
            Method::PUT,
            "/api/profile".into(),
            json!({ "display_name": "x".repeat(65) })
                .to_string()
                .into_bytes(),
            400,
            "bad_profile",
        ),
        (
            Method::PUT,
            "/api/profile".into(),
            br#"{"display_name": "A", "admin": true}"#.to_vec(),
            400,
            "bad_body",
        ),
        (
            Method::PUT,
            "/api/profile/avatar".into(),
            b"not an image".to_vec(),
            400,
            "bad_profile",
        ),
        (
            Method::PUT,
            "/api/profile/avatar".into(),
            png_too_big,
            400,
            "bad_profile",
        ),
        (
            Method::PUT,
            "/api/profile/avatar".into(),
            huge.clone(),
            413,
            "body_too_large",
        ),
        (
            Method::DELETE,
            "/api/devices/zz".into(),
            vec![],
            400,
            "bad_client_id",
        ),
        (
            Method::DELETE,
            format!("/api/devices/{own_device}"),
            vec![],
            400,
            "remove_this_device",
        ),
        (
            Method::POST,
            "/api/connect".into(),
            b"{".to_vec(),
            400,
            "bad_body",
        ),
        (
            Method::POST,
            "/api/connect".into(),
            br#"{"user": "nobody"}"#.to_vec(),
            400,
            "bad_user",
        ),
        (
            Method::POST,
            "/api/connect".into(),
            br#"{"user": "alice@localhost"}"#.to_vec(),
            400,
            "connect_to_self",
        ),
        (
            Method::POST,
            "/api/requests/ffff/decline".into(),
            vec![],
            404,
            "unknown_request",
        ),
        (
            Method::POST,
            "/api/chat/bob@localhost".into(),
            b"garbage".to_vec(),
            400,
            "bad_body",
        ),
        (
            Method::POST,
            "/api/chat/bob@localhost".into(),
            br#"{"text": " "}"#.to_vec(),
            400,
            "bad_text",
        ),
        (
            Method::POST,
            "/api/chat/bob@localhost".into(),
            huge.clone(),
            413,
            "body_too_large",
        ),
        (
            Method::POST,
            "/api/chat/carol@localhost".into(),
            br#"{"text": "hi"}"#.to_vec(),
            404,
            "not_connected",
        ),
        (
            Method::POST,
            "/api/groups".into(),
            br#"{"name": ""}"#.to_vec(),
            400,
            "bad_group_name",
        ),
        (
            Method::POST,
            "/api/groups".into(),
            br#"[1, 2]"#.to_vec(),
            400,
            "bad_body",
        ),
        (
            Method::POST,
            format!("/api/groups/{group}/messages"),
            b"garbage".to_vec(),
            400,
            "bad_body",
        ),
        (
            Method::POST,
            "/api/groups/ffffffff/messages".into(),
            br#"{"text": "hi"}"#.to_vec(),
            404,
            "unknown_group",
        ),
        (
            Method::POST,
            format!("/api/groups/{group}/members"),
            br#"{"user": "bob@localhost"}"#.to_vec(),
            409,
            "already_member",
        ),
        (
            Method::POST,
            format!("/api/groups/{group}/members"),
            br#"{"user": "carol@localhost"}"#.to_vec(),
            404,
            "not_connected",
        ),
        (
            Method::DELETE,
            format!("/api/groups/{group}/members/alice@localhost"),
            vec![],
            400,
            "remove_self",
        ),
        (
            Method::DELETE,
            format!("/api/groups/{group}/members/not-a-user"),
            vec![],
            400,
            "bad_user",
        ),
        (
            Method::POST,
            "/api/groups/ffffffff/leave".into(),
            vec![],
            404,
            "unknown_group",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let (got, answer) = pages.change(method.clone(), &path, body.clone()).await;
        assert_eq!(
            (got, answer["error"].as_str().unwrap_or_default()),
            (status, code),
            "{method} {path}: {answer}"
        );
        assert!(
            answer["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{answer}"
        );
        // The same from anywhere else, or without the token: refused before it is read.
        let foreign = pages
            .request(method.clone(), &path)
            .header("origin", "http://evil.example")
            .body(body.clone());
        assert_eq!(Pages::answer(foreign).await.0, 403, "{method} {path}");
        let anonymous = pages
            .http
            .request(method.clone(), format!("{}{path}", pages.base))
            .header("origin", &pages.origin)
            .body(body);
        assert_eq!(Pages::answer(anonymous).await.0, 401, "{method} {path}");
    }

    for (path, before) in everything.iter().zip(before) {
        assert_eq!(pages.get(path).await.1, before, "{path} changed");
    }
    // Nothing reached bob either.
    run_json(bob.clone(), &["sync"]).await;
    let bobs = run_json(bob.clone(), &["messages", "alice@localhost"]).await;
    assert_eq!(bobs["messages"], json!([]), "{bobs}");
}

/// A lost device is removed from the app's device list: it can no longer act for its user.
#[tokio::test]
async fn a_device_removed_in_the_app_can_no_longer_act_for_its_user() {
    let server = TestServer::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let (laptop, phone) = (dir.path().join("laptop"), dir.path().join("phone"));
    run_json(
        laptop.clone(),
        &["register", "alice@localhost", "--server", &server.url],
    )
    .await;
    let added = run_json(
        phone.clone(),
        &["add-client", "alice@localhost", "--server", &server.url],
    )
    .await;
    let phone_id = added["client_id"].as_str().unwrap().to_owned();

    let app = start_app(&laptop);
    let pages = Pages::of(&app);
    let (_, listed) = pages.get("/api/devices").await;
    let ids: Vec<&str> = listed["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{listed}");
    assert!(ids.contains(&phone_id.as_str()), "{listed}");

    let (status, removed) = pages
        .change(
            reqwest::Method::DELETE,
            &format!("/api/devices/{phone_id}"),
            "",
        )
        .await;
    assert_eq!(status, 200, "{removed}");
    let (_, listed) = pages.get("/api/devices").await;
    assert_eq!(listed["devices"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["devices"][0]["this_device"], true);
    let (ok, refused) = common::devices::cli(&phone, &["clients"]);
    assert!(!ok && refused["status"] == 401, "{refused}");
}
