//! Where each domain's homeserver is reached, and the AS credentials each serves.
//!
//! The one place that maps domains to servers. Another domain's public endpoints (AS discovery
//! and credentials, DS, QS key-package claims) are called directly, never through the home
//! server, which would learn whom this user looks up.

use roost_protocol::{
    credentials::{AsCredentials, ChainError, ClientCredential},
    federation::Resolver,
    ClientId, Domain, Timestamp, UserName,
};

use std::sync::Arc;

use super::{pay::Unanswered, ExtraRoots, Pay, Payer, Server, ServerError};

/// Why a domain's AS credentials, or a credential checked against them, are not to be trusted.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("the server at {server} serves AS credentials of {found}, not of {expected}")]
    WrongDomain {
        server: String,
        expected: Domain,
        found: String,
    },
    #[error("the credential of client {client_id} of {user} does not verify: {source}")]
    Chain {
        user: UserName,
        client_id: ClientId,
        #[source]
        source: ChainError,
    },
}

/// The home server and how to reach every other domain's.
#[derive(Debug, Clone)]
pub struct Homeservers {
    home: Server,
    home_domain: Domain,
    resolver: Resolver,
    roots: ExtraRoots,
    /// What pays for costly anonymous requests to each server, if anything does.
    pay: Option<PayWith>,
}

#[derive(Clone)]
struct PayWith(Arc<dyn Pay>, Arc<Unanswered>);

impl std::fmt::Debug for PayWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PayWith(..)")
    }
}

impl Homeservers {
    /// Other domains are reached as `resolver` says (default: `https://DOMAIN`).
    pub fn new(home: Server, home_domain: Domain, resolver: Resolver) -> Self {
        Homeservers {
            home,
            home_domain,
            resolver,
            roots: ExtraRoots::default(),
            pay: None,
        }
    }

    /// Pays for costly anonymous requests to every server with `pay`.
    pub(crate) fn set_payer(&mut self, pay: Arc<dyn Pay>) {
        self.pay = Some(PayWith(pay, Arc::default()));
        self.home = self.paying(self.home.clone(), &self.home_domain.clone());
    }

    /// `server` of `domain`, paying as set.
    fn paying(&self, server: Server, domain: &Domain) -> Server {
        match &self.pay {
            Some(PayWith(pay, unanswered)) => {
                let home = Server {
                    payer: None,
                    ..self.home.clone()
                };
                server.paying(Payer::new(
                    pay.clone(),
                    domain.clone(),
                    home,
                    unanswered.clone(),
                ))
            }
            None => server,
        }
    }

    pub fn home(&self) -> &Server {
        &self.home
    }

    pub(crate) fn set_resolver(&mut self, resolver: Resolver) {
        self.resolver = resolver;
    }

    /// Trusts `roots` beside the system's, for the home server and every other.
    pub(crate) fn set_roots(&mut self, roots: ExtraRoots) -> Result<(), ServerError> {
        self.home = Server::with_roots(self.home.base_url(), &roots)?;
        self.roots = roots;
        self.home = self.paying(self.home.clone(), &self.home_domain.clone());
        Ok(())
    }

    /// The homeserver of `domain`.
    pub fn of(&self, domain: &Domain) -> Result<Server, ServerError> {
        if *domain == self.home_domain {
            Ok(self.home.clone())
        } else {
            let server = Server::with_roots(&self.resolver.base_url(domain), &self.roots)?;
            Ok(self.paying(server, domain))
        }
    }

    /// Fetches the AS credentials of `domain` from its homeserver, refusing any of another
    /// domain.
    pub async fn as_credentials_of(&self, domain: &Domain) -> Result<AsCredentials, TrustError> {
        fetch_as_credentials(&self.of(domain)?, domain).await
    }

    /// Checks a client credential's chain against the AS credentials of its user's domain.
    pub async fn verify_credential(&self, credential: &ClientCredential) -> Result<(), TrustError> {
        verify_with(&self.of(credential.user().domain())?, credential).await
    }
}

/// Fetches `server`'s AS credentials and checks they all belong to `domain`.
pub async fn fetch_as_credentials(
    server: &Server,
    domain: &Domain,
) -> Result<AsCredentials, TrustError> {
    let credentials = server.as_credentials().await?;
    let foreign = credentials
        .as_credentials
        .iter()
        .map(|c| &c.body.domain)
        .chain(credentials.intermediates.iter().map(|i| &i.body.domain))
        .find(|d| *d != domain);
    let wrong = |found: String| TrustError::WrongDomain {
        server: server.base_url().to_owned(),
        expected: domain.clone(),
        found,
    };
    if let Some(found) = foreign {
        return Err(wrong(found.to_string()));
    }
    if credentials.as_credentials.is_empty() || credentials.intermediates.is_empty() {
        return Err(wrong("no credentials at all".into()));
    }
    Ok(credentials)
}

/// Verifies `credential` against the AS credentials `server` serves for the credential's domain.
pub async fn verify_with(server: &Server, credential: &ClientCredential) -> Result<(), TrustError> {
    let credentials = fetch_as_credentials(server, credential.user().domain()).await?;
    credentials
        .verify_client(credential, Timestamp::now())
        .map_err(|source| TrustError::Chain {
            user: credential.user().clone(),
            client_id: credential.client_id(),
            source,
        })
}
