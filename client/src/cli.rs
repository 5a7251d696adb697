//! The `roost-client` command line: argument parsing, running a command, and printing its
//! outcome for people or, with `--json`, as one JSON value for scripts and tests.

use std::{
    ffi::OsString,
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::{Parser, Subcommand};
use roost_protocol::{
    api::{ConnectionPackageCount, KeyPackageCount, Notice, QueueItem},
    connection::ConnectionPackage,
    federation::Resolver,
    ClientId, Timestamp, UserName,
};
use serde_json::{json, Value};

use crate::{
    client::{Client, ClientEntry, Received, WhoAmI},
    connections::{Rejected, INITIAL_PACKAGES},
    error::Error,
    groups::{Accepted, Connected, JoinedVia, SyncReport},
    named_groups::GroupSummary,
    state::{Contact, NamedGroup, PendingRequest, StoredMessage},
};

/// Environment variable a password is read from when no `--password-file` is given.
pub const PASSWORD_ENV: &str = "ROOST_PASSWORD";
/// Longest `inbox --wait`, the server's long-poll limit.
pub const MAX_WAIT_SECS: u64 = 30;
/// Most packages `publish-packages` makes at once (what the AS keeps for a client).
pub const MAX_PUBLISH_COUNT: u64 = 1000;

/// Command-line client for a Roost homeserver.
///
/// Each state directory holds one client (one device) of one user: its secret keys, its
/// credential, its home server and how far it has read its queue. Create one with `register`
/// (a new user) or `add-client` (another device of an existing user).
#[derive(Debug, Parser)]
#[command(name = "roost-client", version)]
pub struct Cli {
    /// State directory of this client [default: $HOME/.roost-client]
    #[arg(long, global = true, env = "ROOST_CLIENT_STATE", value_name = "DIR")]
    pub state: Option<PathBuf>,

    /// Print the result as one JSON value on stdout; errors go to stderr as
    /// {"error": CODE, "message": TEXT}
    #[arg(long, global = true)]
    pub json: bool,

    /// Reach the homeserver of DOMAIN at URL instead of https://DOMAIN (repeatable; for
    /// private deployments and local tests), e.g. --resolve b.test=http://127.0.0.1:8081
    #[arg(
        long,
        global = true,
        value_name = "DOMAIN=URL",
        env = "ROOST_CLIENT_RESOLVE",
        value_delimiter = ','
    )]
    pub resolve: Vec<String>,

    #[command(subcommand)]
    pub command: Command,
}

