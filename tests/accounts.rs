//! AS: registration, tokens, clients, credentials — over real HTTP against a real server.

mod common;

use common::{Identity, Options, TestServer, PASSWORD};
use roost_protocol::{
    api::{self, ClientList},
    auth::RequestSignature,
    codec,
    credentials::{AsCredentials, ChainError},
    ids::now_millis,
    Timestamp,
};

#[tokio::test]
async fn open_registration_returns_a_credential_that_chains_to_the_domains_as_credential() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let mut alice = Identity::new(&server.user("alice"));
    let response = http.register(&mut alice, None).await;
    assert_eq!(response.status, 201);
    let credential = alice.credential.clone().unwrap();
    assert_eq!(credential.user(), &alice.user);
    assert_eq!(credential.body.verifying_key, alice.key.verifying_key());

    let creds: AsCredentials = http
        .send("GET", api::AS_CREDENTIALS, vec![], None)
        .await
        .decode();
    assert_eq!(creds.verify_client(&credential, Timestamp::now()), Ok(()));
}

#[tokio::test]
async fn the_as_credential_survives_a_restart_unchanged() {
    let mut server = TestServer::start(Options::default());
    let before: AsCredentials = server
        .http()
        .send("GET", api::AS_CREDENTIALS, vec![], None)
        .await
        .decode();
    server.restart();
    let after: AsCredentials = server
        .http()
        .send("GET", api::AS_CREDENTIALS, vec![], None)
        .await
        .decode();
    assert_eq!(before, after);
}

#[tokio::test]
async fn a_credential_from_another_server_for_the_same_domain_does_not_verify() {
    // Two servers both claiming "localhost": the second's credentials are a forgery from the
    // first one's point of view.
    let real = TestServer::start(Options::default());
    let forger = TestServer::start(Options::default());
    let mut mallory = Identity::new(&forger.user("alice"));
    assert_eq!(forger.http().register(&mut mallory, None).await.status, 201);
    let creds: AsCredentials = real
        .http()
        .send("GET", api::AS_CREDENTIALS, vec![], None)
        .await
        .decode();
    let forged = mallory.credential.unwrap();
    assert!(matches!(
        creds.verify_client(&forged, Timestamp::now()),
        Err(ChainError::UnknownIntermediate(_))
    ));
}

#[tokio::test]
async fn a_user_name_can_be_registered_once() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let mut first = Identity::new(&server.user("alice"));
    assert_eq!(http.register(&mut first, None).await.status, 201);
    let mut second = Identity::new(&server.user("alice"));
    let response = http.register(&mut second, None).await;
    assert_eq!(response.status, 409);
    assert_eq!(response.error_code(), "user_taken");
    // The first registration is untouched: its client still authenticates.
    let list: ClientList = http
        .signed(&first, "GET", api::AS_OWN_CLIENTS, vec![])
        .await
        .decode();
    assert_eq!(list.clients.len(), 1);
}

#[tokio::test]
async fn users_of_another_domain_cannot_register_here() {
    let server = TestServer::start(Options::default());
    let mut stranger = Identity::new(&"alice@elsewhere.test".parse().unwrap());
    let response = server.http().register(&mut stranger, None).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.error_code(), "wrong_domain");
}

#[tokio::test]
async fn token_registration_needs_a_valid_single_use_token() {
    let server = TestServer::start(Options {
        policy: "token",
        ..Options::default()
    });
    let http = server.http();

    let mut alice = Identity::new(&server.user("alice"));
    let response = http.register(&mut alice, None).await;
    assert_eq!(
        (response.status, response.error_code().as_str()),
        (403, "token_required")
    );
    let response = http.register(&mut alice, Some("not-a-token".into())).await;
    assert_eq!(
        (response.status, response.error_code().as_str()),
        (403, "bad_token")
    );

    // `roost admin token create` talks to the running server through its admin socket.
    let token = server.registration_token();
    assert_eq!(token.len(), 32);

    assert_eq!(
        http.register(&mut alice, Some(token.clone())).await.status,
        201
    );
    let mut bob = Identity::new(&server.user("bob"));
    let response = http.register(&mut bob, Some(token)).await;
    assert_eq!(
        (response.status, response.error_code().as_str()),
        (403, "bad_token")
    );
}

#[tokio::test]
async fn a_token_created_while_the_server_is_stopped_works_after_it_starts() {
    let mut server = TestServer::start(Options {
        policy: "token",
        ..Options::default()
    });
    assert!(server.terminate().success());
    let token = server.registration_token();
    server.start_again();
    let mut alice = Identity::new(&server.user("alice"));
    assert_eq!(
        server.http().register(&mut alice, Some(token)).await.status,
        201
    );
}

