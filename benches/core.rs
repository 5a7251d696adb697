//! Micro-benches of the hot paths, each beside its floor where one exists:
//! durable queue append (store + group-commit fsync) against raw sled insert + flush;
//! a queue actor's durable enqueue + fetch + ack round against the same store calls made
//! directly; codec encode and decode of a sealed `QueueMessage` and of a 1 KiB
//! `GroupDelivery::Message`, against copying the encoded bytes; HPKE seal and open of a
//! connection-establishment package, against raw HPKE of the same number of bytes;
//! request-signature verification; credential-chain verification; and the DS group actor
//! validating, storing and fanning out one self-update commit in a 2- and a 100-member group,
//! and one application message in a 10- and a 100-member group; sealing a queued message under
//! its queue's key chain against one HPKE seal.
//!
//! Run with `cargo bench --bench core`.

use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use actix::{Addr, System};
use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::future::BoxFuture;
use openmls::prelude::{LeafNodeParameters, MlsGroup, MlsMessageOut, OpenMlsProvider};

use roost_actors::{
    federation::{FederationActor, FederationDeps, RelayError, RetryPolicy, Transport},
    federation_policy::FederationPolicy,
    group::{self, Delivery, DsRequest, GroupActor, GroupDeps},
    qs::{QueueRefs, SealedDelivery},
    queue::{self, Enqueue, Fetch, QueueDeps, QueueId},
    Pool, QueueActor, Route,
};
use roost_protocol::{
    api::{QueueItem, QueueMessage},
    auth::RequestSignature,
    codec::{decode, encode},
    connection::{
        ConnectionEstablishmentBody, ConnectionEstablishmentPackage, ConnectionPackage, EarKey,
    },
    credentials::Validity,
    ds::{
        self as protocol_ds, GroupDelivery, MemberCard, MemberEntry, SealedQueueRef, WelcomeBundle,
    },
    federation::{DomainPolicy, FederatedDelivery, RelayOutcome},
    ids::now_millis,
    queue::QueueChain,
    AsCredential, AsCredentials, AsIntermediateCredential, ClientCredential, ClientId, Domain,
    HpkePublicKey, HpkeSecretKey, SigningKey, Timestamp, UserName,
};
use roost_storage::{AccountStore, ClientRecord, EncodedMessage, Store, UserRecord};

/// Long enough that no pooled actor retires during a bench.
const IDLE: Duration = Duration::from_secs(3600);
const DOMAIN: &str = "bench.test";

fn durable_queue_append(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let queues = store.queues().unwrap();
    let client = ClientId::random();
    let (_, key) = HpkeSecretKey::generate();
    let item = QueueItem::FromOwnClient {
        sender: client,
        payload: vec![7; 256],
    };
    let mut chain = QueueChain::start(1);
    let mut group = c.benchmark_group("durable write");
    group.bench_function("queue append: seal + store + fsync", |b| {
        b.iter(|| {
            let starts = (chain.seq() == 1).then_some(&key);
            let message = QueueMessage::seal(&chain, starts, &client, &item).unwrap();
            queues
                .append(&client, EncodedMessage::new(&message), None)
                .unwrap();
            store.persist_blocking().unwrap();
            chain = chain.next();
        })
    });
    let raw = sled::open(dir.path().join("raw")).unwrap();
    let mut n = 0u64;
    group.bench_function("floor: raw sled insert + flush", |b| {
        b.iter(|| {
            raw.insert(n.to_be_bytes(), vec![7u8; 300]).unwrap();
            raw.flush().unwrap();
            n += 1;
        })
    });
    group.finish();
}

/// A registered client: what the AS would have stored, written straight into the store.
struct BenchClient {
    id: ClientId,
    key: SigningKey,
    credential: ClientCredential,
}

