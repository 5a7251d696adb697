//! The DS group actor: one per group, owning that group's public MLS state.
//!
//! The state is stored only encrypted under the group-state EAR key, which members send with
//! every request and the server never keeps; without it the DS cannot even read its own record.
//! Commits arrive as MLS public messages: the actor validates each against the public group
//! state (`openmls::PublicGroup`), so a stale or forged commit is refused, and only one commit
//! per epoch can win. Members are reached through sealed queue references that only the QS can
//! open. Each request is handled atomically — the actor takes the next only once the previous
//! one's state is durable and its fan-out queued — so members receive a group's messages in the
//! order the DS accepted them. Each request message is made from its protocol request body
//! (`From<roost_protocol::ds::…>`).

use std::{collections::BTreeMap, sync::RwLock, time::Duration};

use actix::prelude::*;
use openmls::{
    messages::group_info::VerifiableGroupInfo,
    prelude::{
        tls_codec::Deserialize as _, GroupId, MlsMessageBodyIn, MlsMessageIn,
        ProcessedMessageContent, ProposalStore, ProtocolMessage, PublicGroup,
        PublicProcessMessageError, Sender, ValidationError,
    },
};
use openmls_memory_storage::MemoryStorage;
use openmls_rust_crypto::RustCrypto;
use serde::{Deserialize, Serialize};

use roost_protocol::{
    codec,
    connection::EarKey,
    ds::{self, ExternalCommitInfo, GroupDelivery, MemberEntry, SealedQueueRef, WelcomeBundle},
    federation::{DomainPolicy, FederatedDelivery},
    Domain,
};
use roost_storage::{Durability, GroupStore, StorageError};

use crate::{
    federation::{FederationActor, Relay},
    once_durable,
    pool::{pooled_actor, pooled_messages, Ask, Membership, Pool, Pooled},
    qs::{DeliveryError, SealedDelivery, ToQueue},
};

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("no such group")]
    UnknownGroup,
    #[error("a group with this id exists")]
    GroupExists,
    #[error("the group-state key is wrong")]
    WrongKey,
    #[error("the group has moved past this commit's epoch; fetch its messages and retry")]
    StaleEpoch,
    #[error("this connection group no longer accepts a joiner")]
    NotJoinable,
    #[error("invalid MLS message: {0}")]
    Invalid(String),
    #[error("the group would have more than {0} members (limits.members_per_group)")]
    GroupFull(usize),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

fn invalid(what: impl std::fmt::Display) -> GroupError {
    GroupError::Invalid(what.to_string())
}

/// How the DS hands messages on: to the local QS ([`SealedDelivery`]), or — for another
/// domain's client — to the federation actor of that domain, which relays it to that domain's
/// QS.
#[derive(Clone)]
pub struct Delivery {
    pub qs: SealedDelivery,
    pub federation: Addr<Pool<FederationActor>>,
    pub policy: DomainPolicy,
}

