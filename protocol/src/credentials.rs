//! The AS credential chain: AS credential (self-signed) → AS intermediate credential → client
//! credential, and the one function every client uses to check a chain.

use serde::{Deserialize, Serialize};

use crate::{
    crypto::{CryptoError, Fingerprint, Signature, SigningKey, VerifyingKey},
    ids::{ClientId, Domain, Timestamp, UserName},
};

const AS_LABEL: &str = "roost as credential v1";
const INTERMEDIATE_LABEL: &str = "roost as intermediate credential v1";
const CLIENT_LABEL: &str = "roost client credential v1";

/// When a credential may be used: `not_before <= now < not_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validity {
    pub not_before: Timestamp,
    pub not_after: Timestamp,
}

impl Validity {
    pub fn starting_now(lifetime_secs: u64) -> Self {
        let now = Timestamp::now();
        Validity {
            not_before: now,
            not_after: now.plus_secs(lifetime_secs),
        }
    }

    pub fn contains(&self, at: Timestamp) -> bool {
        self.not_before <= at && at < self.not_after
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsCredentialBody {
    pub domain: Domain,
    pub verifying_key: VerifyingKey,
    pub validity: Validity,
}

/// A domain's long-term root of trust, signed by its own key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsCredential {
    pub body: AsCredentialBody,
    pub signature: Signature,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntermediateCredentialBody {
    pub domain: Domain,
    pub verifying_key: VerifyingKey,
    pub validity: Validity,
    /// Fingerprint of the AS credential key that signed this.
    pub signer: Fingerprint,
}

/// The key the AS signs client credentials with, signed by the AS credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsIntermediateCredential {
    pub body: IntermediateCredentialBody,
    pub signature: Signature,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientCredentialBody {
    pub user: UserName,
    pub client_id: ClientId,
    pub verifying_key: VerifyingKey,
    pub validity: Validity,
    /// Fingerprint of the intermediate key that signed this.
    pub signer: Fingerprint,
}

/// Binds a client's signature key to a user name; signed by an AS intermediate credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientCredential {
    pub body: ClientCredentialBody,
    pub signature: Signature,
}

impl AsCredential {
    pub fn issue(domain: Domain, key: &SigningKey, validity: Validity) -> Self {
        let body = AsCredentialBody {
            domain,
            verifying_key: key.verifying_key(),
            validity,
        };
        let signature = key.sign(AS_LABEL, &body);
        AsCredential { body, signature }
    }

    fn verify_self_signature(&self) -> Result<(), CryptoError> {
        self.body
            .verifying_key
            .verify(AS_LABEL, &self.body, &self.signature)
    }
}

impl AsIntermediateCredential {
    pub fn issue(
        domain: Domain,
        key: &SigningKey,
        validity: Validity,
        as_key: &SigningKey,
    ) -> Self {
        let body = IntermediateCredentialBody {
            domain,
            verifying_key: key.verifying_key(),
            validity,
            signer: as_key.verifying_key().fingerprint(),
        };
        let signature = as_key.sign(INTERMEDIATE_LABEL, &body);
        AsIntermediateCredential { body, signature }
    }
}

impl ClientCredential {
    pub fn issue(
        user: UserName,
        client_id: ClientId,
        verifying_key: VerifyingKey,
        validity: Validity,
        intermediate_key: &SigningKey,
    ) -> Self {
        let body = ClientCredentialBody {
            user,
            client_id,
            verifying_key,
            validity,
            signer: intermediate_key.verifying_key().fingerprint(),
        };
        let signature = intermediate_key.sign(CLIENT_LABEL, &body);
        ClientCredential { body, signature }
    }

    pub fn user(&self) -> &UserName {
        &self.body.user
    }

    pub fn client_id(&self) -> ClientId {
        self.body.client_id
    }
}

/// The public credentials a domain's AS serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsCredentials {
    pub as_credentials: Vec<AsCredential>,
    pub intermediates: Vec<AsIntermediateCredential>,
}

/// Why a credential chain was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("the client credential is not valid at this time")]
    ClientExpired,
    #[error("no AS intermediate credential of {0} signed the client credential")]
    UnknownIntermediate(Domain),
    #[error("the client credential's signature does not verify")]
    BadClientSignature,
    #[error("the AS intermediate credential is not valid at this time")]
    IntermediateExpired,
    #[error("no AS credential of {0} signed the AS intermediate credential")]
    UnknownAsCredential(Domain),
    #[error("the AS intermediate credential's signature does not verify")]
    BadIntermediateSignature,
    #[error("the AS credential is not valid at this time")]
    AsExpired,
    #[error("the AS credential's self-signature does not verify")]
    BadAsSignature,
}

