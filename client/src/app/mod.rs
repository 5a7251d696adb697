//! `roost-client app`: a web interface for one client state, served on this machine for the
//! user's own browser, in the manner of Syncthing. All keys and all cryptography stay in this
//! process; the browser gets pages, JSON and nothing secret beyond what it shows. It is built
//! on the same library as the command line: every action is a call of [`Client`](crate::Client).
//!
//! It binds a loopback address only, and every request passes [`guard`]: the access token
//! printed at start (then a cookie), the app's own Host, and for changes its own Origin. Its
//! pages and scripts are in the binary (no third-party assets: it works offline).

mod api;
pub mod guard;
pub mod live;
pub mod state;

use std::net::{SocketAddr, TcpListener};

use actix_web::{http::header, middleware::from_fn, web, App, HttpResponse, HttpServer};

use crate::{client::Setup, error::Error};
use guard::Access;
use state::AppState;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

/// Why the app could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("the app binds only to a loopback address (127.0.0.1 or ::1), since it holds your keys; {0} is not one")]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the client's state: {0}")]
    Open(Error),
    #[error("the app stopped: {0}")]
    Stopped(std::io::Error),
}

/// Serves the app for the client in `setup`'s state directory (or, if there is none yet, its
/// first run) on `bind` until the process is stopped, calling `started` with the address to
/// open (it holds the access token) once it listens.
pub async fn serve(
    setup: Setup,
    bind: SocketAddr,
    started: impl FnOnce(&str),
) -> Result<(), AppError> {
    if !bind.ip().is_loopback() {
        return Err(AppError::NotLoopback(bind));
    }
    let listener = TcpListener::bind(bind).map_err(|source| AppError::Bind {
        address: bind,
        source,
    })?;
    let address = listener.local_addr().map_err(AppError::Stopped)?;
    let token = hex::encode(rand::random::<[u8; 32]>());
    let access = web::Data::new(Access::new(token.clone(), address.port()));
    let state = web::Data::new(AppState::open(setup).map_err(AppError::Open)?);
    let shared = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(access.clone())
            .app_data(shared.clone())
            .wrap(from_fn(guard::guard))
            .route(
                "/",
                web::get().to(|| page(INDEX, "text/html; charset=utf-8")),
            )
            .route("/app.js", web::get().to(|| page(SCRIPT, "text/javascript")))
            .route("/app.css", web::get().to(|| page(STYLE, "text/css")))
            .configure(api::routes)
    })
    // One worker: the client's state is one store, used by one request at a time anyway.
    .workers(1)
    .disable_signals()
    .listen(listener)
    .map_err(|source| AppError::Bind {
        address: bind,
        source,
    })?
    .run();
    started(&format!(
        "http://127.0.0.1:{}/?token={token}",
        address.port()
    ));
    let handle = server.handle();
    tokio::select! {
        stopped = server => stopped.map_err(AppError::Stopped),
        () = live::run(state) => Ok(()),
        _ = tokio::signal::ctrl_c() => {
            handle.stop(true).await;
            Ok(())
        }
    }
}

async fn page(body: &'static str, content_type: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        // Everything the page uses comes from the app itself.
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}
