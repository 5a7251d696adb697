//! The floors the server's figures are read against, measured in the same run: a bare
//! actix-web endpoint that takes and returns the same payload (the HTTP floor), raw sled
//! insert + flush + fsync (the durability floor), and the cryptography the protocol asks of the
//! server for each queued message (the crypto floor).

use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};

use roost_protocol::{
    api::{QueueItem, QueueMessage},
    auth::RequestSignature,
    ids::now_millis,
    queue::{QueueChain, CHAIN_LENGTH},
    ClientId, HpkeSecretKey, SigningKey,
};

use crate::drive::{drive, Driven};

/// Starts the bare endpoint on a free loopback port, on its own thread; answers its URL.
pub fn start_echo_server() -> String {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(|| {
                App::new().route(
                    "/echo",
                    web::post().to(|body: web::Bytes| async move { HttpResponse::Ok().body(body) }),
                )
            })
            .workers(2)
            .bind(("127.0.0.1", 0))
            .expect("bind the baseline server");
            let port = server.addrs()[0].port();
            sender.send(port).expect("report the port");
            let _ = server.run().await;
        })
    });
    let port = receiver.recv().expect("the baseline server starts");
    format!("http://127.0.0.1:{port}/echo")
}

/// POSTs `payload` to the bare endpoint from `concurrency` workers for `duration`.
pub async fn http_floor(
    url: &str,
    payload: usize,
    concurrency: usize,
    duration: Duration,
) -> Driven {
    let client = reqwest::Client::new();
    let body = vec![7u8; payload];
    drive(concurrency, duration, |_| {
        let request = client.post(url).body(body.clone());
        async move {
            let response = request.send().await.map_err(|e| e.to_string())?;
            response.bytes().await.map_err(|e| e.to_string())?;
            Ok(())
        }
    })
    .await
}

/// Raw sled insert + flush + fsync of `payload` bytes — durable as the server's writes are —
/// one writer, for `duration`: operations per second.
pub fn sled_floor(payload: usize, duration: Duration) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = sled::open(dir.path()).expect("open sled");
    let data = std::fs::File::open(dir.path().join("db")).expect("sled's data file");
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < duration {
        db.insert(n.to_be_bytes(), vec![7u8; payload])
            .expect("insert");
        db.flush().expect("flush");
        data.sync_data().expect("fsync");
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// What the server's cryptography alone allows, on one thread, for `duration`: per queued
/// message it checks the sender's request signature and seals the message under the receiving
/// queue's key chain (one HPKE seal to the client's queue key starts each chain of
/// `CHAIN_LENGTH` messages; the receiver's fetch and acknowledgement add a signature check
/// each, shared by the messages they carry). Messages per second.
pub fn crypto_floor(payload: usize, duration: Duration) -> f64 {
    let sender = SigningKey::generate();
    let verifying_key = sender.verifying_key();
    let (_, queue_key) = HpkeSecretKey::generate();
    let client = ClientId::random();
    let body = vec![7u8; payload];
    let item = QueueItem::FromOwnClient {
        sender: client,
        payload: body.clone(),
    };
    let started = Instant::now();
    let mut n = 0u64;
    let mut chain = QueueChain::start(1);
    while started.elapsed() < duration {
        let now = now_millis();
        let signature = RequestSignature::sign(&sender, client, "POST", "/queue", &body, now);
        signature
            .verify(&verifying_key, "POST", "/queue", &body, now)
            .expect("verifies");
        let starts = (n % CHAIN_LENGTH == 0).then_some(&queue_key);
        QueueMessage::seal(&chain, starts, &client, &item).expect("seals");
        chain = chain.next();
        n += 1;
    }
    // Signing is the client's work: count only the server's part of the time.
    let signing = {
        let begun = Instant::now();
        for _ in 0..1000 {
            RequestSignature::sign(&sender, client, "POST", "/queue", &body, now_millis());
        }
        begun.elapsed().as_secs_f64() / 1000.0
    };
    let server_time = started.elapsed().as_secs_f64() - signing * n as f64;
    n as f64 / server_time.max(1e-9)
}
