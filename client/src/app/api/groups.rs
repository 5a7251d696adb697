//! Named groups: list, create, a group's members and messages, send, add and remove members,
//! leave. A group is named in paths by its id's hex (names need not be unique).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{client, json_body, message_json, text_body, user_body, user_name, Answer, State};
use crate::app::live::Changed;

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/api/groups", web::get().to(list))
        .route("/api/groups", web::post().to(create))
        .route("/api/groups/{id}", web::get().to(show))
        .route("/api/groups/{id}/messages", web::post().to(send))
        .route("/api/groups/{id}/members", web::post().to(add))
        .route("/api/groups/{id}/members/{user}", web::delete().to(remove))
        .route("/api/groups/{id}/leave", web::post().to(leave));
}

fn groups_changed() -> Changed {
    Changed {
        groups: true,
        ..Changed::default()
    }
}

async fn list(state: State) -> Answer {
    let listed: Vec<_> = client(&state)?
        .groups()
        .list()
        .await?
        .iter()
        .map(|g| {
            json!({
                "id": hex::encode(&g.group_id),
                "name": g.name,
                "removed": g.removed,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "groups": listed })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    name: String,
}

async fn create(state: State, payload: web::Payload) -> Answer {
    let client = client(&state)?;
    let Create { name } = json_body(payload, r#"{"name": "…"}"#).await?;
    let group = client.groups().create(name.trim()).await?;
    state.live.tell(groups_changed());
    Ok(HttpResponse::Ok().json(json!({
        "id": hex::encode(&group.group_id),
        "name": group.name,
    })))
}

/// A group's name, members (by display name, with the user name) and messages.
async fn show(state: State, id: web::Path<String>) -> Answer {
    let client = client(&state)?;
    let group = client.groups().find(&id)?;
    let members = match group.removed {
        true => Vec::new(),
        false => {
            let mut members = Vec::new();
            for user in client.groups().members(&id).await? {
                members.push(json!({
                    "user": user.to_string(),
                    "display_name": client.profiles().display_name(&user)?,
                }));
            }
            members
        }
    };
    let messages = client.groups().messages(&id).await?;
    Ok(HttpResponse::Ok().json(json!({
        "id": hex::encode(&group.group_id),
        "name": group.name,
        "removed": group.removed,
        "members": members,
        "messages": messages.iter().map(message_json).collect::<Vec<_>>(),
    })))
}

async fn send(state: State, id: web::Path<String>, payload: web::Payload) -> Answer {
    let client = client(&state)?;
    let text = text_body(payload).await?;
    let sent = client.groups().send(&id, &text).await?;
    Ok(HttpResponse::Ok().json(message_json(&sent)))
}

async fn add(state: State, id: web::Path<String>, payload: web::Payload) -> Answer {
    let client = client(&state)?;
    let user = user_body(payload).await?;
    let clients = client.groups().add(&id, &user).await?;
    state.live.tell(groups_changed());
    Ok(HttpResponse::Ok().json(json!({ "added": user.to_string(), "clients": clients })))
}

async fn remove(state: State, path: web::Path<(String, String)>) -> Answer {
    let client = client(&state)?;
    let (id, user) = path.into_inner();
    let user = user_name(&user)?;
    let clients = client.groups().remove(&id, &user).await?;
    state.live.tell(groups_changed());
    Ok(HttpResponse::Ok().json(json!({ "removed": user.to_string(), "clients": clients })))
}

async fn leave(state: State, id: web::Path<String>) -> Answer {
    let clients = client(&state)?.groups().leave(&id).await?;
    state.live.tell(groups_changed());
    Ok(HttpResponse::Ok().json(json!({ "left": id.into_inner(), "clients": clients })))
}
