//! The client's persistent state: one sled store in a state directory.
//!
//! Holds the identity (who this client is, its secret keys, its credential and its home server)
//! and the queue position. Every write is flushed before it returns, because the CLI process
//! exits right after a command. What "flushed" means for sled 0.34 on Linux: the data reached
//! the OS (`sync_file_range`), which survives a killed process but not necessarily a power cut
//! within sled's 500 ms fsync interval; for a client that is acceptable, since the worst case is
//! a queue message shown twice.
//!
//! Values are encoded with [`roost_protocol::codec`] only; a format-version key is checked at
//! every open so that a store written by another version is refused rather than misread.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use roost_protocol::{
    codec, credentials::ClientCredential, ClientId, HpkeSecretKey, SigningKey, UserName,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// The state format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

const KEY_FORMAT: &[u8] = b"format_version";
const KEY_IDENTITY: &[u8] = b"identity";
const KEY_QUEUE: &[u8] = b"queue_position";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("not registered: {} holds no client identity; run `roost-client register` first", .0.display())]
    NotRegistered(PathBuf),
    #[error("{} already holds the identity of client {client_id} of {user}; use another state directory", dir.display())]
    AlreadyRegistered {
        dir: PathBuf,
        user: UserName,
        client_id: ClientId,
    },
    #[error("{} was written in state format {found}, but this roost-client reads only format {FORMAT_VERSION}", dir.display())]
    UnsupportedFormat { dir: PathBuf, found: u32 },
    #[error("the state directory {} is in use by another roost-client (or was not released in time)", .0.display())]
    Locked(PathBuf),
    #[error("{} holds data but no format version; it is not a roost-client state directory", .0.display())]
    NotAStateDir(PathBuf),
    #[error("the state record {key:?} in {} is unreadable: {reason}", dir.display())]
    Corrupt {
        dir: PathBuf,
        key: String,
        reason: String,
    },
    #[error("the state store in {} failed: {source}", dir.display())]
    Store {
        dir: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("cannot use the state directory {}: {source}", dir.display())]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Who this client is. Contains secret keys: never log or print it whole.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    pub user: UserName,
    pub client_id: ClientId,
    pub signing_key: SigningKey,
    /// Opens the messages of this client's queue.
    pub queue_key: HpkeSecretKey,
    pub credential: ClientCredential,
    /// Base URL of the home server, without a trailing slash.
    pub server_url: String,
}

/// How far this client has read its queue. Kept apart from acknowledging, so an ack that failed
/// can be repeated without showing messages twice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuePosition {
    /// Highest sequence number handed to the user; `None` before the first message.
    pub received: Option<u64>,
    /// Highest sequence number the server confirmed deleting.
    pub acked: Option<u64>,
}

impl QueuePosition {
    /// The first sequence number not yet received.
    pub fn next_from(&self) -> u64 {
        self.received.map_or(0, |s| s.saturating_add(1))
    }

    /// The received position the server has not yet been told to delete up to.
    pub fn pending_ack(&self) -> Option<u64> {
        match (self.received, self.acked) {
            (Some(r), Some(a)) if r <= a => None,
            (received, _) => received,
        }
    }
}

/// An open state store. Holds sled's lock on the directory: one process at a time.
#[derive(Clone)]
pub struct State {
    dir: PathBuf,
    db: sled::Db,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("dir", &self.dir).finish()
    }
}