impl AsCredentials {
    /// Checks the chain client credential → intermediate → AS credential, all of them of the
    /// domain in the client's user name and valid at `now`. `self` must have been fetched from
    /// that domain (by the caller); nothing here trusts a credential for another domain.
    pub fn verify_client(
        &self,
        credential: &ClientCredential,
        now: Timestamp,
    ) -> Result<(), ChainError> {
        let domain = credential.body.user.domain();
        if !credential.body.validity.contains(now) {
            return Err(ChainError::ClientExpired);
        }
        let intermediate = self
            .intermediates
            .iter()
            .find(|i| {
                &i.body.domain == domain
                    && i.body.verifying_key.fingerprint() == credential.body.signer
            })
            .ok_or_else(|| ChainError::UnknownIntermediate(domain.clone()))?;
        intermediate
            .body
            .verifying_key
            .verify(CLIENT_LABEL, &credential.body, &credential.signature)
            .map_err(|_| ChainError::BadClientSignature)?;
        self.verify_intermediate(intermediate, now)
    }

    fn verify_intermediate(
        &self,
        intermediate: &AsIntermediateCredential,
        now: Timestamp,
    ) -> Result<(), ChainError> {
        let domain = &intermediate.body.domain;
        if !intermediate.body.validity.contains(now) {
            return Err(ChainError::IntermediateExpired);
        }
        let root = self
            .as_credentials
            .iter()
            .find(|a| {
                &a.body.domain == domain
                    && a.body.verifying_key.fingerprint() == intermediate.body.signer
            })
            .ok_or_else(|| ChainError::UnknownAsCredential(domain.clone()))?;
        root.body
            .verifying_key
            .verify(
                INTERMEDIATE_LABEL,
                &intermediate.body,
                &intermediate.signature,
            )
            .map_err(|_| ChainError::BadIntermediateSignature)?;
        if !root.body.validity.contains(now) {
            return Err(ChainError::AsExpired);
        }
        root.verify_self_signature()
            .map_err(|_| ChainError::BadAsSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Authority {
        creds: AsCredentials,
        intermediate_key: SigningKey,
    }

    fn authority(domain: &str) -> Authority {
        let domain: Domain = domain.parse().unwrap();
        let as_key = SigningKey::generate();
        let intermediate_key = SigningKey::generate();
        let validity = Validity::starting_now(3600);
        Authority {
            creds: AsCredentials {
                as_credentials: vec![AsCredential::issue(domain.clone(), &as_key, validity)],
                intermediates: vec![AsIntermediateCredential::issue(
                    domain,
                    &intermediate_key,
                    validity,
                    &as_key,
                )],
            },
            intermediate_key,
        }
    }

    fn client_of(authority: &Authority, user: &str, lifetime: u64) -> ClientCredential {
        ClientCredential::issue(
            user.parse().unwrap(),
            ClientId::random(),
            SigningKey::generate().verifying_key(),
            Validity::starting_now(lifetime),
            &authority.intermediate_key,
        )
    }

    #[test]
    fn a_chain_to_the_users_domain_verifies() {
        let a = authority("a.test");
        let cred = client_of(&a, "alice@a.test", 60);
        assert_eq!(a.creds.verify_client(&cred, Timestamp::now()), Ok(()));
    }

    #[test]
    fn a_credential_signed_by_another_domains_authority_is_rejected() {
        let a = authority("a.test");
        let mallory = authority("a.test");
        let forged = client_of(&mallory, "alice@a.test", 60);
        assert_eq!(
            a.creds.verify_client(&forged, Timestamp::now()),
            Err(ChainError::UnknownIntermediate("a.test".parse().unwrap()))
        );
        let b = authority("b.test");
        let wrong_domain = client_of(&b, "alice@a.test", 60);
        assert!(b
            .creds
            .verify_client(&wrong_domain, Timestamp::now())
            .is_err());
    }

    #[test]
    fn a_tampered_credential_is_rejected() {
        let a = authority("a.test");
        let mut cred = client_of(&a, "alice@a.test", 60);
        cred.body.user = "mallory@a.test".parse().unwrap();
        assert_eq!(
            a.creds.verify_client(&cred, Timestamp::now()),
            Err(ChainError::BadClientSignature)
        );
    }

    #[test]
    fn an_expired_credential_is_rejected() {
        let a = authority("a.test");
        let cred = client_of(&a, "alice@a.test", 60);
        let later = Timestamp::now().plus_secs(61);
        assert_eq!(
            a.creds.verify_client(&cred, later),
            Err(ChainError::ClientExpired)
        );
    }
}
