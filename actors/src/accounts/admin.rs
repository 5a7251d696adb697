//! What the accounts actor deletes and locks — a client (its user's own request, or an admin's),
//! a whole user, a user's standing — and the registration tokens an admin hands out.
//!
//! Deleting a client takes everything that reaches it with it: its connection packages and key
//! packages first (nobody may find it or add it to a group any more), then its queues. Deleting
//! a user also takes its friendship token and its profiles.

use actix::prelude::*;

use roost_protocol::{api::Notice, ClientId, Timestamp, UserName};
use roost_storage::{TokenHash, TokenRecord};

use super::{notify, token_hash, AccountsActor, AccountsError};
use crate::{
    key_packages,
    pool::Ask,
    queue::{DeleteQueue, QueueId},
    registry::{ForgetProfiles, RemoveClient},
};

/// Hex digits of a token's hash that name it to an admin (`roost admin token list|revoke`).
pub const TOKEN_ID_HEX: usize = 12;

/// How an admin names a registration token: the first hex digits of its hash, which tell
/// nothing about the token itself.
pub fn token_id(hash: &TokenHash) -> String {
    hex::encode(hash)[..TOKEN_ID_HEX].to_owned()
}

/// Delete one of `user`'s clients, with its queues and packages.
#[derive(Message)]
#[rtype(result = "Result<(), AccountsError>")]
pub struct DeleteClient {
    pub user: UserName,
    pub client: ClientId,
}

impl Handler<DeleteClient> for AccountsActor {
    type Result = ResponseFuture<Result<(), AccountsError>>;

    fn handle(&mut self, msg: DeleteClient, _ctx: &mut Self::Context) -> Self::Result {
        let removed = self.deps.store.remove_client(&msg.user, &msg.client);
        let remaining = self.clients_of(&msg.user);
        let forget = self.forget(msg.user, vec![msg.client], remaining);
        Box::pin(async move {
            if !removed? {
                return Err(AccountsError::UnknownClient);
            }
            forget.await
        })
    }
}

/// Delete a user: its clients with their queues and packages, its friendship token; the name
/// stays reserved. Answers how many clients it had.
#[derive(Message)]
#[rtype(result = "Result<usize, AccountsError>")]
pub struct DeleteUser {
    pub user: UserName,
}

impl Handler<DeleteUser> for AccountsActor {
    type Result = ResponseFuture<Result<usize, AccountsError>>;

    fn handle(&mut self, msg: DeleteUser, _ctx: &mut Self::Context) -> Self::Result {
        let deleted = self
            .deps
            .store
            .delete_user(&msg.user, Timestamp::now())
            .map_err(unknown_user);
        let forget = deleted
            .as_ref()
            .ok()
            .map(|clients| self.forget(msg.user.clone(), clients.clone(), Vec::new()));
        let key_packages = self.deps.key_packages.clone();
        let registries = self.deps.registries.clone();
        Box::pin(async move {
            let clients = deleted?;
            if key_packages
                .ask(msg.user.clone(), key_packages::ForgetToken)
                .await
                .is_err()
            {
                tracing::warn!("a deleted user's friendship token was not removed");
            }
            if registries.ask(msg.user, ForgetProfiles).await.is_err() {
                tracing::warn!("a deleted user's profiles were not removed");
            }
            if let Some(forget) = forget {
                forget.await?;
            }
            tracing::info!(clients = clients.len(), "deleted a user");
            Ok(clients.len())
        })
    }
}

/// An admin's request names a user: one that is not there is `UnknownUser`, not the wrong
/// password a client would be told.
fn unknown_user(e: roost_storage::AccountError) -> AccountsError {
    match e {
        roost_storage::AccountError::UnknownUser => AccountsError::UnknownUser,
        e => e.into(),
    }
}

/// Deactivate a user (`deactivated: true`: its clients are refused, nobody can discover it,
/// nothing stored goes) or reactivate it. Answers whether that changed anything.
#[derive(Message)]
#[rtype(result = "Result<bool, AccountsError>")]
pub struct SetDeactivated {
    pub user: UserName,
    pub deactivated: bool,
}

impl Handler<SetDeactivated> for AccountsActor {
    type Result = ResponseFuture<Result<bool, AccountsError>>;

    fn handle(&mut self, msg: SetDeactivated, _ctx: &mut Self::Context) -> Self::Result {
        let since = msg.deactivated.then(Timestamp::now);
        let changed = self.deps.store.set_deactivated(&msg.user, since);
        let durability = self.deps.durability.clone();
        Box::pin(async move {
            let changed = changed.map_err(unknown_user)?;
            durability.persist().await?;
            Ok(changed)
        })
    }
}

