//! The hostile-load scenario: while two connected users chat, attackers flood what costs them
//! little — discovery, sealed connection requests, their own user's queues, relays from a peer
//! homeserver, the DS without tokens from many addresses, and the DS with real MLS groups,
//! commits and messages paid with the attacker's own tokens — to see whether the limits hold and
//! what the flood costs the chat's latency, the store and the server's memory.
//!
//! Owns the server it runs against (started with the limits of `config.toml`), the attackers and
//! the stand-in peer homeserver; `sections` writes the figures up. Each unauthenticated attacker
//! sends from loopback addresses of its own (all of 127.0.0.0/8 is loopback on Linux), as
//! attackers on the internet would: so no per-address limit needs raising, and no attacker
//! shares a bucket with the chatting pair (127.0.0.1).

mod ds;

use std::{
    collections::BTreeMap,
    future::Future,
    net::{IpAddr, Ipv4Addr},
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use roost_client::Client;
use roost_protocol::{
    api::{self, ConnectionPackages, ErrorBody},
    auth::ServerSignature,
    codec,
    connection::{ConnectionPackageHash, SealedConnectionRequest, MAX_SEALED_REQUEST},
    crypto::Sealed,
    ds::{GroupDelivery, SealedQueueRef},
    federation::{
        FederatedDelivery, RelayBatch, RelayOutcome, RelayReceipt, Resolver, ServerKey, FED_DELIVER,
    },
    ids::now_millis,
    ClientId, Domain, HpkePublicKey, SigningKey, UserName,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    task::JoinHandle,
};

use self::ds::{paid_ds, unpaid_ds};
use crate::{
    drive::Driven,
    scenarios::{self, Population},
    server::{RoostProcess, ServerOptions},
};

/// The stand-in peer homeserver's domain.
const PEER: &str = "peer.test";
/// Queue messages and relayed deliveries: large, yet within one request body (1 MiB).
const LARGE_MESSAGE: usize = 900 * 1024;
/// Tasks of an attack that floods from one address or client.
const TASKS: usize = 2;
/// Each attacker's addresses are 127.0.NET.1, .2, …
const HARVEST_NET: u8 = 1;
const DISCOVERY_NET: u8 = 2;
const RELAY_NET: u8 = 5;
/// Sealed connection requests: ciphertext bytes, NET, and how many addresses (a task each). The
/// 60 KiB ones (clients open up to 64 KiB) come from enough addresses to outnumber what the
/// victim's last-resort packages let in, so that limit shows beside the per-address one.
const SEALED_REQUESTS: [(usize, u8, u8); 2] = [(60 * 1024, 3, 4), (1024 * 1024, 4, 1)];
/// How long the server is left alone after the attack before it is weighed again.
pub const AFTERMATH: Duration = Duration::from_secs(2);
/// The limits the server runs with, to report the figures against.
const SHIPPED: &str = include_str!("../../../config.toml");

/// What the scenario measured.
pub struct Figures {
    pub quiet: Driven,
    pub attacked: Driven,
    /// Cores the server used during the quiet chat and during the attack.
    pub server_cores: [f64; 2],
    pub attacks: Vec<Attack>,
    /// Queues the attacks could fill: message queues, and the victim's connection queues.
    pub queues_attacked: (u64, u64),
    /// What the shipped caps let the attacks queue in those queues, in bytes.
    pub store_cap: u64,
    pub store_bytes: [u64; 2],
    /// Resident memory before the attack, at its peak during it, and after it.
    pub rss_bytes: [u64; 3],
    /// What a newcomer's `connect` to the victim came to after the attack.
    pub newcomer: String,
    /// `/health`'s status and body at the end.
    pub health: String,
}

impl Figures {
    /// The chat's `p`-th percentile latency under attack against quiet.
    pub fn slowdown(&self, p: f64) -> f64 {
        let quiet = self.quiet.latencies.percentile(p).as_secs_f64();
        self.attacked.latencies.percentile(p).as_secs_f64() / quiet.max(1e-9)
    }
}

/// One attack: what it does, where from, and the answers it got.
pub struct Attack {
    pub what: String,
    pub from: String,
    tasks: Vec<JoinHandle<Tally>>,
    pub tally: Tally,
}

impl Attack {
    fn new(what: String, from: String, tasks: Vec<JoinHandle<Tally>>) -> Attack {
        let tally = Tally::default();
        Attack {
            what,
            from,
            tasks,
            tally,
        }
    }
}

/// Answers counted by status and error code (with the setting a 429 names).
#[derive(Default)]
pub struct Tally(BTreeMap<String, u64>);

impl Tally {
    fn count(&mut self, answer: String) {
        *self.0.entry(answer).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) {
        for (answer, n) in other.0 {
            *self.0.entry(answer).or_default() += n;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Each answer with how often it came, e.g. `202 ×60, 429 rate_limited (…) ×20`.
    pub fn describe(&self) -> String {
        let each: Vec<String> = self.0.iter().map(|(a, n)| format!("{a} ×{n}")).collect();
        each.join(", ")
    }
}

/// Runs the scenario against a `roost` it starts from `binary`: `duration` of quiet chat, then
/// as long again under attack.
pub async fn run(binary: &Path, duration: Duration) -> Result<Figures, String> {
    let peer_key = SigningKey::generate();
    let (peer_port, peer) = stand_in_peer(&peer_key).await?;
    let process = RoostProcess::start(
        binary,
        ServerOptions {
            settings: vec![(
                "ROOST_FEDERATION__RESOLVE".into(),
                format!("{PEER}=http://127.0.0.1:{peer_port}"),
            )],
            shipped_rate_limits: true,
            ..ServerOptions::default()
        },
    )?;
    let url = process.url.clone();
    let domain: Domain = process.domain().parse().map_err(|e| format!("{e}"))?;
    let population = Population::new(&url, process.domain(), Resolver::default());
    let pair = population.users("chat", 2, 1, 2).await?;
    let (alice, bob) = (&pair[0][0], &pair[1][0]);
    scenarios::connect(alice, bob)
        .await
        .map_err(|e| format!("connect the chatting pair: {e}"))?;
    let victim = population.user("victim", 2).await?;
    let attacker = Arc::new(population.user("attacker", 2).await?);
    // A second user of the attacker's, to add to its groups and remove again (commits).
    let accomplice = population.user("accomplice", 1).await?;
    scenarios::connect(&attacker[0], &accomplice[0])
        .await
        .map_err(|e| format!("connect the attacker's accomplice: {e}"))?;
    let flooder = population.user("flooder", 1).await?;
    // The first rounds also carry the pair's friendship tokens.
    let warmup = scenarios::pair_chat(alice, bob, Duration::from_secs(1)).await;
    if let Some(e) = warmup.first_error {
        return Err(format!("chat before the attack: {e}"));
    }
    crate::progress(&format!(
        "hostile load: {} s of quiet chat",
        duration.as_secs()
    ));
    let cpu = || process.cpu_seconds().unwrap_or(0.0);
    let cpu_before = cpu();
    let quiet = scenarios::pair_chat(alice, bob, duration).await;
    let quiet_cores = (cpu() - cpu_before) / quiet.elapsed.as_secs_f64();

    // What anyone can learn: discovery names the victim's clients, and the last-resort package
    // it serves once the one-time ones are used up is good for request after request.
    let (harvest, last_resorts) = harvest_last_resorts(&url, victim[0].user()).await?;
    let key = async {
        let answer = reqwest::get(format!("{url}{}", api::QS_QUEUE_REF_KEY)).await?;
        answer.error_for_status()?.bytes().await
    };
    let key = key
        .await
        .map_err(|e| format!("the queue-reference key: {e}"))?;
    let key: HpkePublicKey = codec::decode(&key).map_err(|e| e.to_string())?;
    let victim_queue = SealedQueueRef::seal(domain.clone(), &key, &last_resorts[0].0)
        .map_err(|e| e.to_string())?;

    let store_before = process.store_bytes();
    let rss_before = process.rss_bytes().unwrap_or(0);
    crate::progress(&format!(
        "hostile load: {} s of chat under attack",
        duration.as_secs()
    ));
    let cpu_before = cpu();
    let until = Instant::now() + duration;
    let mut attacks = vec![discovery(&url, victim[0].user(), until)];
    for requests in SEALED_REQUESTS {
        attacks.push(connection_requests(&url, &last_resorts, requests, until));
    }
    attacks.push(own_queue(attacker.clone(), until));
    attacks.push(unpaid_ds(&url, until));
    attacks.extend(paid_ds(
        Arc::new(flooder),
        attacker,
        accomplice[0].user().clone(),
        until,
    ));
    attacks.push(relays(&url, domain, victim_queue, peer_key, until));
    let (attacked, rss_peak) = futures_util::future::join(
        scenarios::pair_chat(alice, bob, duration),
        process.peak_rss_until(until),
    )
    .await;
    for attack in &mut attacks {
        for task in attack.tasks.drain(..) {
            attack.tally.merge(task.await.map_err(|e| e.to_string())?);
        }
    }
    let attack_cores = (cpu() - cpu_before) / attacked.elapsed.as_secs_f64();
    attacks.insert(0, harvest);

    tokio::time::sleep(AFTERMATH).await;
    let (rss_after, store_after) = (process.rss_bytes().unwrap_or(0), process.store_bytes());
    let newcomer = population.user("newcomer", 1).await?;
    let newcomer = match newcomer[0].connections().connect(victim[0].user()).await {
        Ok(_) => "connected".to_owned(),
        Err(e) => format!("refused: {e}"),
    };
    peer.abort();
    let health = match reqwest::get(format!("{url}/health")).await {
        Ok(answer) => format!(
            "{} {}",
            answer.status().as_u16(),
            answer.text().await.unwrap_or_default().trim()
        ),
        Err(e) => format!("no answer: {e}"),
    };
    // The attacker's other client's queue and the victim's take large messages; each of the
    // victim's clients has a connection queue.
    let queues_attacked = (2, last_resorts.len() as u64);
    Ok(Figures {
        quiet,
        attacked,
        server_cores: [quiet_cores, attack_cores],
        attacks,
        queues_attacked,
        store_cap: queues_attacked.0 * shipped("queue_max_bytes")
            + queues_attacked.1
                * shipped("connection_requests_per_client")
                * MAX_SEALED_REQUEST as u64,
        store_bytes: [store_before, store_after],
        rss_bytes: [rss_before, rss_peak, rss_after],
        newcomer,
        health,
    })
}

/// An HTTP client whose requests come from 127.0.`net`.`host`.
fn http_from(net: u8, host: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, net, host)))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

/// How an answer is counted: its status; for an error its code and the setting a 429 names
/// (its message says it in parentheses); for a relay what its receipt says of its delivery.
async fn answer_of(sent: reqwest::Result<reqwest::Response>) -> String {
    let answer = match sent {
        Ok(answer) => answer,
        Err(e) if e.is_timeout() => return "no answer (timeout)".into(),
        Err(_) => return "no answer (connection failed)".into(),
    };
    let (status, relay) = (answer.status(), answer.url().path() == FED_DELIVER);
    let body = answer.bytes().await.unwrap_or_default();
    if status.is_success() && relay {
        return match codec::decode::<RelayReceipt>(&body).map(|r| r.outcomes.into_iter().next()) {
            Ok(Some(RelayOutcome::Queued)) => "200 queued".into(),
            Ok(Some(RelayOutcome::Refused(e))) => format!("200 refused {}", e.error),
            _ => "200 unreadable receipt".into(),
        };
    }
    let status = status.as_u16();
    let Ok(e) = serde_json::from_slice::<ErrorBody>(&body) else {
        return status.to_string();
    };
    let setting = e
        .message
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'));
    match setting {
        Some((setting, _)) if e.error == "rate_limited" => {
            format!("{status} {} ({setting})", e.error)
        }
        _ => format!("{status} {}", e.error),
    }
}

/// Where the attackers run: threads of their own at the lowest CPU priority. They stand in
/// for other machines on the internet, whose CPU is not the server's; at equal priority on the
/// same two cores, their retry loops alone would slow the measured chat.
fn attackers() -> &'static tokio::runtime::Runtime {
    static ATTACKERS: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    ATTACKERS.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("attacker")
            .enable_all()
            .on_thread_start(|| {
                // On Linux a thread is a task of its own: this lowers only the calling thread.
                // Best effort: the run still measures, only with fiercer attackers.
                let _ = rustix::process::setpriority_process(None, 19);
            })
            .build()
            .expect("the attackers' runtime starts")
    })
}

