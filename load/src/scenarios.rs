//! The traffic: users registered through the client library, then driven over real HTTP.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use roost_client::Client;
use roost_protocol::{api::QueueItem, UserName};

use crate::{
    drive::{drive, Driven},
    stats::{Latencies, Timeline},
};

const PASSWORD: &str = "load generator password";

/// Makes users and clients, each with a state directory of its own.
pub struct Population {
    url: String,
    dir: tempfile::TempDir,
    next: AtomicU64,
}

impl Population {
    pub fn new(url: &str) -> Population {
        Population {
            url: url.to_owned(),
            dir: tempfile::tempdir().expect("temp dir"),
            next: AtomicU64::new(0),
        }
    }

    fn state_dir(&self) -> PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.dir.path().join(format!("client-{n}"))
    }

    /// A new user (named `prefix` and a number) with `clients` clients.
    pub async fn user(&self, prefix: &str, clients: usize) -> Result<Vec<Client>, String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let domain = "localhost";
        let user: UserName = format!("{prefix}{n}@{domain}")
            .parse()
            .map_err(|e| format!("{e}"))?;
        let first = Client::register(self.state_dir(), &self.url, &user, PASSWORD, None)
            .await
            .map_err(|e| format!("register {user}: {e}"))?;
        let mut all = vec![first];
        for _ in 1..clients {
            let client = Client::add_client(self.state_dir(), &self.url, &user, PASSWORD)
                .await
                .map_err(|e| format!("add a client of {user}: {e}"))?;
            all.push(client);
        }
        Ok(all)
    }

    /// `count` users of `clients` clients each, made `parallel` at a time.
    pub async fn users(
        &self,
        prefix: &str,
        count: usize,
        clients: usize,
        parallel: usize,
    ) -> Result<Vec<Vec<Client>>, String> {
        let mut made = Vec::with_capacity(count);
        while made.len() < count {
            let batch = parallel.min(count - made.len());
            let users = (0..batch).map(|_| self.user(prefix, clients));
            for user in futures_util::future::join_all(users).await {
                made.push(user?);
            }
        }
        Ok(made)
    }
}

/// What the durable queue path did.
pub struct QueueFigures {
    pub enqueued: Driven,
    pub delivered: u64,
    /// From the sender's request to the waiting receiver having the message.
    pub delivery: Latencies,
    pub delivered_timeline: Timeline,
}

/// `pairs` users, each sending from one client to its other client (the only queue a client
/// may write to is one of its own user's), while the receiving clients long-poll and
/// acknowledge. With `rate`, sends are paced to that many per second in all; else every sender
/// sends as fast as it can (closed loop).
pub async fn queue(
    pairs: &[Vec<Client>],
    duration: Duration,
    payload: usize,
    rate: Option<u64>,
) -> QueueFigures {
    let started = Instant::now();
    let stop_receiving = AtomicBool::new(false);
    let receivers = pairs.iter().map(|pair| {
        let receiver = &pair[1];
        let stop = &stop_receiving;
        async move {
            let mut latencies = Latencies::default();
            let mut timeline = Timeline::default();
            let mut from = 1;
            let id = receiver.client_id();
            loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let batch = receiver
                    .server()
                    .fetch(
                        receiver.signer(),
                        &id,
                        from,
                        1000,
                        Duration::from_millis(500),
                    )
                    .await;
                let Ok(batch) = batch else { continue };
                let now = started.elapsed();
                for message in &batch.messages {
                    if let Ok(QueueItem::FromOwnClient { payload, .. }) =
                        message.open(&receiver.identity().queue_key, &id)
                    {
                        let nanos = u64::from_be_bytes(payload[..8].try_into().unwrap_or([0; 8]));
                        latencies.push(now.saturating_sub(Duration::from_nanos(nanos)));
                        timeline.count(now);
                    }
                }
                if let Some(last) = batch.messages.last() {
                    from = last.seq + 1;
                    let _ = receiver
                        .server()
                        .ack(receiver.signer(), &id, last.seq)
                        .await;
                }
            }
            (latencies, timeline)
        }
    });
    let message = |started: Instant| {
        let mut body = vec![7u8; payload.max(8)];
        let nanos = started.elapsed().as_nanos() as u64;
        body[..8].copy_from_slice(&nanos.to_be_bytes());
        body
    };
    let senders = async {
        let enqueued = match rate {
            None => {
                drive(pairs.len(), duration, |worker| {
                    let pair = &pairs[worker];
                    let body = message(started);
                    async move {
                        pair[0]
                            .send_to_own_client(pair[1].client_id(), body)
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    }
                })
                .await
            }
            Some(rate) => paced(pairs, duration, rate, started, &message).await,
        };
        // Give the last messages time to arrive, then stop the receivers.
        tokio::time::sleep(Duration::from_millis(800)).await;
        stop_receiving.store(true, Ordering::Relaxed);
        enqueued
    };
    let (enqueued, received) =
        futures_util::future::join(senders, futures_util::future::join_all(receivers)).await;
    let mut delivery = Latencies::default();
    let mut delivered_timeline = Timeline::default();
    for (latencies, timeline) in received {
        delivery.extend(latencies);
        delivered_timeline.merge(&timeline);
    }
    QueueFigures {
        delivered: delivery.len() as u64,
        enqueued,
        delivery,
        delivered_timeline,
    }
}

