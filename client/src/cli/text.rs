//! Each command's output for people: one line per item, times in UTC, control characters
//! escaped.

use roost_protocol::{
    api::{ConnectionPackageCount, Notice, QueueItem},
    connection::ConnectionPackage,
    Timestamp, UserName,
};

use super::Outcome;
use crate::{
    account::{ClientEntry, WhoAmI},
    connections::{Accepted, JoinedVia, Rejected},
    groups::GroupSummary,
    inbox::{Received, SyncReport},
    store::{Contact, PendingRequest, StoredMessage},
};

impl Outcome {
    /// Lines for people.
    pub fn to_text(&self) -> String {
        match self {
            Outcome::Enrolled {
                user,
                client_id,
                server_url,
                packages,
            } => {
                let mut text =
                    format!("user:      {user}\nclient id: {client_id}\nserver:    {server_url}");
                if let Some(Ok(count)) = packages {
                    text.push_str(&format!("\n{}", package_count_text(count)));
                }
                text
            }
            Outcome::Clients(clients) => lines(clients, "No clients.", client_text),
            Outcome::Deleted(id) => format!("Deleted client {id}."),
            Outcome::WhoAmI(me) => whoami_text(me),
            Outcome::Sent { target, seq } => {
                format!("Queued for client {target} as message {seq}.")
            }
            Outcome::Inbox(items) => lines(items, "No messages.", received_text),
            Outcome::PackageCount(count, key_packages) => format!(
                "{}\n{}",
                package_count_text(count),
                counted("key packages", key_packages)
            ),
            Outcome::Requests { pending, rejected } => requests_text(pending, rejected),
            Outcome::Declined(id) => format!("Declined request {id}; nothing was sent."),
            Outcome::AppStopped => "The app stopped.".into(),
            Outcome::Profile {
                user,
                profile,
                self_declared,
            } => profile_text(user, profile, *self_declared),
            Outcome::Discovered { user, packages } => discovered_text(user, packages),
            Outcome::Connected(c) => format!(
                "Asked {} to connect: {} of their client(s) invited, {} of your other client(s) \
                 added; connection group {}",
                c.peer,
                c.invited,
                c.own_clients_added,
                hex::encode(&c.group_id)
            ),
            Outcome::Accepted(a) => accepted_text(a),
            Outcome::Unsynced(shown, _) => shown.to_text(),
            Outcome::Synced(r) => synced_text(r),
            Outcome::MessageSent(message) => format!("Sent: {}", message_text(message)),
            Outcome::Messages(messages) => lines(messages, "No messages.", message_text),
            Outcome::Watched(shown) => format!("Stopped watching; {shown} message(s) shown."),
            Outcome::Contacts(contacts) => lines(contacts, "No connections.", contact_text),
            Outcome::Groups(groups) => lines(groups, "No groups.", group_text),
            Outcome::GroupCreated(g) => format!(
                "Created the group {} (id {}).",
                printable(&g.name),
                hex::encode(&g.group_id)
            ),
            Outcome::GroupChanged {
                group,
                user,
                added,
                clients,
            } => {
                let (done, to) = if *added {
                    ("Added", "to")
                } else {
                    ("Removed", "from")
                };
                format!(
                    "{done} {user} ({clients} client(s)) {to} {}.",
                    printable(group)
                )
            }
            // The user name always stands beside a display name: anyone can claim any name.
            Outcome::GroupMembers(users) => lines(users, "", |(user, name)| match name {
                Some(name) => format!("{} ({user})", printable(name)),
                None => user.to_string(),
            }),
            Outcome::TokenRotated(shared) => format!(
                "New friendship token; shared with {shared} connection(s) (the rest at the next sync)."
            ),
            Outcome::GroupLeft { group, clients } => format!(
                "Leaving {} ({clients} client(s)); the next member to sync completes it.",
                printable(group)
            ),
        }
    }
}

