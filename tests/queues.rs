//! QS: client queues over real HTTP — order, acknowledgement, access, waiting, durability.

mod common;

use std::time::{Duration, Instant};

use common::{Identity, Options, TestServer, PASSWORD};
use roost_protocol::api::{Enqueued, QueueBatch, QueueItem};

/// alice with two clients, and bob with one.
async fn alice_two_clients_and_bob(server: &TestServer) -> (Identity, Identity, Identity) {
    let http = server.http();
    let mut phone = Identity::new(&server.user("alice"));
    assert_eq!(http.register(&mut phone, None).await.status, 201);
    let mut laptop = Identity::new(&server.user("alice"));
    assert_eq!(http.add_client(&mut laptop, PASSWORD).await.status, 201);
    let mut bob = Identity::new(&server.user("bob"));
    assert_eq!(http.register(&mut bob, None).await.status, 201);
    // The laptop's arrival was announced in the phone's queue; read it (it starts the queue's
    // key chain, as a client would) and clear it.
    let batch: QueueBatch = http.fetch(&phone, 1, 10, 2000).await.decode();
    for message in &batch.messages {
        phone
            .open(roost_protocol::api::QueueKind::Messages, message)
            .unwrap();
    }
    assert_eq!(
        http.ack(&phone, batch.messages.last().unwrap().seq)
            .await
            .status,
        204
    );
    (phone, laptop, bob)
}

fn payloads(batch: &QueueBatch, who: &Identity) -> Vec<(u64, String)> {
    batch
        .messages
        .iter()
        .map(|m| {
            match who
                .open(roost_protocol::api::QueueKind::Messages, m)
                .unwrap()
            {
                QueueItem::FromOwnClient { payload, .. } => {
                    (m.seq, String::from_utf8(payload).unwrap())
                }
                other => panic!("unexpected {other:?}"),
            }
        })
        .collect()
}

#[tokio::test]
async fn messages_arrive_in_order_and_are_gone_once_acknowledged() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let (phone, laptop, _) = alice_two_clients_and_bob(&server).await;
    let first_seq = 2; // seq 1 was the "client added" notice
    for i in 0..30 {
        let enqueued: Enqueued = http
            .enqueue(&laptop, &phone.client_id(), format!("m{i}").as_bytes())
            .await
            .decode();
        assert_eq!(enqueued.seq, first_seq + i);
    }
    let batch: QueueBatch = http.fetch(&phone, 0, 10, 0).await.decode();
    assert!(batch.has_more);
    let expected: Vec<_> = (0..10).map(|i| (first_seq + i, format!("m{i}"))).collect();
    assert_eq!(payloads(&batch, &phone), expected);

    assert_eq!(http.ack(&phone, first_seq + 19).await.status, 204);
    let batch: QueueBatch = http.fetch(&phone, 0, 1000, 0).await.decode();
    assert!(!batch.has_more);
    let expected: Vec<_> = (20..30).map(|i| (first_seq + i, format!("m{i}"))).collect();
    assert_eq!(payloads(&batch, &phone), expected);
    // Fetching from a position skips what comes before it.
    let batch: QueueBatch = http.fetch(&phone, first_seq + 28, 1000, 0).await.decode();
    assert_eq!(
        batch.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![first_seq + 28, first_seq + 29]
    );
}

#[tokio::test]
async fn concurrent_enqueues_get_distinct_increasing_sequence_numbers() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let (phone, laptop, _) = alice_two_clients_and_bob(&server).await;
    let sends = (0..40).map(|i| {
        let (http, laptop, target) = (&http, &laptop, phone.client_id());
        async move {
            let enqueued: Enqueued = http
                .enqueue(laptop, &target, format!("{i}").as_bytes())
                .await
                .decode();
            enqueued.seq
        }
    });
    let mut seqs = futures_util::future::join_all(sends).await;
    seqs.sort();
    assert_eq!(seqs, (2..42).collect::<Vec<_>>());
    let batch: QueueBatch = http.fetch(&phone, 0, 1000, 0).await.decode();
    assert_eq!(
        batch.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        seqs
    );
}

#[tokio::test]
async fn only_a_queues_own_client_can_read_or_acknowledge_it() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let (phone, laptop, bob) = alice_two_clients_and_bob(&server).await;
    http.enqueue(&laptop, &phone.client_id(), b"private")
        .await
        .decode::<Enqueued>();

    let path = format!(
        "{}?from=0",
        roost_protocol::api::qs_queue_messages(&phone.client_id())
    );
    for reader in [&laptop, &bob] {
        let response = http.signed(reader, "GET", &path, vec![]).await;
        assert_eq!(
            (response.status, response.error_code().as_str()),
            (403, "forbidden")
        );
        let ack = roost_protocol::codec::encode(&roost_protocol::api::Ack { up_to: 100 });
        let response = http
            .signed(
                reader,
                "POST",
                &roost_protocol::api::qs_queue_ack(&phone.client_id()),
                ack,
            )
            .await;
        assert_eq!(response.status, 403);
    }
    assert_eq!(http.send("GET", &path, vec![], None).await.status, 401);
    // Another user cannot write into alice's queues either.
    let response = http.enqueue(&bob, &phone.client_id(), b"spam").await;
    assert_eq!(response.status, 403);

    let batch: QueueBatch = http.fetch(&phone, 0, 100, 0).await.decode();
    assert_eq!(payloads(&batch, &phone), vec![(2, "private".to_string())]);
}

