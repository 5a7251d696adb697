//! The DS group actor: one per group, owning that group's public MLS state.
//!
//! The state is stored only encrypted under the group-state EAR key, which members send with
//! every request and the server never keeps; without it the DS cannot even read its own record.
//! Commits arrive as MLS public messages: the actor validates each against the public group
//! state (`openmls::PublicGroup`), so a stale or forged commit is refused, and only one commit
//! per epoch can win. Members are reached through sealed queue references that only the QS can
//! open. Each request is handled atomically — the actor takes the next only once the previous
//! one's state is durable and its fan-out queued — so members receive a group's messages in the
//! order the DS accepted them, each with its sequence number ([`ledger`]). A request repeated
//! with the same operation id is answered from the ledger and changes nothing. Each request
//! message is its protocol request body ([`DsRequest`]).

mod cache;
mod delivery;
mod expiry;
mod external;
mod handshake;
pub mod ledger;
mod members;

use std::{collections::BTreeMap, sync::RwLock, time::Duration};

use cache::{Cached, KeyDigest, MessageView};
pub use delivery::Delivery;
pub use expiry::ExpireIdle;
use handshake::Applied;
use ledger::{digest_of, Fanout, Ledger, Outcome, Seen};

use actix::prelude::*;
use openmls::prelude::{GroupId, PublicGroup};
use openmls_memory_storage::MemoryStorage;
use openmls_rust_crypto::RustCrypto;
use serde::{Deserialize, Serialize};

use roost_protocol::{
    codec,
    connection::EarKey,
    ds::{self, Accepted, Committed, ExternalCommitInfo, MemberEntry, SealedQueueRef},
    OpId, VerifyingKey,
};
use roost_storage::{Durability, GroupStore, StorageError, Update, UsedReference};

use crate::{
    activity::ActivityRecorder,
    pool::{pooled_actor, pooled_messages, Membership, Pooled},
};

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("no such group")]
    UnknownGroup,
    #[error(
        "the group was deleted after it took no request for {idle_secs} seconds \
         (retention.idle_groups_secs)"
    )]
    Expired { idle_secs: u64 },
    #[error("a group with this id exists")]
    GroupExists,
    #[error("the group-state key is wrong")]
    WrongKey,
    #[error("the message does not prove its sender a member of the group's current epoch")]
    NotAMember,
    #[error("the group has moved past this commit's epoch; fetch its messages and retry")]
    StaleEpoch,
    #[error("this connection group no longer accepts a joiner")]
    NotJoinable,
    #[error("invalid MLS message: {0}")]
    Invalid(String),
    #[error("the group would have more than {0} members (limits.members_per_group)")]
    GroupFull(usize),
    #[error(
        "the group's state would take {size} bytes, more than the {limit} this server keeps for \
         a group (limits.group_state_bytes)"
    )]
    StateTooLarge { size: usize, limit: usize },
    #[error("this operation id was used before for a different request")]
    OperationReused,
    #[error(
        "a one-time KeyPackage in this commit added its owner to a group before; claim a new one"
    )]
    KeyPackageUsed,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

fn invalid(what: impl std::fmt::Display) -> GroupError {
    GroupError::Invalid(what.to_string())
}

#[derive(Clone)]
pub struct GroupDeps {
    pub groups: GroupStore,
    pub durability: Durability,
    pub delivery: Delivery,
    /// The most members a group may have.
    pub max_members: usize,
    /// The most bytes a group's sealed state may take.
    pub max_state_bytes: usize,
    /// When each group last took a request, for the retention sweep.
    pub activity: ActivityRecorder,
    /// How long a group may take no request before the sweep deletes it.
    pub idle_groups_secs: Option<u64>,
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
    /// The current epoch's public [`ds::EpochKey`]; `None` in a group stored before epoch keys,
    /// until its next commit.
    epoch_key: Option<VerifyingKey>,
}

/// A group's state as stored before epoch keys; read, and written back in the current form.
#[derive(Deserialize)]
struct GroupStateBeforeEpochKeys {
    mls: Vec<(Vec<u8>, Vec<u8>)>,
    group_info: Vec<u8>,
    members: BTreeMap<u32, MemberEntry>,
    connection_group: bool,
}

