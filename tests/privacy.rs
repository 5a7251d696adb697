//! What the server must not learn, checked on its disk and in its log after real use, while
//! the data is still there: alice (a phone and a laptop) and bob connect, chat, and chat in a
//! named group; then the DS takes a message from each of alice's clients whose answers are
//! lost, messages pile up that alice's phone has not fetched, and the server is killed
//! (`kill -9`) while bob is sending. The store as the crash left it is searched — the DS's
//! records opened with the key the members hold — for every secret in every encoding
//! (`common::scan`).
//!
//! Every scan first finds something known to be where it looks (its positive control), so an
//! empty, deleted or unreadable place cannot pass for a clean one.

mod common;

use std::{cell::Cell, time::Duration};

use common::{
    devices::{connect, Devices},
    proxy::{Fault, FaultProxy},
    scan::{self, assert_holds, assert_holds_none, Secret, Snapshot},
    Options, TestServer, PASSWORD,
};
use roost_client::{store::pending::Outgoing, Client, QueueKind};
use roost_protocol::{
    api::{QueueItem, QueueMessage},
    codec,
    connection::EarKey,
    ds::GroupKeys,
};

const ALICE: &str = "alicewonder";
const BOB: &str = "bobbuilder";
const GROUP_NAME: &str = "secret garden party";
const TEXTS: [&str; 6] = [
    "the eagle lands at midnight",
    "bring the blue umbrella",
    "meet at the old mill",
    "the ferry leaves at dawn",
    "the key is under the mat",
    "burn this letter after reading",
];
/// The start of each message bob sends while the server is killed.
const WHISPER: &str = "whispered as the lights went out";

/// The DS's encryption contexts (`actors/src/group`): each record is encrypted under the
/// group-state EAR key bound to its kind and its group.
const STATE_CONTEXT: &[u8] = b"roost ds group state v1";
const LEDGER_CONTEXT: &[u8] = b"roost ds group ledger v1";

/// The use the store and log are searched after, and what the clients know of it.
struct Scene {
    /// Killed while bob was sending.
    server: TestServer,
    store: Snapshot,
    alice_phone: Client,
    alice_laptop: Client,
    bob: Client,
    /// Both users' friendship tokens.
    tokens: Vec<[u8; 32]>,
    _devices: Devices,
}

impl Scene {
    async fn play() -> Scene {
        let mut server = TestServer::start(Options {
            log: "debug",
            ..Options::default()
        });
        // alice's clients reach the server through a proxy that can lose their answers.
        let proxy = FaultProxy::start(server.url.trim_start_matches("http://")).await;
        let devices = Devices::new();
        let (alice, bob_name) = (server.user(ALICE), server.user(BOB));
        let alice_phone = devices
            .register_at(&proxy.url(), "alice-phone", &alice)
            .await;
        let alice_laptop =
            Client::add_client(devices.path("alice-laptop"), &proxy.url(), &alice, PASSWORD)
                .await
                .unwrap();
        assert!(matches!(alice_laptop.initial_key_packages(), Some(Ok(_))));
        let bob = devices.register(&server, "bob-phone", &bob_name).await;
        connect(&alice_phone, &bob, &[&alice_laptop]).await;

        alice_phone.chat().send(&bob_name, TEXTS[0]).await.unwrap();
        bob.chat().send(&alice, TEXTS[1]).await.unwrap();
        alice_laptop.groups().create(GROUP_NAME).await.unwrap();
        alice_laptop
            .groups()
            .add(GROUP_NAME, &bob_name)
            .await
            .unwrap();
        sync_all(&[&bob]).await;
        bob.groups().send(GROUP_NAME, TEXTS[2]).await.unwrap();
        sync_all(&[&alice_phone, &alice_laptop, &bob]).await;
        let log = alice_phone.groups().messages(GROUP_NAME).await.unwrap();
        assert_eq!(log.last().unwrap().text, TEXTS[2], "the chats did happen");
        let mut tokens = Vec::new();
        for client in [&alice_phone, &bob] {
            let token = client.server().friendship_token(client.signer()).await;
            tokens.push(token.unwrap().0);
        }

        // The DS takes a message of each of alice's clients (and each of the three retries),
        // and neither hears it: each keeps its message pending, with its operation id. A
        // client reads its queue before it sends, so from here on alice's phone reads nothing.
        proxy.inject("POST", "/messages", Fault::DropResponse, 4);
        let lost = alice_phone.chat().send(&bob_name, TEXTS[3]).await;
        assert_eq!(lost.unwrap_err().code(), "unconfirmed");
        bob.chat().send(&alice, TEXTS[4]).await.unwrap();
        proxy.inject("POST", "/messages", Fault::DropResponse, 4);
        let lost = alice_laptop.groups().send(GROUP_NAME, TEXTS[5]).await;
        assert_eq!(lost.unwrap_err().code(), "unconfirmed");
        assert!(proxy.all_applied());

        crash_while_sending(&mut server, &bob).await;
        let store = Snapshot::of(&server);
        Scene {
            server,
            store,
            alice_phone,
            alice_laptop,
            bob,
            tokens,
            _devices: devices,
        }
    }

