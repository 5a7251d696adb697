//! `roost-load`: drives a real `roost` server over HTTP on loopback and reports how fast, how
//! big and how it grows — as a markdown report and SVG plots.
//!
//! Owns: the load scenarios ([`scenarios`], and the attacks of [`hostile`]), the floors
//! measured in the same run ([`baseline`]), the server process it starts ([`server`]) and the
//! report. Must not touch the server's crates: it speaks to `roost` only over HTTP, through
//! `roost_client`, like any client.

mod baseline;
mod drive;
mod hostile;
mod scenarios;
mod server;
mod soak;
mod stats;
mod svg;

use std::{
    fmt::Write as _,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::{Parser, ValueEnum};
use roost_protocol::federation::Resolver;

use crate::{
    drive::Driven,
    scenarios::Population,
    server::{RoostProcess, ServerOptions},
    stats::{mib, ms, Latencies, Timeline},
};

/// Load generator for the Roost homeserver.
///
/// Starts its own `roost` (found next to this binary; build both with `cargo build --release
/// --workspace`) unless --server is given, registers users with several clients, drives
/// traffic over real HTTP, and writes a markdown report with SVG plots. The federation
/// scenario starts two servers of its own, `a.test` and `b.test`, and the hostile one a server
/// with the shipped limits.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Drive this running server instead of starting one (figures that need the server's
    /// process or store — memory, store size, start-up — are then skipped, and so are the
    /// federation and hostile scenarios, which need servers this tool starts)
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// The roost binary to start [default: next to this binary]
    #[arg(long, value_name = "PATH")]
    roost: Option<PathBuf>,
    /// Small sizes and short runs: finishes in under a minute (for CI)
    #[arg(long)]
    quick: bool,
    /// Run only these scenarios, comma-separated (e.g. `--only fanout,chat` for profiling)
    /// [default: all]
    #[arg(long, value_name = "LIST", value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// How many times the crash soak kills the server [default: 100; 5 with --quick]
    #[arg(long, value_name = "N")]
    kills: Option<usize>,
    /// Directory for the report (report.md) and the plots
    #[arg(long, value_name = "DIR", default_value = "load-report")]
    out: PathBuf,
}

/// The parts of a run, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Durable queue, closed loop and paced, with its floors (bare HTTP endpoint, raw sled)
    Queue,
    /// Group fan-out to one user's clients
    Fanout,
    /// Sustained chat in a group of 10
    Chat,
    /// Connection establishment
    Connections,
    /// Memory per idle client, store bytes per queued message, start-up
    Memory,
    /// Connections, fan-out and chat across two federated servers
    Federation,
    /// A pair's chat while attackers flood discovery, connection requests, queues and relays,
    /// on a server of its own with the shipped limits
    Hostile,
    /// A chat while its server is killed with SIGKILL at random moments and restarted on the
    /// same store (--kills times): acknowledged messages lost, duplicated or out of order
    CrashSoak,
}

/// The sizes of one run.
struct Plan {
    seconds: u64,
    pairs: usize,
    payload: usize,
    rate: u64,
    group_sizes: Vec<usize>,
    /// Group sizes across two servers; the chat runs in the largest.
    federated_group_sizes: Vec<usize>,
    rounds: usize,
    connections: usize,
    /// Idle clients registered in all, measured at each step.
    idle_clients: Vec<usize>,
    queued: u64,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                seconds: 3,
                pairs: 4,
                payload: 256,
                rate: 200,
                group_sizes: vec![2, 10],
                federated_group_sizes: vec![2],
                rounds: 3,
                connections: 2,
                idle_clients: vec![50, 100],
                queued: 2_000,
            }
        } else {
            Plan {
                seconds: 10,
                pairs: 16,
                payload: 256,
                rate: 1_000,
                group_sizes: vec![2, 10, 100],
                federated_group_sizes: vec![2, 10],
                rounds: 10,
                connections: 10,
                idle_clients: vec![1_000, 10_000],
                queued: 100_000,
            }
        }
    }

    fn duration(&self) -> Duration {
        Duration::from_secs(self.seconds)
    }
}

/// Members sending in the sustained chat.
const CHAT_SENDERS: usize = 3;
/// Members of the group of the sustained chat on one server.
const CHAT_MEMBERS: usize = 10;

