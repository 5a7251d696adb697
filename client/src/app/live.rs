//! Live updates: one loop waits for news at the homeserver (without holding the client's locks,
//! see [`crate::live`]), syncs when some arrives — the same sync as `roost-client watch` — and
//! tells every open page through server-sent events: `status` (enrolled, the homeserver
//! reachable or why not) when it changes and on connecting, and `changed` (what to reload) after
//! a sync that brought something.

use std::{convert::Infallible, time::Duration};

use actix_web::{http::header, web, HttpResponse};
use futures_util::stream;
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use super::state::AppState;
use crate::{client::Client, error::Error};

/// How long one wait for news lasts (the homeserver answers at once when there is some).
const WAIT: Duration = Duration::from_secs(25);
/// A sync even without news, for the upkeep it does (leaf renewal, pending changes).
const RESYNC: Duration = Duration::from_secs(300);
/// Pauses after a failure, doubling up to the longest.
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const LONGEST_PAUSE: Duration = Duration::from_secs(30);
/// A comment line this often keeps an idle event stream open through proxies and shows a
/// closed one.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Whether the app can do anything now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Status {
    /// This device is registered (otherwise the page shows the first run).
    pub enrolled: bool,
    /// The homeserver answered the last time it was asked.
    pub online: bool,
    /// Why not, in words for the user.
    pub problem: Option<String>,
}

/// What a sync brought, for the pages to reload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changed {
    /// Chat messages arrived (the conversations' pages reload them).
    pub messages: bool,
    /// New connection requests.
    pub requests: bool,
    /// Groups or contacts changed: joined, left, members added or removed, a profile shared.
    pub groups: bool,
}

/// The loop's side of the event streams.
pub struct Live {
    status: watch::Sender<Status>,
    changed: broadcast::Sender<Changed>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            status: watch::Sender::new(Status::default()),
            changed: broadcast::Sender::new(64),
        }
    }
}

impl Live {
    pub(super) fn set_enrolled(&self) {
        self.status.send_modify(|s| {
            s.enrolled = true;
            s.online = true;
        });
    }

    fn report(&self, outcome: &Result<Changed, Error>) {
        let (online, problem) = match outcome {
            Ok(_) => (true, None),
            Err(e) if e.is_transient() => (
                false,
                Some(format!("Your homeserver cannot be reached: {e}")),
            ),
            Err(e) => (true, Some(e.to_string())),
        };
        self.status.send_if_modified(|s| {
            let changed = s.online != online || s.problem != problem;
            s.online = online;
            s.problem = problem;
            changed
        });
        if let Ok(changed) = outcome {
            if *changed != Changed::default() {
                // No page listening is no error.
                let _ = self.changed.send(changed.clone());
            }
        }
    }

    /// Tells the pages to reload what `changed` names, after an action of their own that
    /// other pages show too.
    pub fn tell(&self, changed: Changed) {
        let _ = self.changed.send(changed);
    }
}

/// Runs the loop for the app's life (from enrolment on).
pub async fn run(state: web::Data<AppState>) {
    let client = state.enrolled().await;
    let mut last_sync: Option<tokio::time::Instant> = None;
    let mut pause = FIRST_PAUSE;
    let mut failed = false;
    loop {
        // After a failure, a sync rather than a wait: a wait that reaches the homeserver again
        // would report it back only when its news or its time came.
        let due = failed || last_sync.is_none_or(|at| at.elapsed() >= RESYNC);
        let outcome = step(client, due).await;
        if outcome.is_ok() && due {
            last_sync = Some(tokio::time::Instant::now());
        }
        state.live.report(&outcome);
        failed = outcome.is_err();
        match outcome {
            Ok(_) => pause = FIRST_PAUSE,
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(LONGEST_PAUSE);
            }
        }
    }
}

/// One round: wait for news (or not, when a sync is `due`), then read what came.
async fn step(client: &Client, due: bool) -> Result<Changed, Error> {
    let news = match due {
        true => crate::live::News {
            messages: true,
            requests: true,
        },
        false => client.wait_for_news(WAIT).await?,
    };
    let mut changed = Changed::default();
    if news.messages {
        let report = client.sync().await?;
        changed.messages = !report.received.is_empty();
        // Any other group message may be a contact's new profile or token.
        changed.groups = !report.joined.is_empty()
            || !report.removed_from.is_empty()
            || !report.rejoined.is_empty()
            || report.commits > 0
            || report.messages > report.received.len();
    }
    if news.requests {
        changed.requests = !client.connections().requests().await?.received.is_empty();
    }
    Ok(changed)
}

/// `GET /api/events`: the event stream of one page.
pub async fn events(state: web::Data<AppState>) -> HttpResponse {
    let status = state.live.status.subscribe();
    let changed = state.live.changed.subscribe();
    // The current status first, then whatever comes.
    let first = Some(event("status", &*status.borrow()));
    let events = stream::unfold(
        (first, status, changed),
        |(first, mut status, mut changed)| async move {
            if let Some(first) = first {
                return Some((first, (None, status, changed)));
            }
            let next = tokio::select! {
                gone = status.changed() => match gone {
                    Ok(()) => event("status", &*status.borrow_and_update()),
                    Err(_) => return None,
                },
                news = changed.recv() => match news {
                    Ok(news) => event("changed", &news),
                    // Fell behind: reload everything.
                    Err(broadcast::error::RecvError::Lagged(_)) => event(
                        "changed",
                        &Changed { messages: true, requests: true, groups: true },
                    ),
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = tokio::time::sleep(KEEP_ALIVE) => ": keep-alive\n\n".to_owned(),
            };
            Some((next, (None, status, changed)))
        },
    );
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .streaming(stream::StreamExt::map(events, |text| {
            Ok::<_, Infallible>(web::Bytes::from(text))
        }))
}

fn event(name: &str, data: &impl Serialize) -> String {
    let data = serde_json::to_string(data).unwrap_or_else(|_| "{}".into());
    format!("event: {name}\ndata: {data}\n\n")
}
