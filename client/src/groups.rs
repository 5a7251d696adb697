//! MLS groups and connection establishment: the client's MLS signature key and key packages,
//! creating a connection group and inviting a user into it ([`Client::connect`]), accepting an
//! invitation ([`Client::accept`]), and following the groups this client is in
//! ([`Client::sync`]).
//!
//! All MLS state lives in the [`MlsProvider`] over the state directory's `mls` tree. Every MLS
//! operation is committed to it only once the server accepted what it produced (the DS took the
//! group, the commit or the join); if the server refuses, the pending writes are discarded, so
//! the local group never runs ahead of the DS. One MLS operation at a time per client: every
//! public entry point holds [`Client::mls_lock`] throughout.
//!
//! Flow (connection establishment, as ARCHITECTURE.md describes it): the initiator discovers the
//! responder's clients, creates the connection group with its own other clients added by one
//! commit (each gets a Welcome bundle), and seals a connection-establishment package to every
//! responder client. A responder client first reads its QS queue: a Welcome into that group
//! means another client of its user already accepted, and it joins from that. Else it joins by
//! external commit through the DS's *join connection group* endpoint (which takes one joiner)
//! and then adds its own other clients. If the join is refused, it reads its queue once more,
//! waiting briefly, for a Welcome; without one the request is discarded.

use std::time::{Duration, Instant};

use openmls::prelude::{tls_codec::Deserialize as _, *};
use openmls_basic_credential::SignatureKeyPair;
use roost_protocol::{
    api::{KeyPackageCount, PublishKeyPackages, QueueItem, QueueMessage, MAX_PUBLISH},
    codec,
    connection::{ConnectionEstablishmentBody, ConnectionEstablishmentPackage, EarKey},
    content::{self, Content},
    ds::{
        CommitRequest, CreateGroup, GroupDelivery, GroupKeys, JoinConnectionGroup, MemberCard,
        MemberEntry, SealedQueueRef, WelcomeBundle, WelcomeSecrets,
    },
    key_packages::KeyPackageEntry,
    Timestamp, UserName,
};

use crate::{
    client::{blocking, Client, QueueReader, Received},
    connections::is_transient,
    error::Error,
    mls_storage::MlsProvider,
    server::QueueKind,
    state::{
        Contact, GroupAccess, MlsIdentity, NamedGroup, PendingRequest, QueuePosition, StoredMessage,
    },
};

/// The one ciphersuite of Roost groups.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
/// How many one-time key packages a new client publishes (with a last-resort one).
pub const INITIAL_KEY_PACKAGES: usize = 20;
/// Below this many one-time key packages on the QS, a client publishes more.
pub const KEY_PACKAGES_LOW: u32 = 5;
/// The exporter label of the key that encrypts the [`WelcomeSecrets`] in a Welcome bundle.
pub const GROUP_KEYS_EXPORTER_LABEL: &str = "roost group keys";
/// After a refused join, how long to wait for a Welcome from another client of the same user.
pub const WELCOME_GRACE: Duration = Duration::from_secs(3);

/// How new groups are made: handshakes in the clear for the DS, the tree in the GroupInfo.
pub fn create_config() -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(CIPHERSUITE)
        .wire_format_policy(crate::mls_storage::WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .build()
}

/// How groups are joined (Welcome or external commit).
pub fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .wire_format_policy(crate::mls_storage::WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .build()
}

fn mls_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Mls(format!("{what}: {e}"))
}

/// This client's MLS signer and the (pseudonymous) credential its leaves carry.
pub(crate) struct MlsSigner {
    pub(crate) key: SignatureKeyPair,
    pub(crate) credential: CredentialWithKey,
}

/// What [`Client::connect`] came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected {
    pub group_id: Vec<u8>,
    pub peer: UserName,
    /// How many of the peer's clients were sent the invitation.
    pub invited: usize,
    /// How many of this user's other clients were added to the group.
    pub own_clients_added: usize,
}

/// How a client came into a connection group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinedVia {
    /// By external commit: this client accepted first.
    ExternalCommit,
    /// From a Welcome: another client of the user accepted first.
    Welcome,
    /// It was in the group already.
    AlreadyConnected,
}

impl JoinedVia {
    pub fn as_str(&self) -> &'static str {
        match self {
            JoinedVia::ExternalCommit => "external_commit",
            JoinedVia::Welcome => "welcome",
            JoinedVia::AlreadyConnected => "already_connected",
        }
    }
}

/// What [`Client::accept`] came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub group_id: Vec<u8>,
    pub peer: UserName,
    pub via: JoinedVia,
    /// How many of this user's other clients were added (after an external join only).
    pub own_clients_added: usize,
    /// Adding the other clients failed; the connection itself stands.
    pub own_clients_error: Option<String>,
}

/// What one [`Client::sync`] did.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// Groups joined from a Welcome.
    pub joined: Vec<Vec<u8>>,
    /// Commits applied.
    pub commits: usize,
    /// Application messages processed.
    pub messages: usize,
    /// Groups this client was removed from.
    pub removed_from: Vec<Vec<u8>>,
    /// Application messages newly stored, with their group.
    pub received: Vec<(Vec<u8>, StoredMessage)>,
    /// Deliveries that could not be used, with the reason.
    pub failed: Vec<String>,
    /// Queue items that are not group deliveries, as [`Client::receive`] returns them.
    pub other: Vec<Received>,
}

