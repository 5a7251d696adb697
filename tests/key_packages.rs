//! QS key packages over real HTTP, with real openmls KeyPackages: publishing, friendship tokens,
//! claiming by token (public, rate limited), claiming one's own siblings' entries, validation,
//! and adding a claimed client to a DS group.

mod common;

use common::{
    mls::{self, create_group, Member, CS},
    Options, Raw, TestServer,
};
use openmls::prelude::*;
use openmls_rust_crypto::RustCrypto;
use roost_protocol::{
    api::{self, ClaimedKeyPackages, KeyPackageCount, MAX_PUBLISH},
    codec,
    ds::{MemberEntry, SealedQueueRef},
    key_packages::{FriendshipToken, KeyPackageEntry},
    AsCredentials, ClientId, Timestamp,
};

const fn count(remaining: u32, has_last_resort: bool) -> KeyPackageCount {
    KeyPackageCount {
        remaining,
        has_last_resort,
    }
}

/// `n` one-time entries and a last-resort entry of `member`, published; answers the count.
async fn publish(server: &TestServer, member: &Member, n: usize) -> KeyPackageCount {
    let http = server.http();
    let mut entries = Vec::new();
    for _ in 0..n {
        entries.push(member.key_package_entry(&http, server.domain()).await);
    }
    let last_resort = member.last_resort_entry(&http, server.domain()).await;
    http.publish_key_packages(&member.identity, entries, Some(last_resort))
        .await
        .decode()
}

async fn claim(http: &Raw, token: &FriendshipToken) -> Vec<KeyPackageEntry> {
    http.claim_key_packages(token)
        .await
        .decode::<ClaimedKeyPackages>()
        .entries
}

fn owners(entries: &[KeyPackageEntry]) -> Vec<ClientId> {
    let mut owners: Vec<_> = entries.iter().map(|e| e.client_id()).collect();
    owners.sort();
    owners
}

fn ids(members: &[&Member]) -> Vec<ClientId> {
    let mut ids: Vec<_> = members.iter().map(|m| m.identity.client_id()).collect();
    ids.sort();
    ids
}

/// What an adder does with a claimed entry: check it, and take out its KeyPackage.
fn verified_key_package(entry: &KeyPackageEntry, as_credentials: &AsCredentials) -> KeyPackage {
    entry.verify().expect("the entry's signature verifies");
    as_credentials
        .verify_client(&entry.client_credential, Timestamp::now())
        .expect("the credential chains to the AS");
    let MlsMessageBodyIn::KeyPackage(key_package) = mls::parse(&entry.key_package) else {
        panic!("not a key package");
    };
    key_package
        .validate(&RustCrypto::default(), ProtocolVersion::Mls10)
        .unwrap()
}

#[tokio::test]
async fn a_claim_with_the_friendship_token_returns_one_verified_entry_per_client_and_uses_up_one_time_ones(
) {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let phone = Member::register(&server, "bob").await;
    let laptop = Member::add_client(&server, "bob").await;
    for client in [&phone, &laptop] {
        assert_eq!(publish(&server, client, 2).await, count(2, true));
        assert_eq!(
            http.key_package_count(&client.identity).await,
            count(2, true)
        );
    }
    // One token per user, the same for each of its clients, and stable.
    let token = http.friendship_token(&phone.identity).await;
    assert_eq!(http.friendship_token(&laptop.identity).await, token);
    assert_eq!(http.friendship_token(&phone.identity).await, token);

    let as_credentials: AsCredentials = http
        .send("GET", api::AS_CREDENTIALS, vec![], None)
        .await
        .decode();
    let first = claim(&http, &token).await;
    assert_eq!(owners(&first), ids(&[&phone, &laptop]));
    for entry in &first {
        assert_eq!(
            verified_key_package(entry, &as_credentials).ciphersuite(),
            CS
        );
    }
    for client in [&phone, &laptop] {
        assert_eq!(
            http.key_package_count(&client.identity).await,
            count(1, true)
        );
    }
    let second = claim(&http, &token).await;
    assert_eq!(owners(&second), ids(&[&phone, &laptop]));
    assert!(second.iter().all(|e| !first.contains(e)), "served twice");
}

#[tokio::test]
async fn the_last_resort_is_served_again_and_again_once_nothing_else_is_left() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let bob = Member::register(&server, "bob").await;
    let one_time = bob.key_package_entry(&http, server.domain()).await;
    let last_resort = bob.last_resort_entry(&http, server.domain()).await;
    http.publish_key_packages(
        &bob.identity,
        vec![one_time.clone()],
        Some(last_resort.clone()),
    )
    .await
    .decode::<KeyPackageCount>();
    let token = http.friendship_token(&bob.identity).await;

    assert_eq!(claim(&http, &token).await, vec![one_time]);
    for _ in 0..3 {
        assert_eq!(claim(&http, &token).await, vec![last_resort.clone()]);
    }
    assert_eq!(http.key_package_count(&bob.identity).await, count(0, true));

    // A new last resort replaces the old one.
    let newer = bob.last_resort_entry(&http, server.domain()).await;
    http.publish_key_packages(&bob.identity, vec![], Some(newer.clone()))
        .await
        .decode::<KeyPackageCount>();
    assert_eq!(claim(&http, &token).await, vec![newer]);
}

