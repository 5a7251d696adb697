//! DS: groups over real HTTP, with real MLS clients (openmls) in the test playing the members.

mod common;

use common::{
    mls::{self, create_group, Keys, Member},
    scan::{assert_holds, assert_holds_none, Secret},
    Options, Raw, TestServer,
};
use openmls::prelude::{tls_codec::Deserialize as _, *};
use roost_protocol::{
    codec,
    connection::EarKey,
    ds::{self, GroupDelivery},
};

#[tokio::test]
async fn members_added_by_commit_get_the_welcome_and_messages_reach_every_other_member() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let mut alice = Member::register(&server, "alice").await;
    let mut bob = Member::register(&server, "bob").await;
    let (group_id, keys) = create_group(&http, server.domain(), &mut alice, false).await;

    let (status, _) =
        mls::add_member(&http, server.domain(), &group_id, &keys, &mut alice, &bob).await;
    assert_eq!(status, 200);
    bob.accept_welcome(&http, &group_id).await;

    // alice → bob
    let body = alice.message_request(&keys, b"hello bob");
    assert_eq!(
        http.post(&ds::ds_messages(&group_id), &body).await.status,
        202
    );
    let deliveries = bob.deliveries(&http).await;
    let [GroupDelivery::Message { message, .. }] = deliveries.as_slice() else {
        panic!("bob expected one message, got {deliveries:?}");
    };
    let ProcessedMessageContent::ApplicationMessage(text) = bob.process(message) else {
        panic!("not an application message");
    };
    assert_eq!(text.into_bytes(), b"hello bob");
    // The sender gets its own copies too, which tell it each one's place in the group's
    // order: the commit that added bob took number 1, the message number 2.
    let own: Vec<u64> = alice
        .deliveries(&http)
        .await
        .iter()
        .map(|d| match d {
            GroupDelivery::Message { seq, .. } => *seq,
            other => panic!("alice expected only her own copies, got {other:?}"),
        })
        .collect();
    assert_eq!(own, [1, 2]);
}

#[tokio::test]
async fn a_stale_commit_gets_409_and_wrong_keys_or_garbage_get_clear_errors() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let mut alice = Member::register(&server, "alice").await;
    let bob = Member::register(&server, "bob").await;
    let (group_id, keys) = create_group(&http, server.domain(), &mut alice, false).await;
    let (status, request) =
        mls::add_member(&http, server.domain(), &group_id, &keys, &mut alice, &bob).await;
    assert_eq!(status, 200);

    // The same request again (a retry after a lost answer) is answered as the first was.
    let retry = http.post(&ds::ds_commit(&group_id), &request).await;
    assert_eq!(retry.status, 200);
    let committed: ds::Committed = retry.decode();
    assert_eq!((committed.epoch, committed.seq), (1, 1));
    // The same commit as a new operation is stale.
    let replay = ds::CommitRequest {
        op: roost_protocol::OpId::random(),
        ..request.clone()
    };
    let replay = http.post(&ds::ds_commit(&group_id), &replay).await;
    assert_eq!(
        (replay.status, replay.error_code().as_str()),
        (409, "stale_epoch")
    );
    // Another request under a used operation id is refused.
    let reused = ds::CommitRequest {
        group_info: Vec::new(),
        ..request.clone()
    };
    let reused = http.post(&ds::ds_commit(&group_id), &reused).await;
    assert_eq!(
        (reused.status, reused.error_code().as_str()),
        (409, "operation_reused")
    );
    // What follows is each refused as a new operation (a refused one is not remembered).
    let request = ds::CommitRequest {
        op: roost_protocol::OpId::random(),
        ..request
    };

    let wrong_key = ds::CommitRequest {
        ear_key: EarKey::random(),
        ..request.clone()
    };
    let response = http.post(&ds::ds_commit(&group_id), &wrong_key).await;
    assert_eq!(
        (response.status, response.error_code().as_str()),
        (403, "wrong_ear_key")
    );

    let garbage = ds::CommitRequest {
        commit: vec![1, 2, 3],
        ..request.clone()
    };
    let response = http.post(&ds::ds_commit(&group_id), &garbage).await;
    assert_eq!(
        (response.status, response.error_code().as_str()),
        (400, "invalid_mls_message")
    );

    let response = http.post(&ds::ds_commit(&[7; 16]), &request).await;
    assert_eq!(
        (response.status, response.error_code().as_str()),
        (404, "unknown_group")
    );
    let response = http.post("/ds/v1/groups/zz/commit", &request).await;
    assert_eq!(response.status, 400);

    // Creating a group under a taken id.
    let again = ds::CreateGroup {
        op: roost_protocol::OpId::random(),
        group_id: group_id.clone(),
        ear_key: keys.state.clone(),
        group_info: alice.group_info(),
        epoch_key: alice.epoch_key().public(),
        creator: alice
            .entry(&http, server.domain(), &group_id, &keys.credentials)
            .await,
        connection_group: false,
    };
    let response = http.post(ds::DS_GROUPS, &again).await;
    assert_eq!(response.status, 409);

    // The group still works after all that: the epoch is the one alice is at.
    let info: ds::ExternalCommitInfo = http
        .send(
            "POST",
            &ds::ds_external_commit_info(&group_id),
            codec::encode(&ds::EarKeyProof {
                ear_key: keys.state.clone(),
            }),
            None,
        )
        .await
        .decode();
    let MlsMessageBodyIn::GroupInfo(info) = MlsMessageIn::tls_deserialize_exact(&info.group_info)
        .unwrap()
        .extract()
    else {
        panic!("not a group info");
    };
    assert_eq!(info.epoch(), alice.group().epoch());
}

