//! `roost-load`: drives a real `roost` server over HTTP on loopback and reports how fast, how
//! big and how it grows — as a markdown report and SVG plots.
//!
//! Owns: the load scenarios ([`scenarios`], the attacks of [`hostile`], the kills of [`soak`]),
//! the floors measured in the same run ([`baseline`]), the server process it starts
//! ([`server`]) and the report (here for one server, in [`sections`] for the scenarios that
//! start servers of their own). Must not touch the server's crates: it speaks to `roost` only over HTTP, through
//! `roost_client`, like any client.

mod baseline;
mod cpu;
mod drive;
mod hostile;
mod scenarios;
mod sections;
mod server;
mod soak;
mod stats;
mod svg;
mod targets;

use std::{
    fmt::Write as _,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::{Parser, ValueEnum};
use roost_protocol::federation::Resolver;

use crate::{
    cpu::CpuMeter,
    drive::Driven,
    scenarios::Population,
    server::{RoostProcess, ServerOptions},
    stats::{ms, Latencies, Timeline},
    targets::{Figure, Floors, Targets},
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
    let mut targets = Targets::default();
    if let (Some(url), true) = (&url, one_server) {
        let population = Population::new(url, "localhost", Resolver::default());
        let sections = (&mut report, &mut targets);
        one_server_sections(args, &plan, &population, process.as_mut(), sections).await?;
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
            sections::federation(args, &plan, &mut report, &mut targets).await?;
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
            sections::hostile(args, &plan, &mut report).await?;
        }
    }
    if !targets.is_empty() && !args.quick {
        progress("floors: signatures, seals and fsyncs, with nothing else running");
        let _ = write!(
            report,
            "## Against the targets\n\n{}\n",
            targets.table(&Floors::measure())
        );
    }
    let mut unsound = None;
    if args.runs(Scenario::CrashSoak) && args.server.is_none() {
        if !report.ends_with("\n\n") {
            report.push('\n');
        }
        if !sections::crash_soak(args, &mut report).await? {
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
    (report, targets): (&mut String, &mut Targets),
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
        queue_section(args, plan, &pairs, process.as_deref(), (report, targets)).await?;
    }

    if args.runs(Scenario::Fanout) {
        report.push_str("## Group fan-out\n\nOne message into a group (all members clients of one user); time from the send call (client MLS work included) until the last member's queue has it; median and worst of the rounds; the server's CPU per message sent (its fan-out, and every member's fetch and acknowledgement of it).\n\n");
        report.push_str(FANOUT_TABLE);
        let mut by_stage = Vec::new();
        for &members in &plan.group_sizes {
            progress(&format!("group fan-out, {members} members"));
            let group = scenarios::one_user_group(population, members).await?;
            let meter = CpuMeter::start(process.as_deref());
            let figures = scenarios::fanout(&group, plan.rounds).await?;
            let cpu = meter.per_operation(figures.len());
            report.push_str(&fanout_row(members, &figures, &cpu));
            by_stage.push((members, meter.by_stage(figures.len())));
            if members == targets::FANOUT_MEMBERS {
                targets.record(Figure::FanoutMedian, millis(figures.percentile(50.0)));
                targets.record(Figure::FanoutWorst, millis(figures.percentile(100.0)));
            }
        }
        report.push_str(
            "
The server's CPU per message, by thread:\n\n",
        );
        for (members, stages) in by_stage {
            let _ = writeln!(report, "- {members} members: {stages}");
        }
        report.push('\n');
    }

    if args.runs(Scenario::Chat) {
        progress(&format!(
            "sustained group chat, {CHAT_MEMBERS} members, {CHAT_SENDERS} senders"
        ));
        let group = scenarios::one_user_group(population, CHAT_MEMBERS).await?;
        let meter = CpuMeter::start(process.as_deref());
        let chat = scenarios::group_chat(&group, CHAT_SENDERS, duration).await;
        let cpu = meter.per_operation(chat.ok as usize);
        let by_stage = meter.by_stage(chat.ok as usize);
        targets.record(Figure::ChatRate, chat.per_second());
        if let Some(used) = meter.used() {
            targets.record(Figure::ChatCpu, used * 1e6 / chat.ok.max(1) as f64);
        }
        if !args.runs(Scenario::Fanout) {
            report.push_str("## Sustained group chat\n");
        }
        let _ = writeln!(
            report,
            "\nSustained chat in a group of {CHAT_MEMBERS} ({CHAT_SENDERS} members sending as fast as they can, each send after syncing the others' messages): {} Server CPU per message (its fan-out, and every member's fetch and acknowledgement of it): {cpu}; by thread: {by_stage}.\n",
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
    (report, targets): (&mut String, &mut Targets),
) -> Result<(), String> {
    let duration = plan.duration();
    progress("baselines: bare HTTP endpoint and raw sled");
    let echo = baseline::start_echo_server();
    let floor = baseline::http_floor(&echo, plan.payload, plan.pairs, duration).await;
    let sled_floor = baseline::sled_floor(plan.payload + 44, duration.min(Duration::from_secs(3)));
    let crypto_floor = baseline::crypto_floor(plan.payload, duration.min(Duration::from_secs(3)));

    progress("durable queue, closed loop");
    let meter = CpuMeter::start(process);
    let own_before = server::cpu_seconds(std::process::id());
    let closed = scenarios::queue(pairs, duration, plan.payload, None).await;
    let (server_cpu, own_after) = (meter.used(), server::cpu_seconds(std::process::id()));
    let by_stage = meter.by_stage(closed.enqueued.ok as usize);
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
    if let (Some(server_cpu), Some(own_before), Some(own_after)) =
        (server_cpu, own_before, own_after)
    {
        let seconds = closed.enqueued.elapsed.as_secs_f64().max(1e-9);
        let per_message = server_cpu / (closed.enqueued.ok.max(1) as f64);
        targets.record(Figure::QueueCpu, per_message * 1e6);
        let _ = writeln!(
            report,
            "CPU during the closed loop: the server {:.2} cores, **{:.0} µs per message** (send, fetch and acknowledgement; its cryptography alone takes {:.0} µs); this generator {:.2} cores. The server's per message, by thread: {by_stage}.\n",
            server_cpu / seconds,
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
    targets.record(Figure::PacedP99, millis(paced.delivery.percentile(99.0)));
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

const FANOUT_TABLE: &str =
    "| members | rounds | median | worst | server CPU per message |\n| --- | --- | --- | --- | --- |\n";

/// A duration in milliseconds, as the targets count them.
fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn fanout_row(members: usize, figures: &Latencies, cpu: &str) -> String {
    format!(
        "| {members} | {} | {} | {} | {cpu} |\n",
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
