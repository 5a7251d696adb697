//! Administration: a Unix socket beside the store for a running server, and direct store access
//! when the server is not running. The socket's file permissions are the access control.

use std::{
    io::{Read, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream},
    path::Path,
};

use actix::Addr;
use actix_web::{dev::Server, web, App, HttpResponse, HttpServer};

use roost_actors::{
    accounts::{self, AccountsActor, CreateToken},
    Call,
};
use roost_storage::{OnLostWrites, Store, StoreOptions};

use crate::{error::ServeError, http::error::ApiError, settings::Settings};

const TOKENS_PATH: &str = "/admin/v1/tokens";
const INSPECT_PATH: &str = "/admin/v1/inspect";
const CHECK_PATH: &str = "/admin/v1/check";

/// What `roost admin inspect` can look at.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "what", rename_all = "lowercase")]
pub enum Inspect {
    /// A DS group, by id (hex).
    Group { id: String },
    /// A client's QS message queue and connection queue, by client id.
    Queue { client: String },
    /// The federation outbox: what waits for which domain.
    Outbox,
    /// What the server holds in all, against its limits: users, queues (the largest first),
    /// groups, the disk.
    Usage,
}

/// What the server holds about `what`: sizes, counts and ids only — the same rules as for logs
/// (group state and queued messages are ciphertext the server cannot read anyway).
pub fn inspect(store: &Store, what: &Inspect) -> Result<serde_json::Value, AdminError> {
    let bad = |why: String| AdminError::Refused(why);
    Ok(match what {
        Inspect::Group { id } => {
            let group_id = hex::decode(id).map_err(|_| bad(format!("{id:?} is not hex")))?;
            match store.groups()?.get(&group_id)? {
                Some(state) => serde_json::json!({
                    "group": id,
                    "state_bytes": state.len(),
                    "state": "encrypted under the group-state EAR key, which the server never stores",
                }),
                None => serde_json::json!({ "group": id, "known": false }),
            }
        }
        Inspect::Queue { client } => {
            let client_id: roost_protocol::ClientId = client
                .parse()
                .map_err(|_| bad(format!("{client:?} is not a client id")))?;
            let registered = store.accounts()?.client(&client_id)?;
            serde_json::json!({
                "client": client,
                "registered": registered.is_some(),
                "messages": store.queues()?.summary(&client_id)?,
                "connection_requests": store.connection_queues()?.summary(&client_id)?,
            })
        }
        Inspect::Usage => usage(store)?,
        Inspect::Outbox => {
            let outbox = store.outbox()?;
            let domains = outbox
                .domains()?
                .into_iter()
                .map(|d| serde_json::json!({ "domain": d.to_string(), "waiting": outbox.len(&d) }))
                .collect::<Vec<_>>();
            serde_json::json!({ "outbox": domains })
        }
    })
}

/// How many largest queues `inspect usage` lists.
const LARGEST_QUEUES: usize = 10;

fn usage(store: &Store) -> Result<serde_json::Value, AdminError> {
    let queues = |kind: roost_storage::QueueStore| -> Result<serde_json::Value, AdminError> {
        let by_queue = kind.usage_by_queue()?;
        let total = by_queue.iter().fold(
            roost_storage::QueueUsage::default(),
            |mut sum, (_, usage)| {
                sum.messages += usage.messages;
                sum.bytes += usage.bytes;
                sum
            },
        );
        let largest: Vec<_> = by_queue
            .iter()
            .take(LARGEST_QUEUES)
            .map(|(client, usage)| serde_json::json!({ "client": client.to_string(), "messages": usage.messages, "bytes": usage.bytes }))
            .collect();
        Ok(serde_json::json!({ "queues": by_queue.len(), "total": total, "largest": largest }))
    };
    let space = store.space();
    Ok(serde_json::json!({
        "users": store.accounts()?.user_count(),
        "message_queues": queues(store.queues()?)?,
        "connection_queues": queues(store.connection_queues()?)?,
        "groups": store.groups()?.len(),
        "relays_waiting": store.outbox()?.domains()?.len(),
        "disk": {
            "free_bytes": space.free_bytes().ok(),
            "reserve_bytes": space.reserve_bytes(),
        },
    }))
}

/// The admin HTTP server on `<storage.path>/admin.sock`, readable by the owner only.
pub fn server(
    settings: &Settings,
    accounts: Addr<AccountsActor>,
    store: Store,
) -> Result<Server, ServeError> {
    let socket = settings.admin_socket();
    // A socket file left by a server that was killed: nobody listens on it any more.
    if socket.exists() && UnixStream::connect(&socket).is_err() {
        std::fs::remove_file(&socket)?;
    }
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(accounts.clone()))
            .app_data(web::Data::new(store.clone()))
            .route(TOKENS_PATH, web::post().to(create_token))
            .route(INSPECT_PATH, web::post().to(inspect_request))
            .route(CHECK_PATH, web::post().to(check_request))
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
    let token = accounts.call(CreateToken).await?;
    Ok(HttpResponse::Created().json(serde_json::json!({ "token": token })))
}

