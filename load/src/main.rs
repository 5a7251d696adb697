//! `roost-load`: drives a real `roost` server over HTTP on loopback and reports how fast, how
//! big and how it grows — as a markdown report and SVG plots.
//!
//! Owns: the load scenarios ([`scenarios`]), the floors measured in the same run
//! ([`baseline`]), the server process it starts ([`server`]) and the report. Must not touch
//! the server's crates: it speaks to `roost` only over HTTP, through `roost_client`, like any
//! client.

mod baseline;
mod drive;
mod scenarios;
mod server;
mod stats;
mod svg;

use std::{
    fmt::Write as _,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::Parser;

use crate::{
    scenarios::Population,
    server::RoostProcess,
    stats::{ms, Timeline},
};

/// Load generator for the Roost homeserver.
///
/// Starts its own `roost` (found next to this binary; build both with `cargo build --release
/// --workspace`) unless --server is given, registers users with several clients, drives
/// traffic over real HTTP, and writes a markdown report with SVG plots.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Drive this running server instead of starting one (figures that need the server's
    /// process or store — memory, store size, start-up — are then skipped)
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// The roost binary to start [default: next to this binary]
    #[arg(long, value_name = "PATH")]
    roost: Option<PathBuf>,
    /// Small sizes and short runs: finishes in under a minute (for CI)
    #[arg(long)]
    quick: bool,
    /// Directory for the report (report.md) and the plots
    #[arg(long, value_name = "DIR", default_value = "load-report")]
    out: PathBuf,
}

/// The sizes of one run.
struct Plan {
    seconds: u64,
    pairs: usize,
    payload: usize,
    rate: u64,
    group_sizes: Vec<usize>,
    rounds: usize,
    connections: usize,
    idle_clients: usize,
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
                rounds: 3,
                connections: 2,
                idle_clients: 20,
                queued: 2_000,
            }
        } else {
            Plan {
                seconds: 10,
                pairs: 16,
                payload: 256,
                rate: 1_000,
                group_sizes: vec![2, 10, 100],
                rounds: 10,
                connections: 10,
                idle_clients: 200,
                queued: 100_000,
            }
        }
    }
}

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

