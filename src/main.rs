//! `roost`: the homeserver binary.
//!
//! Owns: the command line, settings, the HTTP front-end and the wiring of actors to the store.
//! See ARCHITECTURE.md for the map.

mod admin;
mod error;
mod federation;
mod http;
mod metrics;
mod server;
mod settings;
mod tls;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use settings::{LogFormat, Settings};

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
    /// Administer the homeserver, whether or not it is running: through the running server's
    /// admin socket (beside the store), else on the store itself.
    Admin {
        /// Print the answer as JSON (for scripts), not as text.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: admin::Command,
    },
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

/// Runs an admin command and prints its answer; exits 1 if it failed, or if `check` found
/// damage.
fn admin_command(settings: &Settings, json: bool, command: admin::Command) -> ExitCode {
    let checking = matches!(command, admin::Command::Check);
    match admin::execute(settings, command) {
        Ok(answer) => {
            match json {
                true => println!("{answer:#}"),
                false => print!("{}", admin::render::text(&answer)),
            }
            if checking && !answer["problems"].as_array().is_some_and(Vec::is_empty) {
                eprintln!("roost: the store is damaged (see \"problems\")");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("roost: {e}");
            ExitCode::FAILURE
        }
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
        let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        let lines = match settings.log.format {
            LogFormat::Json => lines.json().boxed(),
            LogFormat::Text => lines
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .boxed(),
        };
        tracing_subscriber::registry()
            .with(
                lines
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
        Command::Admin { json, command } => return admin_command(&settings, json, command),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roost: {e}");
            ExitCode::FAILURE
        }
    }
}