async fn inspect_request(store: web::Data<Store>, what: web::Json<Inspect>) -> HttpResponse {
    match inspect(&store, &what) {
        Ok(found) => HttpResponse::Ok().json(found),
        Err(e) => HttpResponse::BadRequest().json(serde_json::json!({ "error": e.to_string() })),
    }
}

async fn check_request(store: web::Data<Store>) -> HttpResponse {
    let store = store.get_ref().clone();
    match web::block(move || store.check()).await {
        Ok(Ok(report)) => HttpResponse::Ok().json(report),
        Ok(Err(e)) => {
            HttpResponse::BadRequest().json(serde_json::json!({ "error": e.to_string() }))
        }
        Err(e) => HttpResponse::BadRequest().json(serde_json::json!({ "error": e.to_string() })),
    }
}

/// `roost admin check`: reads every record of the store (through the running server if there
/// is one) and reports, as JSON, what is damaged; `Ok(false)` if anything is.
pub fn check_anyhow(settings: &Settings) -> Result<(serde_json::Value, bool), AdminError> {
    let socket = settings.admin_socket();
    let report = match UnixStream::connect(&socket) {
        Ok(stream) => {
            let answer = call_socket(stream, &socket, CHECK_PATH, "", "200")?;
            serde_json::from_str(&answer)
                .map_err(|_| AdminError::Refused(format!("unexpected answer: {answer}")))?
        }
        Err(_) => {
            let options = StoreOptions {
                on_lost_writes: OnLostWrites::Report,
                ..settings.storage.options()
            };
            let store = Store::open_with(&settings.storage.path, options)?;
            let report = store.check();
            store.close()?;
            serde_json::to_value(report?).expect("serialisable")
        }
    };
    let sound = report["problems"].as_array().is_some_and(Vec::is_empty);
    Ok((report, sound))
}

/// `roost admin repair`: takes a store that lost writes as it is, so the server starts on it
/// again (what was lost stays lost). Only with the server stopped. Says what it accepted.
pub fn repair(settings: &Settings) -> Result<String, AdminError> {
    let options = StoreOptions {
        on_lost_writes: OnLostWrites::Accept,
        ..settings.storage.options()
    };
    // Opened this way the store takes itself as it is, and still reports what it lost.
    let store = Store::open_with(&settings.storage.path, options)?;
    let lost = store.check()?;
    let rewritten = store.kept_damaged().map(|kept| {
        format!(
            "rewrote its readable records into a fresh data file (the damaged store is kept at {}); ",
            kept.display()
        )
    });
    store.close()?;
    Ok(match (rewritten, lost.is_sound()) {
        (None, true) => "the store was sound; nothing to repair".into(),
        (rewritten, _) => format!(
            "{}accepted the store as it is; {} problem(s) remain for `roost admin check` to list, and what was lost stays lost",
            rewritten.unwrap_or_default(),
            lost.problems.len()
        ),
    })
}

/// Inspects through the running server if there is one, else in the store.
pub fn inspect_anyhow(
    settings: &Settings,
    what: &Inspect,
) -> Result<serde_json::Value, AdminError> {
    let socket = settings.admin_socket();
    match UnixStream::connect(&socket) {
        Ok(stream) => {
            let body = serde_json::to_string(what).expect("serialisable");
            let answer = call_socket(stream, &socket, INSPECT_PATH, &body, "200")?;
            serde_json::from_str(&answer)
                .map_err(|_| AdminError::Refused(format!("unexpected answer: {answer}")))
        }
        Err(_) => {
            let store = Store::open_with(&settings.storage.path, settings.storage.options())?;
            let found = inspect(&store, what);
            store.close()?;
            found
        }
    }
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
            let store = Store::open_with(&settings.storage.path, settings.storage.options())?;
            let token = accounts::new_token(&store.accounts()?)?;
            store.close()?;
            Ok(token)
        }
    }
}

fn token_via_socket(stream: UnixStream, socket: &Path) -> Result<String, AdminError> {
    let body = call_socket(stream, socket, TOKENS_PATH, "", "201")?;
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["token"].as_str().map(str::to_owned))
        .ok_or_else(|| AdminError::Refused(format!("unexpected answer: {body}")))
}

/// POSTs `body` (JSON) to `path` on the admin socket; the answer's body if its status is
/// `expected`.
fn call_socket(
    mut stream: UnixStream,
    socket: &Path,
    path: &str,
    body: &str,
    expected: &str,
) -> Result<String, AdminError> {
    let io_error = |source| AdminError::Socket {
        socket: socket.display().to_string(),
        source,
    };
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: roost-admin\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(io_error)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(io_error)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    if !head.starts_with(&format!("HTTP/1.1 {expected}")) {
        return Err(AdminError::Refused(format!(
            "{} {}",
            head.lines().next().unwrap_or(""),
            body.trim()
        )));
    }
    Ok(body.trim().to_owned())
}
