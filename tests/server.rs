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
            // A format no build has written yet.
            .insert("format_version", &99u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let output = server.command().arg("serve").output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("format version 99"), "{stderr}");
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

#[tokio::test]
async fn json_logs_are_one_object_a_line_with_no_user_name_at_info() {
    let server = TestServer::start(Options {
        settings: vec![("ROOST_LOG__FORMAT", "json".into())],
        ..Options::default()
    });
    let mut phone = Identity::new(&server.user("zebediah"));
    assert_eq!(server.http().register(&mut phone, None).await.status, 201);
    let logged = common::eventually(
        || server.log().contains("registered a new user"),
        Duration::from_secs(5),
    );
    assert!(logged.await, "{}", server.log());
    let log = server.log();
    assert!(!log.contains("zebediah"), "{log}");
    for line in log.lines() {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(object["level"].is_string(), "{line}");
        assert!(object["fields"].is_object(), "{line}");
    }
}

/// `contrib/roost.service` is a unit systemd takes, hardened (`systemd-analyze security` rates
/// its exposure), and its command line is one `roost` accepts.
#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/roost.service"
    ))
    .unwrap();
    let exec_start = unit
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let mut args = exec_start.split_whitespace();
    assert_eq!(args.next(), Some("/usr/local/bin/roost"));
    let args: Vec<&str> = args.collect();
    let help = std::process::Command::new(common::roost_binary())
        .args(&args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        help.status.success(),
        "{args:?} is not a roost command line"
    );
    for hardening in [
        "User=roost",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=roost",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(hardening), "{hardening}");
    }

    if std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed here: the unit's syntax is not checked");
        return;
    }
    // Checked as installed: the binary where the unit expects it is this build's.
    let dir = tempfile::tempdir().unwrap();
    let installed = dir.path().join("roost.service");
    std::fs::write(
        &installed,
        unit.replace("/usr/local/bin/roost", common::roost_binary()),
    )
    .unwrap();
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&installed)
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let security = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&installed)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|line| {
            line.split("Overall exposure level for roost.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|score| score.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in {report}"));
    assert!(exposure <= 2.0, "exposure {exposure}: {report}");
}
