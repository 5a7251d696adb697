//! What the server must not learn, checked on its disk and in its log after real use: alice
//! and bob connect, chat, and chat again in a named group; then every store file and the
//! server's debug log are searched.

mod common;

use common::{
    devices::{connect, Devices},
    Options, TestServer,
};
use roost_protocol::codec;

fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn after_a_connection_and_chats_the_server_holds_no_link_between_the_users_and_no_content() {
    let mut server = TestServer::start(Options {
        log: "debug",
        ..Options::default()
    });
    let devices = Devices::new();
    let (alice, bob) = (server.user("alicewonder"), server.user("bobbuilder"));
    let alice_phone = devices.register(&server, "alice-phone", &alice).await;
    let alice_laptop = devices.add_client(&server, "alice-laptop", &alice).await;
    let bob_phone = devices.register(&server, "bob-phone", &bob).await;
    connect(&alice_phone, &bob_phone, &[&alice_laptop]).await;

    let texts = [
        "the eagle lands at midnight",
        "bring the blue umbrella",
        "meet at the old mill",
    ];
    alice_phone.chat().send(&bob, texts[0]).await.unwrap();
    bob_phone.chat().send(&alice, texts[1]).await.unwrap();
    let group_name = "secret garden party";
    alice_laptop.groups().create(group_name).await.unwrap();
    alice_laptop.groups().add(group_name, &bob).await.unwrap();
    bob_phone.sync().await.unwrap();
    bob_phone.groups().send(group_name, texts[2]).await.unwrap();
    for client in [&alice_phone, &alice_laptop, &bob_phone] {
        let report = client.sync().await.unwrap();
        assert!(report.failed.is_empty(), "{:?}", report.failed);
    }
    // The chats did happen.
    let log = alice_laptop.groups().messages(group_name).await.unwrap();
    assert_eq!(log.last().unwrap().text, texts[2]);
    let tokens = [
        alice_phone
            .server()
            .friendship_token(alice_phone.signer())
            .await
            .unwrap(),
        bob_phone
            .server()
            .friendship_token(bob_phone.signer())
            .await
            .unwrap(),
    ];
    assert!(server.terminate().success());

    // What no file of the store may hold: the contents and the group's name.
    let mut secrets: Vec<Vec<u8>> = texts.iter().map(|t| t.as_bytes().to_vec()).collect();
    secrets.push(group_name.as_bytes().to_vec());
    for (path, bytes) in server.store_files() {
        for secret in &secrets {
            assert!(
                !holds(&bytes, secret),
                "{} holds {:?}",
                path.display(),
                String::from_utf8_lossy(secret)
            );
        }
    }

    let db = sled::open(server.store_path()).unwrap();
    // The DS's group records: no user name, client credential or client id in the clear.
    let mut identities: Vec<Vec<u8>> = vec![b"alicewonder".to_vec(), b"bobbuilder".to_vec()];
    for client in [&alice_phone, &alice_laptop, &bob_phone] {
        identities.push(codec::encode(client.credential()));
        identities.push(client.client_id().0.to_vec());
    }
    let groups = db.open_tree("ds_groups").unwrap();
    assert_eq!(groups.len(), 2, "the connection group and the named group");
    // The connection queues: not the initiator's name. The QS queues: no name at all.
    let scans: [(&str, &[Vec<u8>]); 3] = [
        ("ds_groups", &identities),
        ("as_connection_queues", &identities[..1]),
        ("qs_queues", &identities[..2]),
    ];
    for (tree, needles) in scans {
        for entry in db.open_tree(tree).unwrap().iter() {
            let (_, value) = entry.unwrap();
            for needle in needles {
                assert!(
                    !holds(&value, needle),
                    "a record of {tree} holds {needle:?}"
                );
            }
        }
    }

    // The log, even at debug level: no content, no group name, no friendship token; at info
    // level, no user name either.
    let log = server.log();
    assert!(log.contains("DEBUG"), "the server logged at debug level");
    for secret in &secrets {
        assert!(!holds(log.as_bytes(), secret));
    }
    for token in &tokens {
        assert!(!log.contains(&hex::encode(token.0)));
    }
    let info: Vec<&str> = log.lines().filter(|l| l.contains(" INFO ")).collect();
    assert!(!info.is_empty(), "the log has info lines");
    for line in info {
        assert!(
            !line.contains("alicewonder") && !line.contains("bobbuilder"),
            "{line}"
        );
    }
}
