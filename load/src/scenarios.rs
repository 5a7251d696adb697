//! The traffic: users registered through the client library, then driven over real HTTP.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use roost_client::{Client, QueueKind, QueuePosition};
use roost_protocol::{
    api::{QueueItem, QueueMessage},
    crypto::CryptoError,
    ds::GroupDelivery,
    federation::Resolver,
    UserName,
};

use crate::{
    drive::{drive, Driven},
    stats::{Latencies, Timeline},
};

const PASSWORD: &str = "load generator password";

/// The name of the group the fan-out and chat scenarios use.
const GROUP: &str = "load";

/// How long relays between two servers may take to settle before a scenario gives up.
const SETTLE: Duration = Duration::from_secs(20);

/// A client's message queue read by hand, in order: the queue's key chain starts where the
/// library's last read left it, and [`RawReader::save`] leaves the library's position where
/// this read ended, so that the next reader (the library, or another scenario) can go on.
struct RawReader<'a> {
    client: &'a Client,
    position: QueuePosition,
}

impl<'a> RawReader<'a> {
    fn new(client: &'a Client) -> Self {
        let position = client.device().store().queue_position(QueueKind::Messages);
        RawReader {
            client,
            position: position.unwrap_or_default(),
        }
    }

    /// Where to fetch from: after what the library or this reader read (the library leaves its
    /// last batch for its next fetch to acknowledge).
    fn next_from(&self) -> u64 {
        self.position.next_from().max(1)
    }

    fn open(&mut self, message: &QueueMessage) -> Result<QueueItem, CryptoError> {
        let identity = self.client.identity();
        let chain = &mut self.position.chain;
        let item = message.open(&identity.queue_key, &identity.client_id, chain);
        self.position.received = Some(message.seq);
        item
    }

    /// Saves how far this reader read (its acknowledgements left for the library to repeat).
    fn save(self) -> Result<(), String> {
        let position = QueuePosition {
            acked: None,
            ..self.position
        };
        let store = self.client.device().store();
        store
            .set_queue_position(QueueKind::Messages, &position)
            .map_err(|e| format!("saving the queue position: {e}"))
    }
}

/// Makes users and clients of one server, each client with a state directory of its own.
pub struct Population {
    url: String,
    domain: String,
    /// Where the clients find other domains' servers.
    resolver: Resolver,
    dir: tempfile::TempDir,
    next: AtomicU64,
}

impl Population {
    /// Users `NAME@domain` of the server at `url`, whose clients reach other domains as
    /// `resolver` says.
    pub fn new(url: &str, domain: &str, resolver: Resolver) -> Population {
        Population {
            url: url.to_owned(),
            domain: domain.to_owned(),
            resolver,
            dir: tempfile::tempdir().expect("temp dir"),
            next: AtomicU64::new(0),
        }
    }

