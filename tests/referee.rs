//! The DS as an honest referee: hand-made MLS messages that a receiving member would reject,
//! or that would send a group's secrets where they do not belong, are refused before anything
//! is stored or sent, and no member is left in another epoch than the rest.

mod common;

use common::{
    mls::{self, create_group, Keys, Member},
    Options, Raw, TestServer,
};
use openmls::prelude::*;
use roost_protocol::{
    codec,
    ds::{self, GroupDelivery, WelcomeBundle},
    OpId,
};

/// A group of alice alone, on a fresh server, with bob and carol registered.
struct Table {
    server: TestServer,
    http: Raw,
    alice: Member,
    bob: Member,
    carol: Member,
    group_id: Vec<u8>,
    keys: Keys,
}

async fn table() -> Table {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let mut alice = Member::register(&server, "alice").await;
    let bob = Member::register(&server, "bob").await;
    let carol = Member::register(&server, "carol").await;
    let (group_id, keys) = create_group(&http, server.domain(), &mut alice, false).await;
    Table {
        server,
        http,
        alice,
        bob,
        carol,
        group_id,
        keys,
    }
}

async fn commit(http: &Raw, group_id: &[u8], request: &ds::CommitRequest) -> (u16, String) {
    let response = http
        .send(
            "POST",
            &ds::ds_commit(group_id),
            codec::encode(request),
            None,
        )
        .await;
    let code = if response.status >= 400 {
        response.error_code()
    } else {
        String::new()
    };
    (response.status, code)
}

/// alice's commit adding `key_packages`, merged on her side as if the DS had taken it, with
/// the request that would go with it (member entries naming each package's queue).
async fn adding(t: &mut Table, key_packages: &[KeyPackage]) -> ds::CommitRequest {
    let (provider, signer) = (&t.alice.mls.provider, &t.alice.mls.signer);
    let group = t.alice.group.as_mut().unwrap();
    let (commit, welcome, _) = group.add_members(provider, signer, key_packages).unwrap();
    group.merge_pending_commit(provider).unwrap();
    let mut added = Vec::new();
    for key_package in key_packages {
        let queue: ds::SealedQueueRef = codec::decode(
            &key_package
                .extensions()
                .unknown(ds::QUEUE_EXTENSION_TYPE)
                .unwrap()
                .0,
        )
        .unwrap();
        added.push(ds::MemberEntry {
            queue,
            encrypted_credential: vec![1, 2, 3],
        });
    }
    ds::CommitRequest {
        op: OpId::random(),
        ear_key: t.keys.state.clone(),
        commit: commit.to_bytes().unwrap(),
        group_info: t.alice.group_info(),
        added,
        welcome: Some(WelcomeBundle {
            group_id: t.group_id.clone(),
            welcome: welcome.to_bytes().unwrap(),
            encrypted_keys: vec![],
        }),
    }
}

/// A fresh KeyPackage of `member`, naming its queue, as it publishes them.
async fn key_package(t: &Table, member: &Member) -> KeyPackage {
    member.key_package_for(&member.queue_ref(&t.http, t.server.domain()).await)
}

/// The Welcome of a commit adding `key_package`, which alice then discards.
fn welcome_adding(t: &mut Table, key_package: KeyPackage) -> Vec<u8> {
    let (provider, signer) = (&t.alice.mls.provider, &t.alice.mls.signer);
    let group = t.alice.group.as_mut().unwrap();
    let (_, welcome, _) = group.add_members(provider, signer, &[key_package]).unwrap();
    group.clear_pending_commit(provider.storage()).unwrap();
    welcome.to_bytes().unwrap()
}

/// alice moves on to a new group of her own (her state of the last one is dropped).
async fn next_group(t: &mut Table) {
    (t.group_id, t.keys) = create_group(&t.http, t.server.domain(), &mut t.alice, false).await;
}

#[tokio::test]
async fn a_one_time_key_package_adds_its_owner_to_one_group_only() {
    let mut t = table().await;
    let bobs = key_package(&t, &t.bob).await;
    let request = adding(&mut t, std::slice::from_ref(&bobs)).await;
    assert_eq!(
        commit(&t.http, &t.group_id, &request).await,
        (200, String::new())
    );

    // The same package into a second group of alice's.
    next_group(&mut t).await;
    let again = adding(&mut t, std::slice::from_ref(&bobs)).await;
    assert_eq!(
        commit(&t.http, &t.group_id, &again).await,
        (409, "key_package_used".to_owned())
    );

    // A last-resort package may add its owner to any number of groups.
    let queue = t.carol.queue_ref(&t.http, t.server.domain()).await;
    let carols = t
        .carol
        .mls
        .key_package_naming(mls::CS, codec::encode(&queue), true);
    for _ in 0..2 {
        next_group(&mut t).await;
        let request = adding(&mut t, std::slice::from_ref(&carols)).await;
        assert_eq!(
            commit(&t.http, &t.group_id, &request).await,
            (200, String::new())
        );
    }
}

