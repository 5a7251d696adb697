//! Privacy Pass across two real homeservers (a.test, b.test): every costly anonymous operation
//! is refused without its tokens and taken with them, whoever issued them; a token is spent
//! once (a retry of its request excepted); a domain's users together get no more than the
//! receiving server's per-issuer budget; a user gets no more tokens than its budget; tokens of a
//! rotated-out key are refused after the overlap; and nothing the issuer stores can be joined
//! to what the redeemer stores.

mod common;

use std::time::{Duration, Instant};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

use common::{
    federation,
    pair::connected_pair,
    proxy::{proxied_pair, Fault, ProxiedPair},
    purse::buy,
    scan::{assert_holds, assert_holds_none, Secret, Snapshot},
    Identity, Options, Raw, TestServer,
};
use roost_protocol::{
    api, ds,
    tokens::{
        self,
        policy::{Operation, TokenPolicy, AS_TOKEN_POLICY},
        Token, TokenChallenge,
    },
    ClientId, Timestamp,
};

async fn policy(raw: &Raw) -> TokenPolicy {
    raw.get_decoded(AS_TOKEN_POLICY)
        .await
        .expect("the token policy")
}

async fn registered(raw: &Raw, user: &str) -> Identity {
    let mut who = Identity::new(&user.parse().unwrap());
    assert_eq!(raw.register(&mut who, None).await.status, 201);
    who
}

/// A costly request of each kind, at `server`, with a body nothing decodes: what a token check
/// lets through is then refused by name for its body or path, never 401.
fn costly_requests() -> Vec<(Operation, &'static str, String)> {
    let group = ds::ds_commit(b"some group");
    let client = ClientId([7; 16]);
    vec![
        (Operation::CreateGroup, "POST", ds::DS_GROUPS.to_string()),
        (Operation::Commit, "POST", group),
        (Operation::Commit, "POST", ds::ds_rejoin(b"some group")),
        (Operation::Message, "POST", ds::ds_messages(b"some group")),
        (
            Operation::ExternalJoin,
            "POST",
            ds::ds_join_connection_group(b"some group"),
        ),
        (
            Operation::ConnectionRequest,
            "POST",
            api::as_connection_queue(&client),
        ),
        (
            Operation::KeyPackageClaim,
            "POST",
            api::QS_CLAIM_KEY_PACKAGES.to_string(),
        ),
    ]
}

/// A base64url parameter of a `WWW-Authenticate: PrivateToken` challenge, decoded.
fn challenge_param(header: &str, name: &str) -> Vec<u8> {
    let quoted = header
        .split(&format!("{name}=\""))
        .nth(1)
        .unwrap_or_else(|| panic!("no {name} in {header:?}"));
    let value = quoted.split('"').next().unwrap();
    URL_SAFE_NO_PAD.decode(value).expect("base64url")
}

fn paid(tokens: &[Token], issuer: &str) -> Option<String> {
    Some(tokens::to_header(tokens, issuer))
}

/// A group creation at `server` with `body` (nothing that decodes: past the token check it is
/// refused `malformed_body`), paid with `tokens` of `issuer`.
async fn create_group_paying(
    server: &Raw,
    body: &[u8],
    tokens: &[Token],
    issuer: &str,
) -> common::Response {
    server
        .send("POST", ds::DS_GROUPS, body.to_vec(), paid(tokens, issuer))
        .await
}