fn progress(what: &str) {
    eprintln!("roost-load: {what}");
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(&args)) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("roost-load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn roost_binary(args: &Args) -> Result<PathBuf, String> {
    if let Some(path) = &args.roost {
        return Ok(path.clone());
    }
    let here = std::env::current_exe().map_err(|e| e.to_string())?;
    let beside = here.with_file_name("roost");
    if beside.is_file() {
        Ok(beside)
    } else {
        Err(format!(
            "no roost binary at {}: build it with `cargo build --release --workspace`, or pass --roost PATH or --server URL",
            beside.display()
        ))
    }
}

impl Args {
    fn runs(&self, scenario: Scenario) -> bool {
        self.only.is_empty() || self.only.contains(&scenario)
    }
}

async fn run(args: &Args) -> Result<String, String> {
    let plan = Plan::new(args.quick);
    std::fs::create_dir_all(&args.out).map_err(|e| e.to_string())?;
    let one_server = [
        Scenario::Queue,
        Scenario::Fanout,
        Scenario::Chat,
        Scenario::Connections,
        Scenario::Memory,
    ]
    .into_iter()
    .any(|s| args.runs(s));
    let mut process = match (&args.server, one_server) {
        (None, true) => Some(RoostProcess::start(
            &roost_binary(args)?,
            ServerOptions::default(),
        )?),
        _ => None,
    };
    let url = match (&args.server, &process) {
        (Some(url), _) => Some(url.clone()),
        (None, Some(process)) => Some(process.url.clone()),
        (None, None) => None,
    };
    let mut report = String::new();
    let _ = write!(
        report,
        "# roost-load report\n\n{} run{}; machine: {}.",
        if args.quick { "Quick" } else { "Full" },
        match (&url, one_server) {
            (Some(url), true) => format!(" against {url}"),
            _ => String::new(),
        },
        machine()
    );
    if !args.only.is_empty() {
        let only: Vec<String> = args
            .only
            .iter()
            .filter_map(|s| s.to_possible_value())
            .map(|v| format!("`{}`", v.get_name()))
            .collect();
        let _ = write!(report, " Only {}.", only.join(", "));
    }
    report.push_str("\n\n");
    if let (Some(url), true) = (&url, one_server) {
        let population = Population::new(url, "localhost", Resolver::default());
        one_server_sections(args, &plan, &population, process.as_mut(), &mut report).await?;
    }
    if args.runs(Scenario::Federation) {
        if !report.ends_with("\n\n") {
            report.push('\n');
        }
        report.push_str("## Two federated servers\n\n");
        if args.server.is_some() {
            report.push_str(
                "Skipped: with --server this tool starts no servers, and this needs two of its own.\n",
            );
        } else {
            federation_section(args, &plan, &mut report).await?;
        }
    }
    if args.runs(Scenario::Hostile) {
        if !report.ends_with("\n\n") {
            report.push('\n');
        }
        report.push_str("## Hostile load\n\n");
        if args.server.is_some() {
            report.push_str(
                "Skipped: with --server this tool starts no servers, and this needs one of its own.\n",
            );
        } else {
            hostile_section(args, &plan, &mut report).await?;
        }
    }
    let mut unsound = None;
    if args.runs(Scenario::CrashSoak) && args.server.is_none() {
        let kills = args.kills.unwrap_or(if args.quick { 5 } else { 100 });
        progress(&format!("crash soak: {kills} kills"));
        let mut process = RoostProcess::start(&roost_binary(args)?, ServerOptions::default())?;
        let figures = soak::crash_soak(&mut process, kills, 0x50AC).await?;
        if !report.ends_with("\n\n") {
            report.push('\n');
        }
        report.push_str(&soak::section(&figures));
        if !figures.sound() {
            unsound =
                Some("the crash soak lost, duplicated or reordered messages (see the report)");
        }
    }
    std::fs::write(args.out.join("report.md"), &report).map_err(|e| e.to_string())?;
    if let Some(problem) = unsound {
        return Err(problem.into());
    }
    progress(&format!(
        "report written to {}",
        args.out.join("report.md").display()
    ));
    Ok(report)
}

