//! What a Privacy Pass token costs (2048-bit blind RSA, RFC 9578 type 0x0002), beside the
//! Ed25519 request-signature check every signed request costs (the floor):
//! the issuer's blind signature per token (a private-key operation, with its check), any
//! server's verification of a spent token (a public-key operation), the spent record (a sled
//! compare-and-swap), and the client's blinding and finalizing.
//!
//! Run with `cargo bench --bench tokens`.

use criterion::{criterion_group, criterion_main, Criterion};
use roost_protocol::{
    auth::RequestSignature,
    ids::now_millis,
    tokens::{self, IssuerSecretKey, TokenChallenge},
    ClientId, SigningKey, Timestamp,
};
use roost_storage::Store;

fn privacy_pass(c: &mut Criterion) {
    let secret = IssuerSecretKey::generate();
    let public = secret.public_key().clone();
    let challenge = TokenChallenge::new("a.example", "b.example");
    let (request, pending) = tokens::request_token(&public, &challenge).unwrap();
    let response = tokens::issue(&secret, &request).unwrap();
    let token = pending.finish(&public, &response).unwrap();

    let mut group = c.benchmark_group("Privacy Pass token (2048-bit blind RSA)");
    group.bench_function("issuer: blind sign one token", |b| {
        b.iter(|| tokens::issue(&secret, &request).unwrap())
    });
    group.bench_function("any server: verify a spent token", |b| {
        b.iter(|| token.verify(&challenge, &public).unwrap())
    });
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let spent = store.tokens().unwrap();
    let until = Timestamp::now().plus_secs(3600);
    let mut nonce = 0u64;
    group.bench_function("any server: record it spent (sled CAS, no flush)", |b| {
        b.iter(|| {
            nonce += 1;
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&nonce.to_be_bytes());
            spent.spend(until, &token.key_id, &key, &[0; 16]).unwrap()
        })
    });
    group.bench_function(
        "round: client blinds, issuer signs, client finalizes",
        |b| {
            b.iter(|| {
                let (request, pending) = tokens::request_token(&public, &challenge).unwrap();
                let response = tokens::issue(&secret, &request).unwrap();
                pending.finish(&public, &response).unwrap()
            })
        },
    );
    let key = SigningKey::generate();
    let body = vec![1u8; 256];
    let now = now_millis();
    let signature = RequestSignature::sign(&key, ClientId::random(), "POST", "/x", &body, now);
    let verifying_key = key.verifying_key();
    group.bench_function("floor: Ed25519 request signature verify", |b| {
        b.iter(|| {
            signature
                .verify(&verifying_key, "POST", "/x", &body, now)
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, privacy_pass);
criterion_main!(benches);
