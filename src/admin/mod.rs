//! `roost admin`: every command is one [`Command`], which [`Core::run`] carries out on the
//! server's actors and store. With the server running, the command travels through a Unix
//! socket beside the store ([`socket`]; the socket file's permissions are the access control)
//! and runs in the server; with it stopped, the command starts the actors on the store for
//! itself ([`offline`]). So a command does the same either way, and what it changes goes through
//! the actors that own the records, as a client's request would. Answers are JSON values, shown
//! as text ([`render`]) unless `--json` is given.
//!
//! Must not touch: the HTTP API, and any record directly (it asks the actors, the
//! [`roost_actors::federation_policy::FederationPolicy`] and the store's read-only views).

mod accounts;
mod federation;
mod keys;
mod offline;
pub mod render;
mod socket;
mod status;
mod store;

use std::time::SystemTime;

use actix::Addr;
use clap::Subcommand;
use serde::{Deserialize, Serialize};

use roost_actors::{
    accounts::{AccountsActor, AccountsError},
    federation::FederationActor,
    federation_policy::FederationPolicy,
    AskError, Pool,
};
use roost_protocol::{ClientId, Domain, UserName};
use roost_storage::{StorageError, Store};

use crate::settings::Settings;

pub use socket::server;

/// What `roost admin` does. Each variant's doc comment is its `--help` text.
#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Users: list them, show one, deactivate, reactivate or delete one.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Clients (a user's devices): revoke one.
    Clients {
        #[command(subcommand)]
        command: ClientsCommand,
    },
    /// Registration tokens, for `registration.policy = "token"`: create, list, revoke.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The server at a glance: version, uptime, users, clients, groups, queued messages, store
    /// size and free disk, relays waiting per domain, blocked domains, key fingerprints.
    Status,
    /// Federation with other homeservers: block or unblock a domain at run time (kept across
    /// restarts), list the blocked ones.
    Federation {
        #[command(subcommand)]
        command: FederationCommand,
    },
    /// The server's signing keys: show their fingerprints, or rotate one. Client credentials
    /// signed by a rotated intermediate verify until they expire; peers fetch a rotated
    /// federation key at the first signature they cannot verify.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Show what this server stores about a group, a client's queues or the federation outbox:
    /// sizes, counts and ids only (what it holds is ciphertext it cannot read).
    Inspect {
        #[command(subcommand)]
        what: Inspect,
    },
    /// Copy the store into DIR (new, or empty) while the server serves: writes wait for the
    /// moment of the copy, reads go on, and the copy is the store at one instant. DIR must be
    /// writable by the server's user.
    Backup {
        #[arg(value_name = "DIR")]
        dir: std::path::PathBuf,
    },
    /// Put the backup in DIR in the store's place (only while the server is stopped; the store
    /// it replaces is kept beside it). Then every one-time connection and key package in it is
    /// forgotten, so none is handed out twice (last-resort ones stand in until clients publish
    /// fresh ones), and every queue
    /// numbers new messages past what it handed out since the backup. What happened after the
    /// backup is lost; groups changed since then need their members to rejoin.
    Restore {
        #[arg(value_name = "DIR")]
        dir: std::path::PathBuf,
    },
    /// Rewrite the store without the space of deleted records, which sled keeps (the server
    /// does this itself when worth it: `storage.compact_check_secs`). Writes wait for the copy,
    /// reads go on; it needs free disk space for the records the store holds.
    Compact,
    /// Read every record of the store and report what is damaged: records that cannot be read
    /// or decoded, queues that lack messages. Exits 1 if anything is. See the README, "A
    /// damaged store", for what to do then.
    Check,
    /// Take a store that lost recent writes (a damaged data file) as it is, so that the server
    /// starts on it again; what was lost stays lost. Only while the server is stopped; restoring
    /// a backup is the better way when there is one.
    Repair,
}