fn register(accounts: &AccountStore, local: &str) -> BenchClient {
    let user: UserName = format!("{local}@{DOMAIN}").parse().unwrap();
    let (id, key) = (ClientId::random(), SigningKey::generate());
    let (_, queue_key) = HpkeSecretKey::generate();
    // The issuer does not matter: nothing on these paths checks the chain.
    let credential = ClientCredential::issue(
        user.clone(),
        id,
        key.verifying_key(),
        Validity::starting_now(3600),
        &SigningKey::generate(),
    );
    let now = Timestamp::now();
    accounts
        .create_user(
            &user,
            &UserRecord {
                password_hash: String::new(),
                clients: vec![id],
                created_at: now,
            },
            &ClientRecord {
                credential: credential.clone(),
                queue_key,
                added_at: now,
            },
            None,
        )
        .unwrap();
    BenchClient {
        id,
        key,
        credential,
    }
}

fn queue_deps(store: &Store) -> QueueDeps {
    QueueDeps {
        queues: store.queues().unwrap(),
        connection_queues: store.connection_queues().unwrap(),
        accounts: store.accounts().unwrap(),
        durability: store.durability().clone(),
        limits: no_limits(),
        closing: Default::default(),
        idle_after: IDLE,
        // As shipped: queues are dated for retention.
        retention: roost_actors::retention::RetentionPolicy {
            messages_secs: Some(30 * 86_400),
            idle_clients_secs: Some(90 * 86_400),
            idle_groups_secs: Some(365 * 86_400),
        }
        .messages(),
    }
}

/// The queue path itself is measured, not its quotas.
fn no_limits() -> queue::QueueLimits {
    let kind = queue::KindLimits {
        message_bytes: usize::MAX,
        max_messages: u64::MAX,
        max_bytes: u64::MAX,
        settings: queue::LimitSettings {
            message_bytes: "-",
            max_messages: "-",
            max_bytes: "-",
        },
    };
    queue::QueueLimits {
        messages: kind,
        connections: kind,
        long_polls: usize::MAX,
    }
}

/// One durable round through the queue actor: enqueue (answered once durable), fetch it back,
/// ack it (answered once durable).
async fn queue_round(queues: &Addr<Pool<QueueActor>>, id: QueueId, item: &QueueItem) {
    let seq = queues
        .send(Route {
            key: id,
            message: Enqueue(item.clone()),
        })
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let batch = queues
        .send(Route {
            key: id,
            message: Fetch {
                from: seq,
                max: 1,
                wait: Duration::ZERO,
                ack: None,
            },
        })
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(batch.messages.len(), 1);
    queues
        .send(Route {
            key: id,
            message: queue::Ack { up_to: seq },
        })
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

fn queue_actor_round(c: &mut Criterion) {
    let system = System::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let accounts = store.accounts().unwrap();
    let alice = register(&accounts, "alice");
    let item = QueueItem::FromOwnClient {
        sender: alice.id,
        payload: vec![7; 256],
    };
    let queues = system.block_on(async { Pool::<QueueActor>::start(queue_deps(&store), IDLE) });
    let id = QueueId::messages(alice.id);

    let mut group = c.benchmark_group("queue round (durable)");
    group.bench_function("actor: enqueue + fetch + ack", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    queue_round(&queues, id, &item).await;
                }
                start.elapsed()
            })
        })
    });

    // The same store work without the actor: look the key up, seal, append, fsync, read the
    // message back, ack, fsync.
    let bob = register(&accounts, "bob");
    let direct = store.queues().unwrap();
    let mut chain = QueueChain::start(direct.next_seq(&bob.id).unwrap());
    group.bench_function("floor: the same store calls, direct", |b| {
        b.iter(|| {
            let seq = chain.seq();
            let message = QueueMessage::seal(&chain, None, &bob.id, &item).unwrap();
            direct
                .append(&bob.id, EncodedMessage::new(&message), None)
                .unwrap();
            store.persist_blocking().unwrap();
            let (messages, _) = direct.range(&bob.id, seq, 1, usize::MAX).unwrap();
            assert_eq!(messages.len(), 1);
            direct.ack(&bob.id, seq).unwrap();
            store.persist_blocking().unwrap();
            chain = chain.next();
        })
    });
    group.finish();
}

