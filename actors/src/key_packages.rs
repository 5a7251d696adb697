//! The key-package actor: one per user, owning that user's key packages on the QS and its
//! friendship token.
//!
//! On publish it checks every entry (signature, credential, queue reference, and the MLS
//! KeyPackage itself with openmls, which must name the same queue and be published once); it
//! hands out one entry per client to whoever presents the user's current friendship token, or
//! to the user's own other clients, using up one-time entries and falling back to the last
//! resort.

use std::time::Duration;

use actix::prelude::*;
use openmls::prelude::{
    tls_codec::Deserialize as _, Ciphersuite, KeyPackage, MlsMessageBodyIn, MlsMessageIn,
    ProtocolVersion,
};
use openmls_rust_crypto::RustCrypto;

use roost_protocol::{
    api::{ClaimedKeyPackages, KeyPackageCount},
    codec,
    ds::{SealedQueueRef, QUEUE_EXTENSION_TYPE},
    key_packages::{FriendshipToken, KeyPackageEntry},
    ClientCredential, ClientId, Timestamp, UserName,
};
use roost_storage::{
    AccountStore, Durability, KeyPackageStore, NotPublished, Publication, StorageError,
    StoredKeyPackage,
};

use crate::{
    once_durable,
    pool::{pooled_actor, pooled_messages, Membership, Pooled},
    qs::QueueRefs,
};

/// Most entries the QS keeps for one client.
pub const MAX_KEY_PACKAGES_PER_CLIENT: u32 = 1000;

/// The only ciphersuite Roost groups use.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// The queue a KeyPackage's owner put in it ([`QUEUE_EXTENSION_TYPE`]), which gets the Welcome
/// that adds the owner; says why if there is none.
pub fn queue_of(key_package: &KeyPackage) -> Result<SealedQueueRef, String> {
    let extension = key_package
        .extensions()
        .unknown(QUEUE_EXTENSION_TYPE)
        .ok_or("its key package names no queue (publish new ones)")?;
    codec::decode_limited::<_, 4096>(&extension.0)
        .map_err(|e| format!("its key package's queue cannot be read: {e}"))
}

#[derive(Debug, thiserror::Error)]
pub enum KeyPackageError {
    #[error("no user has this friendship token")]
    UnknownToken,
    #[error("key package {which} is invalid: {reason}")]
    InvalidEntry { which: String, reason: String },
    #[error("a client may hold at most {MAX_KEY_PACKAGES_PER_CLIENT} key packages")]
    TooMany,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

#[derive(Clone)]
pub struct KeyPackageDeps {
    pub store: KeyPackageStore,
    pub accounts: AccountStore,
    pub durability: Durability,
    /// This QS's domain and the key it opens queue references with.
    pub queue_refs: QueueRefs,
    pub idle_after: Duration,
}

pub struct KeyPackageActor {
    user: UserName,
    deps: KeyPackageDeps,
    crypto: RustCrypto,
    membership: Membership<KeyPackageActor>,
}

impl Pooled for KeyPackageActor {
    type Key = UserName;
    type Deps = KeyPackageDeps;
    const KIND: &'static str = "key_packages";

    fn new(user: UserName, deps: &KeyPackageDeps, membership: Membership<Self>) -> Self {
        KeyPackageActor {
            user,
            deps: deps.clone(),
            crypto: RustCrypto::default(),
            membership,
        }
    }

