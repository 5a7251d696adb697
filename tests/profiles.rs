//! Profiles at the homeserver, against a real `roost`: a user's clients store their encrypted
//! profile under an unguessable id, anyone holding the id fetches it without saying who they are,
//! only its owner may replace or delete it, and the server never holds it in the clear. Bad input
//! gets a clear error and changes nothing.

mod common;

use common::{
    scan::{assert_holds, assert_holds_none, Secret, Snapshot},
    Identity, Options, TestServer,
};
use roost_protocol::{
    api, codec,
    connection::EarKey,
    profile::{EncryptedProfile, Profile, ProfileId, MAX_ENCRYPTED_PROFILE},
};

fn png(bytes: usize) -> Vec<u8> {
    let mut image = b"\x89PNG\r\n\x1a\n".to_vec();
    image.extend((0..bytes).map(|n| (n * 7 % 251) as u8));
    image
}

fn alices_profile() -> Profile {
    Profile {
        display_name: "Alice Pleasance Liddell".into(),
        about: "curiouser and curiouser".into(),
        avatar: Some(png(30_000)),
    }
}

async fn registered(server: &TestServer, local: &str) -> Identity {
    let mut who = Identity::new(&server.user(local));
    assert_eq!(server.http().register(&mut who, None).await.status, 201);
    who
}

async fn put(server: &TestServer, who: &Identity, id: &ProfileId, body: Vec<u8>) -> (u16, String) {
    let response = server
        .http()
        .signed(who, "PUT", &api::as_profile(id), body)
        .await;
    let code = match response.status {
        200..=299 => String::new(),
        _ => response.error_code(),
    };
    (response.status, code)
}

async fn fetch(server: &TestServer, id: &ProfileId) -> common::Response {
    server
        .http()
        .send("GET", &api::as_profile(id), Vec::new(), None)
        .await
}

#[tokio::test]
async fn a_profile_is_fetched_by_whoever_holds_its_id_and_only_its_owner_changes_it() {
    let mut server = TestServer::start(Options {
        log: "debug",
        // Room for a profile beyond its limit, so that the profile's own limit answers.
        max_body_bytes: 2 * MAX_ENCRYPTED_PROFILE,
        ..Options::default()
    });
    let alice = registered(&server, "alice").await;
    let mallory = registered(&server, "mallory").await;
    let (id, key) = (ProfileId::random(), EarKey::random());
    let sealed = alices_profile().seal(&id, &key).unwrap();
    assert_eq!(
        put(&server, &alice, &id, codec::encode(&sealed)).await,
        (204, String::new())
    );

    // No account, no signature: the id is all it takes.
    let fetched = fetch(&server, &id).await;
    assert_eq!(fetched.status, 200);
    let served: EncryptedProfile = fetched.decode();
    assert_eq!(served.open(&id, &key).unwrap(), alices_profile());
    assert_eq!(
        fetch(&server, &ProfileId::random()).await.error_code(),
        "unknown_profile"
    );

    // Only alice replaces or deletes it.
    let forged = Profile {
        display_name: "not alice".into(),
        ..alices_profile()
    }
    .seal(&id, &key)
    .unwrap();
    assert_eq!(
        put(&server, &mallory, &id, codec::encode(&forged)).await,
        (403, "profile_of_another_user".into())
    );
    let deleted = server
        .http()
        .signed(&mallory, "DELETE", &api::as_profile(&id), Vec::new())
        .await;
    assert_eq!(
        (deleted.status, deleted.error_code()),
        (404, "unknown_profile".into())
    );
    assert_eq!(
        fetch(&server, &id).await.decode::<EncryptedProfile>(),
        sealed
    );

    // Bad input: a clear error, nothing changed.
    let unsigned = server
        .http()
        .send("PUT", &api::as_profile(&id), codec::encode(&forged), None)
        .await;
    assert_eq!(unsigned.status, 401);
    let huge = EncryptedProfile(vec![1; MAX_ENCRYPTED_PROFILE + 1]);
    assert_eq!(
        put(&server, &alice, &id, codec::encode(&huge)).await,
        (413, "profile_too_large".into())
    );
    assert_eq!(put(&server, &alice, &id, b"garbage".to_vec()).await.0, 400);
    let bad_id = server
        .http()
        .send("GET", "/as/v1/profiles/not-hex", Vec::new(), None)
        .await;
    assert_eq!(bad_id.status, 400, "{}", bad_id.error_message());
    assert_eq!(
        fetch(&server, &id).await.decode::<EncryptedProfile>(),
        sealed
    );

    // A bounded number per user: a client stores the new one, then deletes the old.
    for _ in 1..api::MAX_PROFILES_PER_USER {
        let other = ProfileId::random();
        let sealed = alices_profile().seal(&other, &key).unwrap();
        assert_eq!(
            put(&server, &alice, &other, codec::encode(&sealed)).await.0,
            204
        );
    }
    let one_more = ProfileId::random();
    let sealed_more = alices_profile().seal(&one_more, &key).unwrap();
    assert_eq!(
        put(&server, &alice, &one_more, codec::encode(&sealed_more)).await,
        (409, "too_many_profiles".into())
    );
    let deleted = server
        .http()
        .signed(&alice, "DELETE", &api::as_profile(&id), Vec::new())
        .await;
    assert_eq!(deleted.status, 204);
    assert_eq!(fetch(&server, &id).await.status, 404);
    assert_eq!(
        put(&server, &alice, &one_more, codec::encode(&sealed_more))
            .await
            .0,
        204
    );

    // The server holds it sealed only: no display name, about line or avatar in its store or
    // its debug log.
    server.kill();
    let snapshot = Snapshot::of(&server);
    let profile = alices_profile();
    let secrets = [
        Secret::text("display name", &profile.display_name),
        Secret::text("about line", &profile.about),
        Secret::new("avatar", profile.avatar.clone().unwrap()[8..4000].to_vec()),
    ];
    let ciphertext = Secret::new("the stored ciphertext", sealed_more.0[..64].to_vec());
    let all: Vec<u8> = snapshot.files.iter().flat_map(|(_, b)| b.clone()).collect();
    assert_holds("the store", &all, &ciphertext);
    for (path, bytes) in &snapshot.files {
        assert_holds_none(&path.display().to_string(), bytes, &secrets);
    }
    assert_holds_none("the log", server.log().as_bytes(), &secrets);
}

