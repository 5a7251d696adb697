//! Running a parsed command against the library.

use std::{
    ffi::OsString,
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use roost_protocol::{federation::Resolver, UserName};
use serde_json::json;

use super::{
    args::{Cli, Command, GroupCommand, MAX_WAIT_SECS, PASSWORD_ENV},
    json::message_json,
    text::{message_text, printable},
    CliError, Outcome,
};
use crate::{
    client::{Client, Setup},
    transport::ExtraRoots,
};

/// Runs a parsed command. Reads `ROOST_PASSWORD` and `HOME` from the environment when needed.
pub async fn execute(cli: &Cli) -> Result<Outcome, CliError> {
    let state_dir = state_dir(cli.state.as_deref(), std::env::var_os("HOME"))?;
    let resolver = Resolver::from_entries(&cli.resolve)
        .map_err(|e| CliError::usage("bad_resolve", format!("--resolve {e}")))?;
    let roots = match &cli.ca_file {
        Some(path) => ExtraRoots::from_pem_file(path)
            .map_err(|e| CliError::usage("bad_ca_file", format!("--ca-file: {e}")))?,
        None => ExtraRoots::default(),
    };
    let setup = Setup {
        state_dir,
        resolver,
        roots,
    };
    match &cli.command {
        Command::Register {
            user,
            server,
            password_file,
            token,
        } => {
            let password = read_password(password_file.as_deref(), env_password())?;
            let client = setup
                .register(server, user, &password, token.as_deref())
                .await?;
            Ok(enrolled(&client))
        }
        Command::AddClient {
            user,
            server,
            password_file,
        } => {
            let password = read_password(password_file.as_deref(), env_password())?;
            let client = setup.add_client(server, user, &password).await?;
            Ok(enrolled(&client))
        }
        Command::Clients => Ok(Outcome::Clients(setup.open()?.clients().await?)),
        Command::DeleteClient { client_id } => {
            setup.open()?.delete_client(*client_id).await?;
            Ok(Outcome::Deleted(*client_id))
        }
        Command::Whoami => Ok(Outcome::WhoAmI(setup.open()?.whoami())),
        Command::SendOwn { client_id, text } => {
            let seq = setup
                .open()?
                .send_to_own_client(*client_id, text.clone().into_bytes())
                .await?;
            Ok(Outcome::Sent {
                target: *client_id,
                seq,
            })
        }
        Command::Inbox { wait } => {
            let wait = Duration::from_secs((*wait).min(MAX_WAIT_SECS));
            Ok(Outcome::Inbox(setup.open()?.receive(wait).await?))
        }
        Command::PublishPackages { count } => {
            let count = usize::try_from(*count).unwrap_or(usize::MAX);
            // Below any count the server can hold: publishes `count`, and a last resort if due.
            let client = setup.open()?;
            let published = client.connections().top_up(u32::MAX, count).await?;
            // Key packages (what lets others add this client to groups): up to `count`.
            let min = u32::try_from(count).unwrap_or(u32::MAX);
            let key_packages = client.key_packages().top_up(min, count).await?;
            Ok(Outcome::PackageCount(published, key_packages))
        }
        Command::Requests { profile: Some(id) } => {
            let client = setup.open()?;
            let request = client
                .connections()
                .pending()
                .await?
                .into_iter()
                .find(|r| &r.id == id)
                .ok_or_else(|| crate::Error::UnknownRequest(id.clone()))?;
            Ok(Outcome::Profile {
                user: request.from().clone(),
                profile: client.profiles().of_request(id).await?,
                self_declared: true,
            })
        }
        Command::App { bind } => {
            let json = cli.json;
            crate::app::serve(setup.clone(), *bind, |url| {
                let line = match json {
                    true => json!({ "url": url }).to_string(),
                    false => format!("Open {url} in your browser (Ctrl-C stops the app)."),
                };
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            })
            .await
            .map_err(|e| CliError::usage("app", e.to_string()))?;
            Ok(Outcome::AppStopped)
        }
        Command::Profile { command } => {
            let client = setup.open()?;
            super::profile::run(&client, command).await
        }
        Command::Requests { profile: None } => {
            let client = setup.open()?;
            let fetched = client.connections().requests().await?;
            Ok(Outcome::Requests {
                pending: client.connections().pending().await?,
                rejected: fetched.rejected,
            })
        }
        Command::Decline { id } => {
            setup.open()?.connections().decline(id).await?;
            Ok(Outcome::Declined(id.clone()))
        }
        Command::Connect { user } => Ok(Outcome::Connected(
            setup.open()?.connections().connect(user).await?,
        )),
        Command::Accept { id } => Ok(Outcome::Accepted(
            setup.open()?.connections().accept(id).await?,
        )),
        Command::Sync => Ok(Outcome::Synced(setup.open()?.sync().await?)),
        Command::RotateToken => {
            let client = setup.open()?;
            Ok(Outcome::TokenRotated(
                client.contacts().rotate_token().await?,
            ))
        }
        Command::Contacts => {
            let client = setup.open()?;
            let failed = sync_first(&client).await;
            Ok(failed.wrap(Outcome::Contacts(client.contacts().list().await?)))
        }
        Command::Send { peer, text } => Ok(Outcome::MessageSent(
            setup.open()?.chat().send(peer, text).await?,
        )),
        Command::Messages { peer } => {
            let client = setup.open()?;
            let failed = sync_first(&client).await;
            Ok(failed.wrap(Outcome::Messages(client.chat().messages(peer).await?)))
        }
        Command::Watch { for_secs } => {
            let client = setup.open()?;
            Ok(Outcome::Watched(watch(&client, *for_secs, cli.json).await?))
        }
        Command::Groups => {
            let client = setup.open()?;
            let failed = sync_first(&client).await;
            Ok(failed.wrap(Outcome::Groups(client.groups().list().await?)))
        }
        Command::Group(command) => group_command(&setup.open()?, command).await,
        Command::Discover { user } => Ok(Outcome::Discovered {
            user: user.clone(),
            packages: setup.open()?.connections().discover(user).await?,
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
                let contacts = client.contacts().list().await.unwrap_or_default();
                let groups = client.groups().list().await.unwrap_or_default();
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
        GroupCommand::Create { name } => Outcome::GroupCreated(client.groups().create(name).await?),
        GroupCommand::Add { group, user } => {
            changed(group, user, true, client.groups().add(group, user).await?)
        }
        GroupCommand::Remove { group, user } => changed(
            group,
            user,
            false,
            client.groups().remove(group, user).await?,
        ),
        GroupCommand::Leave { group } => Outcome::GroupLeft {
            group: group.clone(),
            clients: client.groups().leave(group).await?,
        },
        GroupCommand::Members { group } => {
            let mut members = Vec::new();
            for user in client.groups().members(group).await? {
                let name = client.profiles().display_name(&user)?;
                members.push((user.clone(), (name != user.to_string()).then_some(name)));
            }
            Outcome::GroupMembers(members)
        }
        GroupCommand::Send { group, text } => {
            Outcome::MessageSent(client.groups().send(group, text).await?)
        }
        GroupCommand::Messages { group } => {
            let failed = sync_first(client).await;
            failed.wrap(Outcome::Messages(client.groups().messages(group).await?))
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
