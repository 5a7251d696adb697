use super::*;
use roost_protocol::{
    connection::{ConnectionEstablishmentPackage, ConnectionPackageHash},
    credentials::ClientCredential,
    queue::QueueChain,
    HpkeSecretKey, SigningKey, Timestamp,
};

use crate::transport::QueueKind;
use roost_protocol::credentials::Validity;

fn sample_identity() -> Identity {
    let user: UserName = "alice@a.test".parse().unwrap();
    let key = SigningKey::generate();
    let (queue_key, _) = HpkeSecretKey::generate();
    let client_id = ClientId::random();
    let credential = ClientCredential::issue(
        user.clone(),
        client_id,
        key.verifying_key(),
        Validity::starting_now(3600),
        &SigningKey::generate(),
    );
    Identity {
        user,
        client_id,
        signing_key: key,
        queue_key,
        credential,
        server_url: "http://127.0.0.1:1".into(),
    }
}

#[test]
fn identity_and_position_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let identity = sample_identity();
    {
        let state = State::open_or_create(dir.path()).unwrap();
        assert!(state.identity().unwrap().is_none());
        state.save_identity(&identity).unwrap();
        state
            .set_queue_position(
                QueueKind::Messages,
                &QueuePosition {
                    received: Some(7),
                    acked: Some(5),
                    chain: Some(QueueChain::start(8)),
                },
            )
            .unwrap();
    }
    let state = State::open(dir.path()).unwrap();
    let back = state.identity().unwrap().unwrap();
    assert_eq!(back.user, identity.user);
    assert_eq!(back.client_id, identity.client_id);
    assert_eq!(back.credential, identity.credential);
    assert_eq!(
        back.signing_key.verifying_key(),
        identity.signing_key.verifying_key()
    );
    assert_eq!(back.queue_key.public_key(), identity.queue_key.public_key());
    assert_eq!(back.server_url, identity.server_url);
    let position = state.queue_position(QueueKind::Messages).unwrap();
    assert_eq!(position.next_from(), 8);
    assert_eq!(position.pending_ack(), Some(7));
    assert_eq!(position.chain.map(|c| c.seq()), Some(8));
    // The connection queue has a position of its own.
    assert_eq!(
        state.queue_position(QueueKind::Connections).unwrap(),
        QueuePosition::default()
    );
}

#[test]
fn a_second_identity_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = State::open_or_create(dir.path()).unwrap();
    let first = sample_identity();
    state.save_identity(&first).unwrap();
    assert!(matches!(
        state.ensure_unregistered(),
        Err(StateError::AlreadyRegistered { .. })
    ));
    let err = state.save_identity(&sample_identity()).unwrap_err();
    assert!(
        matches!(err, StateError::AlreadyRegistered { client_id, .. } if client_id == first.client_id)
    );
    assert_eq!(
        state.identity().unwrap().unwrap().client_id,
        first.client_id
    );
}

#[test]
fn an_unknown_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    State::open_or_create(dir.path())
        .unwrap()
        .put_raw(KEY_FORMAT, codec::encode(&99u32));
    let err = State::open_or_create(dir.path()).unwrap_err();
    assert!(
        matches!(err, StateError::UnsupportedFormat { found: 99, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("format 99"), "{err}");
}

#[test]
fn data_without_a_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        db.insert(b"something", b"else".to_vec()).unwrap();
        db.flush().unwrap();
    }
    assert!(matches!(
        State::open_or_create(dir.path()),
        Err(StateError::NotAStateDir(_))
    ));
}

#[test]
fn an_unregistered_directory_is_named_as_such_and_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let err = State::open(&missing).unwrap_err();
    assert!(matches!(err, StateError::NotRegistered(_)));
    assert!(err.to_string().contains("roost-client register"));
    assert!(!missing.exists());

    let empty = dir.path().join("empty");
    drop(State::open_or_create(&empty).unwrap());
    assert!(matches!(
        State::open(&empty),
        Err(StateError::NotRegistered(_))
    ));
}

#[cfg(unix)]
#[test]
fn the_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    drop(State::open_or_create(&state_dir).unwrap());
    let mode = std::fs::metadata(&state_dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn a_directory_in_use_is_named_after_a_wait() {
    let dir = tempfile::tempdir().unwrap();
    let _held = State::open_or_create(dir.path()).unwrap();
    let started = Instant::now();
    let err = State::open_or_create(dir.path()).unwrap_err();
    assert!(matches!(err, StateError::Locked(_)), "{err}");
    assert!(started.elapsed() >= LOCK_WAIT);
}

#[test]
fn a_directory_can_be_reopened_at_once_after_a_drop() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..20 {
        let state = State::open_or_create(dir.path()).unwrap();
        state
            .set_queue_position(QueueKind::Messages, &QueuePosition::default())
            .unwrap();
    }
}

