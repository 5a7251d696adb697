//! The store's format version: checked at every open, and older layouts upgraded in place.
//!
//! History:
//! - 1: the first layout.
//! - 2: large queued messages live in a tree of their own and the queue tree holds their length
//!   (which version 1 would misread, but version 1 never wrote such a record). Upgraded by
//!   marking.
//! - 3: a queued message says how it is sealed ([`Sealing`]): HPKE alone, or under its queue's
//!   key chain. Upgraded by rewriting every queued message as [`Sealing::Hpke`], which is what
//!   it was.
//! - 4: a queue's next sequence number is no longer stored but follows from its messages and
//!   its acknowledgement, so that appending is one write (see [`crate::queues`]). Upgraded by
//!   turning each stored head into the acknowledgement that gives the same next number, one
//!   queue at a time.
//! - 5: a registration token records how many uses it has left and when it expires
//!   ([`crate::accounts::TokenRecord`]). Upgraded by rewriting each as single-use, never
//!   expiring, which is what it was.
//! - 6: a queue may hold a floor of its numbers (written when a store is restored from a
//!   backup), which older builds would not read. Nothing to upgrade.
//! - 7: queues are dated by marks ([`crate::queue_ages`]) for retention. Upgraded by dating
//!   every message already queued as of the upgrade (so none is dropped sooner than the
//!   retention after it).
//!
//! A rewrite goes through a scratch tree so that a crash at any moment leaves either the old
//! records or the new ones, never a mix: each tree moves from untouched to *converted* (the
//! scratch tree holds all of it, new-format) to *done* (copied back), recorded in `meta`; the
//! format key changes last.

use std::path::Path;

use roost_protocol::{
    crypto::Sealed,
    queue::{QueueMessage, Sealing},
};
use serde::Deserialize;

use crate::{table, Result, StorageError};

/// The layout this build reads and writes. Bump on any incompatible change of a record or key.
pub const FORMAT_VERSION: u32 = 7;
/// Older layouts this build upgrades to [`FORMAT_VERSION`] when it opens them.
const UPGRADABLE_FORMATS: [u32; 6] = [1, 2, 3, 4, 5, 6];
pub(crate) const FORMAT_KEY: &[u8] = b"format_version";

/// The queue trees, whose messages format 3 rewrote and whose heads format 4 dropped.
const QUEUE_TREES: [&str; 2] = ["qs_queues", "as_connection_queues"];

/// Refuses a store of a layout this build cannot read; upgrades an older one it can.
pub(crate) fn check(db: &sled::Db, path: &Path) -> Result<()> {
    let meta = db.open_tree("meta")?;
    let found = match meta.get(FORMAT_KEY)? {
        Some(found) => <[u8; 4]>::try_from(found.as_ref())
            .map(u32::from_be_bytes)
            .map_err(|_| incompatible(path, "unreadable".into()))?,
        None if holds_data(db) => return Err(incompatible(path, "none".into())),
        None => return mark_current(db, &meta),
    };
    if found == FORMAT_VERSION {
        return forget_finished_rewrites(db, &meta);
    }
    if !UPGRADABLE_FORMATS.contains(&found) {
        return Err(incompatible(path, found.to_string()));
    }
    tracing::info!(
        from = found,
        to = FORMAT_VERSION,
        "upgrading the store's format"
    );
    for name in QUEUE_TREES {
        if found < 3 {
            rewrite(db, &meta, name, queue_record)?;
            rewrite(db, &meta, &format!("{name}_large"), |_, value| {
                hpke_sealed(value)
            })?;
        }
        if found < 4 {
            crate::queues::drop_heads(&db.open_tree(name)?)?;
        }
        if found < 7 {
            crate::queue_ages::date_queued(
                &db.open_tree(crate::queue_ages::QueueAges::name(name))?,
                &crate::queues::first_seqs(&db.open_tree(name)?)?,
                roost_protocol::Timestamp::now(),
            )?;
        }
    }
    if found < 5 {
        rewrite(
            db,
            &meta,
            crate::accounts::TOKENS_TREE,
            crate::accounts::token_of_format_4,
        )?;
    }
    mark_current(db, &meta)?;
    forget_finished_rewrites(db, &meta)
}

