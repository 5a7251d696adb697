//! Concurrent connections per source address: each connection takes a slot of its address when
//! it is accepted and gives it back when it closes; a connection beyond the limit is answered
//! 429 on its first request and closed. Slow bodies are cut off by the body deadline in
//! [`super::read_body`], slow headers by actix's request timeout; this bounds how many of them
//! one address can hold at once.

use std::{
    any::Any,
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use actix_web::{
    body::{BoxBody, MessageBody},
    dev::{Extensions, ServiceRequest, ServiceResponse},
    http::header,
    middleware::Next,
    ResponseError,
};

use super::error::ApiError;

/// The open connections of each address.
#[derive(Clone)]
pub struct AddressSlots {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// A connection's slot, kept in the connection's data: given back when the connection (and
/// with it its data) is dropped.
struct Slot {
    ip: IpAddr,
    /// Whether the address was within its limit when this connection was accepted.
    admitted: bool,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl AddressSlots {
    pub fn new(max: usize) -> Self {
        AddressSlots {
            max,
            open: Arc::default(),
        }
    }

    /// For `HttpServer::on_connect`: takes a slot for the new connection.
    pub fn on_connect(&self, connection: &dyn Any, data: &mut Extensions) {
        type TcpStream = actix_web::rt::net::TcpStream;
        let tcp = connection.downcast_ref::<TcpStream>().or_else(|| {
            connection
                .downcast_ref::<actix_tls::accept::rustls_0_23::TlsStream<TcpStream>>()
                .map(|tls| tls.get_ref().0)
        });
        let Some(ip) = tcp
            .and_then(|tcp| tcp.peer_addr().ok())
            .map(|addr| super::rate_limit::source(addr.ip()))
        else {
            return;
        };
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(ip).or_default();
        *count += 1;
        data.insert(Slot {
            ip,
            admitted: *count <= self.max,
            open: self.open.clone(),
        });
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Middleware: answers a connection over its address's limit with 429 and closes it.
pub async fn refuse_over_limit(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if request
        .conn_data::<Slot>()
        .is_some_and(|slot| !slot.admitted)
    {
        let error = ApiError::RateLimited {
            retry_after_secs: 1,
            setting: "limits.connections_per_address",
        };
        let mut response = error.error_response();
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return Ok(request.into_response(response));
    }
    Ok(next.call(request).await?.map_into_boxed_body())
}
