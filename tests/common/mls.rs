//! Real MLS members (openmls) for tests: a registered Roost client plus its MLS state, and the
//! DS calls that create groups and add members.

use openmls::prelude::{tls_codec::Deserialize as _, *};
use roost_protocol::{
    api::{self, QueueBatch, QueueItem},
    codec,
    connection::EarKey,
    ds::{self, GroupDelivery, MemberCard, MemberEntry, SealedQueueRef, WelcomeBundle},
    key_packages::KeyPackageEntry,
    Domain, HpkePublicKey,
};

use super::{Identity, Raw, Response, TestServer};

pub use super::mls_client::{config, MlsClient, CS};

/// One member device: a registered Roost client plus its MLS state.
pub struct Member {
    pub identity: Identity,
    pub mls: MlsClient,
    pub group: Option<MlsGroup>,
}

/// The body of a TLS-encoded MLSMessage.
pub fn parse(bytes: &[u8]) -> MlsMessageBodyIn {
    MlsMessageIn::tls_deserialize_exact(bytes)
        .unwrap()
        .extract()
}

/// The KeyPackage inside an entry's MLSMessage, unvalidated.
pub fn parse_key_package(bytes: &[u8]) -> KeyPackage {
    let MlsMessageBodyIn::KeyPackage(key_package) = parse(bytes) else {
        panic!("not a key package");
    };
    key_package
        .validate(
            &openmls_rust_crypto::RustCrypto::default(),
            ProtocolVersion::Mls10,
        )
        .unwrap()
}

impl Member {
    pub async fn register(server: &TestServer, name: &str) -> Member {
        let mut identity = Identity::new(&server.user(name));
        assert_eq!(
            server.http().register(&mut identity, None).await.status,
            201
        );
        Member::with_identity(identity)
    }

    /// A further client of `name`, added with the password.
    pub async fn add_client(server: &TestServer, name: &str) -> Member {
        let mut identity = Identity::new(&server.user(name));
        let response = server
            .http()
            .add_client(&mut identity, super::PASSWORD)
            .await;
        assert_eq!(response.status, 201);
        Member::with_identity(identity)
    }

    fn with_identity(identity: Identity) -> Member {
        Member {
            identity,
            mls: MlsClient::new(),
            group: None,
        }
    }

    /// Joins the group a Welcome bundle invites it to.
    pub fn join(&mut self, bundle: &WelcomeBundle) {
        let MlsMessageBodyIn::Welcome(welcome) = parse(&bundle.welcome) else {
            panic!("not a welcome");
        };
        self.group = Some(
            StagedWelcome::new_from_welcome(
                &self.mls.provider,
                config().join_config(),
                welcome,
                None,
            )
            .unwrap()
            .into_group(&self.mls.provider)
            .unwrap(),
        );
    }

    /// Expects exactly one delivery in its queue, a Welcome into `group_id`, and joins.
    pub async fn accept_welcome(&mut self, http: &Raw, group_id: &[u8]) {
        let deliveries = self.deliveries(http).await;
        let [GroupDelivery::Welcome(bundle)] = deliveries.as_slice() else {
            panic!("expected one welcome, got {deliveries:?}");
        };
        assert_eq!(bundle.group_id, group_id);
        self.join(bundle);
    }

    /// A signed QS entry for a fresh KeyPackage of `ciphersuite`, with this client's queue
    /// sealed to the QS of `domain`; the KeyPackage's private keys stay in this member's store.
    pub async fn key_package_entry_of(
        &self,
        http: &Raw,
        domain: &str,
        ciphersuite: Ciphersuite,
    ) -> KeyPackageEntry {
        self.entry_for(http, domain, ciphersuite, false).await
    }

    /// A signed QS entry for a fresh last-resort KeyPackage, as the client library makes one.
    pub async fn last_resort_entry(&self, http: &Raw, domain: &str) -> KeyPackageEntry {
        self.entry_for(http, domain, CS, true).await
    }

    async fn entry_for(
        &self,
        http: &Raw,
        domain: &str,
        ciphersuite: Ciphersuite,
        last_resort: bool,
    ) -> KeyPackageEntry {
        let queue = self.queue_ref(http, domain).await;
        let key_package =
            self.mls
                .key_package_naming(ciphersuite, codec::encode(&queue), last_resort);
        self.entry_of(key_package, queue)
    }

    /// This client's signed QS entry for `key_package` and `queue`.
    pub fn entry_of(&self, key_package: KeyPackage, queue: SealedQueueRef) -> KeyPackageEntry {
        KeyPackageEntry::new(
            self.identity.credential.clone().unwrap(),
            &self.identity.key,
            MlsMessageOut::from(key_package).to_bytes().unwrap(),
            queue,
            self.mls.signer.public(),
        )
    }

    pub async fn key_package_entry(&self, http: &Raw, domain: &str) -> KeyPackageEntry {
        self.key_package_entry_of(http, domain, CS).await
    }

