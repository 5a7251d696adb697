//! Commits the DS cannot fault and members cannot process. The DS holds no member secrets, so a
//! member's commit can be honest in every part the DS checks and still carry path secrets no one
//! can open. Then the group must not split: whoever cannot process it rejoins in its own place
//! by external commit, and everyone is in one epoch again.

mod common;

use common::{
    garble::Garbling,
    mls::{self, create_group, Member},
    Options, TestServer,
};
use openmls::prelude::*;
use roost_protocol::{
    ds::{self, GroupDelivery},
    OpId,
};

#[tokio::test]
async fn a_commit_whose_path_secrets_no_member_can_open_costs_a_rejoin_not_a_split_group() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let mut alice = Member::register(&server, "alice").await;
    let mut bob = Member::register(&server, "bob").await;
    let (group_id, keys) = create_group(&http, server.domain(), &mut alice, false).await;
    let (status, _) =
        mls::add_member(&http, server.domain(), &group_id, &keys, &mut alice, &bob).await;
    assert_eq!(status, 200);
    bob.accept_welcome(&http, &group_id).await;
    alice.deliveries(&http).await;

    // alice's self-update, with bob's path secret sealed as garbage.
    let group = alice.group.as_mut().unwrap();
    let hostile = Garbling::new(&alice.mls.provider);
    let bundle = group
        .self_update(&hostile, &alice.mls.signer, LeafNodeParameters::default())
        .unwrap();
    group.merge_pending_commit(&alice.mls.provider).unwrap();
    let request = ds::CommitRequest {
        op: OpId::random(),
        ear_key: keys.state.clone(),
        commit: bundle.commit().to_bytes().unwrap(),
        group_info: alice.group_info(),
        epoch_key: alice.epoch_key().public(),
        rekey: None,
        added: vec![],
        welcome: None,
    };
    // Every part the DS can check holds.
    let response = http.post(&ds::ds_commit(&group_id), &request).await;
    assert_eq!(response.status, 200);

    // bob cannot process it: he would be stuck in the old epoch for good.
    let deliveries = bob.deliveries(&http).await;
    let [GroupDelivery::Message { message, .. }] = deliveries.as_slice() else {
        panic!("{deliveries:?}");
    };
    let refused = bob
        .try_process(message)
        .expect_err("a path secret no one can open");
    assert!(
        refused.contains("Decrypt") || refused.contains("Path"),
        "{refused}"
    );

    // So he rejoins in his own place, from the GroupInfo of the epoch he could not reach.
    let (commit, group_info, epoch_key) =
        mls::external_commit(&http, &group_id, &keys, &mut bob).await;
    let rejoin = ds::Rejoin {
        op: OpId::random(),
        ear_key: keys.state.clone(),
        commit,
        group_info,
        epoch_key,
    };
    let response = http.post(&ds::ds_rejoin(&group_id), &rejoin).await;
    assert_eq!(response.status, 200);

    // alice follows his rejoin (after her own commit, which comes back to her too); both are in
    // one epoch and read each other.
    let deliveries = alice.deliveries(&http).await;
    let [_, GroupDelivery::Message { message, .. }] = deliveries.as_slice() else {
        panic!("{deliveries:?}");
    };
    let ProcessedMessageContent::StagedCommitMessage(staged) = alice.process(message) else {
        panic!("not a commit");
    };
    let group = alice.group.as_mut().unwrap();
    group
        .merge_staged_commit(&alice.mls.provider, *staged)
        .unwrap();
    assert_eq!(group.epoch(), bob.group().epoch());
    bob.deliveries(&http).await;
    let hello = bob.message_request(&keys, b"in step again");
    let response = http.post(&ds::ds_messages(&group_id), &hello).await;
    assert_eq!(response.status, 202);
    let deliveries = alice.deliveries(&http).await;
    let [GroupDelivery::Message { message, .. }] = deliveries.as_slice() else {
        panic!("{deliveries:?}");
    };
    let ProcessedMessageContent::ApplicationMessage(text) = alice.process(message) else {
        panic!("not an application message");
    };
    assert_eq!(text.into_bytes(), b"in step again");
}
