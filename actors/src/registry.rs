//! The connection-package registry actor: one per user, owning what the AS hands out about
//! that user — its published connection packages and the record of which were handed out, and
//! its encrypted profiles.

use std::time::Duration;

use actix::prelude::*;

use roost_protocol::{
    api::{ConnectionPackageCount, MAX_PROFILES_PER_USER},
    connection::{ConnectionPackage, ConnectionPackageHash},
    profile::{EncryptedProfile, ProfileId},
    ClientId, Timestamp, UserName,
};
use roost_storage::{
    AccountStore, ConnectionPackageStore, Durability, NotStored, ProfileStore, Redeemed,
    StorageError,
};

use crate::{
    once_durable,
    pool::{pooled_actor, pooled_messages, Membership, Pooled},
};

/// Most packages the AS keeps for one client.
pub const MAX_PACKAGES_PER_CLIENT: u32 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("no such user")]
    UnknownUser,
    #[error("connection package {index} is invalid: {reason}")]
    InvalidPackage { index: usize, reason: String },
    #[error("a client may hold at most {MAX_PACKAGES_PER_CLIENT} connection packages")]
    TooMany,
    #[error("the profile takes {size} bytes; at most {limit} are stored")]
    ProfileTooLarge { size: usize, limit: usize },
    #[error("another user stores a profile under this id")]
    ProfileOfAnotherUser,
    #[error("a user may store at most {MAX_PROFILES_PER_USER} profiles: delete an old one first")]
    TooManyProfiles,
    #[error("no such profile of this user")]
    UnknownProfile,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

#[derive(Clone)]
pub struct RegistryDeps {
    pub packages: ConnectionPackageStore,
    pub profiles: ProfileStore,
    pub accounts: AccountStore,
    pub durability: Durability,
    pub max_package_lifetime_secs: u64,
    pub idle_after: Duration,
}

pub struct RegistryActor {
    user: UserName,
    deps: RegistryDeps,
    membership: Membership<RegistryActor>,
}

impl Pooled for RegistryActor {
    type Key = UserName;
    type Deps = RegistryDeps;
    const KIND: &'static str = "registry";

    fn new(user: UserName, deps: &RegistryDeps, membership: Membership<Self>) -> Self {
        RegistryActor {
            user,
            deps: deps.clone(),
            membership,
        }
    }

    fn membership(&mut self) -> &mut Membership<Self> {
        &mut self.membership
    }
}

pooled_actor!(RegistryActor);
pooled_messages!(RegistryActor: Publish, Count, Take, Redeem, RemoveClient, StoreProfile, DeleteProfile, ForgetProfiles);

impl RegistryActor {
    fn check(
        &self,
        client: &ClientId,
        index: usize,
        package: &ConnectionPackage,
        now: Timestamp,
    ) -> Result<(), RegistryError> {
        let invalid = |reason: String| RegistryError::InvalidPackage { index, reason };
        package.verify(now).map_err(|e| invalid(e.to_string()))?;
        let registered = self
            .deps
            .accounts
            .client(client)?
            .ok_or_else(|| invalid("the client is unknown".into()))?;
        if package.body.client_credential != registered.credential {
            return Err(invalid(
                "it does not carry the publishing client's credential".into(),
            ));
        }
        let lifetime = package.body.validity.not_after.0.saturating_sub(now.0);
        if lifetime > self.deps.max_package_lifetime_secs {
            return Err(invalid(format!(
                "its lifetime exceeds {} seconds",
                self.deps.max_package_lifetime_secs
            )));
        }
        Ok(())
    }
}

/// Store a client's new packages; answers with its count once durable.
#[derive(Message)]
#[rtype(result = "Result<ConnectionPackageCount, RegistryError>")]
pub struct Publish {
    pub client: ClientId,
    pub packages: Vec<ConnectionPackage>,
}

impl Handler<Publish> for RegistryActor {
    type Result = ResponseFuture<Result<ConnectionPackageCount, RegistryError>>;

    fn handle(&mut self, msg: Publish, _ctx: &mut Self::Context) -> Self::Result {
        let now = Timestamp::now();
        let stored = (|| -> Result<_, RegistryError> {
            for (index, package) in msg.packages.iter().enumerate() {
                self.check(&msg.client, index, package, now)?;
            }
            let (user, client) = (&self.user, &msg.client);
            self.deps
                .packages
                .publish(user, client, &msg.packages, MAX_PACKAGES_PER_CLIENT, now)?
                .ok_or(RegistryError::TooMany)
        })();
        once_durable(&self.deps.durability, stored)
    }
}

/// How many packages a client has left.
#[derive(Message)]
#[rtype(result = "Result<ConnectionPackageCount, RegistryError>")]
pub struct Count {
    pub client: ClientId,
}

impl Handler<Count> for RegistryActor {
    type Result = Result<ConnectionPackageCount, RegistryError>;