#[tokio::test]
async fn a_waiting_client_hears_of_a_message_as_soon_as_it_is_queued() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let (phone, laptop, _) = alice_two_clients_and_bob(&server).await;
    let started = Instant::now();
    let (batch, enqueued_at) = tokio::join!(
        async {
            http.fetch(&phone, 2, 100, 20_000)
                .await
                .decode::<QueueBatch>()
        },
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            http.enqueue(&laptop, &phone.client_id(), b"ping")
                .await
                .decode::<Enqueued>();
            Instant::now()
        }
    );
    let received_at = Instant::now();
    assert_eq!(payloads(&batch, &phone), vec![(2, "ping".to_string())]);
    // The fetch waited for the message, and did not sit out its 20 s.
    assert!(received_at.duration_since(started) >= Duration::from_millis(300));
    assert!(received_at.duration_since(enqueued_at) < Duration::from_secs(2));
}

#[tokio::test]
async fn a_wait_with_nothing_arriving_ends_empty() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let (phone, _, _) = alice_two_clients_and_bob(&server).await;
    let batch: QueueBatch = http.fetch(&phone, 2, 100, 300).await.decode();
    assert!(batch.messages.is_empty());
}

#[tokio::test]
async fn acknowledged_messages_and_acknowledgements_survive_kill_9() {
    let mut server = TestServer::start(Options::default());
    let (phone, laptop, _) = alice_two_clients_and_bob(&server).await;
    let http = server.http();
    for i in 0..50 {
        http.enqueue(&laptop, &phone.client_id(), format!("m{i}").as_bytes())
            .await
            .decode::<Enqueued>();
    }
    assert_eq!(http.ack(&phone, 11).await.status, 204);

    server.restart(); // kill -9, then start on the same store
    let http = server.http();
    let batch: QueueBatch = http.fetch(&phone, 0, 1000, 0).await.decode();
    let expected: Vec<_> = (10..50).map(|i| (2 + i, format!("m{i}"))).collect();
    assert_eq!(payloads(&batch, &phone), expected);
    // Sequence numbers continue; nothing is reused.
    let next: Enqueued = http
        .enqueue(&laptop, &phone.client_id(), b"after")
        .await
        .decode();
    assert_eq!(next.seq, 52);
}

#[tokio::test]
async fn an_idle_queue_actor_is_retired_and_its_queue_lives_on() {
    let server = TestServer::start(Options {
        idle_secs: 1,
        log: "info,roost_actors=trace",
        ..Options::default()
    });
    let http = server.http();
    let (phone, laptop, _) = alice_two_clients_and_bob(&server).await;
    http.enqueue(&laptop, &phone.client_id(), b"before")
        .await
        .decode::<Enqueued>();
    assert!(
        common::eventually(
            || server.log().contains("retiring an idle actor"),
            Duration::from_secs(5)
        )
        .await,
        "no actor was retired"
    );
    let next: Enqueued = http
        .enqueue(&laptop, &phone.client_id(), b"after")
        .await
        .decode();
    assert_eq!(next.seq, 3);
    let batch: QueueBatch = http.fetch(&phone, 0, 100, 0).await.decode();
    assert_eq!(
        payloads(&batch, &phone),
        vec![(2, "before".into()), (3, "after".into())]
    );
}

#[tokio::test]
async fn queue_contents_are_not_stored_in_plaintext() {
    let mut server = TestServer::start(Options::default());
    let http = server.http();
    let (phone, laptop, _) = alice_two_clients_and_bob(&server).await;
    let marker = "PLAINTEXT-MARKER-7f3a9c";
    http.enqueue(&laptop, &phone.client_id(), marker.as_bytes())
        .await
        .decode::<Enqueued>();
    assert!(server.terminate().success());
    let files = server.store_files();
    assert!(files.iter().any(|(path, _)| path.ends_with("db")));
    for (path, bytes) in files {
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "{} holds the plaintext",
            path.display()
        );
    }
}

