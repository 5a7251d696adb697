//! Discovery and connection establishment: connection packages (published by every client to
//! its AS) and connection-establishment packages (sealed by an initiator to one of them).
//!
//! Hardening beyond the seed: a connection-establishment package's signature also covers the
//! responder's user name and the hash of the connection package it was sealed to, so it cannot
//! be replayed to another user or client.

use serde::{Deserialize, Serialize};

use crate::{
    codec,
    credentials::Validity,
    crypto::{hash, CryptoError, HpkePublicKey, HpkeSecretKey, Sealed, Signature, SigningKey},
    ClientCredential, ClientId, Timestamp, UserName,
};

/// Where the connection's keys have always been found.
pub use crate::crypto::EarKey;

const PACKAGE_LABEL: &str = "roost connection package v1";
const ESTABLISHMENT_LABEL: &str = "roost connection establishment package v1";
const SEAL_INFO: &str = "roost connection establishment seal v1";

/// Largest sealed connection request a client accepts to open.
pub const MAX_SEALED_REQUEST: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the package has expired or is not yet valid")]
    Expired,
    #[error("the package was made for another user")]
    WrongResponder,
    #[error("the package was sealed to another connection package")]
    WrongConnectionPackage,
    #[error("the sealed package cannot be opened: {0}")]
    Unsealable(String),
}

/// Names one connection package: SHA-256 over its encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConnectionPackageHash(pub [u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionPackageBody {
    /// Connection-establishment packages for this client are sealed to this key.
    pub encryption_key: HpkePublicKey,
    pub validity: Validity,
    pub client_credential: ClientCredential,
    /// Never used up by a fetch; served when a client has no other package left.
    pub last_resort: bool,
}

/// What a client publishes so that others can reach it; signed by the client's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionPackage {
    pub body: ConnectionPackageBody,
    pub signature: Signature,
}

impl ConnectionPackage {
    pub fn new(
        client_credential: ClientCredential,
        key: &SigningKey,
        encryption_key: HpkePublicKey,
        validity: Validity,
        last_resort: bool,
    ) -> Self {
        let body = ConnectionPackageBody {
            encryption_key,
            validity,
            client_credential,
            last_resort,
        };
        let signature = key.sign(PACKAGE_LABEL, &body);
        ConnectionPackage { body, signature }
    }

    /// Checks the signature by the credential's key and the lifetime. The credential chain is
    /// checked separately, against the AS credentials of the client's domain.
    pub fn verify(&self, now: Timestamp) -> Result<(), ConnectionError> {
        self.body
            .client_credential
            .body
            .verifying_key
            .verify(PACKAGE_LABEL, &self.body, &self.signature)
            .map_err(|_| ConnectionError::BadSignature)?;
        if !self.body.validity.contains(now) {
            return Err(ConnectionError::Expired);
        }
        Ok(())
    }

    pub fn hash(&self) -> ConnectionPackageHash {
        ConnectionPackageHash(hash(
            "roost connection package hash v1",
            &codec::encode(self),
        ))
    }

    pub fn client_id(&self) -> ClientId {
        self.body.client_credential.client_id()
    }

    pub fn user(&self) -> &UserName {
        self.body.client_credential.user()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionEstablishmentBody {
    pub sender_client_credential: ClientCredential,
    pub connection_group_id: Vec<u8>,
    pub group_state_ear_key: EarKey,
    pub credential_ear_key: EarKey,
    /// Binds the package to its recipient user…
    pub responder: UserName,
    /// …and to the one connection package it was sealed to.
    pub connection_package: ConnectionPackageHash,
    /// Where the initiator's profile is and how to open it, if it has one: the responder
    /// fetches it only if it chooses to (the initiator is a stranger until accepted).
    pub initiator_profile: Option<crate::profile::ProfileRef>,
}

/// The initiator's invitation into a connection group, signed by the initiator's client key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionEstablishmentPackage {
    pub body: ConnectionEstablishmentBody,
    pub signature: Signature,
}

/// A connection-establishment package sealed to one responder client, as queued at its AS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedConnectionRequest {
    /// Which of the responder client's packages this was sealed to (lets the AS refuse a
    /// request for a package it never served to anyone, and the client find its key).
    pub connection_package: ConnectionPackageHash,
    pub sealed: Sealed,
}

impl ConnectionEstablishmentPackage {
    pub fn new(body: ConnectionEstablishmentBody, sender_key: &SigningKey) -> Self {
        let signature = sender_key.sign(ESTABLISHMENT_LABEL, &body);
        ConnectionEstablishmentPackage { body, signature }
    }

    /// Seals this package to the connection package it names.
    pub fn seal(&self, to: &ConnectionPackage) -> Result<SealedConnectionRequest, CryptoError> {
        let connection_package = to.hash();
        let sealed =
            to.body
                .encryption_key
                .seal(SEAL_INFO, &connection_package.0, &codec::encode(self))?;
        Ok(SealedConnectionRequest {
            connection_package,
            sealed,
        })
    }

    /// Checks the sender's signature and that the package was made for `me` and sealed to
    /// `my_package`. The sender's credential chain is checked separately.
    pub fn verify_for(
        &self,
        me: &UserName,
        my_package: &ConnectionPackageHash,
    ) -> Result<(), ConnectionError> {
        self.body
            .sender_client_credential
            .body
            .verifying_key
            .verify(ESTABLISHMENT_LABEL, &self.body, &self.signature)
            .map_err(|_| ConnectionError::BadSignature)?;
        if &self.body.responder != me {
            return Err(ConnectionError::WrongResponder);
        }
        if &self.body.connection_package != my_package {
            return Err(ConnectionError::WrongConnectionPackage);
        }
        Ok(())
    }
}

