//! Remembering the request signatures this server accepted, so that each signed request is
//! taken once: [`ReplayGuard`]. Shared by every HTTP worker (not an actor: a check must not
//! wait in a mailbox); it owns the `seen_signatures` records, which nothing else writes.

use std::{collections::HashSet, sync::Mutex};

use roost_protocol::auth::REPLAY_WINDOW_MS;
use roost_storage::{SeenSignatures, Space, StorageError};

/// What a replay of a request would do, and so how far back the guard must remember it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// It would add data or change state again: refused across restarts too (the signature
    /// is recorded in the store).
    Refuse,
    /// It would only read, or repeat what is done (an acknowledgement): refused within this
    /// run, which is all the memory-only guard can do.
    Harmless,
}

/// Remembers the signatures seen within the replay window, so each is accepted once (client
/// and server signatures alike).
///
/// Two generations of signatures, the current one and the one before; the current one becomes
/// the previous one every two windows, and the previous one is forgotten then. A signature is
/// accepted only within one window of its timestamp, so it is remembered as long as it could be
/// replayed (at least two windows after it was first seen), and each request costs O(1) — the
/// guard never scans what it holds.
///
/// What it holds in memory is lost in a restart; so every accepted signature is also recorded
/// in the store (while the disk has room), and one made before this server started is looked up
/// there: a request replayed across a restart is refused like any other replay.
pub struct ReplayGuard {
    generations: Mutex<Generations>,
    started_ms: u64,
    stored: Option<Stored>,
}

struct Stored {
    seen: SeenSignatures,
    space: Space,
}

#[derive(Default)]
struct Generations {
    current: HashSet<[u8; 64]>,
    previous: HashSet<[u8; 64]>,
    current_since_ms: u64,
}

impl ReplayGuard {
    /// A guard for a server started at `started_ms` that records what it accepts in `seen`.
    pub fn new(started_ms: u64, seen: SeenSignatures, space: Space) -> Self {
        ReplayGuard {
            generations: Mutex::default(),
            started_ms,
            stored: Some(Stored { seen, space }),
        }
    }

    /// A guard that forgets everything in a restart.
    pub fn in_memory() -> Self {
        ReplayGuard {
            generations: Mutex::default(),
            started_ms: 0,
            stored: None,
        }
    }

    /// Records a signature made at `signed_ms` (which the caller checked to be within the
    /// window); false if it was seen before — in this run, or, for a request whose replay
    /// would do harm, in the one before.
    pub fn first_use(
        &self,
        signature: [u8; 64],
        signed_ms: u64,
        now_ms: u64,
        replayed: Replay,
    ) -> Result<bool, StorageError> {
        if !self.first_in_memory(signature, now_ms) {
            return Ok(false);
        }
        let (Some(stored), Replay::Refuse) = (&self.stored, replayed) else {
            return Ok(true);
        };
        if signed_ms < self.started_ms && stored.seen.contains(&signature, signed_ms)? {
            return Ok(false);
        }
        // On a full disk nothing that adds data is taken, and a read replayed after a restart
        // does no harm: then the signature is only remembered in memory.
        if stored.space.check().is_ok() {
            stored.seen.record(&signature, signed_ms)?;
        }
        Ok(true)
    }

    fn first_in_memory(&self, signature: [u8; 64], now_ms: u64) -> bool {
        let mut generations = self
            .generations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if now_ms.saturating_sub(generations.current_since_ms) >= 2 * REPLAY_WINDOW_MS {
            let current = std::mem::take(&mut generations.current);
            generations.previous = current;
            generations.current_since_ms = now_ms;
        }
        if generations.previous.contains(&signature) {
            return false;
        }
        generations.current.insert(signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u64 = REPLAY_WINDOW_MS;

    #[test]
    fn a_signature_is_refused_again_for_as_long_as_its_timestamp_is_accepted() {
        let guard = ReplayGuard::in_memory();
        let start = 10 * W;
        let first_use = |signature, now| {
            guard
                .first_use(signature, now, now, Replay::Refuse)
                .unwrap()
        };
        assert!(first_use([1; 64], start));
        assert!(!first_use([1; 64], start + 1));
        // Seen at the end of a generation: still remembered two windows later.
        let late = start + 2 * W - 1;
        assert!(first_use([2; 64], late));
        assert!(!first_use([2; 64], late + 2 * W - 1));
        assert!(!first_use([1; 64], start + 2 * W));
        // Other signatures are untouched by either.
        assert!(first_use([3; 64], late + 1));
    }

    #[test]
    fn signatures_are_forgotten_once_no_timestamp_could_pass_any_more() {
        let guard = ReplayGuard::in_memory();
        assert!(guard.first_use([1; 64], W, W, Replay::Refuse).unwrap());
        for step in 1..=2 {
            guard
                .first_use([9; 64], W + step * 2 * W, W + step * 2 * W, Replay::Refuse)
                .unwrap();
        }
        let generations = guard.generations.lock().unwrap();
        assert_eq!(
            generations.previous.len() + generations.current.len(),
            1,
            "only the newest signature is held"
        );
    }
}