impl Delivery {
    /// Enqueues `item` for every reference (or keeps it in the outbox for another domain) and
    /// waits until each is durable.
    async fn deliver(&self, refs: Vec<SealedQueueRef>, item: GroupDelivery) {
        let mut local = Vec::new();
        let mut remote: BTreeMap<Domain, Vec<FederatedDelivery>> = BTreeMap::new();
        for queue_ref in refs {
            if &queue_ref.domain == self.qs.refs().domain() {
                local.push(ToQueue {
                    queue: queue_ref,
                    item: item.clone(),
                    id: None,
                });
                continue;
            }
            if !self.policy.allows(&queue_ref.domain) {
                tracing::warn!(domain = %queue_ref.domain, "dropping a delivery for a domain this server does not federate with");
                continue;
            }
            remote
                .entry(queue_ref.domain.clone())
                .or_default()
                .push(FederatedDelivery {
                    id: rand::random(),
                    to: queue_ref.domain.clone(),
                    queue: queue_ref,
                    item: item.clone(),
                });
        }
        let relays = remote
            .into_iter()
            .map(|(domain, deliveries)| self.federation.ask(domain, Relay(deliveries)));
        let (local, relayed) = futures_util::future::join(
            self.qs.deliver(local),
            futures_util::future::join_all(relays),
        )
        .await;
        match local {
            Ok(outcomes) => {
                for outcome in outcomes {
                    match outcome {
                        Ok(_) => {}
                        Err(DeliveryError::BadQueueRef) => {
                            tracing::warn!("dropping a delivery with an unreadable queue reference")
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "a group delivery could not be queued")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "group deliveries could not be queued"),
        }
        for outcome in relayed {
            if outcome.is_err() {
                tracing::error!("a group delivery for another domain could not be kept");
            }
        }
    }
}

#[derive(Clone)]
pub struct GroupDeps {
    pub groups: GroupStore,
    pub durability: Durability,
    pub delivery: Delivery,
    /// The most members a group may have.
    pub max_members: usize,
    pub idle_after: Duration,
}

/// Everything the DS knows about a group, stored only as ciphertext under the EAR key.
#[derive(Serialize, Deserialize)]
struct GroupState {
    /// The public group (tree, context, transcript hash…) as openmls stores it.
    mls: Vec<(Vec<u8>, Vec<u8>)>,
    /// The newest GroupInfo a member uploaded, for external joins.
    group_info: Vec<u8>,
    members: BTreeMap<u32, MemberEntry>,
    connection_group: bool,
}

const STATE_CONTEXT: &[u8] = b"roost ds group state v1";

fn state_context(group_id: &[u8]) -> Vec<u8> {
    [STATE_CONTEXT, group_id].concat()
}

/// A group's state opened for one request.
struct Opened {
    state: GroupState,
    storage: MemoryStorage,
    public: PublicGroup,
}

pub struct GroupActor {
    group_id: Vec<u8>,
    deps: GroupDeps,
    crypto: RustCrypto,
    membership: Membership<GroupActor>,
}

impl Pooled for GroupActor {
    type Key = Vec<u8>;
    type Deps = GroupDeps;

    fn new(group_id: Vec<u8>, deps: &GroupDeps, membership: Membership<Self>) -> Self {
        GroupActor {
            group_id,
            deps: deps.clone(),
            crypto: RustCrypto::default(),
            membership,
        }
    }

    fn membership(&mut self) -> &mut Membership<Self> {
        &mut self.membership
    }
}

pooled_actor!(GroupActor);
pooled_messages!(GroupActor: CreateGroup, Commit, SendMessage, GetExternalCommitInfo, JoinConnectionGroup);

fn parse_group_info(bytes: &[u8]) -> Result<VerifiableGroupInfo, GroupError> {
    match MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(invalid)?
        .extract()
    {
        MlsMessageBodyIn::GroupInfo(info) => Ok(info),
        _ => Err(invalid("expected a GroupInfo")),
    }
}

fn parse_protocol_message(bytes: &[u8]) -> Result<ProtocolMessage, GroupError> {
    MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(invalid)?
        .try_into_protocol_message()
        .map_err(invalid)
}

fn snapshot(storage: &MemoryStorage) -> Vec<(Vec<u8>, Vec<u8>)> {
    let values = storage.values.read().unwrap_or_else(|p| p.into_inner());
    let mut pairs: Vec<_> = values.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    pairs.sort();
    pairs
}

/// What a commit changed, for fan-out.
/// What a request sends on once it is settled, and what it answers.
struct Fanout<T> {
    /// The group's state was written: it must be durable before anything goes out.
    wrote_state: bool,
    answer: T,
    recipients: Vec<SealedQueueRef>,
    message: Vec<u8>,
    /// The Welcome of a commit that added members, with their queues.
    welcome: Option<(Vec<SealedQueueRef>, WelcomeBundle)>,
}

struct Applied {
    epoch: u64,
    /// Everyone who was a member before the commit, but the committer — removed members
    /// included, so they learn of their removal.
    recipients: Vec<SealedQueueRef>,
    added: Vec<u32>,
    joiner: Option<u32>,
}

impl GroupActor {
    fn open(&self, ear_key: &EarKey) -> Result<Opened, GroupError> {
        let ciphertext = self
            .deps
            .groups
            .get(&self.group_id)?
            .ok_or(GroupError::UnknownGroup)?;
        let plain = ear_key
            .decrypt(&state_context(&self.group_id), &ciphertext)
            .map_err(|_| GroupError::WrongKey)?;
        let state: GroupState = codec::decode(&plain)
            .map_err(|e| StorageError::Corrupt(format!("group state: {e}")))?;
        let storage = MemoryStorage {
            values: RwLock::new(state.mls.iter().cloned().collect()),
        };
        let public = PublicGroup::load(&storage, &GroupId::from_slice(&self.group_id))
            .map_err(|e| StorageError::Corrupt(format!("public group: {e:?}")))?
            .ok_or_else(|| StorageError::Corrupt("public group missing".into()))?;
        Ok(Opened {
            state,
            storage,
            public,
        })
    }

    fn seal(&self, ear_key: &EarKey, opened: &mut Opened) -> Vec<u8> {
        opened.state.mls = snapshot(&opened.storage);
        ear_key.encrypt(
            &state_context(&self.group_id),
            &codec::encode(&opened.state),
        )
    }

    /// Validates and merges a commit; `external` says whether it must be a joiner's.
    fn apply_commit(
        &self,
        opened: &mut Opened,
        commit: &[u8],
        group_info: &[u8],
        external: bool,
    ) -> Result<Applied, GroupError> {
        let message = parse_protocol_message(commit)?;
        if message.group_id().as_slice() != self.group_id.as_slice() {
            return Err(invalid("the commit is for another group"));
        }
        let processed = opened
            .public
            .process_message(&self.crypto, message)
            .map_err(|e| match e {
                PublicProcessMessageError::ValidationError(ValidationError::WrongEpoch) => {
                    GroupError::StaleEpoch
                }
                other => invalid(other),
            })?;
        let sender = processed.sender().clone();
        let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
            return Err(invalid("expected a commit"));
        };
        let committer = match (&sender, external) {
            (Sender::Member(leaf), false) => Some(leaf.u32()),
            (Sender::NewMemberCommit, true) => None,
            _ => return Err(invalid("unexpected sender for this endpoint")),
        };
        let others: Vec<u32> = opened
            .public
            .members()
            .map(|m| m.index.u32())
            .filter(|leaf| Some(*leaf) != committer)
            .collect();
        let recipients = Self::refs(&opened.state, &others);
        let removed: Vec<u32> = staged
            .remove_proposals()
            .map(|r| r.remove_proposal().removed().u32())
            .collect();
        let joiner = if external {
            Some(
                opened
                    .public
                    .ext_commit_sender_index(&staged)
                    .map_err(invalid)?
                    .u32(),
            )
        } else {
            None
        };
        let added_keys: Vec<Vec<u8>> = staged
            .add_proposals()
            .map(|a| {
                a.add_proposal()
                    .key_package()
                    .leaf_node()
                    .signature_key()
                    .as_slice()
                    .to_vec()
            })
            .collect();
        opened
            .public
            .merge_commit(&opened.storage, *staged)
            .map_err(|e| StorageError::Corrupt(format!("merging a commit: {e:?}")))?;
        let added = added_keys
            .iter()
            .map(|key| {
                opened
                    .public
                    .members()
                    .find(|m| &m.signature_key == key)
                    .map(|m| m.index.u32())
                    .ok_or_else(|| invalid("an added member is missing after the commit"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let epoch = opened.public.group_context().epoch().as_u64();
        let info = parse_group_info(group_info)?;
        if info.epoch().as_u64() != epoch || info.group_id().as_slice() != self.group_id.as_slice()
        {
            return Err(invalid(
                "the GroupInfo is not of the epoch this commit creates",
            ));
        }
        opened.state.group_info = group_info.to_vec();
        for leaf in &removed {
            opened.state.members.remove(leaf);
        }
        Ok(Applied {
            epoch,
            recipients,
            added,
            joiner,
        })
    }

    /// Stores the group's state after an applied commit; what goes out once it is durable.
    fn store_commit(
        &self,
        ear_key: &EarKey,
        mut opened: Opened,
        applied: Applied,
        commit: Vec<u8>,
        welcome: Option<(Vec<SealedQueueRef>, WelcomeBundle)>,
    ) -> Result<Fanout<u64>, GroupError> {
        let sealed = self.seal(ear_key, &mut opened);
        self.deps.groups.put(&self.group_id, sealed)?;
        Ok(Fanout {
            wrote_state: true,
            answer: applied.epoch,
            recipients: applied.recipients,
            message: commit,
            welcome,
        })
    }

    /// Once what `outcome` wrote is durable (an application message writes nothing), hands
    /// its message to the recipients and its Welcome to the new members, then answers. The
    /// actor takes its next request only after that, so members receive a group's messages in
    /// the order the DS accepted them.
    fn fan_out<T: Send + 'static>(
        &self,
        outcome: Result<Fanout<T>, GroupError>,
    ) -> AtomicResponse<Self, Result<T, GroupError>> {
        let (group_id, durability, delivery) = (
            self.group_id.clone(),
            self.deps.durability.clone(),
            self.deps.delivery.clone(),
        );
        AtomicResponse::new(Box::pin(
            async move {
                let fanout = outcome?;
                if fanout.wrote_state {
                    durability.persist().await?;
                }
                let message = GroupDelivery::Message {
                    group_id,
                    message: fanout.message,
                };
                delivery.deliver(fanout.recipients, message).await;
                if let Some((refs, welcome)) = fanout.welcome {
                    delivery
                        .deliver(refs, GroupDelivery::Welcome(welcome))
                        .await;
                }
                Ok(fanout.answer)
            }
            .into_actor(self),
        ))
    }

    fn refs(state: &GroupState, leaves: &[u32]) -> Vec<SealedQueueRef> {
        leaves
            .iter()
            .filter_map(|leaf| state.members.get(leaf).map(|m| m.queue.clone()))
            .collect()
    }
}

/// A DS request body from `protocol::ds`, as the client sent it, for the group's actor: the
/// request bodies are the actor's messages, so nothing is copied field by field.
pub struct DsRequest<B>(pub B);

/// Names a DS request the group actor takes, with its answer.
macro_rules! ds_requests {
    ($($(#[$doc:meta])* $name:ident = $body:ty => $answer:ty;)+) => {
        $(
            $(#[$doc])*
            pub type $name = DsRequest<$body>;

            impl Message for $name {
                type Result = Result<$answer, GroupError>;
            }
        )+
    };
}

ds_requests! {
    /// Create a group with its creator as the only member.
    CreateGroup = ds::CreateGroup => ();
    /// A member's commit; answers the new epoch.
    Commit = ds::CommitRequest => u64;
    /// An application message for the other members.
    SendMessage = ds::SendMessage => ();
    /// What a joiner needs for an external commit.
    GetExternalCommitInfo = ds::EarKeyProof => ExternalCommitInfo;
    /// The responder's external commit into a connection group: succeeds once; answers the
    /// new epoch.
    JoinConnectionGroup = ds::JoinConnectionGroup => u64;
}

impl Handler<CreateGroup> for GroupActor {
    type Result = AtomicResponse<Self, Result<(), GroupError>>;

    fn handle(&mut self, DsRequest(msg): CreateGroup, _ctx: &mut Self::Context) -> Self::Result {
        let created = (|| -> Result<(), GroupError> {
            if self.deps.groups.get(&self.group_id)?.is_some() {
                return Err(GroupError::GroupExists);
            }
            let info = parse_group_info(&msg.group_info)?;
            if info.group_id().as_slice() != self.group_id.as_slice() {
                return Err(invalid("the GroupInfo names another group"));
            }
            let tree = info
                .extensions()
                .ratchet_tree()
                .ok_or_else(|| invalid("the GroupInfo lacks the ratchet-tree extension"))?
                .ratchet_tree()
                .clone();
            let storage = MemoryStorage::default();
            let (public, _) = PublicGroup::from_external(
                &self.crypto,
                &storage,
                tree,
                info,
                ProposalStore::new(),
            )
            .map_err(invalid)?;
            if public.members().count() != 1 {
                return Err(invalid("a new group must hold only its creator"));
            }
            let mut opened = Opened {
                state: GroupState {
                    mls: Vec::new(),
                    group_info: msg.group_info.clone(),
                    members: BTreeMap::from([(0, msg.creator.clone())]),
                    connection_group: msg.connection_group,
                },
                storage,
                public,
            };
            let sealed = self.seal(&msg.ear_key, &mut opened);
            if !self.deps.groups.create(&self.group_id, sealed)? {
                return Err(GroupError::GroupExists);
            }
            Ok(())
        })();
        AtomicResponse::new(Box::pin(
            once_durable(&self.deps.durability, created).into_actor(self),
        ))
    }
}

impl Handler<Commit> for GroupActor {
    type Result = AtomicResponse<Self, Result<u64, GroupError>>;

    fn handle(&mut self, DsRequest(msg): Commit, _ctx: &mut Self::Context) -> Self::Result {
        let applied = (|| {
            let mut opened = self.open(&msg.ear_key)?;
            let applied = self.apply_commit(&mut opened, &msg.commit, &msg.group_info, false)?;
            if applied.added.len() != msg.added.len() {
                return Err(invalid("one member entry is needed per added member"));
            }
            if !applied.added.is_empty() && msg.welcome.is_none() {
                return Err(invalid("a commit adding members needs a Welcome"));
            }
            for (leaf, entry) in applied.added.iter().zip(&msg.added) {
                opened.state.members.insert(*leaf, entry.clone());
            }
            if opened.state.members.len() > self.deps.max_members {
                return Err(GroupError::GroupFull(self.deps.max_members));
            }
            let welcome = msg
                .welcome
                .map(|welcome| (Self::refs(&opened.state, &applied.added), welcome));
            self.store_commit(&msg.ear_key, opened, applied, msg.commit, welcome)
        })();
        self.fan_out(applied)
    }
}

impl Handler<SendMessage> for GroupActor {
    type Result = AtomicResponse<Self, Result<(), GroupError>>;

    fn handle(&mut self, DsRequest(msg): SendMessage, _ctx: &mut Self::Context) -> Self::Result {
        let recipients = (|| {
            let opened = self.open(&msg.ear_key)?;
            let message = parse_protocol_message(&msg.message)?;
            if message.is_handshake_message() {
                return Err(invalid("handshake messages go to the commit endpoint"));
            }
            if message.epoch() != opened.public.group_context().epoch() {
                return Err(GroupError::StaleEpoch);
            }
            let leaves: Vec<u32> = opened
                .state
                .members
                .keys()
                .copied()
                .filter(|leaf| *leaf != msg.sender_leaf)
                .collect();
            Ok(Fanout {
                wrote_state: false,
                answer: (),
                recipients: Self::refs(&opened.state, &leaves),
                message: msg.message,
                welcome: None,
            })
        })();
        self.fan_out(recipients)
    }
}

impl Handler<GetExternalCommitInfo> for GroupActor {
    type Result = Result<ExternalCommitInfo, GroupError>;

    fn handle(
        &mut self,
        DsRequest(msg): GetExternalCommitInfo,
        _ctx: &mut Self::Context,
    ) -> Self::Result {
        let opened = self.open(&msg.ear_key)?;
        Ok(ExternalCommitInfo {
            group_info: opened.state.group_info.clone(),
            encrypted_credentials: opened
                .state
                .members
                .values()
                .map(|m| m.encrypted_credential.clone())
                .collect(),
        })
    }
}

impl Handler<JoinConnectionGroup> for GroupActor {
    type Result = AtomicResponse<Self, Result<u64, GroupError>>;

    fn handle(
        &mut self,
        DsRequest(msg): JoinConnectionGroup,
        _ctx: &mut Self::Context,
    ) -> Self::Result {
        let applied = (|| {
            let mut opened = self.open(&msg.ear_key)?;
            if !opened.state.connection_group {
                return Err(GroupError::NotJoinable);
            }
            let applied = self.apply_commit(&mut opened, &msg.commit, &msg.group_info, true)?;
            let joiner = applied
                .joiner
                .ok_or_else(|| invalid("no joiner in the external commit"))?;
            opened.state.members.insert(joiner, msg.joiner.clone());
            // From now on the group holds two users' clients: no further responder joins.
            opened.state.connection_group = false;
            self.store_commit(&msg.ear_key, opened, applied, msg.commit, None)
        })();
        self.fan_out(applied)
    }
}