fn incompatible(path: &Path, found: String) -> StorageError {
    StorageError::IncompatibleFormat {
        path: path.to_owned(),
        found,
    }
}

fn holds_data(db: &sled::Db) -> bool {
    db.tree_names()
        .iter()
        .filter(|name| name.as_ref() != b"meta")
        .any(|name| db.open_tree(name).map(|t| !t.is_empty()).unwrap_or(true))
}

fn mark_current(db: &sled::Db, meta: &sled::Tree) -> Result<()> {
    meta.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes())?;
    db.flush()?;
    Ok(())
}

/// A queued message as formats 1 and 2 stored it: always HPKE-sealed.
#[derive(Deserialize)]
struct HpkeQueueMessage {
    seq: u64,
    sealed: Sealed,
}

/// A record of a queue tree in format 3: a message rewritten; heads, acknowledgements, relayed
/// deliveries and large messages' lengths as they were.
fn queue_record(key: &[u8], value: &[u8]) -> Result<Vec<u8>> {
    match crate::queues::holds_message(key, value) {
        true => hpke_sealed(value),
        false => Ok(value.to_vec()),
    }
}

fn hpke_sealed(old: &[u8]) -> Result<Vec<u8>> {
    let HpkeQueueMessage { seq, sealed } = table::decode(old)?;
    Ok(table::encode(&QueueMessage {
        seq,
        sealing: Sealing::Hpke(sealed),
    }))
}

const CONVERTED: &[u8] = b"converted";
const DONE: &[u8] = b"done";

fn progress_key(tree: &str) -> Vec<u8> {
    format!("rewrite:{tree}").into_bytes()
}

fn scratch_name(tree: &str) -> String {
    format!("{tree}.rewriting")
}

/// Rewrites every record of `tree` through `convert`, crash-safely (see the module doc).
fn rewrite(
    db: &sled::Db,
    meta: &sled::Tree,
    tree: &str,
    convert: impl Fn(&[u8], &[u8]) -> Result<Vec<u8>>,
) -> Result<()> {
    let progress = progress_key(tree);
    let state = meta.get(&progress)?;
    if state.as_deref() == Some(DONE) {
        return Ok(());
    }
    let original = db.open_tree(tree)?;
    let scratch_name = scratch_name(tree);
    if state.as_deref() != Some(CONVERTED) {
        // Whatever a crash left in the scratch tree is redone from the untouched original.
        db.drop_tree(&scratch_name)?;
        let scratch = db.open_tree(&scratch_name)?;
        copy(&original, &scratch, &convert)?;
        db.flush()?;
        meta.insert(&progress, CONVERTED)?;
        db.flush()?;
    }
    let scratch = db.open_tree(&scratch_name)?;
    original.clear()?;
    copy(&scratch, &original, &|_, value| Ok(value.to_vec()))?;
    db.flush()?;
    meta.insert(&progress, DONE)?;
    db.flush()?;
    Ok(())
}

fn copy(
    from: &sled::Tree,
    to: &sled::Tree,
    convert: &impl Fn(&[u8], &[u8]) -> Result<Vec<u8>>,
) -> Result<()> {
    let mut batch = sled::Batch::default();
    let mut in_batch = 0;
    for entry in from.iter() {
        let (key, value) = entry?;
        batch.insert(key.as_ref(), convert(&key, &value)?);
        in_batch += 1;
        if in_batch == 1024 {
            to.apply_batch(std::mem::take(&mut batch))?;
            in_batch = 0;
        }
    }
    to.apply_batch(batch)?;
    Ok(())
}