#[tokio::test]
async fn every_costly_anonymous_operation_needs_a_token_and_takes_one_from_either_domain() {
    let (servers, _) = federation(
        &["a.test", "b.test"],
        Options {
            discovery_burst: 1,
            ..Options::default()
        },
    );
    let (a, b) = (servers[0].http().unpaid(), servers[1].http().unpaid());
    let alice = registered(&a, "alice@a.test").await;
    let bob = registered(&b, "bob@b.test").await;
    let (a_policy, b_policy) = (policy(&a).await, policy(&b).await);
    for (operation, method, path) in costly_requests() {
        let refused = b.send(method, &path, b"junk".to_vec(), None).await;
        assert_eq!(refused.status, 401, "{path} without a token");
        assert_eq!(refused.error_code(), "privacy_pass_required");
        assert!(refused.error_message().contains(operation.name()));
        // Alice's token (issued by a.test) and Bob's (by b.test) both pay at b.test.
        for (who, issuer, issuer_policy) in [(&alice, &a, &a_policy), (&bob, &b, &b_policy)] {
            let token = buy(issuer, who, issuer_policy, "b.test", 1).await.unwrap();
            let domain = issuer_policy.domain.as_str();
            let taken = b
                .send(method, &path, b"junk".to_vec(), paid(&token, domain))
                .await;
            assert_ne!(taken.status, 401, "{path} with a token of {domain}");
            assert!(
                (400..500).contains(&taken.status),
                "{path}: {}",
                taken.status
            );
        }
    }
    // Discovery: free within the burst, then paid.
    let discover = api::as_user_connection_packages(&"bob@b.test".parse().unwrap());
    let free = b.send("GET", &discover, Vec::new(), None).await;
    assert_ne!(free.status, 429);
    let over = b.send("GET", &discover, Vec::new(), None).await;
    assert_eq!(over.status, 429);
    let token = buy(&a, &alice, &a_policy, "b.test", 1).await.unwrap();
    let paid_for = b
        .send("GET", &discover, Vec::new(), paid(&token, "a.test"))
        .await;
    assert_ne!(paid_for.status, 429);
    assert_ne!(paid_for.status, 401);
    // A token for a.test is worth nothing at b.test.
    let for_a = buy(&a, &alice, &a_policy, "a.test", 1).await.unwrap();
    let wrong = create_group_paying(&b, b"junk", &for_a, "a.test").await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.error_code(), "privacy_pass_invalid");
}

#[tokio::test]
async fn a_request_refused_for_want_of_a_token_is_told_the_challenge_and_key_to_answer() {
    let (servers, _) = federation(&["a.test", "b.test"], Options::default());
    let (a, b) = (servers[0].http().unpaid(), servers[1].http().unpaid());
    let bob = registered(&b, "bob@b.test").await;
    let b_policy = policy(&b).await;
    let refused = b.send("POST", ds::DS_GROUPS, b"junk".to_vec(), None).await;
    assert_eq!(refused.status, 401);
    let challenge = refused.challenge.expect("a WWW-Authenticate challenge");
    let param = |name| challenge_param(&challenge, name);
    assert!(challenge.starts_with("PrivateToken "), "{challenge}");
    // b.test is the origin, its own issuer the one named, its current key the key to use.
    assert_eq!(
        param("challenge"),
        TokenChallenge::new("b.test", "b.test").encode()
    );
    let current = b_policy.issuing_key(Timestamp::now());
    assert_eq!(Some(param("token-key")), current.map(|k| k.spki.clone()));
    // A token answering that challenge is taken; a refused one is told again.
    let token = buy(&b, &bob, &b_policy, "b.test", 1).await.unwrap();
    let taken = create_group_paying(&b, b"junk", &token, "b.test").await;
    assert_eq!(taken.error_code(), "malformed_body");
    let spent = create_group_paying(&b, b"other junk", &token, "b.test").await;
    assert_eq!(spent.error_code(), "privacy_pass_spent");
    assert_eq!(spent.challenge.as_ref(), Some(&challenge));
    // a.test's challenge names a.test.
    let at_a = a.send("POST", ds::DS_GROUPS, b"junk".to_vec(), None).await;
    assert_eq!(
        challenge_param(&at_a.challenge.unwrap(), "challenge"),
        TokenChallenge::new("a.test", "a.test").encode()
    );
}

#[tokio::test]
async fn people_on_two_servers_connect_and_chat_paying_with_their_own_servers_tokens() {
    let p = connected_pair("alice", "bob", Options::default()).await;
    p.alice_phone.chat().send(&p.bob, "paid for").await.unwrap();
    // Each bought its tokens at home, and keeps what it did not spend, per server.
    let kept = |client: &roost_client::Client, domain: &str| {
        client
            .device()
            .store()
            .token_count(&domain.parse().unwrap())
    };
    assert!(kept(&p.alice_phone, p.alice.domain().as_str()) > 0);
    assert!(kept(&p.bob_phone, p.alice.domain().as_str()) > 0);
}