#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsersCommand {
    /// Every user: name, standing (active, deactivated, deleted), clients, when registered.
    List,
    /// One user: standing, and each client with its credential's expiry and queued messages.
    Show {
        /// `alice@example.org`, or `alice` for a user of this server.
        user: String,
    },
    /// Lock a user out until reactivated: its clients are refused (403 account_deactivated),
    /// nobody can discover it or add it to a group; everything stored stays.
    Deactivate { user: String },
    /// Let a deactivated user in again.
    Reactivate { user: String },
    /// Delete a user for good: its clients, their queues, connection packages and key packages,
    /// its friendship token. The name stays reserved: nobody can register it again.
    Delete { user: String },
}

#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientsCommand {
    /// Delete one client (a lost or stolen device) with its queues and packages; the user's
    /// other clients are told, as when the user deletes it.
    Revoke {
        #[arg(value_name = "CLIENT_ID")]
        client: ClientId,
    },
}

#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenCommand {
    /// Create a registration token and print it (it is shown only this once; the server keeps
    /// only its hash).
    Create {
        /// How many registrations it admits.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        uses: u32,
        /// How long it stays valid: a number with a unit, `30m`, `12h`, `7d`, `2w` (default:
        /// until used up or revoked).
        #[arg(long, value_name = "DURATION", value_parser = render::parse_duration)]
        expires: Option<u64>,
    },
    /// The tokens that may still be used: id, uses left, expiry. The tokens themselves are not
    /// stored, so they cannot be shown again.
    List,
    /// Revoke a token, by its id (from `token list`) or the token itself.
    Revoke {
        #[arg(value_name = "ID_OR_TOKEN")]
        token: String,
    },
}

#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FederationCommand {
    /// Stop federating with a domain now: its requests are refused (403 domain_not_allowed),
    /// nothing is sent to it, and the deliveries waiting for it are dropped.
    Block { domain: Domain },
    /// Federate with a domain an admin blocked again (a domain `federation.deny` lists stays
    /// denied).
    Unblock { domain: Domain },
    /// The domains blocked at run time, and the settings' allow and deny lists.
    List,
}

#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeysCommand {
    /// Fingerprints of the AS credential, the intermediate in force, the retired intermediates
    /// still served, and the federation key.
    Show,
    /// Replace a key with a fresh one from now on.
    Rotate {
        /// `intermediate`: the AS intermediate credential, which signs client credentials;
        /// `federation`: the key that signs this server's requests to other homeservers.
        #[arg(value_enum)]
        key: KeyKind,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    Intermediate,
    Federation,
}

/// What `roost admin inspect` can look at.
#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Inspect {
    /// A DS group, by its id in hex.
    Group {
        #[arg(value_name = "GROUP_ID")]
        id: String,
    },
    /// A client's message queue and connection queue, by client id.
    Queue {
        #[arg(value_name = "CLIENT_ID")]
        client: String,
    },
    /// Deliveries waiting to be relayed, per domain.
    Outbox,
    /// What the server holds in all, to set against its limits (config.toml, `[limits]`): users,
    /// queued messages and bytes with the largest queues, groups, free disk space.
    Usage,
    /// Privacy Pass: tokens issued per period (to all users together), the issuer keys and
    /// the costs. Never where tokens were spent, nor any user's count.
    Tokens,
}

