//! Settings: built-in defaults, then a TOML file, then `ROOST_SECTION__KEY` variables.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;

use roost_actors::{
    accounts::RegistrationPolicy,
    queue::{KindLimits, QueueLimits},
};
use roost_protocol::{
    api::MAX_QUEUE_MESSAGE,
    connection::MAX_SEALED_REQUEST,
    federation::{DomainPolicy, Resolver, MAX_RELAY_DELIVERIES},
    tokens::policy::{Costs, Operation, MAX_TOKENS_PER_REQUEST},
    Domain,
};

const DEFAULTS: &str = include_str!("../config.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub registration: RegistrationSettings,
    pub credentials: CredentialSettings,
    pub actors: ActorSettings,
    pub connections: ConnectionSettings,
    pub federation: FederationSettings,
    pub limits: LimitSettings,
    pub log: LogSettings,
    pub metrics: MetricsSettings,
    pub retention: RetentionSettings,
    pub tokens: TokenSettings,
}

/// Privacy Pass: what this server issues to its users, and what anonymous operations cost.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    pub per_user_per_period: u64,
    pub period_secs: u64,
    pub key_epoch_secs: u64,
    pub key_overlap_secs: u64,
    pub redemptions_per_minute_per_issuer: u32,
    pub redemptions_burst_per_issuer: u32,
    pub groups_per_issuer_epoch: u64,
    pub costs: Costs,
}

impl TokenSettings {
    pub fn issuer(&self) -> roost_actors::tokens::IssuerSettings {
        roost_actors::tokens::IssuerSettings {
            epoch_secs: self.key_epoch_secs,
            overlap_secs: self.key_overlap_secs,
            period_secs: self.period_secs,
            per_user_per_period: self.per_user_per_period,
        }
    }
}

/// How long the server keeps what its users left behind; 0: for ever.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    pub messages_secs: u64,
    pub idle_clients_secs: u64,
    pub idle_groups_secs: u64,
}