#[tokio::test]
async fn a_further_client_needs_the_users_password_and_existing_clients_hear_of_it() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let mut phone = Identity::new(&server.user("alice"));
    assert_eq!(http.register(&mut phone, None).await.status, 201);

    let mut laptop = Identity::new(&server.user("alice"));
    let response = http.add_client(&mut laptop, "wrong password").await;
    assert_eq!(
        (response.status, response.error_code().as_str()),
        (401, "wrong_password")
    );
    let mut ghost = Identity::new(&server.user("nobody"));
    let response = http.add_client(&mut ghost, PASSWORD).await;
    assert_eq!(
        (response.status, response.error_code().as_str()),
        (401, "wrong_password")
    );

    assert_eq!(http.add_client(&mut laptop, PASSWORD).await.status, 201);
    let list: ClientList = http
        .signed(&laptop, "GET", api::AS_OWN_CLIENTS, vec![])
        .await
        .decode();
    let ids: Vec<_> = list
        .clients
        .iter()
        .map(|c| c.credential.client_id())
        .collect();
    assert_eq!(ids, vec![phone.client_id(), laptop.client_id()]);

    let batch: api::QueueBatch = http.fetch(&phone, 1, 10, 2000).await.decode();
    let item = phone
        .open(api::QueueKind::Messages, &batch.messages[0])
        .unwrap();
    assert_eq!(
        item,
        api::QueueItem::Notice(api::Notice::ClientAdded {
            client_id: laptop.client_id()
        })
    );
}

#[tokio::test]
async fn a_deleted_client_can_no_longer_authenticate() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let mut phone = Identity::new(&server.user("alice"));
    http.register(&mut phone, None).await;
    let mut laptop = Identity::new(&server.user("alice"));
    http.add_client(&mut laptop, PASSWORD).await;

    let response = http
        .signed(
            &phone,
            "DELETE",
            &api::as_own_client(&laptop.client_id()),
            vec![],
        )
        .await;
    assert_eq!(response.status, 204);
    let response = http
        .signed(&laptop, "GET", api::AS_OWN_CLIENTS, vec![])
        .await;
    assert_eq!(
        (response.status, response.error_code().as_str()),
        (401, "unauthenticated")
    );
    let list: ClientList = http
        .signed(&phone, "GET", api::AS_OWN_CLIENTS, vec![])
        .await
        .decode();
    assert_eq!(list.clients.len(), 1);
}

#[tokio::test]
async fn a_client_cannot_delete_another_users_client() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let mut alice = Identity::new(&server.user("alice"));
    http.register(&mut alice, None).await;
    let mut bob = Identity::new(&server.user("bob"));
    http.register(&mut bob, None).await;
    let response = http
        .signed(
            &alice,
            "DELETE",
            &api::as_own_client(&bob.client_id()),
            vec![],
        )
        .await;
    assert_eq!(response.status, 404, "{}", server.log());
    let list: ClientList = http
        .signed(&bob, "GET", api::AS_OWN_CLIENTS, vec![])
        .await
        .decode();
    assert_eq!(list.clients.len(), 1);
}

#[tokio::test]
async fn requests_with_a_wrong_missing_or_replayed_signature_get_401_naming_the_scheme() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let mut alice = Identity::new(&server.user("alice"));
    http.register(&mut alice, None).await;
    let path = api::AS_OWN_CLIENTS;

    let response = http.send("GET", path, vec![], None).await;
    assert_eq!(
        (response.status, response.error_code().as_str()),
        (401, "unauthenticated")
    );
    assert_eq!(response.challenge.as_deref(), Some("Roost-Signature"));

    // Signed by a key that is not the client's.
    let impostor = Identity::new(&alice.user);
    let wrong = RequestSignature::sign(
        &impostor.key,
        alice.client_id(),
        "GET",
        path,
        &[],
        now_millis(),
    );
    let response = http
        .send("GET", path, vec![], Some(wrong.to_header()))
        .await;
    assert_eq!(response.status, 401);

    // Signed for another path.
    let other = RequestSignature::sign(
        &alice.key,
        alice.client_id(),
        "GET",
        "/as/v1/other",
        &[],
        now_millis(),
    );
    assert_eq!(
        http.send("GET", path, vec![], Some(other.to_header()))
            .await
            .status,
        401
    );

    // Too old.
    let stale = RequestSignature::sign(
        &alice.key,
        alice.client_id(),
        "GET",
        path,
        &[],
        now_millis() - 120_000,
    );
    assert_eq!(
        http.send("GET", path, vec![], Some(stale.to_header()))
            .await
            .status,
        401
    );

    // Unknown client.
    let unknown = RequestSignature::sign(
        &alice.key,
        roost_protocol::ClientId::random(),
        "GET",
        path,
        &[],
        now_millis(),
    );
    assert_eq!(
        http.send("GET", path, vec![], Some(unknown.to_header()))
            .await
            .status,
        401
    );

    // A good signature works once, and only once.
    let good = RequestSignature::sign(
        &alice.key,
        alice.client_id(),
        "GET",
        path,
        &[],
        now_millis(),
    );
    assert_eq!(
        http.send("GET", path, vec![], Some(good.to_header()))
            .await
            .status,
        200
    );
    let response = http.send("GET", path, vec![], Some(good.to_header())).await;
    assert_eq!(
        (response.status, response.error_code().as_str()),
        (401, "unauthenticated")
    );

    let response = http
        .send("GET", path, vec![], Some("Roost-Signature nonsense".into()))
        .await;
    assert_eq!(response.status, 401);
}

