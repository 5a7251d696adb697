//! Key packages on the QS: what lets connected users add one another's clients to groups.
//!
//! Every client publishes MLS KeyPackages to its home QS, each wrapped in a [`KeyPackageEntry`]
//! that also carries the client's own queue reference (sealed to its QS, so whoever adds the
//! client can name it to the DS as the new member's queue) and its client credential, signed by
//! the client. Another user claims them with the owner's [`FriendshipToken`] — a random value
//! the owner shares inside a connection group, never the user name — so the QS does not learn
//! who adds whom. The adder checks the credential's chain separately, against the AS
//! credentials of the owner's domain.

use serde::{Deserialize, Serialize};

use crate::{
    codec,
    crypto::{hash, CryptoError, Signature, SigningKey},
    ds::{MemberCard, SealedQueueRef},
    ClientCredential, ClientId,
};

const ENTRY_LABEL: &str = "roost key package entry v1";

/// What lets someone claim a user's key packages at its QS: random, one per user, rotatable.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FriendshipToken(pub [u8; 32]);

impl FriendshipToken {
    pub fn random() -> Self {
        FriendshipToken(rand::random())
    }
}

impl std::fmt::Debug for FriendshipToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FriendshipToken(…)")
    }
}

/// One MLS KeyPackage of a client, with what an adder needs beside it; signed by the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPackageEntry {
    /// The KeyPackage as a TLS-encoded `MlsMessageOut` (the MLSMessage wrapper, wire format
    /// `mls_key_package`), like every other MLS message in this API; not a bare KeyPackage.
    pub key_package: Vec<u8>,
    /// The owner's own queue, sealed to its home QS's queue-reference key: the adder passes it
    /// to the DS as the new member's queue.
    pub queue: SealedQueueRef,
    pub client_credential: ClientCredential,
    /// By the client's key over the label, `key_package` and `queue`.
    pub signature: Signature,
    /// The client's [`MemberCard`] signature over the leaf signature key in `key_package`, so
    /// the adder can hand the new member's card to the DS.
    pub card_signature: Signature,
}

impl KeyPackageEntry {
    pub fn new(
        client_credential: ClientCredential,
        key: &SigningKey,
        key_package: Vec<u8>,
        queue: SealedQueueRef,
        leaf_key: &[u8],
    ) -> Self {
        let signature = key.sign(ENTRY_LABEL, &(&key_package, &queue));
        KeyPackageEntry {
            key_package,
            queue,
            client_credential,
            signature,
            card_signature: MemberCard::sign(key, leaf_key),
        }
    }

    /// The member card for the leaf key read from `key_package` (checked by its `verify`).
    pub fn card(&self, leaf_key: &[u8]) -> MemberCard {
        MemberCard {
            credential: self.client_credential.clone(),
            leaf_key: leaf_key.to_vec(),
            signature: self.card_signature,
        }
    }

    /// Checks the signature by the credential's key. The credential chain is checked
    /// separately, against the AS credentials of the client's domain.
    pub fn verify(&self) -> Result<(), CryptoError> {
        self.client_credential.body.verifying_key.verify(
            ENTRY_LABEL,
            &(&self.key_package, &self.queue),
            &self.signature,
        )
    }

    /// Names this entry: SHA-256 over its encoding.
    pub fn hash(&self) -> [u8; 32] {
        hash("roost key package entry hash v1", &codec::encode(self))
    }

    pub fn client_id(&self) -> ClientId {
        self.client_credential.client_id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{credentials::Validity, HpkeSecretKey};

    fn entry(key: &SigningKey, credential: &ClientCredential) -> KeyPackageEntry {
        let (_, qs_key) = HpkeSecretKey::generate();
        let queue =
            SealedQueueRef::seal("a.test".parse().unwrap(), &qs_key, &credential.client_id())
                .unwrap();
        KeyPackageEntry::new(credential.clone(), key, vec![1, 2, 3], queue, &[9; 32])
    }

    #[test]
    fn an_entry_verifies_until_tampered_with_and_the_token_hides_its_bytes() {
        let key = SigningKey::generate();
        let credential = ClientCredential::issue(
            "alice@a.test".parse().unwrap(),
            ClientId::random(),
            key.verifying_key(),
            Validity::starting_now(3600),
            &SigningKey::generate(),
        );
        let good = entry(&key, &credential);
        assert_eq!(good.verify(), Ok(()));
        let mut other_package = good.clone();
        other_package.key_package.push(4);
        assert!(other_package.verify().is_err());
        let mut other_queue = good.clone();
        other_queue.queue = entry(&key, &credential).queue;
        assert!(other_queue.verify().is_err());
        // Signed by another key than the credential's.
        assert!(entry(&SigningKey::generate(), &credential)
            .verify()
            .is_err());

        let token = FriendshipToken([0xab; 32]);
        assert!(!format!("{token:?}").contains("ab"));
        assert_ne!(FriendshipToken::random(), FriendshipToken::random());
    }
}
