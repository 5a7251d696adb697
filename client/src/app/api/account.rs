//! The first run (register, or add this device to an existing user), this user's profile and
//! its devices.

use actix_web::{web, HttpResponse};
use roost_protocol::{profile::Profile, ClientId};
use serde::Deserialize;
use serde_json::json;

use super::{
    avatar, client, json_body, profile_json, read_body, user_name, Answer, AppError, State,
};
use crate::{app::state::Enrolment, client::Client};

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/api/me", web::get().to(me))
        .route("/api/enrol", web::post().to(enrol))
        .route("/api/profile", web::get().to(own_profile))
        .route("/api/profile", web::put().to(set_profile))
        .route("/api/profile/avatar", web::get().to(own_avatar))
        .route("/api/profile/avatar", web::put().to(set_avatar))
        .route("/api/profile/avatar", web::delete().to(remove_avatar))
        .route("/api/devices", web::get().to(devices))
        .route("/api/devices/{id}", web::delete().to(remove_device));
}

fn me_json(client: &Client) -> Result<serde_json::Value, AppError> {
    let own = client.profiles().own()?.map(|own| own.profile);
    Ok(json!({
        "enrolled": true,
        "user": client.user().to_string(),
        "client_id": client.client_id().to_string(),
        "server": client.server().base_url(),
        "display_name": own.as_ref().map(|p| p.display_name.clone()),
        "avatar": own.as_ref().and_then(|p| p.avatar_format()).map(|f| f.mime_type()),
    }))
}

/// Who this device is, or `{"enrolled": false}` before the first run is done.
async fn me(state: State) -> Answer {
    match state.client() {
        Some(client) => Ok(HttpResponse::Ok().json(me_json(client)?)),
        None => Ok(HttpResponse::Ok().json(json!({ "enrolled": false }))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum Mode {
    Register,
    AddDevice,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Enrol {
    mode: Mode,
    server: String,
    user: String,
    password: String,
    #[serde(default)]
    token: Option<String>,
}

/// The first run: registers a new user, or adds this device to an existing one.
async fn enrol(state: State, payload: web::Payload) -> Answer {
    let request: Enrol = json_body(
        payload,
        r#"{"mode": "register"|"add_device", "server", "user", "password", "token"?}"#,
    )
    .await?;
    let user = user_name(&request.user)?;
    if request.password.is_empty() {
        return Err(AppError::bad("bad_password", "a password is needed"));
    }
    let how = match request.mode {
        Mode::Register => Enrolment::Register {
            token: request.token.as_deref().filter(|t| !t.is_empty()),
        },
        Mode::AddDevice => Enrolment::AddDevice,
    };
    let client = state
        .enrol(how, request.server.trim(), &user, &request.password)
        .await?;
    Ok(HttpResponse::Ok().json(me_json(client)?))
}

async fn own_profile(state: State) -> Answer {
    let own = client(&state)?.profiles().own()?;
    Ok(HttpResponse::Ok().json(match own {
        Some(own) => profile_json(&own.profile, false),
        None => json!(null),
    }))
}

async fn own_avatar(state: State) -> Answer {
    let own = client(&state)?.profiles().own()?;
    avatar(own.as_ref().map(|own| &own.profile))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileText {
    display_name: String,
    #[serde(default)]
    about: String,
}

/// Publishes this user's profile with `change` made to it; every contact gets it at the next
/// sync.
async fn publish(client: &Client, change: impl FnOnce(&mut Profile)) -> Answer {
    let profile = client.profiles().update(change).await?;
    Ok(HttpResponse::Ok().json(profile_json(&profile, false)))
}

/// Sets the display name and the about line, keeping the avatar.
async fn set_profile(state: State, payload: web::Payload) -> Answer {
    let client = client(&state)?;
    let text: ProfileText = json_body(payload, r#"{"display_name": "…", "about": "…"}"#).await?;
    publish(client, |profile| {
        profile.display_name = text.display_name.trim().to_owned();
        profile.about = text.about.trim().to_owned();
    })
    .await
}

/// Sets the avatar: the body is the image itself (PNG, JPEG or WebP), checked by the library.
async fn set_avatar(state: State, payload: web::Payload) -> Answer {
    let client = client(&state)?;
    let image = read_body(payload).await?;
    publish(client, |profile| profile.avatar = Some(image)).await
}

async fn remove_avatar(state: State) -> Answer {
    publish(client(&state)?, |profile| profile.avatar = None).await
}

/// This user's devices (its clients), oldest first.
async fn devices(state: State) -> Answer {
    let listed: Vec<_> = client(&state)?
        .clients()
        .await?
        .iter()
        .map(|c| {
            json!({
                "client_id": c.client_id.to_string(),
                "added_at": c.added_at.0,
                "valid_until": c.valid_until.0,
                "this_device": c.this_client,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "devices": listed })))
}

/// Removes another device of this user (this one is removed from another device or the command
/// line: removing it here would leave the app with nothing to serve).
async fn remove_device(state: State, id: web::Path<String>) -> Answer {
    let client = client(&state)?;
    let id: ClientId = id
        .parse()
        .map_err(|_| AppError::bad("bad_client_id", format!("{id:?} is not a device id")))?;
    if id == client.client_id() {
        return Err(AppError::bad(
            "remove_this_device",
            "this is the device the app runs on; remove it from another one",
        ));
    }
    client.delete_client(id).await?;
    Ok(HttpResponse::Ok().json(json!({ "removed": id.to_string() })))
}