    fn clients(&self) -> [&Client; 3] {
        [&self.alice_phone, &self.alice_laptop, &self.bob]
    }

    /// Who the clients are: names, credentials, client ids.
    fn identities(&self) -> Vec<Secret> {
        let mut secrets = vec![
            Secret::text("alice's name", ALICE),
            Secret::text("bob's name", BOB),
        ];
        for client in self.clients() {
            secrets.extend(client_identity(client));
        }
        secrets
    }

    /// What was said, and the group's name.
    fn contents() -> Vec<Secret> {
        let mut secrets: Vec<Secret> = TEXTS
            .iter()
            .map(|text| Secret::text(format!("the message {text:?}"), text))
            .collect();
        secrets.push(Secret::text("a message sent as the server died", WHISPER));
        secrets.push(Secret::text("the group's name", GROUP_NAME));
        secrets
    }

    fn tokens(&self) -> Vec<Secret> {
        let owners = ["alice's friendship token", "bob's friendship token"];
        owners
            .iter()
            .zip(&self.tokens)
            .map(|(owner, token)| Secret::new(*owner, *token))
            .collect()
    }

    /// Both groups (the connection and the named group), with their keys, as alice's phone
    /// holds them.
    fn groups(&self) -> Vec<(&'static str, Vec<u8>, GroupKeys)> {
        let store = self.alice_phone.device().store();
        let contacts = store.contacts().unwrap();
        let named = store.named_groups().unwrap();
        assert_eq!((contacts.len(), named.len()), (1, 1));
        vec![
            (
                "the connection",
                contacts[0].group_id.clone(),
                contacts[0].keys.clone(),
            ),
            (
                "the named group",
                named[0].group_id.clone(),
                named[0].keys.clone(),
            ),
        ]
    }

    /// The DS's record of a group in `tree`, opened with the group-state key.
    fn open_ds_record(&self, tree: &str, context: &[u8], group_id: &[u8], key: &EarKey) -> Vec<u8> {
        let records = self.store.tree(tree);
        assert_eq!(records.len(), 2, "{tree}: one record per group");
        let (_, ciphertext) = records
            .iter()
            .find(|(id, _)| id == group_id)
            .unwrap_or_else(|| panic!("{tree} has no record of the group"));
        key.decrypt(&[context, group_id].concat(), ciphertext)
            .unwrap_or_else(|_| panic!("{tree}: the members' key does not open the record"))
    }
}

/// Sync each client, checking that nothing it read was unusable.
async fn sync_all(clients: &[&Client]) {
    for client in clients {
        let report = client.sync().await.unwrap();
        assert!(report.failed.is_empty(), "{:?}", report.failed);
    }
}

/// `bob` sends into the named group again and again; once three were answered, the server is
/// killed with the next on its way.
async fn crash_while_sending(server: &mut TestServer, bob: &Client) {
    let answered = Cell::new(0);
    let sending = async {
        for i in 0.. {
            match bob
                .groups()
                .send(GROUP_NAME, &format!("{WHISPER} {i}"))
                .await
            {
                Ok(_) => answered.set(answered.get() + 1),
                Err(e) if answered.get() < 3 => panic!("a send before the crash failed: {e}"),
                Err(_) => {}
            }
        }
    };
    let crash = async {
        while answered.get() < 3 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        server.kill();
    };
    tokio::select! {
        () = sending => {}
        () = crash => {}
    }
}