impl State {
    /// Opens an existing state directory; a missing or empty one is [`StateError::NotRegistered`].
    pub fn open(dir: impl AsRef<Path>) -> Result<State, StateError> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.exists() {
            return Err(StateError::NotRegistered(dir));
        }
        let state = Self::open_store(dir)?;
        if state.identity()?.is_none() {
            return Err(StateError::NotRegistered(state.dir));
        }
        Ok(state)
    }

    /// Opens a state directory, creating it (readable only by its owner) if needed.
    pub fn open_or_create(dir: impl AsRef<Path>) -> Result<State, StateError> {
        let dir = dir.as_ref().to_path_buf();
        create_private_dir(&dir).map_err(|source| StateError::Io {
            dir: dir.clone(),
            source,
        })?;
        Self::open_store(dir)
    }

    fn open_store(dir: PathBuf) -> Result<State, StateError> {
        let db = open_db(&dir)?;
        let state = State { dir, db };
        match state.get::<u32>(KEY_FORMAT)? {
            Some(FORMAT_VERSION) => Ok(state),
            Some(found) => Err(StateError::UnsupportedFormat {
                dir: state.dir,
                found,
            }),
            None if state.db.is_empty() => {
                state.put(KEY_FORMAT, &FORMAT_VERSION)?;
                Ok(state)
            }
            None => Err(StateError::NotAStateDir(state.dir)),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn identity(&self) -> Result<Option<Identity>, StateError> {
        self.get(KEY_IDENTITY)
    }

    /// Stores the identity; refuses if one is already there (atomically, so two registrations
    /// racing on one directory cannot both win).
    pub fn save_identity(&self, identity: &Identity) -> Result<(), StateError> {
        let swapped = self
            .db
            .compare_and_swap(
                KEY_IDENTITY,
                None as Option<&[u8]>,
                Some(codec::encode(identity)),
            )
            .map_err(|e| self.store_error(e))?;
        if swapped.is_err() {
            let existing = self.identity()?;
            return Err(match existing {
                Some(existing) => StateError::AlreadyRegistered {
                    dir: self.dir.clone(),
                    user: existing.user,
                    client_id: existing.client_id,
                },
                None => StateError::Corrupt {
                    dir: self.dir.clone(),
                    key: "identity".into(),
                    reason: "changed while being written".into(),
                },
            });
        }
        self.flush()
    }

    /// Refuses with [`StateError::AlreadyRegistered`] if an identity is stored.
    pub fn ensure_unregistered(&self) -> Result<(), StateError> {
        match self.identity()? {
            Some(existing) => Err(StateError::AlreadyRegistered {
                dir: self.dir.clone(),
                user: existing.user,
                client_id: existing.client_id,
            }),
            None => Ok(()),
        }
    }

    pub fn queue_position(&self) -> Result<QueuePosition, StateError> {
        Ok(self.get(KEY_QUEUE)?.unwrap_or_default())
    }

    pub fn set_queue_position(&self, position: &QueuePosition) -> Result<(), StateError> {
        self.put(KEY_QUEUE, position)
    }

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StateError> {
        let Some(bytes) = self.db.get(key).map_err(|e| self.store_error(e))? else {
            return Ok(None);
        };
        codec::decode(&bytes)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                dir: self.dir.clone(),
                key: String::from_utf8_lossy(key).into_owned(),
                reason: e.to_string(),
            })
    }

    fn put<T: Serialize + ?Sized>(&self, key: &[u8], value: &T) -> Result<(), StateError> {
        self.db
            .insert(key, codec::encode(value))
            .map_err(|e| self.store_error(e))?;
        self.flush()
    }

    fn flush(&self) -> Result<(), StateError> {
        self.db.flush().map(drop).map_err(|e| self.store_error(e))
    }

    fn store_error(&self, source: sled::Error) -> StateError {
        StateError::Store {
            dir: self.dir.clone(),
            source,
        }
    }

    /// Writes a raw record, for tests that need a store in a state this build never writes.
    #[cfg(test)]
    pub(crate) fn put_raw(&self, key: &[u8], value: Vec<u8>) {
        self.db.insert(key, value).expect("test store insert");
        self.db.flush().expect("test store flush");
    }
}

/// How long to wait for sled's lock on a directory: another process may be finishing a
/// command, and in this process sled's background threads release it a moment after a drop.
const LOCK_WAIT: Duration = Duration::from_secs(3);

fn open_db(dir: &Path) -> Result<sled::Db, StateError> {
    let started = Instant::now();
    loop {
        match sled::Config::new().path(dir).open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if started.elapsed() >= LOCK_WAIT {
                    return Err(StateError::Locked(dir.to_path_buf()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(source) => {
                return Err(StateError::Store {
                    dir: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// The directory holds secret keys, so only its owner may enter it.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
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
                .set_queue_position(&QueuePosition {
                    received: Some(7),
                    acked: Some(5),
                })
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
        let position = state.queue_position().unwrap();
        assert_eq!(position.next_from(), 8);
        assert_eq!(position.pending_ack(), Some(7));
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
            state.set_queue_position(&QueuePosition::default()).unwrap();
        }
    }

    #[test]
    fn a_corrupt_record_is_reported_not_panicked_on() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open_or_create(dir.path()).unwrap();
        state.put_raw(KEY_IDENTITY, vec![0xff, 0x01]);
        assert!(matches!(state.identity(), Err(StateError::Corrupt { .. })));
    }
}