async fn run(args: &Args) -> Result<String, String> {
    let plan = Plan::new(args.quick);
    let duration = Duration::from_secs(plan.seconds);
    std::fs::create_dir_all(&args.out).map_err(|e| e.to_string())?;
    let mut process = match &args.server {
        Some(_) => None,
        None => Some(RoostProcess::start(&roost_binary(args)?)?),
    };
    let url = match (&args.server, &process) {
        (Some(url), _) => url.clone(),
        (None, Some(process)) => process.url.clone(),
        (None, None) => unreachable!(),
    };
    let mut report = String::new();
    let _ = writeln!(
        report,
        "# roost-load report\n\n{} run against {url}; machine: {}.\n",
        if args.quick { "Quick" } else { "Full" },
        machine()
    );
    let population = Population::new(&url);

    progress("baselines: bare HTTP endpoint and raw sled");
    let echo = baseline::start_echo_server();
    let floor = baseline::http_floor(&echo, plan.payload, plan.pairs, duration).await;
    let sled_floor = baseline::sled_floor(plan.payload + 44, duration.min(Duration::from_secs(3)));

    progress(&format!(
        "registering {} users with 2 clients each",
        plan.pairs
    ));
    let pairs = population.users("queue", plan.pairs, 2, 4).await?;

    progress("durable queue, closed loop");
    let closed = scenarios::queue(&pairs, duration, plan.payload, None).await;
    progress(&format!("durable queue, paced at {} messages/s", plan.rate));
    let paced = scenarios::queue(&pairs, duration, plan.payload, Some(plan.rate)).await;

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
        "\nFloors, same run: bare actix-web echo of the same payload at the same concurrency: **{:.0} requests/s** (p50 {}, p99 {}); raw sled insert + flush: **{sled_floor:.0} writes/s**. The closed-loop queue path runs at **{:.2}×** the HTTP floor's request rate.\n",
        floor.per_second(),
        ms(floor.latencies.percentile(50.0)),
        ms(floor.latencies.percentile(99.0)),
        closed.enqueued.per_second() / floor.per_second().max(1e-9),
    );
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

    report.push_str("## Group fan-out\n\nOne message into a group (all members clients of one user); time from the send call (client MLS work included) until the last member's queue has it; median and worst of the rounds.\n\n| members | rounds | median | worst |\n| --- | --- | --- | --- |\n");
    for &members in &plan.group_sizes {
        progress(&format!("group fan-out, {members} members"));
        let figures = scenarios::fanout(&population, members, plan.rounds).await?;
        let _ = writeln!(
            report,
            "| {members} | {} | {} | {} |",
            figures.len(),
            ms(figures.percentile(50.0)),
            ms(figures.percentile(100.0)),
        );
    }

    progress("sustained group chat, 10 members, 3 senders");
    let chat = scenarios::group_chat(&population, 10, 3, duration).await?;
    let _ = writeln!(
        report,
        "\nSustained chat in a group of 10 (3 members sending as fast as they can, each send after syncing the others' messages): **{:.0} messages/s**, send p50 {}, p99 {}, {} failed.\n",
        chat.per_second(),
        ms(chat.latencies.percentile(50.0)),
        ms(chat.latencies.percentile(99.0)),
        chat.failed,
    );

    progress(&format!("{} connection establishments", plan.connections));
    let connections = scenarios::connections(&population, plan.connections).await?;
    let _ = writeln!(
        report,
        "\n## Connection establishment\n\nUsers with 2 clients each; `connect`, then the responder's `requests` and `accept` (discovery, package checks, group creation, invitation, external join, adding the second client), one after the other.\n\n| established | failed | per second | p50 | worst |\n| --- | --- | --- | --- | --- |\n| {} | {} | {:.2} | {} | {} |\n",
        connections.ok,
        connections.failed,
        connections.per_second(),
        ms(connections.latencies.percentile(50.0)),
        ms(connections.latencies.percentile(100.0)),
    );

    if let Some(process) = process.as_mut() {
        report.push_str("## Memory and store\n\n");
        // A first batch brings the allocator to its working size (argon2id takes 19 MiB per
        // hash, several at once); the batch after it shows what a client itself costs.
        population.users("warmup", 8, 1, 8).await?;
        let before = process.rss_bytes().unwrap_or(0);
        progress(&format!("registering {} idle clients", plan.idle_clients));
        let registering = Instant::now();
        population.users("idle", plan.idle_clients, 1, 8).await?;
        let took = registering.elapsed();
        let after = process.rss_bytes().unwrap_or(0);
        let _ = writeln!(
            report,
            "- Resident memory: {:.1} MiB before, {:.1} MiB after registering {} more clients (each publishing its connection and key packages) → **{:.0} bytes per idle client**; registration ran at {:.1} clients/s (argon2id on the server).",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            plan.idle_clients,
            after.saturating_sub(before) as f64 / plan.idle_clients as f64,
            plan.idle_clients as f64 / took.as_secs_f64(),
        );
        progress(&format!("queueing {} messages", plan.queued));
        let store_before = process.store_bytes();
        scenarios::fill_queue(&pairs[0], plan.queued, plan.payload, 16).await?;
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
        let _ = writeln!(
            report,
            "- Start-up with {} queued messages (and everything above) in the store: **{}** from start to listening.",
            plan.queued,
            ms(startup),
        );
    }
    report.push_str("\nNot measured yet: figures across two federated servers.\n");
    std::fs::write(args.out.join("report.md"), &report).map_err(|e| e.to_string())?;
    progress(&format!(
        "report written to {}",
        args.out.join("report.md").display()
    ));
    Ok(report)
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