    /// This client's queue, sealed to the QS of `domain` (served by `http`).
    pub async fn queue_ref(&self, http: &Raw, domain: &str) -> SealedQueueRef {
        let qs_key: HpkePublicKey = http
            .send("GET", api::QS_QUEUE_REF_KEY, vec![], None)
            .await
            .decode();
        let domain: Domain = domain.parse().unwrap();
        SealedQueueRef::seal(domain, &qs_key, &self.identity.client_id()).unwrap()
    }

    pub fn group(&mut self) -> &mut MlsGroup {
        self.group.as_mut().expect("in a group")
    }

    /// This client's member entry for the DS: its queue, and its member card encrypted under
    /// `credential_key` for `group_id`, as the client library makes it.
    pub async fn entry(
        &self,
        http: &Raw,
        domain: &str,
        group_id: &[u8],
        credential_key: &EarKey,
    ) -> MemberEntry {
        let card = MemberCard::new(
            self.identity.credential.clone().unwrap(),
            &self.identity.key,
            self.mls.signer.public(),
        );
        MemberEntry {
            queue: self.queue_ref(http, domain).await,
            encrypted_credential: credential_key.encrypt(group_id, &codec::encode(&card)),
        }
    }

    /// A fresh KeyPackage naming `queue`, as this client would publish it.
    pub fn key_package_for(&self, queue: &SealedQueueRef) -> KeyPackage {
        self.mls.key_package_naming(CS, codec::encode(queue), false)
    }

    /// The current epoch's key for proving membership to the DS, as a member derives it.
    pub fn epoch_key(&self) -> ds::EpochKey {
        let group = self.group.as_ref().expect("in a group");
        let seed = group
            .export_secret(
                self.mls.provider.crypto(),
                ds::EPOCH_KEY_EXPORTER_LABEL,
                &[],
                32,
            )
            .unwrap();
        ds::EpochKey::from_exported(seed.try_into().unwrap())
    }

    /// The request that sends `message`, made at the group's current epoch, with its proof.
    pub fn send_request(&self, keys: &Keys, message: Vec<u8>) -> ds::SendMessage {
        let group = self.group.as_ref().expect("in a group");
        let group_id = group.group_id().as_slice();
        ds::SendMessage {
            op: roost_protocol::OpId::random(),
            ear_key: keys.state.clone(),
            proof: self
                .epoch_key()
                .prove(group_id, group.epoch().as_u64(), &message),
            message,
        }
    }

    /// An application message saying `text`, and its request.
    pub fn message_request(&mut self, keys: &Keys, text: &[u8]) -> ds::SendMessage {
        let (provider, signer) = (&self.mls.provider, &self.mls.signer);
        let message = self
            .group
            .as_mut()
            .expect("in a group")
            .create_message(provider, signer, text)
            .unwrap();
        self.send_request(keys, message.to_bytes().unwrap())
    }

    pub fn group_info(&mut self) -> Vec<u8> {
        self.group_info_with(true)
    }

    /// The GroupInfo of this member's epoch, with or without the ratchet tree.
    pub fn group_info_with(&mut self, ratchet_tree: bool) -> Vec<u8> {
        let (provider, signer) = (&self.mls.provider, &self.mls.signer);
        self.group
            .as_ref()
            .unwrap()
            .export_group_info(provider.crypto(), signer, ratchet_tree)
            .unwrap()
            .to_bytes()
            .unwrap()
    }

    /// Everything group-related in this member's queue, acknowledged.
    pub async fn deliveries(&self, http: &Raw) -> Vec<GroupDelivery> {
        let batch: QueueBatch = http.fetch(&self.identity, 0, 1000, 0).await.decode();
        if let Some(last) = batch.messages.last() {
            http.ack(&self.identity, last.seq).await;
        }
        batch
            .messages
            .iter()
            .filter_map(|m| {
                match self
                    .identity
                    .open(roost_protocol::api::QueueKind::Messages, m)
                    .unwrap()
                {
                    QueueItem::Group(delivery) => Some(delivery),
                    _ => None,
                }
            })
            .collect()
    }

    pub fn process(&mut self, message: &[u8]) -> ProcessedMessageContent {
        self.try_process(message).unwrap()
    }

    /// Processes `message` as this member's client would, or says why it cannot.
    pub fn try_process(&mut self, message: &[u8]) -> Result<ProcessedMessageContent, String> {
        let protocol = MlsMessageIn::tls_deserialize_exact(message)
            .unwrap()
            .try_into_protocol_message()
            .unwrap();
        let provider = &self.mls.provider;
        let group = self.group.as_mut().unwrap();
        let processed = group
            .process_message(provider, protocol)
            .map_err(|e| format!("{e:?}"))?;
        Ok(processed.into_content())
    }
}

pub struct Keys {
    pub state: EarKey,
    pub credentials: EarKey,
}

