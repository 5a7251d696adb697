//! Contacts, connection requests and the chat with each contact.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::{
    avatar, client, message_json, profile_json, text_body, user_body, user_name, Answer, State,
};
use crate::{app::live::Changed, profiles::display_name};

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/api/contacts", web::get().to(contacts))
        .route(
            "/api/contacts/{user}/profile",
            web::get().to(contact_profile),
        )
        .route("/api/contacts/{user}/avatar", web::get().to(contact_avatar))
        .route("/api/connect", web::post().to(connect))
        .route("/api/requests", web::get().to(requests))
        .route("/api/requests/{id}/profile", web::get().to(request_profile))
        .route("/api/requests/{id}/avatar", web::get().to(request_avatar))
        .route("/api/requests/{id}/accept", web::post().to(accept))
        .route("/api/requests/{id}/decline", web::post().to(decline))
        .route("/api/chat/{user}", web::get().to(chat))
        .route("/api/chat/{user}", web::post().to(send));
}

/// This user's contacts, each by display name beside its user name.
async fn contacts(state: State) -> Answer {
    let client = client(&state)?;
    let mut listed = Vec::new();
    for contact in client.contacts().list().await? {
        let Some(peer) = contact.peer else { continue };
        let profile = client.profiles().shared(&peer)?;
        listed.push(json!({
            "user": peer.to_string(),
            "display_name": display_name(&peer, profile.as_ref()),
            "avatar": profile.and_then(|p| p.avatar_format()).is_some(),
            "since": contact.since.0,
        }));
    }
    Ok(HttpResponse::Ok().json(json!({ "contacts": listed })))
}

/// The profile a contact shared (self-declared: it says what the contact claims).
async fn contact_profile(state: State, user: web::Path<String>) -> Answer {
    let client = client(&state)?;
    let user = user_name(&user)?;
    let profile = client
        .profiles()
        .of_contact(&user)
        .await?
        .ok_or_else(|| crate::error::Error::NoProfile(user.to_string()))?;
    Ok(HttpResponse::Ok().json(profile_json(&profile, true)))
}

async fn contact_avatar(state: State, user: web::Path<String>) -> Answer {
    let client = client(&state)?;
    let user = user_name(&user)?;
    avatar(client.profiles().of_contact(&user).await?.as_ref())
}

/// Asks a user to connect.
async fn connect(state: State, payload: web::Payload) -> Answer {
    let client = client(&state)?;
    let user = user_body(payload).await?;
    let connected = client.connections().connect(&user).await?;
    state.live.tell(Changed {
        groups: true,
        ..Changed::default()
    });
    Ok(HttpResponse::Ok().json(json!({
        "peer": connected.peer.to_string(),
        "invited": connected.invited,
    })))
}

/// Reads new connection requests, then lists those waiting for a decision.
async fn requests(state: State) -> Answer {
    let client = client(&state)?;
    client.connections().requests().await?;
    let pending: Vec<_> = client
        .connections()
        .pending()
        .await?
        .iter()
        .map(|request| {
            json!({
                "id": request.id,
                "from": request.from().to_string(),
                "received_at": request.received_at.0,
                "has_profile": request.package.body.initiator_profile.is_some(),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "requests": pending })))
}

/// The sender's profile, fetched now because the user asked (once: its avatar is served from
/// what was fetched).
async fn request_profile(state: State, id: web::Path<String>) -> Answer {
    let profile = client(&state)?.profiles().of_request(&id).await?;
    state.opened_requests.keep(&id, profile.clone());
    Ok(HttpResponse::Ok().json(profile_json(&profile, true)))
}

/// The avatar of a request's sender, once its profile was asked for.
async fn request_avatar(state: State, id: web::Path<String>) -> Answer {
    let profile = match state.opened_requests.get(&id) {
        Some(profile) => profile,
        None => client(&state)?.profiles().of_request(&id).await?,
    };
    avatar(Some(&profile))
}

async fn accept(state: State, id: web::Path<String>) -> Answer {
    let accepted = client(&state)?.connections().accept(&id).await?;
    state.opened_requests.forget(&id);
    state.live.tell(Changed {
        requests: true,
        groups: true,
        ..Changed::default()
    });
    Ok(HttpResponse::Ok().json(json!({
        "peer": accepted.peer.to_string(),
        "own_clients_added": accepted.own_clients_added,
    })))
}

async fn decline(state: State, id: web::Path<String>) -> Answer {
    client(&state)?.connections().decline(&id).await?;
    state.opened_requests.forget(&id);
    state.live.tell(Changed {
        requests: true,
        ..Changed::default()
    });
    Ok(HttpResponse::Ok().json(json!({ "declined": id.into_inner() })))
}

/// The chat with a contact as stored (the live loop keeps it current).
async fn chat(state: State, user: web::Path<String>) -> Answer {
    let client = client(&state)?;
    let messages = client.chat().messages(&user_name(&user)?).await?;
    Ok(HttpResponse::Ok()
        .json(json!({ "messages": messages.iter().map(message_json).collect::<Vec<_>>() })))
}

async fn send(state: State, user: web::Path<String>, payload: web::Payload) -> Answer {
    let client = client(&state)?;
    let user = user_name(&user)?;
    let text = text_body(payload).await?;
    let sent = client.chat().send(&user, &text).await?;
    Ok(HttpResponse::Ok().json(message_json(&sent)))
}
