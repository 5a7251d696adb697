//! The admin socket: `<storage.path>/admin.sock`, readable by the server's user only, where a
//! running server takes [`Command`]s (`POST /admin/v1`, the command as JSON) and answers with
//! JSON — the result, or `{"error": CODE, "message": …}` with a 4xx/5xx status.

use std::{
    io::{Read, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream},
    path::Path,
    sync::Arc,
};

use actix_web::{dev::Server, web, App, HttpResponse, HttpServer};

use super::{AdminError, Command, Core};
use crate::{error::ServeError, settings::Settings};

const PATH: &str = "/admin/v1";
/// The largest command accepted (commands are a few words).
const MAX_COMMAND_BYTES: usize = 16 * 1024;

/// The admin HTTP server on the socket, running.
pub fn server(settings: &Settings, core: Core) -> Result<Server, ServeError> {
    let socket = settings.admin_socket();
    // A socket file left by a server that was killed: nobody listens on it any more.
    if socket.exists() && UnixStream::connect(&socket).is_err() {
        std::fs::remove_file(&socket)?;
    }
    let core = web::Data::from(Arc::new(core));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(core.clone())
            .route(PATH, web::post().to(take))
            .default_service(web::to(|| async {
                answer(Err(AdminError::NotFound(format!(
                    "the admin socket takes POST {PATH} only"
                ))))
            }))
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

async fn take(core: web::Data<Core>, mut body: web::Payload) -> HttpResponse {
    use futures_util::StreamExt;
    let mut command = Vec::new();
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else {
            return answer(Err(AdminError::Refused("the command was cut off".into())));
        };
        if command.len() + chunk.len() > MAX_COMMAND_BYTES {
            return answer(Err(AdminError::Refused(format!(
                "a command is at most {MAX_COMMAND_BYTES} bytes"
            ))));
        }
        command.extend_from_slice(&chunk);
    }
    answer(match serde_json::from_slice::<Command>(&command) {
        Ok(command) => core.run(command).await,
        Err(e) => Err(AdminError::Refused(format!("not an admin command: {e}"))),
    })
}

fn answer(outcome: Result<serde_json::Value, AdminError>) -> HttpResponse {
    match outcome {
        Ok(value) => HttpResponse::Ok().json(value),
        Err(e) => {
            let (code, status) = e.code();
            let status = actix_web::http::StatusCode::from_u16(status)
                .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
            HttpResponse::build(status)
                .json(serde_json::json!({ "error": code, "message": e.to_string() }))
        }
    }
}

/// A connection to the running server's admin socket; `None` if no server runs.
pub fn connect(settings: &Settings) -> Option<UnixStream> {
    UnixStream::connect(settings.admin_socket()).ok()
}

/// Sends `command` and reads the answer.
pub fn call(
    mut stream: UnixStream,
    socket: &Path,
    command: &Command,
) -> Result<serde_json::Value, AdminError> {
    let io_error = |source| AdminError::Socket {
        socket: socket.display().to_string(),
        source,
    };
    let body = serde_json::to_string(command).expect("serialisable");
    write!(
        stream,
        "POST {PATH} HTTP/1.1\r\nHost: roost-admin\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(io_error)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(io_error)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split(' ').nth(1).unwrap_or("");
    let value: Option<serde_json::Value> = serde_json::from_str(body.trim()).ok();
    match (status, value) {
        ("200", Some(value)) => Ok(value),
        (status, Some(error)) if error["message"].is_string() => {
            let message = error["message"].as_str().unwrap_or_default().to_owned();
            Err(match status {
                "400" => AdminError::Refused(message),
                "404" => AdminError::NotFound(message),
                _ => AdminError::Server(message),
            })
        }
        _ => Err(AdminError::Server(format!(
            "unexpected answer: {} {}",
            head.lines().next().unwrap_or(""),
            body.trim()
        ))),
    }
}