fn sample_request(id: &str, received_at: u64) -> PendingRequest {
    use roost_protocol::connection::{ConnectionEstablishmentBody, EarKey};
    let sender = sample_identity();
    PendingRequest {
        id: id.into(),
        received_at: Timestamp(received_at),
        package: ConnectionEstablishmentPackage::new(
            ConnectionEstablishmentBody {
                sender_client_credential: sender.credential,
                connection_group_id: vec![1; 16],
                group_state_ear_key: EarKey::random(),
                credential_ear_key: EarKey::random(),
                responder: "bob@b.test".parse().unwrap(),
                connection_package: ConnectionPackageHash([7; 32]),
                initiator_profile: None,
            },
            &sender.signing_key,
        ),
    }
}

fn key(last_resort: bool, not_after: u64) -> ConnectionKey {
    ConnectionKey {
        secret: HpkeSecretKey::generate().0,
        last_resort,
        not_after: Timestamp(not_after),
    }
}

#[test]
fn a_connection_batch_is_written_at_once_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (used, kept) = (
        ConnectionPackageHash([1; 32]),
        ConnectionPackageHash([2; 32]),
    );
    let later = sample_request("bbbbbbbb", 20);
    let earlier = sample_request("aaaaaaaa", 10);
    {
        let state = State::open_or_create(dir.path()).unwrap();
        state
            .save_connection_keys(&[(used, key(false, 100)), (kept, key(true, 100))])
            .unwrap();
        state
            .save_connection_batch(&ConnectionBatch {
                requests: vec![later.clone(), earlier.clone()],
                seen: vec![([9; 32], Timestamp(100))],
                used_keys: vec![used],
                position: QueuePosition {
                    received: Some(3),
                    acked: None,
                    chain: None,
                },
            })
            .unwrap();
    }
    let state = State::open_or_create(dir.path()).unwrap();
    assert!(state.connection_key(&used).unwrap().is_none());
    assert!(state.connection_key(&kept).unwrap().unwrap().last_resort);
    assert!(state.request_seen(&[9; 32]).unwrap());
    assert!(!state.request_seen(&[8; 32]).unwrap());
    assert_eq!(
        state.pending_requests().unwrap(),
        vec![earlier.clone(), later.clone()]
    );
    assert!(state.request_id_taken("aaaaaaaa").unwrap());
    assert_eq!(
        state
            .queue_position(QueueKind::Connections)
            .unwrap()
            .received,
        Some(3)
    );
    assert_eq!(
        state.queue_position(QueueKind::Messages).unwrap().received,
        None
    );

    assert!(state.remove_request("aaaaaaaa").unwrap());
    assert!(!state.remove_request("aaaaaaaa").unwrap());
    assert_eq!(state.pending_requests().unwrap(), vec![later]);
}

#[test]
fn keys_and_seen_requests_are_pruned_only_past_their_packages_end() {
    let dir = tempfile::tempdir().unwrap();
    let state = State::open_or_create(dir.path()).unwrap();
    let (old, new) = (
        ConnectionPackageHash([1; 32]),
        ConnectionPackageHash([2; 32]),
    );
    state
        .save_connection_keys(&[(old, key(true, 50)), (new, key(true, 150))])
        .unwrap();
    state
        .save_connection_batch(&ConnectionBatch {
            seen: vec![([1; 32], Timestamp(50)), ([2; 32], Timestamp(150))],
            ..ConnectionBatch::default()
        })
        .unwrap();
    assert_eq!(state.prune_connection_keys(Timestamp(100)).unwrap(), 1);
    assert!(state.connection_key(&old).unwrap().is_none());
    assert!(state.connection_key(&new).unwrap().is_some());
    assert!(!state.request_seen(&[1; 32]).unwrap());
    assert!(state.request_seen(&[2; 32]).unwrap());
    assert_eq!(state.connection_keys().unwrap().len(), 1);
}

#[test]
fn a_corrupt_record_is_reported_not_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    let state = State::open_or_create(dir.path()).unwrap();
    state.put_raw(KEY_IDENTITY, vec![0xff, 0x01]);
    assert!(matches!(state.identity(), Err(StateError::Corrupt { .. })));
}