/// A group's current state as this client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupStatus {
    pub epoch: u64,
    pub members: usize,
}

enum Processed {
    Commit,
    /// A commit that removed this client.
    Removed,
    /// A chat message, and what was stored for it (`None`: stored before).
    Message(Option<StoredMessage>),
    /// A friendship token shared in a connection group.
    Token,
    Proposal,
}

/// A processed message whose MLS writes are not committed yet.
enum Pending {
    Done(Processed),
    Application {
        pseudonym: Vec<u8>,
        payload: Vec<u8>,
    },
}

/// The QS queue's reader for [`Client::sync`]: handles each message, then saves the position.
struct GroupReader {
    report: SyncReport,
}

impl QueueReader for GroupReader {
    type Item = ();
    const KIND: QueueKind = QueueKind::Messages;

    async fn take(
        &mut self,
        client: &Client,
        messages: &[QueueMessage],
        position: QueuePosition,
    ) -> Result<Vec<()>, Error> {
        let id = client.identity.client_id;
        for message in messages {
            let item = message.open(&client.identity.queue_key, &id);
            client
                .handle_item(message.seq, item, &mut self.report)
                .await?;
            client
                .save_position(
                    Self::KIND,
                    QueuePosition {
                        received: Some(message.seq),
                        ..position
                    },
                )
                .await?;
        }
        Ok(vec![(); messages.len()])
    }
}