    fn membership(&mut self) -> &mut Membership<Self> {
        &mut self.membership
    }
}

pooled_actor!(KeyPackageActor);
pooled_messages!(
    KeyPackageActor: Publish,
    Count,
    GetToken,
    RotateToken,
    Claim,
    RemoveClient,
    ForgetToken
);

impl KeyPackageActor {
    /// Checks one entry of `client` (registered with `credential`), published as a last-resort
    /// entry or not; says why it is refused, or what to store.
    fn check(
        &self,
        client: &ClientId,
        credential: &ClientCredential,
        entry: KeyPackageEntry,
        last_resort: bool,
    ) -> Result<Publication, String> {
        entry
            .verify()
            .map_err(|_| "its signature does not verify".to_owned())?;
        if &entry.client_credential != credential {
            return Err("it does not carry the publishing client's credential".into());
        }
        if self.deps.queue_refs.open(&entry.queue).ok() != Some(*client) {
            return Err(
                "its queue reference does not name the publishing client at this QS".into(),
            );
        }
        // The bytes are an MLSMessage (`MlsMessageOut`) wrapping the KeyPackage.
        let message = MlsMessageIn::tls_deserialize_exact(&entry.key_package)
            .map_err(|e| format!("its key package is not an MLS message: {e}"))?;
        let MlsMessageBodyIn::KeyPackage(key_package) = message.extract() else {
            return Err("its MLS message is not a key package".into());
        };
        let key_package = key_package
            .validate(&self.crypto, ProtocolVersion::Mls10)
            .map_err(|e| format!("its key package does not validate: {e}"))?;
        if key_package.ciphersuite() != CIPHERSUITE {
            return Err(format!(
                "its ciphersuite is {:?}, not {CIPHERSUITE:?}",
                key_package.ciphersuite()
            ));
        }
        if queue_of(&key_package)? != entry.queue {
            return Err("its key package names another queue than the entry".into());
        }
        entry
            .card(key_package.leaf_node().signature_key().as_slice())
            .verify()
            .map_err(|_| "its member card signature does not verify".to_owned())?;
        let lifetime = key_package.life_time();
        if !lifetime.has_acceptable_range() {
            return Err("its lifetime is longer than MLS clients accept".into());
        }
        // A one-time package must be used once: its owner deletes its keys after a join.
        match (last_resort, key_package.last_resort()) {
            (true, false) => return Err("its key package lacks the last-resort extension".into()),
            (false, true) => {
                return Err(
                    "its key package is marked last-resort but is published as one-time".into(),
                )
            }
            _ => {}
        }
        let reference = key_package
            .hash_ref(&self.crypto)
            .map_err(|e| format!("its key package cannot be referenced: {e}"))?;
        Ok(Publication {
            reference: reference.as_slice().to_vec(),
            package: StoredKeyPackage {
                entry,
                last_resort,
                not_after: Timestamp(lifetime.not_after()),
            },
        })
    }

    /// The user's clients, or none if the user is unknown.
    fn clients(&self) -> Result<Vec<ClientId>, StorageError> {
        Ok(self
            .deps
            .accounts
            .user(&self.user)?
            .map(|u| u.clients)
            .unwrap_or_default())
    }
}

/// Store a client's new entries; answers with its count once durable.
#[derive(Message)]
#[rtype(result = "Result<KeyPackageCount, KeyPackageError>")]
pub struct Publish {
    pub client: ClientId,
    pub entries: Vec<KeyPackageEntry>,
    pub last_resort: Option<KeyPackageEntry>,
}

impl Handler<Publish> for KeyPackageActor {
    type Result = ResponseFuture<Result<KeyPackageCount, KeyPackageError>>;

    fn handle(&mut self, msg: Publish, _ctx: &mut Self::Context) -> Self::Result {
        let now = Timestamp::now();
        let stored = (|| -> Result<_, KeyPackageError> {
            // The caller was authenticated; it is gone only if deleted in the meantime.
            let credential = self
                .deps
                .accounts
                .client(&msg.client)?
                .map(|c| c.credential)
                .ok_or_else(|| KeyPackageError::InvalidEntry {
                    which: "every entry".into(),
                    reason: "the publishing client is unknown".into(),
                })?;
            let numbered = msg.entries.into_iter().enumerate();
            let named = numbered
                .map(|(index, entry)| (format!("entry {index}"), entry, false))
                .chain(
                    msg.last_resort
                        .map(|entry| ("the last-resort entry".to_owned(), entry, true)),
                );
            let mut publications = Vec::new();
            let mut names = Vec::new();
            for (which, entry, last_resort) in named {
                let publication = self
                    .check(&msg.client, &credential, entry, last_resort)
                    .map_err(|reason| KeyPackageError::InvalidEntry {
                        which: which.clone(),
                        reason,
                    })?;
                publications.push(publication);
                names.push(which);
            }
            let (user, client) = (&self.user, &msg.client);
            let max = MAX_KEY_PACKAGES_PER_CLIENT;
            match self
                .deps
                .store
                .publish(user, client, &publications, max, now)?
            {
                Ok(count) => Ok(count),
                Err(NotPublished::TooMany) => Err(KeyPackageError::TooMany),
                Err(NotPublished::PublishedBefore(index)) => Err(KeyPackageError::InvalidEntry {
                    which: names.swap_remove(index),
                    reason: "its key package is published already, in another entry or twice in this request".into(),
                }),
            }
        })();
        once_durable(&self.deps.durability, stored)
    }
}

/// How many entries a client has left.
#[derive(Message)]
#[rtype(result = "Result<KeyPackageCount, KeyPackageError>")]
pub struct Count {
    pub client: ClientId,
}

impl Handler<Count> for KeyPackageActor {
    type Result = Result<KeyPackageCount, KeyPackageError>;

