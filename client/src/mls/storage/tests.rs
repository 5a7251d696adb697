use std::{
    path::Path,
    time::{Duration, Instant},
};

use openmls::prelude::{
    tls_codec::Deserialize as _, BasicCredential, Ciphersuite, CredentialWithKey, GroupId,
    KeyPackage, LeafNodeParameters, MlsGroup, MlsGroupCreateConfig, MlsGroupJoinConfig,
    MlsMessageBodyIn, MlsMessageIn, MlsMessageOut, ProcessedMessageContent, StagedWelcome,
};
use openmls_basic_credential::SignatureKeyPair;

use super::{
    storage_key, MlsProvider, MlsStorageError, SledMlsStorage, GROUP_CONTEXT, KEY_PACKAGE,
    PROPOSAL_QUEUE, QUEUED_PROPOSAL, WIRE_FORMAT_POLICY,
};

type BoxError = Box<dyn std::error::Error>;
type TestResult = Result<(), BoxError>;

const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// Opens a sled db, waiting for sled's background threads to release the lock of a db
/// dropped a moment ago in this process.
fn open_db(dir: &Path) -> sled::Db {
    let started = Instant::now();
    loop {
        match sled::Config::new().path(dir).open() {
            Ok(db) => return db,
            Err(e) if started.elapsed() < Duration::from_secs(5) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("cannot reopen {}: {e}", dir.display()),
        }
    }
}

fn open_provider(dir: &Path) -> MlsProvider {
    let db = open_db(dir);
    MlsProvider::new(db.open_tree("mls").unwrap()).unwrap()
}

/// One MLS client: its provider over its own sled db, and its signature key.
struct Member {
    provider: MlsProvider,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
}

impl Member {
    /// A new client with a fresh signature key, stored (and committed) in its MLS store.
    fn create(dir: &Path, name: &str) -> Member {
        let provider = open_provider(dir);
        let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).unwrap();
        signer.store(provider.storage()).unwrap();
        provider.commit().unwrap();
        let credential = CredentialWithKey {
            credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
            signature_key: signer.public().into(),
        };
        Member {
            provider,
            signer,
            credential,
        }
    }

    /// The same client after a restart: everything, the signature key too, from disk.
    fn reopen(dir: &Path, name: &str, public_key: &[u8]) -> Member {
        let provider = open_provider(dir);
        let signer = SignatureKeyPair::read(
            provider.storage(),
            public_key,
            CIPHERSUITE.signature_algorithm(),
        )
        .expect("the signature key was stored");
        let credential = CredentialWithKey {
            credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
            signature_key: signer.public().into(),
        };
        Member {
            provider,
            signer,
            credential,
        }
    }

    fn key_package(&self) -> KeyPackage {
        let bundle = self
            .provider
            .with_transaction(|p| {
                KeyPackage::builder()
                    .build(CIPHERSUITE, p, &self.signer, self.credential.clone())
                    .map_err(BoxError::from)
            })
            .unwrap();
        bundle.key_package().clone()
    }

    fn load(&self, group_id: &GroupId) -> MlsGroup {
        MlsGroup::load(self.provider.storage(), group_id)
            .unwrap()
            .expect("the group is stored")
    }
}

fn create_config() -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(CIPHERSUITE)
        .wire_format_policy(WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .build()
}

fn join_config() -> MlsGroupJoinConfig {
    create_config().join_config().clone()
}

/// Serializes an outgoing message and parses it as a receiver would.
fn transmit(message: &MlsMessageOut) -> MlsMessageBodyIn {
    let bytes = message.to_bytes().unwrap();
    MlsMessageIn::tls_deserialize_exact(bytes)
        .unwrap()
        .extract()
}

/// `from` sends `text` to `to` in `group`; both commit their stores.
fn send(
    from: &Member,
    from_group: &mut MlsGroup,
    to: &Member,
    to_group: &mut MlsGroup,
    text: &[u8],
) {
    let out = from
        .provider
        .with_transaction(|p| {
            from_group
                .create_message(p, &from.signer, text)
                .map_err(BoxError::from)
        })
        .unwrap();
    let MlsMessageBodyIn::PrivateMessage(private) = transmit(&out) else {
        panic!("application messages must be encrypted");
    };
    let processed = to
        .provider
        .with_transaction(|p| to_group.process_message(p, private).map_err(BoxError::from))
        .unwrap();
    let ProcessedMessageContent::ApplicationMessage(message) = processed.into_content() else {
        panic!("expected an application message");
    };
    assert_eq!(message.into_bytes(), text);
}