/// A client's device name (its state directory's), for messages.
fn device(client: &Client) -> String {
    let dir = client.state_dir().file_name().unwrap();
    dir.to_string_lossy().into_owned()
}

/// What identifies one client: its credential (whole and its parts) and its id.
fn client_identity(client: &Client) -> Vec<Secret> {
    let who = device(client);
    let credential = client.credential();
    vec![
        Secret::new(format!("{who}: credential"), codec::encode(credential)),
        Secret::new(format!("{who}: client id"), client.client_id().0),
        Secret::new(
            format!("{who}: credential key"),
            credential.body.verifying_key.0,
        ),
        Secret::new(
            format!("{who}: credential signature"),
            credential.signature.0,
        ),
    ]
}

/// The messages of `client`'s queue in a queue tree (`tree`, its large bodies in
/// `tree_large`), opened in order with the client's queue key and its copy of the queue's key
/// chain.
fn open_queue(store: &Snapshot, tree: &str, client: &Client) -> Vec<QueueItem> {
    let id = client.client_id();
    let kind = match tree {
        "qs_queues" => QueueKind::Messages,
        _ => QueueKind::Connections,
    };
    let position = client.device().store().queue_position(kind).unwrap();
    let mut chain = position.chain;
    let large = store.tree(&format!("{tree}_large"));
    store
        .tree(tree)
        .iter()
        // Message records: client id ‖ 0 ‖ seq.
        .filter(|(key, _)| key.len() == 25 && key[..16] == id.0 && key[16] == 0)
        .map(|(key, value)| {
            let body = match value.len() {
                // Over 16 KiB: the record holds the length, the large tree the body.
                8 => &large.iter().find(|(k, _)| k == key).unwrap().1,
                _ => value,
            };
            let message: QueueMessage = codec::decode(body).unwrap();
            message
                .open(&client.identity().queue_key, &id, &mut chain)
                .expect("the client's queue key opens its queued message")
        })
        .collect()
}

#[tokio::test]
async fn no_store_file_holds_a_message_or_the_group_name() {
    let scene = Scene::play().await;
    let files = &scene.store.files;
    let held = |secret: &Secret| {
        files
            .iter()
            .any(|(_, bytes)| secret.found_in(bytes).is_some())
    };
    // Positive control: the files are the store's, crash and all. The AS keeps the users and
    // their credentials in the clear, and a message alice's phone has not fetched is there,
    // sealed.
    let phone = scene.alice_phone.client_id().0;
    let mut phone_queue = scene
        .store
        .tree("qs_queues")
        .iter()
        .filter(|(key, _)| key.len() == 25 && key[..16] == phone && key[16] == 0);
    let (_, unfetched) = phone_queue
        .next()
        .expect("alice's phone has messages waiting");
    for secret in [
        Secret::text("alice's name", ALICE),
        Secret::text("bob's name", BOB),
        Secret::new(
            "alice's credential",
            codec::encode(scene.alice_phone.credential()),
        ),
        Secret::new("a sealed message alice has not fetched", unfetched.clone()),
    ] {
        assert!(held(&secret), "no store file holds {}", secret.label);
    }

    for (path, bytes) in files {
        assert_holds_none(&path.display().to_string(), bytes, &Scene::contents());
    }
}

#[tokio::test]
async fn the_ds_state_decrypted_with_the_group_key_holds_no_name_or_credential() {
    let scene = Scene::play().await;
    let mut secrets = scene.identities();
    secrets.extend(Scene::contents());
    secrets.extend(scene.tokens());
    for (group, id, keys) in scene.groups() {
        let state =
            scene.open_ds_record("ds_groups", STATE_CONTEXT, &id, &keys.group_state_ear_key);
        // Positive control: the state holds each member's MLS leaf, with its signature key and
        // the pseudonym its credential carries, both in the GroupInfo (raw) and in the public
        // group as openmls stores it (JSON, bytes as lists of numbers): were a leaf to carry a
        // name or a credential, the scan would see it in either.
        let place = format!("the DS state of {group}");
        for client in scene.clients() {
            let member = client.device().store().group_access(&id).unwrap();
            assert!(member.is_some(), "every client is in both groups");
            let mls = client.device().store().mls_identity().unwrap().unwrap();
            let who = device(client);
            for leaf in [
                Secret::new(
                    format!("{who}'s MLS signature key"),
                    mls.signature_public_key,
                ),
                Secret::new(format!("{who}'s MLS pseudonym"), mls.pseudonym),
            ] {
                let forms = leaf.forms_found_in(&state);
                assert!(
                    forms.contains(&"raw") && forms.contains(&"decimal list"),
                    "{place} holds {} as {forms:?}",
                    leaf.label
                );
            }
        }
        assert_holds_none(&place, &state, &secrets);
    }
}