/// Everything measured on one server: `process` if this tool started it.
async fn one_server_sections(
    args: &Args,
    plan: &Plan,
    population: &Population,
    process: Option<&mut RoostProcess>,
    report: &mut String,
) -> Result<(), String> {
    let duration = plan.duration();
    // The queue's users; the memory figures fill the first one's queue.
    let pairs = match (args.runs(Scenario::Queue), args.runs(Scenario::Memory)) {
        (false, false) => Vec::new(),
        (queue, _) => {
            let count = if queue { plan.pairs } else { 1 };
            progress(&format!(
                "registering {count} user{} with 2 clients each",
                if count == 1 { "" } else { "s" }
            ));
            population.users("queue", count, 2, 4).await?
        }
    };
    if args.runs(Scenario::Queue) {
        queue_section(args, plan, &pairs, process.as_deref(), report).await?;
    }

    if args.runs(Scenario::Fanout) {
        report.push_str("## Group fan-out\n\nOne message into a group (all members clients of one user); time from the send call (client MLS work included) until the last member's queue has it; median and worst of the rounds.\n\n");
        report.push_str(FANOUT_TABLE);
        for &members in &plan.group_sizes {
            progress(&format!("group fan-out, {members} members"));
            let group = scenarios::one_user_group(population, members).await?;
            let figures = scenarios::fanout(&group, plan.rounds).await?;
            report.push_str(&fanout_row(members, &figures));
        }
    }

    if args.runs(Scenario::Chat) {
        progress(&format!(
            "sustained group chat, {CHAT_MEMBERS} members, {CHAT_SENDERS} senders"
        ));
        let group = scenarios::one_user_group(population, CHAT_MEMBERS).await?;
        let chat = scenarios::group_chat(&group, CHAT_SENDERS, duration).await;
        if !args.runs(Scenario::Fanout) {
            report.push_str("## Sustained group chat\n");
        }
        let _ = writeln!(
            report,
            "\nSustained chat in a group of {CHAT_MEMBERS} ({CHAT_SENDERS} members sending as fast as they can, each send after syncing the others' messages): {}\n",
            chat_figures(&chat),
        );
    }

    if args.runs(Scenario::Connections) {
        progress(&format!("{} connection establishments", plan.connections));
        let connections = scenarios::connections(population, population, plan.connections).await?;
        let _ = writeln!(
            report,
            "\n## Connection establishment\n\nUsers with 2 clients each; `connect`, then the responder's `requests` and `accept` (discovery, package checks, group creation, invitation, external join, adding the second client), one after the other.\n\n{}",
            connections_table(&connections),
        );
    }

    if let (true, Some(process)) = (args.runs(Scenario::Memory), process) {
        memory_section(plan, population, process, &pairs[0], report).await?;
    }
    Ok(())
}

async fn queue_section(
    args: &Args,
    plan: &Plan,
    pairs: &[Vec<roost_client::Client>],
    process: Option<&RoostProcess>,
    report: &mut String,
) -> Result<(), String> {
    let duration = plan.duration();
    progress("baselines: bare HTTP endpoint and raw sled");
    let echo = baseline::start_echo_server();
    let floor = baseline::http_floor(&echo, plan.payload, plan.pairs, duration).await;
    let sled_floor = baseline::sled_floor(plan.payload + 44, duration.min(Duration::from_secs(3)));
    let crypto_floor = baseline::crypto_floor(plan.payload, duration.min(Duration::from_secs(3)));

    progress("durable queue, closed loop");
    let cpu_before = (
        process.and_then(RoostProcess::cpu_seconds),
        server::cpu_seconds(std::process::id()),
    );
    let closed = scenarios::queue(pairs, duration, plan.payload, None).await;
    let cpu_after = (
        process.and_then(RoostProcess::cpu_seconds),
        server::cpu_seconds(std::process::id()),
    );
    progress(&format!("durable queue, paced at {} messages/s", plan.rate));
    let paced = scenarios::queue(pairs, duration, plan.payload, Some(plan.rate)).await;

    let _ = writeln!(
        report,
        "## Durable queue\n\n{} senders (one per user, each to its own other client), {} B payloads, {} s per run; receivers long-poll and acknowledge.\n",
        plan.pairs, plan.payload, plan.seconds
    );
    report.push_str("| run | enqueued/s | delivered | delivery p50 | delivery p99 | failed |\n| --- | --- | --- | --- | --- | --- |\n");
    for (name, figures) in [("closed loop", &closed), ("paced", &paced)] {
        let _ = writeln!(
            report,
            "| {name} | {:.0} | {} | {} | {} | {} |",
            figures.enqueued.per_second(),
            figures.delivered,
            ms(figures.delivery.percentile(50.0)),
            ms(figures.delivery.percentile(99.0)),
            figures.enqueued.failed,
        );
    }
    let _ = writeln!(
        report,
        "\nFloors, same run: bare actix-web echo of the same payload at the same concurrency: **{:.0} requests/s** (p50 {}, p99 {}); raw sled insert + flush + fsync, one writer: **{sled_floor:.0} writes/s**; the server's cryptography for one message (check the sender's signature, seal to the receiver's queue key), one core: **{crypto_floor:.0} messages/s**. The closed-loop queue path runs at **{:.2}×** the HTTP floor's request rate.\n",
        floor.per_second(),
        ms(floor.latencies.percentile(50.0)),
        ms(floor.latencies.percentile(99.0)),
        closed.enqueued.per_second() / floor.per_second().max(1e-9),
    );
    if let (Some(before), Some(after), Some(own_before), Some(own_after)) =
        (cpu_before.0, cpu_after.0, cpu_before.1, cpu_after.1)
    {
        let seconds = closed.enqueued.elapsed.as_secs_f64().max(1e-9);
        let per_message = (after - before) / (closed.enqueued.ok.max(1) as f64);
        let _ = writeln!(
            report,
            "CPU during the closed loop: the server {:.2} cores, **{:.0} µs per message** (send, fetch and acknowledgement; its cryptography alone takes {:.0} µs); this generator {:.2} cores.\n",
            (after - before) / seconds,
            per_message * 1e6,
            1e6 / crypto_floor.max(1e-9),
            (own_after - own_before) / seconds,
        );
    }
    if let Some(e) = closed
        .enqueued
        .first_error
        .as_ref()
        .or(paced.enqueued.first_error.as_ref())
    {
        let _ = writeln!(report, "First error: `{e}`\n");
    }
    let samples: Vec<f64> = paced
        .delivery
        .samples()
        .iter()
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    write_plot(
        args,
        "queue-latency.svg",
        &svg::latency_cdf("Delivery latency, paced run", &samples),
    )?;
    write_plot(
        args,
        "queue-throughput.svg",
        &svg::throughput(
            "Messages delivered per second, closed loop",
            &closed.delivered_timeline.0,
            Timeline::BUCKET.as_secs_f64(),
        ),
    )?;
    report
        .push_str("![delivery latency](queue-latency.svg) ![throughput](queue-throughput.svg)\n\n");
    Ok(())
}

