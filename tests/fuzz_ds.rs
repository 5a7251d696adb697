//! Fuzzing the DS over HTTP with mangled MLS: commits, GroupInfos and messages that are almost
//! right, sent to a real server, are each refused with a 4xx naming the problem — never a 5xx,
//! a hang or damage to the group, which takes a proper message afterwards. (A "mangled" commit
//! that came out as the one already taken is a retry, answered as the first time.)
//!
//! `ROOST_FUZZ_ITERATIONS` (default 20 000) / 40 requests per target; `ROOST_FUZZ_SEED=S`
//! repeats a failure.

mod common;

use common::{
    fuzz::{base_seed, input, iterations, Rng},
    mls::{self, create_group, Member},
    Options, TestServer,
};
use roost_protocol::{codec, ds};

#[tokio::test]
async fn mangled_mls_is_refused_by_name_and_the_group_goes_on() {
    let server = TestServer::start(Options::default());
    let http = server.http();
    let mut alice = Member::register(&server, "alice").await;
    let bob = Member::register(&server, "bob").await;
    let (group_id, keys) = create_group(&http, server.domain(), &mut alice, false).await;
    let (status, commit) =
        mls::add_member(&http, server.domain(), &group_id, &keys, &mut alice, &bob).await;
    assert_eq!(status, 200);
    let sample_message = alice.message_request(&keys, b"a sample");

    let rounds = (iterations() / 40).max(10);
    let mut rng = Rng(base_seed() ^ 0xD5);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for round in 0..rounds {
        let (path, body) = match round % 4 {
            0 => {
                let mut bad = commit.clone();
                bad.commit = input(&mut rng, std::slice::from_ref(&commit.commit));
                (ds::ds_commit(&group_id), codec::encode(&bad))
            }
            1 => {
                let mut bad = commit.clone();
                bad.group_info = input(&mut rng, std::slice::from_ref(&commit.group_info));
                (ds::ds_commit(&group_id), codec::encode(&bad))
            }
            2 => {
                let mut bad = sample_message.clone();
                bad.message = input(&mut rng, std::slice::from_ref(&sample_message.message));
                (ds::ds_messages(&group_id), codec::encode(&bad))
            }
            _ => (
                ds::ds_commit(&group_id),
                input(&mut rng, &[codec::encode(&commit)]),
            ),
        };
        let response = http.send("POST", &path, body.clone(), None).await;
        *statuses.entry(response.status).or_default() += 1;
        // A mutation can undo itself (a bit flipped twice, a piece spliced over its own copy):
        // the commit already taken, sent again, is a retry and is answered as the first time.
        let retry = codec::decode::<ds::CommitRequest>(&body)
            .is_ok_and(|sent| codec::encode(&sent) == codec::encode(&commit));
        let expected = if retry {
            response.status == 200
        } else {
            (400..500).contains(&response.status) || response.status == 202
        };
        assert!(
            expected,
            "round {round} (ROOST_FUZZ_SEED={}): {} {}; body {}",
            base_seed(),
            response.status,
            String::from_utf8_lossy(&response.body),
            hex::encode(&body)
        );
        if response.status >= 400 {
            // Refused by name.
            response.error_code();
        }
    }
    eprintln!("mangled MLS over HTTP: {statuses:?}");
    // The group still takes a proper message.
    let proper = alice.message_request(&keys, b"still here");
    let response = http
        .send(
            "POST",
            &ds::ds_messages(&group_id),
            codec::encode(&proper),
            None,
        )
        .await;
    assert_eq!(response.status, 202);
}