#[tokio::test]
async fn the_ds_ledger_decrypted_with_the_group_key_holds_no_name_or_content() {
    let scene = Scene::play().await;
    let mut secrets = scene.identities();
    secrets.extend(Scene::contents());
    secrets.extend(scene.tokens());
    for (group, id, keys) in scene.groups() {
        let ledger = scene.open_ds_record(
            "ds_group_ledgers",
            LEDGER_CONTEXT,
            &id,
            &keys.group_state_ear_key,
        );
        // Positive control: the ledger remembers the operation of alice's message whose answer
        // was lost; the client that sent it still holds it, pending.
        let pending = scene
            .clients()
            .into_iter()
            .find_map(|client| client.device().store().pending_op(&id).unwrap());
        let Some(Outgoing::Message { request, .. }) = pending.map(|p| p.request) else {
            panic!("alice's message to {group} is not pending");
        };
        let op = Secret::new(
            "the operation id of alice's unanswered message",
            request.op.0,
        );
        assert_holds(&format!("the DS ledger of {group}"), &ledger, &op);
        assert_holds_none(&format!("the DS ledger of {group}"), &ledger, &secrets);
    }
}

#[tokio::test]
async fn messages_waiting_in_the_queues_hold_no_name_or_content() {
    let scene = Scene::play().await;
    // Positive control: alice's phone's queue holds what it has not fetched — its own copy of
    // its unanswered message, bob's reply, the laptop's unanswered message to the group (the
    // very MLS messages the two clients keep pending), and bob's messages sent as the server
    // died.
    let waiting = open_queue(&scene.store, "qs_queues", &scene.alice_phone);
    assert!(
        waiting.len() >= 6,
        "{} messages wait for alice's phone",
        waiting.len()
    );
    let opened = codec::encode(&waiting);
    for client in [&scene.alice_phone, &scene.alice_laptop] {
        let pending = client.device().store().pending_ops().unwrap();
        assert_eq!(pending.len(), 1, "{}", device(client));
        let message = Secret::new("alice's unanswered MLS message", pending[0].mls_message());
        assert_holds(
            "alice's phone's queue, opened with its key",
            &opened,
            &message,
        );
    }

    let mut secrets = scene.identities();
    secrets.extend(Scene::contents());
    secrets.extend(scene.tokens());
    for tree in ["qs_queues", "qs_queues_large"] {
        for (key, value) in scene.store.tree(tree) {
            let place = format!("{tree} record {}", hex::encode(key));
            assert_holds_none(&place, value, &secrets);
        }
    }
}

#[tokio::test]
async fn the_log_holds_no_content_group_name_or_token_and_its_info_lines_no_user_name() {
    let scene = Scene::play().await;
    let log = scene.server.log();
    // Positive controls: the server logged at debug level, and its debug lines name the users
    // (request paths name them); it logged info lines too.
    let debug: String = log.lines().filter(|l| l.contains(" DEBUG ")).collect();
    assert_holds(
        "the debug lines",
        debug.as_bytes(),
        &Secret::text("alice's name", ALICE),
    );
    let info: Vec<&str> = log.lines().filter(|l| l.contains(" INFO ")).collect();
    assert!(!info.is_empty(), "the log has info lines");

    let mut secrets = Scene::contents();
    secrets.extend(scene.tokens());
    assert_holds_none("the debug log", log.as_bytes(), &secrets);
    let names = [
        Secret::text("alice's name", ALICE),
        Secret::text("bob's name", BOB),
    ];
    for line in info {
        assert_holds_none(line, line.as_bytes(), &names);
    }
}

