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

    /// A fresh KeyPackage of `ciphersuite` naming `queue` (codec-encoded `SealedQueueRef`) as
    /// the owner's, one-time or last-resort, as the client library makes them.
    pub fn key_package_naming(
        &self,
        ciphersuite: Ciphersuite,
        queue: Vec<u8>,
        last_resort: bool,
    ) -> KeyPackage {
        let queue_type = roost_protocol::ds::QUEUE_EXTENSION_TYPE;
        let extension = Extension::Unknown(queue_type, UnknownExtension(queue));
        let mut supported = vec![ExtensionType::Unknown(queue_type)];
        if last_resort {
            supported.push(ExtensionType::LastResort);
        }
        let mut builder = KeyPackage::builder()
            .key_package_extensions(Extensions::single(extension).unwrap())
            .leaf_node_capabilities(Capabilities::builder().extensions(supported).build());
        if last_resort {
            builder = builder.mark_as_last_resort();
        }
        self.build_key_package(builder, ciphersuite)
    }

    fn build_key_package(
        &self,
        builder: KeyPackageBuilder,
        ciphersuite: Ciphersuite,
    ) -> KeyPackage {
        builder
            .build(
                ciphersuite,
                &self.provider,
                &self.signer,
                self.credential.clone(),
            )
            .unwrap()
            .key_package()
            .clone()
    }
}
