//! The app's JSON API: what its pages ask of the client library. Errors are JSON with the
//! library's error codes.

use actix_web::{http::header, http::StatusCode, web, HttpResponse, ResponseError};
use roost_protocol::{profile::Profile, UserName};
use serde::Deserialize;
use serde_json::json;

use crate::{client::Client, error::Error, store::StoredMessage};

/// Largest request body the app takes (a profile with its avatar, base64-encoded).
pub const MAX_BODY: usize = 512 * 1024;

type Data = web::Data<Client>;

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/api/me", web::get().to(me))
        .route("/api/contacts", web::get().to(contacts))
        .route("/api/requests", web::get().to(requests))
        .route("/api/requests/{id}/profile", web::get().to(request_profile))
        .route("/api/requests/{id}/avatar", web::get().to(request_avatar))
        .route("/api/requests/{id}/accept", web::post().to(accept))
        .route("/api/requests/{id}/decline", web::post().to(decline))
        .route("/api/chat/{user}", web::get().to(chat))
        .route("/api/chat/{user}", web::post().to(send))
        .default_service(web::to(not_found));
}

/// A library error as the app answers it.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct AppError(#[from] Error);

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self.0.code() {
            "unknown_request" | "not_connected" | "unknown_group" | "no_profile"
            | "unknown_profile" => StatusCode::NOT_FOUND,
            "bad_profile" | "bad_user" | "bad_text" => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .json(json!({ "error": self.0.code(), "message": self.0.to_string() }))
    }
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(json!({ "error": "not_found", "message": "no such page" }))
}

/// Who this client is.
async fn me(client: Data) -> Result<HttpResponse, AppError> {
    let own = client.profiles().own()?;
    Ok(HttpResponse::Ok().json(json!({
        "user": client.user().to_string(),
        "client_id": client.client_id().to_string(),
        "server": client.server().base_url(),
        "display_name": own.map(|own| own.profile.display_name),
    })))
}

/// This user's contacts, each by display name beside its user name.
async fn contacts(client: Data) -> Result<HttpResponse, AppError> {
    let mut listed = Vec::new();
    for contact in client.contacts().list().await? {
        let Some(peer) = contact.peer else { continue };
        listed.push(json!({
            "user": peer.to_string(),
            "display_name": client.profiles().display_name(&peer)?,
        }));
    }
    Ok(HttpResponse::Ok().json(json!({ "contacts": listed })))
}

fn bad(code: &str, message: impl Into<String>) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "error": code, "message": message.into() }))
}

/// Reads new connection requests, then lists those waiting for a decision.
async fn requests(client: Data) -> Result<HttpResponse, AppError> {
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

/// A profile as the pages show it; the avatar is fetched on its own, by its own address.
fn profile_json(profile: &Profile, self_declared: bool) -> serde_json::Value {
    json!({
        "display_name": profile.display_name,
        "about": profile.about,
        "avatar": profile.avatar_format().map(|f| f.mime_type()),
        "self_declared": self_declared,
    })
}

/// The sender's profile, fetched now because the user asked.
async fn request_profile(client: Data, id: web::Path<String>) -> Result<HttpResponse, AppError> {
    let profile = client.profiles().of_request(&id).await?;
    Ok(HttpResponse::Ok().json(profile_json(&profile, true)))
}

/// The sender's avatar, as the image it is (never sniffed as anything else).
async fn request_avatar(client: Data, id: web::Path<String>) -> Result<HttpResponse, AppError> {
    let profile = client.profiles().of_request(&id).await?;
    match (profile.avatar_format(), profile.avatar) {
        (Some(format), Some(bytes)) => Ok(HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, format.mime_type()))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .body(bytes)),
        _ => Ok(HttpResponse::NotFound().json(json!({
            "error": "no_avatar",
            "message": "this profile has no avatar",
        }))),
    }
}

async fn accept(client: Data, id: web::Path<String>) -> Result<HttpResponse, AppError> {
    let accepted = client.connections().accept(&id).await?;
    Ok(HttpResponse::Ok().json(json!({
        "peer": accepted.peer.to_string(),
        "own_clients_added": accepted.own_clients_added,
    })))
}

async fn decline(client: Data, id: web::Path<String>) -> Result<HttpResponse, AppError> {
    client.connections().decline(&id).await?;
    Ok(HttpResponse::Ok().json(json!({ "declined": id.into_inner() })))
}

fn message_json(message: &StoredMessage) -> serde_json::Value {
    json!({
        "from": message.from.as_ref().map(ToString::to_string),
        "text": message.text,
        "at": message.at.0,
        "seq": message.seq,
    })
}

/// The chat with a contact, after a sync.
async fn chat(client: Data, user: web::Path<String>) -> Result<HttpResponse, AppError> {
    let Ok(user) = user.parse::<UserName>() else {
        return Ok(bad("bad_user", format!("{user:?} is not a user name")));
    };
    client.sync().await?;
    let messages = client.chat().messages(&user).await?;
    Ok(HttpResponse::Ok()
        .json(json!({ "messages": messages.iter().map(message_json).collect::<Vec<_>>() })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Send {
    text: String,
}

/// The request's body, or the JSON answer to one larger than [`MAX_BODY`] or cut off.
async fn read_body(mut payload: web::Payload) -> Result<Vec<u8>, HttpResponse> {
    use futures_util::StreamExt;
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| bad("bad_body", e.to_string()))?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(HttpResponse::PayloadTooLarge().json(json!({
                "error": "body_too_large",
                "message": format!("the app takes at most {MAX_BODY} bytes in a request"),
            })));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn send(
    client: Data,
    user: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let Ok(user) = user.parse::<UserName>() else {
        return Ok(bad("bad_user", format!("{user:?} is not a user name")));
    };
    let body = match read_body(payload).await {
        Ok(body) => body,
        Err(refused) => return Ok(refused),
    };
    let Ok(Send { text }) = serde_json::from_slice(&body) else {
        return Ok(bad("bad_body", r#"expected {"text": "…"}"#));
    };
    if text.trim().is_empty() {
        return Ok(bad("bad_text", "a message cannot be empty"));
    }
    let sent = client.chat().send(&user, &text).await?;
    Ok(HttpResponse::Ok().json(message_json(&sent)))
}
