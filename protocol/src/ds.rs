//! The delivery service's API: groups whose state the DS keeps only encrypted, and whose
//! members it reaches only through sealed queue references.
//!
//! MLS messages travel as opaque TLS-encoded bytes (`MlsMessageOut`); the DS parses handshake
//! messages (sent as public messages) to track the public group state, and never sees
//! application messages in the clear.

use serde::{Deserialize, Serialize};

use crate::{
    codec,
    connection::EarKey,
    credentials::ClientCredential,
    crypto::{
        CryptoError, HpkePublicKey, HpkeSecretKey, Sealed, Signature, SigningKey, VerifyingKey,
    },
    ClientId, Domain, OpId,
};

/// Longest group id a DS accepts, in bytes.
pub const MAX_GROUP_ID: usize = 64;

/// POST [`CreateGroup`] → 201.
pub const DS_GROUPS: &str = "/ds/v1/groups";

fn group_path(pattern: &str, group_id: &[u8]) -> String {
    crate::route::fill_route(pattern, hex::encode(group_id))
}

/// POST [`CommitRequest`] → [`Committed`]; 409 `stale_epoch` when the group moved on.
pub const DS_COMMIT_ROUTE: &str = "/ds/v1/groups/{group}/commit";

/// [`DS_COMMIT_ROUTE`] of a group.
pub fn ds_commit(group_id: &[u8]) -> String {
    group_path(DS_COMMIT_ROUTE, group_id)
}

/// POST [`SendMessage`] → 202 [`Accepted`]; 409 `stale_epoch` when the group moved on.
pub const DS_MESSAGES_ROUTE: &str = "/ds/v1/groups/{group}/messages";

/// [`DS_MESSAGES_ROUTE`] of a group.
pub fn ds_messages(group_id: &[u8]) -> String {
    group_path(DS_MESSAGES_ROUTE, group_id)
}

/// POST [`EarKeyProof`] → [`ExternalCommitInfo`].
pub const DS_EXTERNAL_COMMIT_INFO_ROUTE: &str = "/ds/v1/groups/{group}/external-commit-info";

/// [`DS_EXTERNAL_COMMIT_INFO_ROUTE`] of a group.
pub fn ds_external_commit_info(group_id: &[u8]) -> String {
    group_path(DS_EXTERNAL_COMMIT_INFO_ROUTE, group_id)
}

/// POST [`JoinConnectionGroup`] → [`Committed`]; succeeds once per connection group.
pub const DS_JOIN_CONNECTION_GROUP_ROUTE: &str = "/ds/v1/groups/{group}/join-connection-group";

/// [`DS_JOIN_CONNECTION_GROUP_ROUTE`] of a group.
pub fn ds_join_connection_group(group_id: &[u8]) -> String {
    group_path(DS_JOIN_CONNECTION_GROUP_ROUTE, group_id)
}

/// The MLS exporter label of an epoch's [`EpochKey`] seed (32 bytes, empty context).
pub const EPOCH_KEY_EXPORTER_LABEL: &str = "roost ds epoch key";

const EPOCH_PROOF_LABEL: &str = "roost ds epoch proof v1";

/// A signing key that every member of an MLS epoch derives from the epoch's exporter and no
/// one else can: with it a member proves to the DS that it belongs to the group's current epoch
/// without saying which member it is. A removed member cannot derive the key of any epoch after
/// its removal.
#[derive(Debug, Clone)]
pub struct EpochKey(SigningKey);

impl EpochKey {
    /// From the 32 bytes exported under [`EPOCH_KEY_EXPORTER_LABEL`].
    pub fn from_exported(seed: [u8; 32]) -> Self {
        EpochKey(SigningKey::from_seed(seed))
    }

    /// What the DS keeps to check proofs of this epoch.
    pub fn public(&self) -> VerifyingKey {
        self.0.verifying_key()
    }

    /// Proves that whoever sends `message` into `group_id` at `epoch` is a member of it.
    pub fn prove(&self, group_id: &[u8], epoch: u64, message: &[u8]) -> Signature {
        self.0
            .sign_bytes(EPOCH_PROOF_LABEL, &proved(group_id, epoch, message))
    }
}