async fn memory_section(
    plan: &Plan,
    population: &Population,
    process: &mut RoostProcess,
    pair: &[roost_client::Client],
    report: &mut String,
) -> Result<(), String> {
    report.push_str("## Memory and store\n\n");
    // A first batch brings the allocator and the hashing threads to their working size.
    population.users("warmup", 8, 1, 8).await?;
    let before = process.rss_bytes().unwrap_or(0);
    let store_before = process.store_bytes();
    let _ = writeln!(
        report,
        "Idle clients: users of one client each, registered 8 at a time, each publishing its connection and key packages as a new client does, then left alone. Server resident memory, and what it grew by per client since the start ({:.1} MiB):\n\n| idle clients | resident memory | per client | store on disk | registered per second |\n| --- | --- | --- | --- | --- |",
        before as f64 / 1048576.0,
    );
    let mut registered = 0;
    for &step in &plan.idle_clients {
        progress(&format!("registering idle clients: {registered} → {step}"));
        let registering = Instant::now();
        population.idle_users("idle", step - registered, 8).await?;
        let rate = (step - registered) as f64 / registering.elapsed().as_secs_f64();
        registered = step;
        let rss = process.rss_bytes().unwrap_or(0);
        let _ = writeln!(
            report,
            "| {step} | {:.1} MiB | {:.0} B | {:.1} MiB | {rate:.1} |",
            rss as f64 / 1048576.0,
            rss.saturating_sub(before) as f64 / step as f64,
            process.store_bytes().saturating_sub(store_before) as f64 / 1048576.0,
        );
    }
    report.push('\n');
    progress(&format!("queueing {} messages", plan.queued));
    let store_before = process.store_bytes();
    scenarios::fill_queue(pair, plan.queued, plan.payload, 16).await?;
    let store_after = process.store_bytes();
    let _ = writeln!(
        report,
        "- Store: {:.1} MiB → {:.1} MiB with {} more queued messages of {} B → **{:.0} bytes on disk per queued message** (sled's log; sealing adds 48 B).",
        store_before as f64 / 1048576.0,
        store_after as f64 / 1048576.0,
        plan.queued,
        plan.payload,
        store_after.saturating_sub(store_before) as f64 / plan.queued as f64,
    );
    progress("restarting with the queue full");
    let startup = process.restart()?;
    // Let it settle (an idle server's memory is what it holds, not what start-up touched).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = writeln!(
        report,
        "- Start-up with {} queued messages and the {} idle clients above in the store: **{}** from start to listening; resident memory after it, idle: {:.1} MiB.",
        plan.queued,
        registered,
        ms(startup),
        process.rss_bytes().unwrap_or(0) as f64 / 1048576.0,
    );
    Ok(())
}