/// Alice creates a group and adds Bob, who joins from the Welcome. Both stores committed.
fn alice_adds_bob(alice: &Member, bob: &Member) -> (MlsGroup, MlsGroup) {
    let bob_key_package = bob.key_package();

    let mut alice_group = alice
        .provider
        .with_transaction(|p| {
            MlsGroup::new(p, &alice.signer, &create_config(), alice.credential.clone())
                .map_err(BoxError::from)
        })
        .unwrap();
    let (commit, welcome, _group_info) = alice
        .provider
        .with_transaction(|p| {
            let out = alice_group
                .add_members(p, &alice.signer, &[bob_key_package])
                .map_err(BoxError::from)?;
            alice_group
                .merge_pending_commit(p)
                .map_err(BoxError::from)?;
            Ok::<_, BoxError>(out)
        })
        .unwrap();
    // The policy: commits go out as public messages, readable by the DS.
    assert!(matches!(
        transmit(&commit),
        MlsMessageBodyIn::PublicMessage(_)
    ));

    let MlsMessageBodyIn::Welcome(welcome) = transmit(&welcome) else {
        panic!("expected a Welcome");
    };
    let bob_group = bob
        .provider
        .with_transaction(|p| {
            StagedWelcome::new_from_welcome(p, &join_config(), welcome, None)
                .and_then(|staged| staged.into_group(p))
                .map_err(BoxError::from)
        })
        .unwrap();
    assert_eq!(alice_group.epoch(), bob_group.epoch());
    assert!(!alice.provider.storage().has_pending());
    assert!(!bob.provider.storage().has_pending());
    (alice_group, bob_group)
}

#[test]
fn groups_survive_a_restart() -> TestResult {
    let alice_dir = tempfile::tempdir()?;
    let bob_dir = tempfile::tempdir()?;
    let alice = Member::create(alice_dir.path(), "alice");
    let bob = Member::create(bob_dir.path(), "bob");
    let (mut alice_group, mut bob_group) = alice_adds_bob(&alice, &bob);
    send(&alice, &mut alice_group, &bob, &mut bob_group, b"hello bob");
    send(
        &bob,
        &mut bob_group,
        &alice,
        &mut alice_group,
        b"hello alice",
    );

    let group_id = alice_group.group_id().clone();
    let epoch = alice_group.epoch();
    let alice_key = alice.signer.public().to_vec();
    let bob_key = bob.signer.public().to_vec();
    drop((alice_group, bob_group, alice, bob));

    let alice = Member::reopen(alice_dir.path(), "alice", &alice_key);
    let bob = Member::reopen(bob_dir.path(), "bob", &bob_key);
    let mut alice_group = alice.load(&group_id);
    let mut bob_group = bob.load(&group_id);
    assert_eq!(alice_group.epoch(), epoch);
    assert_eq!(bob_group.epoch(), epoch);
    assert_eq!(alice_group.members().count(), 2);
    send(
        &alice,
        &mut alice_group,
        &bob,
        &mut bob_group,
        b"still there?",
    );
    send(
        &bob,
        &mut bob_group,
        &alice,
        &mut alice_group,
        b"still here",
    );
    Ok(())
}

#[test]
fn uncommitted_writes_are_lost_and_the_group_still_works() -> TestResult {
    let alice_dir = tempfile::tempdir()?;
    let bob_dir = tempfile::tempdir()?;
    let alice = Member::create(alice_dir.path(), "alice");
    let bob = Member::create(bob_dir.path(), "bob");
    let (mut alice_group, mut bob_group) = alice_adds_bob(&alice, &bob);
    let group_id = alice_group.group_id().clone();
    let epoch = alice_group.epoch();

    // An operation that fails after writing: with_transaction discards its writes.
    let failed: Result<(), BoxError> = alice.provider.with_transaction(|p| {
        alice_group
            .self_update(p, &alice.signer, LeafNodeParameters::default())
            .map_err(BoxError::from)?;
        alice_group
            .merge_pending_commit(p)
            .map_err(BoxError::from)?;
        Err("the server refused the commit".into())
    });
    assert!(failed.is_err());
    assert!(!alice.provider.storage().has_pending());
    assert_eq!(alice_group.epoch().as_u64(), epoch.as_u64() + 1);
    assert_eq!(
        alice.load(&group_id).epoch(),
        epoch,
        "storage kept the old epoch"
    );

    // discard by hand does the same.
    let mut alice_group = alice.load(&group_id);
    alice_group.self_update(
        &alice.provider,
        &alice.signer,
        LeafNodeParameters::default(),
    )?;
    alice_group.merge_pending_commit(&alice.provider)?;
    assert!(alice.provider.storage().has_pending());
    alice.provider.discard();
    assert_eq!(alice.load(&group_id).epoch(), epoch);

    // A crash in the middle of an operation: the writes never reach the disk.
    let mut alice_group = alice.load(&group_id);
    alice_group.self_update(
        &alice.provider,
        &alice.signer,
        LeafNodeParameters::default(),
    )?;
    alice_group.merge_pending_commit(&alice.provider)?;
    assert_eq!(alice_group.epoch().as_u64(), epoch.as_u64() + 1);
    let alice_key = alice.signer.public().to_vec();
    drop((alice_group, alice)); // no commit

    let alice = Member::reopen(alice_dir.path(), "alice", &alice_key);
    let mut alice_group = alice.load(&group_id);
    assert_eq!(alice_group.epoch(), epoch, "the state before the operation");
    // ... and that state works: Bob, who never saw the lost commit, reads Alice and back.
    send(
        &alice,
        &mut alice_group,
        &bob,
        &mut bob_group,
        b"after the crash",
    );
    send(
        &bob,
        &mut bob_group,
        &alice,
        &mut alice_group,
        b"welcome back",
    );
    Ok(())
}