/// Once the format key says the upgrade is over, its scratch trees and progress go.
fn forget_finished_rewrites(db: &sled::Db, meta: &sled::Tree) -> Result<()> {
    let mut forgot = false;
    for entry in meta.scan_prefix(b"rewrite:") {
        let (key, _) = entry?;
        let tree = String::from_utf8_lossy(&key["rewrite:".len()..]).into_owned();
        db.drop_tree(scratch_name(&tree))?;
        meta.remove(key)?;
        forgot = true;
    }
    if forgot {
        db.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EncodedMessage, Store};
    use roost_protocol::ClientId;

    /// sled lets go of a data file's lock from a thread of its own, a moment after the last
    /// handle is dropped: each open here waits for it.
    fn when_unlocked<T, E: std::fmt::Debug>(open: impl Fn() -> std::result::Result<T, E>) -> T {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match open() {
                Ok(opened) => return opened,
                Err(e) if std::time::Instant::now() > deadline => panic!("cannot open: {e:?}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
    }

    fn raw(dir: &Path) -> sled::Db {
        when_unlocked(|| sled::open(dir))
    }

    fn open(dir: &Path) -> Store {
        when_unlocked(|| Store::open(dir))
    }

    fn set_format(dir: &Path, version: u32) {
        let db = raw(dir);
        db.open_tree("meta")
            .unwrap()
            .insert(FORMAT_KEY, &version.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }

    fn format_of(store: &Store) -> Vec<u8> {
        let meta = store.db.open_tree("meta").unwrap();
        meta.get(FORMAT_KEY).unwrap().unwrap().to_vec()
    }

    #[test]
    fn a_store_of_another_format_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        open(dir.path()).close().unwrap();
        set_format(dir.path(), 99);
        // Refused, once sled has let go of the lock.
        let err = when_unlocked(|| match Store::open(dir.path()) {
            Err(StorageError::Open { reason, .. }) if reason.contains("lock") => Err(reason),
            other => Ok(other),
        })
        .err()
        .expect("must be refused");
        let message = err.to_string();
        assert!(message.contains("format version 99"), "{message}");
    }

    /// Writes queued messages as format 2 did: `(seq, Sealed)`, small ones inline and a large
    /// one in the large tree, beside a head record.
    fn write_format_2_queue(dir: &Path, client: &ClientId) -> Vec<(u64, Sealed)> {
        let messages: Vec<(u64, Sealed)> = [(1, 100), (2, crate::queues::LARGE + 10), (3, 50)]
            .into_iter()
            .map(|(seq, len)| {
                (
                    seq,
                    Sealed {
                        encapsulated_key: [seq as u8; 32],
                        ciphertext: vec![seq as u8; len],
                    },
                )
            })
            .collect();
        open(dir).close().unwrap();
        {
            let db = raw(dir);
            let tree = db.open_tree("qs_queues").unwrap();
            let large = db.open_tree("qs_queues_large").unwrap();
            for (seq, sealed) in &messages {
                let key = crate::queues::message_key(client, *seq);
                let bytes = table::encode(&(seq, sealed));
                if bytes.len() > crate::queues::LARGE {
                    tree.insert(key, &(bytes.len() as u64).to_be_bytes())
                        .unwrap();
                    large.insert(key, bytes).unwrap();
                } else {
                    tree.insert(key, bytes).unwrap();
                }
            }
            let mut head = client.0.to_vec();
            head.push(1);
            tree.insert(head, &4u64.to_be_bytes()).unwrap();
            db.flush().unwrap();
        }
        set_format(dir, 2);
        messages
    }

    fn assert_upgraded(store: &Store, client: &ClientId, expected: &[(u64, Sealed)]) {
        assert_eq!(format_of(store), FORMAT_VERSION.to_be_bytes());
        let queues = store.queues().unwrap();
        let (read, more) = queues.range(client, 1, 10, usize::MAX).unwrap();
        assert!(!more);
        let read: Vec<(u64, Sealed)> = read
            .into_iter()
            .map(|m| match m.sealing {
                Sealing::Hpke(sealed) => (m.seq, sealed),
                other => panic!("an old message became {other:?}"),
            })
            .collect();
        assert_eq!(read, expected);
        assert_eq!(queues.next_seq(client).unwrap(), 4);
        let mut report = crate::CheckReport::default();
        queues.check("qs_queues", &mut report);
        assert!(report.is_sound(), "{:?}", report.problems);
        let names: Vec<String> = store
            .db
            .sled()
            .tree_names()
            .iter()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n.ends_with(".rewriting")),
            "{names:?}"
        );
    }

    #[test]
    fn a_format_2_store_opens_with_its_queued_messages_rewritten_as_hpke_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let client = ClientId::random();
        let expected = write_format_2_queue(dir.path(), &client);
        let store = open(dir.path());
        assert_upgraded(&store, &client, &expected);
        // A message appended after the upgrade sits beside the old ones.
        let queues = store.queues().unwrap();
        let next = QueueMessage {
            seq: 4,
            sealing: Sealing::Chain {
                start: None,
                ciphertext: vec![9; 40],
            },
        };
        queues
            .append(&client, EncodedMessage::new(&next), None)
            .unwrap();
        assert_eq!(queues.range(&client, 1, 10, usize::MAX).unwrap().0.len(), 4);
    }

    #[test]
    fn an_upgrade_cut_off_at_any_step_finishes_at_the_next_open() {
        // Each step of the rewrite a crash can stop after; the next open must end the same.
        for cut in ["scratch written", "converted", "copied back", "done"] {
            let dir = tempfile::tempdir().unwrap();
            let client = ClientId::random();
            let expected = write_format_2_queue(dir.path(), &client);
            {
                let db = raw(dir.path());
                let meta = db.open_tree("meta").unwrap();
                let tree = db.open_tree("qs_queues").unwrap();
                let scratch = db.open_tree(scratch_name("qs_queues")).unwrap();
                // Half the scratch tree, as a crash while copying leaves it.
                let first = tree.iter().next().unwrap().unwrap();
                scratch
                    .insert(&first.0, queue_record(&first.0, &first.1).unwrap())
                    .unwrap();
                if cut != "scratch written" {
                    copy(&tree, &scratch, &queue_record).unwrap();
                    meta.insert(progress_key("qs_queues"), CONVERTED).unwrap();
                }
                if cut == "copied back" {
                    // Cleared, and a crash while copying back.
                    tree.clear().unwrap();
                    let first = scratch.iter().next().unwrap().unwrap();
                    tree.insert(first.0, first.1).unwrap();
                }
                if cut == "done" {
                    tree.clear().unwrap();
                    copy(&scratch, &tree, &|_, v| Ok(v.to_vec())).unwrap();
                }
                if cut == "done" {
                    meta.insert(progress_key("qs_queues"), DONE).unwrap();
                }
                db.flush().unwrap();
            }
            let store = open(dir.path());
            assert_upgraded(&store, &client, &expected);
        }
    }

    /// Queues as format 3 left them, each with the next sequence number it must keep: messages
    /// up to the head; emptied by acknowledgements made before they were recorded (a head, no
    /// acknowledgement); emptied after; and one a cut-off upgrade already turned.
    #[test]
    fn a_format_3_store_keeps_every_queues_next_sequence_number_without_its_head() {
        let dir = tempfile::tempdir().unwrap();
        open(dir.path()).close().unwrap();
        /// A queue: its client, its messages, acknowledged up to, its head.
        type Queue = (ClientId, Vec<u64>, Option<u64>, Option<u64>);
        let queues: Vec<Queue> = vec![
            (ClientId::random(), vec![1, 2, 3], Some(0), Some(4)),
            (ClientId::random(), vec![], None, Some(57)),
            (ClientId::random(), vec![], Some(8), Some(9)),
            (ClientId::random(), vec![5, 6], Some(4), Some(7)),
            (ClientId::random(), vec![1, 2], Some(0), None),
        ];
        {
            let db = raw(dir.path());
            let tree = db.open_tree("qs_queues").unwrap();
            for (client, seqs, acked, head) in &queues {
                for seq in seqs {
                    let message = QueueMessage {
                        seq: *seq,
                        sealing: Sealing::Chain {
                            start: None,
                            ciphertext: vec![1; 30],
                        },
                    };
                    let key = crate::queues::message_key(client, *seq);
                    tree.insert(key, table::encode(&message)).unwrap();
                }
                for (kind, value) in [(3u8, acked), (1u8, head)] {
                    if let Some(value) = value {
                        let key = [&client.0[..], &[kind]].concat();
                        tree.insert(key, &value.to_be_bytes()).unwrap();
                    }
                }
            }
            db.flush().unwrap();
        }
        set_format(dir.path(), 3);
        let store = open(dir.path());
        assert_eq!(format_of(&store), FORMAT_VERSION.to_be_bytes());
        let stored = store.queues().unwrap();
        let next: Vec<u64> = queues
            .iter()
            .map(|(client, ..)| stored.next_seq(client).unwrap())
            .collect();
        assert_eq!(next, [4, 57, 9, 7, 3]);
        let heads = store
            .db
            .open_tree("qs_queues")
            .unwrap()
            .iter()
            .keys()
            .filter(|key| key.as_ref().is_ok_and(|k| k.len() == 17 && k[16] == 1))
            .count();
        assert_eq!(heads, 0);
        let mut report = crate::CheckReport::default();
        stored.check("qs_queues", &mut report);
        assert!(report.is_sound(), "{:?}", report.problems);
    }

    /// Format 4 stored a token as its creation time: it is still the single-use, never
    /// expiring token it was, and registers exactly one user.
    #[test]
    fn a_format_4_registration_token_stays_single_use_and_never_expires() {
        let dir = tempfile::tempdir().unwrap();
        open(dir.path()).close().unwrap();
        let hash = [7u8; 32];
        let created_at = roost_protocol::Timestamp(1_700_000_000);
        {
            let db = raw(dir.path());
            let tree = db.open_tree(crate::accounts::TOKENS_TREE).unwrap();
            tree.insert(hash, table::encode(&created_at)).unwrap();
            db.flush().unwrap();
        }
        set_format(dir.path(), 4);
        let store = open(dir.path());
        assert_eq!(format_of(&store), FORMAT_VERSION.to_be_bytes());
        let tokens = store.accounts().unwrap().tokens().unwrap();
        let expected = crate::TokenRecord {
            created_at,
            uses_left: 1,
            expires_at: None,
        };
        assert_eq!(tokens, vec![(hash, expected)]);
    }

    /// Format 6 had no queue ages: each queue holding messages is dated as of the upgrade, so
    /// retention counts from then and drops nothing at once; an empty queue gets no mark.
    #[test]
    fn a_format_6_store_dates_its_queued_messages_as_of_the_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let (waiting, empty) = (ClientId::random(), ClientId::random());
        {
            let store = open(dir.path());
            let queues = store.queues().unwrap();
            for seq in [3, 4] {
                let message = QueueMessage {
                    seq,
                    sealing: Sealing::Chain {
                        start: None,
                        ciphertext: vec![1; 30],
                    },
                };
                queues
                    .append(&waiting, crate::EncodedMessage::new(&message), None)
                    .unwrap();
            }
            store.close().unwrap();
        }
        set_format(dir.path(), 6);
        let before = roost_protocol::Timestamp::now();
        let store = open(dir.path());
        assert_eq!(format_of(&store), FORMAT_VERSION.to_be_bytes());
        let ages = store.queues().unwrap().ages().clone();
        let just_before = roost_protocol::Timestamp(before.0 - 1);
        assert_eq!(ages.expired(&waiting, just_before, 0).unwrap(), None);
        let later = roost_protocol::Timestamp(before.0 + 3600);
        let expired = ages.expired(&waiting, later, 0).unwrap().unwrap();
        assert_eq!((expired.keep_from, expired.marks.len()), (None, 1));
        assert_eq!(ages.expired(&empty, later, 0).unwrap(), None);
        assert_eq!(ages.marked_before(later).unwrap(), vec![waiting]);
    }
}
