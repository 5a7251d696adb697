//! What a client keeps from a hostile group member: a Welcome into a *connection* group from
//! another user's client is refused (connection groups hold one user's clients and one peer, and
//! only the user's own clients bring its others in), and a message whose card is not its
//! sender's is kept with an unknown sender. Each has a positive control: the same construction,
//! honest, is taken.

mod common;

use common::{
    devices::Devices,
    mls::{self, create_group, Keys, Member},
    Options, TestServer,
};
use openmls::prelude::*;
use roost_client::{mls::GROUP_KEYS_EXPORTER_LABEL, Client};
use roost_protocol::{
    api::ClaimedKeyPackages,
    codec,
    connection::EarKey,
    content::{Content, Envelope},
    ds::{self, GroupKeys, MemberCard, MemberEntry, WelcomeBundle, WelcomeSecrets},
    OpId,
};

/// mallory (a hand-made client of another user) makes a group and adds bob's client by his
/// friendship token, with every part of the Welcome as the client library makes it; `name`
/// `None` makes it a connection group. Answers the group and its keys.
async fn mallory_adds_bob(
    server: &TestServer,
    mallory: &mut Member,
    bob: &Client,
    name: Option<&str>,
) -> (Vec<u8>, Keys) {
    let http = server.http();
    let connection_group = name.is_none();
    let (group_id, keys) = create_group(&http, server.domain(), mallory, connection_group).await;
    let token = bob.server().friendship_token(bob.signer()).await.unwrap();
    let [entry]: [_; 1] = http
        .claim_key_packages(&token)
        .await
        .decode::<ClaimedKeyPackages>()
        .entries
        .try_into()
        .unwrap();
    let key_package = mls::parse_key_package(&entry.key_package);
    let card = MemberCard {
        credential: entry.client_credential.clone(),
        leaf_key: key_package.leaf_node().signature_key().as_slice().to_vec(),
        signature: entry.card_signature,
    };
    let (provider, signer) = (&mallory.mls.provider, &mallory.mls.signer);
    let group = mallory.group.as_mut().unwrap();
    let (commit, welcome, _) = group.add_members(provider, signer, &[key_package]).unwrap();
    group.merge_pending_commit(provider).unwrap();
    let secrets = WelcomeSecrets::new(
        GroupKeys {
            group_state_ear_key: keys.state.clone(),
            credential_ear_key: keys.credentials.clone(),
        },
        name.map(str::to_owned),
        server.user("mallory").domain().clone(),
        &group_id,
        mallory.mls.signer.public(),
        mallory.identity.credential.clone().unwrap(),
        &mallory.identity.key,
    );
    let exported: [u8; 32] = group
        .export_secret(provider.crypto(), GROUP_KEYS_EXPORTER_LABEL, &group_id, 32)
        .unwrap()
        .try_into()
        .unwrap();
    let request = ds::CommitRequest {
        op: OpId::random(),
        ear_key: keys.state.clone(),
        commit: commit.to_bytes().unwrap(),
        group_info: mallory.group_info(),
        epoch_key: mallory.epoch_key().public(),
        rekey: None,
        added: vec![MemberEntry {
            queue: entry.queue.clone(),
            encrypted_credential: keys.credentials.encrypt(&group_id, &codec::encode(&card)),
        }],
        welcome: Some(WelcomeBundle {
            group_id: group_id.clone(),
            welcome: welcome.to_bytes().unwrap(),
            encrypted_keys: EarKey(exported).encrypt(&group_id, &codec::encode(&secrets)),
        }),
    };
    let response = http.post(&ds::ds_commit(&group_id), &request).await;
    assert_eq!(response.status, 200);
    mallory.deliveries(&http).await;
    (group_id, keys)
}

async fn mallory_and_bob(server: &TestServer, devices: &Devices) -> (Member, Client) {
    let mallory = Member::register(server, "mallory").await;
    let bob = devices.register(server, "bob", &server.user("bob")).await;
    (mallory, bob)
}

#[tokio::test]
async fn a_welcome_into_a_connection_group_from_another_users_client_is_refused() {
    let server = TestServer::start(Options::default());
    let devices = Devices::new();
    let (mut mallory, bob) = mallory_and_bob(&server, &devices).await;

    mallory_adds_bob(&server, &mut mallory, &bob, None).await;
    let report = bob.sync().await.unwrap();
    assert!(report.joined.is_empty(), "{report:?}");
    assert!(
        report
            .failed
            .iter()
            .any(|f| f.contains("invited this client into a connection group")),
        "{:?}",
        report.failed
    );
    assert!(bob.contacts().list().await.unwrap().is_empty());

    // Control: the same Welcome into a named group is taken.
    mallory_adds_bob(&server, &mut mallory, &bob, Some("picnic")).await;
    let report = bob.sync().await.unwrap();
    assert_eq!(report.joined.len(), 1, "{report:?}");
    assert!(bob.groups().find("picnic").is_ok());
}

/// mallory's message to the group with `card` as its sender, through the DS.
async fn send_as(
    server: &TestServer,
    mallory: &mut Member,
    group_id: &[u8],
    keys: &Keys,
    card: MemberCard,
    text: &str,
) {
    let envelope = Envelope {
        sender: card,
        content: Content::Text(text.to_owned()),
    };
    let request = mallory.message_request(keys, &envelope.encode());
    let response = server
        .http()
        .post(&ds::ds_messages(group_id), &request)
        .await;
    assert_eq!(response.status, 202);
}

#[tokio::test]
async fn a_message_whose_card_is_not_for_its_senders_leaf_has_an_unknown_sender() {
    let server = TestServer::start(Options::default());
    let devices = Devices::new();
    let (mut mallory, bob) = mallory_and_bob(&server, &devices).await;
    let (group_id, keys) = mallory_adds_bob(&server, &mut mallory, &bob, Some("picnic")).await;
    bob.sync().await.unwrap();

    // mallory's own card, but for another MLS key than her leaf's (one she could sign with
    // elsewhere); then her card for her leaf, as a control.
    let credential = mallory.identity.credential.clone().unwrap();
    let elsewhere: [u8; 32] = rand::random();
    let wrong = MemberCard::new(credential.clone(), &mallory.identity.key, &elsewhere);
    send_as(&server, &mut mallory, &group_id, &keys, wrong, "who am i").await;
    let right = MemberCard::new(
        credential,
        &mallory.identity.key,
        mallory.mls.signer.public(),
    );
    send_as(&server, &mut mallory, &group_id, &keys, right, "it is me").await;

    let report = bob.sync().await.unwrap();
    let received: Vec<_> = report
        .received
        .iter()
        .map(|(_, m)| (m.from.as_ref().map(|u| u.to_string()), m.text.clone()))
        .collect();
    let mallory_name = server.user("mallory").to_string();
    assert_eq!(
        received,
        vec![
            (None, "who am i".to_owned()),
            (Some(mallory_name), "it is me".to_owned())
        ]
    );
}
