//! `roost-client profile set|show`: this user's profile from the command line.

use std::path::Path;

use roost_protocol::profile::MAX_AVATAR_BYTES;

use super::{args::ProfileCommand, CliError, Outcome};
use crate::client::Client;

pub(super) async fn run(client: &Client, command: &ProfileCommand) -> Result<Outcome, CliError> {
    if let ProfileCommand::Show { user: Some(user) } = command {
        let profile = client.profiles().of_contact(user).await?.ok_or_else(|| {
            CliError::usage(
                "no_profile",
                format!("{user} has not shared a profile with you (only contacts do)"),
            )
        })?;
        return Ok(Outcome::Profile {
            user: user.clone(),
            profile,
            self_declared: true,
        });
    }
    let profile = match command {
        ProfileCommand::Show { .. } => {
            let own = client.profiles().own()?.map(|own| own.profile);
            own.ok_or_else(|| {
                CliError::usage(
                    "no_profile",
                    "you have not set a profile yet (roost-client profile set --name …)",
                )
            })?
        }
        ProfileCommand::Set {
            name,
            avatar,
            no_avatar,
            about,
        } => {
            // `None`: the avatar stays as it is.
            let avatar = match (avatar, no_avatar) {
                (Some(file), _) => Some(Some(read_avatar(file)?)),
                (None, true) => Some(None),
                (None, false) => None,
            };
            client
                .profiles()
                .update(|profile| {
                    if let Some(name) = name {
                        profile.display_name.clone_from(name);
                    }
                    if let Some(about) = about {
                        profile.about.clone_from(about);
                    }
                    if let Some(avatar) = avatar {
                        profile.avatar = avatar;
                    }
                })
                .await?
        }
    };
    Ok(Outcome::Profile {
        user: client.user().clone(),
        profile,
        self_declared: false,
    })
}

/// Reads an avatar image, refusing a file too large before reading it all.
fn read_avatar(file: &Path) -> Result<Vec<u8>, CliError> {
    let unreadable = |e: std::io::Error| {
        CliError::usage("bad_avatar", format!("cannot read {}: {e}", file.display()))
    };
    let size = std::fs::metadata(file).map_err(unreadable)?.len();
    if size > MAX_AVATAR_BYTES as u64 {
        return Err(CliError::usage(
            "bad_avatar",
            format!(
                "{} takes {size} bytes; an avatar may take at most {MAX_AVATAR_BYTES}",
                file.display()
            ),
        ));
    }
    std::fs::read(file).map_err(unreadable)
}