/// Why an admin command failed; [`AdminError::code`] names it in the socket's JSON answer.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The command's input is wrong (an unknown user, a malformed id, …).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    NotFound(String),
    #[error("the running server refused: {0}")]
    Server(String),
    #[error("cannot talk to the running server through {socket}: {source}")]
    Socket {
        socket: String,
        source: std::io::Error,
    },
    #[error("cannot start on the store: {0}")]
    Start(#[from] crate::error::ServeError),
    #[error(transparent)]
    Storage(StorageError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl AdminError {
    /// The JSON error code and HTTP status of the admin socket's answer.
    pub fn code(&self) -> (&'static str, u16) {
        match self {
            AdminError::Refused(_) => ("refused", 400),
            AdminError::NotFound(_) => ("not_found", 404),
            _ => ("internal", 500),
        }
    }
}

impl From<StorageError> for AdminError {
    fn from(e: StorageError) -> Self {
        match e {
            // A backup or restore the admin asked for that cannot be made as asked (a directory
            // that is not empty, or not a backup): the admin's input, not the server, is wrong.
            StorageError::Backup(_) | StorageError::Restore(_) => {
                AdminError::Refused(e.to_string())
            }
            e => AdminError::Storage(e),
        }
    }
}

impl From<AccountsError> for AdminError {
    fn from(e: AccountsError) -> Self {
        match e {
            AccountsError::UnknownUser
            | AccountsError::UnknownClient
            | AccountsError::UnknownToken(_) => AdminError::NotFound(e.to_string()),
            AccountsError::Storage(e) => AdminError::Storage(e),
            AccountsError::Internal(e) => AdminError::Internal(e),
            e => AdminError::Refused(e.to_string()),
        }
    }
}

impl From<AskError<AccountsError>> for AdminError {
    fn from(e: AskError<AccountsError>) -> Self {
        match e {
            AskError::Actor(e) => e.into(),
            e => AdminError::Internal(e.to_string()),
        }
    }
}

/// What admin commands run on: the server's actors and store.
pub struct Core {
    pub domain: Domain,
    pub store: Store,
    pub accounts: Addr<AccountsActor>,
    pub federation: Addr<Pool<FederationActor>>,
    pub policy: FederationPolicy,
    pub keys: roost_actors::keys::KeyRing,
    pub token_issuer: roost_actors::tokens::TokenIssuer,
    pub token_costs: roost_protocol::tokens::policy::Costs,
    /// When the server started; `None` when the command runs on a stopped server's store.
    pub serving_since: Option<SystemTime>,
}

impl Core {
    /// Carries out `command` (all but `repair`, which needs the store to itself).
    pub async fn run(&self, command: Command) -> Result<serde_json::Value, AdminError> {
        match command {
            Command::Users { command } => accounts::users(self, command).await,
            Command::Clients {
                command: ClientsCommand::Revoke { client },
            } => accounts::revoke_client(self, client).await,
            Command::Token { command } => accounts::tokens(self, command).await,
            Command::Status => status::status(self),
            Command::Federation { command } => federation::run(self, command).await,
            Command::Keys { command } => keys::run(self, command).await,
            Command::Inspect { what } => store::inspect(self, &what),
            Command::Check => store::check(self.store.clone()).await,
            Command::Backup { dir } => store::backup(self.store.clone(), dir).await,
            Command::Compact => store::compact(self.store.clone()).await,
            Command::Repair => Err(AdminError::Refused(
                "the server is running: stop it before `roost admin repair`".into(),
            )),
            Command::Restore { .. } => Err(AdminError::Refused(
                "the server is running: stop it before `roost admin restore`".into(),
            )),
        }
    }

    /// A user of this server named in a command: `alice@example.org`, or `alice`.
    fn user(&self, given: &str) -> Result<UserName, AdminError> {
        let full = match given.contains('@') {
            true => given.to_owned(),
            false => format!("{given}@{}", self.domain),
        };
        let user: UserName = full
            .parse()
            .map_err(|e| AdminError::Refused(format!("{given:?} is not a user name: {e}")))?;
        if user.domain() != &self.domain {
            return Err(AdminError::Refused(format!(
                "{user} is not a user of this server ({})",
                self.domain
            )));
        }
        Ok(user)
    }
}

fn absolute(dir: &std::path::Path) -> Result<std::path::PathBuf, AdminError> {
    std::path::absolute(dir).map_err(|e| AdminError::Refused(format!("{}: {e}", dir.display())))
}

/// Runs `command` in the running server if there is one, else on the store.
pub fn execute(settings: &Settings, command: Command) -> Result<serde_json::Value, AdminError> {
    // A path means what it means where the command was typed, not in the server's directory.
    let command = match command {
        Command::Backup { dir } => Command::Backup {
            dir: absolute(&dir)?,
        },
        Command::Restore { dir } => Command::Restore {
            dir: absolute(&dir)?,
        },
        command => command,
    };
    match socket::connect(settings) {
        Some(stream) => socket::call(stream, &settings.admin_socket(), &command),
        None => match command {
            Command::Repair => store::repair(settings).map(serde_json::Value::String),
            Command::Check => store::check_stopped(settings),
            Command::Restore { dir } => store::restore(settings, &dir),
            command => offline::run(settings, command),
        },
    }
}