async fn external_join(
    http: &Raw,
    domain: &str,
    group_id: &[u8],
    keys: &Keys,
    joiner: &mut Member,
) -> (u16, String) {
    let response = mls::join_connection_group(http, domain, group_id, keys, joiner).await;
    let code = match response.status {
        200 => String::new(),
        _ => response.error_code(),
    };
    (response.status, code)
}

#[tokio::test]
async fn only_one_responder_can_join_a_connection_group() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let mut alice = Member::register(&server, "alice").await;
    let mut bob = Member::register(&server, "bob").await;
    let mut mallory = Member::register(&server, "mallory").await;
    let (group_id, keys) = create_group(&http, server.domain(), &mut alice, true).await;

    let (status, _) = external_join(&http, server.domain(), &group_id, &keys, &mut bob).await;
    assert_eq!(status, 200);
    // alice hears of bob's join and follows.
    let deliveries = alice.deliveries(&http).await;
    let [GroupDelivery::Message { message, .. }] = deliveries.as_slice() else {
        panic!("alice expected the join commit, got {deliveries:?}");
    };
    let ProcessedMessageContent::StagedCommitMessage(staged) = alice.process(message) else {
        panic!("not a commit");
    };
    let provider = &alice.mls.provider;
    alice
        .group
        .as_mut()
        .unwrap()
        .merge_staged_commit(provider, *staged)
        .unwrap();
    assert_eq!(alice.group().epoch(), bob.group().epoch());

    let (status, code) =
        external_join(&http, server.domain(), &group_id, &keys, &mut mallory).await;
    assert_eq!((status, code.as_str()), (409, "not_joinable"));

    // A group that is not a connection group never takes a joiner.
    let (plain_id, plain_keys) = create_group(&http, server.domain(), &mut mallory, false).await;
    let mut eve = Member::register(&server, "eve").await;
    let (status, _) = external_join(&http, server.domain(), &plain_id, &plain_keys, &mut eve).await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn group_records_hold_neither_user_names_nor_client_credentials_in_plaintext() {
    let mut server = TestServer::start(Options::default());
    let http = server.http();
    let mut alice = Member::register(&server, "alicewonder").await;
    let mut bob = Member::register(&server, "bobbuilder").await;
    let (group_id, keys) = create_group(&http, server.domain(), &mut alice, true).await;
    external_join(&http, server.domain(), &group_id, &keys, &mut bob).await;
    assert!(server.terminate().success());

    let db = sled::open(server.store_path()).unwrap();
    let groups = db.open_tree("ds_groups").unwrap();
    assert_eq!(groups.len(), 1);
    let stored = groups.get(&group_id).unwrap().unwrap();
    // Opened with the key the members hold, as a server that kept a key would see it.
    let context = [b"roost ds group state v1".as_slice(), &group_id].concat();
    let state = keys.state.decrypt(&context, &stored).unwrap();
    // The scan sees inside: each member's MLS signature key is there (tree and GroupInfo).
    for member in [&alice, &bob] {
        let leaf_key = Secret::new("a member's leaf key", member.mls.signer.public().to_vec());
        assert_holds("the DS state", &state, &leaf_key);
    }
    let mut secrets = Vec::new();
    for member in [&alice, &bob] {
        let identity = &member.identity;
        secrets.push(Secret::text("a user name", identity.user.local()));
        let credential = codec::encode(identity.credential.as_ref().unwrap());
        secrets.push(Secret::new("a client credential", credential));
        secrets.push(Secret::new("a client id", identity.client_id().0.to_vec()));
    }
    assert_holds_none("the decrypted DS state", &state, &secrets);
}

#[tokio::test]
async fn a_message_to_a_group_of_ten_is_made_durable_in_one_flush_with_the_groups_own_write() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let mut alice = Member::register(&server, "alice").await;
    let (group_id, keys) = create_group(&http, server.domain(), &mut alice, false).await;
    let mut others = Vec::new();
    for n in 0..9 {
        let mut member = Member::register(&server, &format!("member{n}")).await;
        let (status, _) = mls::add_member(
            &http,
            server.domain(),
            &group_id,
            &keys,
            &mut alice,
            &member,
        )
        .await;
        assert_eq!(status, 200);
        member.accept_welcome(&http, &group_id).await;
        others.push(member);
    }

    let before = server.flushes();
    let body = alice.message_request(&keys, b"to all ten");
    let sent = http.post(&ds::ds_messages(&group_id), &body).await;
    assert_eq!(sent.status, 202);
    // One flush for the DS's own write and all ten queues, not one for each.
    assert_eq!(server.flushes() - before, 1);
    // And every member's queue has it.
    for member in &others {
        let deliveries = member.deliveries(&http).await;
        assert!(
            matches!(deliveries.last(), Some(GroupDelivery::Message { message, .. }) if *message == body.message),
            "{deliveries:?}"
        );
    }
}