impl GroupState {
    fn decode(plain: &[u8]) -> Result<GroupState, StorageError> {
        codec::decode(plain)
            .or_else(
                |e| match codec::decode::<GroupStateBeforeEpochKeys>(plain) {
                    Ok(old) => Ok(GroupState {
                        mls: old.mls,
                        group_info: old.group_info,
                        members: old.members,
                        connection_group: old.connection_group,
                        epoch_key: None,
                    }),
                    Err(_) => Err(e),
                },
            )
            .map_err(|e| StorageError::Corrupt(format!("group state: {e}")))
    }
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
    /// The ledger and the state's message view as last written (see [`cache`]).
    cache: Option<Cached>,
    membership: Membership<GroupActor>,
}

impl Pooled for GroupActor {
    type Key = Vec<u8>;
    type Deps = GroupDeps;
    const KIND: &'static str = "group";

    fn new(group_id: Vec<u8>, deps: &GroupDeps, membership: Membership<Self>) -> Self {
        GroupActor {
            group_id,
            deps: deps.clone(),
            crypto: RustCrypto::default(),
            cache: None,
            membership,
        }
    }

    fn membership(&mut self) -> &mut Membership<Self> {
        &mut self.membership
    }
}

pooled_actor!(GroupActor);
pooled_messages!(GroupActor: CreateGroup, Commit, SendMessage, GetExternalCommitInfo, JoinConnectionGroup, Rejoin, ExpireIdle);

fn snapshot(storage: &MemoryStorage) -> Vec<(Vec<u8>, Vec<u8>)> {
    let values = storage.values.read().unwrap_or_else(|p| p.into_inner());
    let mut pairs: Vec<_> = values.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    pairs.sort();
    pairs
}

/// A state-changing request done: what to store, answer and send on.
struct Done<T> {
    answer: T,
    outcome: Outcome,
    /// The group's new state, sealed; `None` if the request left it as it was.
    state: Option<Vec<u8>>,
    /// What goes out; it took the ledger's next sequence number.
    fanout: Option<Fanout>,
    /// References of the one-time KeyPackages it added, recorded with it.
    one_time: Vec<(Vec<u8>, UsedReference)>,
    /// The group-state key the group is kept under from now on, if the request brought a new
    /// one.
    rekeyed: Option<EarKey>,
    /// What an application message needs of the state after this request; `None` if the
    /// request left the state as it was.
    view: Option<MessageView>,
}

/// A request handled: its writes are made; what is left is to make them durable, hand on
/// the fan-outs (any a crash left undelivered first), record that, and answer.
struct Handled<T> {
    answer: Result<T, GroupError>,
    wrote: bool,
    fanouts: Vec<Fanout>,
    /// The ledger once the fan-outs are delivered, sealed.
    delivered: Option<Vec<u8>>,
}

impl<T> Handled<T> {
    fn failed(e: GroupError) -> Self {
        Handled {
            answer: Err(e),
            wrote: false,
            fanouts: Vec::new(),
            delivered: None,
        }
    }
}

impl GroupActor {
    /// Why the group is not there: deleted for being idle, or never created.
    fn missing(&self) -> GroupError {
        match (
            self.deps.groups.expired_at(&self.group_id),
            self.deps.idle_groups_secs,
        ) {
            (Ok(Some(_)), Some(idle_secs)) => GroupError::Expired { idle_secs },
            (Err(e), _) => e.into(),
            _ => GroupError::UnknownGroup,
        }
    }

