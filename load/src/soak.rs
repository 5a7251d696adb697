//! The crash soak: one user chats with another without pause while the server is killed with
//! SIGKILL at random moments and started again on the same store, many times over. Then both
//! clients sync until every change settles, and the soak counts what a user would notice:
//! messages the server acknowledged that never arrived (lost), arrived twice (duplicated) or out
//! of the order they were sent, and starts that failed (the store did not open).
//!
//! A message whose send ended without an answer (`unconfirmed`) was kept by the client and is
//! settled by its next sync: it must arrive once too. A send refused before the client kept it
//! (the server was down when it synced first) sent nothing and must not arrive.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use roost_client::Client;

use crate::{
    scenarios::{connect, Population},
    server::RoostProcess,
    stats::Latencies,
};

/// What one soak saw.
pub struct SoakFigures {
    pub kills: usize,
    pub acknowledged: usize,
    /// Sends left unanswered by a kill and settled by a later sync.
    pub unconfirmed: usize,
    /// Sends refused before anything was kept (the server was down).
    pub not_sent: usize,
    pub lost: Vec<String>,
    pub duplicated: Vec<String>,
    /// Messages that arrived though no send kept them, or whose kept send was lost.
    pub unexpected: Vec<String>,
    pub out_of_order: usize,
    /// From start to listening, after each kill.
    pub restarts: Latencies,
    pub elapsed: Duration,
}

impl SoakFigures {
    pub fn sound(&self) -> bool {
        self.lost.is_empty()
            && self.duplicated.is_empty()
            && self.unexpected.is_empty()
            && self.out_of_order == 0
    }
}

/// How a send ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendOutcome {
    Acknowledged,
    Unconfirmed,
    Refused,
}

/// SplitMix64, so a soak's kill moments follow from its seed.
struct Moments(u64);

impl Moments {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n.max(1)
    }
}

/// Kills `process` `kills` times while a chat runs through it.
pub async fn crash_soak(
    process: &mut RoostProcess,
    kills: usize,
    seed: u64,
) -> Result<SoakFigures, String> {
    let started = Instant::now();
    let population = Population::new(&process.url, process.domain(), Default::default());
    let sender = population.user("soak-a", 1).await?.remove(0);
    let receiver = population.user("soak-b", 1).await?.remove(0);
    connect(&sender, &receiver).await?;
    let sender = Arc::new(sender);
    let outcomes: Arc<Mutex<Vec<(String, SendOutcome)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let chat = tokio::spawn(chat_until(
        sender.clone(),
        receiver.user().clone(),
        outcomes.clone(),
        stop.clone(),
    ));

    let mut moments = Moments(seed);
    let mut restarts = Latencies::default();
    for kill in 0..kills {
        tokio::time::sleep(Duration::from_millis(20 + moments.below(250))).await;
        process.kill();
        tokio::time::sleep(Duration::from_millis(moments.below(50))).await;
        let took = process
            .start_again()
            .map_err(|e| format!("after kill {}, the server did not start: {e}", kill + 1))?;
        restarts.push(took);
    }
    // Some traffic after the last restart, then the sender stops.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    chat.await.map_err(|e| e.to_string())?;
    let outcomes = outcomes.lock().map_err(|e| e.to_string())?.clone();

    settle(&sender, &receiver, &outcomes).await?;
    let mut figures = tally(&sender, &receiver, &outcomes).await?;
    figures.kills = kills;
    figures.restarts = restarts;
    figures.elapsed = started.elapsed();
    Ok(figures)
}

/// Sends numbered texts one after another until `stop`, noting how each send ended.
async fn chat_until(
    sender: Arc<Client>,
    to: roost_protocol::UserName,
    outcomes: Arc<Mutex<Vec<(String, SendOutcome)>>>,
    stop: Arc<AtomicBool>,
) {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let text = format!("soak {n}");
        let outcome = match sender.chat().send(&to, &text).await {
            Ok(_) => SendOutcome::Acknowledged,
            Err(e) if e.code() == "unconfirmed" => SendOutcome::Unconfirmed,
            Err(_) => SendOutcome::Refused,
        };
        if let Ok(mut outcomes) = outcomes.lock() {
            outcomes.push((text, outcome));
        }
        if outcome != SendOutcome::Acknowledged {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Syncs both clients until the sender has nothing unsettled and the receiver has every
/// message that was kept, or 60 s pass (the tally then says what is missing).
async fn settle(
    sender: &Client,
    receiver: &Client,
    outcomes: &[(String, SendOutcome)],
) -> Result<(), String> {
    let kept = outcomes
        .iter()
        .filter(|(_, s)| *s != SendOutcome::Refused)
        .count();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let settled = matches!(sender.sync().await, Ok(report) if report.unsettled == 0);
        let _ = receiver.sync().await;
        let arrived = receiver
            .chat()
            .messages(sender.user())
            .await
            .map(|log| log.len())
            .unwrap_or(0);
        if settled && arrived >= kept {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn tally(
    sender: &Client,
    receiver: &Client,
    outcomes: &[(String, SendOutcome)],
) -> Result<SoakFigures, String> {
    let count = |outcome| outcomes.iter().filter(|(_, s)| *s == outcome).count();
    let mut figures = SoakFigures {
        kills: 0,
        acknowledged: count(SendOutcome::Acknowledged),
        unconfirmed: count(SendOutcome::Unconfirmed),
        not_sent: count(SendOutcome::Refused),
        lost: Vec::new(),
        duplicated: Vec::new(),
        unexpected: Vec::new(),
        out_of_order: 0,
        restarts: Latencies::default(),
        elapsed: Duration::ZERO,
    };
    let sent: BTreeMap<&str, SendOutcome> =
        outcomes.iter().map(|(t, s)| (t.as_str(), *s)).collect();
    for (who, client, peer) in [
        ("receiver", receiver, sender.user()),
        ("sender", sender, receiver.user()),
    ] {
        let log = client
            .chat()
            .messages(peer)
            .await
            .map_err(|e| format!("the {who}'s log: {e}"))?;
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let mut last = 0;
        for message in &log {
            *seen.entry(message.text.as_str()).or_default() += 1;
            let number: u64 = message
                .text
                .strip_prefix("soak ")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if number < last {
                figures.out_of_order += 1;
            }
            last = number;
        }
        for (text, outcome) in &sent {
            let times = seen.get(text).copied().unwrap_or(0);
            match (outcome, times) {
                (_, 2..) => figures.duplicated.push(format!("{who}: {text} ×{times}")),
                (SendOutcome::Acknowledged | SendOutcome::Unconfirmed, 0) => {
                    figures.lost.push(format!("{who}: {text} ({outcome:?})"))
                }
                (SendOutcome::Refused, 1) => figures.unexpected.push(format!("{who}: {text}")),
                _ => {}
            }
        }
        for text in seen.keys().filter(|t| !sent.contains_key(*t)) {
            figures
                .unexpected
                .push(format!("{who}: {text} (never sent)"));
        }
    }
    Ok(figures)
}
