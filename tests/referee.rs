//! The DS as an honest referee: hand-made MLS messages that a receiving member would reject,
//! or that would send a group's secrets where they do not belong, are refused before anything
//! is stored or sent, and no member is left in another epoch than the rest.

mod common;

use common::{
    mls::{self, create_group, Keys, Member},
    Options, Raw, Response, TestServer,
};
use openmls::prelude::*;
use roost_protocol::{
    codec,
    connection::EarKey,
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

/// POSTs `body` to `path`; answers the status and, for an error, its code.
async fn post(http: &Raw, path: &str, body: &impl serde::Serialize) -> (u16, String) {
    let response = http.post(path, body).await;
    let code = if response.status >= 400 {
        response.error_code()
    } else {
        String::new()
    };
    (response.status, code)
}

async fn commit(http: &Raw, group_id: &[u8], request: &ds::CommitRequest) -> (u16, String) {
    post(http, &ds::ds_commit(group_id), request).await
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
        epoch_key: t.alice.epoch_key().public(),
        rekey: None,
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
    let treeless = t.alice.group_info_with(false);
    let epoch_key = t.alice.epoch_key().public();
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
        epoch_key,
        rekey: None,
    };
    for (group_info, why) in [
        (stale, "not of the epoch"),
        (other_group, "not of the epoch"),
        (forged, "does not verify"),
        (other_branch, "does not match"),
        (treeless, "lacks the ratchet-tree extension"),
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

async fn send(http: &Raw, group_id: &[u8], request: &ds::SendMessage) -> (u16, String) {
    post(http, &ds::ds_messages(group_id), request).await
}

/// `message` (TLS-encoded MLSMessage of a group) claiming another epoch in its clear header.
fn claiming_epoch(message: &[u8], group_id: &[u8], epoch: u64) -> Vec<u8> {
    let at = message
        .windows(group_id.len())
        .position(|w| w == group_id)
        .unwrap()
        + group_id.len();
    let mut claimed = message.to_vec();
    claimed[at..at + 8].copy_from_slice(&epoch.to_be_bytes());
    claimed
}

#[tokio::test]
async fn a_message_is_taken_only_from_a_member_of_the_current_epoch() {
    let mut t = alice_and_bob().await;
    let honest = t.bob.message_request(&t.keys, b"hello");

    // carol is no member, but holds the group-state key: she sends bob's message again, or
    // her own bytes, with a proof of a key she made up.
    let stranger = ds::EpochKey::from_exported(rand::random());
    let replayed = ds::SendMessage {
        op: OpId::random(),
        proof: stranger.prove(&t.group_id, 1, &honest.message),
        ..honest.clone()
    };
    // bob's proof of other bytes.
    let moved = ds::SendMessage {
        op: OpId::random(),
        message: t.bob.message_request(&t.keys, b"other").message,
        ..honest.clone()
    };
    for request in [&replayed, &moved] {
        assert_eq!(
            send(&t.http, &t.group_id, request).await,
            (403, "not_a_member".to_owned())
        );
    }
    assert_eq!(send(&t.http, &t.group_id, &honest).await.0, 202);

    // A message of a past epoch is stale; one claiming the current epoch in its header, proved
    // with a past epoch's key, is no member's.
    let old = t.bob.message_request(&t.keys, b"from epoch 1");
    let commit_bytes = self_update(&mut t.alice);
    let request = ds::CommitRequest {
        op: OpId::random(),
        ear_key: t.keys.state.clone(),
        commit: commit_bytes,
        group_info: t.alice.group_info(),
        added: vec![],
        welcome: None,
        epoch_key: t.alice.epoch_key().public(),
        rekey: None,
    };
    assert_eq!(commit(&t.http, &t.group_id, &request).await.0, 200);
    assert_eq!(
        send(&t.http, &t.group_id, &old).await,
        (409, "stale_epoch".to_owned())
    );
    let forged = claiming_epoch(&old.message, &t.group_id, 2);
    let old_key = t.bob.epoch_key();
    let forged = ds::SendMessage {
        op: OpId::random(),
        proof: old_key.prove(&t.group_id, 2, &forged),
        message: forged,
        ..old
    };
    assert_eq!(
        send(&t.http, &t.group_id, &forged).await,
        (403, "not_a_member".to_owned())
    );
    // Nothing of them reached bob or alice: bob sees only alice's commit after his message.
    let seqs: Vec<u64> = t
        .bob
        .deliveries(&t.http)
        .await
        .iter()
        .map(|d| match d {
            GroupDelivery::Message { seq, .. } => *seq,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(seqs, [2, 3]);
}

async fn external_commit_info(t: &Table, ear_key: &EarKey) -> Response {
    t.http
        .send(
            "POST",
            &ds::ds_external_commit_info(&t.group_id),
            codec::encode(&ds::EarKeyProof {
                ear_key: ear_key.clone(),
            }),
            None,
        )
        .await
}

#[tokio::test]
async fn a_removal_brings_new_keys_and_the_removed_members_old_ones_open_nothing_new() {
    let mut t = alice_and_bob().await;
    let info: ds::ExternalCommitInfo = external_commit_info(&t, &t.keys.state).await.decode();
    let alices_card = info
        .encrypted_credentials
        .iter()
        .find_map(|encrypted| {
            let plain = t.keys.credentials.decrypt(&t.group_id, encrypted).ok()?;
            let card: ds::MemberCard = codec::decode(&plain).ok()?;
            (card.leaf_key == t.alice.mls.signer.public()).then_some(plain)
        })
        .unwrap();

    let (provider, signer) = (&t.alice.mls.provider, &t.alice.mls.signer);
    let group = t.alice.group.as_mut().unwrap();
    let (commit_message, _, _) = group
        .remove_members(provider, signer, &[LeafNodeIndex::new(1)])
        .unwrap();
    group.merge_pending_commit(provider).unwrap();
    let exported = group
        .export_secret(
            provider.crypto(),
            ds::GROUP_KEYS_AFTER_REMOVAL_LABEL,
            &t.group_id,
            64,
        )
        .unwrap();
    let new = ds::GroupKeys::of_epoch(&exported.try_into().unwrap());
    let (group_info, epoch_key) = (t.alice.group_info(), t.alice.epoch_key().public());
    let request = |rekey: Option<ds::Rekey>| ds::CommitRequest {
        op: OpId::random(),
        ear_key: t.keys.state.clone(),
        commit: commit_message.to_bytes().unwrap(),
        group_info: group_info.clone(),
        added: vec![],
        welcome: None,
        epoch_key,
        rekey,
    };
    let rekey = |leaves: &[u32]| ds::Rekey {
        group_state_ear_key: new.group_state_ear_key.clone(),
        credentials: leaves
            .iter()
            .map(|leaf| {
                let card = new.credential_ear_key.encrypt(&t.group_id, &alices_card);
                (*leaf, card)
            })
            .collect(),
    };
    for (refused, why) in [
        (request(None), "must bring new EAR keys"),
        (
            request(Some(rekey(&[0, 1]))),
            "exactly every staying member",
        ),
        (request(Some(rekey(&[]))), "exactly every staying member"),
    ] {
        let response = t.http.post(&ds::ds_commit(&t.group_id), &refused).await;
        let body = String::from_utf8_lossy(&response.body);
        assert_eq!(response.status, 400, "{why}: {body}");
        assert!(body.contains(why), "{why}: {body}");
    }
    let removal = request(Some(rekey(&[0])));
    assert_eq!(
        commit(&t.http, &t.group_id, &removal).await,
        (200, String::new())
    );
    // A repeat of the removal (its answer was lost) still comes with the old key: it is
    // answered as the first was.
    let repeated = t.http.post(&ds::ds_commit(&t.group_id), &removal).await;
    assert_eq!(repeated.decode::<ds::Committed>().epoch, 2);

    // bob's keys open nothing any more: not the group's state, not its members' cards, and
    // no request is taken with them.
    let response = external_commit_info(&t, &t.keys.state).await;
    assert_eq!(
        (response.status, response.error_code().as_str()),
        (403, "wrong_ear_key")
    );
    let bobs = t.bob.message_request(&t.keys, b"still here?");
    assert_eq!(
        send(&t.http, &t.group_id, &bobs).await,
        (403, "wrong_ear_key".to_owned())
    );
    let info: ds::ExternalCommitInfo = external_commit_info(&t, &new.group_state_ear_key)
        .await
        .decode();
    assert_eq!(info.encrypted_credentials.len(), 1);
    let card = &info.encrypted_credentials[0];
    assert!(t.keys.credentials.decrypt(&t.group_id, card).is_err());
    assert_eq!(
        new.credential_ear_key.decrypt(&t.group_id, card).unwrap(),
        alices_card
    );

    // On disk: the group's state opens with the new key only.
    let group_id = t.group_id.clone();
    assert!(t.server.terminate().success());
    let db = sled::open(t.server.store_path()).unwrap();
    let stored = db
        .open_tree("ds_groups")
        .unwrap()
        .get(&group_id)
        .unwrap()
        .unwrap();
    let context = [b"roost ds group state v1".as_slice(), &group_id].concat();
    assert!(t.keys.state.decrypt(&context, &stored).is_err());
    assert!(new.group_state_ear_key.decrypt(&context, &stored).is_ok());
}

async fn rejoin(t: &Table, request: &ds::Rejoin) -> (u16, String) {
    post(&t.http, &ds::ds_rejoin(&t.group_id), request).await
}

#[tokio::test]
async fn only_a_member_rejoins_a_group_and_only_in_its_own_place() {
    let mut t = alice_and_bob().await;
    // carol holds the group-state key but was never in the group: her external commit
    // replaces no leaf of hers.
    let (commit, group_info, epoch_key) =
        mls::external_commit(&t.http, &t.group_id, &t.keys, &mut t.carol).await;
    let strangers = ds::Rejoin {
        op: OpId::random(),
        ear_key: t.keys.state.clone(),
        commit,
        group_info,
        epoch_key,
    };
    assert_eq!(
        rejoin(&t, &strangers).await,
        (400, "invalid_mls_message".to_owned())
    );

    // bob, who is in it, takes his own place again: his old leaf goes, his entry stays.
    let (commit, group_info, epoch_key) =
        mls::external_commit(&t.http, &t.group_id, &t.keys, &mut t.bob).await;
    let bobs = ds::Rejoin {
        op: OpId::random(),
        ear_key: t.keys.state.clone(),
        commit,
        group_info,
        epoch_key,
    };
    assert_eq!(rejoin(&t, &bobs).await, (200, String::new()));
    let info: ds::ExternalCommitInfo = external_commit_info(&t, &t.keys.state).await.decode();
    assert_eq!(info.encrypted_credentials.len(), 2);
    // alice follows; bob's copy reaches him at his queue.
    let deliveries = t.alice.deliveries(&t.http).await;
    let [GroupDelivery::Message { message, .. }] = deliveries.as_slice() else {
        panic!("{deliveries:?}");
    };
    assert!(matches!(
        t.alice.process(message),
        ProcessedMessageContent::StagedCommitMessage(_)
    ));
    assert_eq!(t.bob.deliveries(&t.http).await.len(), 1);
    let hello = t.bob.message_request(&t.keys, b"in step");
    assert_eq!(send(&t.http, &t.group_id, &hello).await.0, 202);
}

/// alice's next self-update as the DS receives it (merged on her side).
fn self_update_request(t: &mut Table) -> ds::CommitRequest {
    let commit = self_update(&mut t.alice);
    ds::CommitRequest {
        op: OpId::random(),
        ear_key: t.keys.state.clone(),
        commit,
        group_info: t.alice.group_info(),
        added: vec![],
        welcome: None,
        epoch_key: t.alice.epoch_key().public(),
        rekey: None,
    }
}

#[tokio::test]
async fn a_forged_commit_or_one_signed_by_no_member_is_refused() {
    let mut t = alice_and_bob().await;
    // alice's commit, changed after she signed it.
    let mut forged = self_update_request(&mut t);
    let middle = forged.commit.len() / 2;
    forged.commit[middle] ^= 1;
    let (status, _) = commit(&t.http, &t.group_id, &forged).await;
    assert_eq!(status, 400);

    // carol makes a group of her own under the same id and, at the same epoch, commits as
    // its leaf 0 — alice's place in the real group.
    let (provider, signer) = (&t.carol.mls.provider, &t.carol.mls.signer);
    let mut imitation = MlsGroup::builder()
        .with_group_id(GroupId::from_slice(&t.group_id))
        .ciphersuite(mls::CS)
        .with_wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .build(provider, signer, t.carol.mls.credential.clone())
        .unwrap();
    let stranger = mls::MlsClient::new();
    let (_, _, _) = imitation
        .add_members(
            provider,
            signer,
            &[stranger.key_package_naming(mls::CS, vec![1], false)],
        )
        .unwrap();
    imitation.merge_pending_commit(provider).unwrap();
    t.carol.group = Some(imitation);
    let carols = {
        let commit = self_update(&mut t.carol);
        ds::CommitRequest {
            commit,
            group_info: t.carol.group_info(),
            epoch_key: t.carol.epoch_key().public(),
            ..forged.clone()
        }
    };
    let carols = ds::CommitRequest {
        op: OpId::random(),
        ..carols
    };
    let (status, code) = commit(&t.http, &t.group_id, &carols).await;
    assert_eq!((status, code.as_str()), (400, "invalid_mls_message"));

    // Neither moved the group: it is still at epoch 1, where bob's message is taken.
    let hello = t.bob.message_request(&t.keys, b"still in epoch 1");
    assert_eq!(send(&t.http, &t.group_id, &hello).await.0, 202);
}

#[tokio::test]
async fn the_ds_state_does_not_grow_with_epochs() {
    let mut t = alice_and_bob().await;
    let size = |t: &mut Table| {
        assert!(t.server.terminate().success());
        let db = sled::open(t.server.store_path()).unwrap();
        let stored = db
            .open_tree("ds_groups")
            .unwrap()
            .get(&t.group_id)
            .unwrap()
            .unwrap();
        drop(db);
        t.server.start_again();
        stored.len()
    };
    async fn epochs(t: &mut Table, n: usize) {
        for _ in 0..n {
            let request = self_update_request(t);
            assert_eq!(commit(&t.http, &t.group_id, &request).await.0, 200);
        }
    }
    epochs(&mut t, 1).await;
    let early = size(&mut t);
    epochs(&mut t, 40).await;
    let late = size(&mut t);
    // The state is the current epoch's alone; sizes vary a little with the keys in it.
    assert!(
        late < early + early / 10,
        "{early} bytes at epoch 2, {late} at epoch 42"
    );
}