    fn open(&self, ear_key: &EarKey) -> Result<Opened, GroupError> {
        let ciphertext = self
            .deps
            .groups
            .get(&self.group_id)?
            .ok_or_else(|| self.missing())?;
        let plain = ear_key
            .decrypt(&state_context(&self.group_id), &ciphertext)
            .map_err(|_| GroupError::WrongKey)?;
        let state = GroupState::decode(&plain)?;
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

    /// The state sealed under `ear_key`, if it is within the size a group may take (what a
    /// group grows by — members, kept proposals, a GroupInfo — is each checked elsewhere; this
    /// bounds them together).
    fn seal(&self, ear_key: &EarKey, opened: &mut Opened) -> Result<Vec<u8>, GroupError> {
        opened.state.mls = snapshot(&opened.storage);
        let sealed = ear_key.encrypt(
            &state_context(&self.group_id),
            &codec::encode(&opened.state),
        );
        let limit = self.deps.max_state_bytes;
        if sealed.len() > limit {
            return Err(GroupError::StateTooLarge {
                size: sealed.len(),
                limit,
            });
        }
        Ok(sealed)
    }

    /// The state after an applied commit, sealed under `ear_key`, and the commit's fan-out at
    /// `seq`.
    fn store_commit(
        &self,
        ear_key: &EarKey,
        mut opened: Opened,
        applied: Applied,
        commit: Vec<u8>,
        welcome: Option<(Vec<SealedQueueRef>, ds::WelcomeBundle)>,
        seq: u64,
    ) -> Result<Done<Committed>, GroupError> {
        let answer = Committed {
            epoch: applied.epoch,
            seq,
        };
        Ok(Done {
            answer,
            outcome: Outcome::Committed {
                epoch: answer.epoch,
                seq,
            },
            view: Some(MessageView::of(&opened)),
            state: Some(self.seal(ear_key, &mut opened)?),
            rekeyed: None,
            fanout: Some(Fanout {
                seq,
                message: commit,
                recipients: applied.recipients,
                welcome,
            }),
            one_time: applied
                .added
                .iter()
                .filter_map(|added| {
                    let not_after = added.package.one_time_until?;
                    let used = UsedReference {
                        tag: [0; 32],
                        not_after,
                    };
                    Some((added.package.reference.as_slice().to_vec(), used))
                })
                .collect(),
        })
    }

    /// Handles a state-changing request with operation id `op`: a repeat is answered from the
    /// ledger (`repeat` reads the remembered outcome); a new one is done by `apply`, given the
    /// sequence number its fan-out takes, and stored with its ledger entry in one write. A
    /// request that brings a new key (`new_key`) may find the group under it already: a repeat
    /// of itself.
    fn handle_op<T, B: Serialize>(
        &mut self,
        ear_key: &EarKey,
        new_key: Option<&EarKey>,
        op: OpId,
        body: &B,
        repeat: fn(Outcome) -> Option<T>,
        apply: impl FnOnce(&Self, u64) -> Result<Done<T>, GroupError>,
    ) -> Handled<T> {
        let mut key = ear_key.clone();
        let cached = [Some(ear_key), new_key]
            .into_iter()
            .flatten()
            .find_map(|under| Some((self.cached(under)?.ledger.clone(), under.clone())));
        let opened = match cached {
            Some((ledger, under)) => {
                key = under;
                Ok(ledger)
            }
            None => self.read_ledger(ear_key, new_key).map(|(ledger, under)| {
                key = under;
                ledger
            }),
        };
        let mut ledger = match opened {
            Ok(ledger) => ledger,
            Err(e) => return Handled::failed(e),
        };
        let view_before = self.cached(&key).and_then(|c| c.view.clone());
        let digest = digest_of(body);
        let (answer, wrote) = match ledger.seen(&op, &digest) {
            Ok(Seen::Repeat(outcome)) => {
                (repeat(outcome).ok_or(GroupError::OperationReused), false)
            }
            Ok(Seen::New) => match apply(self, ledger.next_seq()) {
                Ok(done) => {
                    ledger.record(op, digest, done.outcome, done.fanout);
                    if let Some(rekeyed) = &done.rekeyed {
                        key = rekeyed.clone();
                    }
                    let sealed = ledger.seal(&self.group_id, &key);
                    let view = match done.state.is_some() {
                        true => done.view,
                        false => done.view.or(view_before),
                    };
                    let groups = &self.deps.groups;
                    match groups.update(&self.group_id, done.state, sealed, &done.one_time) {
                        Ok(Update::Done) => {
                            self.cache = Some(Cached {
                                key: KeyDigest::of(&key),
                                ledger: ledger.clone(),
                                view,
                            });
                            (Ok(done.answer), true)
                        }
                        Ok(Update::KeyPackageUsed) => {
                            return Handled::failed(GroupError::KeyPackageUsed)
                        }
                        Err(e) => {
                            self.cache = None;
                            return Handled::failed(e.into());
                        }
                    }
                }
                Err(e) => (Err(e), false),
            },
            Err(e) => (Err(e), false),
        };
        // This request's fan-out, after any a crash left undelivered.
        let fanouts = ledger.take_undelivered();
        let delivered = (!fanouts.is_empty()).then(|| ledger.seal(&self.group_id, &key));
        Handled {
            answer,
            wrote,
            fanouts,
            delivered,
        }
    }

    /// The stored ledger, opened under `ear_key` — or under `new_key`, if the group is kept
    /// under that already (the request is a repeat of the one that brought it) — and the key
    /// it opened under.
    fn read_ledger(
        &self,
        ear_key: &EarKey,
        new_key: Option<&EarKey>,
    ) -> Result<(Ledger, EarKey), GroupError> {
        let stored = self.deps.groups.ledger(&self.group_id)?;
        match (
            Ledger::open(&self.group_id, ear_key, stored.clone()),
            new_key,
        ) {
            (Err(GroupError::WrongKey), Some(new_key)) => {
                let ledger = Ledger::open(&self.group_id, new_key, stored)?;
                Ok((ledger, new_key.clone()))
            }
            (opened, _) => Ok((opened?, ear_key.clone())),
        }
    }

    /// Hands on what `handled` sends, in order, makes what it wrote durable, then records that
    /// the fan-outs went out and answers. The actor takes its next request only after that, so
    /// members receive a group's messages in the order of their sequence numbers.
    ///
    /// The fan-out may begin before the request's own write is durable: no member can read a
    /// delivery before the flush that makes it durable (the QS shows a queue's new messages
    /// only then, and the federation actor relays only what its outbox holds durably), and that
    /// flush began after this write, so it carries it — one flush for both, not one each
    /// ([`Durability::persist_since`]). A fan-out that met no flush (none of it stored) gets
    /// one of its own before the answer.
    fn finish<T: Send + 'static>(
        &self,
        handled: Handled<T>,
    ) -> AtomicResponse<Self, Result<T, GroupError>> {
        let (group_id, groups, durability, delivery) = (
            self.group_id.clone(),
            self.deps.groups.clone(),
            self.deps.durability.clone(),
            self.deps.delivery.clone(),
        );
        let written = handled.wrote.then(|| durability.written());
        if handled.wrote {
            self.deps.activity.saw(&self.group_id);
        }
        AtomicResponse::new(Box::pin(
            async move {
                let mut delivered = true;
                for fanout in handled.fanouts {
                    delivered &= delivery.fan_out(&group_id, fanout).await;
                }
                if let Some(written) = written {
                    if let Err(e) = durability.persist_since(written).await {
                        return (Err(e.into()), false);
                    }
                }
                // Something failed that is worth retrying: the ledger keeps every fan-out as
                // undelivered, and the group's next request hands them on again (copies that
                // did arrive come twice, with their sequence numbers, which clients skip).
                let mut recorded = false;
                if let Some(ledger) = handled.delivered.filter(|_| delivered) {
                    // Not waited for: if it is lost, the fan-outs go out again, with the same
                    // sequence numbers, and clients skip what they have.
                    match groups.update(&group_id, None, ledger, &[]) {
                        Ok(_) => recorded = true,
                        Err(e) => tracing::warn!(error = %e, "a group's delivered fan-outs could not be recorded"),
                    }
                }
                (handled.answer, recorded)
            }
            .into_actor(self)
            .map(|(answer, recorded), actor, _ctx| {
                // The store says the fan-outs went out: so does the cache.
                if let Some(cache) = actor.cache.as_mut().filter(|_| recorded) {
                    cache.ledger.take_undelivered();
                }
                answer
            }),
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
    /// A member's commit; answers the new epoch and the commit's sequence number.
    Commit = ds::CommitRequest => Committed;
    /// An application message for every member; answers its sequence number.
    SendMessage = ds::SendMessage => Accepted;
    /// What a joiner needs for an external commit.
    GetExternalCommitInfo = ds::EarKeyProof => ExternalCommitInfo;
    /// The responder's external commit into a connection group: succeeds once; answers like
    /// a commit.
    JoinConnectionGroup = ds::JoinConnectionGroup => Committed;
    /// A member's external commit replacing its own leaf (it fell out of step); answers like
    /// a commit.
    Rejoin = ds::Rejoin => Committed;
}

fn committed(outcome: Outcome) -> Option<Committed> {
    match outcome {
        Outcome::Committed { epoch, seq } => Some(Committed { epoch, seq }),
        _ => None,
    }
}