/// One line per item, or `empty` if there is none.
fn lines<T>(items: &[T], empty: &str, line: impl Fn(&T) -> String) -> String {
    if items.is_empty() {
        return empty.to_owned();
    }
    items.iter().map(line).collect::<Vec<_>>().join("\n")
}

fn client_text(c: &ClientEntry) -> String {
    format!(
        "{}  added {}  valid until {}{}",
        c.client_id,
        format_time(c.added_at),
        format_time(c.valid_until),
        if c.this_client { "  (this client)" } else { "" }
    )
}

fn whoami_text(me: &WhoAmI) -> String {
    format!(
        "user:      {}\nclient id: {}\nserver:    {}\ncredential valid until {}{}",
        me.user,
        me.client_id,
        me.server_url,
        format_time(me.valid_until),
        if me.valid_now { "" } else { " (NOT valid now)" }
    )
}

fn requests_text(pending: &[PendingRequest], rejected: &[Rejected]) -> String {
    let mut lines: Vec<String> = pending
        .iter()
        .map(|r| {
            format!(
                "{}  from {}  received {}",
                r.id,
                r.from(),
                format_time(r.received_at)
            )
        })
        .collect();
    if lines.is_empty() {
        lines.push("No connection requests.".into());
    }
    lines.extend(rejected.iter().map(|r| {
        format!(
            "rejected #{}: {} ({})",
            r.seq,
            printable(&r.reason.to_string()),
            r.reason.code()
        )
    }));
    lines.join("\n")
}

fn discovered_text(user: &UserName, packages: &[ConnectionPackage]) -> String {
    let mut lines = vec![format!(
        "{user}: {} client(s), every package verified",
        packages.len()
    )];
    lines.extend(packages.iter().map(|p| {
        format!(
            "{}  valid until {}{}",
            p.client_id(),
            format_time(p.body.validity.not_after),
            if p.body.last_resort {
                "  (last resort)"
            } else {
                ""
            }
        )
    }));
    lines.join("\n")
}

fn accepted_text(a: &Accepted) -> String {
    let group = hex::encode(&a.group_id);
    let mut text = match a.via {
        JoinedVia::ExternalCommit => format!(
            "Connected with {} (group {group}); {} of your other client(s) added.",
            a.peer, a.own_clients_added
        ),
        JoinedVia::Welcome => format!(
            "Connected with {}: another of your clients had accepted; joined its group {group}.",
            a.peer
        ),
        JoinedVia::AlreadyConnected => {
            format!("Already connected with {} (group {group}).", a.peer)
        }
    };
    if let Some(e) = &a.own_clients_error {
        text.push_str(&format!(
            "\nAdding your other clients failed: {}",
            printable(e)
        ));
    }
    text
}

fn synced_text(r: &SyncReport) -> String {
    let mut lines = vec![format!(
        "Joined {} group(s), applied {} commit(s), received {} message(s).",
        r.joined.len(),
        r.commits,
        r.received.len()
    )];
    if !r.rejoined.is_empty() {
        lines.push(format!(
            "Rejoined {} group(s) after a change this client could not process (messages in between are unread).",
            r.rejoined.len()
        ));
    }
    if !r.removed_from.is_empty() {
        lines.push(format!("Removed from {} group(s).", r.removed_from.len()));
    }
    if !r.settled.is_empty() {
        lines.push(format!(
            "{} change(s) sent earlier went through.",
            r.settled.len()
        ));
    }
    if r.unsettled > 0 {
        lines.push(format!(
            "{} change(s) still await their server's answer; the next sync tries again.",
            r.unsettled
        ));
    }
    lines.extend(r.failed.iter().map(|f| format!("failed: {}", printable(f))));
    lines.extend(r.other.iter().map(received_text));
    lines.join("\n")
}

fn contact_text(c: &Contact) -> String {
    format!(
        "{}  group {}  since {}",
        c.peer
            .as_ref()
            .map_or("(not known yet)".to_owned(), ToString::to_string),
        hex::encode(&c.group_id),
        format_time(c.since)
    )
}