#[tokio::test]
async fn an_unknown_or_rotated_token_is_a_404() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let bob = Member::register(&server, "bob").await;
    publish(&server, &bob, 1).await;

    let response = http.claim_key_packages(&FriendshipToken::random()).await;
    assert_eq!(
        (response.status, response.error_code().as_str()),
        (404, "unknown_friendship_token")
    );

    let old = http.friendship_token(&bob.identity).await;
    let rotated: FriendshipToken = http
        .signed(&bob.identity, "POST", api::QS_FRIENDSHIP_TOKEN, vec![])
        .await
        .decode();
    assert_ne!(rotated, old);
    assert_eq!(http.friendship_token(&bob.identity).await, rotated);
    let response = http.claim_key_packages(&old).await;
    assert_eq!(
        (response.status, response.error_code().as_str()),
        (404, "unknown_friendship_token")
    );
    assert_eq!(claim(&http, &rotated).await.len(), 1);

    // Tokens are for signed-in clients only.
    let response = http
        .send("GET", api::QS_FRIENDSHIP_TOKEN, vec![], None)
        .await;
    assert_eq!(response.status, 401);
}

#[tokio::test]
async fn own_key_packages_are_the_siblings_entries_and_not_the_callers() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let phone = Member::register(&server, "bob").await;
    let laptop = Member::add_client(&server, "bob").await;
    let tablet = Member::add_client(&server, "bob").await;
    for client in [&phone, &laptop, &tablet] {
        publish(&server, client, 1).await;
    }
    let siblings: ClaimedKeyPackages = http
        .signed(&phone.identity, "GET", api::QS_OWN_KEY_PACKAGES, vec![])
        .await
        .decode();
    assert_eq!(owners(&siblings.entries), ids(&[&laptop, &tablet]));
    // Used up like a claim.
    assert_eq!(
        http.key_package_count(&laptop.identity).await,
        count(0, true)
    );
    assert_eq!(
        http.key_package_count(&phone.identity).await,
        count(1, true)
    );
}

#[tokio::test]
async fn invalid_entries_are_refused_with_the_reason_and_nothing_of_the_request_is_stored() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let domain = server.domain();
    let alice = Member::register(&server, "alice").await;
    let laptop = Member::add_client(&server, "alice").await;
    let carol = Member::register(&server, "carol").await;
    let good = alice.key_package_entry(&http, domain).await;
    let resign = |key_package: Vec<u8>, queue: SealedQueueRef| {
        KeyPackageEntry::new(
            alice.identity.credential.clone().unwrap(),
            &alice.identity.key,
            key_package,
            queue,
            alice.mls.signer.public(),
        )
    };

    let mut bad_signature = alice.key_package_entry(&http, domain).await;
    bad_signature.signature = good.signature;
    let carols = carol.key_package_entry(&http, domain).await;
    let laptops_queue = resign(
        good.key_package.clone(),
        laptop.queue_ref(&http, domain).await,
    );
    let other_domain = resign(
        good.key_package.clone(),
        alice.queue_ref(&http, "elsewhere.test").await,
    );
    let garbage = resign(b"not a key package".to_vec(), good.queue.clone());
    let bare = {
        let MlsMessageBodyIn::KeyPackage(key_package) = mls::parse(&good.key_package) else {
            unreachable!()
        };
        use openmls::prelude::tls_codec::Serialize as _;
        resign(
            key_package.tls_serialize_detached().unwrap(),
            good.queue.clone(),
        )
    };
    let other_suite = alice
        .key_package_entry_of(
            &http,
            domain,
            Ciphersuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519,
        )
        .await;
    let cases = [
        (bad_signature, "signature does not verify"),
        (carols, "credential"),
        (laptops_queue, "queue reference"),
        (other_domain, "queue reference"),
        (garbage, "not an MLS message"),
        // Parsed as an MLSMessage, a bare KeyPackage is garbage or another kind of message.
        (bare, "MLS message"),
        (other_suite, "ciphersuite"),
    ];
    for (bad, why) in cases {
        for (entries, last_resort, which) in [
            (vec![good.clone(), bad.clone()], None, "entry 1"),
            (vec![good.clone()], Some(bad), "last-resort entry"),
        ] {
            let response = http
                .publish_key_packages(&alice.identity, entries, last_resort)
                .await;
            assert_eq!(
                (response.status, response.error_code().as_str()),
                (400, "invalid_key_package")
            );
            let message: api::ErrorBody = serde_json::from_slice(&response.body).unwrap();
            assert!(
                message.message.contains(which) && message.message.contains(why),
                "{why}: {}",
                message.message
            );
        }
    }
    assert_eq!(
        http.key_package_count(&alice.identity).await,
        count(0, false)
    );
    let response = http
        .publish_key_packages(&alice.identity, vec![good; MAX_PUBLISH + 1], None)
        .await;
    // Refused for its count, or (with this test's small body limit) for its size.
    assert!([400, 413].contains(&response.status), "{}", response.status);
}