#[test]
fn clear_proposal_queue_deletes_the_proposals() -> TestResult {
    let alice_dir = tempfile::tempdir()?;
    let bob_dir = tempfile::tempdir()?;
    let carol_dir = tempfile::tempdir()?;
    let alice = Member::create(alice_dir.path(), "alice");
    let bob = Member::create(bob_dir.path(), "bob");
    let carol = Member::create(carol_dir.path(), "carol");
    let group_id = {
        let mut group = alice
            .provider
            .with_transaction(|p| {
                MlsGroup::new(p, &alice.signer, &create_config(), alice.credential.clone())
                    .map_err(BoxError::from)
            })
            .unwrap();
        for key_package in [bob.key_package(), carol.key_package()] {
            let (proposal, _ref) = alice
                .provider
                .with_transaction(|p| {
                    group
                        .propose_add_member(p, &alice.signer, &key_package)
                        .map_err(BoxError::from)
                })
                .unwrap();
            assert!(matches!(
                transmit(&proposal),
                MlsMessageBodyIn::PublicMessage(_)
            ));
        }
        group.group_id().clone()
    };
    let count = |tree: &sled::Tree, label: u8| tree.scan_prefix([label]).count();
    let alice_key = alice.signer.public().to_vec();
    drop(alice);

    // The queue survives a restart, in order.
    let alice = Member::reopen(alice_dir.path(), "alice", &alice_key);
    let mut group = alice.load(&group_id);
    assert_eq!(group.pending_proposals().count(), 2);
    let tree = alice.provider.storage().tree.clone();
    assert_eq!(count(&tree, QUEUED_PROPOSAL.label), 2);
    assert_eq!(count(&tree, PROPOSAL_QUEUE.label), 1);

    alice
        .provider
        .with_transaction(|p| group.clear_pending_proposals(p.storage()))?;
    drop((group, tree, alice));

    let alice = Member::reopen(alice_dir.path(), "alice", &alice_key);
    assert_eq!(alice.load(&group_id).pending_proposals().count(), 0);
    let tree = &alice.provider.storage().tree;
    assert_eq!(count(tree, QUEUED_PROPOSAL.label), 0, "proposals deleted");
    assert_eq!(count(tree, PROPOSAL_QUEUE.label), 0, "queue deleted");
    Ok(())
}

#[test]
fn a_joined_key_package_is_used_up() -> TestResult {
    let alice_dir = tempfile::tempdir()?;
    let bob_dir = tempfile::tempdir()?;
    let alice = Member::create(alice_dir.path(), "alice");
    let bob = Member::create(bob_dir.path(), "bob");
    let tree = bob.provider.storage().tree.clone();
    let _groups = alice_adds_bob(&alice, &bob);
    // Bob's key package (with its private init key) was deleted when he joined.
    assert_eq!(tree.scan_prefix([KEY_PACKAGE.label]).count(), 0);
    Ok(())
}

#[test]
fn corrupt_values_are_errors() -> TestResult {
    let alice_dir = tempfile::tempdir()?;
    let bob_dir = tempfile::tempdir()?;
    let alice = Member::create(alice_dir.path(), "alice");
    let bob = Member::create(bob_dir.path(), "bob");
    let (alice_group, _) = alice_adds_bob(&alice, &bob);
    let group_id = alice_group.group_id().clone();

    let tree = alice.provider.storage().tree.clone();
    tree.insert(storage_key(GROUP_CONTEXT, &group_id)?, &b"{not json"[..])?;
    match MlsGroup::load(alice.provider.storage(), &group_id) {
        Err(MlsStorageError::Corrupt { what, .. }) => assert_eq!(what, GROUP_CONTEXT.name),
        other => panic!("expected a corrupt value, got {other:?}"),
    }
    Ok(())
}

#[test]
fn foreign_trees_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = open_db(dir.path());

    let other = db.open_tree("other")?;
    other.insert(b"key", b"value")?;
    assert!(matches!(
        SledMlsStorage::open(other),
        Err(MlsStorageError::NotAnMlsStore)
    ));

    let mls = db.open_tree("mls")?;
    drop(SledMlsStorage::open(mls.clone())?);
    SledMlsStorage::open(mls.clone())?; // reopening is fine
    mls.insert(
        storage_key(super::META, super::META_FORMAT_KEY)?,
        super::encode("format record", &(super::LAYOUT_VERSION + 1, 1u16))?,
    )?;
    assert!(matches!(
        SledMlsStorage::open(mls),
        Err(MlsStorageError::UnsupportedFormat { .. })
    ));
    Ok(())
}
