//! The stable JSON shape of each command's output.

use roost_protocol::api::{Notice, QueueItem};
use serde_json::{json, Value};

use super::Outcome;
use crate::{inbox::Received, store::StoredMessage};

impl Outcome {
    /// The stable JSON shape of each command's output.
    pub fn to_json(&self) -> Value {
        match self {
            Outcome::Enrolled {
                user, client_id, ..
            } => json!({ "user": user.to_string(), "client_id": client_id.to_string() }),
            Outcome::Clients(clients) => json!({
                "clients": clients.iter().map(|c| json!({
                    "client_id": c.client_id.to_string(),
                    "added_at": c.added_at.0,
                    "valid_until": c.valid_until.0,
                    "this_client": c.this_client,
                })).collect::<Vec<_>>()
            }),
            Outcome::Deleted(id) => json!({ "deleted": id.to_string() }),
            Outcome::WhoAmI(me) => json!({
                "user": me.user.to_string(),
                "client_id": me.client_id.to_string(),
                "server": me.server_url,
                "valid_until": me.valid_until.0,
            }),
            Outcome::Sent { seq, .. } => json!({ "seq": seq }),
            Outcome::Inbox(items) => {
                json!({ "items": items.iter().map(received_json).collect::<Vec<_>>() })
            }
            Outcome::PackageCount(count, key_packages) => json!({
                "remaining": count.remaining,
                "has_last_resort": count.has_last_resort,
                "key_packages": {
                    "remaining": key_packages.remaining,
                    "has_last_resort": key_packages.has_last_resort,
                },
            }),
            Outcome::Requests { pending, rejected } => json!({
                "requests": pending.iter().map(|r| json!({
                    "id": r.id,
                    "from": r.from().to_string(),
                    "received_at": r.received_at.0,
                })).collect::<Vec<_>>(),
                "rejected": rejected.iter().map(|r| json!({
                    "seq": r.seq,
                    "code": r.reason.code(),
                    "reason": r.reason.to_string(),
                })).collect::<Vec<_>>(),
            }),
            Outcome::Declined(id) => json!({ "declined": id }),
            Outcome::AppStopped => json!({ "app": "stopped" }),
            Outcome::Profile {
                user,
                profile,
                self_declared,
            } => json!({
                "user": user.to_string(),
                "display_name": profile.display_name,
                "about": profile.about,
                "avatar": profile.avatar_format().zip(profile.avatar.as_ref()).map(|(format, bytes)| json!({
                    "type": format.mime_type(),
                    "bytes": bytes.len(),
                })),
                "self_declared": self_declared,
            }),
            Outcome::Discovered { user, packages } => json!({
                "user": user.to_string(),
                "clients": packages.iter().map(|p| json!({
                    "client_id": p.client_id().to_string(),
                    "valid_until": p.body.validity.not_after.0,
                    "last_resort": p.body.last_resort,
                })).collect::<Vec<_>>(),
            }),
            Outcome::Connected(c) => json!({
                "group_id": hex::encode(&c.group_id),
                "peer": c.peer.to_string(),
                "invited": c.invited,
                "own_clients_added": c.own_clients_added,
            }),
            Outcome::Accepted(a) => json!({
                "group_id": hex::encode(&a.group_id),
                "peer": a.peer.to_string(),
                "via": a.via.as_str(),
                "own_clients_added": a.own_clients_added,
                "own_clients_error": a.own_clients_error,
            }),
            Outcome::Unsynced(shown, _) => shown.to_json(),
            Outcome::Synced(r) => json!({
                "joined": r.joined.iter().map(hex::encode).collect::<Vec<_>>(),
                "commits": r.commits,
                "messages": r.messages,
                "removed_from": r.removed_from.iter().map(hex::encode).collect::<Vec<_>>(),
                "rejoined": r.rejoined.iter().map(hex::encode).collect::<Vec<_>>(),
                "settled": r.settled.len(),
                "unsettled": r.unsettled,
                "failed": r.failed,
                "other": r.other.iter().map(received_json).collect::<Vec<_>>(),
            }),
            Outcome::MessageSent(message) => message_json(message),
            Outcome::Messages(messages) => json!({
                "messages": messages.iter().map(message_json).collect::<Vec<_>>(),
            }),
            Outcome::Watched(shown) => json!({ "watched": shown }),
            Outcome::Contacts(contacts) => json!({
                "contacts": contacts.iter().map(|c| json!({
                    "group_id": hex::encode(&c.group_id),
                    "peer": c.peer.as_ref().map(ToString::to_string),
                    "since": c.since.0,
                })).collect::<Vec<_>>(),
            }),
            Outcome::Groups(groups) => json!({
                "groups": groups.iter().map(|g| json!({
                    "group_id": hex::encode(&g.group_id),
                    "name": g.name,
                    "members": g.members,
                    "removed": g.removed,
                    "since": g.since.0,
                })).collect::<Vec<_>>(),
            }),
            Outcome::GroupCreated(g) => json!({
                "group_id": hex::encode(&g.group_id),
                "name": g.name,
            }),
            Outcome::GroupChanged {
                group,
                user,
                added,
                clients,
            } => json!({
                "group": group,
                "user": user.to_string(),
                if *added { "added" } else { "removed" }: clients,
            }),
            Outcome::GroupLeft { group, clients } => json!({
                "group": group,
                "left": clients,
            }),
            Outcome::TokenRotated(shared) => json!({ "shared_with": shared }),
            Outcome::GroupMembers(users) => json!({
                "members": users.iter().map(|(user, name)| json!({
                    "user": user.to_string(),
                    "display_name": name,
                })).collect::<Vec<_>>(),
            }),
        }
    }

