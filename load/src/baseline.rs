//! The floors the server's figures are read against, measured in the same run: a bare
//! actix-web endpoint that takes and returns the same payload (the HTTP floor), and raw sled
//! insert + flush (the durability floor).

use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};

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

/// Raw sled insert + flush of `payload` bytes, one writer, for `duration`: operations per second.
pub fn sled_floor(payload: usize, duration: Duration) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = sled::open(dir.path()).expect("open sled");
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < duration {
        db.insert(n.to_be_bytes(), vec![7u8; payload])
            .expect("insert");
        db.flush().expect("flush");
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}