    fn handle(&mut self, msg: Count, _ctx: &mut Self::Context) -> Self::Result {
        Ok(self
            .deps
            .packages
            .count(&self.user, &msg.client, Timestamp::now())?)
    }
}

/// Discovery: one package per client of the user, using up the one-time ones.
#[derive(Message)]
#[rtype(result = "Result<Vec<ConnectionPackage>, RegistryError>")]
pub struct Take;

impl Handler<Take> for RegistryActor {
    type Result = ResponseFuture<Result<Vec<ConnectionPackage>, RegistryError>>;

    fn handle(&mut self, _: Take, _ctx: &mut Self::Context) -> Self::Result {
        let taken = (|| -> Result<_, RegistryError> {
            let user = self
                .deps
                .accounts
                .user(&self.user)?
                .ok_or(RegistryError::UnknownUser)?;
            // A deactivated user cannot be found, as if there were none.
            if self.deps.accounts.standing(&self.user)?.is_some() {
                return Err(RegistryError::UnknownUser);
            }
            Ok(self
                .deps
                .packages
                .take(&self.user, &user.clients, Timestamp::now())?)
        })();
        // A package must not be served twice, even across a crash.
        once_durable(&self.deps.durability, taken)
    }
}

/// May a sealed request for `package` be queued for `client`? Uses up a one-time package;
/// `None` if it was never handed out for that client (or is used up or expired).
#[derive(Message)]
#[rtype(result = "Result<Option<Redeemed>, RegistryError>")]
pub struct Redeem {
    pub client: ClientId,
    pub package: ConnectionPackageHash,
}

impl Handler<Redeem> for RegistryActor {
    type Result = Result<Option<Redeemed>, RegistryError>;

    fn handle(&mut self, msg: Redeem, _ctx: &mut Self::Context) -> Self::Result {
        // Nobody reaches a deactivated user, even with a package handed out before.
        if self.deps.accounts.standing(&self.user)?.is_some() {
            return Ok(None);
        }
        Ok(self
            .deps
            .packages
            .redeem(&msg.client, &msg.package, Timestamp::now())?)
    }
}

/// Forget a deleted client's packages.
#[derive(Message)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct RemoveClient {
    pub client: ClientId,
}

impl Handler<RemoveClient> for RegistryActor {
    type Result = Result<(), RegistryError>;

    fn handle(&mut self, msg: RemoveClient, _ctx: &mut Self::Context) -> Self::Result {
        Ok(self.deps.packages.remove_client(&self.user, &msg.client)?)
    }
}

/// Store (or replace) one of the user's profiles; answers once durable.
#[derive(Message)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct StoreProfile {
    pub id: ProfileId,
    pub profile: EncryptedProfile,
}

impl Handler<StoreProfile> for RegistryActor {
    type Result = ResponseFuture<Result<(), RegistryError>>;

    fn handle(&mut self, msg: StoreProfile, _ctx: &mut Self::Context) -> Self::Result {
        let stored = (|| -> Result<(), RegistryError> {
            msg.profile
                .check_size()
                .map_err(|_| RegistryError::ProfileTooLarge {
                    size: msg.profile.0.len(),
                    limit: roost_protocol::profile::MAX_ENCRYPTED_PROFILE,
                })?;
            let (user, id) = (&self.user, &msg.id);
            let now = Timestamp::now();
            match self
                .deps
                .profiles
                .put(user, id, msg.profile, MAX_PROFILES_PER_USER, now)?
            {
                Ok(()) => Ok(()),
                Err(NotStored::OtherOwner) => Err(RegistryError::ProfileOfAnotherUser),
                Err(NotStored::TooMany) => Err(RegistryError::TooManyProfiles),
            }
        })();
        once_durable(&self.deps.durability, stored)
    }
}

/// Delete one of the user's profiles; answers once durable.
#[derive(Message)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct DeleteProfile {
    pub id: ProfileId,
}

impl Handler<DeleteProfile> for RegistryActor {
    type Result = ResponseFuture<Result<(), RegistryError>>;

    fn handle(&mut self, msg: DeleteProfile, _ctx: &mut Self::Context) -> Self::Result {
        let removed = match self.deps.profiles.remove(&self.user, &msg.id) {
            Ok(true) => Ok(()),
            Ok(false) => Err(RegistryError::UnknownProfile),
            Err(e) => Err(e.into()),
        };
        once_durable(&self.deps.durability, removed)
    }
}

/// Delete every profile of the user (deleted); answers how many, once durable.
#[derive(Message)]
#[rtype(result = "Result<usize, RegistryError>")]
pub struct ForgetProfiles;

impl Handler<ForgetProfiles> for RegistryActor {
    type Result = ResponseFuture<Result<usize, RegistryError>>;

    fn handle(&mut self, _: ForgetProfiles, _ctx: &mut Self::Context) -> Self::Result {
        let removed = self
            .deps
            .profiles
            .remove_all(&self.user)
            .map_err(RegistryError::from);
        once_durable(&self.deps.durability, removed)
    }
}