#[tokio::test]
async fn fetching_profiles_is_rate_limited_per_address_like_discovery() {
    let server = TestServer::start(Options {
        discovery_burst: 3,
        ..Options::default()
    });
    let id = ProfileId::random();
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(fetch(&server, &id).await.status);
    }
    assert_eq!(codes, [404, 404, 404, 429, 429]);
}

/// How many profiles `server` has handed out (its own count of answered fetches).
async fn profiles_served(server: &TestServer) -> f64 {
    let text = reqwest::get(server.metrics_url())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| {
            line.starts_with("roost_http_requests_total{")
                && line.contains("route=\"GET /as/v1/profiles/{profile}\"")
                && line.contains("status=\"200\"")
        })
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn the_responder_sees_the_initiators_profile_only_when_it_asks() {
    let (servers, resolve) = common::federation(
        &["a.test", "b.test"],
        Options {
            settings: vec![("ROOST_METRICS__BIND", "127.0.0.1:0".into())],
            ..Options::default()
        },
    );
    let devices = common::devices::Devices::federated(&resolve);
    let (alice_name, bob_name) = (servers[0].user("alice"), servers[1].user("bob"));
    let alice = devices.register(&servers[0], "alice", &alice_name).await;
    let bob = devices.register(&servers[1], "bob", &bob_name).await;

    // A profile beyond the limits is refused by the client, and nothing is stored.
    let too_large = Profile {
        avatar: Some(png(300 * 1024)),
        ..alices_profile()
    };
    let refused = alice.profiles().set(too_large).await.unwrap_err();
    assert_eq!(refused.code(), "bad_profile", "{refused}");
    assert_eq!(alice.profiles().own().unwrap(), None);

    let reference = alice.profiles().set(alices_profile()).await.unwrap();
    assert_eq!(reference.domain.as_str(), "a.test");
    alice.connections().connect(&bob_name).await.unwrap();
    let requests = bob.connections().requests().await.unwrap();
    let [request] = requests.received.as_slice() else {
        panic!("one request expected: {requests:?}");
    };
    // Reading the request fetched nothing: a stranger's profile is fetched only on request.
    assert_eq!(profiles_served(&servers[0]).await, 0.0);

    let shown = bob.profiles().of_request(&request.id).await.unwrap();
    assert_eq!(shown, alices_profile());
    assert_eq!(profiles_served(&servers[0]).await, 1.0);

    // A reference with another key, or to nothing, gets a clear error.
    let wrong_key = roost_protocol::profile::ProfileRef {
        key: EarKey::random(),
        ..reference.clone()
    };
    let tampered = bob.profiles().fetch(&wrong_key).await.unwrap_err();
    assert_eq!(tampered.code(), "bad_profile", "{tampered}");
    let gone = roost_protocol::profile::ProfileRef {
        id: ProfileId::random(),
        ..reference.clone()
    };
    let missing = bob.profiles().fetch(&gone).await.unwrap_err();
    assert_eq!(missing.code(), "unknown_profile", "{missing}");

    // A new profile replaces the old one on the server.
    let updated = Profile {
        about: "now through the looking-glass".into(),
        ..alices_profile()
    };
    let new_reference = alice.profiles().set(updated.clone()).await.unwrap();
    assert_ne!(new_reference.id, reference.id);
    assert_eq!(bob.profiles().fetch(&new_reference).await.unwrap(), updated);
    let old = bob.profiles().fetch(&reference).await.unwrap_err();
    assert_eq!(old.code(), "unknown_profile", "{old}");
}