#[tokio::test]
async fn an_expired_client_credential_gets_401() {
    let server = TestServer::start(Options {
        client_lifetime_secs: 1,
        ..Options::default()
    });
    let http = server.http();
    let mut alice = Identity::new(&server.user("alice"));
    http.register(&mut alice, None).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let response = http
        .signed(&alice, "GET", api::AS_OWN_CLIENTS, vec![])
        .await;
    assert_eq!(response.status, 401);
    assert!(String::from_utf8_lossy(&response.body).contains("expired"));
}

#[tokio::test]
async fn bad_inputs_get_specific_errors_and_change_nothing() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let mut alice = Identity::new(&server.user("alice"));
    http.register(&mut alice, None).await;

    let cases: Vec<(&str, String, Vec<u8>, u16, &str)> = vec![
        (
            "POST",
            api::AS_USERS.into(),
            b"not bincode".to_vec(),
            400,
            "malformed_body",
        ),
        ("POST", api::AS_USERS.into(), vec![], 400, "malformed_body"),
        (
            "POST",
            api::AS_USERS.into(),
            vec![0; 70_000],
            413,
            "body_too_large",
        ),
        ("GET", "/no/such/route".into(), vec![], 404, "not_found"),
        (
            "PUT",
            api::AS_USERS.into(),
            vec![],
            405,
            "method_not_allowed",
        ),
        (
            "POST",
            "/as/v1/users/Not%20A%20User/clients".into(),
            vec![],
            400,
            "bad_path",
        ),
        // Punctuation alone is no name.
        (
            "GET",
            "/as/v1/users/..@localhost/connection-packages".into(),
            vec![],
            400,
            "bad_path",
        ),
        (
            "POST",
            api::as_user_clients(&alice.user),
            vec![1, 2, 3],
            400,
            "malformed_body",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let response = http.send(method, &path, body, None).await;
        assert_eq!(
            (response.status, response.error_code().as_str()),
            (status, code),
            "{method} {path}"
        );
    }

    // A valid encoding of the wrong shape, and trailing bytes after a valid body.
    let mut bob = Identity::new(&server.user("bob"));
    let mut body = codec::encode(&api::RegisterUser {
        user: bob.user.clone(),
        password: PASSWORD.into(),
        registration_token: None,
        client: bob.new_client(),
    });
    body.push(0);
    let response = http.send("POST", api::AS_USERS, body, None).await;
    assert_eq!(
        (response.status, response.error_code().as_str()),
        (400, "malformed_body")
    );

    // A proof made for another user name.
    let mut body = api::RegisterUser {
        user: bob.user.clone(),
        password: PASSWORD.into(),
        registration_token: None,
        client: alice.new_client(),
    };
    let response = http
        .send("POST", api::AS_USERS, codec::encode(&body), None)
        .await;
    assert_eq!(
        (response.status, response.error_code().as_str()),
        (400, "bad_proof")
    );
    body.client = bob.new_client();
    body.password = "short".into();
    let response = http
        .send("POST", api::AS_USERS, codec::encode(&body), None)
        .await;
    assert_eq!(
        (response.status, response.error_code().as_str()),
        (400, "bad_password")
    );

    // Nothing changed: alice still works, bob can still register.
    let list: ClientList = http
        .signed(&alice, "GET", api::AS_OWN_CLIENTS, vec![])
        .await
        .decode();
    assert_eq!(list.clients.len(), 1);
    assert_eq!(http.register(&mut bob, None).await.status, 201);
    assert!(!server.log().contains("panicked"));
}