/// What an epoch proof signs: the group, the epoch, and a hash of the message.
fn proved(group_id: &[u8], epoch: u64, message: &[u8]) -> Vec<u8> {
    let message = crate::crypto::hash(EPOCH_PROOF_LABEL, message);
    codec::encode(&(group_id, epoch, message))
}

/// Checks a [`EpochKey::prove`] proof against the epoch's public key.
pub fn verify_epoch_proof(
    key: &VerifyingKey,
    group_id: &[u8],
    epoch: u64,
    message: &[u8],
    proof: &Signature,
) -> Result<(), CryptoError> {
    key.verify_bytes(EPOCH_PROOF_LABEL, &proved(group_id, epoch, message), proof)
}

/// Create a group on the DS. The creator is its only member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateGroup {
    pub op: OpId,
    pub group_id: Vec<u8>,
    pub ear_key: EarKey,
    /// TLS-encoded `MlsMessageOut` GroupInfo with the ratchet-tree extension.
    pub group_info: Vec<u8>,
    /// The public [`EpochKey`] of epoch 0.
    pub epoch_key: VerifyingKey,
    pub creator: MemberEntry,
    /// Whether the *join connection group* endpoint may be used (once).
    pub connection_group: bool,
}

/// A member's commit, with the GroupInfo of the epoch it creates and what new members need.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitRequest {
    pub op: OpId,
    pub ear_key: EarKey,
    pub commit: Vec<u8>,
    pub group_info: Vec<u8>,
    /// One entry per added member, in the order of the commit's add proposals.
    pub added: Vec<MemberEntry>,
    pub welcome: Option<WelcomeBundle>,
    /// The public [`EpochKey`] of the epoch the commit creates.
    pub epoch_key: VerifyingKey,
    /// New EAR keys: required when the commit removes a member, so that a removed member's
    /// keys open nothing stored from then on.
    pub rekey: Option<Rekey>,
}

/// What the DS needs of a commit's new [`GroupKeys`] (which members derive from the epoch the
/// commit creates, [`GroupKeys::of_epoch`]): the new group-state key, and each staying
/// member's card encrypted under the new credential key — by leaf, every member the group had
/// before the commit and keeps; empty where the committer could not read a member's card.
/// Added members' entries come with the commit, encrypted under the new key too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rekey {
    pub group_state_ear_key: EarKey,
    pub credentials: std::collections::BTreeMap<u32, Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub epoch: u64,
    /// The commit's place in the group's order.
    pub seq: u64,
}

/// An application message the DS took, with its place in the group's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub seq: u64,
}

/// An application message for every member (its sender's copy tells it the message's place),
/// or a member's proposal to remove a member (leaving proposes one's own removal), which the DS
/// keeps until another member commits it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendMessage {
    pub op: OpId,
    pub ear_key: EarKey,
    pub message: Vec<u8>,
    /// The sender's [`EpochKey::prove`] of `message` at the group's current epoch.
    pub proof: Signature,
}

/// Knowing the group-state EAR key is what lets a caller read or join a group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EarKeyProof {
    pub ear_key: EarKey,
}

/// What a joiner needs for an external commit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExternalCommitInfo {
    pub group_info: Vec<u8>,
    /// The members' client credentials, encrypted under the credential EAR key.
    pub encrypted_credentials: Vec<Vec<u8>>,
}

/// The responder's external commit into a connection group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinConnectionGroup {
    pub op: OpId,
    pub ear_key: EarKey,
    pub commit: Vec<u8>,
    pub group_info: Vec<u8>,
    pub joiner: MemberEntry,
    /// The public [`EpochKey`] of the epoch the commit creates.
    pub epoch_key: VerifyingKey,
}

/// The KeyPackage extension (of the private-use range, RFC 9420 §17.3) that carries its
/// owner's [`SealedQueueRef`], codec-encoded. Signed with the KeyPackage by the owner's leaf key,
/// it binds the package to the queue that gets the Welcome: whoever adds the owner cannot send
/// that Welcome anywhere else.
pub const QUEUE_EXTENSION_TYPE: u16 = 0xff52;

/// POST [`Rejoin`] → [`Committed`].
pub const DS_REJOIN_ROUTE: &str = "/ds/v1/groups/{group}/rejoin";

/// [`DS_REJOIN_ROUTE`] of a group.
pub fn ds_rejoin(group_id: &[u8]) -> String {
    group_path(DS_REJOIN_ROUTE, group_id)
}

