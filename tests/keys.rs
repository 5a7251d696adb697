//! Key rotation against real `roost` servers: the AS intermediate credential and the federation
//! signing key replaced by `roost admin keys rotate`, with credentials and relays made under the
//! old keys still verifying — and what a user notices: nothing.

mod common;

use std::time::Duration;

use common::{
    pair::{chat_texts, connected_pair, settle, settle_within},
    Identity, Options, TestServer, PASSWORD,
};
use roost_protocol::{api, AsCredentials, Timestamp};

async fn served_credentials(server: &TestServer) -> AsCredentials {
    server
        .http()
        .send("GET", api::AS_CREDENTIALS, vec![], None)
        .await
        .decode()
}

#[tokio::test]
async fn client_credentials_signed_before_and_after_an_intermediate_rotation_both_verify() {
    let mut server = TestServer::start(Options::default());
    let http = server.http();
    let mut phone = Identity::new(&server.user("alice"));
    assert_eq!(http.register(&mut phone, None).await.status, 201);
    let before = server.admin_json(&["keys", "show"]);

    let rotated = server.admin_json(&["keys", "rotate", "intermediate"]);
    assert_eq!(rotated["old"], before["intermediate"]);
    assert_ne!(rotated["new"], rotated["old"]);
    let mut laptop = Identity::new(&phone.user);
    assert_eq!(http.add_client(&mut laptop, PASSWORD).await.status, 201);

    let served = served_credentials(&server).await;
    assert_eq!(served.intermediates.len(), 2);
    let now = Timestamp::now();
    for client in [&phone, &laptop] {
        let credential = client.credential.as_ref().unwrap();
        assert_eq!(served.verify_client(credential, now), Ok(()));
    }
    let (old, new) = (
        phone.credential.as_ref().unwrap(),
        laptop.credential.as_ref().unwrap(),
    );
    assert_ne!(old.body.signer, new.body.signer);
    assert_eq!(new.body.signer.to_string(), rotated["new"]);
    // The old client keeps working; the rotation is kept across a restart, offline too.
    assert_eq!(http.fetch(&phone, 0, 10, 0).await.status, 200);
    assert!(server.terminate().success());
    let offline = server.admin_json(&["keys", "rotate", "intermediate"]);
    assert_eq!(offline["old"], rotated["new"]);
    server.start_again();
    let shown = server.admin_json(&["keys", "show"]);
    assert_eq!(shown["intermediate"], offline["new"]);
    assert_eq!(
        shown["retired_intermediates_served"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let served = served_credentials(&server).await;
    for client in [&phone, &laptop] {
        let credential = client.credential.as_ref().unwrap();
        assert_eq!(served.verify_client(credential, Timestamp::now()), Ok(()));
    }
    assert_eq!(server.http().fetch(&laptop, 0, 10, 0).await.status, 200);
}

#[tokio::test]
async fn relays_go_on_after_the_federation_key_is_rotated_with_deliveries_waiting() {
    let mut p = connected_pair("alice", "bob", Options::default()).await;
    p.alice_phone.chat().send(&p.bob, "before").await.unwrap();
    // b fetches and caches a's federation key to take this one.
    let bobs = [&p.bob_phone, &p.bob_laptop];
    let alice = p.alice.clone();
    let count = async |n: usize| {
        let mut ok = true;
        for client in bobs {
            ok &= client.chat().messages(&alice).await.unwrap().len() == n;
        }
        ok
    };
    settle(&bobs, async || count(1).await).await;
    // b holds a's old key: the first relay signed with the new one makes it fetch the new key.
    let before = p.servers[0].admin_json(&["keys", "show"]);
    let rotated = p.servers[0].admin_json(&["keys", "rotate", "federation"]);
    assert_eq!(rotated["old"], before["federation"]);
    assert_ne!(rotated["new"], rotated["old"]);
    // (A peer fetches a key again at most every 30 s: until then the relay is retried.)
    p.alice_phone.chat().send(&p.bob, "rotated").await.unwrap();
    settle_within(Duration::from_secs(60), &bobs, async || count(2).await).await;
    // Deliveries waiting while b is down go out signed with the key in force when they do.
    p.servers[1].kill();
    p.alice_phone.chat().send(&p.bob, "waiting").await.unwrap();
    p.servers[0].admin(&["keys", "rotate", "federation"]);
    p.servers[1].start_again();
    p.alice_phone.chat().send(&p.bob, "after").await.unwrap();
    settle(&bobs, async || count(4).await).await;
    for client in bobs {
        let texts = chat_texts(client, &alice).await;
        assert_eq!(texts, ["before", "rotated", "waiting", "after"]);
    }
}
