//! The performance targets, each beside its floor: what the work the figure cannot avoid costs
//! on this machine, measured in the same run — the signature checks and per-member encryptions
//! the protocol asks of the server, and the fsyncs it must wait for. A figure's ratio to its
//! floor travels between machines better than the figure.

use std::{fmt::Write as _, time::Duration};

use roost_protocol::{
    api::{QueueItem, QueueMessage},
    auth::RequestSignature,
    ds::GroupDelivery,
    ids::now_millis,
    queue::QueueChain,
    ClientId, SigningKey,
};

use crate::{baseline, CHAT_MEMBERS, CHAT_SENDERS};

/// Members of the group whose fan-out has a target.
pub const FANOUT_MEMBERS: usize = 100;
/// Members on the other server in the federated fan-out that has a target.
pub const FEDERATED_MEMBERS: usize = 10;
/// How long a group message's MLS ciphertext is, about, in the chat.
const GROUP_MESSAGE_BYTES: usize = 512;

/// What the unavoidable steps cost here, now.
pub struct Floors {
    /// Checking one Ed25519 request signature.
    verify: Duration,
    /// Signing one (a server's relay request).
    sign: Duration,
    /// Sealing one group message to one member's queue under its key chain.
    seal: Duration,
    /// One durable write: raw sled insert, flush and fsync, one writer.
    fsync: Duration,
}

impl Floors {
    /// Measures each step for about a second; run it while nothing else loads the machine.
    pub fn measure() -> Floors {
        let key = SigningKey::generate();
        let verifying = key.verifying_key();
        let client = ClientId::random();
        let body = vec![7u8; 256];
        let signature = RequestSignature::sign(&key, client, "POST", "/x", &body, now_millis());
        let at = signature.timestamp_ms;
        let sign = time_each(|| {
            RequestSignature::sign(&key, client, "POST", "/x", &body, at);
        });
        let verify = time_each(|| {
            signature
                .verify(&verifying, "POST", "/x", &body, at)
                .expect("verifies");
        });
        let item = QueueItem::Group(GroupDelivery::Message {
            group_id: vec![1; 16],
            seq: 1,
            message: vec![2; GROUP_MESSAGE_BYTES],
        });
        let mut chain = QueueChain::start(1);
        let seal = time_each(|| {
            QueueMessage::seal(&chain, None, &client, &item).expect("seals");
            chain = chain.next();
        });
        let writes = baseline::sled_floor(300, Duration::from_secs(1));
        Floors {
            verify,
            sign,
            seal,
            fsync: Duration::from_secs_f64(1.0 / writes.max(1e-9)),
        }
    }

    /// The server's cryptography for one group message to `members`: the sender's proof
    /// checked, one seal per member.
    fn group_message(&self, members: usize) -> Duration {
        self.verify + self.seal * members as u32
    }
}

/// Runs `step` repeatedly for about 200 ms; the mean time of one.
fn time_each(mut step: impl FnMut()) -> Duration {
    let begun = std::time::Instant::now();
    let mut n = 0u32;
    while begun.elapsed() < Duration::from_millis(200) {
        step();
        n += 1;
    }
    begun.elapsed() / n.max(1)
}

/// A figure with a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figure {
    ChatRate,
    ChatCpu,
    FanoutMedian,
    FanoutWorst,
    QueueCpu,
    PacedP99,
    FederatedFanout,
}

impl Figure {
    const ALL: [Figure; 7] = [
        Figure::ChatRate,
        Figure::ChatCpu,
        Figure::FanoutMedian,
        Figure::FanoutWorst,
        Figure::QueueCpu,
        Figure::PacedP99,
        Figure::FederatedFanout,
    ];

    fn name(self) -> String {
        match self {
            Figure::ChatRate => {
                format!("chat in a group of {CHAT_MEMBERS}, {CHAT_SENDERS} senders: messages/s")
            }
            Figure::ChatCpu => {
                format!("server CPU per group message ({CHAT_MEMBERS} members)")
            }
            Figure::FanoutMedian => format!("fan-out to {FANOUT_MEMBERS} members, median"),
            Figure::FanoutWorst => {
                format!("fan-out to {FANOUT_MEMBERS} members, worst of the rounds")
            }
            Figure::QueueCpu => "own-device queue, closed loop: server CPU per message".into(),
            Figure::PacedP99 => "paced 1 000 messages/s: delivery p99".into(),
            Figure::FederatedFanout => {
                format!(
                    "federated fan-out to {FEDERATED_MEMBERS} members on the other server, median"
                )
            }
        }
    }

