//! `roost admin users|clients|token`: accounts as an admin sees them. Reads come from the
//! store; every change goes through the accounts actor, the only writer of account records.

use actix::Addr;
use roost_actors::{
    accounts::{
        token_id, AccountsActor, CreateToken, DeleteClient, DeleteUser, RevokeToken, SetDeactivated,
    },
    Call,
};
use roost_protocol::{ClientId, Timestamp, UserName};
use roost_storage::{AccountStore, Standing};
use serde_json::{json, Value};

use super::{render::time, AdminError, Core, TokenCommand, UsersCommand};

pub async fn users(core: &Core, command: UsersCommand) -> Result<Value, AdminError> {
    let accounts = core.store.accounts()?;
    match command {
        UsersCommand::List => list(&accounts),
        UsersCommand::Show { user } => show(core, &accounts, &core.user(&user)?),
        UsersCommand::Deactivate { user } => {
            set_deactivated(&core.accounts, core.user(&user)?, true).await
        }
        UsersCommand::Reactivate { user } => {
            set_deactivated(&core.accounts, core.user(&user)?, false).await
        }
        UsersCommand::Delete { user } => {
            let user = core.user(&user)?;
            let clients = core
                .accounts
                .call(DeleteUser { user: user.clone() })
                .await?;
            Ok(json!({ "user": user.to_string(), "deleted": true, "clients_deleted": clients }))
        }
    }
}

fn list(accounts: &AccountStore) -> Result<Value, AdminError> {
    let mut users = std::collections::BTreeMap::new();
    for entry in accounts.users() {
        let (name, record) = entry?;
        users.insert(
            name.to_string(),
            json!({
                "user": name.to_string(),
                "standing": "active",
                "clients": record.clients.len(),
                "registered": time(record.created_at),
            }),
        );
    }
    for entry in accounts.standings() {
        let (name, standing) = entry?;
        let key = name.to_string();
        match standing {
            Standing::Deactivated { .. } => {
                if let Some(user) = users.get_mut(&key) {
                    user["standing"] = json!("deactivated");
                }
            }
            Standing::Deleted { at } => {
                users.insert(
                    key.clone(),
                    json!({ "user": key, "standing": "deleted", "clients": 0, "registered": null, "deleted": time(at) }),
                );
            }
        }
    }
    Ok(Value::Array(users.into_values().collect()))
}

fn show(core: &Core, accounts: &AccountStore, user: &UserName) -> Result<Value, AdminError> {
    let standing = accounts.standing(user)?;
    let Some(record) = accounts.user(user)? else {
        return match standing {
            Some(Standing::Deleted { at }) => {
                Ok(json!({ "user": user.to_string(), "standing": "deleted", "deleted": time(at) }))
            }
            _ => Err(AdminError::NotFound(format!("no user {user}"))),
        };
    };
    let queues = core.store.queues()?;
    let connection_queues = core.store.connection_queues()?;
    let activity = core.store.client_activity()?;
    let mut clients = Vec::new();
    for id in &record.clients {
        let Some(client) = accounts.client(id)? else {
            continue;
        };
        let messages = queues.summary(id)?;
        clients.push(json!({
            "client": id.to_string(),
            "added": time(client.added_at),
            "credential_expires": time(client.credential.body.validity.not_after),
            // Recorded at most once a day (less often with a short retention).
            "last_seen": activity.last_seen(id)?.map(time),
            "queued_messages": messages.waiting,
            "queued_bytes": messages.bytes,
            "connection_requests": connection_queues.summary(id)?.waiting,
        }));
    }
    let mut shown = json!({
        "user": user.to_string(),
        "standing": "active",
        "registered": time(record.created_at),
        "clients": clients,
    });
    if let Some(Standing::Deactivated { since }) = standing {
        shown["standing"] = json!("deactivated");
        shown["deactivated"] = json!(time(since));
    }
    Ok(shown)
}

async fn set_deactivated(
    accounts: &Addr<AccountsActor>,
    user: UserName,
    deactivated: bool,
) -> Result<Value, AdminError> {
    let changed = accounts
        .call(SetDeactivated {
            user: user.clone(),
            deactivated,
        })
        .await?;
    let standing = if deactivated { "deactivated" } else { "active" };
    Ok(json!({ "user": user.to_string(), "standing": standing, "changed": changed }))
}

pub async fn revoke_client(core: &Core, client: ClientId) -> Result<Value, AdminError> {
    let record = core
        .store
        .accounts()?
        .client(&client)?
        .ok_or_else(|| AdminError::NotFound(format!("no client {client}")))?;
    let user = record.credential.body.user;
    core.accounts
        .call(DeleteClient {
            user: user.clone(),
            client,
        })
        .await?;
    Ok(json!({ "client": client.to_string(), "user": user.to_string(), "revoked": true }))
}

pub async fn tokens(core: &Core, command: TokenCommand) -> Result<Value, AdminError> {
    match command {
        TokenCommand::Create { uses, expires } => {
            let expires_at = expires.map(|secs| Timestamp::now().plus_secs(secs));
            let created = core.accounts.call(CreateToken { uses, expires_at }).await?;
            Ok(json!({
                "token": created.token,
                "id": created.id,
                "uses_left": created.record.uses_left,
                "expires": created.record.expires_at.map(time),
            }))
        }
        TokenCommand::List => {
            let now = Timestamp::now();
            let tokens = core.store.accounts()?.tokens()?;
            Ok(tokens
                .into_iter()
                .filter(|(_, token)| token.usable(now))
                .map(|(hash, token)| {
                    json!({
                        "id": token_id(&hash),
                        "uses_left": token.uses_left,
                        "created": time(token.created_at),
                        "expires": token.expires_at.map(time),
                    })
                })
                .collect())
        }
        TokenCommand::Revoke { token } => {
            core.accounts
                .call(RevokeToken {
                    token: token.clone(),
                })
                .await?;
            Ok(json!({ "token": token, "revoked": true }))
        }
    }
}