// Doc comments here are the --help text, where URLs are plain text.
#[allow(rustdoc::bare_urls)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new user on a homeserver, with this as its first client.
    ///
    /// The password is read from --password-file, or else from the ROOST_PASSWORD environment
    /// variable; it is never taken on the command line.
    Register {
        /// The new user's name, e.g. alice@example.org
        #[arg(value_name = "USER@DOMAIN")]
        user: UserName,
        /// Base URL of the user's homeserver, e.g. https://roost.example.org
        #[arg(long, value_name = "URL")]
        server: String,
        /// File holding the password (one trailing newline is ignored)
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Registration token, if the server's admin requires one
        #[arg(long, value_name = "TOKEN")]
        token: Option<String>,
    },
    /// Add this as another client (device) of an existing user, authenticated by its password.
    ///
    /// The password is read from --password-file, or else from the ROOST_PASSWORD environment
    /// variable.
    AddClient {
        /// The existing user, e.g. alice@example.org
        #[arg(value_name = "USER@DOMAIN")]
        user: UserName,
        /// Base URL of the user's homeserver
        #[arg(long, value_name = "URL")]
        server: String,
        /// File holding the password (one trailing newline is ignored)
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// List the user's clients: id, when added, credential validity, and which one is this.
    Clients,
    /// Remove one of the user's clients (its credential stops working).
    DeleteClient {
        /// Id of the client to remove (32 hex characters, as `clients` shows)
        #[arg(value_name = "CLIENT_ID")]
        client_id: ClientId,
    },
    /// Show this client's user, id, server and credential validity (no network needed).
    Whoami,
    /// Send a text to another client of the same user (or to this one).
    SendOwn {
        /// Id of the receiving client
        #[arg(value_name = "CLIENT_ID")]
        client_id: ClientId,
        /// The text to send
        text: String,
    },
    /// Receive, show and acknowledge the messages waiting in this client's queue.
    Inbox {
        /// Wait up to this many seconds (at most 30) for a first message if none is waiting
        #[arg(long, value_name = "SECS", default_value_t = 0,
              value_parser = clap::value_parser!(u64).range(0..=MAX_WAIT_SECS))]
        wait: u64,
    },
    /// Publish connection packages, so that others can find this client and ask to connect.
    ///
    /// Publishes COUNT one-time packages, and a last-resort package if the server has none
    /// (or this client's ends within a day); shows how many the server then holds.
    /// `register` and `add-client` already publish a first batch.
    PublishPackages {
        /// How many one-time packages to publish
        #[arg(long, value_name = "N", default_value_t = INITIAL_PACKAGES as u64,
              value_parser = clap::value_parser!(u64).range(0..=MAX_PUBLISH_COUNT))]
        count: u64,
    },
    /// Fetch new connection requests, then list those waiting for a decision.
    ///
    /// Each request is checked (its signature, that it was made for this user and client, and
    /// the sender's credential); one that fails is dropped and listed as rejected.
    Requests,
    /// Decline a connection request: it is deleted here; nothing is sent to the sender.
    Decline {
        /// The request's id, as `requests` shows it
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Ask a user to connect: creates the connection group (with this user's other clients)
    /// and sends every client of the user an invitation.
    Connect {
        /// The user to connect with, e.g. bob@example.org
        #[arg(value_name = "USER@DOMAIN")]
        user: UserName,
    },
    /// Accept a connection request: join its connection group (or find that another client of
    /// this user already did) and add this user's other clients.
    Accept {
        /// The request's id, as `requests` shows it
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Read this client's queue: join groups it was invited into and apply group changes.
    Sync,
    /// List this client's connections.
    Contacts,
    /// Send a chat message to a connected user (and your other clients).
    Send {
        /// The connected user, e.g. bob@example.org
        #[arg(value_name = "USER@DOMAIN")]
        peer: UserName,
        /// The message
        #[arg(value_name = "TEXT")]
        text: String,
    },
    /// Show the chat with a connected user, as far as this client has synced.
    Messages {
        /// The connected user, e.g. bob@example.org
        #[arg(value_name = "USER@DOMAIN")]
        peer: UserName,
    },
    /// Keep reading the queue and print chat messages as they arrive (until Ctrl-C).
    ///
    /// With --json, each message is printed as one JSON line.
    Watch {
        /// Stop after this many seconds
        #[arg(long = "for", value_name = "SECS")]
        for_secs: Option<u64>,
    },
    /// List this client's named groups.
    Groups,
    /// Named groups: create one, add or remove connected users, chat in it.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Look up a user's clients by name and check their connection packages (for operators).
    ///
    /// Uses up one of each client's one-time connection packages on its server.
    Discover {
        /// The user to look up, e.g. bob@example.org
        #[arg(value_name = "USER@DOMAIN")]
        user: UserName,
    },
}

/// `roost-client group …`. GROUP is a group's name, or its id (at least four hex digits of
/// it) when names clash; see `roost-client groups`.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a named group, with this user's other clients in it.
    Create {
        /// The group's name, shown to every member
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Add a connected user (all of their clients) to a group.
    Add {
        #[arg(value_name = "GROUP")]
        group: String,
        /// A user you are connected with (see `roost-client contacts`)
        #[arg(value_name = "USER@DOMAIN")]
        user: UserName,
    },
    /// Remove a user (all of their clients) from a group.
    Remove {
        #[arg(value_name = "GROUP")]
        group: String,
        #[arg(value_name = "USER@DOMAIN")]
        user: UserName,
    },
    /// List the users in a group.
    Members {
        #[arg(value_name = "GROUP")]
        group: String,
    },
    /// Send a chat message to a group.
    Send {
        #[arg(value_name = "GROUP")]
        group: String,
        /// The message
        #[arg(value_name = "TEXT")]
        text: String,
    },
    /// Show a group's chat, as far as this client has synced.
    Messages {
        #[arg(value_name = "GROUP")]
        group: String,
    },
}

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
    GroupMembers(Vec<UserName>),
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

/// Runs a parsed command. Reads `ROOST_PASSWORD` and `HOME` from the environment when needed.
pub async fn execute(cli: &Cli) -> Result<Outcome, CliError> {
    let state_dir = state_dir(cli.state.as_deref(), std::env::var_os("HOME"))?;
    let resolver = Resolver::from_entries(&cli.resolve)
        .map_err(|e| CliError::usage("bad_resolve", format!("--resolve {e}")))?;
    match &cli.command {
        Command::Register {
            user,
            server,
            password_file,
            token,
        } => {
            let password = read_password(password_file.as_deref(), env_password())?;
            let client =
                Client::register(&state_dir, server, user, &password, token.as_deref()).await?;
            Ok(enrolled(&client))
        }
        Command::AddClient {
            user,
            server,
            password_file,
        } => {
            let password = read_password(password_file.as_deref(), env_password())?;
            let client = Client::add_client(&state_dir, server, user, &password).await?;
            Ok(enrolled(&client))
        }
        Command::Clients => Ok(Outcome::Clients(
            open(&state_dir, &resolver)?.clients().await?,
        )),
        Command::DeleteClient { client_id } => {
            open(&state_dir, &resolver)?
                .delete_client(*client_id)
                .await?;
            Ok(Outcome::Deleted(*client_id))
        }
        Command::Whoami => Ok(Outcome::WhoAmI(open(&state_dir, &resolver)?.whoami())),
        Command::SendOwn { client_id, text } => {
            let seq = open(&state_dir, &resolver)?
                .send_to_own_client(*client_id, text.clone().into_bytes())
                .await?;
            Ok(Outcome::Sent {
                target: *client_id,
                seq,
            })
        }
        Command::Inbox { wait } => {
            let wait = Duration::from_secs((*wait).min(MAX_WAIT_SECS));
            Ok(Outcome::Inbox(
                open(&state_dir, &resolver)?.receive(wait).await?,
            ))
        }
        Command::PublishPackages { count } => {
            let count = usize::try_from(*count).unwrap_or(usize::MAX);
            // Below any count the server can hold: publishes `count`, and a last resort if due.
            let client = open(&state_dir, &resolver)?;
            let published = client.top_up(u32::MAX, count).await?;
            // Key packages (what lets others add this client to groups): up to `count`.
            let min = u32::try_from(count).unwrap_or(u32::MAX);
            let key_packages = client.top_up_key_packages(min, count).await?;
            Ok(Outcome::PackageCount(published, key_packages))
        }
        Command::Requests => {
            let client = open(&state_dir, &resolver)?;
            let fetched = client.connection_requests().await?;
            Ok(Outcome::Requests {
                pending: client.pending_requests().await?,
                rejected: fetched.rejected,
            })
        }
        Command::Decline { id } => {
            open(&state_dir, &resolver)?.decline(id).await?;
            Ok(Outcome::Declined(id.clone()))
        }
        Command::Connect { user } => Ok(Outcome::Connected(
            open(&state_dir, &resolver)?.connect(user).await?,
        )),
        Command::Accept { id } => Ok(Outcome::Accepted(
            open(&state_dir, &resolver)?.accept(id).await?,
        )),
        Command::Sync => Ok(Outcome::Synced(open(&state_dir, &resolver)?.sync().await?)),
        Command::Contacts => {
            let client = open(&state_dir, &resolver)?;
            let failed = sync_first(&client).await;
            Ok(failed.wrap(Outcome::Contacts(client.contacts().await?)))
        }
        Command::Send { peer, text } => Ok(Outcome::MessageSent(
            open(&state_dir, &resolver)?.send(peer, text).await?,
        )),
        Command::Messages { peer } => {
            let client = open(&state_dir, &resolver)?;
            let failed = sync_first(&client).await;
            Ok(failed.wrap(Outcome::Messages(client.messages(peer).await?)))
        }
        Command::Watch { for_secs } => {
            let client = open(&state_dir, &resolver)?;
            Ok(Outcome::Watched(watch(&client, *for_secs, cli.json).await?))
        }
        Command::Groups => {
            let client = open(&state_dir, &resolver)?;
            let failed = sync_first(&client).await;
            Ok(failed.wrap(Outcome::Groups(client.groups().await?)))
        }
        Command::Group(command) => group_command(&open(&state_dir, &resolver)?, command).await,
        Command::Discover { user } => Ok(Outcome::Discovered {
            user: user.clone(),
            packages: open(&state_dir, &resolver)?.discover(user).await?,
        }),
    }
}

/// Long-polls the queue and prints each new chat message, until Ctrl-C or `for_secs` passed.
/// Stopping in the middle of a sync is like a crash: nothing handled is lost, and what was not
/// finished is handled by the next sync.
async fn watch(client: &Client, for_secs: Option<u64>, json: bool) -> Result<usize, CliError> {
    let deadline = for_secs.map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut shown = 0;
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(tokio::time::Instant::now()));
        if left == Some(Duration::ZERO) {
            return Ok(shown);
        }
        let wait = left.map_or(Duration::from_secs(MAX_WAIT_SECS), |l| {
            l.min(Duration::from_secs(MAX_WAIT_SECS))
        });
        let stop = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let report = tokio::select! {
            _ = &mut ctrl_c => return Ok(shown),
            _ = stop => return Ok(shown),
            report = client.sync_waiting(wait) => report,
        };
        match report {
            Ok(report) => {
                let contacts = client.contacts().await.unwrap_or_default();
                let groups = client.groups().await.unwrap_or_default();
                for (group_id, message) in &report.received {
                    let peer = contacts
                        .iter()
                        .find(|c| &c.group_id == group_id)
                        .and_then(|c| c.peer.as_ref().map(ToString::to_string))
                        .or_else(|| {
                            let group = groups.iter().find(|g| &g.group_id == group_id)?;
                            Some(format!("group {}", printable(&group.name)))
                        })
                        .unwrap_or_else(|| hex::encode(group_id));
                    let line = if json {
                        let mut value = message_json(message);
                        value["peer"] = json!(peer);
                        value.to_string()
                    } else {
                        format!("[{peer}] {}", message_text(message))
                    };
                    let _ = writeln!(std::io::stdout().lock(), "{line}");
                    shown += 1;
                }
            }
            Err(e) => {
                let _ = writeln!(std::io::stderr().lock(), "warning: sync failed: {e}");
                tokio::select! {
                    _ = &mut ctrl_c => return Ok(shown),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

async fn group_command(client: &Client, command: &GroupCommand) -> Result<Outcome, CliError> {
    let changed = |group: &str, user: &UserName, added, clients| Outcome::GroupChanged {
        group: group.to_owned(),
        user: user.clone(),
        added,
        clients,
    };
    Ok(match command {
        GroupCommand::Create { name } => Outcome::GroupCreated(client.create_group(name).await?),
        GroupCommand::Add { group, user } => {
            changed(group, user, true, client.add_to_group(group, user).await?)
        }
        GroupCommand::Remove { group, user } => changed(
            group,
            user,
            false,
            client.remove_from_group(group, user).await?,
        ),
        GroupCommand::Members { group } => {
            Outcome::GroupMembers(client.group_members(group).await?)
        }
        GroupCommand::Send { group, text } => {
            Outcome::MessageSent(client.send_to_group(group, text).await?)
        }
        GroupCommand::Messages { group } => {
            let failed = sync_first(client).await;
            failed.wrap(Outcome::Messages(client.group_messages(group).await?))
        }
    })
}

/// A sync that failed before a listing, if it did.
struct SyncFailure(Option<(String, String)>);

impl SyncFailure {
    fn wrap(self, outcome: Outcome) -> Outcome {
        match self.0 {
            Some(error) => Outcome::Unsynced(Box::new(outcome), error),
            None => outcome,
        }
    }
}

/// Syncs so that a listing shows what has arrived; a listing is still shown if this fails.
async fn sync_first(client: &Client) -> SyncFailure {
    SyncFailure(
        client
            .sync()
            .await
            .err()
            .map(|e| (e.code().to_owned(), e.to_string())),
    )
}

fn message_json(message: &StoredMessage) -> Value {
    json!({
        "from": message.from.to_string(),
        "text": message.text,
        "at": message.at.0,
        "seq": message.seq,
    })
}

fn message_text(message: &StoredMessage) -> String {
    format!(
        "{}  {}: {}",
        format_time(message.at),
        message.from,
        printable(&message.text)
    )
}

fn open(state_dir: &Path, resolver: &Resolver) -> Result<Client, CliError> {
    Ok(Client::open(state_dir)?.with_resolver(resolver.clone()))
}

fn enrolled(client: &Client) -> Outcome {
    Outcome::Enrolled {
        user: client.user().clone(),
        client_id: client.client_id(),
        server_url: client.server().base_url().to_owned(),
        packages: client.initial_packages().map(|published| match published {
            Ok(count) => Ok(*count),
            Err(e) => Err((e.code().to_owned(), e.to_string())),
        }),
    }
}

fn env_password() -> Option<String> {
    std::env::var(PASSWORD_ENV).ok()
}

/// `--state`, else `$HOME/.roost-client`.
pub fn state_dir(given: Option<&Path>, home: Option<OsString>) -> Result<PathBuf, CliError> {
    if let Some(dir) = given {
        return Ok(dir.to_path_buf());
    }
    match home {
        Some(home) if !home.is_empty() => Ok(PathBuf::from(home).join(".roost-client")),
        _ => Err(CliError::usage(
            "no_state_dir",
            "HOME is not set: give the state directory with --state or ROOST_CLIENT_STATE",
        )),
    }
}

/// The password from `file` (without one trailing newline), else from `env`.
pub fn read_password(file: Option<&Path>, env: Option<String>) -> Result<String, CliError> {
    let password = match (file, env) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(file).map_err(|e| {
                CliError::usage(
                    "password_file",
                    format!("cannot read the password file {}: {e}", file.display()),
                )
            })?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            text.strip_suffix('\r').unwrap_or(text).to_owned()
        }
        (None, Some(env)) => env,
        (None, None) => {
            return Err(CliError::usage(
                "no_password",
                format!("no password given: use --password-file FILE or set {PASSWORD_ENV}"),
            ))
        }
    };
    if password.is_empty() {
        return Err(CliError::usage("no_password", "the password is empty"));
    }
    Ok(password)
}

impl Outcome {
    /// The stable JSON shape of each command's output.
    pub fn to_json(&self) -> Value {
        match self {
            Outcome::Enrolled {
                user, client_id, ..
            } => json!({ "user": user.to_string(), "client_id": client_id.to_string() }),
            Outcome::Clients(clients) => json!({
                "clients": clients.iter().map(|c| json!({
                    "client_id": c.client_id.to_string(),
                    "added_at": c.added_at.0,
                    "valid_until": c.valid_until.0,
                    "this_client": c.this_client,
                })).collect::<Vec<_>>()
            }),
            Outcome::Deleted(id) => json!({ "deleted": id.to_string() }),
            Outcome::WhoAmI(me) => json!({
                "user": me.user.to_string(),
                "client_id": me.client_id.to_string(),
                "server": me.server_url,
                "valid_until": me.valid_until.0,
            }),
            Outcome::Sent { seq, .. } => json!({ "seq": seq }),
            Outcome::Inbox(items) => {
                json!({ "items": items.iter().map(received_json).collect::<Vec<_>>() })
            }
            Outcome::PackageCount(count, key_packages) => json!({
                "remaining": count.remaining,
                "has_last_resort": count.has_last_resort,
                "key_packages": {
                    "remaining": key_packages.remaining,
                    "has_last_resort": key_packages.has_last_resort,
                },
            }),
            Outcome::Requests { pending, rejected } => json!({
                "requests": pending.iter().map(|r| json!({
                    "id": r.id,
                    "from": r.from().to_string(),
                    "received_at": r.received_at.0,
                })).collect::<Vec<_>>(),
                "rejected": rejected.iter().map(|r| json!({
                    "seq": r.seq,
                    "code": r.reason.code(),
                    "reason": r.reason.to_string(),
                })).collect::<Vec<_>>(),
            }),
            Outcome::Declined(id) => json!({ "declined": id }),
            Outcome::Discovered { user, packages } => json!({
                "user": user.to_string(),
                "clients": packages.iter().map(|p| json!({
                    "client_id": p.client_id().to_string(),
                    "valid_until": p.body.validity.not_after.0,
                    "last_resort": p.body.last_resort,
                })).collect::<Vec<_>>(),
            }),
            Outcome::Connected(c) => json!({
                "group_id": hex::encode(&c.group_id),
                "peer": c.peer.to_string(),
                "invited": c.invited,
                "own_clients_added": c.own_clients_added,
            }),
            Outcome::Accepted(a) => json!({
                "group_id": hex::encode(&a.group_id),
                "peer": a.peer.to_string(),
                "via": a.via.as_str(),
                "own_clients_added": a.own_clients_added,
                "own_clients_error": a.own_clients_error,
            }),
            Outcome::Unsynced(shown, _) => shown.to_json(),
            Outcome::Synced(r) => json!({
                "joined": r.joined.iter().map(hex::encode).collect::<Vec<_>>(),
                "commits": r.commits,
                "messages": r.messages,
                "removed_from": r.removed_from.iter().map(hex::encode).collect::<Vec<_>>(),
                "failed": r.failed,
                "other": r.other.iter().map(received_json).collect::<Vec<_>>(),
            }),
            Outcome::MessageSent(message) => message_json(message),
            Outcome::Messages(messages) => json!({
                "messages": messages.iter().map(message_json).collect::<Vec<_>>(),
            }),
            Outcome::Watched(shown) => json!({ "watched": shown }),
            Outcome::Contacts(contacts) => json!({
                "contacts": contacts.iter().map(|c| json!({
                    "group_id": hex::encode(&c.group_id),
                    "peer": c.peer.as_ref().map(ToString::to_string),
                    "since": c.since.0,
                })).collect::<Vec<_>>(),
            }),
            Outcome::Groups(groups) => json!({
                "groups": groups.iter().map(|g| json!({
                    "group_id": hex::encode(&g.group_id),
                    "name": g.name,
                    "members": g.members,
                    "removed": g.removed,
                    "since": g.since.0,
                })).collect::<Vec<_>>(),
            }),
            Outcome::GroupCreated(g) => json!({
                "group_id": hex::encode(&g.group_id),
                "name": g.name,
            }),
            Outcome::GroupChanged {
                group,
                user,
                added,
                clients,
            } => json!({
                "group": group,
                "user": user.to_string(),
                if *added { "added" } else { "removed" }: clients,
            }),
            Outcome::GroupMembers(users) => json!({
                "members": users.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }),
        }
    }

    /// Something that went wrong although the command did its job, for stderr: as JSON
    /// `{"warning": CODE, "error": CODE, "message": TEXT}`.
    pub fn warning(&self) -> Option<Value> {
        match self {
            Outcome::Enrolled {
                packages: Some(Err((code, message))),
                ..
            } => Some(json!({
                "warning": "packages_not_published",
                "error": code,
                "message": format!(
                    "the client is registered, but publishing its connection packages failed, \
                     so others cannot find it yet (run `roost-client publish-packages`): {message}"
                ),
            })),
            Outcome::Unsynced(_, (code, message)) => Some(json!({
                "warning": "sync_failed",
                "error": code,
                "message": format!("this may be out of date: syncing failed: {message}"),
            })),
            _ => None,
        }
    }

    /// Lines for people.
    pub fn to_text(&self) -> String {
        match self {
            Outcome::Enrolled {
                user,
                client_id,
                server_url,
                packages,
            } => {
                let mut text =
                    format!("user:      {user}\nclient id: {client_id}\nserver:    {server_url}");
                if let Some(Ok(count)) = packages {
                    text.push_str(&format!("\n{}", package_count_text(count)));
                }
                text
            }
            Outcome::Clients(clients) if clients.is_empty() => "No clients.".into(),
            Outcome::Clients(clients) => clients
                .iter()
                .map(|c| {
                    format!(
                        "{}  added {}  valid until {}{}",
                        c.client_id,
                        format_time(c.added_at),
                        format_time(c.valid_until),
                        if c.this_client { "  (this client)" } else { "" }
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Outcome::Deleted(id) => format!("Deleted client {id}."),
            Outcome::WhoAmI(me) => format!(
                "user:      {}\nclient id: {}\nserver:    {}\ncredential valid until {}{}",
                me.user,
                me.client_id,
                me.server_url,
                format_time(me.valid_until),
                if me.valid_now { "" } else { " (NOT valid now)" }
            ),
            Outcome::Sent { target, seq } => {
                format!("Queued for client {target} as message {seq}.")
            }
            Outcome::Inbox(items) if items.is_empty() => "No messages.".into(),
            Outcome::Inbox(items) => items
                .iter()
                .map(received_text)
                .collect::<Vec<_>>()
                .join("\n"),
            Outcome::PackageCount(count, key_packages) => format!(
                "{}\n{}",
                package_count_text(count),
                counted("key packages", key_packages)
            ),
            Outcome::Requests { pending, rejected } => {
                let mut lines: Vec<String> = pending
                    .iter()
                    .map(|r| {
                        format!(
                            "{}  from {}  received {}",
                            r.id,
                            r.from(),
                            format_time(r.received_at)
                        )
                    })
                    .collect();
                if lines.is_empty() {
                    lines.push("No connection requests.".into());
                }
                lines.extend(rejected.iter().map(|r| {
                    format!(
                        "rejected #{}: {} ({})",
                        r.seq,
                        printable(&r.reason.to_string()),
                        r.reason.code()
                    )
                }));
                lines.join("\n")
            }
            Outcome::Declined(id) => format!("Declined request {id}; nothing was sent."),
            Outcome::Discovered { user, packages } => {
                let mut lines = vec![format!(
                    "{user}: {} client(s), every package verified",
                    packages.len()
                )];
                lines.extend(packages.iter().map(|p| {
                    format!(
                        "{}  valid until {}{}",
                        p.client_id(),
                        format_time(p.body.validity.not_after),
                        if p.body.last_resort {
                            "  (last resort)"
                        } else {
                            ""
                        }
                    )
                }));
                lines.join("\n")
            }
            Outcome::Connected(c) => format!(
                "Asked {} to connect: {} of their client(s) invited, {} of your other client(s) \
                 added; connection group {}",
                c.peer,
                c.invited,
                c.own_clients_added,
                hex::encode(&c.group_id)
            ),
            Outcome::Accepted(a) => {
                let mut text = match a.via {
                    JoinedVia::ExternalCommit => format!(
                        "Connected with {} (group {}); {} of your other client(s) added.",
                        a.peer,
                        hex::encode(&a.group_id),
                        a.own_clients_added
                    ),
                    JoinedVia::Welcome => format!(
                        "Connected with {}: another of your clients had accepted; joined its \
                         group {}.",
                        a.peer,
                        hex::encode(&a.group_id)
                    ),
                    JoinedVia::AlreadyConnected => format!(
                        "Already connected with {} (group {}).",
                        a.peer,
                        hex::encode(&a.group_id)
                    ),
                };
                if let Some(e) = &a.own_clients_error {
                    text.push_str(&format!(
                        "\nAdding your other clients failed: {}",
                        printable(e)
                    ));
                }
                text
            }
            Outcome::Unsynced(shown, _) => shown.to_text(),
            Outcome::Synced(r) => {
                let mut lines = vec![format!(
                    "Joined {} group(s), applied {} commit(s), received {} message(s).",
                    r.joined.len(),
                    r.commits,
                    r.received.len()
                )];
                if !r.removed_from.is_empty() {
                    lines.push(format!("Removed from {} group(s).", r.removed_from.len()));
                }
                lines.extend(r.failed.iter().map(|f| format!("failed: {}", printable(f))));
                lines.extend(r.other.iter().map(received_text));
                lines.join("\n")
            }
            Outcome::MessageSent(message) => format!("Sent: {}", message_text(message)),
            Outcome::Messages(messages) => {
                if messages.is_empty() {
                    return "No messages.".into();
                }
                messages
                    .iter()
                    .map(message_text)
                    .collect::<Vec<_>>()
                    .join("\n")
            }
            Outcome::Watched(shown) => format!("Stopped watching; {shown} message(s) shown."),
            Outcome::Contacts(contacts) => {
                if contacts.is_empty() {
                    return "No connections.".into();
                }
                contacts
                    .iter()
                    .map(|c| {
                        format!(
                            "{}  group {}  since {}",
                            c.peer
                                .as_ref()
                                .map_or("(not known yet)".to_owned(), ToString::to_string),
                            hex::encode(&c.group_id),
                            format_time(c.since)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            }
            Outcome::Groups(groups) => {
                if groups.is_empty() {
                    return "No groups.".into();
                }
                groups
                    .iter()
                    .map(|g| {
                        let state = if g.removed {
                            "removed from it".to_owned()
                        } else {
                            format!("{} member client(s)", g.members)
                        };
                        format!(
                            "{}  id {}  {state}  since {}",
                            printable(&g.name),
                            hex::encode(&g.group_id),
                            format_time(g.since)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            }
            Outcome::GroupCreated(g) => format!(
                "Created the group {} (id {}).",
                printable(&g.name),
                hex::encode(&g.group_id)
            ),
            Outcome::GroupChanged {
                group,
                user,
                added,
                clients,
            } => {
                if *added {
                    format!(
                        "Added {user} ({clients} client(s)) to {}.",
                        printable(group)
                    )
                } else {
                    format!(
                        "Removed {user} ({clients} client(s)) from {}.",
                        printable(group)
                    )
                }
            }
            Outcome::GroupMembers(users) => users
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

fn package_count_text(count: &ConnectionPackageCount) -> String {
    counted("connection packages", count)
}

fn counted(what: &str, count: &ConnectionPackageCount) -> String {
    format!(
        "{what} on the server: {} one-time, {}",
        count.remaining,
        if count.has_last_resort {
            "and a last-resort one"
        } else {
            "NO last-resort one"
        }
    )
}

fn received_json(received: &Received) -> Value {
    let seq = received.seq;
    match &received.item {
        Ok(QueueItem::Notice(Notice::ClientAdded { client_id })) => {
            json!({ "seq": seq, "kind": "client_added", "client_id": client_id.to_string() })
        }
        Ok(QueueItem::Notice(Notice::ClientDeleted { client_id })) => {
            json!({ "seq": seq, "kind": "client_deleted", "client_id": client_id.to_string() })
        }
        Ok(QueueItem::FromOwnClient { sender, payload }) => json!({
            "seq": seq,
            "kind": "from_own_client",
            "sender": sender.to_string(),
            "text": String::from_utf8_lossy(payload),
        }),
        // Connection requests belong in the connection queue; one here is out of place.
        Ok(QueueItem::ConnectionRequest(_)) => json!({ "seq": seq, "kind": "connection_request" }),
        // Group messages and Welcomes are not handled by this command line yet.
        Ok(QueueItem::Group(_)) => json!({ "seq": seq, "kind": "group" }),
        Err(e) => json!({ "seq": seq, "kind": "unreadable", "reason": e.to_string() }),
    }
}

fn received_text(received: &Received) -> String {
    let seq = received.seq;
    match &received.item {
        Ok(QueueItem::Notice(Notice::ClientAdded { client_id })) => {
            format!("#{seq} client {client_id} was added")
        }
        Ok(QueueItem::Notice(Notice::ClientDeleted { client_id })) => {
            format!("#{seq} client {client_id} was deleted")
        }
        Ok(QueueItem::FromOwnClient { sender, payload }) => format!(
            "#{seq} from client {sender}: {}",
            printable(&String::from_utf8_lossy(payload))
        ),
        Ok(QueueItem::ConnectionRequest(_)) => {
            format!("#{seq} a connection request in the message queue (ignored)")
        }
        Ok(QueueItem::Group(_)) => format!("#{seq} a group message (not handled yet)"),
        Err(e) => format!("#{seq} unreadable message ({e}); acknowledged anyway"),
    }
}

/// Escapes control characters, so a message cannot drive the terminal.
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// `YYYY-MM-DD HH:MM:SS UTC`, without a date library.
fn format_time(t: Timestamp) -> String {
    let days = t.0 / 86_400;
    let secs = t.0 % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("roost-client").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn register_takes_a_user_a_server_and_optional_password_file_and_token() {
        let cli = parse(&[
            "--state",
            "/tmp/s",
            "register",
            "alice@example.org",
            "--server",
            "http://127.0.0.1:8080",
            "--password-file",
            "/tmp/pw",
            "--token",
            "t0k",
            "--json",
        ])
        .unwrap();
        assert!(cli.json);
        assert_eq!(cli.state.as_deref(), Some(Path::new("/tmp/s")));
        match cli.command {
            Command::Register {
                user,
                server,
                password_file,
                token,
            } => {
                assert_eq!(user.to_string(), "alice@example.org");
                assert_eq!(server, "http://127.0.0.1:8080");
                assert_eq!(password_file.as_deref(), Some(Path::new("/tmp/pw")));
                assert_eq!(token.as_deref(), Some("t0k"));
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        for args in [
            &["register", "alice", "--server", "http://x"][..],
            &["register", "alice@example.org"],
            &["add-client", "Alice@example.org", "--server", "http://x"],
            &["delete-client", "not-hex"],
            &["send-own", "00112233445566778899aabbccddeeff"],
            &["inbox", "--wait", "31"],
            &["publish-packages", "--count", "1001"],
            &["publish-packages", "--count", "-1"],
            &["discover", "bob"],
            &["decline"],
            &["frobnicate"],
            &[],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
    }

    #[test]
    fn the_other_commands_parse() {
        let id = "00112233445566778899aabbccddeeff";
        assert!(matches!(
            parse(&["send-own", id, "hello there"]).unwrap().command,
            Command::SendOwn { client_id, text } if client_id.to_string() == id && text == "hello there"
        ));
        assert!(matches!(
            parse(&["delete-client", id]).unwrap().command,
            Command::DeleteClient { client_id } if client_id.to_string() == id
        ));
        assert!(matches!(
            parse(&["inbox", "--wait", "5"]).unwrap().command,
            Command::Inbox { wait: 5 }
        ));
        assert!(matches!(
            parse(&["inbox"]).unwrap().command,
            Command::Inbox { wait: 0 }
        ));
        assert!(matches!(
            parse(&["whoami"]).unwrap().command,
            Command::Whoami
        ));
        assert!(matches!(
            parse(&["clients", "--json"]).unwrap().command,
            Command::Clients
        ));
        assert!(matches!(
            parse(&["add-client", "bob@b.test", "--server", "http://b"])
                .unwrap()
                .command,
            Command::AddClient { .. }
        ));
        assert!(matches!(
            parse(&["publish-packages"]).unwrap().command,
            Command::PublishPackages { count } if count == INITIAL_PACKAGES as u64
        ));
        assert!(matches!(
            parse(&["publish-packages", "--count", "0"])
                .unwrap()
                .command,
            Command::PublishPackages { count: 0 }
        ));
        assert!(matches!(
            parse(&["requests", "--json"]).unwrap().command,
            Command::Requests
        ));
        assert!(matches!(
            parse(&["decline", "a1b2c3d4"]).unwrap().command,
            Command::Decline { id } if id == "a1b2c3d4"
        ));
        assert!(matches!(
            parse(&["discover", "bob@b.test"]).unwrap().command,
            Command::Discover { user } if user.to_string() == "bob@b.test"
        ));
    }

    #[tokio::test]
    async fn resolve_entries_are_repeatable_and_a_bad_one_is_a_usage_error() {
        let cli = parse(&[
            "--resolve",
            "b.test=http://127.0.0.1:9",
            "--resolve",
            "c.test=https://c.example",
            "contacts",
        ])
        .unwrap();
        assert_eq!(cli.resolve.len(), 2);
        let resolver = Resolver::from_entries(&cli.resolve).unwrap();
        assert_eq!(
            resolver.base_url(&"b.test".parse().unwrap()),
            "http://127.0.0.1:9"
        );
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().to_str().unwrap();
        let bad = parse(&["--state", state, "--resolve", "b.test", "contacts"]).unwrap();
        let error = execute(&bad).await.unwrap_err();
        assert_eq!((error.code(), error.exit_code()), ("bad_resolve", 2));
    }

    #[test]
    fn a_failed_first_publish_is_a_warning_not_a_failure() {
        let enrolled = |packages| Outcome::Enrolled {
            user: "alice@a.test".parse().unwrap(),
            client_id: ClientId([1; 16]),
            server_url: "http://a".into(),
            packages,
        };
        let published = enrolled(Some(Ok(ConnectionPackageCount {
            remaining: 20,
            has_last_resort: true,
        })));
        assert!(published.warning().is_none());
        assert_eq!(
            published.to_json(),
            json!({ "user": "alice@a.test", "client_id": ClientId([1; 16]).to_string() })
        );
        assert!(published.to_text().contains("20 one-time"));
        let failed = enrolled(Some(Err(("network".into(), "cannot reach".into()))));
        let warning = failed.warning().unwrap();
        assert_eq!(warning["warning"], "packages_not_published");
        assert_eq!(warning["error"], "network");
        assert!(warning["message"]
            .as_str()
            .unwrap()
            .contains("roost-client publish-packages"));
    }

    #[test]
    fn the_state_directory_defaults_to_home() {
        assert_eq!(
            state_dir(None, Some("/home/x".into())).unwrap(),
            PathBuf::from("/home/x/.roost-client")
        );
        assert_eq!(
            state_dir(Some(Path::new("/s")), None).unwrap(),
            PathBuf::from("/s")
        );
        assert_eq!(state_dir(None, None).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn a_password_file_loses_exactly_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        for (content, expected) in [
            ("secret\n", "secret"),
            ("secret\r\n", "secret"),
            ("secret", "secret"),
            ("secret\n\n", "secret\n"),
            (" spaced \n", " spaced "),
        ] {
            std::fs::write(&file, content).unwrap();
            assert_eq!(read_password(Some(&file), None).unwrap(), expected);
        }
    }

    #[test]
    fn the_password_file_wins_over_the_environment_and_one_is_required() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        assert_eq!(
            read_password(Some(&file), Some("from-env".into())).unwrap(),
            "from-file"
        );
        assert_eq!(
            read_password(None, Some("from-env".into())).unwrap(),
            "from-env"
        );
        let none = read_password(None, None).unwrap_err();
        assert_eq!(none.code(), "no_password");
        assert!(none.to_string().contains("--password-file"));
        assert_eq!(none.exit_code(), 2);
        std::fs::write(&file, "\n").unwrap();
        assert_eq!(
            read_password(Some(&file), None).unwrap_err().code(),
            "no_password"
        );
        let missing = read_password(Some(&dir.path().join("nope")), None).unwrap_err();
        assert_eq!(missing.code(), "password_file");
    }

    #[test]
    fn inbox_items_have_stable_json() {
        let a = ClientId([1; 16]);
        let items = vec![
            Received {
                seq: 1,
                item: Ok(QueueItem::Notice(Notice::ClientAdded { client_id: a })),
            },
            Received {
                seq: 2,
                item: Ok(QueueItem::FromOwnClient {
                    sender: a,
                    payload: b"hi\x1b[2J".to_vec(),
                }),
            },
            Received {
                seq: 3,
                item: Err(roost_protocol::crypto::CryptoError::Decryption),
            },
        ];
        let value = Outcome::Inbox(items).to_json();
        assert_eq!(value["items"][0]["kind"], "client_added");
        assert_eq!(value["items"][0]["client_id"], a.to_string());
        assert_eq!(value["items"][1]["kind"], "from_own_client");
        assert_eq!(value["items"][1]["sender"], a.to_string());
        assert_eq!(value["items"][1]["text"], "hi\x1b[2J");
        assert_eq!(value["items"][2]["kind"], "unreadable");
        assert_eq!(value["items"][2]["seq"], 3);
        let text = received_text(&Received {
            seq: 2,
            item: Ok(QueueItem::FromOwnClient {
                sender: a,
                payload: b"hi\x1b[2J".to_vec(),
            }),
        });
        assert!(!text.contains('\x1b'), "{text}");
    }

    #[test]
    fn errors_have_json_with_a_code() {
        let err = CliError::Client(Error::Server(crate::server::ServerError::Http {
            status: 409,
            code: "user_taken".into(),
            message: "taken".into(),
        }));
        let value = err.to_json();
        assert_eq!(value["error"], "user_taken");
        assert_eq!(value["status"], 409);
        assert!(value["message"].as_str().unwrap().contains("taken"));
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(format_time(Timestamp(0)), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            format_time(Timestamp(951_782_400)),
            "2000-02-29 00:00:00 UTC"
        );
        assert_eq!(
            format_time(Timestamp(1_767_225_599)),
            "2025-12-31 23:59:59 UTC"
        );
    }
}
