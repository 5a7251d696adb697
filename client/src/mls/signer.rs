//! This client's MLS signer: its MLS signature key (kept in the MLS store) and the pseudonymous
//! credential its leaves carry, and the member card that binds that key to the client's
//! credential for the DS.

use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use roost_protocol::{
    codec,
    ds::{GroupKeys, MemberCard, MemberEntry, SealedQueueRef},
};

use super::{mls_error, MlsSession, CIPHERSUITE};
use crate::{device::Device, error::Error, store::MlsIdentity};

/// This client's MLS signer and the (pseudonymous) credential its leaves carry.
pub struct MlsSigner {
    pub key: SignatureKeyPair,
    pub credential: CredentialWithKey,
}

impl MlsSession<'_> {
    /// This client's MLS signer, made and stored on first use.
    pub fn signer(&self, device: &Device) -> Result<MlsSigner, Error> {
        let store = device.store();
        if let Some(stored) = store.mls_identity()? {
            let key = SignatureKeyPair::read(
                self.storage(),
                &stored.signature_public_key,
                CIPHERSUITE.signature_algorithm(),
            )
            .ok_or_else(|| {
                Error::Mls("the MLS signature key is missing from the MLS store".into())
            })?;
            return Ok(MlsSigner::new(key, stored.pseudonym));
        }
        let key = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm())
            .map_err(|e| mls_error("cannot make an MLS signature key", e))?;
        self.with_transaction(|p| key.store(p.storage()).map_err(Error::from))?;
        // Leaves carry a random pseudonym, never the user name.
        let pseudonym: [u8; 16] = rand::random();
        store.save_mls_identity(&MlsIdentity {
            signature_public_key: key.public().to_vec(),
            pseudonym: pseudonym.to_vec(),
        })?;
        Ok(MlsSigner::new(key, pseudonym.to_vec()))
    }

    pub(crate) fn group_info_bytes(
        &self,
        group: &MlsGroup,
        signer: &MlsSigner,
    ) -> Result<Vec<u8>, Error> {
        group
            .export_group_info(self.crypto(), &signer.key, true)
            .map_err(|e| mls_error("cannot export the group info", e))?
            .to_bytes()
            .map_err(|e| mls_error("cannot encode the group info", e))
    }
}

impl MlsSigner {
    fn new(key: SignatureKeyPair, pseudonym: Vec<u8>) -> Self {
        MlsSigner {
            credential: CredentialWithKey {
                credential: BasicCredential::new(pseudonym).into(),
                signature_key: key.public().into(),
            },
            key,
        }
    }

    /// This client's [`MemberCard`]: its credential bound to its MLS signature key.
    pub fn own_card(&self, device: &Device) -> MemberCard {
        MemberCard::new(
            device.credential().clone(),
            &device.identity().signing_key,
            self.key.public(),
        )
    }
}

/// What the DS keeps of a member: its sealed queue and its card, encrypted under the group's
/// credential EAR key.
pub fn member_entry(
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