/// Connections, fan-out and chat across two servers this tool starts, `a.test` and `b.test`:
/// the group lives on a's DS, its other members are on b.
async fn federation_section(args: &Args, plan: &Plan, report: &mut String) -> Result<(), String> {
    progress("starting two federated servers, a.test and b.test");
    let (servers, resolve) = server::federation(&roost_binary(args)?, &["a.test", "b.test"])?;
    let resolver = Resolver::from_entries(&resolve).map_err(|e| e.to_string())?;
    let [a, b] = [&servers[0], &servers[1]]
        .map(|server| Population::new(&server.url, server.domain(), resolver.clone()));
    let _ = writeln!(
        report,
        "Two `roost` processes started by this tool, `a.test` ({}) and `b.test` ({}), each with its own store, each resolving the other; a client calls the other domain's server directly where the protocol says so, and a delivery to a member on the other server is relayed by its federation actor (retries from 100 ms).\n",
        servers[0].url, servers[1].url,
    );

    progress(&format!(
        "{} connection establishments across domains",
        plan.connections
    ));
    let connections = scenarios::connections(&a, &b, plan.connections).await?;
    let _ = writeln!(
        report,
        "### Connection establishment across domains\n\nInitiator on a.test, responder on b.test, 2 clients each; as on one server (the connection group lives on a's DS, the responder joins it there and adds its second client, whose Welcome is relayed to b).\n\n{}",
        connections_table(&connections),
    );

    report.push_str("### Group fan-out across domains\n\nA group on a.test's DS, made by a user of a.test with 1 client, with a user of b.test with the other clients added (connected first); one message from the a.test client; time from the send call until the last member's queue on b.test has it (a's DS, a's federation actor, b's QS); median and worst of the rounds.\n\n");
    report.push_str(FANOUT_TABLE);
    let mut last_group = None;
    for &members in &plan.federated_group_sizes {
        progress(&format!("group fan-out across domains, {members} members"));
        let group = scenarios::federated_group(&a, &b, members).await?;
        let figures = scenarios::fanout(&group, plan.rounds).await?;
        report.push_str(&fanout_row(members, &figures));
        last_group = Some(group);
    }

    if let Some(group) = last_group {
        let senders = CHAT_SENDERS.min(group.len());
        progress(&format!(
            "sustained group chat across domains, {} members, {senders} senders",
            group.len()
        ));
        let chat = scenarios::group_chat(&group, senders, plan.duration()).await;
        let _ = write!(
            report,
            "\nSustained chat in that group of {} ({senders} members sending as fast as they can — 1 on a.test, {} on b.test — each send after syncing the others' messages): {}",
            group.len(),
            senders - 1,
            chat_figures(&chat),
        );
        // The DS answers once a delivery to b is safe in a's outbox: the relays may run
        // behind the sends. A member that does not send receives every message.
        if let Some(silent) = group.get(senders) {
            progress("waiting for the relays to catch up");
            let drained =
                scenarios::queue_filled(silent, chat.ok, Duration::from_secs(300)).await?;
            let _ = write!(
                report,
                " The last message reached a silent member's queue on b.test **{}** after the senders stopped: it received **{:.0} messages/s** over the whole run.",
                ms(drained),
                chat.ok as f64 / (chat.elapsed + drained).as_secs_f64(),
            );
        }
        report.push_str("\n\n");
    }
    Ok(())
}

