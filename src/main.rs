//! `roost`: the homeserver binary.
//!
//! Owns: the command line, settings, the HTTP front-end and the wiring of actors to the store.
//! See ARCHITECTURE.md for the map.

mod admin;
mod error;
mod federation;
mod http;
mod server;
mod settings;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use settings::Settings;

/// Roost: a self-hosted homeserver for end-to-end encrypted messaging.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Settings file (TOML). Without it, ./config.toml is read if present. Any setting can be
    /// overridden by an environment variable ROOST_SECTION__KEY, e.g. ROOST_SERVER__BIND.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the homeserver until SIGINT or SIGTERM.
    Serve,
    /// Administer the homeserver (works whether or not it is running).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Registration tokens, for `registration.policy = "token"`.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Read every record of the store and report, as JSON, what is damaged: records that cannot
    /// be read or decoded, queues that lack messages. Exits 1 if anything is. See the README,
    /// "A damaged store", for what to do then.
    Check,
    /// Take a store that lost recent writes (a damaged data file) as it is, so that the server
    /// starts on it again; what was lost stays lost. Only while the server is stopped; restoring
    /// a backup is the better way when there is one.
    Repair,
    /// Show what this server stores about a group, a client's queues or the federation outbox,
    /// as JSON: sizes, counts and ids only (what it holds is ciphertext it cannot read).
    Inspect {
        #[command(subcommand)]
        what: InspectCommand,
    },
}

#[derive(Subcommand)]
enum InspectCommand {
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
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a single-use registration token and print it.
    Create,
}

/// actix logs every malformed HTTP request it receives (and answers 400 itself) as an ERROR
/// line: anyone could fill the log with them. One such line a minute is plenty to notice.
#[derive(Default)]
struct AtMostOneProtocolErrorAMinute {
    last: std::sync::Mutex<Option<std::time::Instant>>,
}

impl AtMostOneProtocolErrorAMinute {
    const TARGET: &str = "actix_http::h1::dispatcher";
}

impl<S> tracing_subscriber::layer::Filter<S> for AtMostOneProtocolErrorAMinute {
    fn enabled(
        &self,
        _: &tracing::Metadata<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        true
    }

    fn callsite_enabled(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if metadata.target() == Self::TARGET {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::always()
        }
    }

    // Asked once per event, after `enabled`.
    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        let metadata = event.metadata();
        if metadata.target() != Self::TARGET || *metadata.level() > tracing::Level::WARN {
            return true;
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < std::time::Duration::from_secs(60)) {
            return false;
        }
        *last = Some(now);
        true
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("roost: {e}");
            return ExitCode::from(2);
        }
    };
    {
        use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, Layer};
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    // The outer filter is asked first: only lines the filter lets through count.
                    .with_filter(AtMostOneProtocolErrorAMinute::default())
                    .with_filter(EnvFilter::new(&settings.log.filter)),
            )
            .init();
    }
    let outcome = match cli.command {
        Command::Serve => actix_web::rt::System::new()
            .block_on(server::serve(settings))
            .map_err(|e| e.to_string()),
        Command::Admin {
            command:
                AdminCommand::Token {
                    command: TokenCommand::Create,
                },
        } => admin::create_registration_token(&settings)
            .map(|token| println!("{token}"))
            .map_err(|e| e.to_string()),
        Command::Admin {
            command: AdminCommand::Repair,
        } => admin::repair(&settings)
            .map(|said| println!("{said}"))
            .map_err(|e| e.to_string()),
        Command::Admin {
            command: AdminCommand::Check,
        } => match admin::check_anyhow(&settings) {
            Ok((report, sound)) => {
                println!("{report:#}");
                if !sound {
                    eprintln!("roost: the store is damaged (see \"problems\")");
                    return ExitCode::FAILURE;
                }
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        },
        Command::Admin {
            command: AdminCommand::Inspect { what },
        } => {
            let what = match what {
                InspectCommand::Group { id } => admin::Inspect::Group { id },
                InspectCommand::Queue { client } => admin::Inspect::Queue { client },
                InspectCommand::Outbox => admin::Inspect::Outbox,
                InspectCommand::Usage => admin::Inspect::Usage,
            };
            admin::inspect_anyhow(&settings, &what)
                .map(|found| println!("{found}"))
                .map_err(|e| e.to_string())
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roost: {e}");
            ExitCode::FAILURE
        }
    }
}
