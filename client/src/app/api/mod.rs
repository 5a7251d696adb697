//! The app's JSON API: what its pages ask of the client library, one module per screen
//! (`account`: first run, profile and devices; `talk`: contacts, requests and chats; `groups`).
//! Every answer is JSON; every error is JSON with a code, the library's own where it has one.

mod account;
mod groups;
mod talk;

use actix_web::{http::header, http::StatusCode, web, HttpResponse, ResponseError};
use roost_protocol::{profile::Profile, UserName};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{live, state::AppState};
use crate::{client::Client, error::Error, store::StoredMessage};

/// Largest request body the app takes (an avatar, with room to spare).
pub const MAX_BODY: usize = 512 * 1024;

type State = web::Data<AppState>;

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/api/events", web::get().to(live::events))
        .configure(account::routes)
        .configure(talk::routes)
        .configure(groups::routes)
        .default_service(web::to(not_found));
}

/// Why a request was not done.
#[derive(Debug, thiserror::Error)]
enum AppError {
    #[error(transparent)]
    Client(#[from] Error),
    /// The request itself is wrong: its status, code and message.
    #[error("{message}")]
    Refused {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
}

impl AppError {
    fn bad(code: &'static str, message: impl Into<String>) -> AppError {
        AppError::Refused {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    fn code(&self) -> &str {
        match self {
            AppError::Client(e) => e.code(),
            AppError::Refused { code, .. } => code,
        }
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        let e = match self {
            AppError::Refused { status, .. } => return *status,
            AppError::Client(e) => e,
        };
        match e.code() {
            "unknown_request" | "not_connected" | "unknown_group" | "no_profile"
            | "unknown_profile" => StatusCode::NOT_FOUND,
            "already_registered" | "already_member" | "removed_from_group" => StatusCode::CONFLICT,
            "bad_profile" | "bad_user" | "bad_text" | "bad_group_name" | "ambiguous_group"
            | "not_a_member" | "remove_self" | "connect_to_self" | "bad_server_url" => {
                StatusCode::BAD_REQUEST
            }
            // What the homeserver refused (a taken user name, a wrong password, an unknown
            // user): the user's request, not the app, was wrong.
            _ if e.status().is_some_and(|s| (400..500).contains(&s)) => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .json(json!({ "error": self.code(), "message": self.to_string() }))
    }
}

type Answer = Result<HttpResponse, AppError>;

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(json!({ "error": "not_found", "message": "no such page" }))
}

/// The client, once this device is enrolled.
fn client(state: &AppState) -> Result<&Client, AppError> {
    state.client().ok_or_else(|| AppError::Refused {
        status: StatusCode::CONFLICT,
        code: "not_enrolled",
        message: "this device is not registered yet".into(),
    })
}

/// A user name from a path or a body.
fn user_name(text: &str) -> Result<UserName, AppError> {
    text.parse().map_err(|_| {
        AppError::bad(
            "bad_user",
            format!("{text:?} is not a user name (name@domain)"),
        )
    })
}

/// The request's body, up to [`MAX_BODY`].
async fn read_body(mut payload: web::Payload) -> Result<Vec<u8>, AppError> {
    use futures_util::StreamExt;
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| AppError::bad("bad_body", e.to_string()))?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(AppError::Refused {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: "body_too_large",
                message: format!("the app takes at most {MAX_BODY} bytes in a request"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The request's body as JSON of the shape `expected` describes.
async fn json_body<T: DeserializeOwned>(
    payload: web::Payload,
    expected: &str,
) -> Result<T, AppError> {
    let body = read_body(payload).await?;
    serde_json::from_slice(&body)
        .map_err(|e| AppError::bad("bad_body", format!("expected {expected}: {e}")))
}

/// A user name from a body `{"user": "name@domain"}` (whom to connect with, to add).
async fn user_body(payload: web::Payload) -> Result<UserName, AppError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct User {
        user: String,
    }
    let User { user } = json_body(payload, r#"{"user": "name@domain"}"#).await?;
    user_name(user.trim())
}

/// A chat message's text from a body `{"text": …}`; never empty.
async fn text_body(payload: web::Payload) -> Result<String, AppError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Text {
        text: String,
    }
    let Text { text } = json_body(payload, r#"{"text": "…"}"#).await?;
    if text.trim().is_empty() {
        return Err(AppError::bad("bad_text", "a message cannot be empty"));
    }
    Ok(text)
}

fn message_json(message: &StoredMessage) -> serde_json::Value {
    json!({
        "from": message.from.as_ref().map(ToString::to_string),
        "text": message.text,
        "at": message.at.0,
        "seq": message.seq,
    })
}

/// A profile as the pages show it; its avatar is fetched on its own, by its own address.
fn profile_json(profile: &Profile, self_declared: bool) -> serde_json::Value {
    json!({
        "display_name": profile.display_name,
        "about": profile.about,
        "avatar": profile.avatar_format().map(|f| f.mime_type()),
        "self_declared": self_declared,
    })
}

/// A profile's avatar, as the image it is (never sniffed as anything else).
fn avatar(profile: Option<&Profile>) -> Answer {
    match profile.and_then(|p| Some((p.avatar_format()?, p.avatar.clone()?))) {
        Some((format, bytes)) => Ok(HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, format.mime_type()))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(bytes)),
        None => Err(AppError::Refused {
            status: StatusCode::NOT_FOUND,
            code: "no_avatar",
            message: "no avatar here".into(),
        }),
    }
}