/// A member that fell out of step with its group (a commit it could not process, or one it
/// never got) takes the group's current state again: an external commit, from the GroupInfo
/// the DS holds, that replaces the member's own leaf — it removes the leaf with the joiner's
/// signature key, which only that member can sign with. The DS keeps the member's entry for
/// the new leaf; no EAR keys change (no one left).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rejoin {
    pub op: OpId,
    pub ear_key: EarKey,
    pub commit: Vec<u8>,
    pub group_info: Vec<u8>,
    /// The public [`EpochKey`] of the epoch the commit creates.
    pub epoch_key: VerifyingKey,
}

const QUEUE_REF_INFO: &str = "roost queue reference v1";

/// A client's queue, sealed to its home QS's queue-reference key: the DS stores and forwards it
/// but cannot tell which client it names, and two references to one client look unrelated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedQueueRef {
    /// The QS to hand the message to.
    pub domain: Domain,
    pub sealed: Sealed,
}

impl SealedQueueRef {
    pub fn seal(
        domain: Domain,
        qs_key: &HpkePublicKey,
        client: &ClientId,
    ) -> Result<Self, CryptoError> {
        Ok(SealedQueueRef {
            sealed: qs_key.seal(QUEUE_REF_INFO, domain.as_str().as_bytes(), &client.0)?,
            domain,
        })
    }

    /// Opened by the QS of `domain` only.
    pub fn open(&self, qs_key: &HpkeSecretKey) -> Result<ClientId, CryptoError> {
        let plain = qs_key.open(
            QUEUE_REF_INFO,
            self.domain.as_str().as_bytes(),
            &self.sealed,
        )?;
        let id: [u8; 16] = plain.try_into().map_err(|_| CryptoError::Decryption)?;
        Ok(ClientId(id))
    }
}

const MEMBER_CARD_LABEL: &str = "roost member card v1";

/// A client's real credential bound to the MLS signature key its leaves use, signed by the
/// client. Members read it (encrypted under the credential EAR key, in the DS's
/// [`MemberEntry`]) to tell which client a pseudonymous leaf is, at any epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberCard {
    pub credential: ClientCredential,
    /// The MLS signature public key of the client's leaves.
    pub leaf_key: Vec<u8>,
    pub signature: Signature,
}

impl MemberCard {
    pub fn new(credential: ClientCredential, key: &SigningKey, leaf_key: &[u8]) -> Self {
        MemberCard {
            signature: Self::sign(key, leaf_key),
            credential,
            leaf_key: leaf_key.to_vec(),
        }
    }

    pub fn sign(key: &SigningKey, leaf_key: &[u8]) -> Signature {
        key.sign_bytes(MEMBER_CARD_LABEL, leaf_key)
    }

    /// Checks the signature by the credential's key; the chain is checked separately.
    pub fn verify(&self) -> Result<(), CryptoError> {
        self.credential.body.verifying_key.verify_bytes(
            MEMBER_CARD_LABEL,
            &self.leaf_key,
            &self.signature,
        )
    }
}

/// What the DS keeps per member, next to the MLS leaf: where to deliver, and the member's
/// [`MemberCard`] encrypted under the group's credential EAR key (MLS leaves carry only
/// pseudonymous credentials).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEntry {
    pub queue: SealedQueueRef,
    pub encrypted_credential: Vec<u8>,
}

/// What a group message in a member's queue carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupDelivery {
    /// A handshake or application message of the group (TLS-encoded `MlsMessageOut`), with
    /// its place in the group's order: every member, its sender included, gets each one once
    /// in that order (a copy delivered again after a crash has the same `seq`).
    Message {
        group_id: Vec<u8>,
        seq: u64,
        message: Vec<u8>,
    },
    /// An invitation into a group.
    Welcome(WelcomeBundle),
}

/// A Welcome plus what the new member needs beside it: the group's EAR keys and name
/// ([`WelcomeSecrets`]),
/// encrypted under a secret exported from the epoch the Welcome opens, which the adder and the
/// new member know and the DS and QS do not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WelcomeBundle {
    pub group_id: Vec<u8>,
    pub welcome: Vec<u8>,
    pub encrypted_keys: Vec<u8>,
}

/// Keys of a group, as members pass them to new members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupKeys {
    pub group_state_ear_key: EarKey,
    pub credential_ear_key: EarKey,
}