    /// The target, in the figure's unit; whether more is better.
    fn target(self) -> (f64, bool) {
        match self {
            Figure::ChatRate => (1_000.0, true),
            Figure::ChatCpu => (600.0, false),
            Figure::FanoutMedian => (12.0, false),
            Figure::FanoutWorst => (25.0, false),
            Figure::QueueCpu => (200.0, false),
            Figure::PacedP99 => (3.0, false),
            Figure::FederatedFanout => (4.0, false),
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Figure::ChatRate => "/s",
            Figure::ChatCpu | Figure::QueueCpu => " µs",
            _ => " ms",
        }
    }

    /// The floor, in the figure's unit, and what it counts.
    fn floor(self, floors: &Floors) -> (f64, &'static str) {
        let (ms, us) = (
            |d: Duration| d.as_secs_f64() * 1e3,
            |d: Duration| d.as_secs_f64() * 1e6,
        );
        match self {
            Figure::ChatRate => (
                2.0 / floors.group_message(CHAT_MEMBERS).as_secs_f64(),
                "its cryptography on both cores",
            ),
            Figure::ChatCpu => (
                us(floors.group_message(CHAT_MEMBERS)),
                "one signature check, a seal per member",
            ),
            // The last member's queue is known to hold it through that member's fetch: each
            // member's signed fetch is part of the figure.
            Figure::FanoutMedian | Figure::FanoutWorst => (
                ms(floors.group_message(FANOUT_MEMBERS)
                    + floors.verify * FANOUT_MEMBERS as u32
                    + floors.fsync),
                "a signature check, a seal and a fetch's signature check per member, one fsync",
            ),
            Figure::QueueCpu => (
                us(floors.verify + floors.seal),
                "one signature check, one seal",
            ),
            Figure::PacedP99 => (ms(floors.fsync), "one fsync"),
            Figure::FederatedFanout => (
                ms(floors.group_message(FEDERATED_MEMBERS)
                    + floors.verify * FEDERATED_MEMBERS as u32
                    + floors.sign
                    + floors.verify
                    + floors.fsync * 2),
                "the fan-out's cryptography with each member's fetch, a signed relay, two fsyncs (the sender's, the receiver's)",
            ),
        }
    }
}

/// The figures a run measured that have targets.
#[derive(Default)]
pub struct Targets(Vec<(Figure, f64)>);

impl Targets {
    /// Notes a measured figure, in its unit (messages/s, µs or ms).
    pub fn record(&mut self, figure: Figure, value: f64) {
        self.0.push((figure, value));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The table: each figure measured, its floor, how many times the floor's cost it is (for
    /// a rate, the floor's rate over the measured one), its target and whether it is met.
    pub fn table(&self, floors: &Floors) -> String {
        let mut table = String::from(
            "| figure | measured | floor (what it counts) | times the floor's cost | target | met |\n| --- | --- | --- | --- | --- | --- |\n",
        );
        for figure in Figure::ALL {
            let Some(&(_, value)) = self.0.iter().find(|(f, _)| *f == figure) else {
                continue;
            };
            let (floor, counts) = figure.floor(floors);
            let (target, more_is_better) = figure.target();
            let met = match more_is_better {
                true => value >= target,
                false => value <= target,
            };
            let unit = figure.unit();
            let _ = writeln!(
                table,
                "| {} | {} | {}{unit} ({counts}) | {:.1}× | {} {}{unit} | {} |",
                figure.name(),
                number(value, unit),
                number(floor, unit).trim_end_matches(unit),
                match more_is_better {
                    true => floor / value.max(1e-9),
                    false => value / floor.max(1e-9),
                },
                if more_is_better { "≥" } else { "≤" },
                number(target, unit).trim_end_matches(unit),
                if met { "yes" } else { "no" },
            );
        }
        let _ = writeln!(
            table,
            "\nFloors measured at the end of this run, one thread: an Ed25519 check {:.1} µs, a signature {:.1} µs, a {GROUP_MESSAGE_BYTES}-byte group message sealed under a queue's key chain {:.2} µs, a durable sled write (insert, flush, fsync) {:.2} ms.",
            floors.verify.as_secs_f64() * 1e6,
            floors.sign.as_secs_f64() * 1e6,
            floors.seal.as_secs_f64() * 1e6,
            floors.fsync.as_secs_f64() * 1e3,
        );
        table
    }
}

/// A figure as the table shows it: whole numbers for rates and microseconds, two decimals for
/// milliseconds.
fn number(value: f64, unit: &str) -> String {
    match unit {
        " ms" => format!("{value:.2}{unit}"),
        _ => format!("{value:.0}{unit}"),
    }
}
