//! Micro-benches of the hot paths, each beside its floor where one exists:
//! durable queue append (store + group-commit fsync) against raw sled insert + flush,
//! request-signature verification, and credential-chain verification.
//!
//! Run with `cargo bench --bench core`.

use criterion::{criterion_group, criterion_main, Criterion};

use roost_protocol::{
    api::{QueueItem, QueueMessage},
    auth::RequestSignature,
    credentials::Validity,
    ids::now_millis,
    AsCredential, AsCredentials, AsIntermediateCredential, ClientCredential, ClientId,
    HpkeSecretKey, SigningKey, Timestamp,
};
use roost_storage::Store;

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
    let mut seq = 1;
    let mut group = c.benchmark_group("durable write");
    group.bench_function("queue append: seal + store + fsync", |b| {
        b.iter(|| {
            let message = QueueMessage::seal(&key, &client, seq, &item).unwrap();
            queues.append(&client, &message, None).unwrap();
            store.persist_blocking().unwrap();
            seq += 1;
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

criterion_group!(benches, durable_queue_append, signatures);
criterion_main!(benches);
