//! An openmls client as the client library makes one: the ciphersuite, the group configuration,
//! and a signature key with a pseudonymous leaf credential. Shared by the end-to-end tests
//! (`common::mls`) and the benches (`benches/core.rs` includes this file).

use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;

pub const CS: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// How the clients configure their groups.
pub fn config() -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(CS)
        .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .build()
}

pub struct MlsClient {
    pub provider: OpenMlsRustCrypto,
    pub signer: SignatureKeyPair,
    pub credential: CredentialWithKey,
}

impl MlsClient {
    pub fn new() -> Self {
        let provider = OpenMlsRustCrypto::default();
        let signer = SignatureKeyPair::new(CS.signature_algorithm()).unwrap();
        signer.store(provider.storage()).unwrap();
        // Leaves carry a pseudonym, never the user name.
        let pseudonym: [u8; 16] = rand::random();
        let credential = CredentialWithKey {
            credential: BasicCredential::new(pseudonym.to_vec()).into(),
            signature_key: signer.public().into(),
        };
        MlsClient {
            provider,
            signer,
            credential,
        }
    }

    pub fn key_package(&self) -> KeyPackage {
        KeyPackage::builder()
            .build(CS, &self.provider, &self.signer, self.credential.clone())
            .unwrap()
            .key_package()
            .clone()
    }
}