    fn handle(&mut self, msg: Count, _ctx: &mut Self::Context) -> Self::Result {
        Ok(self
            .deps
            .store
            .count(&self.user, &msg.client, Timestamp::now())?)
    }
}

/// The user's friendship token, made on first use. Always answers once durable, so a token
/// just made (by this call or one a moment before) is never handed out before it would survive
/// a crash.
#[derive(Message)]
#[rtype(result = "Result<FriendshipToken, KeyPackageError>")]
pub struct GetToken;

impl Handler<GetToken> for KeyPackageActor {
    type Result = ResponseFuture<Result<FriendshipToken, KeyPackageError>>;

    fn handle(&mut self, _: GetToken, _ctx: &mut Self::Context) -> Self::Result {
        let token = (|| -> Result<_, KeyPackageError> {
            if let Some(token) = self.deps.store.token_of(&self.user)? {
                return Ok(token);
            }
            let token = FriendshipToken::random();
            self.deps.store.set_token(&self.user, &token)?;
            Ok(token)
        })();
        once_durable(&self.deps.durability, token)
    }
}

/// A new friendship token for the user; the old one stops working.
#[derive(Message)]
#[rtype(result = "Result<FriendshipToken, KeyPackageError>")]
pub struct RotateToken;

impl Handler<RotateToken> for KeyPackageActor {
    type Result = ResponseFuture<Result<FriendshipToken, KeyPackageError>>;

    fn handle(&mut self, _: RotateToken, _ctx: &mut Self::Context) -> Self::Result {
        let token = FriendshipToken::random();
        let stored = self
            .deps
            .store
            .set_token(&self.user, &token)
            .map(|()| token);
        once_durable(&self.deps.durability, stored.map_err(Into::into))
    }
}

/// Who claims the user's key packages.
#[derive(Debug)]
pub enum Claimant {
    /// Someone who knows the user's friendship token: gets an entry of every client.
    Friend(FriendshipToken),
    /// One of the user's own clients: gets an entry of every other client, or of `only` that
    /// one (to add a new client to the groups the user is in).
    OwnClient {
        caller: ClientId,
        only: Option<ClientId>,
    },
}

/// One entry per client, using up one-time entries; answers once that is durable.
#[derive(Message)]
#[rtype(result = "Result<ClaimedKeyPackages, KeyPackageError>")]
pub struct Claim(pub Claimant);

impl Handler<Claim> for KeyPackageActor {
    type Result = ResponseFuture<Result<ClaimedKeyPackages, KeyPackageError>>;

    fn handle(&mut self, Claim(claimant): Claim, _ctx: &mut Self::Context) -> Self::Result {
        let taken = (|| -> Result<_, KeyPackageError> {
            let mut clients = self.clients()?;
            match claimant {
                // Checked here, by the token's owner: a token rotated a moment ago is refused.
                Claimant::Friend(token) => {
                    // Nobody adds a deactivated user to a group.
                    if self.deps.store.token_of(&self.user)? != Some(token)
                        || self.deps.accounts.standing(&self.user)?.is_some()
                    {
                        return Err(KeyPackageError::UnknownToken);
                    }
                }
                Claimant::OwnClient { caller, only } => {
                    clients.retain(|c| *c != caller && only.is_none_or(|only| *c == only))
                }
            }
            let entries = self
                .deps
                .store
                .take(&self.user, &clients, Timestamp::now())?;
            Ok(ClaimedKeyPackages { entries })
        })();
        // An entry must not be served twice, even across a crash.
        once_durable(&self.deps.durability, taken)
    }
}

/// Forget a deleted client's entries.
#[derive(Message)]
#[rtype(result = "Result<(), KeyPackageError>")]
pub struct RemoveClient {
    pub client: ClientId,
}

impl Handler<RemoveClient> for KeyPackageActor {
    type Result = Result<(), KeyPackageError>;

    fn handle(&mut self, msg: RemoveClient, _ctx: &mut Self::Context) -> Self::Result {
        Ok(self.deps.store.remove_client(&self.user, &msg.client)?)
    }
}

/// Forget the user's friendship token (the user was deleted): nobody can claim with it again.
#[derive(Message)]
#[rtype(result = "Result<(), KeyPackageError>")]
pub struct ForgetToken;

impl Handler<ForgetToken> for KeyPackageActor {
    type Result = Result<(), KeyPackageError>;

    fn handle(&mut self, _: ForgetToken, _ctx: &mut Self::Context) -> Self::Result {
        Ok(self.deps.store.remove_token(&self.user)?)
    }
}