/// Spawns a task on the attackers' threads that makes `attempt` until `until`, counting its
/// answers.
fn flood<F, Fut>(until: Instant, mut attempt: F) -> JoinHandle<Tally>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = String> + Send + 'static,
{
    attackers().spawn(async move {
        let mut tally = Tally::default();
        while Instant::now() < until {
            tally.count(attempt().await);
        }
        tally
    })
}

/// [`flood`] with the HTTP requests `request` makes.
fn flood_http<R>(until: Instant, mut request: R) -> JoinHandle<Tally>
where
    R: FnMut() -> reqwest::RequestBuilder + Send + 'static,
{
    flood(until, move || {
        let sent = request().send();
        async move { answer_of(sent.await).await }
    })
}

/// Discovers `victim` from one fresh address after another, each until it is refused, until
/// every client of the victim has been served its last-resort package; answers how that went,
/// and those clients with their packages.
async fn harvest_last_resorts(
    url: &str,
    victim: &UserName,
) -> Result<(Attack, Vec<(ClientId, ConnectionPackageHash)>), String> {
    let what = "before the flood: discovery of the victim until its one-time packages are used up";
    let mut harvest = Attack::new(what.into(), String::new(), Vec::new());
    let mut last_resorts = BTreeMap::new();
    let url = format!("{url}{}", api::as_user_connection_packages(victim));
    for address in 1..=50 {
        let http = http_from(HARVEST_NET, address);
        loop {
            let answer = match http.get(&url).send().await {
                Ok(answer) if answer.status().is_success() => answer,
                refused => {
                    harvest.tally.count(answer_of(refused).await);
                    break;
                }
            };
            harvest.tally.count("200".into());
            let body = answer.bytes().await.map_err(|e| e.to_string())?;
            let found: ConnectionPackages = codec::decode(&body).map_err(|e| e.to_string())?;
            for package in found.packages.iter().filter(|p| p.body.last_resort) {
                last_resorts.insert(package.client_id(), package.hash());
            }
            if found.packages.len() == last_resorts.len() {
                harvest.from = format!("127.0.{HARVEST_NET}.1–{address}, one after the other");
                return Ok((harvest, last_resorts.into_iter().collect()));
            }
        }
    }
    Err(format!(
        "no last-resort packages of {victim} from 50 addresses"
    ))
}

