//! Backup and restore against a real `roost`: a backup taken while clients chat, the server
//! stopped and the backup restored, and the clients — who went on past the backup — using it:
//! their conversation goes on, nobody is handed a one-time package twice, a new user connects.

mod common;

use std::time::{Duration, Instant};

use common::{
    devices::{connect, Devices},
    Identity, Options, TestServer, PASSWORD,
};
use roost_client::Client;
use roost_protocol::api::QueueBatch;

/// `roost admin --json backup DIR` as a process, run while the test goes on sending.
fn start_backup(server: &TestServer, dir: &std::path::Path) -> std::process::Child {
    server
        .command()
        .args(["admin", "--json", "backup"])
        .arg(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

async fn texts(client: &Client, peer: &Client) -> Vec<String> {
    client.sync().await.unwrap();
    let messages = client.chat().messages(peer.user()).await.unwrap();
    messages.into_iter().map(|m| m.text).collect()
}

#[tokio::test]
async fn a_backup_taken_under_traffic_is_restored_and_the_clients_go_on_using_it() {
    let mut server = TestServer::start(Options::default());
    let devices = Devices::new();
    let alice = devices
        .register(&server, "alice", &server.user("alice"))
        .await;
    let bob = devices.register(&server, "bob", &server.user("bob")).await;
    connect(&alice, &bob, &[]).await;
    // dave's phone holds nothing yet when the backup is taken.
    let http = server.http();
    let mut dave = Identity::new(&server.user("dave"));
    assert_eq!(http.register(&mut dave, None).await.status, 201);
    for n in 0..5 {
        alice
            .chat()
            .send(bob.user(), &format!("before {n}"))
            .await
            .unwrap();
    }

    // Messages keep going while the backup is taken.
    let backups = tempfile::tempdir().unwrap();
    let dir = backups.path().join("monday");
    let mut backup = start_backup(&server, &dir);
    let mut during = 0;
    let finished = loop {
        alice
            .chat()
            .send(bob.user(), &format!("during {during}"))
            .await
            .unwrap();
        during += 1;
        if let Some(status) = backup.try_wait().unwrap() {
            break status;
        }
    };
    let output = backup.wait_with_output().unwrap();
    assert!(
        finished.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let taken: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(taken["bytes"].as_u64().unwrap() > 0, "{taken}");
    eprintln!("backup under traffic ({during} messages sent meanwhile): {taken}");
    // The copy is a sound store on its own.
    let check = std::process::Command::new(common::roost_binary())
        .env_clear()
        .env("ROOST_STORAGE__PATH", &dir)
        .args(["admin", "--json", "check"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    // After the backup: more messages, which bob reads (his position moves past the backup).
    alice
        .chat()
        .send(bob.user(), "after the backup")
        .await
        .unwrap();
    let read = texts(&bob, &alice).await;
    assert_eq!(read.len(), 5 + during + 1);

    // dave's first message (the notice of a new client) comes after the backup; he reads it.
    let mut tablet = Identity::new(&dave.user);
    assert_eq!(http.add_client(&mut tablet, PASSWORD).await.status, 201);
    let seen: QueueBatch = http.fetch(&dave, 1, 10, 2000).await.decode();
    let dave_position = seen.messages.last().expect("the notice").seq;

    // Disaster; the admin restores (the server stopped), then starts it again.
    assert!(server.terminate().success());
    let restored = server.admin_json(&["restore", dir.to_str().unwrap()]);
    assert!(
        restored["one_time_connection_packages_forgotten"]
            .as_u64()
            .unwrap()
            > 0,
        "{restored}"
    );
    assert!(
        restored["queues_renumbered"].as_u64().unwrap() >= 2,
        "{restored}"
    );
    let kept = restored["store_replaced_kept_at"].as_str().unwrap();
    assert!(std::path::Path::new(kept).join("db").is_file());
    server.start_again();
    let check = server.admin_json(&["check"]);
    assert_eq!(check["problems"], serde_json::json!([]), "{check}");

    // The conversation goes on: a message sent now reaches bob, whose position is beyond
    // anything the backup held (without renumbering it would be numbered below it, unseen).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // The first request after the restart may meet a closed pooled connection.
        if alice
            .chat()
            .send(bob.user(), "after the restore")
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alice cannot send after the restore"
        );
    }
    let read = texts(&bob, &alice).await;
    assert_eq!(
        read.last().map(String::as_str),
        Some("after the restore"),
        "{read:?}"
    );
    bob.chat().send(alice.user(), "got it").await.unwrap();
    // The same for a queue that was empty at the backup: the next notice reaches dave.
    let http = server.http();
    let mut laptop = Identity::new(&dave.user);
    assert_eq!(http.add_client(&mut laptop, PASSWORD).await.status, 201);
    let next: QueueBatch = http
        .fetch(&dave, dave_position + 1, 10, 2000)
        .await
        .decode();
    assert_eq!(
        next.messages.len(),
        1,
        "dave's new notice is numbered below his position"
    );
    let alices = texts(&alice, &bob).await;
    assert_eq!(alices.last().map(String::as_str), Some("got it"));

    // A new user finds alice: her one-time packages are gone, her last resort stands in, and
    // she publishes fresh ones.
    let carol = devices
        .register(&server, "carol", &server.user("carol"))
        .await;
    let found = carol.connections().discover(alice.user()).await.unwrap();
    assert!(found.iter().all(|p| p.body.last_resort), "{found:?}");
    let published = alice.connections().top_up(10, 10).await.unwrap();
    assert!(published.remaining >= 10);
    let found = carol.connections().discover(alice.user()).await.unwrap();
    assert!(found.iter().all(|p| !p.body.last_resort));
    connect(&carol, &alice, &[]).await;
    carol
        .chat()
        .send(alice.user(), "hi, I'm new")
        .await
        .unwrap();
    assert_eq!(texts(&alice, &carol).await, ["hi, I'm new"]);
}

#[tokio::test]
async fn restore_is_refused_while_the_server_runs_and_for_what_is_not_a_backup() {
    let mut server = TestServer::start(Options::default());
    let backups = tempfile::tempdir().unwrap();
    let dir = backups.path().join("b");
    server.admin(&["backup", dir.to_str().unwrap()]);
    let said = server.admin_fails(&["restore", dir.to_str().unwrap()]);
    assert!(said.contains("stop it before"), "{said}");
    // A second backup into the same directory is refused, and the first one stays whole.
    let said = server.admin_fails(&["backup", dir.to_str().unwrap()]);
    assert!(said.contains("not empty"), "{said}");
    assert!(dir.join("roost-backup.json").is_file());

    assert!(server.terminate().success());
    let not_a_backup = backups.path().join("photos");
    std::fs::create_dir_all(&not_a_backup).unwrap();
    let said = server.admin_fails(&["restore", not_a_backup.to_str().unwrap()]);
    assert!(said.contains("not a Roost backup"), "{said}");
    // The store is untouched by the refusal: the server starts on it as before.
    server.start_again();
    assert_eq!(server.admin_json(&["status"])["running"], true);
}
