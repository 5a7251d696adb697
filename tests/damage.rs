//! A damaged store: random bit flips in the data file never make `roost` panic or serve a store
//! that silently lost records. Either it refuses to start with a message naming the file, or
//! `roost admin check` names the damage, or every message is there.
//!
//! Seeded: a failure prints its seed; `ROOST_DAMAGE_TRIALS=N` (default 12) and
//! `ROOST_DAMAGE_SEED=S` run more trials or one again. The seed fixes which bits flip, not the
//! store they flip in (keys and layout differ from run to run), so with `ROOST_DAMAGE_KEEP=1` a
//! store that was served short is kept in `/tmp/damaged-keep` (damaged and pristine) to study.

mod common;

use std::{path::Path, process::Command, time::Duration};

use common::{fuzz::Rng, phone_and_laptop, Options, TestServer};

const MESSAGES: usize = 300;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()));
        } else if entry.file_name() != "admin.sock" {
            std::fs::copy(&path, to.join(entry.file_name())).unwrap();
        }
    }
}

/// Flips `count` random bits of the store's data file.
fn flip_bits(store: &Path, rng: &mut Rng, count: usize) {
    let file = store.join("db");
    let mut bytes = std::fs::read(&file).unwrap();
    for _ in 0..count {
        let bit = rng.next() as usize % (bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
    }
    std::fs::write(&file, bytes).unwrap();
}

/// `roost admin check` on `store`: whether it found the store sound, and what it printed.
fn check(store: &Path) -> (Option<bool>, String) {
    let child = Command::new(common::roost_binary())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ROOST_STORAGE__PATH", store)
        .args(["admin", "--json", "check"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Its output is read while it runs (a long report would fill the pipe), within a minute.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    let output = finished
        .recv_timeout(Duration::from_secs(60))
        .expect("admin check hangs")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().map(|code| code == 0), text)
}

/// A store with one queue of [`MESSAGES`] messages, stopped cleanly: its server, the queue's
/// client, and a copy of the store as it was.
async fn queue_of_messages() -> (TestServer, common::Identity, tempfile::TempDir) {
    let mut server = TestServer::start(Options::default());
    let http = server.http();
    let (phone, laptop) = phone_and_laptop(&server, "bob").await;
    for n in 0..MESSAGES {
        let payload = vec![n as u8; 1024];
        assert_eq!(
            http.enqueue(&laptop, &phone.client_id(), &payload)
                .await
                .status,
            200
        );
    }
    assert!(server.terminate().success());
    let pristine = tempfile::tempdir().unwrap();
    copy_dir(server.store_path(), pristine.path());
    (server, phone, pristine)
}

#[tokio::test]
async fn a_damaged_store_is_refused_or_reported_never_served_short() {
    let (_, phone, pristine) = queue_of_messages().await;

    let trials: u64 = std::env::var("ROOST_DAMAGE_TRIALS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(12);
    let seeds: Vec<u64> = match std::env::var("ROOST_DAMAGE_SEED") {
        Ok(seed) => vec![seed.parse().unwrap()],
        Err(_) => (0..trials).map(|n| 0xDA11_0000 + n).collect(),
    };
    let (mut refused, mut reported, mut whole) = (0, 0, 0);
    for seed in seeds {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        copy_dir(pristine.path(), &store);
        let mut rng = Rng(seed);
        // One bit, two, or eight.
        flip_bits(&store, &mut rng, [1, 2, 8][seed as usize % 3]);

        let (sound, printed) = check(&store);
        let context = format!("seed {seed} (ROOST_DAMAGE_SEED={seed}):\n{printed}");
        assert!(!printed.contains("panicked"), "{context}");
        match sound {
            // It could not even open the store: the message must say which file and why.
            Some(false) if !printed.contains("\"problems\"") => {
                assert!(printed.contains("db"), "{context}");
                refused += 1;
            }
            Some(false) => reported += 1,
            Some(true) => {
                // Sound, it says: then the server starts and has every message.
                let mut server = TestServer::start(Options {
                    store: Some(store.clone()),
                    ..Options::default()
                });
                // Said before the fetch, whose failure would not name the seed.
                eprintln!("seed {seed}: check said sound; fetching every message");
                let seen = server.http().fetch_all(&phone).await.len();
                if seen != 1 + MESSAGES && std::env::var("ROOST_DAMAGE_KEEP").is_ok() {
                    server.kill();
                    let keep = std::path::Path::new("/tmp/damaged-keep");
                    let _ = std::fs::remove_dir_all(keep);
                    copy_dir(&store, &keep.join("store"));
                    copy_dir(pristine.path(), &keep.join("pristine"));
                }
                assert_eq!(seen, 1 + MESSAGES, "check said sound; {context}");
                server.kill();
                whole += 1;
            }
            None => panic!("admin check was killed; {context}"),
        }
    }
    eprintln!("damaged stores: {refused} refused, {reported} reported, {whole} whole");
}

#[tokio::test]
async fn a_store_that_lost_durable_writes_is_refused_until_an_admin_accepts_it() {
    let mut server = TestServer::start(Options::default());
    let (phone, _) = phone_and_laptop(&server, "bob").await;
    assert!(server.terminate().success());
    // What sled's reading only part of its log looks like: the mark beside the store counts
    // more flushes than the store holds.
    let mark = server.store_path().join("durable");
    let count = u64::from_be_bytes(std::fs::read(&mark).unwrap()[..8].try_into().unwrap());
    let claimed = count + 100;
    let bytes = [claimed.to_be_bytes(), (!claimed).to_be_bytes()].concat();
    std::fs::write(&mark, bytes).unwrap();

    let refused = server.start_fails().expect("a start is refused");
    assert!(refused.contains("admin repair"), "{refused}");
    let (sound, printed) = check(server.store_path());
    assert_eq!(sound, Some(false), "{printed}");
    assert!(printed.contains("flushes"), "{printed}");
    let repaired = server.command().args(["admin", "repair"]).output().unwrap();
    assert!(repaired.status.success());
    assert!(String::from_utf8_lossy(&repaired.stdout).contains("accepted the store as it is"));

    server.start_again();
    assert_eq!(server.http().fetch_all(&phone).await.len(), 1);
}

#[tokio::test]
async fn a_store_damaged_inside_its_log_is_refused_until_repair_rewrites_it() {
    let (mut server, phone, pristine) = queue_of_messages().await;

    // One flipped bit in the middle of a message sled replays at open (most of the file): sled
    // would skip the rest of that segment without a word. Where exactly the messages lie
    // differs from run to run, so places are tried until one is inside such a message.
    let store = server.store_path().to_owned();
    let length = std::fs::metadata(store.join("db")).unwrap().len() as usize;
    let found = (1..40).find(|n| {
        std::fs::remove_dir_all(&store).unwrap();
        copy_dir(pristine.path(), &store);
        let file = store.join("db");
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[n * length / 41] ^= 0x04;
        std::fs::write(&file, bytes).unwrap();
        check(&store).1.contains("\"data file\"")
    });
    assert!(
        found.is_some(),
        "no place of 39 was inside a replayed message"
    );

    let refused = server.start_fails().expect("a start is refused");
    assert!(refused.contains("damaged data file"), "{refused}");
    assert!(refused.contains("admin repair"), "{refused}");

    let repaired = server.command().args(["admin", "repair"]).output().unwrap();
    assert!(repaired.status.success(), "{repaired:?}");
    let said = String::from_utf8_lossy(&repaired.stdout).into_owned();
    assert!(said.contains("rewrote its readable records"), "{said}");
    let kept = std::fs::read_dir(store.parent().unwrap())
        .unwrap()
        .flatten()
        .find(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with("store.damaged-")
        })
        .expect("the damaged store is kept beside the repaired one");
    assert!(kept.path().join("db").exists());

    // The repaired store is sound, and the server serves what sled could read.
    let (sound, printed) = check(&store);
    assert_eq!(sound, Some(true), "{printed}");
    server.start_again();
    let messages = server.http().fetch_all(&phone).await;
    assert!(!messages.is_empty() && messages.len() <= 1 + MESSAGES);
}