/// Discovery of the victim, and of made-up names, from one address, as fast as it answers.
fn discovery(url: &str, victim: &UserName, until: Instant) -> Attack {
    let http = http_from(DISCOVERY_NET, 1);
    let known = format!("{url}{}", api::as_user_connection_packages(victim));
    let (url, domain, unknowns) = (url.to_owned(), victim.domain().clone(), http.clone());
    let unknown = move || {
        let name: UserName = format!("nobody{:x}@{domain}", rand::random::<u64>())
            .parse()
            .expect("a valid user name");
        unknowns.get(format!("{url}{}", api::as_user_connection_packages(&name)))
    };
    Attack::new(
        "discovery of the victim, and of unknown names".into(),
        format!("127.0.{DISCOVERY_NET}.1, a task each"),
        vec![
            flood_http(until, move || http.get(&known)),
            flood_http(until, unknown),
        ],
    )
}

/// Junk sealed connection requests with `size` bytes of ciphertext for the victim's
/// last-resort packages, a task from each of `addresses` addresses in 127.0.`net`.0/24.
fn connection_requests(
    url: &str,
    targets: &[(ClientId, ConnectionPackageHash)],
    (size, net, addresses): (usize, u8, u8),
    until: Instant,
) -> Attack {
    let requests: Arc<Vec<(String, Vec<u8>)>> = Arc::new(
        targets
            .iter()
            .map(|(client, package)| {
                let junk = SealedConnectionRequest {
                    connection_package: *package,
                    sealed: Sealed {
                        encapsulated_key: rand::random(),
                        ciphertext: vec![0xA5; size],
                    },
                };
                let url = format!("{url}{}", api::as_connection_queue(client));
                (url, codec::encode(&junk))
            })
            .collect(),
    );
    let tasks = (1..=addresses)
        .map(|address| {
            let (http, requests) = (http_from(net, address), requests.clone());
            let mut next = 0;
            flood_http(until, move || {
                let (url, body) = &requests[next % requests.len()];
                next += 1;
                http.post(url).body(body.clone())
            })
        })
        .collect();
    Attack::new(
        format!(
            "sealed connection requests of {} KiB for the victim's last-resort packages",
            size / 1024
        ),
        match addresses {
            1 => format!("127.0.{net}.1"),
            _ => format!("127.0.{net}.1–{addresses}, a task each"),
        },
        tasks,
    )
}