/// The MLS exporter label of the 64 bytes that make a group's keys after a removal (context:
/// the group id): the first 32 the group-state key, the rest the credential key.
pub const GROUP_KEYS_AFTER_REMOVAL_LABEL: &str = "roost group keys after removal";

impl GroupKeys {
    /// The keys a commit that removes members brings, from the 64 bytes exported from its
    /// epoch under [`GROUP_KEYS_AFTER_REMOVAL_LABEL`]: every staying member derives them, no
    /// removed one can.
    pub fn of_epoch(exported: &[u8; 64]) -> Self {
        let (mut state, mut credential) = ([0; 32], [0; 32]);
        state.copy_from_slice(&exported[..32]);
        credential.copy_from_slice(&exported[32..]);
        GroupKeys {
            group_state_ear_key: EarKey(state),
            credential_ear_key: EarKey(credential),
        }
    }
}

const WELCOME_ADDER_LABEL: &str = "roost welcome adder v1";

/// What the encrypted part of a [`WelcomeBundle`] holds: the group's keys, its name for a
/// named group (`None`: a connection group), where its DS is, and who added the new member —
/// the adder's client credential, with a signature by that client's key binding it to the MLS
/// leaf key that signed the Welcome (MLS leaves carry only pseudonyms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WelcomeSecrets {
    pub keys: GroupKeys,
    pub name: Option<String>,
    /// Whose DS holds the group.
    pub ds: Domain,
    pub adder: ClientCredential,
    pub adder_signature: Signature,
}

impl WelcomeSecrets {
    /// `leaf_key`: the adder's MLS signature public key in the group.
    pub fn new(
        keys: GroupKeys,
        name: Option<String>,
        ds: Domain,
        group_id: &[u8],
        leaf_key: &[u8],
        adder: ClientCredential,
        adder_key: &SigningKey,
    ) -> Self {
        let adder_signature = adder_key.sign(
            WELCOME_ADDER_LABEL,
            &(group_id, leaf_key, &keys, &name, &ds),
        );
        WelcomeSecrets {
            keys,
            name,
            ds,
            adder,
            adder_signature,
        }
    }

    /// Checks that the adder's client key signed these secrets for `group_id` and the leaf key
    /// that sent the Welcome. The credential's chain is checked separately.
    pub fn verify_adder(&self, group_id: &[u8], leaf_key: &[u8]) -> Result<(), CryptoError> {
        self.adder.body.verifying_key.verify(
            WELCOME_ADDER_LABEL,
            &(group_id, leaf_key, &self.keys, &self.name, &self.ds),
            &self.adder_signature,
        )
    }

    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_pattern_matches_the_paths_built_for_it() {
        let group = [0xab, 0x01];
        for (pattern, path) in [
            (DS_COMMIT_ROUTE, ds_commit(&group)),
            (DS_MESSAGES_ROUTE, ds_messages(&group)),
            (
                DS_EXTERNAL_COMMIT_INFO_ROUTE,
                ds_external_commit_info(&group),
            ),
            (
                DS_JOIN_CONNECTION_GROUP_ROUTE,
                ds_join_connection_group(&group),
            ),
            (DS_REJOIN_ROUTE, ds_rejoin(&group)),
        ] {
            assert!(crate::route::matches(pattern, &path), "{pattern} vs {path}");
            assert!(path.starts_with("/ds/v1/groups/ab01/"), "{path}");
        }
    }

    #[test]
    fn a_queue_reference_opens_only_at_its_qs_and_references_are_unlinkable() {
        let (qs_secret, qs_public) = HpkeSecretKey::generate();
        let domain: Domain = "a.test".parse().unwrap();
        let client = ClientId::random();
        let first = SealedQueueRef::seal(domain.clone(), &qs_public, &client).unwrap();
        let second = SealedQueueRef::seal(domain.clone(), &qs_public, &client).unwrap();
        assert_ne!(first, second);
        assert_eq!(first.open(&qs_secret).unwrap(), client);
        let (other_qs, _) = HpkeSecretKey::generate();
        assert!(first.open(&other_qs).is_err());
        let moved = SealedQueueRef {
            domain: "b.test".parse().unwrap(),
            ..first
        };
        assert!(moved.open(&qs_secret).is_err());
    }
}