impl Client {
    /// This client's MLS signer, made and stored on first use.
    pub(crate) fn mls_signer(&self) -> Result<MlsSigner, Error> {
        if let Some(stored) = self.state.mls_identity()? {
            let key = SignatureKeyPair::read(
                self.mls.storage(),
                &stored.signature_public_key,
                CIPHERSUITE.signature_algorithm(),
            )
            .ok_or_else(|| {
                Error::Mls("the MLS signature key is missing from the MLS store".into())
            })?;
            return Ok(MlsSigner {
                credential: CredentialWithKey {
                    credential: BasicCredential::new(stored.pseudonym).into(),
                    signature_key: key.public().into(),
                },
                key,
            });
        }
        let key = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm())
            .map_err(|e| mls_error("cannot make an MLS signature key", e))?;
        self.mls
            .with_transaction(|p| key.store(p.storage()).map_err(Error::from))?;
        // Leaves carry a random pseudonym, never the user name.
        let pseudonym: [u8; 16] = rand::random();
        self.state.save_mls_identity(&MlsIdentity {
            signature_public_key: key.public().to_vec(),
            pseudonym: pseudonym.to_vec(),
        })?;
        Ok(MlsSigner {
            credential: CredentialWithKey {
                credential: BasicCredential::new(pseudonym.to_vec()).into(),
                signature_key: key.public().into(),
            },
            key,
        })
    }

    /// This client's own queue, sealed to its home QS's queue-reference key.
    pub async fn own_queue_ref(&self) -> Result<SealedQueueRef, Error> {
        let qs_key = self.server().queue_ref_key().await?;
        SealedQueueRef::seal(self.user().domain().clone(), &qs_key, &self.client_id())
            .map_err(Error::Seal)
    }

    /// Publishes `one_time` new MLS key packages (and a last-resort one if asked), their
    /// private keys stored first; answers how many the QS holds.
    pub async fn publish_key_packages(
        &self,
        one_time: usize,
        last_resort: bool,
    ) -> Result<KeyPackageCount, Error> {
        let _mls = self.mls_lock.lock().await;
        self.publish_key_packages_locked(one_time, last_resort)
            .await
    }

    /// [`Client::publish_key_packages`] with the MLS lock held.
    async fn publish_key_packages_locked(
        &self,
        one_time: usize,
        last_resort: bool,
    ) -> Result<KeyPackageCount, Error> {
        let signer = self.mls_signer()?;
        let qs_key = self.server().queue_ref_key().await?;
        let domain = self.user().domain().clone();
        let queue = || {
            SealedQueueRef::seal(domain.clone(), &qs_key, &self.client_id()).map_err(Error::Seal)
        };
        let (entries, last) = self.mls.with_transaction(|provider| {
            let entries = (0..one_time)
                .map(|_| self.key_package_entry(provider, &signer, queue()?, false))
                .collect::<Result<Vec<_>, Error>>()?;
            let last = if last_resort {
                Some(self.key_package_entry(provider, &signer, queue()?, true)?)
            } else {
                None
            };
            Ok::<_, Error>((entries, last))
        })?;
        let mut count = None;
        let mut last = last;
        let mut chunks: Vec<Vec<KeyPackageEntry>> =
            entries.chunks(MAX_PUBLISH).map(<[_]>::to_vec).collect();
        if chunks.is_empty() {
            chunks.push(Vec::new());
        }
        for chunk in chunks {
            let body = PublishKeyPackages {
                entries: chunk,
                last_resort: last.take(),
            };
            count = Some(
                self.server()
                    .publish_key_packages(self.signer(), &body)
                    .await?,
            );
        }
        Ok(count.expect("at least one chunk"))
    }

    /// Publishes `batch` one-time key packages if the QS holds fewer than `min`, and a
    /// last-resort one if it has none; answers the count after.
    pub async fn top_up_key_packages(
        &self,
        min: u32,
        batch: usize,
    ) -> Result<KeyPackageCount, Error> {
        let _mls = self.mls_lock.lock().await;
        self.top_up_key_packages_locked(min, batch).await
    }

    async fn top_up_key_packages_locked(
        &self,
        min: u32,
        batch: usize,
    ) -> Result<KeyPackageCount, Error> {
        let count = self.server().key_package_count(self.signer()).await?;
        let one_time = if count.remaining < min { batch } else { 0 };
        if one_time == 0 && count.has_last_resort {
            return Ok(count);
        }
        self.publish_key_packages_locked(one_time, !count.has_last_resort)
            .await
    }

    fn key_package_entry(
        &self,
        provider: &MlsProvider,
        signer: &MlsSigner,
        queue: SealedQueueRef,
        last_resort: bool,
    ) -> Result<KeyPackageEntry, Error> {
        let mut builder = KeyPackage::builder();
        if last_resort {
            // openmls keeps a last-resort key package's private keys after a join, so the QS
            // may serve it again; the leaf has to announce the extension.
            builder = builder
                .leaf_node_capabilities(
                    Capabilities::builder()
                        .extensions(vec![ExtensionType::LastResort])
                        .build(),
                )
                .mark_as_last_resort();
        }
        let bundle = builder
            .build(
                CIPHERSUITE,
                provider,
                &signer.key,
                signer.credential.clone(),
            )
            .map_err(|e| mls_error("cannot make a key package", e))?;
        let bytes = MlsMessageOut::from(bundle.key_package().clone())
            .to_bytes()
            .map_err(|e| mls_error("cannot encode a key package", e))?;
        Ok(KeyPackageEntry::new(
            self.identity.credential.clone(),
            &self.identity.signing_key,
            bytes,
            queue,
            signer.key.public(),
        ))
    }

    /// Claims one key package of each other client of this user (see [`Client::check_entries`]).
    pub(crate) async fn claim_own_clients(
        &self,
    ) -> Result<Vec<(KeyPackage, KeyPackageEntry)>, Error> {
        let entries = self.server().own_key_packages(self.signer()).await?.entries;
        self.check_entries(entries, self.user()).await
    }

    /// Checks claimed key-package entries of `owner`'s clients: each entry's signature, its
    /// credential's chain to the AS of `owner`'s domain, that it is `owner`'s, that no client
    /// comes twice or is this one, and the KeyPackage itself. One failing entry stops the
    /// attempt.
    pub(crate) async fn check_entries(
        &self,
        entries: Vec<KeyPackageEntry>,
        owner: &UserName,
    ) -> Result<Vec<(KeyPackage, KeyPackageEntry)>, Error> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let credentials = self.as_credentials_of(owner.domain()).await?;
        let mut seen = std::collections::HashSet::new();
        let mut claimed = Vec::new();
        for entry in entries {
            let refuse = |reason: String| Error::BadKeyPackage {
                client_id: entry.client_id(),
                reason,
            };
            entry.verify().map_err(|e| refuse(e.to_string()))?;
            credentials
                .verify_client(&entry.client_credential, Timestamp::now())
                .map_err(|e| refuse(format!("its credential does not verify: {e}")))?;
            if entry.client_credential.user() != owner {
                return Err(refuse(format!(
                    "it belongs to {}",
                    entry.client_credential.user()
                )));
            }
            if entry.client_id() == self.client_id() || !seen.insert(entry.client_id()) {
                return Err(refuse("it names this client or a client twice".into()));
            }
            let key_package = parse_key_package(&self.mls, &entry.key_package).map_err(refuse)?;
            entry
                .card(key_package.leaf_node().signature_key().as_slice())
                .verify()
                .map_err(|_| refuse("its member card signature does not verify".into()))?;
            claimed.push((key_package, entry));
        }
        Ok(claimed)
    }

    pub(crate) fn member_entry(
        &self,
        queue: SealedQueueRef,
        group_id: &[u8],
        keys: &GroupKeys,
        card: &MemberCard,
    ) -> MemberEntry {
        MemberEntry {
            queue,
            encrypted_credential: keys
                .credential_ear_key
                .encrypt(group_id, &codec::encode(card)),
        }
    }

    /// This client's [`MemberCard`]: its credential bound to its MLS signature key.
    pub(crate) fn own_card(&self, signer: &MlsSigner) -> MemberCard {
        MemberCard::new(
            self.credential().clone(),
            &self.identity.signing_key,
            signer.key.public(),
        )
    }

    pub(crate) fn group_info_bytes(
        &self,
        group: &MlsGroup,
        signer: &MlsSigner,
    ) -> Result<Vec<u8>, Error> {
        group
            .export_group_info(self.mls.crypto(), &signer.key, true)
            .map_err(|e| mls_error("cannot export the group info", e))?
            .to_bytes()
            .map_err(|e| mls_error("cannot encode the group info", e))
    }

    /// Adds claimed clients to `group` in one commit with a Welcome bundle carrying the
    /// group's keys and `name` (`None` for a connection group). The local state moves on only
    /// if the DS takes the commit.
    pub(crate) async fn add_clients(
        &self,
        group: &mut MlsGroup,
        signer: &MlsSigner,
        access: &GroupAccess,
        name: Option<&str>,
        claimed: Vec<(KeyPackage, KeyPackageEntry)>,
    ) -> Result<usize, Error> {
        if claimed.is_empty() {
            return Ok(0);
        }
        let (group_id, keys) = (&access.group_id, &access.keys);
        let staged = (|| {
            let key_packages: Vec<KeyPackage> = claimed.iter().map(|(k, _)| k.clone()).collect();
            let (commit, welcome, _) = group
                .add_members(&self.mls, &signer.key, &key_packages)
                .map_err(|e| mls_error("cannot add the other clients", e))?;
            group
                .merge_pending_commit(&self.mls)
                .map_err(|e| mls_error("cannot merge the commit", e))?;
            let bundle_key = exported_key(&self.mls, group)?;
            let secrets = WelcomeSecrets::new(
                keys.clone(),
                name.map(str::to_owned),
                access.ds.clone(),
                group_id,
                signer.key.public(),
                self.credential().clone(),
                &self.identity.signing_key,
            );
            let welcome = WelcomeBundle {
                group_id: group_id.clone(),
                welcome: welcome
                    .to_bytes()
                    .map_err(|e| mls_error("cannot encode the welcome", e))?,
                encrypted_keys: bundle_key.encrypt(group_id, &secrets.encode()),
            };
            Ok::<_, Error>(CommitRequest {
                ear_key: keys.group_state_ear_key.clone(),
                commit: commit
                    .to_bytes()
                    .map_err(|e| mls_error("cannot encode the commit", e))?,
                group_info: self.group_info_bytes(group, signer)?,
                added: claimed
                    .iter()
                    .map(|(key_package, entry)| {
                        let card = entry.card(key_package.leaf_node().signature_key().as_slice());
                        self.member_entry(entry.queue.clone(), group_id, keys, &card)
                    })
                    .collect(),
                welcome: Some(welcome),
            })
        })();
        let request = match staged {
            Ok(request) => request,
            Err(e) => {
                self.reload_after_discard(group);
                return Err(e);
            }
        };
        let committed = match self.as_server_for(&access.ds) {
            Ok(ds) => ds.commit(group_id, &request).await.map_err(Error::from),
            Err(e) => Err(e),
        };
        match committed {
            Ok(_) => {
                self.mls.commit()?;
                Ok(claimed.len())
            }
            Err(e) => {
                self.reload_after_discard(group);
                Err(e)
            }
        }
    }

    /// Drops pending MLS writes and brings `group` back to what storage holds.
    fn reload_after_discard(&self, group: &mut MlsGroup) {
        self.mls.discard();
        if let Ok(Some(stored)) = MlsGroup::load(self.mls.storage(), &group.group_id().clone()) {
            *group = stored;
        }
    }

    /// Asks `user` to connect: discovers the user's clients (every package verified), creates
    /// the connection group on the home DS with this user's other clients added, and sends
    /// each of the user's clients a sealed invitation. The connection is kept as a contact.
    pub async fn connect(&self, user: &UserName) -> Result<Connected, Error> {
        if user == self.user() {
            return Err(Error::ConnectToSelf);
        }
        let packages = self.discover(user).await?;
        let _mls = self.mls_lock.lock().await;
        let signer = self.mls_signer()?;
        let siblings = self.claim_own_clients().await?;
        let (mut group, access) = self.create_ds_group(&signer, true).await?;
        let contact = Contact {
            group_id: access.group_id.clone(),
            peer: Some(user.clone()),
            ds: access.ds.clone(),
            keys: access.keys.clone(),
            since: Timestamp::now(),
            initiated: true,
            peer_token: None,
            token_shared: false,
        };
        self.save_contact(&contact).await?;
        let own_clients_added = self
            .add_clients(&mut group, &signer, &access, None, siblings)
            .await?;

        for package in &packages {
            let invitation = ConnectionEstablishmentPackage::new(
                ConnectionEstablishmentBody {
                    sender_client_credential: self.credential().clone(),
                    connection_group_id: contact.group_id.clone(),
                    group_state_ear_key: contact.keys.group_state_ear_key.clone(),
                    credential_ear_key: contact.keys.credential_ear_key.clone(),
                    responder: user.clone(),
                    connection_package: package.hash(),
                },
                &self.identity.signing_key,
            );
            self.send_connection_request(package, &invitation).await?;
        }
        Ok(Connected {
            group_id: contact.group_id,
            peer: user.clone(),
            invited: packages.len(),
            own_clients_added,
        })
    }

    /// Creates a group with fresh EAR keys on the home DS, this client its only member. The
    /// local group is kept only if the DS took it.
    pub(crate) async fn create_ds_group(
        &self,
        signer: &MlsSigner,
        connection_group: bool,
    ) -> Result<(MlsGroup, GroupAccess), Error> {
        let queue = self.own_queue_ref().await?;
        let group = MlsGroup::new(
            &self.mls,
            &signer.key,
            &create_config(),
            signer.credential.clone(),
        )
        .map_err(|e| {
            self.mls.discard();
            mls_error("cannot create the group", e)
        })?;
        let access = GroupAccess {
            group_id: group.group_id().as_slice().to_vec(),
            ds: self.user().domain().clone(),
            keys: GroupKeys {
                group_state_ear_key: EarKey::random(),
                credential_ear_key: EarKey::random(),
            },
        };
        let group_info = self
            .group_info_bytes(&group, signer)
            .inspect_err(|_| self.mls.discard())?;
        let create = CreateGroup {
            group_id: access.group_id.clone(),
            ear_key: access.keys.group_state_ear_key.clone(),
            group_info,
            creator: self.member_entry(
                queue,
                &access.group_id,
                &access.keys,
                &self.own_card(signer),
            ),
            connection_group,
        };
        if let Err(e) = self.server().create_group(&create).await {
            self.mls.discard();
            return Err(e.into());
        }
        self.mls.commit()?;
        Ok((group, access))
    }

    pub(crate) async fn save_contact(&self, contact: &Contact) -> Result<(), Error> {
        let (state, contact) = (self.state.clone(), contact.clone());
        blocking(move || state.save_contact(&contact)).await
    }

    /// Every connection of this client, oldest first.
    pub async fn contacts(&self) -> Result<Vec<Contact>, Error> {
        let state = self.state.clone();
        blocking(move || state.contacts()).await
    }

    /// The epoch and size of a group this client is in.
    pub fn group_status(&self, group_id: &[u8]) -> Result<Option<GroupStatus>, Error> {
        let group = MlsGroup::load(self.mls.storage(), &GroupId::from_slice(group_id))?;
        Ok(group.map(|g| GroupStatus {
            epoch: g.epoch().as_u64(),
            members: g.members().count(),
        }))
    }

    /// Accepts a pending connection request (see the module documentation for the steps).
    pub async fn accept(&self, id: &str) -> Result<Accepted, Error> {
        let _mls = self.mls_lock.lock().await;
        let request = self
            .state
            .pending_request(id)?
            .ok_or_else(|| Error::UnknownRequest(id.to_owned()))?;
        let group_id = request.package.body.connection_group_id.clone();
        let peer = request.from().clone();
        let accepted = |via| Accepted {
            group_id: group_id.clone(),
            peer: peer.clone(),
            via,
            own_clients_added: 0,
            own_clients_error: None,
        };
        if self.state.contact(&group_id)?.is_some() {
            self.discard_requests_for(&group_id).await?;
            return Ok(accepted(JoinedVia::AlreadyConnected));
        }
        // 1. Another client of this user may have accepted already.
        self.sync_locked(Duration::ZERO).await?;
        if self.state.contact(&group_id)?.is_some() {
            self.discard_requests_for(&group_id).await?;
            return Ok(accepted(JoinedVia::Welcome));
        }
        // 2. Join by external commit.
        let signer = self.mls_signer()?;
        let failure = match self.join_externally(&signer, &request).await {
            Ok(mut group) => {
                let contact = self
                    .state
                    .contact(&group_id)?
                    .expect("saved by join_externally");
                self.discard_requests_for(&group_id).await?;
                let added = match self.claim_own_clients().await {
                    Ok(claimed) => {
                        self.add_clients(&mut group, &signer, &contact.access(), None, claimed)
                            .await
                    }
                    Err(e) => Err(e),
                };
                let mut outcome = accepted(JoinedVia::ExternalCommit);
                match added {
                    Ok(n) => outcome.own_clients_added = n,
                    Err(e) => outcome.own_clients_error = Some(e.to_string()),
                }
                // Best effort: the next sync shares the token if this fails.
                self.share_due_tokens().await;
                return Ok(outcome);
            }
            Err(e) if is_transient(&e) => return Err(e),
            Err(e) => e,
        };
        // 3. The join was refused: a Welcome may be on its way from another client.
        let deadline = Instant::now() + WELCOME_GRACE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            self.sync_locked(left).await?;
            if self.state.contact(&group_id)?.is_some() {
                self.discard_requests_for(&group_id).await?;
                return Ok(accepted(JoinedVia::Welcome));
            }
            if left.is_zero() {
                break;
            }
        }
        self.discard_requests_for(&group_id).await?;
        Err(Error::ConnectionFailed {
            peer,
            reason: failure.to_string(),
        })
    }

    async fn discard_requests_for(&self, group_id: &[u8]) -> Result<usize, Error> {
        let (state, group_id) = (self.state.clone(), group_id.to_vec());
        blocking(move || state.remove_requests_for_group(&group_id)).await
    }

    /// Fetches the group's external-commit information from the initiator's DS, checks that
    /// every member is a client of the initiator, and joins by external commit. The local
    /// group and the contact are stored only if the DS takes the join.
    async fn join_externally(
        &self,
        signer: &MlsSigner,
        request: &PendingRequest,
    ) -> Result<MlsGroup, Error> {
        let body = &request.package.body;
        let group_id = body.connection_group_id.clone();
        let peer = request.from().clone();
        let refuse = |reason: String| Error::BadConnectionGroup(reason);
        let ds = self.as_server_for(peer.domain())?;
        let info = ds
            .external_commit_info(&group_id, &body.group_state_ear_key)
            .await?;
        if info.encrypted_credentials.is_empty() {
            return Err(refuse("the group has no members".into()));
        }
        let credentials = self.as_credentials_of(peer.domain()).await?;
        for encrypted in &info.encrypted_credentials {
            let plain = body
                .credential_ear_key
                .decrypt(&group_id, encrypted)
                .map_err(|_| refuse("a member's credential does not decrypt".into()))?;
            let card: MemberCard = codec::decode(&plain)
                .map_err(|e| refuse(format!("a member's credential is unreadable: {e}")))?;
            card.verify()
                .map_err(|_| refuse("a member's card signature does not verify".into()))?;
            let credential = card.credential;
            credentials
                .verify_client(&credential, Timestamp::now())
                .map_err(|e| refuse(format!("a member's credential does not verify: {e}")))?;
            if credential.user() != &peer {
                return Err(refuse(format!(
                    "the group holds a client of {}, not only of {peer}",
                    credential.user()
                )));
            }
        }
        let group_info = match parse_message(&info.group_info)? {
            MlsMessageBodyIn::GroupInfo(info) => info,
            _ => return Err(refuse("the DS served no group info".into())),
        };
        if group_info.group_id().as_slice() != group_id.as_slice() {
            return Err(refuse("the group info is of another group".into()));
        }
        let contact = Contact {
            group_id: group_id.clone(),
            peer: Some(peer.clone()),
            ds: peer.domain().clone(),
            keys: GroupKeys {
                group_state_ear_key: body.group_state_ear_key.clone(),
                credential_ear_key: body.credential_ear_key.clone(),
            },
            since: Timestamp::now(),
            initiated: false,
            peer_token: None,
            token_shared: false,
        };
        let joiner = self.member_entry(
            self.own_queue_ref().await?,
            &group_id,
            &contact.keys,
            &self.own_card(signer),
        );

        let built = (|| {
            let (group, bundle) = MlsGroup::external_commit_builder()
                .with_config(join_config())
                .build_group(&self.mls, group_info, signer.credential.clone())
                .map_err(|e| mls_error("cannot build the external commit", e))?
                .load_psks(self.mls.storage())
                .map_err(|e| mls_error("cannot build the external commit", e))?
                .build(self.mls.rand(), self.mls.crypto(), &signer.key, |_| true)
                .map_err(|e| mls_error("cannot build the external commit", e))?
                .finalize(&self.mls)
                .map_err(|e| mls_error("cannot build the external commit", e))?;
            let commit = bundle
                .commit()
                .to_bytes()
                .map_err(|e| mls_error("cannot encode the commit", e))?;
            let group_info = self.group_info_bytes(&group, signer)?;
            Ok::<_, Error>((group, commit, group_info))
        })();
        let (group, commit, group_info) = built.inspect_err(|_| self.mls.discard())?;
        let join = JoinConnectionGroup {
            ear_key: body.group_state_ear_key.clone(),
            commit,
            group_info,
            joiner,
        };
        if let Err(e) = ds.join_connection_group(&group_id, &join).await {
            self.mls.discard();
            return Err(e.into());
        }
        self.mls.commit()?;
        self.save_contact(&contact).await?;
        Ok(group)
    }

    /// Reads this client's QS queue: joins the groups of the Welcome bundles in it, applies the
    /// commits of its groups in order, and returns everything else.
    pub async fn sync(&self) -> Result<SyncReport, Error> {
        let _mls = self.mls_lock.lock().await;
        self.sync_locked(Duration::ZERO).await
    }

    /// [`Client::sync`] with the MLS lock held, waiting up to `wait` for a first message.
    /// Every message is processed and its result stored (the MLS state, a chat message in the
    /// group's log) before the position moves past it, and acknowledged only after that, so a
    /// crash loses nothing; a message handled again after a crash is stored once (by queue seq).
    pub(crate) async fn sync_locked(&self, wait: Duration) -> Result<SyncReport, Error> {
        let report = self.read_groups(wait).await?;
        self.share_due_tokens().await;
        if !report.joined.is_empty() {
            // Each join used up one of this client's key packages. Best effort: the next
            // join tries again, and the last resort stands in meanwhile.
            let _ = self
                .top_up_key_packages_locked(KEY_PACKAGES_LOW, INITIAL_KEY_PACKAGES)
                .await;
        }
        Ok(report)
    }

    /// Handles what is queued and learns new peers, without sharing tokens: for a sender
    /// that found the DS in a later epoch.
    pub(crate) async fn catch_up(&self) -> Result<SyncReport, Error> {
        self.read_groups(Duration::ZERO).await
    }

    /// Drains the QS queue through [`GroupReader`], then learns the peers of new contacts.
    async fn read_groups(&self, wait: Duration) -> Result<SyncReport, Error> {
        let mut reader = GroupReader {
            report: SyncReport::default(),
        };
        self.drain(&mut reader, wait).await?;
        self.learn_peers().await;
        Ok(reader.report)
    }

    /// Handles one queue item of a sync; an `Err` is a local failure that stops the batch.
    async fn handle_item(
        &self,
        seq: u64,
        item: Result<QueueItem, roost_protocol::crypto::CryptoError>,
        report: &mut SyncReport,
    ) -> Result<(), Error> {
        match item {
            Ok(QueueItem::Group(GroupDelivery::Welcome(bundle))) => {
                match self.join_from_welcome(&bundle).await {
                    Ok(()) => report.joined.push(bundle.group_id),
                    // Tried again at the next sync: the server could not be reached.
                    Err(e) if is_transient(&e) => return Err(e),
                    Err(e) => report.failed.push(format!(
                        "welcome into group {}: {e}",
                        hex::encode(&bundle.group_id)
                    )),
                }
            }
            Ok(QueueItem::Group(GroupDelivery::Message { group_id, message })) => {
                match self.process_group_message(seq, &group_id, &message).await? {
                    Ok(Processed::Commit) => report.commits += 1,
                    Ok(Processed::Removed) => report.removed_from.push(group_id),
                    Ok(Processed::Message(stored)) => {
                        report.messages += 1;
                        if let Some(stored) = stored {
                            report.received.push((group_id, stored));
                        }
                    }
                    Ok(Processed::Token | Processed::Proposal) => {}
                    Err(e) => report
                        .failed
                        .push(format!("message of group {}: {e}", hex::encode(&group_id))),
                }
            }
            item => report.other.push(Received { seq, item }),
        }
        Ok(())
    }

    /// Joins the group a Welcome bundle invites into, decrypting its keys with the secret
    /// exported from the epoch it opens; settles pending requests for that group.
    async fn join_from_welcome(&self, bundle: &WelcomeBundle) -> Result<(), Error> {
        if self.state.group_access(&bundle.group_id)?.is_some() {
            return Ok(());
        }
        let MlsMessageBodyIn::Welcome(welcome) = parse_message(&bundle.welcome)? else {
            return Err(Error::Mls("the bundle holds no Welcome".into()));
        };
        let joined = (|| {
            let staged = StagedWelcome::new_from_welcome(&self.mls, &join_config(), welcome, None)
                .map_err(|e| mls_error("cannot join from the Welcome", e))?;
            let sender_key = staged
                .welcome_sender()
                .map_err(|e| mls_error("the Welcome names no sender", e))?
                .signature_key()
                .as_slice()
                .to_vec();
            let group = staged
                .into_group(&self.mls)
                .map_err(|e| mls_error("cannot join from the Welcome", e))?;
            if group.group_id().as_slice() != bundle.group_id.as_slice() {
                return Err(Error::Mls("the Welcome is into another group".into()));
            }
            let plain = exported_key(&self.mls, &group)?
                .decrypt(&bundle.group_id, &bundle.encrypted_keys)
                .map_err(|_| Error::Mls("the group keys do not decrypt".into()))?;
            let secrets = codec::decode::<WelcomeSecrets>(&plain)
                .map_err(|e| mls_error("the group keys are unreadable", e))?;
            secrets
                .verify_adder(&bundle.group_id, &sender_key)
                .map_err(|_| Error::Mls("the adder's signature does not verify".into()))?;
            if let Some(name) = &secrets.name {
                content::check_group_name(name)
                    .map_err(|e| Error::Mls(format!("the group's name is refused: {e}")))?;
            }
            Ok::<_, Error>(secrets)
        })();
        let secrets = joined.inspect_err(|_| self.mls.discard())?;
        // Who added this client: a valid client of its domain, and into a connection group
        // only one of this user's own clients.
        let adder = &secrets.adder;
        let checked = match self.verify_credential(adder).await {
            Ok(()) if secrets.name.is_none() && adder.user() != self.user() => {
                Err(Error::Mls(format!(
                    "{} invited this client into a connection group",
                    adder.user()
                )))
            }
            checked => checked,
        };
        checked.inspect_err(|_| self.mls.discard())?;
        self.mls.commit()?;
        let access = GroupAccess {
            group_id: bundle.group_id.clone(),
            ds: secrets.ds.clone(),
            keys: secrets.keys.clone(),
        };
        match secrets.name {
            Some(name) => {
                let group = NamedGroup {
                    group_id: access.group_id.clone(),
                    name,
                    ds: access.ds,
                    keys: access.keys,
                    since: Timestamp::now(),
                    removed: false,
                };
                let state = self.state.clone();
                blocking(move || state.save_named_group(&group)).await?;
            }
            None => {
                // The peer is known if this client holds a request for the group.
                let request = self
                    .state
                    .pending_requests()?
                    .into_iter()
                    .find(|r| r.package.body.connection_group_id == bundle.group_id);
                self.save_contact(&Contact {
                    group_id: bundle.group_id.clone(),
                    initiated: request.is_none(),
                    peer: request.map(|r| r.from().clone()),
                    ds: access.ds,
                    keys: access.keys,
                    since: Timestamp::now(),
                    peer_token: None,
                    token_shared: false,
                })
                .await?;
                self.discard_requests_for(&bundle.group_id).await?;
            }
        }
        Ok(())
    }

    /// Processes one group message. The outer error is a local failure (nothing committed);
    /// the inner one a message that cannot be used. An application message is stored in the
    /// group's log before the MLS state that consumed its key is committed.
    async fn process_group_message(
        &self,
        seq: u64,
        group_id: &[u8],
        message: &[u8],
    ) -> Result<Result<Processed, Error>, Error> {
        let pending = match self.process_pending(group_id, message) {
            Ok(pending) => pending,
            Err(e) => {
                self.mls.discard();
                return Ok(Err(e));
            }
        };
        let processed = match pending {
            Pending::Done(Processed::Removed) => {
                self.mark_removed(group_id)
                    .await
                    .inspect_err(|_| self.mls.discard())?;
                Processed::Removed
            }
            Pending::Done(processed) => processed,
            Pending::Application { pseudonym, payload } => {
                let handled = match Content::decode(&payload) {
                    Ok(Content::Text(text)) => {
                        let from = self.resolve_sender(group_id, &pseudonym).await;
                        self.store_message(group_id, &from, &text, Some(seq))
                            .await
                            .map(|stored| Ok(Processed::Message(stored)))
                    }
                    Ok(Content::FriendshipToken(token)) => {
                        match self.sender_of(group_id, &pseudonym).await {
                            Some(from) => self
                                .note_token(group_id, &from, token)
                                .await
                                .map(|()| Ok(Processed::Token)),
                            None => Ok(Err(Error::Mls(
                                "a friendship token from an unknown sender".into(),
                            ))),
                        }
                    }
                    Err(e) => Ok(Err(Error::Mls(format!("an unreadable message: {e}")))),
                };
                match handled.inspect_err(|_| self.mls.discard())? {
                    Ok(processed) => processed,
                    Err(unusable) => {
                        // Its key is spent either way.
                        self.mls.commit()?;
                        return Ok(Err(unusable));
                    }
                }
            }
        };
        self.mls.commit()?;
        Ok(Ok(processed))
    }

    /// Processes a message into the MLS overlay, without committing it.
    fn process_pending(&self, group_id: &[u8], message: &[u8]) -> Result<Pending, Error> {
        let mut group = MlsGroup::load(self.mls.storage(), &GroupId::from_slice(group_id))?
            .ok_or_else(|| Error::Mls("this client is not in the group".into()))?;
        let protocol = MlsMessageIn::tls_deserialize_exact(message)
            .map_err(|e| mls_error("unreadable message", e))?
            .try_into_protocol_message()
            .map_err(|e| mls_error("not a group message", e))?;
        let provider = &self.mls;
        let processed = group
            .process_message(provider, protocol)
            .map_err(|e| mls_error("cannot process the message", e))?;
        let sender = processed.sender().clone();
        let credential = processed.credential().clone();
        match processed.into_content() {
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                let removed = staged.self_removed();
                group
                    .merge_staged_commit(provider, *staged)
                    .map_err(|e| mls_error("cannot merge the commit", e))?;
                Ok(Pending::Done(if removed {
                    Processed::Removed
                } else {
                    Processed::Commit
                }))
            }
            ProcessedMessageContent::ApplicationMessage(message) => {
                let Sender::Member(_) = sender else {
                    return Err(Error::Mls(
                        "an application message not from a member".into(),
                    ));
                };
                let pseudonym = BasicCredential::try_from(credential)
                    .map(|c| c.identity().to_vec())
                    .unwrap_or_default();
                Ok(Pending::Application {
                    pseudonym,
                    payload: message.into_bytes(),
                })
            }
            ProcessedMessageContent::ProposalMessage(proposal) => {
                group
                    .store_pending_proposal(provider.storage(), *proposal)
                    .map_err(|e| mls_error("cannot store the proposal", e))?;
                Ok(Pending::Done(Processed::Proposal))
            }
            // External join proposals, and this client's own messages: nothing to do.
            _ => Ok(Pending::Done(Processed::Proposal)),
        }
    }

    /// For contacts whose peer is not known yet, looks at the members' credentials at the DS;
    /// best effort (tried again at the next sync).
    async fn learn_peers(&self) {
        let Ok(contacts) = self.state.contacts() else {
            return;
        };
        for mut contact in contacts.into_iter().filter(|c| c.peer.is_none()) {
            let Ok(Some(group)) =
                MlsGroup::load(self.mls.storage(), &GroupId::from_slice(&contact.group_id))
            else {
                continue;
            };
            let Ok(members) = self.verified_members(&group, &contact.access()).await else {
                continue;
            };
            contact.peer = members
                .iter()
                .filter_map(|m| m.credential.as_ref())
                .map(|c| c.user())
                .find(|user| *user != self.user())
                .cloned();
            if contact.peer.is_some() {
                let _ = self.save_contact(&contact).await;
            }
            let _ = self.remember_members(&contact.group_id, members).await;
        }
    }
}