/// A pair's chat on a server with the shipped limits, first quiet, then while attackers flood
/// it ([`hostile`]).
async fn hostile_section(args: &Args, plan: &Plan, report: &mut String) -> Result<(), String> {
    progress("hostile load: starting a server with the shipped limits");
    let figures = hostile::run(&roost_binary(args)?, plan.duration()).await?;
    let _ = write!(
        report,
        "One `roost` with the limits of `config.toml`, none raised: each unauthenticated attacker sends from loopback addresses of its own, as attackers on the internet would, so the per-address limits bind them at their shipped values and no attacker shares a bucket with the chatting pair (127.0.0.1). They run on threads of the lowest CPU priority, standing in for other machines: what is measured is what their requests cost the server, not what their retry loops cost this generator. `peer.test`, in the server's `federation.resolve`, is a stand-in that serves only its server key.\n\nTwo connected users, one client each: one sends a chat message, the other syncs until it has it, one message at a time; {0} s quiet, then {0} s while all the attacks below run at once.\n\n| chat | messages | send→delivered p50 | p99 | failed | server CPU |\n| --- | --- | --- | --- | --- | --- |\n",
        plan.seconds,
    );
    let runs = [
        ("quiet", &figures.quiet),
        ("under attack", &figures.attacked),
    ];
    for ((name, chat), cores) in runs.into_iter().zip(figures.server_cores) {
        let _ = writeln!(
            report,
            "| {name} | {} | {} | {} | {} | {cores:.2} cores |",
            chat.ok,
            ms(chat.latencies.percentile(50.0)),
            ms(chat.latencies.percentile(99.0)),
            chat.failed,
        );
    }
    let _ = write!(
        report,
        "\nUnder attack against quiet: p50 **{:.1}×**, p99 **{:.1}×** (target: within 2×).",
        figures.slowdown(50.0),
        figures.slowdown(99.0),
    );
    if let Some(e) = &figures.attacked.first_error {
        let _ = write!(report, " First error: `{e}`");
    }
    report.push_str("\n\n| attack | from | requests | answers |\n| --- | --- | --- | --- |\n");
    for attack in &figures.attacks {
        let _ = writeln!(
            report,
            "| {} | {} | {} | {} |",
            attack.what,
            attack.from,
            attack.tally.total(),
            attack.tally.describe(),
        );
    }
    let (message_queues, connection_queues) = figures.queues_attacked;
    let [before, after] = figures.store_bytes;
    let [rss_before, rss_peak, rss_after] = figures.rss_bytes;
    let _ = writeln!(
        report,
        "\nStore on disk: {} before the attack, {} after: **+{}**, against {} that the caps let these attacks queue ({message_queues} message queues × `limits.queue_max_bytes`, {connection_queues} connection queues × `limits.connection_requests_per_client` × 64 KiB).\n\nServer resident memory: {} before the attack, **{}** at its peak during it, {} {} s after it.\n\nAfter the attack, a newcomer's `connect` to the victim: {}.\n\n`/health` at the end: `{}`.",
        mib(before),
        mib(after),
        mib(after.saturating_sub(before)),
        mib(figures.store_cap),
        mib(rss_before),
        mib(rss_peak),
        mib(rss_after),
        hostile::AFTERMATH.as_secs(),
        figures.newcomer,
        figures.health,
    );
    Ok(())
}

const FANOUT_TABLE: &str = "| members | rounds | median | worst |\n| --- | --- | --- | --- |\n";

fn fanout_row(members: usize, figures: &Latencies) -> String {
    format!(
        "| {members} | {} | {} | {} |\n",
        figures.len(),
        ms(figures.percentile(50.0)),
        ms(figures.percentile(100.0)),
    )
}

fn chat_figures(chat: &Driven) -> String {
    let mut line = format!(
        "**{:.0} messages/s**, send p50 {}, p99 {}, {} failed.",
        chat.per_second(),
        ms(chat.latencies.percentile(50.0)),
        ms(chat.latencies.percentile(99.0)),
        chat.failed,
    );
    if let Some(e) = &chat.first_error {
        let _ = write!(line, " First error: `{e}`");
    }
    line
}

fn connections_table(connections: &Driven) -> String {
    let mut table = format!(
        "| established | failed | per second | p50 | worst |\n| --- | --- | --- | --- | --- |\n| {} | {} | {:.2} | {} | {} |\n",
        connections.ok,
        connections.failed,
        connections.per_second(),
        ms(connections.latencies.percentile(50.0)),
        ms(connections.latencies.percentile(100.0)),
    );
    if let Some(e) = &connections.first_error {
        let _ = writeln!(table, "\nFirst error: `{e}`");
    }
    table
}

fn write_plot(args: &Args, name: &str, svg: &str) -> Result<(), String> {
    std::fs::write(args.out.join(name), svg).map_err(|e| e.to_string())
}

/// CPU model and count, and memory, as Linux reports them.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("unknown CPU");
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or("? GiB".to_owned(), |kib| {
            format!("{:.1} GiB", kib as f64 / 1048576.0)
        });
    format!("{cpus} × {model}, {memory} RAM")
}
