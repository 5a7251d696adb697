//! Administration: a Unix socket beside the store for a running server, and direct store access
//! when the server is not running. The socket's file permissions are the access control.

use std::{
    io::{Read, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream},
    path::Path,
};

use actix::Addr;
use actix_web::{dev::Server, web, App, HttpResponse, HttpServer};

use roost_actors::accounts::{self, AccountsActor, CreateToken};
use roost_storage::Store;

use crate::{http::error::ApiError, server::ServeError, settings::Settings};

const TOKENS_PATH: &str = "/admin/v1/tokens";

/// The admin HTTP server on `<storage.path>/admin.sock`, readable by the owner only.
pub fn server(settings: &Settings, accounts: Addr<AccountsActor>) -> Result<Server, ServeError> {
    let socket = settings.admin_socket();
    // A socket file left by a server that was killed: nobody listens on it any more.
    if socket.exists() && UnixStream::connect(&socket).is_err() {
        std::fs::remove_file(&socket)?;
    }
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(accounts.clone()))
            .route(TOKENS_PATH, web::post().to(create_token))
    })
    .workers(1)
    .disable_signals()
    .bind_uds(&socket)
    .map_err(|source| ServeError::Bind {
        addr: socket.display().to_string(),
        source,
    })?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(server.run())
}

async fn create_token(accounts: web::Data<Addr<AccountsActor>>) -> Result<HttpResponse, ApiError> {
    let token = accounts.send(CreateToken).await??;
    Ok(HttpResponse::Created().json(serde_json::json!({ "token": token })))
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("the running server refused: {0}")]
    Refused(String),
    #[error("cannot talk to the running server through {socket}: {source}")]
    Socket {
        socket: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Storage(#[from] roost_storage::StorageError),
}

/// Creates a registration token, through the running server if there is one.
pub fn create_registration_token(settings: &Settings) -> Result<String, AdminError> {
    let socket = settings.admin_socket();
    match UnixStream::connect(&socket) {
        Ok(stream) => token_via_socket(stream, &socket),
        Err(_) => {
            let store = Store::open(&settings.storage.path)?;
            let token = accounts::new_token(&store.accounts()?)?;
            store.close()?;
            Ok(token)
        }
    }
}

fn token_via_socket(mut stream: UnixStream, socket: &Path) -> Result<String, AdminError> {
    let io_error = |source| AdminError::Socket {
        socket: socket.display().to_string(),
        source,
    };
    write!(
        stream,
        "POST {TOKENS_PATH} HTTP/1.1\r\nHost: roost-admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(io_error)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(io_error)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    if !head.starts_with("HTTP/1.1 201") {
        return Err(AdminError::Refused(format!(
            "{} {}",
            head.lines().next().unwrap_or(""),
            body.trim()
        )));
    }
    serde_json::from_str::<serde_json::Value>(body.trim())
        .ok()
        .and_then(|v| v["token"].as_str().map(str::to_owned))
        .ok_or_else(|| AdminError::Refused(format!("unexpected answer: {body}")))
}
