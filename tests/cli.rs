//! The `roost-client` binary as a user runs it, against real `roost` servers: exit codes,
//! `--json` output on stdout, errors on stderr.

mod common;

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{Options, TestServer, PASSWORD};
use serde_json::Value;

/// Longest a single command may take before the test calls it hung.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How a run of `roost-client` ended.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The JSON value a successful `--json` command printed on stdout.
    fn json(&self) -> Value {
        assert!(self.success(), "roost-client failed: {self:?}");
        assert!(self.stderr.is_empty(), "stderr on success: {self:?}");
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {self:?}"))
    }

    /// The JSON error a failed `--json` command printed on stderr.
    fn error_json(&self) -> Value {
        self.assert_failed();
        serde_json::from_str(self.stderr.trim())
            .unwrap_or_else(|e| panic!("stderr is not one JSON value ({e}): {self:?}"))
    }

    /// Non-zero exit, something on stderr, nothing on stdout, and no panic.
    fn assert_failed(&self) {
        assert!(
            self.code.is_some_and(|c| c != 0),
            "expected a failure: {self:?}"
        );
        assert!(self.stdout.is_empty(), "stdout on failure: {self:?}");
        assert!(!self.stderr.trim().is_empty(), "no error message: {self:?}");
        assert!(!self.stderr.contains("panicked"), "it panicked: {self:?}");
    }
}

/// One client's state directory, and how to run `roost-client` on it.
struct Device {
    state: PathBuf,
}

impl Device {
    fn new(dir: &Path, name: &str) -> Device {
        Device {
            state: dir.join(name),
        }
    }

    /// Runs `roost-client ARGS` with a clean environment, this device's state directory in
    /// `ROOST_CLIENT_STATE` and the password, if any, in `ROOST_PASSWORD`.
    fn run(&self, password: Option<&str>, args: &[&str]) -> Run {
        let mut command = Command::new(common::client_binary());
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ROOST_CLIENT_STATE", &self.state)
            .args(args);
        if let Some(password) = password {
            command.env("ROOST_PASSWORD", password);
        }
        run(command)
    }