/// The reason of a refused publication, after checking it is a 400 `invalid_key_package`.
async fn refusal(
    http: &Raw,
    member: &Member,
    entries: Vec<KeyPackageEntry>,
    last_resort: Option<KeyPackageEntry>,
) -> String {
    let response = http
        .publish_key_packages(&member.identity, entries, last_resort)
        .await;
    assert_eq!(
        (response.status, response.error_code().as_str()),
        (400, "invalid_key_package")
    );
    serde_json::from_slice::<api::ErrorBody>(&response.body)
        .unwrap()
        .message
}

#[tokio::test]
async fn a_key_package_is_published_once_so_a_one_time_package_is_handed_out_once() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let domain = server.domain();
    let bob = Member::register(&server, "bob").await;
    let first = bob.key_package_entry(&http, domain).await;

    let reason = refusal(&http, &bob, vec![first.clone(), first.clone()], None).await;
    assert!(
        reason.contains("entry 1") && reason.contains("published"),
        "{reason}"
    );
    assert_eq!(http.key_package_count(&bob.identity).await, count(0, false));
    // The same KeyPackage with another queue than the one it names.
    let elsewhere = bob.entry_of(
        mls::parse_key_package(&first.key_package),
        bob.queue_ref(&http, domain).await,
    );
    let reason = refusal(&http, &bob, vec![elsewhere], None).await;
    assert!(reason.contains("another queue"), "{reason}");

    let published = http
        .publish_key_packages(&bob.identity, vec![first.clone()], None)
        .await;
    assert_eq!(published.status, 200);
    // A retry of the same request is answered as the first was, and stores nothing twice.
    let retried = http
        .publish_key_packages(&bob.identity, vec![first.clone()], None)
        .await;
    assert_eq!(retried.decode::<KeyPackageCount>(), count(1, false));

    // Once claimed, publishing it again does not make it claimable again.
    let token = http.friendship_token(&bob.identity).await;
    assert_eq!(claim(&http, &token).await, vec![first.clone()]);
    let republished = http
        .publish_key_packages(&bob.identity, vec![first], None)
        .await;
    assert_eq!(republished.decode::<KeyPackageCount>(), count(0, false));
    assert!(claim(&http, &token).await.is_empty());
}

#[tokio::test]
async fn an_entrys_last_resort_flag_must_match_its_key_packages_extension() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let domain = server.domain();
    let bob = Member::register(&server, "bob").await;
    let one_time = bob.key_package_entry(&http, domain).await;
    let last_resort = bob.last_resort_entry(&http, domain).await;

    let reason = refusal(&http, &bob, vec![last_resort.clone()], None).await;
    assert!(
        reason.contains("entry 0") && reason.contains("last-resort"),
        "{reason}"
    );
    let reason = refusal(&http, &bob, vec![], Some(one_time.clone())).await;
    assert!(
        reason.contains("the last-resort entry") && reason.contains("lacks"),
        "{reason}"
    );
    let published = http
        .publish_key_packages(&bob.identity, vec![one_time], Some(last_resort))
        .await;
    assert_eq!(published.decode::<KeyPackageCount>(), count(1, true));
}

#[tokio::test]
async fn a_client_holds_at_most_a_thousand_entries() {
    let server = TestServer::start(Options {
        max_body_bytes: 1 << 20,
        ..Options::default()
    });
    let http = server.http();
    let alice = Member::register(&server, "alice").await;
    let template = alice.key_package_entry(&http, server.domain()).await;
    let qs_key = http
        .send("GET", api::QS_QUEUE_REF_KEY, vec![], None)
        .await
        .decode();
    // Each entry with a KeyPackage of its own (one KeyPackage is published once).
    let fresh = || {
        let queue = SealedQueueRef::seal(
            template.queue.domain.clone(),
            &qs_key,
            &alice.identity.client_id(),
        )
        .unwrap();
        alice.entry_of(alice.key_package_for(&queue), queue)
    };
    for round in 1..=10 {
        let batch = (0..MAX_PUBLISH).map(|_| fresh()).collect();
        let published: KeyPackageCount = http
            .publish_key_packages(&alice.identity, batch, None)
            .await
            .decode();
        assert_eq!(published.remaining, round * MAX_PUBLISH as u32);
    }
    let response = http
        .publish_key_packages(&alice.identity, vec![fresh()], None)
        .await;
    assert_eq!(
        (response.status, response.error_code().as_str()),
        (409, "too_many_key_packages")
    );
    assert_eq!(
        http.key_package_count(&alice.identity).await.remaining,
        1000
    );
}