fn codec(c: &mut Criterion) {
    let client = ClientId::random();
    let item = QueueItem::FromOwnClient {
        sender: client,
        payload: vec![7; 256],
    };
    let chain = QueueChain::start(42);
    let message = QueueMessage::seal(&chain, None, &client, &item).unwrap();
    let message_bytes = encode(&message);
    let delivery = GroupDelivery::Message {
        seq: 1,
        group_id: vec![3; 16],
        message: vec![9; 1024],
    };
    let delivery_bytes = encode(&delivery);

    let mut group = c.benchmark_group("codec");
    group.bench_function("encode QueueMessage (256 B item)", |b| {
        b.iter(|| encode(black_box(&message)))
    });
    group.bench_function("decode QueueMessage (256 B item)", |b| {
        b.iter(|| decode::<QueueMessage>(black_box(&message_bytes)).unwrap())
    });
    group.bench_function("encode GroupDelivery::Message (1 KiB)", |b| {
        b.iter(|| encode(black_box(&delivery)))
    });
    group.bench_function("decode GroupDelivery::Message (1 KiB)", |b| {
        b.iter(|| decode::<GroupDelivery>(black_box(&delivery_bytes)).unwrap())
    });
    group.bench_function("floor: copy the encoded GroupDelivery", |b| {
        b.iter(|| black_box(&delivery_bytes).to_vec())
    });
    group.finish();
}

/// What sealing one queued message costs: under the queue's key chain, as the QS does, against
/// one HPKE seal per message, as it did before chains.
fn queue(c: &mut Criterion) {
    let client = ClientId::random();
    let (secret, key) = HpkeSecretKey::generate();
    let item = QueueItem::FromOwnClient {
        sender: client,
        payload: vec![7; 256],
    };
    let mut group = c.benchmark_group("queue sealing (256 B item)");
    let mut chain = QueueChain::start(1);
    group.bench_function("chain: seal and step", |b| {
        b.iter(|| {
            let message = QueueMessage::seal(&chain, None, &client, black_box(&item)).unwrap();
            chain = chain.next();
            message
        })
    });
    group.bench_function("before chains: one HPKE seal", |b| {
        b.iter(|| QueueMessage::seal_hpke(&key, &client, 1, black_box(&item)).unwrap())
    });
    let sender = QueueChain::start(1);
    let chained = QueueMessage::seal(&sender, None, &client, &item).unwrap();
    group.bench_function("chain: open (the client)", |b| {
        b.iter(|| {
            let mut mine = Some(sender.clone());
            black_box(&chained)
                .open(&secret, &client, &mut mine)
                .unwrap()
        })
    });
    group.finish();
}

fn connection_requests(c: &mut Criterion) {
    let validity = Validity::starting_now(3600);
    let issuer = SigningKey::generate();
    let party = |user: &str| {
        let key = SigningKey::generate();
        let credential = ClientCredential::issue(
            user.parse().unwrap(),
            ClientId::random(),
            key.verifying_key(),
            validity,
            &issuer,
        );
        (key, credential)
    };
    let (alice_key, alice) = party("alice@a.test");
    let (bob_key, bob) = party("bob@b.test");
    let (secret, public) = HpkeSecretKey::generate();
    let package = ConnectionPackage::new(bob.clone(), &bob_key, public, validity, false);
    let invitation = ConnectionEstablishmentPackage::new(
        ConnectionEstablishmentBody {
            sender_client_credential: alice,
            connection_group_id: vec![1; 16],
            group_state_ear_key: EarKey::random(),
            credential_ear_key: EarKey::random(),
            responder: bob.user().clone(),
            connection_package: package.hash(),
            initiator_profile: None,
        },
        &alice_key,
    );
    let sealed = invitation.seal(&package).unwrap();
    assert_eq!(sealed.open(&secret).unwrap(), invitation);
    // Raw HPKE of a plaintext as long as the encoded package.
    let plain = vec![5u8; encode(&invitation).len()];
    let raw = public.seal("bench", &[0; 32], &plain).unwrap();

    let mut group = c.benchmark_group("connection request (HPKE)");
    group.bench_function("seal to a connection package", |b| {
        b.iter(|| invitation.seal(black_box(&package)).unwrap())
    });
    group.bench_function("floor: raw HPKE seal of as many bytes", |b| {
        b.iter(|| public.seal("bench", &[0; 32], black_box(&plain)).unwrap())
    });
    group.bench_function("open with the package's secret key", |b| {
        b.iter(|| black_box(&sealed).open(&secret).unwrap())
    });
    group.bench_function("floor: raw HPKE open of as many bytes", |b| {
        b.iter(|| secret.open("bench", &[0; 32], black_box(&raw)).unwrap())
    });
    group.finish();
}

