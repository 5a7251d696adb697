//! Paying for anonymous requests with Privacy Pass tokens: a [`Server`] reached through
//! [`super::Homeservers`] carries a [`Payer`], and every unsigned request that is a costly
//! operation (`Operation::of_request`) is sent with the tokens the payer hands over. What a
//! token is and where it comes from is the payer's business ([`Pay`]); here is only when to pay:
//! at once for most operations, after a 429 for discovery (free within its burst), and once more
//! with fresh tokens if the server refuses the ones sent (say, their key was rotated out).

use std::{future::Future, pin::Pin, sync::Arc};

use reqwest::Method;
use roost_protocol::{tokens::policy::Operation, Domain};

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
}

impl Payer {
    pub fn new(pay: Arc<dyn Pay>, origin: Domain, home: Server) -> Payer {
        Payer {
            pay,
            origin,
            home: Arc::new(home),
        }
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
        let pay = |fresh| {
            payer
                .pay
                .pay(&payer.origin, &unpaid, &payer.home, operation, fresh)
        };
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
                other => return other,
            }
        }
    }
}