/// One client of the attacker's user fills its other client's queue with large messages.
fn own_queue(attacker: Arc<Vec<Client>>, until: Instant) -> Attack {
    let tasks = (0..TASKS)
        .map(|_| {
            let attacker = attacker.clone();
            flood(until, move || {
                let attacker = attacker.clone();
                async move {
                    let sibling = attacker[1].client_id();
                    let sent = attacker[0].send_to_own_client(sibling, vec![0x5A; LARGE_MESSAGE]);
                    match sent.await {
                        Ok(_) => "200".into(),
                        Err(e) => match e.status() {
                            Some(status) => format!("{status} {}", e.code()),
                            None => "no answer".into(),
                        },
                    }
                }
            })
        })
        .collect();
    Attack::new(
        format!(
            "{} KiB messages into the queue of the attacker's other client (signed)",
            LARGE_MESSAGE / 1024
        ),
        format!("127.0.0.1 (the client library), {TASKS} tasks"),
        tasks,
    )
}

/// The peer homeserver relays large deliveries for the victim's queue, one a request (a batch
/// is at most a request body), each request signed with its key, as fast as it is let.
fn relays(url: &str, to: Domain, queue: SealedQueueRef, key: SigningKey, until: Instant) -> Attack {
    let http = http_from(RELAY_NET, 1);
    let url = format!("{url}{FED_DELIVER}");
    let from: Domain = PEER.parse().expect("a valid domain");
    let relay = Arc::new(move || {
        let delivery = FederatedDelivery {
            id: rand::random(),
            to: to.clone(),
            queue: queue.clone(),
            item: GroupDelivery::Message {
                seq: 1,
                group_id: vec![1; 16],
                message: vec![0x3C; LARGE_MESSAGE],
            },
        };
        let body = codec::encode(&RelayBatch {
            deliveries: vec![delivery],
        });
        let signed =
            ServerSignature::sign(&key, from.clone(), "POST", FED_DELIVER, &body, now_millis());
        http.post(&url)
            .header(reqwest::header::AUTHORIZATION, signed.to_header())
            .header(reqwest::header::CONTENT_TYPE, api::CONTENT_TYPE)
            .body(body)
    });
    let tasks = (0..TASKS)
        .map(|_| {
            let relay = relay.clone();
            flood_http(until, move || relay())
        })
        .collect();
    Attack::new(
        format!(
            "relays of {} KiB deliveries for the victim's queue, signed by `{PEER}`",
            LARGE_MESSAGE / 1024
        ),
        format!("127.0.{RELAY_NET}.1, {TASKS} tasks"),
        tasks,
    )
}

/// A stand-in for the peer homeserver, listening on the port it answers: it serves only its
/// server key, which the server under attack fetches to check the relays' signatures.
async fn stand_in_peer(key: &SigningKey) -> Result<(u16, JoinHandle<()>), String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("the stand-in peer: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let body = codec::encode(&ServerKey {
        domain: PEER.parse().map_err(|e| format!("{e}"))?,
        verifying_key: key.verifying_key(),
    });
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        api::CONTENT_TYPE,
        body.len()
    );
    let response = Arc::new([head.into_bytes(), body].concat());
    // Every request is for the key: read it, whatever it says, and answer.
    let serving = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let response = response.clone();
            tokio::spawn(async move {
                let _ = stream.read(&mut [0; 4096]).await;
                let _ = stream.write_all(&response).await;
            });
        }
    });
    Ok((port, serving))
}

/// A number of the shipped `config.toml` (its keys are unique across its sections).
fn shipped(key: &str) -> u64 {
    SHIPPED
        .lines()
        .filter_map(|line| line.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}
