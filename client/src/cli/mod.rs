//! The `roost-client` command line: argument parsing (`args`), running a command
//! (`execute`), and printing its [`Outcome`] for people (`text`) or, with `--json`, as one JSON
//! value for scripts and tests (`json`).
//!
//! Owns: the command line's shape and output. Must not touch: the library's internals; it uses
//! only the public API a program embedding the client would use.

mod args;
mod execute;
mod json;
mod profile;
#[cfg(test)]
mod tests;
mod text;

use std::{ffi::OsString, io::Write, process::ExitCode};

use clap::Parser;
use serde_json::{json, Value};

use crate::{
    account::{ClientEntry, WhoAmI},
    connections::{Accepted, Connected, Rejected},
    error::Error,
    groups::GroupSummary,
    inbox::{Received, SyncReport},
    store::{Contact, NamedGroup, PendingRequest, StoredMessage},
};
use roost_protocol::{
    api::{ConnectionPackageCount, KeyPackageCount},
    connection::ConnectionPackage,
    ClientId, UserName,
};

pub use args::{Cli, Command, GroupCommand, MAX_PUBLISH_COUNT, MAX_WAIT_SECS, PASSWORD_ENV};
pub use execute::{execute, read_password, state_dir};

/// Why a command failed: the way it was asked for, or the request itself.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{message}")]
    Usage { code: &'static str, message: String },
    #[error(transparent)]
    Client(#[from] Error),
}

impl CliError {
    fn usage(code: &'static str, message: impl Into<String>) -> Self {
        CliError::Usage {
            code,
            message: message.into(),
        }
    }

    pub fn code(&self) -> &str {
        match self {
            CliError::Usage { code, .. } => code,
            CliError::Client(e) => e.code(),
        }
    }

    /// 2 for usage errors (like clap's own), 1 for failed requests.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage { .. } => 2,
            CliError::Client(_) => 1,
        }
    }

    /// The machine-readable form printed on stderr with `--json`.
    pub fn to_json(&self) -> Value {
        let mut value = json!({ "error": self.code(), "message": self.to_string() });
        if let CliError::Client(e) = self {
            if let Some(status) = e.status() {
                value["status"] = json!(status);
            }
        }
        value
    }
}

/// What a command produced.
#[derive(Debug)]
pub enum Outcome {
    Enrolled {
        user: UserName,
        client_id: ClientId,
        server_url: String,
        /// Publishing the first connection packages: the count, or the error's code and text.
        packages: Option<Result<ConnectionPackageCount, (String, String)>>,
    },
    Clients(Vec<ClientEntry>),
    Deleted(ClientId),
    WhoAmI(WhoAmI),
    Sent {
        target: ClientId,
        seq: u64,
    },
    Inbox(Vec<Received>),
    PackageCount(ConnectionPackageCount, KeyPackageCount),
    Requests {
        pending: Vec<PendingRequest>,
        rejected: Vec<Rejected>,
    },
    Declined(String),
    /// The app was stopped.
    AppStopped,
    /// A profile: this user's own, or (self-declared) someone else's.
    Profile {
        user: UserName,
        profile: roost_protocol::profile::Profile,
        self_declared: bool,
    },
    Discovered {
        user: UserName,
        packages: Vec<ConnectionPackage>,
    },
    Connected(Connected),
    Accepted(Accepted),
    Synced(SyncReport),
    Contacts(Vec<Contact>),
    MessageSent(StoredMessage),
    Messages(Vec<StoredMessage>),
    /// `watch` ended; how many messages it printed.
    Watched(usize),
    Groups(Vec<GroupSummary>),
    GroupCreated(NamedGroup),
    GroupChanged {
        group: String,
        user: UserName,
        added: bool,
        clients: usize,
    },
    /// Each member's user name, and its display name if it shared a profile.
    GroupMembers(Vec<(UserName, Option<String>)>),
    /// The friendship token was replaced and shared in this many connections.
    TokenRotated(usize),
    /// This user's clients (how many) left the group.
    GroupLeft {
        group: String,
        clients: usize,
    },
    /// What a listing showed although the sync before it failed (code, message).
    Unsynced(Box<Outcome>, (String, String)),
}

/// Parses `args` (the program name first), runs the command and prints its outcome.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help and version on stdout, usage errors on stderr.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::usage("internal", format!("cannot start the runtime: {e}")))
        .and_then(|runtime| runtime.block_on(execute(&cli)));
    match result {
        Ok(outcome) => {
            let text = if cli.json {
                outcome.to_json().to_string()
            } else {
                outcome.to_text()
            };
            let _ = writeln!(std::io::stdout().lock(), "{text}");
            if let Some(warning) = outcome.warning() {
                let text = if cli.json {
                    warning.to_string()
                } else {
                    format!(
                        "warning: {}",
                        warning["message"].as_str().unwrap_or_default()
                    )
                };
                let _ = writeln!(std::io::stderr().lock(), "{text}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let text = if cli.json {
                e.to_json().to_string()
            } else {
                format!("error: {e}")
            };
            let _ = writeln!(std::io::stderr().lock(), "{text}");
            ExitCode::from(e.exit_code())
        }
    }
}
