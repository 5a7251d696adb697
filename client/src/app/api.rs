//! The app's JSON API: what its pages ask of the client library. Errors are JSON with the
//! library's error codes.

use actix_web::{http::StatusCode, web, HttpResponse, ResponseError};
use serde_json::json;

use crate::{client::Client, error::Error};

/// Largest request body the app takes (a profile with its avatar, base64-encoded).
pub const MAX_BODY: usize = 512 * 1024;

type Data = web::Data<Client>;

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/api/me", web::get().to(me))
        .route("/api/contacts", web::get().to(contacts))
        .default_service(web::to(not_found));
}

/// A library error as the app answers it.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct AppError(#[from] Error);

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self.0.code() {
            "unknown_request" | "not_connected" | "unknown_group" => StatusCode::NOT_FOUND,
            "bad_profile" => StatusCode::BAD_REQUEST,
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
