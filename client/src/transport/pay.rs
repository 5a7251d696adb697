//! Paying for anonymous requests with Privacy Pass tokens: a [`Server`] reached through
//! [`super::Homeservers`] carries a [`Payer`], and every unsigned request that is a costly
//! operation (`Operation::of_request`) is sent with the tokens the payer hands over. What a
//! token is and where it comes from is the payer's business ([`Pay`]); here is only when to pay:
//! at once for most operations, after a 429 for discovery (free within its burst), and once more
//! with fresh tokens if the server refuses the ones sent (say, their key was rotated out).
//!
//! A request that got no answer, or a transient one, may have been taken and its tokens spent:
//! sent again (by the caller's retry), it carries the same tokens, which the server takes again
//! for the same request ([`Unanswered`]) — rather than new ones, spent for nothing if the first
//! went through.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use reqwest::Method;
use roost_protocol::{crypto, tokens::policy::Operation, Domain};

use super::{Server, ServerError};

/// What pays for requests: tokens kept, or bought from the home server.
pub trait Pay: Send + Sync {
    /// The `Authorization` value paying for `operation` at `origin` (reached at `server`), or
    /// `None` where it is free; tokens are bought from `home`. `fresh`: tokens sent before were
    /// refused; use none kept.
    fn pay<'a>(
        &'a self,
        origin: &'a Domain,
        server: &'a Server,
        home: &'a Server,
        operation: Operation,
        fresh: bool,
    ) -> Pin<Box<dyn Future<Output = Result<Option<String>, ServerError>> + Send + 'a>>;
}

/// A payer for one server, whose domain is `origin`; tokens come from `home` (reached without
/// paying: buying is signed).
#[derive(Clone)]
pub struct Payer {
    pub(super) pay: Arc<dyn Pay>,
    pub(super) origin: Domain,
    pub(super) home: Arc<Server>,
    pub(super) unanswered: Arc<Unanswered>,
}

impl Payer {
    pub(super) fn new(
        pay: Arc<dyn Pay>,
        origin: Domain,
        home: Server,
        unanswered: Arc<Unanswered>,
    ) -> Payer {
        Payer {
            pay,
            origin,
            home: Arc::new(home),
            unanswered,
        }
    }

    /// What pays for `request` (its [`Unanswered::key`]): its payment kept from an attempt that
    /// went unanswered, unless `fresh`, or what [`Pay`] hands over.
    async fn payment(
        &self,
        server: &Server,
        request: &[u8; 32],
        operation: Operation,
        fresh: bool,
    ) -> Result<Option<String>, ServerError> {
        match self.unanswered.take(request) {
            Some(paid) if !fresh => Ok(Some(paid)),
            _ => {
                self.pay
                    .pay(&self.origin, server, &self.home, operation, fresh)
                    .await
            }
        }
    }
}

/// The payments of requests that got no definite answer, by request (server, method, path and
/// body), for their next attempt. Bounded: the oldest are forgotten first, and none is kept
/// past [`Unanswered::KEPT_FOR`] (its tokens are then likely of a key taken no more; a
/// forgotten payment costs its tokens, nothing else).
#[derive(Default)]
pub(super) struct Unanswered(Mutex<HashMap<[u8; 32], (String, Instant)>>);

impl Unanswered {
    const MOST: usize = 256;
    const KEPT_FOR: Duration = Duration::from_secs(600);

    fn key(origin: &Domain, method: &Method, path: &str, body: Option<&[u8]>) -> [u8; 32] {
        let head = format!("{origin} {method} {path}\n");
        crypto::hash(
            "roost client unanswered payment",
            &[head.as_bytes(), body.unwrap_or_default()].concat(),
        )
    }

    /// The payment of the request `key`, kept when it went unanswered.
    fn take(&self, key: &[u8; 32]) -> Option<String> {
        let (paid, at) = self.lock().remove(key)?;
        (at.elapsed() < Self::KEPT_FOR).then_some(paid)
    }

    fn keep(&self, key: [u8; 32], paid: String) {
        let mut kept = self.lock();
        kept.retain(|_, (_, at)| at.elapsed() < Self::KEPT_FOR);
        if kept.len() >= Self::MOST {
            let oldest = kept.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                kept.remove(&oldest);
            }
        }
        kept.insert(key, (paid, Instant::now()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (String, Instant)>> {
        crate::lock(&self.0)
    }
}

impl std::fmt::Debug for Payer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payer({})", self.origin)
    }
}

/// Codes with which a server refuses the tokens sent, not the request.
fn tokens_refused(e: &ServerError) -> bool {
    matches!(
        e.code(),
        "privacy_pass_invalid" | "privacy_pass_spent" | "privacy_pass_required"
    )
}

impl Server {
    /// Sends an unsigned request that is `operation`, paying as this server's payer says.
    pub(super) async fn send_paying(
        &self,
        payer: &Payer,
        operation: Operation,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        timeout: std::time::Duration,
    ) -> Result<reqwest::Response, ServerError> {
        let unpaid = Server {
            payer: None,
            ..self.clone()
        };
        let request = Unanswered::key(&payer.origin, &method, path_and_query, body.as_deref());
        let pay = |fresh| payer.payment(&unpaid, &request, operation, fresh);
        // Discovery is first tried free; anything else is paid from the start.
        let mut paid = match operation {
            Operation::Discovery => None,
            _ => pay(false).await?,
        };
        let mut fresh = false;
        loop {
            let sent = unpaid
                .send_once(
                    method.clone(),
                    path_and_query,
                    body.clone(),
                    None,
                    timeout,
                    paid.as_deref(),
                )
                .await;
            match sent {
                Err(e)
                    if paid.is_none()
                        && operation == Operation::Discovery
                        && e.code() == "rate_limited" =>
                {
                    paid = pay(false).await?;
                    if paid.is_none() {
                        return Err(e);
                    }
                }
                Err(e) if !fresh && paid.is_some() && tokens_refused(&e) => {
                    fresh = true;
                    paid = pay(true).await?;
                }
                Err(e) if e.is_transient() => {
                    if let Some(paid) = paid {
                        payer.unanswered.keep(request, paid);
                    }
                    return Err(e);
                }
                other => return other,
            }
        }
    }
}