/// The key that encrypts a Welcome bundle's [`GroupKeys`]: exported from the group's epoch.
fn exported_key(provider: &MlsProvider, group: &MlsGroup) -> Result<EarKey, Error> {
    let secret = group
        .export_secret(
            provider.crypto(),
            GROUP_KEYS_EXPORTER_LABEL,
            group.group_id().as_slice(),
            32,
        )
        .map_err(|e| mls_error("cannot export the group-keys secret", e))?;
    let key: [u8; 32] = secret
        .try_into()
        .map_err(|_| Error::Mls("the exported secret has the wrong length".into()))?;
    Ok(EarKey(key))
}

fn parse_message(bytes: &[u8]) -> Result<MlsMessageBodyIn, Error> {
    Ok(MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(|e| mls_error("unreadable MLS message", e))?
        .extract())
}

/// A KeyPackage as an entry carries it, validated, of Roost's ciphersuite.
fn parse_key_package(provider: &MlsProvider, bytes: &[u8]) -> Result<KeyPackage, String> {
    let message = MlsMessageIn::tls_deserialize_exact(bytes).map_err(|e| e.to_string())?;
    let MlsMessageBodyIn::KeyPackage(key_package) = message.extract() else {
        return Err("it holds no key package".into());
    };
    let key_package = key_package
        .validate(provider.crypto(), ProtocolVersion::Mls10)
        .map_err(|e| format!("its key package is invalid: {e}"))?;
    if key_package.ciphersuite() != CIPHERSUITE {
        return Err("its key package is of another ciphersuite".into());
    }
    Ok(key_package)
}
