//! The report's sections for the scenarios that start servers of their own: two federated
//! servers, the hostile load, the crash soak. Each runs its scenario and writes its figures up,
//! as `main` does for the scenarios on one server.

use std::{fmt::Write as _, time::Duration};

use roost_protocol::federation::Resolver;

use crate::{
    chat_figures, connections_table,
    cpu::CpuMeter,
    fanout_row, hostile, progress, roost_binary, scenarios,
    scenarios::Population,
    server::{self, RoostProcess, ServerOptions},
    soak::{self, SoakFigures},
    stats::{mib, ms},
    targets::{self, Figure, Targets},
    Args, Plan, CHAT_SENDERS, FANOUT_TABLE,
};

/// Connections, fan-out and chat across two servers this tool starts, `a.test` and `b.test`:
/// the group lives on a's DS, its other members are on b.
pub(crate) async fn federation(
    args: &Args,
    plan: &Plan,
    report: &mut String,
    targets: &mut Targets,
) -> Result<(), String> {
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
        let cpu = CpuMeter::start(&servers);
        let figures = scenarios::fanout(&group, plan.rounds).await?;
        let cpu = cpu.per_operation(figures.len());
        report.push_str(&fanout_row(members, &figures, &cpu));
        if members == targets::FEDERATED_MEMBERS {
            let median = figures.percentile(50.0).as_secs_f64() * 1e3;
            targets.record(Figure::FederatedFanout, median);
        }
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
/// it ([`hostile`](mod@crate::hostile)).
pub(crate) async fn hostile(args: &Args, plan: &Plan, report: &mut String) -> Result<(), String> {
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

/// Chat while the server is killed at random moments ([`soak`]); answers whether nothing was
/// lost, duplicated or reordered.
pub(crate) async fn crash_soak(args: &Args, report: &mut String) -> Result<bool, String> {
    let kills = args.kills.unwrap_or(if args.quick { 5 } else { 100 });
    progress(&format!("crash soak: {kills} kills"));
    let mut process = RoostProcess::start(&roost_binary(args)?, ServerOptions::default())?;
    let figures = soak::crash_soak(&mut process, kills, 0x50AC).await?;
    report.push_str(&soak_section(&figures));
    Ok(figures.sound())
}

/// The report's section for a soak.
fn soak_section(figures: &SoakFigures) -> String {
    let mut text = format!(
        "## Crash soak\n\nOne user chats with another without pause (each send waits for the last) while `roost` is killed with SIGKILL {} times at random moments, 20–270 ms apart, and started again on the same store each time. Then both clients sync until every change settles, and every message is counted in both clients' logs.\n\n| kills | store opened | acknowledged | unanswered, settled by a later sync | refused (server down) | lost | duplicated | out of order | restart p50 | restart max | took |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n| {} | {} of {} | {} | {} | {} | **{}** | **{}** | **{}** | {} | {} | {:.0} s |\n",
        figures.kills,
        figures.kills,
        figures.restarts.len(),
        figures.kills,
        figures.acknowledged,
        figures.unconfirmed,
        figures.not_sent,
        figures.lost.len(),
        figures.duplicated.len(),
        figures.out_of_order,
        ms(figures.restarts.percentile(50.0)),
        ms(figures.restarts.percentile(100.0)),
        figures.elapsed.as_secs_f64(),
    );
    for problem in figures
        .lost
        .iter()
        .chain(&figures.duplicated)
        .chain(&figures.unexpected)
        .take(20)
    {
        text.push_str(&format!("\n- {problem}"));
    }
    text.push('\n');
    text
}
