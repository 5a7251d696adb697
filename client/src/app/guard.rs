//! Who may use the app: only the person who started it, from this machine, in their own
//! browser. Every request must carry the access token — in the URL the app printed (first visit:
//! it is then set as a cookie and the browser sent on without it), or in that cookie — and name
//! the app's own address as its Host (so a web page whose DNS name was pointed at 127.0.0.1 —
//! DNS rebinding — is refused); a request that changes anything must also come from the app's
//! own pages (its Origin header), so no other site can make the browser act for it.

use actix_web::{
    body::{BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{header, Method, StatusCode},
    middleware::Next,
    HttpResponse,
};
use serde_json::json;

/// The cookie the access token is kept in.
pub const COOKIE: &str = "roost_app";

/// The app's access token and the addresses it answers as.
#[derive(Clone)]
pub struct Access {
    token: String,
    /// `127.0.0.1:PORT` and `localhost:PORT`: the Host values a request may carry.
    hosts: Vec<String>,
}

impl Access {
    pub fn new(token: String, port: u16) -> Self {
        Access {
            token,
            hosts: vec![format!("127.0.0.1:{port}"), format!("localhost:{port}")],
        }
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// Why `request` may not be served, if it may not: the status and a JSON error.
    fn refusal(&self, request: &ServiceRequest) -> Option<HttpResponse> {
        let refuse = |status: StatusCode, code: &str, message: &str| {
            Some(HttpResponse::build(status).json(json!({ "error": code, "message": message })))
        };
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        if !host.is_some_and(|host| self.hosts.iter().any(|h| h == host)) {
            return refuse(
                StatusCode::FORBIDDEN,
                "wrong_host",
                "the app answers only as 127.0.0.1 or localhost, at its own port",
            );
        }
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let origin = request
                .headers()
                .get(header::ORIGIN)
                .and_then(|o| o.to_str().ok());
            let own = origin.is_some_and(|origin| {
                self.hosts
                    .iter()
                    .any(|host| origin == format!("http://{host}"))
            });
            if !own {
                return refuse(
                    StatusCode::FORBIDDEN,
                    "wrong_origin",
                    "a change must come from the app's own pages",
                );
            }
        }
        if !self.carries_token(request) {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "no_access_token",
                "open the address the app printed when it started (it holds the access token)",
            );
        }
        None
    }

    fn carries_token(&self, request: &ServiceRequest) -> bool {
        let in_cookie = request
            .headers()
            .get_all(header::COOKIE)
            .filter_map(|c| c.to_str().ok())
            .flat_map(|c| c.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(name, value)| name == COOKIE && constant_time_eq(value, &self.token));
        in_cookie || self.token_in_url(request)
    }

    fn token_in_url(&self, request: &ServiceRequest) -> bool {
        request
            .query_string()
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .any(|(name, value)| name == "token" && constant_time_eq(value, &self.token))
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

/// The middleware: refuses what [`Access`] refuses; a first visit with the token in its URL
/// gets the cookie and is sent on to the same page without the token.
pub async fn guard(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let access = request
        .app_data::<actix_web::web::Data<Access>>()
        .expect("the app's access is in its data")
        .clone();
    if let Some(refused) = access.refusal(&request) {
        return Ok(request.into_response(refused));
    }
    if access.token_in_url(&request) && request.method() == Method::GET {
        let cookie = format!(
            "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
            access.token()
        );
        let redirect = HttpResponse::SeeOther()
            .insert_header((header::LOCATION, request.path().to_owned()))
            .insert_header((header::SET_COOKIE, cookie))
            .finish();
        return Ok(request.into_response(redirect));
    }
    Ok(next.call(request).await?.map_into_boxed_body())
}