fn signatures(c: &mut Criterion) {
    let key = SigningKey::generate();
    let client = ClientId::random();
    let body = vec![1u8; 256];
    let now = now_millis();
    let signature = RequestSignature::sign(&key, client, "POST", "/qs/v1/x", &body, now);
    let verifying_key = key.verifying_key();
    c.bench_function("request signature verify", |b| {
        b.iter(|| {
            signature
                .verify(&verifying_key, "POST", "/qs/v1/x", &body, now)
                .unwrap()
        })
    });

    let domain: roost_protocol::Domain = "example.org".parse().unwrap();
    let (as_key, intermediate_key) = (SigningKey::generate(), SigningKey::generate());
    let validity = Validity::starting_now(3600);
    let creds = AsCredentials {
        as_credentials: vec![AsCredential::issue(domain.clone(), &as_key, validity)],
        intermediates: vec![AsIntermediateCredential::issue(
            domain,
            &intermediate_key,
            validity,
            &as_key,
        )],
    };
    let credential = ClientCredential::issue(
        "alice@example.org".parse().unwrap(),
        client,
        verifying_key,
        validity,
        &intermediate_key,
    );
    c.bench_function("credential chain verify", |b| {
        b.iter(|| creds.verify_client(&credential, Timestamp::now()).unwrap())
    });
}

/// Relays nothing: every member in these benches is local, so it is never called.
struct NoTransport;

impl Transport for NoTransport {
    fn deliver(
        &self,
        _: &Domain,
        deliveries: Vec<FederatedDelivery>,
    ) -> BoxFuture<'static, Result<Vec<RelayOutcome>, RelayError>> {
        let outcomes = vec![RelayOutcome::Queued; deliveries.len()];
        Box::pin(async move { Ok(outcomes) })
    }
}

/// The public key of `mls`'s current epoch's membership proofs, as members derive it.
fn epoch_key(member: &MlsClient, mls: &MlsGroup) -> roost_protocol::VerifyingKey {
    let label = protocol_ds::EPOCH_KEY_EXPORTER_LABEL;
    let seed = mls
        .export_secret(member.provider.crypto(), label, &[], 32)
        .unwrap();
    protocol_ds::EpochKey::from_exported(seed.try_into().unwrap()).public()
}

#[path = "../tests/common/mls_client.rs"]
mod mls_client;
use mls_client::{config as mls_config, MlsClient, CS};

/// The DS side of the group benches: store, queue, federation and group pools.
struct Ds {
    accounts: AccountStore,
    queue_ref_key: HpkePublicKey,
    groups: Addr<Pool<GroupActor>>,
}