    fn state_dir(&self) -> PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.dir.path().join(format!("client-{n}"))
    }

    /// A new user (named `prefix` and a number) with `clients` clients, each of which has
    /// published its first connection and key packages.
    pub async fn user(&self, prefix: &str, clients: usize) -> Result<Vec<Client>, String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let user: UserName = format!("{prefix}{n}@{}", self.domain)
            .parse()
            .map_err(|e| format!("{e}"))?;
        let mut all = Vec::with_capacity(clients);
        for i in 0..clients.max(1) {
            let client = if i == 0 {
                Client::register(self.state_dir(), &self.url, &user, PASSWORD, None)
                    .await
                    .map_err(|e| format!("register {user}: {e}"))?
            } else {
                Client::add_client(self.state_dir(), &self.url, &user, PASSWORD)
                    .await
                    .map_err(|e| format!("add a client of {user}: {e}"))?
            };
            if let Some(Err(e)) = client.initial_packages() {
                return Err(format!("connection packages of {user}: {e}"));
            }
            if let Some(Err(e)) = client.initial_key_packages() {
                return Err(format!("key packages of {user}: {e}"));
            }
            all.push(
                client
                    .with_resolver(self.resolver.clone())
                    .with_tokens_bought_ahead(),
            );
        }
        Ok(all)
    }

    /// `count` users of one client each, registered `parallel` at a time and let go at once
    /// (their local state too): what stays is what the server keeps of an idle client.
    pub async fn idle_users(
        &self,
        prefix: &str,
        count: usize,
        parallel: usize,
    ) -> Result<(), String> {
        let started = AtomicU64::new(0);
        let workers = (0..parallel).map(|_| async {
            while started.fetch_add(1, Ordering::Relaxed) < count as u64 {
                let clients = self.user(prefix, 1).await?;
                let dirs: Vec<PathBuf> = clients.iter().map(|c| c.state_dir().to_owned()).collect();
                drop(clients);
                for dir in dirs {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
            Ok::<_, String>(())
        });
        for outcome in futures_util::future::join_all(workers).await {
            outcome?;
        }
        Ok(())
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
            let id = receiver.client_id();
            let mut reader = RawReader::new(receiver);
            let mut from = reader.next_from();
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
                    if let Ok(QueueItem::FromOwnClient { payload, .. }) = reader.open(message) {
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
            if let Err(e) = reader.save() {
                eprintln!("roost-load: {e}");
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

/// One user with `members` clients, all in the group [`GROUP`] (the first client made it).
pub async fn one_user_group(
    population: &Population,
    members: usize,
) -> Result<Vec<Client>, String> {
    let clients = population.user("group", members).await?;
    clients[0]
        .groups()
        .create(GROUP)
        .await
        .map_err(|e| format!("create the group: {e}"))?;
    let joins = clients[1..].iter().map(|c| c.sync());
    for joined in futures_util::future::join_all(joins).await {
        joined.map_err(|e| format!("join: {e}"))?;
    }
    Ok(clients)
}

/// A group across two servers: a user of `home` with one client creates the group [`GROUP`]
/// on its DS and adds a user of `guests` with `members − 1` clients, once the two are
/// connected. Answers the members, the creator first, once every one of them is in the group
/// and no relay is still on its way.
pub async fn federated_group(
    home: &Population,
    guests: &Population,
    members: usize,
) -> Result<Vec<Client>, String> {
    let owner = home.user("fedgroup", 1).await?;
    let guest = guests.user("fedgroup", members.max(2) - 1).await?;
    let clients: Vec<Client> = owner.into_iter().chain(guest).collect();
    let (creator, guest) = (&clients[0], &clients[1]);
    let all: Vec<&Client> = clients.iter().collect();
    connect(creator, guest)
        .await
        .map_err(|e| format!("connect {} with {}: {e}", creator.user(), guest.user()))?;
    // Both users' clients hold the other's friendship token (the creator needs the guest's to
    // add them; the guest's clients receive the creator's last).
    settle(&all, "the friendship tokens", async || {
        for client in &all {
            let contacts = client.contacts().list().await.map_err(|e| e.to_string())?;
            if !contacts.iter().any(|c| c.peer_token.is_some()) {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    creator
        .groups()
        .create(GROUP)
        .await
        .map_err(|e| format!("create the group: {e}"))?;
    let added = creator
        .groups()
        .add(GROUP, guest.user())
        .await
        .map_err(|e| format!("add {} to the group: {e}", guest.user()))?;
    if added != clients.len() - 1 {
        return Err(format!(
            "added {added} clients of {} instead of {}",
            guest.user(),
            clients.len() - 1
        ));
    }
    // The Welcomes are the last relays to the guest's server: once every client took its
    // own, nothing else is on its way there.
    settle(&all, "the Welcomes", async || {
        for client in &all {
            let groups = client.groups().list().await.map_err(|e| e.to_string())?;
            if !groups
                .iter()
                .any(|g| g.name == GROUP && g.members == clients.len())
            {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    Ok(clients)
}

/// `initiator`'s user connects with `responder`'s: `connect`, then the responder's `requests`
/// and `accept`.
pub async fn connect(initiator: &Client, responder: &Client) -> Result<(), String> {
    initiator
        .connections()
        .connect(responder.user())
        .await
        .map_err(|e| e.to_string())?;
    let requests = responder
        .connections()
        .requests()
        .await
        .map_err(|e| e.to_string())?;
    let request = requests
        .received
        .iter()
        .find(|r| r.from() == initiator.user())
        .ok_or("no request arrived")?;
    responder
        .connections()
        .accept(&request.id)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Syncs every client until `done` holds (relays between servers arrive a moment after the
/// DS answered), at most [`SETTLE`]; `what` names what is awaited, for the error.
async fn settle(
    clients: &[&Client],
    what: &str,
    mut done: impl AsyncFnMut() -> Result<bool, String>,
) -> Result<(), String> {
    let deadline = Instant::now() + SETTLE;
    loop {
        for client in clients {
            let report = client
                .sync()
                .await
                .map_err(|e| format!("sync while awaiting {what}: {e}"))?;
            if let Some(failed) = report.failed.first() {
                return Err(format!("sync while awaiting {what}: {failed}"));
            }
        }
        if done().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{what} did not arrive within {SETTLE:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `members[0]` sends into the group [`GROUP`] (all of `members` in it, nothing else on its
/// way to them); each round the time until the last other member's queue has the message is
/// taken.
pub async fn fanout(members: &[Client], rounds: usize) -> Result<Latencies, String> {
    let sender = &members[0];
    let group_id = sender
        .groups()
        .find(GROUP)
        .map_err(|e| format!("the group: {e}"))?
        .group_id;
    let mut figures = Latencies::default();
    let mut readers: Vec<RawReader> = members[1..].iter().map(RawReader::new).collect();
    for round in 0..rounds {
        let waits = readers.iter_mut().map(|reader| {
            let group_id = &group_id;
            async move {
                let member = reader.client;
                let id = member.client_id();
                let batch = member
                    .server()
                    .fetch(member.signer(), &id, reader.next_from(), 1, SETTLE)
                    .await
                    .map_err(|e| format!("fetch: {e}"))?;
                let arrived = Instant::now();
                let message = batch.messages.first().ok_or("a member received nothing")?;
                // Only the round's message may be counted: anything else would be a leftover.
                match reader.open(message) {
                    Ok(QueueItem::Group(GroupDelivery::Message { group_id: of, .. }))
                        if of == *group_id => {}
                    _ => return Err("a member received something else first".to_owned()),
                }
                Ok::<_, String>((member, id, message.seq, arrived))
            }
        });
        let waits = futures_util::future::join_all(waits);
        let send = async {
            // Let every member's long poll reach the server first.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let begun = Instant::now();
            sender
                .groups()
                .send(GROUP, &format!("round {round}"))
                .await
                .map(|_| begun)
        };
        let (arrivals, begun) = futures_util::future::join(waits, send).await;
        let begun = begun.map_err(|e| format!("send: {e}"))?;
        let mut last = Duration::ZERO;
        for arrival in arrivals {
            let (member, id, seq, arrived) = arrival?;
            last = last.max(arrived.saturating_duration_since(begun));
            let _ = member.server().ack(member.signer(), &id, seq).await;
        }
        figures.push(last);
    }
    for reader in readers {
        reader.save()?;
    }
    Ok(figures)
}

/// Sustained chat in the group [`GROUP`] of `members`: the first `senders` of them send as
/// fast as they can for `duration`, each send after syncing what the others sent (as the
/// client always does).
pub async fn group_chat(members: &[Client], senders: usize, duration: Duration) -> Driven {
    drive(senders.min(members.len()), duration, |worker| {
        let client = &members[worker];
        async move {
            client
                .groups()
                .send(GROUP, "sustained")
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await
}

/// Chat between two connected users for `duration`, one message at a time: `from` sends into
/// their connection, then `to` syncs until it has the message; latency from the send call on.
pub async fn pair_chat(from: &Client, to: &Client, duration: Duration) -> Driven {
    drive(1, duration, |_| async {
        let text = format!("chat {:x}", rand::random::<u64>());
        from.chat()
            .send(to.user(), &text)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let deadline = Instant::now() + SETTLE;
        while Instant::now() < deadline {
            let report = to
                .sync_waiting(Duration::from_secs(1))
                .await
                .map_err(|e| format!("sync: {e}"))?;
            if report.received.iter().any(|(_, m)| m.text == text) {
                return Ok(());
            }
        }
        Err(format!("a message did not arrive within {SETTLE:?}"))
    })
    .await
}

/// How long until `member`'s queue holds `expected` messages from its first unacknowledged
/// one on (long-polling, at most `limit`): for relays that go on after the senders stopped.
pub async fn queue_filled(
    member: &Client,
    expected: u64,
    limit: Duration,
) -> Result<Duration, String> {
    if expected == 0 {
        return Ok(Duration::ZERO);
    }
    let begun = Instant::now();
    let id = member.client_id();
    let fetch = |from: u64| async move {
        let wait = limit.saturating_sub(begun.elapsed()).min(SETTLE);
        member
            .server()
            .fetch(member.signer(), &id, from, 1, wait)
            .await
            .map_err(|e| format!("fetch: {e}"))
            .map(|batch| batch.messages.first().map(|m| m.seq))
    };
    let mut first = None;
    while begun.elapsed() < limit {
        let Some(from) = first else {
            first = fetch(1).await?;
            continue;
        };
        let last = from + expected - 1;
        if fetch(last).await?.is_some_and(|seq| seq >= last) {
            return Ok(begun.elapsed());
        }
    }
    Err(format!(
        "{expected} messages did not reach a queue within {limit:?}"
    ))
}

/// `count` pairs of users (two clients each; the initiator a user of `initiators`, the
/// responder one of `responders`) connect, one pair after the other: `connect`, then the
/// responder's `requests` and `accept`. Latency of each whole establishment.
pub async fn connections(
    initiators: &Population,
    responders: &Population,
    count: usize,
) -> Result<Driven, String> {
    let initiating = initiators.users("conn", count, 2, 4).await?;
    let responding = responders.users("conn", count, 2, 4).await?;
    let started = Instant::now();
    let mut driven = Driven::default();
    for (initiator, responder) in initiating.iter().zip(&responding) {
        let begun = Instant::now();
        match connect(&initiator[0], &responder[0]).await {
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
