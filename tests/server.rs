//! The `roost` binary as an operator meets it: settings, start-up, shutdown, logs.

mod common;

use std::time::Duration;

use common::{Identity, Options, TestServer, PASSWORD};

#[test]
fn invalid_settings_name_the_key_and_exit_non_zero() {
    let server = TestServer::start(Options::default());
    for (key, value, named) in [
        ("ROOST_SERVER__BIND", "nonsense", "server.bind"),
        ("ROOST_SERVER__DOMAIN", "Not A Domain", "server.domain"),
        (
            "ROOST_REGISTRATION__POLICY",
            "closed",
            "registration.policy",
        ),
        (
            "ROOST_SERVER__MAX_BODY_BYTES",
            "lots",
            "server.max_body_bytes",
        ),
    ] {
        let output = server
            .command()
            .env(key, value)
            .arg("serve")
            .output()
            .unwrap();
        assert!(!output.status.success(), "{key}={value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(named), "{key}: {stderr}");
    }
    let output = server
        .command()
        .args(["--config", "/no/such/file.toml", "serve"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("/no/such/file.toml"));
}

#[test]
fn a_config_file_sets_what_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("roost.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nbind = \"127.0.0.1:0\"\ndomain = \"chat.example\"\n[storage]\npath = {:?}\n",
            dir.path().join("store")
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(common::roost_binary())
        .args(["--config", file.to_str().unwrap(), "serve"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.starts_with("listening on http://127.0.0.1:"), "{line}");
    assert!(!line.trim().ends_with(":0"));
    assert!(dir.path().join("store").join("db").exists());
}

#[test]
fn a_store_of_another_format_version_is_refused_with_a_clear_message() {
    let mut server = TestServer::start(Options::default());
    assert!(server.terminate().success());
    {
        let db = sled::open(server.store_path()).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("format_version", &7u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let output = server.command().arg("serve").output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("format version 7"), "{stderr}");
}

#[test]
fn a_second_server_on_the_same_store_is_refused() {
    let server = TestServer::start(Options::default());
    let output = server.command().arg("serve").output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("lock"));
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_and_flushes() {
    let mut server = TestServer::start(Options::default());
    let http = server.http();
    let mut phone = Identity::new(&server.user("alice"));
    http.register(&mut phone, None).await;
    // A long poll is in flight when the signal comes; it is answered at once, neither cut off
    // nor waited for.
    let waiting = tokio::spawn(async move { http.fetch(&phone, 2, 10, 30_000).await.status });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let stopping = std::time::Instant::now();
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );
    assert_eq!(waiting.await.unwrap(), 200);
    assert!(server.log().contains("store flushed"));
}

#[tokio::test]
async fn user_names_appear_in_logs_only_at_debug_level() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let mut phone = Identity::new(&server.user("zebediah"));
    http.register(&mut phone, None).await;
    let mut laptop = Identity::new(&server.user("zebediah"));
    assert_eq!(http.add_client(&mut laptop, PASSWORD).await.status, 201);
    // The access log line may reach the log reader a moment after the response.
    let logged = common::eventually(
        || {
            server
                .log()
                .contains("POST /as/v1/users/{user}/clients 201")
        },
        Duration::from_secs(5),
    )
    .await;
    let log = server.log();
    assert!(logged, "{log}");
    assert!(!log.contains("zebediah"), "{log}");

    let debug = TestServer::start(Options {
        log: "debug",
        ..Options::default()
    });
    let mut phone = Identity::new(&debug.user("zebediah"));
    debug.http().register(&mut phone, None).await;
    let logged = common::eventually(|| debug.log().contains("zebediah"), Duration::from_secs(5));
    assert!(logged.await);
}
