//! The hostile load's attacks on the delivery service: requests without tokens from many
//! addresses (refused before anything is decoded), and real MLS paid with the attackers' own
//! tokens (group creations, messages and commits, bounded by their budgets).

use std::{sync::Arc, time::Instant};

use roost_client::Client;
use roost_protocol::UserName;

use super::{attackers, flood, flood_http, http_from, Attack, Tally};

/// Unpaid DS requests: NET, and how many addresses.
const UNPAID_DS: (u8, u8) = (6, 4);

/// What a client library call came to, as a tally counts it.
fn outcome<T>(result: Result<T, roost_client::Error>, ok: &str) -> String {
    match result {
        Ok(_) => ok.into(),
        Err(e) => match e.status() {
            Some(status) => format!("{status} {}", e.code()),
            None => format!("failed: {}", e.code()),
        },
    }
}

/// Group creations, commits and messages without tokens, from several addresses of their own:
/// refused before anything is decoded.
pub(super) fn unpaid_ds(url: &str, until: Instant) -> Attack {
    let (net, addresses) = UNPAID_DS;
    let paths = [
        roost_protocol::ds::DS_GROUPS.to_string(),
        roost_protocol::ds::ds_commit(b"some group"),
        roost_protocol::ds::ds_messages(b"some group"),
    ];
    let tasks = (1..=addresses)
        .map(|address| {
            let (http, url, paths) = (http_from(net, address), url.to_owned(), paths.clone());
            let mut next = 0;
            flood_http(until, move || {
                next += 1;
                http.post(format!("{url}{}", paths[next % paths.len()]))
                    .body(vec![0x42; 4096])
            })
        })
        .collect();
    Attack::new(
        "group creations, commits and messages of 4 KiB at the DS, without tokens".into(),
        format!("127.0.{net}.1–{addresses}, a task each"),
        tasks,
    )
}

/// Real MLS at the DS, paid with tokens the attackers' own server issued them (so bounded by
/// their budgets): a user creating groups as fast as it can; another sending messages into a
/// group of its own and committing, adding its accomplice and removing it again.
pub(super) fn paid_ds(
    flooder: Arc<Vec<Client>>,
    attacker: Arc<Vec<Client>>,
    accomplice: UserName,
    until: Instant,
) -> Vec<Attack> {
    let creations = flood(until, move || {
        let flooder = flooder.clone();
        async move {
            let name = format!("flood {:x}", rand::random::<u64>());
            outcome(flooder[0].groups().create(&name).await, "201 created")
        }
    });
    // One group for each flood: both clients are the attacker's, each joins the other's
    // groups, and a name must name one group.
    let tag = rand::random::<u32>();
    let (message_group, commit_group) = (format!("messages {tag:x}"), format!("commits {tag:x}"));
    let (messenger, committer) = (attacker.clone(), attacker);
    let messages = flood(until, move || {
        let (attacker, group) = (messenger.clone(), message_group.clone());
        async move {
            let groups = attacker[0].groups();
            if groups.members(&group).await.is_err() {
                if let Err(e) = groups.create(&group).await {
                    return outcome(Err::<(), _>(e), "");
                }
            }
            outcome(groups.send(&group, "flood").await, "202 accepted")
        }
    });
    // Adding and removing are futures rustc cannot prove `Send` for everywhere, so this
    // flood runs on a thread of its own with the attacker's other client (whose connections
    // then live and die with that thread's runtime).
    let commits = attackers().spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the commit flood");
        runtime.block_on(async move {
            let (client, mut tally) = (&committer[1], Tally::default());
            while Instant::now() < until {
                let groups = client.groups();
                let is_in = match groups.members(&commit_group).await {
                    Ok(members) => Ok(members.contains(&accomplice)),
                    Err(_) => groups.create(&commit_group).await.map(|_| false),
                };
                let change = match is_in {
                    Ok(true) => groups.remove(&commit_group, &accomplice).await,
                    Ok(false) => groups.add(&commit_group, &accomplice).await,
                    Err(e) => Err(e),
                };
                tally.count(outcome(change, "200 committed"));
            }
            tally
        })
    });
    let from = "127.0.0.1 (the client library)".to_string();
    vec![
        Attack::new(
            "real MLS groups created, paid with the flooding user's tokens".into(),
            from.clone(),
            vec![creations],
        ),
        Attack::new(
            "messages into the attacker's own group, and commits adding and removing its \
             accomplice, paid with the attacker's tokens"
                .into(),
            from,
            vec![messages, commits],
        ),
    ]
}