impl Ds {
    /// Call inside the actix system.
    fn start(store: &Store) -> Ds {
        let (queue_ref_secret, queue_ref_key) = HpkeSecretKey::generate();
        let queues = Pool::<QueueActor>::start(queue_deps(store), IDLE);
        let policy = FederationPolicy::load(
            DomainPolicy::default(),
            store.blocked_domains().unwrap(),
            store.durability().clone(),
        )
        .unwrap();
        let federation = Pool::<FederationActor>::start(
            FederationDeps {
                outbox: store.outbox().unwrap(),
                durability: store.durability().clone(),
                transport: Arc::new(NoTransport),
                retry: RetryPolicy {
                    initial: Duration::from_secs(1),
                    max: Duration::from_secs(1),
                },
                policy: policy.clone(),
                idle_after: IDLE,
                give_up_after: None,
            },
            IDLE,
        );
        let groups = Pool::<GroupActor>::start(
            GroupDeps {
                groups: store.groups().unwrap(),
                durability: store.durability().clone(),
                delivery: Delivery {
                    qs: SealedDelivery::new(
                        QueueRefs::new(DOMAIN.parse().unwrap(), queue_ref_secret),
                        queues,
                        store.durability().clone(),
                    ),
                    federation,
                    policy,
                },
                max_members: usize::MAX,
                max_state_bytes: usize::MAX,
                // As shipped: a group's activity is recorded once a day.
                activity: roost_actors::activity::ActivityRecorder::new(
                    store.groups().unwrap().activity().clone(),
                    86_400,
                ),
                idle_groups_secs: Some(365 * 86_400),
                idle_after: IDLE,
            },
            IDLE,
        );
        Ds {
            accounts: store.accounts().unwrap(),
            queue_ref_key,
            groups,
        }
    }

    /// A registered client's member entry: its queue sealed to this QS, and its card.
    fn entry(
        &self,
        client: &BenchClient,
        leaf_key: &[u8],
        group_id: &[u8],
        credentials: &EarKey,
    ) -> MemberEntry {
        let domain: Domain = DOMAIN.parse().unwrap();
        let card = MemberCard::new(client.credential.clone(), &client.key, leaf_key);
        MemberEntry {
            queue: SealedQueueRef::seal(domain, &self.queue_ref_key, &client.id).unwrap(),
            encrypted_credential: credentials.encrypt(group_id, &encode(&card)),
        }
    }
}

/// A DS group of `size` members, and the creator's local MLS state, kept in step with the DS.
struct BenchGroup {
    group_id: Vec<u8>,
    ear_key: EarKey,
    committer: MlsClient,
    mls: MlsGroup,
}

impl BenchGroup {
    /// Creates the group on the DS and adds `size - 1` members in one commit. Every member is
    /// a registered client, so fan-out really seals and stores into its queue (as in
    /// production), rather than stopping at an unknown queue.
    async fn create(ds: &Ds, size: usize) -> BenchGroup {
        let (ear_key, credentials) = (EarKey::random(), EarKey::random());
        let committer = MlsClient::new();
        let mut mls = MlsGroup::new(
            &committer.provider,
            &committer.signer,
            &mls_config(),
            committer.credential.clone(),
        )
        .unwrap();
        let group_id = mls.group_id().as_slice().to_vec();
        // Names unique per group: several groups of one size share the store.
        let prefix = format!("g{}", hex::encode(&group_id[..4]));
        let creator = register(&ds.accounts, &format!("{prefix}-m0"));
        let group_info = mls
            .export_group_info(committer.provider.crypto(), &committer.signer, true)
            .unwrap()
            .to_bytes()
            .unwrap();
        ds.groups
            .send(Route {
                key: group_id.clone(),
                message: DsRequest(protocol_ds::CreateGroup {
                    op: roost_protocol::OpId::random(),
                    group_id: group_id.clone(),
                    ear_key: ear_key.clone(),
                    group_info,
                    epoch_key: epoch_key(&committer, &mls),
                    creator: ds.entry(&creator, committer.signer.public(), &group_id, &credentials),
                    connection_group: false,
                }),
            })
            .await
            .unwrap()
            .unwrap()
            .unwrap();

        let (mut key_packages, mut added) = (Vec::new(), Vec::new());
        for i in 1..size {
            let member = MlsClient::new();
            let client = register(&ds.accounts, &format!("{prefix}-m{i}"));
            let entry = ds.entry(&client, member.signer.public(), &group_id, &credentials);
            key_packages.push(member.key_package_naming(CS, encode(&entry.queue), false));
            added.push(entry);
        }
        let (commit, welcome, _) = mls
            .add_members(&committer.provider, &committer.signer, &key_packages)
            .unwrap();
        mls.merge_pending_commit(&committer.provider).unwrap();
        let group_info = mls
            .export_group_info(committer.provider.crypto(), &committer.signer, true)
            .unwrap()
            .to_bytes()
            .unwrap();
        let epoch = ds
            .groups
            .send(Route {
                key: group_id.clone(),
                message: DsRequest(protocol_ds::CommitRequest {
                    op: roost_protocol::OpId::random(),
                    ear_key: ear_key.clone(),
                    commit: commit.to_bytes().unwrap(),
                    group_info,
                    added,
                    epoch_key: epoch_key(&committer, &mls),
                    rekey: None,
                    welcome: Some(WelcomeBundle {
                        group_id: group_id.clone(),
                        welcome: welcome.to_bytes().unwrap(),
                        encrypted_keys: vec![],
                    }),
                }),
            })
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(epoch.epoch, 1);
        assert_eq!(mls.members().count(), size);
        BenchGroup {
            group_id,
            ear_key,
            committer,
            mls,
        }
    }