#[tokio::test]
async fn a_connection_request_waiting_in_the_responders_queue_does_not_name_the_initiator() {
    let mut server = TestServer::start(Options::default());
    let devices = Devices::new();
    let alice = devices
        .register(&server, "alice", &server.user(ALICE))
        .await;
    let bob = devices.register(&server, "bob", &server.user(BOB)).await;
    alice.connections().connect(bob.user()).await.unwrap();
    // Before bob fetches it.
    server.kill();
    let store = Snapshot::of(&server);

    let mut initiator = vec![Secret::text("alice's name", ALICE)];
    initiator.extend(client_identity(&alice));
    // Positive control: bob's connection queue holds one message, alice's request; opened with
    // bob's queue key and then his connection key, it holds each of alice's identifiers the
    // scan looks for.
    let waiting = open_queue(&store, "as_connection_queues", &bob);
    let [QueueItem::ConnectionRequest(sealed)] = waiting.as_slice() else {
        panic!("bob's connection queue holds {waiting:?}");
    };
    let bob_store = bob.device().store();
    let key = bob_store
        .connection_key(&sealed.connection_package)
        .unwrap();
    let key = key.expect("bob holds the key of the package alice sealed to");
    let request = codec::encode(&sealed.open(&key.secret).unwrap());
    for secret in &initiator {
        assert_holds("alice's request, opened", &request, secret);
    }

    for tree in ["as_connection_queues", "as_connection_queues_large"] {
        for (key, value) in store.tree(tree) {
            let place = format!("{tree} record {}", hex::encode(key));
            assert_holds_none(&place, value, &initiator);
        }
    }
}

#[test]
fn the_scan_finds_a_secret_in_every_encoding_wherever_it_sits() {
    // Known answers (RFC 4648), so the encoder itself is right.
    assert_eq!(
        scan::base64_standard(b"foobar"),
        (b"Zm9vYmFy".to_vec(), b"Zm9vYmFy".to_vec())
    );
    assert_eq!(
        scan::base64_standard(b"fooba"),
        (b"Zm9vYmE".to_vec(), b"Zm9vYmE=".to_vec())
    );
    assert_eq!(
        scan::base64_standard(b"foob"),
        (b"Zm9vYg".to_vec(), b"Zm9vYg==".to_vec())
    );
    assert_eq!(
        scan::base64_url_safe(&[0xfb, 0xff]),
        (b"-_8".to_vec(), b"-_8=".to_vec())
    );
    assert_eq!(scan::base64_standard(&[0xfb, 0xff]).1, b"+/8=".to_vec());

    // A random secret, one whose base64 is all `/` (`_` URL-safe) at every offset, and a name.
    let secrets: [Vec<u8>; 3] = [
        rand::random::<[u8; 20]>().to_vec(),
        vec![0xff; 20],
        b"alicewonder@example.org".to_vec(),
    ];
    for secret_bytes in &secrets {
        let secret = Secret::new("the secret", secret_bytes.clone());
        for before in 0..6 {
            for after in 0..4 {
                let mut value: Vec<u8> = (0..before).map(|_| rand::random()).collect();
                value.extend_from_slice(secret_bytes);
                value.extend((0..after).map(|_| rand::random::<u8>()));
                let (std, std_padded) = scan::base64_standard(&value);
                let (url, url_padded) = scan::base64_url_safe(&value);
                for form in [
                    value.clone(),
                    hex::encode(&value).into_bytes(),
                    hex::encode_upper(&value).into_bytes(),
                    format!("{value:?}").into_bytes(),
                    serde_json::to_vec(&value).unwrap(),
                    std,
                    std_padded,
                    url,
                    url_padded,
                ] {
                    let mut haystack = b"some log line: ".to_vec();
                    haystack.extend_from_slice(&form);
                    haystack.extend_from_slice(b" and more");
                    assert!(
                        secret.found_in(&haystack).is_some(),
                        "{before} bytes before, {after} after: {}",
                        String::from_utf8_lossy(&form)
                    );
                }
            }
        }
    }
    // And nothing is found where it is not.
    let secret = Secret::new("the secret", secrets[0].clone());
    let other: [u8; 20] = rand::random();
    assert_eq!(secret.found_in(&other), None);
}
