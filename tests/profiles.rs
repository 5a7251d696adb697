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