/// A registration token made by [`CreateToken`]: the token (shown once, never stored) and the
/// id an admin names it by.
#[derive(Debug, Clone)]
pub struct CreatedToken {
    pub token: String,
    pub id: String,
    pub record: TokenRecord,
}

/// Create a registration token for `uses` registrations, until `expires_at` if given.
#[derive(Message)]
#[rtype(result = "Result<CreatedToken, AccountsError>")]
pub struct CreateToken {
    pub uses: u32,
    pub expires_at: Option<Timestamp>,
}

impl Handler<CreateToken> for AccountsActor {
    type Result = ResponseFuture<Result<CreatedToken, AccountsError>>;

    fn handle(&mut self, msg: CreateToken, _ctx: &mut Self::Context) -> Self::Result {
        let token = hex::encode(rand::random::<[u8; 16]>());
        let hash = token_hash(&token);
        let record = TokenRecord {
            created_at: Timestamp::now(),
            uses_left: msg.uses,
            expires_at: msg.expires_at,
        };
        // Tokens that expired go when a new one comes (nothing else writes them).
        let stored = self
            .deps
            .store
            .sweep_tokens(record.created_at)
            .and_then(|_| self.deps.store.insert_token(&hash, &record));
        let durability = self.deps.durability.clone();
        Box::pin(async move {
            stored?;
            durability.persist().await?;
            Ok(CreatedToken {
                token,
                id: token_id(&hash),
                record,
            })
        })
    }
}

/// Revoke the registration token whose id (or the token itself) is `token`.
#[derive(Message)]
#[rtype(result = "Result<(), AccountsError>")]
pub struct RevokeToken {
    pub token: String,
}

impl Handler<RevokeToken> for AccountsActor {
    type Result = ResponseFuture<Result<(), AccountsError>>;

    fn handle(&mut self, msg: RevokeToken, _ctx: &mut Self::Context) -> Self::Result {
        let removed = (|| {
            let given = msg.token.trim().to_ascii_lowercase();
            let by_id = |(hash, _): &(TokenHash, TokenRecord)| token_id(hash) == given;
            let hash = match self.deps.store.tokens()?.into_iter().find(by_id) {
                Some((hash, _)) => hash,
                None => token_hash(&given),
            };
            match self.deps.store.remove_token(&hash)? {
                true => Ok(()),
                false => Err(AccountsError::UnknownToken(msg.token)),
            }
        })();
        let durability = self.deps.durability.clone();
        Box::pin(async move {
            removed?;
            durability.persist().await?;
            Ok(())
        })
    }
}

impl AccountsActor {
    /// Once `clients` of `user` are gone from the accounts: removes their connection packages
    /// and key packages, makes that durable, tells the `remaining` clients, deletes the queues.
    fn forget(
        &self,
        user: UserName,
        clients: Vec<ClientId>,
        remaining: Vec<ClientId>,
    ) -> impl std::future::Future<Output = Result<(), AccountsError>> + 'static {
        let durability = self.deps.durability.clone();
        let queues = self.deps.queues.clone();
        let registries = self.deps.registries.clone();
        let key_packages = self.deps.key_packages.clone();
        async move {
            for &client in &clients {
                // Nobody can reach a deleted client any more, nor add it to a group.
                let (packages_removed, key_packages_removed) = futures_util::future::join(
                    registries.ask(user.clone(), RemoveClient { client }),
                    key_packages.ask(user.clone(), key_packages::RemoveClient { client }),
                )
                .await;
                if packages_removed.is_err() {
                    tracing::warn!(client = %client, "the deleted client's connection packages were not removed");
                }
                if key_packages_removed.is_err() {
                    tracing::warn!(client = %client, "the deleted client's key packages were not removed");
                }
            }
            durability.persist().await?;
            for &client in &clients {
                tracing::info!(client = %client, "deleted a client");
                notify(
                    &queues,
                    remaining.iter().copied(),
                    Notice::ClientDeleted { client_id: client },
                );
                for queue in [QueueId::messages(client), QueueId::connections(client)] {
                    if queues.ask(queue, DeleteQueue).await.is_err() {
                        // The client is gone either way; its queue is unreachable and only
                        // wastes space.
                        tracing::warn!(queue = ?queue, "the deleted client's queue was not removed");
                    }
                }
            }
            Ok(())
        }
    }
}
