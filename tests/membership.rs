//! Membership changes a user expects to just work: a new client of a user joins the groups and
//! connections the user is in; a rotated friendship token reaches the user's contacts.

mod common;

use common::{
    devices::{connect, log, Devices},
    Options, TestServer,
};
use roost_client::Client;
use roost_protocol::{api, codec};

async fn sync_clean(client: &Client) -> roost_client::SyncReport {
    let report = client.sync().await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    report
}

#[tokio::test]
async fn a_users_new_client_joins_the_groups_and_connections_the_user_is_in() {
    let server = TestServer::start(Options::default());
    let devices = Devices::new();
    let (alice, bob_phone) = devices.alice_and_bob(&server).await;
    connect(&alice, &bob_phone, &[]).await;
    alice.groups().create("plans").await.unwrap();
    alice.groups().add("plans", bob_phone.user()).await.unwrap();
    sync_clean(&bob_phone).await;
    alice.groups().send("plans", "before").await.unwrap();

    let bob_laptop = devices
        .add_client(&server, "bob-laptop", bob_phone.user())
        .await;
    // bob's phone brings the laptop into the connection and the group.
    let report = sync_clean(&bob_phone).await;
    assert_eq!(report.commits, 2, "{report:?}");
    let report = sync_clean(&bob_laptop).await;
    assert_eq!(report.joined.len(), 2, "{report:?}");
    // Nothing more to do for anyone: the next syncs add nobody twice.
    assert_eq!(sync_clean(&bob_phone).await.commits, 0);
    sync_clean(&alice).await;

    alice.groups().send("plans", "after").await.unwrap();
    alice
        .chat()
        .send(bob_phone.user(), "hello bob's laptop")
        .await
        .unwrap();
    bob_laptop
        .groups()
        .send("plans", "from the laptop")
        .await
        .unwrap();
    for client in [&alice, &bob_phone, &bob_laptop] {
        sync_clean(client).await;
    }
    let laptop_log = log(&bob_laptop.groups().messages("plans").await.unwrap());
    assert_eq!(
        laptop_log,
        [
            ("alice".to_owned(), "after".to_owned()),
            ("bob".to_owned(), "from the laptop".to_owned())
        ]
    );
    let alice_log = log(&alice.groups().messages("plans").await.unwrap());
    assert_eq!(alice_log.last().unwrap().1, "from the laptop");
    let chat = log(&bob_laptop.chat().messages(alice.user()).await.unwrap());
    assert_eq!(
        chat,
        [("alice".to_owned(), "hello bob's laptop".to_owned())]
    );
    assert_eq!(
        bob_laptop.contacts().list().await.unwrap()[0].peer.as_ref(),
        Some(alice.user())
    );
}

#[tokio::test]
async fn a_rotated_friendship_token_reaches_the_users_contacts_and_the_old_one_stops_working() {
    let server = TestServer::start(Options::default());
    let devices = Devices::new();
    let (alice, bob) = devices.alice_and_bob(&server).await;
    connect(&alice, &bob, &[]).await;
    let old = bob
        .contacts()
        .with(alice.user())
        .unwrap()
        .peer_token
        .unwrap();

    assert_eq!(alice.contacts().rotate_token().await.unwrap(), 1);
    // Whoever holds only the old token can no longer claim alice's key packages.
    let claim = server
        .http()
        .send(
            "POST",
            api::QS_CLAIM_KEY_PACKAGES,
            codec::encode(&api::ClaimKeyPackages { token: old.clone() }),
            None,
        )
        .await;
    assert_eq!(
        (claim.status, claim.error_code().as_str()),
        (404, "unknown_friendship_token")
    );
    // bob, her contact, gets the new one with his next sync and adds her to a group.
    sync_clean(&bob).await;
    let new = bob
        .contacts()
        .with(alice.user())
        .unwrap()
        .peer_token
        .unwrap();
    assert_ne!(new, old);
    bob.groups().create("plans").await.unwrap();
    assert_eq!(bob.groups().add("plans", alice.user()).await.unwrap(), 1);
    let report = sync_clean(&alice).await;
    assert_eq!(report.joined.len(), 1, "{report:?}");
}