pub async fn create_group(
    http: &Raw,
    domain: &str,
    creator: &mut Member,
    connection_group: bool,
) -> (Vec<u8>, Keys) {
    let keys = Keys {
        state: EarKey::random(),
        credentials: EarKey::random(),
    };
    let group = MlsGroup::new(
        &creator.mls.provider,
        &creator.mls.signer,
        &config(),
        creator.mls.credential.clone(),
    )
    .unwrap();
    let group_id = group.group_id().as_slice().to_vec();
    creator.group = Some(group);
    let body = ds::CreateGroup {
        op: roost_protocol::OpId::random(),
        group_id: group_id.clone(),
        ear_key: keys.state.clone(),
        group_info: creator.group_info(),
        epoch_key: creator.epoch_key().public(),
        creator: creator
            .entry(http, domain, &group_id, &keys.credentials)
            .await,
        connection_group,
    };
    let response = http.post(ds::DS_GROUPS, &body).await;
    assert_eq!(
        response.status,
        201,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    (group_id, keys)
}

/// `adder` adds a member by its key package, naming it to the DS with `entry`; returns the
/// status and the commit request it sent.
pub async fn add(
    http: &Raw,
    group_id: &[u8],
    keys: &Keys,
    adder: &mut Member,
    key_package: KeyPackage,
    entry: MemberEntry,
) -> (u16, ds::CommitRequest) {
    let (provider, signer) = (&adder.mls.provider, &adder.mls.signer);
    let (commit, welcome, _) = adder
        .group
        .as_mut()
        .unwrap()
        .add_members(provider, signer, &[key_package])
        .unwrap();
    adder
        .group
        .as_mut()
        .unwrap()
        .merge_pending_commit(provider)
        .unwrap();
    let request = ds::CommitRequest {
        op: roost_protocol::OpId::random(),
        ear_key: keys.state.clone(),
        commit: commit.to_bytes().unwrap(),
        group_info: adder.group_info(),
        epoch_key: adder.epoch_key().public(),
        rekey: None,
        added: vec![entry],
        welcome: Some(WelcomeBundle {
            group_id: group_id.to_vec(),
            welcome: welcome.to_bytes().unwrap(),
            encrypted_keys: vec![],
        }),
    };
    let response = http.post(&ds::ds_commit(group_id), &request).await;
    (response.status, request)
}

/// `adder` adds `joiner` by a fresh key package; returns the commit request it sent.
pub async fn add_member(
    http: &Raw,
    domain: &str,
    group_id: &[u8],
    keys: &Keys,
    adder: &mut Member,
    joiner: &Member,
) -> (u16, ds::CommitRequest) {
    let entry = joiner
        .entry(http, domain, group_id, &keys.credentials)
        .await;
    let key_package = joiner.key_package_for(&entry.queue);
    add(http, group_id, keys, adder, key_package, entry).await
}

/// `joiner`'s external commit into a group, from the GroupInfo the DS hands out; `joiner`
/// holds the group it would be in. Answers the commit and the request fields beside it.
pub async fn external_commit(
    http: &Raw,
    group_id: &[u8],
    keys: &Keys,
    joiner: &mut Member,
) -> (Vec<u8>, Vec<u8>, roost_protocol::VerifyingKey) {
    let info: ds::ExternalCommitInfo = http
        .send(
            "POST",
            &ds::ds_external_commit_info(group_id),
            codec::encode(&ds::EarKeyProof {
                ear_key: keys.state.clone(),
            }),
            None,
        )
        .await
        .decode();
    // The DS hands out the members' (encrypted) credentials for the joiner to check.
    assert!(!info.encrypted_credentials.is_empty());
    let MlsMessageBodyIn::GroupInfo(group_info) = parse(&info.group_info) else {
        panic!("not a group info");
    };
    let join_config = MlsGroupJoinConfig::builder()
        .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .build();
    let (group, bundle) = MlsGroup::external_commit_builder()
        .with_config(join_config)
        .build_group(
            &joiner.mls.provider,
            group_info,
            joiner.mls.credential.clone(),
        )
        .unwrap()
        .load_psks(joiner.mls.provider.storage())
        .unwrap()
        .build(
            joiner.mls.provider.rand(),
            joiner.mls.provider.crypto(),
            &joiner.mls.signer,
            |_| true,
        )
        .unwrap()
        .finalize(&joiner.mls.provider)
        .unwrap();
    joiner.group = Some(group);
    (
        bundle.commit().to_bytes().unwrap(),
        joiner.group_info(),
        joiner.epoch_key().public(),
    )
}

/// `joiner` joins a connection group by external commit through the DS's
/// join-connection-group endpoint; returns the DS's answer.
pub async fn join_connection_group(
    http: &Raw,
    domain: &str,
    group_id: &[u8],
    keys: &Keys,
    joiner: &mut Member,
) -> Response {
    let (commit, group_info, epoch_key) = external_commit(http, group_id, keys, joiner).await;
    let body = ds::JoinConnectionGroup {
        op: roost_protocol::OpId::random(),
        ear_key: keys.state.clone(),
        commit,
        group_info,
        epoch_key,
        joiner: joiner
            .entry(http, domain, group_id, &keys.credentials)
            .await,
    };
    http.post(&ds::ds_join_connection_group(group_id), &body)
        .await
}