#[tokio::test]
async fn a_profile_is_set_and_shown_from_the_command_line_and_a_requests_sender_shown_on_request() {
    use common::devices::run_json;
    let server = TestServer::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let (alice_dir, bob_dir) = (dir.path().join("alice"), dir.path().join("bob"));
    for (state, user) in [(&alice_dir, "alice@localhost"), (&bob_dir, "bob@localhost")] {
        run_json(state.clone(), &["register", user, "--server", &server.url]).await;
    }
    let avatar = dir.path().join("me.png");
    std::fs::write(&avatar, png(2000)).unwrap();
    let avatar_arg = avatar.display().to_string();
    let set = run_json(
        alice_dir.clone(),
        &[
            "profile",
            "set",
            "--name",
            "Alice",
            "--avatar",
            &avatar_arg,
            "--about",
            "hi",
        ],
    )
    .await;
    assert_eq!(set["display_name"], "Alice", "{set}");
    assert_eq!(set["avatar"]["type"], "image/png", "{set}");
    assert_eq!(set["self_declared"], false);
    // What is left out stays.
    run_json(alice_dir.clone(), &["profile", "set", "--about", "hello"]).await;
    let shown = run_json(alice_dir.clone(), &["profile", "show"]).await;
    assert_eq!(
        (
            &shown["display_name"],
            &shown["about"],
            &shown["avatar"]["bytes"]
        ),
        (
            &serde_json::json!("Alice"),
            &serde_json::json!("hello"),
            &serde_json::json!(2008)
        ),
        "{shown}"
    );

    // Bad input: a clear error, the profile unchanged.
    let not_an_image = dir.path().join("me.txt");
    std::fs::write(&not_an_image, "hello").unwrap();
    let too_large = dir.path().join("big.png");
    std::fs::write(&too_large, png(300 * 1024)).unwrap();
    let long_name = "x".repeat(65);
    for (args, code) in [
        (
            vec!["--avatar", not_an_image.to_str().unwrap()],
            "bad_profile",
        ),
        (vec!["--avatar", too_large.to_str().unwrap()], "bad_avatar"),
        (vec!["--name", long_name.as_str()], "bad_profile"),
    ] {
        let alice_dir = alice_dir.clone();
        let args: Vec<String> = ["profile", "set"]
            .into_iter()
            .chain(args)
            .map(str::to_owned)
            .collect();
        let (ok, error) = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            common::devices::cli(&alice_dir, &args)
        })
        .await
        .unwrap();
        assert!(!ok);
        assert_eq!(error["error"], code, "{error}");
    }
    assert_eq!(
        run_json(alice_dir.clone(), &["profile", "show"]).await,
        shown
    );

    run_json(alice_dir.clone(), &["connect", "bob@localhost"]).await;
    let requests = run_json(bob_dir.clone(), &["requests"]).await;
    let id = requests["requests"][0]["id"].as_str().unwrap().to_owned();
    let theirs = run_json(bob_dir.clone(), &["requests", "--profile", &id]).await;
    assert_eq!(theirs["user"], "alice@localhost");
    assert_eq!(theirs["display_name"], "Alice");
    assert_eq!(theirs["self_declared"], true);
}

#[tokio::test]
async fn contacts_get_each_others_profile_and_every_update_of_it() {
    use common::pair::{connected_pair, settle};
    let p = connected_pair("alice", "bob", Options::default()).await;
    let alices = alices_profile();
    p.alice_phone.profiles().set(alices.clone()).await.unwrap();
    let all = p.all();
    let has = |profile: Profile| {
        let (bob_phone, bob_laptop, alice) = (&p.bob_phone, &p.bob_laptop, p.alice.clone());
        async move {
            for bob in [bob_phone, bob_laptop] {
                if bob.profiles().of_contact(&alice).await.ok().flatten() != Some(profile.clone()) {
                    return false;
                }
            }
            true
        }
    };
    settle(&all, async || has(alices.clone()).await).await;
    assert_eq!(
        p.bob_phone.profiles().display_name(&p.alice).unwrap(),
        "Alice Pleasance Liddell"
    );
    // Alice has not got a profile of bob's: he set none; his user name stands.
    assert_eq!(
        p.alice_phone.profiles().display_name(&p.bob).unwrap(),
        p.bob.to_string()
    );

    // An update, from alice's other client, reaches both of bob's.
    let updated = Profile {
        display_name: "Alice L.".into(),
        avatar: None,
        ..alices
    };
    p.alice_laptop
        .profiles()
        .set(updated.clone())
        .await
        .unwrap();
    settle(&all, async || has(updated.clone()).await).await;
}