    /// The creator's next self-update, as the DS receives it; pending until [`Self::merge`].
    fn self_update(&mut self) -> group::Commit {
        let (commit, _, group_info) = self
            .mls
            .self_update(
                &self.committer.provider,
                &self.committer.signer,
                LeafNodeParameters::default(),
            )
            .unwrap()
            .into_messages();
        let group_info: MlsMessageOut = group_info.expect("the ratchet-tree extension is on");
        DsRequest(protocol_ds::CommitRequest {
            op: roost_protocol::OpId::random(),
            ear_key: self.ear_key.clone(),
            commit: commit.to_bytes().unwrap(),
            group_info: group_info.to_bytes().unwrap(),
            added: vec![],
            welcome: None,
            // The new epoch's key exists only once the commit is merged; these benches send no
            // application messages, which alone are checked against it.
            epoch_key: roost_protocol::SigningKey::generate().verifying_key(),
            rekey: None,
        })
    }

    /// The creator's next application message, with its proof of membership, as the DS
    /// receives it.
    fn application_message(&mut self) -> group::SendMessage {
        let message = self
            .mls
            .create_message(&self.committer.provider, &self.committer.signer, b"hello")
            .unwrap()
            .to_bytes()
            .unwrap();
        let seed = self
            .mls
            .export_secret(
                self.committer.provider.crypto(),
                protocol_ds::EPOCH_KEY_EXPORTER_LABEL,
                &[],
                32,
            )
            .unwrap();
        let epoch = self.mls.epoch().as_u64();
        let proof = protocol_ds::EpochKey::from_exported(seed.try_into().unwrap()).prove(
            &self.group_id,
            epoch,
            &message,
        );
        DsRequest(protocol_ds::SendMessage {
            op: roost_protocol::OpId::random(),
            ear_key: self.ear_key.clone(),
            message,
            proof,
        })
    }

    /// After the DS accepted the commit.
    fn merge(&mut self) {
        self.mls
            .merge_pending_commit(&self.committer.provider)
            .unwrap();
    }
}