#[tokio::test]
async fn every_acknowledged_enqueue_survives_a_kill_9_in_the_middle_of_a_burst() {
    let mut server = TestServer::start(Options::default());
    let (phone, laptop, _) = alice_two_clients_and_bob(&server).await;
    let http = std::sync::Arc::new(server.http());
    let laptop = std::sync::Arc::new(laptop);
    let target = phone.client_id();
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut senders = Vec::new();
    for worker in 0..8 {
        let (http, laptop, acked_tx) = (http.clone(), laptop.clone(), acked_tx.clone());
        senders.push(tokio::spawn(async move {
            for i in 0..200 {
                let text = format!("w{worker}-{i}");
                let body = roost_protocol::codec::encode(&roost_protocol::api::Enqueue {
                    op: roost_protocol::OpId::random(),
                    payload: text.clone().into_bytes(),
                });
                let path = roost_protocol::api::qs_queue_messages(&target);
                let auth = roost_protocol::auth::RequestSignature::sign(
                    &laptop.key,
                    laptop.client_id(),
                    "POST",
                    &path,
                    &body,
                    roost_protocol::ids::now_millis(),
                );
                let sent = http
                    .http
                    .post(format!("{}{path}", http.base))
                    .header("authorization", auth.to_header())
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status() == 200 => {
                        let bytes = response.bytes().await.unwrap();
                        let enqueued: Enqueued = roost_protocol::codec::decode(&bytes).unwrap();
                        let _ = acked_tx.send((enqueued.seq, text));
                    }
                    // The server died under us: what was not acknowledged may be lost.
                    _ => return,
                }
            }
        }));
    }
    drop(acked_tx);
    // Let the burst get going, then pull the plug.
    let mut acked = Vec::new();
    while acked.len() < 100 {
        acked.push(acked_rx.recv().await.expect("enqueues are acknowledged"));
    }
    server.kill();
    for sender in senders {
        let _ = sender.await;
    }
    while let Ok(entry) = acked_rx.try_recv() {
        acked.push(entry);
    }

    server.start_again();
    let batch: QueueBatch = server.http().fetch(&phone, 0, 1000, 0).await.decode();
    let stored: std::collections::HashMap<u64, String> =
        payloads(&batch, &phone).into_iter().collect();
    for (seq, text) in &acked {
        assert_eq!(
            stored.get(seq),
            Some(text),
            "acknowledged message {seq} was lost"
        );
    }
    // Sequence numbers stay strictly increasing with no gaps among what was kept.
    let seqs: Vec<u64> = batch.messages.iter().map(|m| m.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

#[tokio::test]
async fn a_request_replayed_after_a_restart_is_refused_and_queues_nothing_twice() {
    use roost_protocol::{api, auth::RequestSignature, codec, ids::now_millis};
    let mut server = TestServer::start(Options::default());
    let (phone, laptop) = common::phone_and_laptop(&server, "alice").await;
    let path = api::qs_queue_messages(&phone.client_id());
    let body = codec::encode(&api::Enqueue {
        op: roost_protocol::OpId::random(),
        payload: b"once".to_vec(),
    });
    let header = RequestSignature::sign(
        &laptop.key,
        laptop.client_id(),
        "POST",
        &path,
        &body,
        now_millis(),
    )
    .to_header();
    let send = |http: common::Raw| {
        let (path, body, header) = (path.clone(), body.clone(), header.clone());
        async move { http.send("POST", &path, body, Some(header)).await.status }
    };
    assert_eq!(send(server.http()).await, 200);
    assert_eq!(send(server.http()).await, 401);
    server.restart();
    assert_eq!(send(server.http()).await, 401);
    let batch: QueueBatch = server.http().fetch(&phone, 0, 10, 0).await.decode();
    // The notice that the laptop was added, and the message once.
    assert_eq!(batch.messages.len(), 2);
}

#[tokio::test]
async fn a_fetch_acknowledges_what_was_read_before_it_in_the_same_request() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let (phone, laptop, _) = alice_two_clients_and_bob(&server).await;
    for i in 0..3 {
        http.enqueue(&laptop, &phone.client_id(), format!("m{i}").as_bytes())
            .await
            .decode::<Enqueued>();
    }
    let first: QueueBatch = http.fetch(&phone, 0, 2, 0).await.decode();
    assert_eq!(
        payloads(&first, &phone),
        vec![(2, "m0".into()), (3, "m1".into())]
    );
    let query = roost_protocol::api::FetchQuery {
        from: 4,
        ack: Some(3),
        ..Default::default()
    };
    let next: QueueBatch = http.fetch_with(&phone, query).await.decode();
    assert_eq!(payloads(&next, &phone), vec![(4, "m2".into())]);
    // What the fetch acknowledged is gone: read from the start, the queue begins after it.
    let everything: QueueBatch = http.fetch(&phone, 0, 100, 0).await.decode();
    let seqs: Vec<u64> = everything.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [4]);
}