fn group_text(g: &GroupSummary) -> String {
    let state = if g.removed {
        "removed from it".to_owned()
    } else {
        format!("{} member client(s)", g.members)
    };
    format!(
        "{}  id {}  {state}  since {}",
        printable(&g.name),
        hex::encode(&g.group_id),
        format_time(g.since)
    )
}

fn package_count_text(count: &ConnectionPackageCount) -> String {
    counted("connection packages", count)
}

fn counted(what: &str, count: &ConnectionPackageCount) -> String {
    format!(
        "{what} on the server: {} one-time, {}",
        count.remaining,
        if count.has_last_resort {
            "and a last-resort one"
        } else {
            "NO last-resort one"
        }
    )
}

pub(super) fn received_text(received: &Received) -> String {
    let seq = received.seq;
    match &received.item {
        Ok(QueueItem::Notice(Notice::ClientAdded { client_id })) => {
            format!("#{seq} client {client_id} was added")
        }
        Ok(QueueItem::Notice(Notice::ClientDeleted { client_id })) => {
            format!("#{seq} client {client_id} was deleted")
        }
        Ok(QueueItem::Notice(Notice::MessagesExpired { count, after_secs })) => format!(
            "#{seq} {count} message(s) waited longer than the server keeps them ({}) and were dropped unread",
            duration(*after_secs)
        ),
        Ok(QueueItem::FromOwnClient { sender, payload }) => format!(
            "#{seq} from client {sender}: {}",
            printable(&String::from_utf8_lossy(payload))
        ),
        Ok(QueueItem::ConnectionRequest(_)) => {
            format!("#{seq} a connection request in the message queue (ignored)")
        }
        Ok(QueueItem::Group(_)) => format!("#{seq} a group message (not handled yet)"),
        Err(e) => format!("#{seq} unreadable message ({e}); acknowledged anyway"),
    }
}

/// Escapes control characters, so a message cannot drive the terminal.
pub(super) fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// `YYYY-MM-DD HH:MM:SS UTC`, without a date library.
pub(super) fn format_time(t: Timestamp) -> String {
    let days = t.0 / 86_400;
    let secs = t.0 % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

pub(super) fn message_text(message: &StoredMessage) -> String {
    format!(
        "{}  {}: {}",
        format_time(message.at),
        message
            .from
            .as_ref()
            .map_or("(unknown sender)".to_owned(), ToString::to_string),
        printable(&message.text)
    )
}

/// A span of time as a person says it: "30 days", "2 hours", "45 seconds".
fn duration(secs: u64) -> String {
    let (amount, unit) = match secs {
        s if s >= 86_400 && s % 86_400 == 0 => (s / 86_400, "day"),
        s if s >= 3_600 && s % 3_600 == 0 => (s / 3_600, "hour"),
        s if s >= 60 && s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    let plural = if amount == 1 { "" } else { "s" };
    format!("{amount} {unit}{plural}")
}

/// A profile as a person reads it; someone else's is marked as their own claim.
fn profile_text(
    user: &UserName,
    profile: &roost_protocol::profile::Profile,
    self_declared: bool,
) -> String {
    let or_none = |text: &str| match text {
        "" => "(none)".to_owned(),
        text => printable(text),
    };
    let avatar = match (profile.avatar_format(), &profile.avatar) {
        (Some(format), Some(bytes)) => format!("{}, {} bytes", format.mime_type(), bytes.len()),
        _ => "(none)".to_owned(),
    };
    let heading = match self_declared {
        true => format!("{user} says of itself (not checked by anyone):"),
        false => format!("Your profile ({user}):"),
    };
    format!(
        "{heading}\n  display name: {}\n  about:        {}\n  avatar:       {avatar}",
        or_none(&profile.display_name),
        or_none(&profile.about),
    )
}