fn ds_commits(c: &mut Criterion) {
    let system = System::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let ds = system.block_on(async { Ds::start(&store) });

    let mut group = c.benchmark_group("DS commit");
    // A 100-member round takes milliseconds; criterion's minimum keeps the run short.
    group.sample_size(10);
    for size in [2, 100] {
        let mut bench_group = system.block_on(BenchGroup::create(&ds, size));
        let name = format!("{size} members: validate + store + fan out a self-update");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                system.block_on(async {
                    // Only the DS's work is timed; the committer's is not.
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        let commit = bench_group.self_update();
                        let start = Instant::now();
                        ds.groups
                            .send(Route {
                                key: bench_group.group_id.clone(),
                                message: commit,
                            })
                            .await
                            .unwrap()
                            .unwrap()
                            .unwrap();
                        timed += start.elapsed();
                        bench_group.merge();
                    }
                    timed
                })
            })
        });
    }
    group.finish();

    // Application messages: the common case, which changes no MLS state.
    let mut group = c.benchmark_group("DS application message");
    group.sample_size(20);
    for size in [10, 100] {
        let mut bench_group = system.block_on(BenchGroup::create(&ds, size));
        let name = format!("{size} members: check + order + fan out");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                system.block_on(async {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        let message = bench_group.application_message();
                        let start = Instant::now();
                        ds.groups
                            .send(Route {
                                key: bench_group.group_id.clone(),
                                message,
                            })
                            .await
                            .unwrap()
                            .unwrap()
                            .unwrap();
                        timed += start.elapsed();
                    }
                    timed
                })
            })
        });
    }
    group.finish();
}

/// Opening a store: before sled replays its log, the log scan reads the whole data file for
/// damage sled would skip (`storage/src/log_scan.rs`).
fn store_open(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path()).unwrap().close().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        let filler = db.open_tree("bench_filler").unwrap();
        for n in 0..100_000u64 {
            filler.insert(n.to_be_bytes(), vec![n as u8; 1024]).unwrap();
            if n % 1000 == 0 {
                db.flush().unwrap();
            }
        }
        db.flush().unwrap();
    }
    let megabytes = std::fs::metadata(dir.path().join("db")).unwrap().len() >> 20;
    let mut group = c.benchmark_group(format!("store open ({megabytes} MiB data file)"));
    group.sample_size(10);
    group.bench_function("Store::open: log scan, sled, durable mark", |b| {
        b.iter(|| Store::open(dir.path()).unwrap().close().unwrap())
    });
    group.bench_function("floor: sled::open alone", |b| {
        b.iter(|| drop(sled::open(dir.path()).unwrap()))
    });
    group.finish();
}

/// A compaction: writes wait for a copy of every record (the space of deleted ones is not
/// read), then a sync and the swap. Beside it, the same records inserted one at a time into a
/// fresh sled database and flushed (the compaction batches them).
fn store_compaction(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let queues = store.queues().unwrap();
    let (kept, gone) = (ClientId::random(), ClientId::random());
    let message = |seq: u64, bytes: usize| {
        EncodedMessage::new(&QueueMessage {
            seq,
            sealing: roost_protocol::queue::Sealing::Chain {
                start: None,
                ciphertext: vec![seq as u8; bytes],
            },
        })
    };
    for seq in 1..=2_000 {
        queues.append(&kept, message(seq, 5_000), None).unwrap();
    }
    for seq in 1..=10_000 {
        queues.append(&gone, message(seq, 10_000), None).unwrap();
    }
    queues.ack(&gone, 10_000).unwrap();
    store.persist_blocking().unwrap();
    let mut group = c.benchmark_group("store compaction (10 MiB of records, 100 MiB deleted)");
    group.sample_size(10);
    group.bench_function("Store::compact: copy, sync, swap", |b| {
        b.iter(|| store.compact().unwrap())
    });
    group.bench_function("beside: the records one at a time into a fresh sled", |b| {
        b.iter(|| {
            let fresh = tempfile::tempdir().unwrap();
            let db = sled::open(fresh.path()).unwrap();
            let target = db.open_tree("copy").unwrap();
            for entry in queues.range(&kept, 1, usize::MAX, usize::MAX).unwrap().0 {
                target
                    .insert(entry.seq.to_be_bytes(), encode(&entry))
                    .unwrap();
            }
            db.flush().unwrap();
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    store_open,
    store_compaction,
    durable_queue_append,
    queue_actor_round,
    codec,
    queue,
    connection_requests,
    signatures,
    ds_commits
);
criterion_main!(benches);
