//! A full disk: the server refuses new data by name (507 `storage_full`) while it serves reads,
//! says so on `/health`, takes data again once space is freed, shuts down promptly, and never
//! leaves a store that will not open. Each test makes a small tmpfs of its own for the store.

mod common;

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use common::{phone_and_laptop, Options, TestServer};
use roost_protocol::api::QueueBatch;

/// A tmpfs of its own, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` where this machine does not let the test mount one (then the test says so and
    /// passes: it needs root, as in CI).
    fn mount(mib: u64) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("SKIPPED: cannot mount a tmpfs here (the test needs root)");
            return None;
        }
        Some(SmallDisk { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn free_bytes(&self) -> u64 {
        let out = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(self.dir.path())
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Fills the disk with a file until only `leave` bytes are free (0: until it is full).
    fn fill(&self, leave: u64) -> PathBuf {
        use std::io::Write;
        let path = self.path("filler");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while self.free_bytes() > leave {
            let want = (self.free_bytes() - leave).min(chunk.len() as u64) as usize;
            if file.write_all(&chunk[..want]).is_err() {
                break;
            }
        }
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn server_on(disk: &SmallDisk) -> TestServer {
    TestServer::start(Options {
        store: Some(disk.path("store")),
        max_body_bytes: 512 * 1024,
        settings: vec![("ROOST_STORAGE__RESERVE_MIB", "8".into())],
        ..Options::default()
    })
}

async fn health(server: &TestServer) -> (u16, String) {
    let response = server.http().send("GET", "/health", vec![], None).await;
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    (response.status, body["status"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_full_disk_refuses_new_data_by_name_serves_reads_and_recovers_when_space_returns() {
    let Some(disk) = SmallDisk::mount(64) else {
        return;
    };
    let mut server = server_on(&disk);
    let (phone, laptop) = phone_and_laptop(&server, "bob").await;
    let filler = disk.fill(24 * 1024 * 1024);

    // Messages until the disk is down to its reserve.
    let http = server.http();
    let mut accepted = 0;
    let refused = loop {
        let response = http
            .enqueue(
                &laptop,
                &phone.client_id(),
                &vec![accepted as u8; 256 * 1024],
            )
            .await;
        if response.status != 200 {
            break response;
        }
        accepted += 1;
        assert!(accepted < 200, "the disk never filled");
    };
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (507, "storage_full")
    );
    assert!(accepted > 10, "only {accepted} messages taken");
    assert_eq!(health(&server).await, (503, "storage_full".into()));
    // Reads go on.
    let batch: QueueBatch = http.fetch(&phone, 0, 5, 0).await.decode();
    assert_eq!(batch.messages.len(), 5);

    // Space returns: data is taken again, without a restart.
    std::fs::remove_file(filler).unwrap();
    assert_eq!(health(&server).await, (200, "ok".into()));
    let response = http.enqueue(&laptop, &phone.client_id(), b"after").await;
    assert_eq!(response.status, 200);

    // A prompt, clean stop, and every acknowledged message is there after it.
    let stopping = Instant::now();
    assert!(server.terminate().success(), "{}", server.log());
    assert!(stopping.elapsed() < Duration::from_secs(12));
    server.start_again();
    let seen = server.http().fetch_all(&phone).await.len();
    // The "client added" notice, each accepted message and the one after space returned.
    assert_eq!(seen, 1 + accepted + 1);
}

#[tokio::test]
async fn a_store_that_met_a_full_disk_is_reopened_whole_once_space_returns() {
    let Some(disk) = SmallDisk::mount(64) else {
        return;
    };
    let mut server = server_on(&disk);
    let (phone, laptop) = phone_and_laptop(&server, "bob").await;
    let http = server.http();
    assert_eq!(
        http.enqueue(&laptop, &phone.client_id(), b"kept")
            .await
            .status,
        200
    );
    let packages = (0..100)
        .map(|_| phone.connection_package(3600, false).0)
        .collect();
    let published = http.publish(&phone, packages).await;
    assert_eq!(published.status, 200, "{}", server.log());

    // The disk fills to the last byte behind the server's back; discoveries still write (each
    // uses up a package and records it), until the store meets the full disk.
    let filler = disk.fill(0);
    let mut discoveries = 0;
    while http.discover(&phone.user).await.status == 200 {
        discoveries += 1;
        assert!(discoveries < 100, "the store never met the full disk");
    }
    assert!(
        matches!(health(&server).await.0, 503),
        "health must not say ok on a full disk"
    );
    let stopping = Instant::now();
    std::fs::remove_file(&filler).unwrap();
    // The store cannot be mended in place: the server stops by itself, promptly, for a
    // supervisor to start it again.
    let status = server
        .exited_within(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("did not stop; log:\n{}", server.log()));
    assert!(!status.success());
    assert!(stopping.elapsed() < Duration::from_secs(20));

    // A start while the disk is full fails with a clear message, and leaves nothing behind that
    // would keep the store from opening later.
    let filler = disk.fill(0);
    if let Some(stderr) = server.start_fails() {
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!stderr.to_lowercase().contains("corrupt"), "{stderr}");
    }
    std::fs::remove_file(&filler).unwrap();
    server.start_again();
    let batch: QueueBatch = server.http().fetch(&phone, 0, 100, 0).await.decode();
    assert_eq!(batch.messages.len(), 2, "the notice and the kept message");
}

#[tokio::test]
async fn a_server_on_a_full_disk_stops_promptly_when_told() {
    let Some(disk) = SmallDisk::mount(64) else {
        return;
    };
    let mut server = server_on(&disk);
    let (phone, laptop) = phone_and_laptop(&server, "bob").await;
    let packages = (0..20)
        .map(|_| phone.connection_package(3600, false).0)
        .collect();
    assert_eq!(server.http().publish(&phone, packages).await.status, 200);
    let _filler = disk.fill(0);
    // A long poll waiting, a write refused, a store that met the full disk.
    let http = server.http();
    let poll = tokio::spawn(async move { http.fetch(&phone, 100, 10, 30_000).await.status });
    let refused = server
        .http()
        .enqueue(&laptop, &laptop.client_id(), b"x")
        .await;
    assert_eq!(refused.status, 507);
    while server.http().discover(&server.user("bob")).await.status == 200 {}

    let stopping = Instant::now();
    server.terminate();
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "took {:?}",
        stopping.elapsed()
    );
    let _ = poll.await;
}