impl RetentionSettings {
    pub fn policy(&self) -> roost_actors::retention::RetentionPolicy {
        let kept = |secs: u64| (secs > 0).then_some(secs);
        roost_actors::retention::RetentionPolicy {
            messages_secs: kept(self.messages_secs),
            idle_clients_secs: kept(self.idle_clients_secs),
            idle_groups_secs: kept(self.idle_groups_secs),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Where Prometheus scrapes `/metrics`; empty: no metrics.
    pub bind: String,
}

impl MetricsSettings {
    /// The address to serve metrics on, if they are on.
    pub fn address(&self) -> Option<SocketAddr> {
        self.bind.parse().ok()
    }
}

/// Quotas: what one client, source address or peer may hold or do. Each is enforced in one
/// place; ARCHITECTURE.md's "Limits" table says where and what a caller sees.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub queue_message_bytes: usize,
    pub queue_max_messages: u64,
    pub queue_max_bytes: u64,
    pub connection_requests_per_client: u64,
    pub long_polls_per_queue: usize,
    pub connection_requests_per_minute: u32,
    pub connection_requests_burst: u32,
    pub requests_per_last_resort_per_hour: u32,
    pub connections_per_address: usize,
    pub body_read_secs: u64,
    pub relays_per_minute_per_domain: u32,
    pub relays_burst_per_domain: u32,
    pub clients_per_user: usize,
    pub members_per_group: usize,
    pub group_state_bytes: usize,
    pub body_bytes_per_minute_per_address: u32,
    pub body_bytes_burst_per_address: u32,
}

impl LimitSettings {
    pub fn queues(&self) -> QueueLimits {
        // A sealed request of the largest size clients open, in its sealed queue message.
        let request_bytes = MAX_SEALED_REQUEST + 1024;
        QueueLimits {
            messages: KindLimits {
                message_bytes: self.queue_message_bytes,
                max_messages: self.queue_max_messages,
                max_bytes: self.queue_max_bytes,
                settings: roost_actors::queue::LimitSettings {
                    message_bytes: "limits.queue_message_bytes",
                    max_messages: "limits.queue_max_messages",
                    max_bytes: "limits.queue_max_bytes",
                },
            },
            connections: KindLimits {
                message_bytes: request_bytes,
                max_messages: self.connection_requests_per_client,
                max_bytes: self.connection_requests_per_client * request_bytes as u64,
                settings: roost_actors::queue::LimitSettings {
                    message_bytes: "the protocol's sealed-request size",
                    max_messages: "limits.connection_requests_per_client",
                    max_bytes: "limits.connection_requests_per_client",
                },
            },
            long_polls: self.long_polls_per_queue,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationSettings {
    /// `DOMAIN=URL` overrides of where other homeservers are reached.
    pub resolve: Vec<String>,
    /// Only these domains may federate (empty: any).
    pub allow: Vec<Domain>,
    /// These domains may never federate.
    pub deny: Vec<Domain>,
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// CA certificates (PEM) trusted for other homeservers beside the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `resolve` parsed, when the settings are loaded.
    #[serde(skip)]
    pub resolver: Resolver,
}

impl FederationSettings {
    pub fn policy(&self) -> DomainPolicy {
        DomainPolicy {
            allow: self.allow.clone(),
            deny: self.deny.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSettings {
    pub max_package_lifetime_secs: u64,
    pub discovery_per_minute: u32,
    pub discovery_burst: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub filter: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub bind: SocketAddr,
    pub domain: Domain,
    pub max_body_bytes: usize,
    pub shutdown_timeout_secs: u64,
    /// HTTPS on `bind` (else plain HTTP, for loopback or behind a reverse proxy).
    #[serde(default)]
    pub tls: Option<TlsSettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The certificate chain, PEM, the server's own certificate first.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    pub path: PathBuf,
    pub cache_mib: u64,
    pub reserve_mib: u64,
    /// How often to look whether a compaction is worth it; 0: never.
    pub compact_check_secs: u64,
    /// The least space a compaction must give back to be worth it.
    pub compact_min_wasted_mib: u64,
}

impl StorageSettings {
    pub fn options(&self) -> roost_storage::StoreOptions {
        roost_storage::StoreOptions {
            cache_bytes: self.cache_mib.saturating_mul(1024 * 1024),
            reserve_bytes: self.reserve_mib.saturating_mul(1024 * 1024),
            on_lost_writes: roost_storage::OnLostWrites::Refuse,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationSettings {
    pub policy: Policy,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    Open,
    Token,
}

impl From<Policy> for RegistrationPolicy {
    fn from(p: Policy) -> Self {
        match p {
            Policy::Open => RegistrationPolicy::Open,
            Policy::Token => RegistrationPolicy::Token,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSettings {
    pub client_lifetime_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorSettings {
    pub idle_secs: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid settings: {0}")]
pub struct SettingsError(String);

impl Settings {
    /// Loads the settings. `file` is the `--config` argument; without it `./config.toml` is
    /// read if it exists.
    pub fn load(file: Option<&Path>) -> Result<Settings, SettingsError> {
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        match file {
            Some(path) => {
                if !path.is_file() {
                    return Err(SettingsError(format!(
                        "the config file {} does not exist",
                        path.display()
                    )));
                }
                builder = builder.add_source(File::from(path).format(FileFormat::Toml));
            }
            None => {
                builder = builder.add_source(
                    File::with_name("config.toml")
                        .format(FileFormat::Toml)
                        .required(false),
                );
            }
        }
        let mut settings: Settings = builder
            .add_source(
                Environment::with_prefix("ROOST")
                    .source(Some(server_variables(std::env::vars())))
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("federation.resolve")
                    .with_list_parse_key("federation.allow")
                    .with_list_parse_key("federation.deny"),
            )
            .build()
            .and_then(Config::try_deserialize)
            .map_err(|e| SettingsError(e.to_string()))?;
        settings.federation.resolver = Resolver::from_entries(&settings.federation.resolve)
            .map_err(|e| SettingsError(format!("federation.resolve: {e}")))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let fail = |key: &str, why: &str| Err(SettingsError(format!("{key}: {why}")));
        if self.server.max_body_bytes < 1024 {
            return fail("server.max_body_bytes", "must be at least 1024");
        }
        let limits = &self.limits;
        if limits.queue_message_bytes > MAX_QUEUE_MESSAGE
            || limits.queue_message_bytes < self.server.max_body_bytes + 4096
        {
            return fail(
                "limits.queue_message_bytes",
                &format!("must be at least server.max_body_bytes + 4096 (what a request may carry, sealed) and at most {MAX_QUEUE_MESSAGE} (what a client reads in one answer)"),
            );
        }
        if (limits.body_bytes_burst_per_address as usize) < self.server.max_body_bytes {
            return fail(
                "limits.body_bytes_burst_per_address",
                "must be at least server.max_body_bytes, one request",
            );
        }
        if (limits.relays_burst_per_domain as usize) < MAX_RELAY_DELIVERIES {
            return fail(
                "limits.relays_burst_per_domain",
                &format!("must be at least {MAX_RELAY_DELIVERIES}, a whole relay request"),
            );
        }
        if limits.queue_max_bytes < limits.queue_message_bytes as u64 {
            return fail(
                "limits.queue_max_bytes",
                "must be at least limits.queue_message_bytes",
            );
        }
        for (key, value) in [
            ("limits.queue_max_messages", limits.queue_max_messages),
            (
                "limits.connection_requests_per_client",
                limits.connection_requests_per_client,
            ),
            (
                "limits.long_polls_per_queue",
                limits.long_polls_per_queue as u64,
            ),
            (
                "limits.connection_requests_burst",
                limits.connection_requests_burst.into(),
            ),
            (
                "limits.requests_per_last_resort_per_hour",
                limits.requests_per_last_resort_per_hour.into(),
            ),
            (
                "limits.connections_per_address",
                limits.connections_per_address as u64,
            ),
            ("limits.body_read_secs", limits.body_read_secs),
            ("limits.clients_per_user", limits.clients_per_user as u64),
            ("limits.members_per_group", limits.members_per_group as u64),
            ("limits.group_state_bytes", limits.group_state_bytes as u64),
        ] {
            if value == 0 {
                return fail(key, "must be positive");
            }
        }
        if self.credentials.client_lifetime_secs == 0 {
            return fail("credentials.client_lifetime_secs", "must be positive");
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.filter).is_err() {
            return fail("log.filter", "is not a valid tracing filter");
        }
        if !self.metrics.bind.is_empty() {
            match self.metrics.address() {
                None => return fail("metrics.bind", "is not an address (e.g. 127.0.0.1:9464)"),
                // Port 0: each picks a free port of its own.
                Some(address) if address == self.server.bind && address.port() != 0 => {
                    return fail(
                        "metrics.bind",
                        "must not be server.bind: metrics are never on the public port",
                    )
                }
                Some(_) => {}
            }
        }
        let tokens = &self.tokens;
        for (key, value) in [
            ("tokens.period_secs", tokens.period_secs),
            ("tokens.key_epoch_secs", tokens.key_epoch_secs),
            (
                "tokens.redemptions_burst_per_issuer",
                tokens.redemptions_burst_per_issuer.into(),
            ),
            (
                "tokens.groups_per_issuer_epoch",
                tokens.groups_per_issuer_epoch,
            ),
        ] {
            if value == 0 {
                return fail(key, "must be positive");
            }
        }
        for operation in Operation::ALL {
            if tokens.costs.of(operation) > MAX_TOKENS_PER_REQUEST {
                return fail(
                    &format!("tokens.costs.{}", operation.name()),
                    &format!(
                        "must be at most {MAX_TOKENS_PER_REQUEST}, the tokens one request carries"
                    ),
                );
            }
        }
        if self.actors.idle_secs == 0 {
            return fail("actors.idle_secs", "must be positive");
        }
        let retry = &self.federation;
        if retry.retry_initial_ms == 0 || retry.retry_max_ms < retry.retry_initial_ms {
            return fail(
                "federation.retry_max_ms",
                "retry_initial_ms must be positive and at most retry_max_ms",
            );
        }
        Ok(())
    }

    pub fn admin_socket(&self) -> PathBuf {
        self.storage.path.join("admin.sock")
    }
}

/// The variables meant for the server: `ROOST_SECTION__KEY`. Others that start with `ROOST_`
/// (the client's `ROOST_CLIENT_STATE`, `ROOST_PASSWORD`, …) are not settings and must not make
/// the server refuse to start.
fn server_variables(vars: impl Iterator<Item = (String, String)>) -> config::Map<String, String> {
    vars.filter(|(name, _)| {
        name.strip_prefix("ROOST_")
            .is_some_and(|rest| rest.contains("__"))
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_section_variables_are_settings() {
        let vars = [
            ("ROOST_SERVER__BIND", "0.0.0.0:1"),
            ("ROOST_PASSWORD", "secret"),
            ("ROOST_CLIENT_STATE", "/x"),
            ("HOME", "/root"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let kept = server_variables(vars.into_iter());
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["ROOST_SERVER__BIND"]);
    }

    #[test]
    fn the_shipped_config_file_is_the_default() {
        let settings = Settings::load(Some(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config.toml"
        ))))
        .unwrap();
        assert_eq!(settings.server.domain.as_str(), "localhost");
        assert_eq!(settings.storage.path, PathBuf::from("./data"));
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[server]\ndomain = \"Not A Domain\"\n").unwrap();
        let err = Settings::load(Some(&file)).unwrap_err().to_string();
        assert!(err.contains("server.domain"), "{err}");
        std::fs::write(&file, "[federation]\nresolve = [\"b.test\"]\n").unwrap();
        let err = Settings::load(Some(&file)).unwrap_err().to_string();
        assert!(err.contains("federation.resolve"), "{err}");
        std::fs::write(&file, "[server]\nbnid = \"x\"\n").unwrap();
        let err = Settings::load(Some(&file)).unwrap_err().to_string();
        assert!(err.contains("bnid"), "{err}");
    }
}