#[tokio::test]
async fn free_claims_share_the_discovery_rate_limit_and_paid_ones_are_not_limited_per_address() {
    for cost in [0, 1] {
        let server = TestServer::start(Options {
            discovery_burst: 4,
            settings: vec![("ROOST_TOKENS__COSTS__KEY_PACKAGE_CLAIM", cost.to_string())],
            ..Options::default()
        });
        let http = server.http();
        let bob = Member::register(&server, "bob").await;
        publish(&server, &bob, 0).await;
        let token = http.friendship_token(&bob.identity).await;
        let mut statuses = Vec::new();
        for i in 0..6 {
            let tried = if i % 2 == 0 {
                token.clone()
            } else {
                FriendshipToken::random()
            };
            let response = http.claim_key_packages(&tried).await;
            if response.status == 429 {
                assert_eq!(response.error_code(), "rate_limited");
            }
            statuses.push(response.status);
        }
        if cost == 0 {
            assert_eq!(statuses, [200, 404, 200, 404, 429, 429]);
            // The same bucket as discovery.
            assert_eq!(http.discover(&bob.identity.user).await.status, 429);
        } else {
            // Each paid with a token (`Raw` pays): many users behind one address are not one.
            assert_eq!(statuses, [200, 404, 200, 404, 200, 404]);
            let unpaid = http.unpaid().claim_key_packages(&token).await;
            assert_eq!(unpaid.status, 401);
            assert_eq!(unpaid.error_code(), "privacy_pass_required");
        }
    }
}

#[tokio::test]
async fn a_deleted_clients_entries_are_no_longer_served() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let phone = Member::register(&server, "bob").await;
    let laptop = Member::add_client(&server, "bob").await;
    for client in [&phone, &laptop] {
        publish(&server, client, 1).await;
    }
    let response = http
        .signed(
            &phone.identity,
            "DELETE",
            &api::as_own_client(&laptop.identity.client_id()),
            vec![],
        )
        .await;
    assert_eq!(response.status, 204);
    let token = http.friendship_token(&phone.identity).await;
    assert_eq!(owners(&claim(&http, &token).await), ids(&[&phone]));
    let siblings: ClaimedKeyPackages = http
        .signed(&phone.identity, "GET", api::QS_OWN_KEY_PACKAGES, vec![])
        .await
        .decode();
    assert!(siblings.entries.is_empty());

    // Not just unserved: gone from the store.
    let mut server = server;
    assert!(server.terminate().success());
    let db = sled::open(server.store_path()).unwrap();
    let laptop_id = laptop.identity.client_id().0;
    let tree = db.open_tree("qs_key_packages").unwrap();
    assert!(!tree.is_empty(), "the phone's last resort is still there");
    for entry in tree.iter() {
        let (key, _) = entry.unwrap();
        assert!(!key.windows(16).any(|w| w == laptop_id));
    }
}

#[tokio::test]
async fn a_claimed_key_package_adds_its_owner_to_a_group_and_the_welcome_reaches_its_queue() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let mut alice = Member::register(&server, "alice").await;
    let mut bob = Member::register(&server, "bob").await;
    publish(&server, &bob, 1).await;
    // Bob shares his token with alice (in their connection group; here, by hand).
    let token = http.friendship_token(&bob.identity).await;

    let (group_id, keys) = create_group(&http, server.domain(), &mut alice, false).await;
    let as_credentials: AsCredentials = http
        .send("GET", api::AS_CREDENTIALS, vec![], None)
        .await
        .decode();
    let [entry] = claim(&http, &token).await.try_into().unwrap();
    let key_package = verified_key_package(&entry, &as_credentials);
    let card = entry.card(key_package.leaf_node().signature_key().as_slice());
    let member = MemberEntry {
        queue: entry.queue.clone(),
        encrypted_credential: keys.credentials.encrypt(&group_id, &codec::encode(&card)),
    };
    let (status, _) = mls::add(&http, &group_id, &keys, &mut alice, key_package, member).await;
    assert_eq!(status, 200);
    bob.accept_welcome(&http, &group_id).await;
    assert_eq!(bob.group().epoch(), alice.group().epoch());
}