/// Open loop: one send every `1/rate` s, spread over the pairs, each in its own task so that a
/// slow answer does not hold back the next send.
async fn paced(
    pairs: &[Vec<Client>],
    duration: Duration,
    rate: u64,
    started: Instant,
    message: &impl Fn(Instant) -> Vec<u8>,
) -> Driven {
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let begun = Instant::now();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sends = futures_util::stream::FuturesUnordered::new();
    let mut driven = Driven::default();
    let record =
        |driven: &mut Driven, (outcome, latency): (Result<u64, roost_client::Error>, Duration)| {
            match outcome {
                Ok(_) => {
                    driven.ok += 1;
                    driven.latencies.push(latency);
                }
                Err(e) => {
                    driven.failed += 1;
                    driven.first_error.get_or_insert(e.to_string());
                }
            }
        };
    let mut n = 0usize;
    while begun.elapsed() < duration {
        ticker.tick().await;
        let pair = &pairs[n % pairs.len()];
        n += 1;
        let body = message(started);
        let send_begun = Instant::now();
        sends.push(async move {
            let outcome = pair[0].send_to_own_client(pair[1].client_id(), body).await;
            (outcome, send_begun.elapsed())
        });
        // Record finished sends without waiting for the rest.
        while let Some(Some(finished)) =
            futures_util::FutureExt::now_or_never(futures_util::StreamExt::next(&mut sends))
        {
            record(&mut driven, finished);
        }
    }
    while let Some(finished) = futures_util::StreamExt::next(&mut sends).await {
        record(&mut driven, finished);
    }
    driven.elapsed = begun.elapsed();
    driven
}

/// One user with `members` clients in one group (the first client creates it, adding the
/// others); each round the first client sends a message and the time until the last member's
/// queue has it is taken.
pub async fn fanout(
    population: &Population,
    members: usize,
    rounds: usize,
) -> Result<Latencies, String> {
    let clients = group_of(population, members).await?;
    let mut figures = Latencies::default();
    for round in 0..rounds {
        let waits = clients[1..].iter().map(|member| async move {
            let id = member.client_id();
            let batch = member
                .server()
                .fetch(member.signer(), &id, 1, 1, Duration::from_secs(20))
                .await;
            let arrived = Instant::now();
            let seq = batch.ok().and_then(|b| b.messages.first().map(|m| m.seq));
            (member, id, seq, arrived)
        });
        let waits = futures_util::future::join_all(waits);
        let send = async {
            // Let every member's long poll reach the server first.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let begun = Instant::now();
            clients[0]
                .send_to_group("load", &format!("round {round}"))
                .await
                .map(|_| begun)
        };
        let (arrivals, begun) = futures_util::future::join(waits, send).await;
        let begun = begun.map_err(|e| format!("send: {e}"))?;
        let mut last = Duration::ZERO;
        for (member, id, seq, arrived) in arrivals {
            let seq = seq.ok_or("a member received nothing")?;
            last = last.max(arrived.saturating_duration_since(begun));
            let _ = member.server().ack(member.signer(), &id, seq).await;
        }
        figures.push(last);
    }
    Ok(figures)
}

/// One user with `members` clients, all in the group "load" (the first client made it).
async fn group_of(population: &Population, members: usize) -> Result<Vec<Client>, String> {
    let clients = population.user("group", members).await?;
    clients[0]
        .create_group("load")
        .await
        .map_err(|e| format!("create the group: {e}"))?;
    let joins = clients[1..].iter().map(|c| c.sync());
    for joined in futures_util::future::join_all(joins).await {
        joined.map_err(|e| format!("join: {e}"))?;
    }
    Ok(clients)
}

/// Sustained chat in a group of `members`: `senders` of them send as fast as they can for
/// `duration`, each send after syncing what the others sent (as the client always does).
pub async fn group_chat(
    population: &Population,
    members: usize,
    senders: usize,
    duration: Duration,
) -> Result<Driven, String> {
    let clients = group_of(population, members).await?;
    Ok(drive(senders.min(members), duration, |worker| {
        let client = &clients[worker];
        async move {
            client
                .send_to_group("load", "sustained")
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await)
}

/// `count` pairs of users (two clients each) connect, one pair after the other: `connect`,
/// then the responder's `requests` and `accept`. Latency of each whole establishment.
pub async fn connections(population: &Population, count: usize) -> Result<Driven, String> {
    let pairs = population.users("conn", count * 2, 2, 4).await?;
    let started = Instant::now();
    let mut driven = Driven::default();
    for pair in pairs.chunks(2) {
        let (initiator, responder) = (&pair[0][0], &pair[1][0]);
        let begun = Instant::now();
        let outcome = async {
            initiator
                .connect(responder.user())
                .await
                .map_err(|e| e.to_string())?;
            let requests = responder
                .connection_requests()
                .await
                .map_err(|e| e.to_string())?;
            let request = requests.received.first().ok_or("no request arrived")?;
            responder
                .accept(&request.id)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        }
        .await;
        match outcome {
            Ok(()) => {
                driven.ok += 1;
                driven.latencies.push(begun.elapsed());
            }
            Err(e) => {
                driven.failed += 1;
                driven.first_error.get_or_insert(e);
            }
        }
    }
    driven.elapsed = started.elapsed();
    Ok(driven)
}

/// Fills one client's queue with `count` messages of `payload` bytes, `parallel` at a time.
pub async fn fill_queue(
    pair: &[Client],
    count: u64,
    payload: usize,
    parallel: usize,
) -> Result<(), String> {
    let next = AtomicU64::new(0);
    let workers = (0..parallel).map(|_| async {
        while next.fetch_add(1, Ordering::Relaxed) < count {
            pair[0]
                .send_to_own_client(pair[1].client_id(), vec![7; payload])
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(())
    });
    for outcome in futures_util::future::join_all(workers).await {
        outcome?;
    }
    Ok(())
}