impl SealedConnectionRequest {
    /// Whether it is small enough for a client to open: an AS queues nothing larger.
    pub fn within_limit(&self) -> bool {
        self.sealed.ciphertext.len() <= MAX_SEALED_REQUEST
    }

    /// Opens the request with the secret key of the connection package it names.
    pub fn open(
        &self,
        key: &HpkeSecretKey,
    ) -> Result<ConnectionEstablishmentPackage, ConnectionError> {
        if !self.within_limit() {
            return Err(ConnectionError::Unsealable("too large".into()));
        }
        let plain = key
            .open(SEAL_INFO, &self.connection_package.0, &self.sealed)
            .map_err(|e| ConnectionError::Unsealable(e.to_string()))?;
        codec::decode_limited::<_, MAX_SEALED_REQUEST>(&plain)
            .map_err(|e| ConnectionError::Unsealable(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::ClientCredential;

    struct Party {
        key: SigningKey,
        credential: ClientCredential,
    }

    fn party(user: &str) -> Party {
        let key = SigningKey::generate();
        let credential = ClientCredential::issue(
            user.parse().unwrap(),
            ClientId::random(),
            key.verifying_key(),
            Validity::starting_now(3600),
            &SigningKey::generate(),
        );
        Party { key, credential }
    }

    fn package(of: &Party, lifetime: u64) -> (ConnectionPackage, HpkeSecretKey) {
        let (secret, public) = HpkeSecretKey::generate();
        let package = ConnectionPackage::new(
            of.credential.clone(),
            &of.key,
            public,
            Validity::starting_now(lifetime),
            false,
        );
        (package, secret)
    }

    fn invitation(
        from: &Party,
        to: &UserName,
        package: &ConnectionPackage,
    ) -> ConnectionEstablishmentPackage {
        ConnectionEstablishmentPackage::new(
            ConnectionEstablishmentBody {
                sender_client_credential: from.credential.clone(),
                connection_group_id: vec![1, 2, 3],
                group_state_ear_key: EarKey::random(),
                credential_ear_key: EarKey::random(),
                responder: to.clone(),
                connection_package: package.hash(),
                initiator_profile: None,
            },
            &from.key,
        )
    }

    #[test]
    fn ear_encryption_opens_only_with_the_same_key_and_context() {
        let key = EarKey::random();
        let sealed = key.encrypt(b"group 1", b"state");
        assert_eq!(key.decrypt(b"group 1", &sealed).unwrap(), b"state");
        assert!(key.decrypt(b"group 2", &sealed).is_err());
        assert!(EarKey::random().decrypt(b"group 1", &sealed).is_err());
        assert!(key.decrypt(b"group 1", &sealed[..10]).is_err());
        assert_ne!(key.encrypt(b"group 1", b"state"), sealed, "nonces repeat");
    }

    #[test]
    fn a_connection_package_verifies_until_it_expires_or_is_tampered_with() {
        let bob = party("bob@b.test");
        let (package, _) = package(&bob, 60);
        assert_eq!(package.verify(Timestamp::now()), Ok(()));
        assert_eq!(
            package.verify(Timestamp::now().plus_secs(61)),
            Err(ConnectionError::Expired)
        );
        let mut tampered = package.clone();
        tampered.body.last_resort = true;
        assert_eq!(
            tampered.verify(Timestamp::now()),
            Err(ConnectionError::BadSignature)
        );
    }

    #[test]
    fn a_sealed_invitation_opens_for_its_recipient_only_and_is_bound_to_it() {
        let alice = party("alice@a.test");
        let bob = party("bob@b.test");
        let (bob_package, bob_secret) = package(&bob, 60);
        let invitation = invitation(&alice, bob.credential.user(), &bob_package);
        let sealed = invitation.seal(&bob_package).unwrap();
        let opened = sealed.open(&bob_secret).unwrap();
        assert_eq!(opened, invitation);
        assert_eq!(
            opened.verify_for(bob.credential.user(), &bob_package.hash()),
            Ok(())
        );

        // Replayed to carol (another user) or to another of bob's packages: refused.
        let carol: UserName = "carol@b.test".parse().unwrap();
        assert_eq!(
            opened.verify_for(&carol, &bob_package.hash()),
            Err(ConnectionError::WrongResponder)
        );
        let (other_package, _) = package(&bob, 60);
        assert_eq!(
            opened.verify_for(bob.credential.user(), &other_package.hash()),
            Err(ConnectionError::WrongConnectionPackage)
        );
        // Someone else's key cannot open it.
        let (_, stranger) = package(&bob, 60);
        assert!(sealed.open(&stranger).is_err());
    }

    #[test]
    fn a_forged_invitation_does_not_verify() {
        let alice = party("alice@a.test");
        let mallory = party("mallory@a.test");
        let bob = party("bob@b.test");
        let (bob_package, _) = package(&bob, 60);
        let mut forged = invitation(&mallory, bob.credential.user(), &bob_package);
        forged.body.sender_client_credential = alice.credential.clone();
        assert_eq!(
            forged.verify_for(bob.credential.user(), &bob_package.hash()),
            Err(ConnectionError::BadSignature)
        );
    }
}