#[tokio::test]
async fn a_client_that_stays_open_buys_its_next_tokens_before_it_runs_out() {
    use roost_client::tokens::{BATCH, BUY_AHEAD_BELOW};
    let p = connected_pair("alice", "bob", Options::default()).await;
    let alice = p.alice_phone.with_tokens_bought_ahead();
    // The connection group lives at alice's DS: each message costs a token there.
    let ds = p.alice.domain().clone();
    let kept = || alice.device().store().token_count(&ds);
    for i in 0..2 * BATCH {
        alice
            .chat()
            .send(&p.bob, &format!("message {i}"))
            .await
            .unwrap();
        let waited = Instant::now();
        while kept() < BUY_AHEAD_BELOW {
            assert!(
                waited.elapsed() < Duration::from_secs(10),
                "after message {i} alice keeps {} tokens and buys none",
                kept()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn a_request_whose_answer_is_lost_is_sent_again_with_the_same_tokens() {
    let server = TestServer::start(Options::default());
    // The devices' state directories live as long as the clients.
    let ProxiedPair {
        proxy,
        alice,
        bob,
        devices: _devices,
    } = proxied_pair(&server).await;
    let domain = server.domain().parse().unwrap();
    let kept = || alice.device().store().token_count(&domain);
    alice.chat().send(bob.user(), "warm").await.unwrap();
    let before = kept();
    assert!(before >= 2, "alice keeps {before} tokens");
    proxy.inject("POST", "/messages", Fault::DropResponse, 1);
    alice.chat().send(bob.user(), "answer lost").await.unwrap();
    assert!(proxy.all_applied());
    assert_eq!(
        kept(),
        before - 1,
        "one message, one token, however often sent"
    );
}

#[tokio::test]
async fn a_token_is_spent_once_and_a_retry_of_its_request_is_answered_as_the_first() {
    let server = TestServer::start(Options::default());
    let raw = server.http().unpaid();
    let alice = registered(&raw, "alice@localhost").await;
    let issuer = policy(&raw).await;
    let token = buy(&raw, &alice, &issuer, "localhost", 1).await.unwrap();
    let first = create_group_paying(&raw, b"one request", &token, "localhost").await;
    assert_eq!(first.error_code(), "malformed_body");
    let again = create_group_paying(&raw, b"one request", &token, "localhost").await;
    assert_eq!(
        again.error_code(),
        "malformed_body",
        "a retry passes the token"
    );
    let other = create_group_paying(&raw, b"another request", &token, "localhost").await;
    assert_eq!(other.status, 401);
    assert_eq!(other.error_code(), "privacy_pass_spent");
}

#[tokio::test]
async fn a_domain_past_its_budget_here_is_refused_and_others_are_not() {
    let (servers, _) = federation(
        &["a.test", "b.test"],
        Options {
            settings: vec![
                (
                    "ROOST_TOKENS__REDEMPTIONS_PER_MINUTE_PER_ISSUER",
                    "1".into(),
                ),
                ("ROOST_TOKENS__REDEMPTIONS_BURST_PER_ISSUER", "3".into()),
            ],
            ..Options::default()
        },
    );
    let (a, b) = (servers[0].http().unpaid(), servers[1].http().unpaid());
    let alice = registered(&a, "alice@a.test").await;
    let bob = registered(&b, "bob@b.test").await;
    let a_tokens = buy(&a, &alice, &policy(&a).await, "b.test", 4)
        .await
        .unwrap();
    let b_tokens = buy(&b, &bob, &policy(&b).await, "b.test", 4).await.unwrap();
    for token in &a_tokens[..3] {
        assert_eq!(
            create_group_paying(&b, b"junk", std::slice::from_ref(token), "a.test")
                .await
                .error_code(),
            "malformed_body"
        );
    }
    let over = create_group_paying(&b, b"junk", std::slice::from_ref(&a_tokens[3]), "a.test").await;
    assert_eq!(over.status, 429);
    assert_eq!(over.error_code(), "issuer_over_budget");
    // b.test's own users are bounded by what b.test issues them, not by a's share.
    for token in &b_tokens {
        assert_eq!(
            create_group_paying(&b, b"junk", std::slice::from_ref(token), "b.test")
                .await
                .error_code(),
            "malformed_body"
        );
    }
}

#[tokio::test]
async fn a_user_gets_no_more_tokens_than_its_budget_per_period() {
    let server = TestServer::start(Options {
        settings: vec![("ROOST_TOKENS__PER_USER_PER_PERIOD", "30".into())],
        ..Options::default()
    });
    let raw = server.http().unpaid();
    let alice = registered(&raw, "alice@localhost").await;
    let issuer = policy(&raw).await;
    assert_eq!(
        buy(&raw, &alice, &issuer, "x.test", 20)
            .await
            .unwrap()
            .len(),
        20
    );
    let refused = buy(&raw, &alice, &issuer, "x.test", 20).await.unwrap_err();
    assert_eq!(refused.status, 429);
    assert_eq!(refused.error_code(), "token_budget_exhausted");
    assert_eq!(
        buy(&raw, &alice, &issuer, "x.test", 10)
            .await
            .unwrap()
            .len(),
        10
    );
    // Another user has a budget of its own.
    let bob = registered(&raw, "bob@localhost").await;
    assert_eq!(
        buy(&raw, &bob, &issuer, "x.test", 30).await.unwrap().len(),
        30
    );
    // The admin sees how many were issued in all, and whose count never.
    let inspected = server.admin_json(&["inspect", "tokens"]);
    assert_eq!(inspected["issued"][0]["issued"], 60, "{inspected}");
    assert_eq!(inspected["costs"]["message"], 1, "{inspected}");
    let text = inspected.to_string();
    assert!(!text.contains("alice") && !text.contains("bob"), "{text}");
}

#[tokio::test]
async fn tokens_of_a_rotated_out_key_are_taken_through_the_overlap_and_refused_after() {
    let server = TestServer::start(Options {
        settings: vec![
            ("ROOST_TOKENS__KEY_EPOCH_SECS", "3".into()),
            ("ROOST_TOKENS__KEY_OVERLAP_SECS", "2".into()),
        ],
        ..Options::default()
    });
    let raw = server.http().unpaid();
    let alice = registered(&raw, "alice@localhost").await;
    let issuer = policy(&raw).await;
    let now = roost_protocol::Timestamp::now();
    let key = issuer.issuing_key(now).unwrap().clone();
    let tokens = buy(&raw, &alice, &issuer, "localhost", 2).await.unwrap();
    // Into the overlap: another key signs, this one's tokens are still taken.
    wait_until(key.issues_until.0).await;
    let next = policy(&raw).await;
    let signing = next.issuing_key(roost_protocol::Timestamp::now());
    assert!(signing.is_some_and(|k| k.spki != key.spki));
    assert_eq!(
        create_group_paying(&raw, b"junk", std::slice::from_ref(&tokens[0]), "localhost")
            .await
            .error_code(),
        "malformed_body"
    );
    // Past the overlap: refused.
    wait_until(key.redeemable_until.0).await;
    let late =
        create_group_paying(&raw, b"junk", std::slice::from_ref(&tokens[1]), "localhost").await;
    assert_eq!(late.status, 401);
    assert_eq!(late.error_code(), "privacy_pass_invalid");
}

/// Sleeps until the Unix second `secs` has begun.
async fn wait_until(secs: u64) {
    let now_ms = roost_protocol::ids::now_millis();
    let at_ms = secs * 1000 + 50;
    if at_ms > now_ms {
        tokio::time::sleep(Duration::from_millis(at_ms - now_ms)).await;
    }
}

#[tokio::test]
async fn nothing_the_issuer_keeps_joins_a_redemption_to_its_user() {
    let (mut servers, _) = federation(&["a.test", "b.test"], Options::default());
    let (a, b) = (servers[0].http().unpaid(), servers[1].http().unpaid());
    let alice = registered(&a, "alice@a.test").await;
    let tokens = buy(&a, &alice, &policy(&a).await, "b.test", 3)
        .await
        .unwrap();
    for token in &tokens {
        let spent = create_group_paying(&b, b"junk", std::slice::from_ref(token), "a.test").await;
        assert_eq!(spent.error_code(), "malformed_body");
    }
    // Stopped as an admin would: what a store holds, not what a crash loses, is the question.
    for server in servers.iter_mut() {
        server.terminate();
    }
    let whole = |server: &TestServer| -> Vec<u8> {
        Snapshot::of(server)
            .files
            .into_iter()
            .flat_map(|(_, bytes)| bytes)
            .collect()
    };
    let (issuer, redeemer) = (whole(&servers[0]), whole(&servers[1]));
    let nonces: Vec<Secret> = tokens
        .iter()
        .map(|t| Secret::new("a token's nonce", t.nonce.to_vec()))
        .collect();
    // The redeemer holds each token's nonce (its spent record); the issuer never saw one, and
    // holds no other part of a token's input either.
    for nonce in &nonces {
        assert_holds("b.test's store", &redeemer, nonce);
    }
    assert_holds_none("a.test's store", &issuer, &nonces);
    let authenticators: Vec<Secret> = tokens
        .iter()
        .map(|t| Secret::new("a token's authenticator", t.authenticator[..32].to_vec()))
        .collect();
    assert_holds_none("a.test's store", &issuer, &authenticators);
    // The issuer holds who took tokens; the redeemer does not.
    assert_holds(
        "a.test's store",
        &issuer,
        &Secret::text("the user", "alice@a.test"),
    );
    assert_holds_none(
        "b.test's store",
        &redeemer,
        &[Secret::text("the user", "alice@a.test")],
    );
}

#[tokio::test]
async fn tokens_of_a_domain_that_cannot_be_checked_or_is_denied_are_refused_by_name() {
    let (servers, _) = federation(
        &["a.test", "b.test"],
        Options {
            deny: vec!["c.test".into()],
            ..Options::default()
        },
    );
    let (a, b) = (servers[0].http().unpaid(), servers[1].http().unpaid());
    let alice = registered(&a, "alice@a.test").await;
    let token = buy(&a, &alice, &policy(&a).await, "b.test", 1)
        .await
        .unwrap();
    // No server answers for nowhere.test: its keys cannot be had.
    let unreachable = create_group_paying(&b, b"junk", &token, "nowhere.test").await;
    assert_eq!(unreachable.status, 401);
    assert_eq!(unreachable.error_code(), "peer_unreachable");
    let denied = create_group_paying(&b, b"junk", &token, "c.test").await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.error_code(), "domain_not_allowed");
    let not_a_domain = create_group_paying(&b, b"junk", &token, "Not A Domain").await;
    assert_eq!(not_a_domain.error_code(), "privacy_pass_invalid");
    // The token itself was spent on none of these: it still pays.
    assert_eq!(
        create_group_paying(&b, b"junk", &token, "a.test")
            .await
            .error_code(),
        "malformed_body"
    );
}

#[tokio::test]
async fn a_domain_creates_so_many_groups_per_token_epoch_and_its_tokens_are_kept_past_it() {
    let (servers, _) = federation(
        &["a.test", "b.test"],
        Options {
            settings: vec![("ROOST_TOKENS__GROUPS_PER_ISSUER_EPOCH", "2".into())],
            ..Options::default()
        },
    );
    let (a, b) = (servers[0].http().unpaid(), servers[1].http().unpaid());
    let alice = registered(&a, "alice@a.test").await;
    let bob = registered(&b, "bob@b.test").await;
    let a_tokens = buy(&a, &alice, &policy(&a).await, "b.test", 3)
        .await
        .unwrap();
    let b_tokens = buy(&b, &bob, &policy(&b).await, "b.test", 1).await.unwrap();
    let create = async |token: &Token, issuer: &str, body: &[u8]| {
        create_group_paying(&b, body, std::slice::from_ref(token), issuer).await
    };
    for (token, body) in a_tokens[..2].iter().zip([&b"one"[..], b"two"]) {
        assert_eq!(
            create(token, "a.test", body).await.error_code(),
            "malformed_body"
        );
    }
    let over = create(&a_tokens[2], "a.test", b"three").await;
    assert_eq!(
        (over.status, over.error_code().as_str()),
        (429, "groups_per_issuer_epoch")
    );
    let told = over.error_message();
    assert!(
        told.contains("tokens.groups_per_issuer_epoch") && told.contains("retry in"),
        "{told}"
    );
    // The refused creation did not spend its token: it pays for something else.
    let claim = b
        .send(
            "POST",
            api::QS_CLAIM_KEY_PACKAGES,
            b"junk".to_vec(),
            paid(std::slice::from_ref(&a_tokens[2]), "a.test"),
        )
        .await;
    assert_ne!(claim.status, 401, "{}", claim.error_message());
    // A retry of a counted creation is answered as the first was.
    assert_eq!(
        create(&a_tokens[0], "a.test", b"one").await.error_code(),
        "malformed_body"
    );
    // b.test's own users have a count of their own.
    assert_eq!(
        create(&b_tokens[0], "b.test", b"four").await.error_code(),
        "malformed_body"
    );
}