    /// `ARGS --json` without a password; the parsed stdout of a successful run.
    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        self.run(None, &args).json()
    }

    fn client_id(&self) -> String {
        self.json(&["whoami"])["client_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// Runs a command to its end (or panics after [`COMMAND_TIMEOUT`]).
fn run(mut command: Command) -> Run {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start roost-client");
    let collect = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = collect(Box::new(child.stdout.take().unwrap()));
    let stderr = collect(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for roost-client") {
            break status;
        }
        if started.elapsed() > COMMAND_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "roost-client {:?} hung",
                command.get_args().collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Run {
        code: status.code(),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// `register USER --server URL --json` with the password in the environment.
fn register(server: &TestServer, device: &Device, local: &str) -> Value {
    let user = server.user(local).to_string();
    device
        .run(
            Some(PASSWORD),
            &["register", &user, "--server", &server.url, "--json"],
        )
        .json()
}

/// alice's phone (registered) and laptop (added), with the password in the environment.
fn phone_and_laptop(server: &TestServer, dir: &Path) -> (Device, Device) {
    let phone = Device::new(dir, "phone");
    register(server, &phone, "alice");
    let laptop = Device::new(dir, "laptop");
    let user = server.user("alice").to_string();
    laptop
        .run(
            Some(PASSWORD),
            &["add-client", &user, "--server", &server.url, "--json"],
        )
        .json();
    (phone, laptop)
}

/// `(client_id, this_client)` of each client `clients --json` lists.
fn listed(device: &Device) -> Vec<(String, bool)> {
    let value = device.json(&["clients"]);
    value["clients"]
        .as_array()
        .unwrap_or_else(|| panic!("no client list: {value}"))
        .iter()
        .map(|c| {
            (
                c["client_id"].as_str().unwrap().to_owned(),
                c["this_client"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn register_prints_the_new_identity_and_whoami_and_clients_agree() {
    let server = TestServer::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let alice = Device::new(dir.path(), "alice");

    let registered = register(&server, &alice, "alice");
    let object = registered.as_object().unwrap();
    assert_eq!(
        object.keys().collect::<std::collections::BTreeSet<_>>(),
        [&"client_id".to_owned(), &"user".to_owned()].into(),
        "{registered}"
    );
    assert_eq!(registered["user"], "alice@localhost");
    let client_id = registered["client_id"].as_str().unwrap().to_owned();
    assert!(
        client_id.len() == 32 && client_id.chars().all(|c| c.is_ascii_hexdigit()),
        "{client_id}"
    );

    let me = alice.json(&["whoami"]);
    assert_eq!(me["user"], "alice@localhost");
    assert_eq!(me["client_id"], client_id.as_str());
    assert_eq!(me["server"], server.url.as_str());

    assert_eq!(listed(&alice), vec![(client_id.clone(), true)]);

    // The same for people, without --json; --state works like ROOST_CLIENT_STATE.
    let text = Device::new(dir.path(), "elsewhere")
        .run(None, &["--state", alice.state.to_str().unwrap(), "whoami"]);
    assert!(text.success(), "{text:?}");
    assert!(
        text.stdout.contains("alice@localhost") && text.stdout.contains(&client_id),
        "{text:?}"
    );
}

#[test]
fn a_password_file_adds_a_second_client_that_both_list() {
    let server = TestServer::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let phone = Device::new(dir.path(), "phone");
    let phone_id = register(&server, &phone, "alice")["client_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let password_file = dir.path().join("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let laptop = Device::new(dir.path(), "laptop");
    let added = laptop
        .run(
            None,
            &[
                "add-client",
                "alice@localhost",
                "--server",
                &server.url,
                "--password-file",
                password_file.to_str().unwrap(),
                "--json",
            ],
        )
        .json();
    assert_eq!(added["user"], "alice@localhost");
    let laptop_id = added["client_id"].as_str().unwrap().to_owned();
    assert_ne!(laptop_id, phone_id);

    assert_eq!(
        listed(&laptop),
        vec![(phone_id.clone(), false), (laptop_id.clone(), true)]
    );
    assert_eq!(listed(&phone), vec![(phone_id, true), (laptop_id, false)]);
}

#[test]
fn a_text_sent_to_an_own_client_shows_in_its_inbox_once() {
    let server = TestServer::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let (phone, laptop) = phone_and_laptop(&server, dir.path());
    let (phone_id, laptop_id) = (phone.client_id(), laptop.client_id());

    let text = "hello from the laptop — ünïcödé";
    let sent = laptop.json(&["send-own", &phone_id, text]);
    assert_eq!(sent["seq"], 2, "{sent}"); // 1 is the notice of the laptop's arrival

    let inbox = phone.json(&["inbox"]);
    let items = inbox["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {inbox}"));
    assert_eq!(items.len(), 2, "{inbox}");
    assert_eq!(items[0]["kind"], "client_added", "{inbox}");
    assert_eq!(items[0]["client_id"], laptop_id.as_str());
    assert_eq!(items[1]["kind"], "from_own_client", "{inbox}");
    assert_eq!(items[1]["sender"], laptop_id.as_str());
    assert_eq!(items[1]["text"], text);
    assert_eq!(items[1]["seq"], 2);

    assert_eq!(
        phone.json(&["inbox"])["items"],
        Value::Array(vec![]),
        "shown twice"
    );
    let again = phone.run(None, &["inbox"]);
    assert!(again.success(), "{again:?}");
    assert_eq!(again.stdout.trim(), "No messages.");
    assert_eq!(laptop.json(&["inbox"])["items"], Value::Array(vec![]));
}

#[test]
fn a_deleted_client_can_no_longer_list_clients() {
    let server = TestServer::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let (phone, laptop) = phone_and_laptop(&server, dir.path());
    let (phone_id, laptop_id) = (phone.client_id(), laptop.client_id());

    let deleted = phone.json(&["delete-client", &laptop_id]);
    assert_eq!(deleted, serde_json::json!({ "deleted": laptop_id }));

    let refused = laptop.run(None, &["clients"]);
    refused.assert_failed();
    assert_eq!(refused.code, Some(1));
    assert!(refused.stderr.contains("401"), "{refused:?}");
    let refused = laptop.run(None, &["clients", "--json"]);
    let error = refused.error_json();
    assert_eq!(
        (error["error"].as_str(), error["status"].as_u64()),
        (Some("unauthenticated"), Some(401)),
        "{error}"
    );

    assert_eq!(listed(&phone), vec![(phone_id, true)]);
    let notices = phone.json(&["inbox"]);
    let kinds: Vec<_> = notices["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["kind"].as_str().unwrap().to_owned(),
                i["client_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("client_added".to_owned(), laptop_id.clone()),
            ("client_deleted".to_owned(), laptop_id)
        ]
    );
}

#[test]
fn a_taken_user_name_is_refused_with_its_code() {
    let server = TestServer::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    register(&server, &Device::new(dir.path(), "first"), "alice");

    let second = Device::new(dir.path(), "second");
    let refused = second.run(
        Some(PASSWORD),
        &["register", "alice@localhost", "--server", &server.url],
    );
    refused.assert_failed();
    assert_eq!(refused.code, Some(1));
    assert!(refused.stderr.starts_with("error: "), "{refused:?}");
    assert!(refused.stderr.contains("user_taken"), "{refused:?}");

    let refused = second.run(
        Some(PASSWORD),
        &[
            "register",
            "alice@localhost",
            "--server",
            &server.url,
            "--json",
        ],
    );
    let error = refused.error_json();
    assert_eq!(error["error"], "user_taken", "{error}");
    assert_eq!(error["status"], 409, "{error}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{error}"
    );

    // The refused registrations left the directory free for another name.
    assert_eq!(register(&server, &second, "bob")["user"], "bob@localhost");
}

#[test]
fn a_missing_password_is_a_usage_error_that_says_how_to_give_one() {
    let server = TestServer::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let alice = Device::new(dir.path(), "alice");

    let refused = alice.run(
        None,
        &["register", "alice@localhost", "--server", &server.url],
    );
    refused.assert_failed();
    assert_eq!(refused.code, Some(2), "{refused:?}");
    assert!(
        refused.stderr.contains("no password")
            && refused.stderr.contains("--password-file")
            && refused.stderr.contains("ROOST_PASSWORD"),
        "{refused:?}"
    );
    let refused = alice.run(
        None,
        &[
            "add-client",
            "alice@localhost",
            "--server",
            &server.url,
            "--json",
        ],
    );
    assert_eq!(refused.code, Some(2), "{refused:?}");
    assert_eq!(refused.error_json()["error"], "no_password");

    let missing = dir.path().join("no-such-file");
    let refused = alice.run(
        Some(PASSWORD),
        &[
            "register",
            "alice@localhost",
            "--server",
            &server.url,
            "--password-file",
            missing.to_str().unwrap(),
        ],
    );
    refused.assert_failed();
    assert_eq!(refused.code, Some(2), "{refused:?}");
    assert!(refused.stderr.contains("no-such-file"), "{refused:?}");

    // Nothing was created, locally or on the server.
    assert!(!alice.state.exists());
    assert_eq!(
        register(&server, &alice, "alice")["user"],
        "alice@localhost"
    );
}

#[test]
fn whoami_before_registering_says_to_register_first() {
    let _server = TestServer::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let nobody = Device::new(dir.path(), "nobody");
    for args in [&["whoami"][..], &["clients"], &["inbox"]] {
        let refused = nobody.run(None, args);
        refused.assert_failed();
        assert!(
            refused.stderr.contains("roost-client register"),
            "{args:?}: {refused:?}"
        );
    }
    let refused = nobody.run(None, &["whoami", "--json"]);
    assert_eq!(refused.error_json()["error"], "not_registered");
    assert!(
        !nobody.state.exists(),
        "a command that needs a client created its directory"
    );

    // An existing but empty directory, as after `mkdir`.
    let empty = Device::new(dir.path(), "empty");
    std::fs::create_dir(&empty.state).unwrap();
    let refused = empty.run(None, &["whoami"]);
    refused.assert_failed();
    assert!(
        refused.stderr.contains("roost-client register"),
        "{refused:?}"
    );
}

#[test]
fn an_unreachable_server_is_a_clear_network_error() {
    let _server = TestServer::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let alice = Device::new(dir.path(), "alice");
    let refused = alice.run(
        Some(PASSWORD),
        &[
            "register",
            "alice@localhost",
            "--server",
            "http://127.0.0.1:1",
        ],
    );
    refused.assert_failed();
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains("cannot reach the server"),
        "{refused:?}"
    );
    assert!(refused.stderr.contains("127.0.0.1:1"), "{refused:?}");

    let refused = alice.run(
        Some(PASSWORD),
        &[
            "register",
            "alice@localhost",
            "--server",
            "http://127.0.0.1:1",
            "--json",
        ],
    );
    assert_eq!(refused.error_json()["error"], "network");

    let refused = alice.run(
        Some(PASSWORD),
        &["register", "alice@localhost", "--server", "127.0.0.1:1"],
    );
    refused.assert_failed();
    assert!(refused.stderr.contains("scheme"), "{refused:?}");
}

#[test]
fn help_names_the_commands_and_their_options() {
    let _server = TestServer::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let device = Device::new(dir.path(), "any");

    let help = device.run(None, &["--help"]);
    assert!(help.success(), "{help:?}");
    for word in [
        "register",
        "add-client",
        "clients",
        "delete-client",
        "whoami",
        "send-own",
        "inbox",
        "--state",
        "--json",
    ] {
        assert!(
            help.stdout.contains(word),
            "--help lacks {word}: {}",
            help.stdout
        );
    }

    let help = device.run(None, &["register", "--help"]);
    assert!(help.success(), "{help:?}");
    for word in [
        "USER@DOMAIN",
        "--server",
        "--password-file",
        "--token",
        "ROOST_PASSWORD",
    ] {
        assert!(
            help.stdout.contains(word),
            "register --help lacks {word}: {}",
            help.stdout
        );
    }
    assert!(!device.state.exists());
}