#[tokio::test]
async fn a_welcome_goes_exactly_to_the_clients_the_commit_adds() {
    let mut t = table().await;
    let bobs = key_package(&t, &t.bob).await;
    let carols_queue = t.carol.queue_ref(&t.http, t.server.domain()).await;
    let honest = adding(&mut t, std::slice::from_ref(&bobs)).await;

    // bob's Welcome sent to carol's queue.
    let mut redirected = honest.clone();
    redirected.op = OpId::random();
    redirected.added[0].queue = carols_queue.clone();
    // A garbage Welcome, a Welcome for another package, one for another group, none at all.
    let mut garbage = honest.clone();
    garbage.op = OpId::random();
    garbage.welcome.as_mut().unwrap().welcome = b"not a welcome".to_vec();
    let mut other_package = honest.clone();
    other_package.op = OpId::random();
    let carols = t.carol.key_package_for(&carols_queue);
    other_package.welcome.as_mut().unwrap().welcome = welcome_adding(&mut t, carols);
    let mut other_group = honest.clone();
    other_group.op = OpId::random();
    other_group.welcome.as_mut().unwrap().group_id = b"another group".to_vec();
    let mut missing = honest.clone();
    missing.op = OpId::random();
    missing.welcome = None;

    for (request, why) in [
        (&redirected, "queue"),
        (&garbage, "Welcome"),
        (&other_package, "exactly the members"),
        (&other_group, "another group"),
        (&missing, "needs a Welcome"),
    ] {
        let response = t
            .http
            .send(
                "POST",
                &ds::ds_commit(&t.group_id),
                codec::encode(request),
                None,
            )
            .await;
        assert_eq!(
            (response.status, response.error_code().as_str()),
            (400, "invalid_mls_message"),
            "{why}"
        );
        let body = String::from_utf8_lossy(&response.body);
        assert!(body.contains(why), "{why}: {body}");
    }
    // Nothing reached carol; bob gets his Welcome once the honest commit is taken.
    assert!(t.carol.deliveries(&t.http).await.is_empty());
    assert_eq!(
        commit(&t.http, &t.group_id, &honest).await,
        (200, String::new())
    );
    let deliveries = t.bob.deliveries(&t.http).await;
    assert!(matches!(deliveries.as_slice(), [GroupDelivery::Welcome(_)]));
    assert!(t.carol.deliveries(&t.http).await.is_empty());
}

/// alice's self-update commit, merged on her side; answers its bytes.
fn self_update(member: &mut Member) -> Vec<u8> {
    let (provider, signer) = (&member.mls.provider, &member.mls.signer);
    let group = member.group.as_mut().unwrap();
    let bundle = group
        .self_update(provider, signer, LeafNodeParameters::default())
        .unwrap();
    group.merge_pending_commit(provider).unwrap();
    bundle.commit().to_bytes().unwrap()
}

/// alice and bob in one group, at epoch 1.
async fn alice_and_bob() -> Table {
    let mut t = table().await;
    let bobs = key_package(&t, &t.bob).await;
    let request = adding(&mut t, &[bobs]).await;
    assert_eq!(
        commit(&t.http, &t.group_id, &request).await,
        (200, String::new())
    );
    t.bob.accept_welcome(&t.http, &t.group_id).await;
    t.alice.deliveries(&t.http).await;
    t
}

#[tokio::test]
async fn a_group_info_a_joiner_could_not_trust_is_refused_with_its_commit() {
    let mut t = alice_and_bob().await;
    let stale = t.alice.group_info();
    let commit_bytes = self_update(&mut t.alice);
    let good = t.alice.group_info();
    // bob's own epoch 2, which no one else will ever be in.
    self_update(&mut t.bob);
    let other_branch = t.bob.group_info();
    let mut forged = good.clone();
    *forged.last_mut().unwrap() ^= 1;
    create_group(&t.http, t.server.domain(), &mut t.carol, false).await;
    let other_group = t.carol.group_info();

    let request = |group_info: Vec<u8>| ds::CommitRequest {
        op: OpId::random(),
        ear_key: t.keys.state.clone(),
        commit: commit_bytes.clone(),
        group_info,
        added: vec![],
        welcome: None,
    };
    for (group_info, why) in [
        (stale, "not of the epoch"),
        (other_group, "not of the epoch"),
        (forged, "does not verify"),
        (other_branch, "does not match"),
    ] {
        let response = t
            .http
            .send(
                "POST",
                &ds::ds_commit(&t.group_id),
                codec::encode(&request(group_info)),
                None,
            )
            .await;
        let body = String::from_utf8_lossy(&response.body);
        assert_eq!(response.status, 400, "{why}: {body}");
        assert!(body.contains(why), "{why}: {body}");
    }
    // Nothing of them was kept: the commit with its own GroupInfo is taken, at epoch 2.
    let response = t
        .http
        .send(
            "POST",
            &ds::ds_commit(&t.group_id),
            codec::encode(&request(good)),
            None,
        )
        .await;
    assert_eq!(response.decode::<ds::Committed>().epoch, 2);
    let info: ds::ExternalCommitInfo = t
        .http
        .send(
            "POST",
            &ds::ds_external_commit_info(&t.group_id),
            codec::encode(&ds::EarKeyProof {
                ear_key: t.keys.state.clone(),
            }),
            None,
        )
        .await
        .decode();
    assert_eq!(info.group_info, t.alice.group_info());
}