    /// Something that went wrong although the command did its job, for stderr: as JSON
    /// `{"warning": CODE, "error": CODE, "message": TEXT}`.
    pub fn warning(&self) -> Option<Value> {
        match self {
            Outcome::Enrolled {
                packages: Some(Err((code, message))),
                ..
            } => Some(json!({
                "warning": "packages_not_published",
                "error": code,
                "message": format!(
                    "the client is registered, but publishing its connection packages failed, \
                     so others cannot find it yet (run `roost-client publish-packages`): {message}"
                ),
            })),
            Outcome::Unsynced(_, (code, message)) => Some(json!({
                "warning": "sync_failed",
                "error": code,
                "message": format!("this may be out of date: syncing failed: {message}"),
            })),
            _ => None,
        }
    }
}

pub(super) fn message_json(message: &StoredMessage) -> Value {
    json!({
        "from": message.from.as_ref().map(ToString::to_string),
        "text": message.text,
        "at": message.at.0,
        "seq": message.seq,
    })
}

pub(super) fn received_json(received: &Received) -> Value {
    let seq = received.seq;
    match &received.item {
        Ok(QueueItem::Notice(Notice::ClientAdded { client_id })) => {
            json!({ "seq": seq, "kind": "client_added", "client_id": client_id.to_string() })
        }
        Ok(QueueItem::Notice(Notice::ClientDeleted { client_id })) => {
            json!({ "seq": seq, "kind": "client_deleted", "client_id": client_id.to_string() })
        }
        Ok(QueueItem::Notice(Notice::MessagesExpired { count, after_secs })) => json!({
            "seq": seq,
            "kind": "messages_expired",
            "count": count,
            "after_secs": after_secs,
        }),
        Ok(QueueItem::FromOwnClient { sender, payload }) => json!({
            "seq": seq,
            "kind": "from_own_client",
            "sender": sender.to_string(),
            "text": String::from_utf8_lossy(payload),
        }),
        // Connection requests belong in the connection queue; one here is out of place.
        Ok(QueueItem::ConnectionRequest(_)) => json!({ "seq": seq, "kind": "connection_request" }),
        // Group messages and Welcomes are not handled by this command line yet.
        Ok(QueueItem::Group(_)) => json!({ "seq": seq, "kind": "group" }),
        Err(e) => json!({ "seq": seq, "kind": "unreadable", "reason": e.to_string() }),
    }
}