#[test]
fn a_message_log_is_in_the_ds_order_per_group_and_stores_each_numbered_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = State::open_or_create(dir.path()).unwrap();
    let alice: UserName = "alice@a.test".parse().unwrap();
    let bob: UserName = "bob@a.test".parse().unwrap();
    // alice's own message was answered (number 5) before bob's earlier one (4) was read.
    let own = state
        .append_message(b"g1", 5, Some(&alice), "hello")
        .unwrap();
    assert_eq!(own.map(|m| m.seq), Some(5));
    assert!(state
        .append_message(b"g1", 4, Some(&bob), "hi")
        .unwrap()
        .is_some());
    // The same delivery again, as after a crash before the position was saved.
    assert_eq!(
        state.append_message(b"g1", 4, Some(&bob), "hi").unwrap(),
        None
    );
    state.mark_seq(b"g1", 6).unwrap();
    assert!(state.handled_seq(b"g1", 6).unwrap());
    assert!(!state.handled_seq(b"g2", 6).unwrap());
    state.append_message(b"g1", 9, None, "who?").unwrap();
    state.append_message(b"g2", 1, Some(&bob), "other").unwrap();
    drop(state);
    let state = State::open_or_create(dir.path()).unwrap();
    let log: Vec<_> = state
        .messages(b"g1")
        .unwrap()
        .into_iter()
        .map(|m| (m.from, m.text, m.seq))
        .collect();
    assert_eq!(
        log,
        vec![
            (Some(bob.clone()), "hi".into(), 4),
            (Some(alice), "hello".into(), 5),
            (None, "who?".into(), 9)
        ]
    );
    assert_eq!(state.messages(b"g2").unwrap().len(), 1);
    assert!(state.messages(b"g3").unwrap().is_empty());
}

#[test]
fn a_format_2_log_is_read_after_the_upgrade_with_every_sender_kept() {
    let dir = tempfile::tempdir().unwrap();
    let bob: UserName = "bob@a.test".parse().unwrap();
    {
        let state = State::open_or_create(dir.path()).unwrap();
        let old = messages::StoredMessageV2 {
            from: bob.clone(),
            text: "from before".into(),
            at: Timestamp(5),
            seq: 1,
            queue_seq: Some(3),
        };
        let mut key = group_prefix(b"g1");
        key.extend_from_slice(&1u64.to_be_bytes());
        state.messages.insert(key, codec::encode(&old)).unwrap();
        state.put_raw(KEY_FORMAT, codec::encode(&2u32));
    }
    let state = State::open_or_create(dir.path()).unwrap();
    // A message the DS numbers now comes after what was kept before, whatever its number.
    state
        .append_message(b"g1", 1, Some(&bob), "numbered")
        .unwrap();
    let log = state.messages(b"g1").unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].from, Some(bob));
    assert_eq!((log[0].text.as_str(), log[0].seq), ("from before", 1));
    assert_eq!(log[1].text, "numbered");
    drop(state);
    // Upgraded once: the format mark says so, and a second open reads it as it is.
    let state = State::open_or_create(dir.path()).unwrap();
    assert_eq!(state.messages(b"g1").unwrap().len(), 2);
    assert_eq!(
        read::<u32>(dir.path(), &state.db, KEY_FORMAT).unwrap(),
        Some(FORMAT_VERSION)
    );
}

#[test]
fn operations_kept_by_format_4_are_dropped_by_the_upgrade_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let bob: UserName = "bob@a.test".parse().unwrap();
    {
        let state = State::open_or_create(dir.path()).unwrap();
        state.append_message(b"g1", 1, Some(&bob), "kept").unwrap();
        // An operation of the old shape, which this build cannot read.
        state
            .pending_ops
            .insert(b"g1", b"an old operation".to_vec())
            .unwrap();
        state.put_raw(KEY_FORMAT, codec::encode(&4u32));
    }
    let state = State::open_or_create(dir.path()).unwrap();
    assert!(state.pending_ops().unwrap().is_empty());
    assert_eq!(state.messages(b"g1").unwrap()[0].text, "kept");
    assert_eq!(
        read::<u32>(dir.path(), &state.db, KEY_FORMAT).unwrap(),
        Some(FORMAT_VERSION)
    );
}

#[test]
fn queue_positions_kept_by_format_5_are_read_after_the_upgrade_without_a_chain() {
    let dir = tempfile::tempdir().unwrap();
    {
        let state = State::open_or_create(dir.path()).unwrap();
        // (received, acked) as format 5 encoded a position.
        let old = codec::encode(&(Some(7u64), Some(5u64)));
        state.put_raw(KEY_QUEUE, old);
        state.put_raw(KEY_FORMAT, codec::encode(&5u32));
    }
    let state = State::open_or_create(dir.path()).unwrap();
    assert_eq!(
        state.queue_position(QueueKind::Messages).unwrap(),
        QueuePosition {
            received: Some(7),
            acked: Some(5),
            chain: None,
        }
    );
    assert_eq!(
        state.queue_position(QueueKind::Connections).unwrap(),
        QueuePosition::default()
    );
    assert_eq!(
        read::<u32>(dir.path(), &state.db, KEY_FORMAT).unwrap(),
        Some(FORMAT_VERSION)
    );
}
