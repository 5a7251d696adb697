//! Signatures, hashes and public-key encryption, with domain separation.
//!
//! Every signature covers a label naming what is signed, so a signature made for one purpose
//! can never be replayed as another.

use ed25519_dalek::{Signer, Verifier};
use hpke::{Deserializable, Kem as _, Serializable};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the public key is not a valid key")]
    BadPublicKey,
    #[error("decryption failed")]
    Decryption,
}

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VerifyingKey(pub [u8; 32]);

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyingKey({})", hex::encode(self.0))
    }
}

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature(#[serde(with = "byte_array_64")] pub [u8; 64]);

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({}…)", hex::encode(&self.0[..8]))
    }
}

/// An Ed25519 signing key. Its bytes are secret; `Debug` does not show them.
#[derive(Clone, Serialize, Deserialize)]
pub struct SigningKey([u8; 32]);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({:?})", self.verifying_key())
    }
}

impl SigningKey {
    pub fn generate() -> Self {
        SigningKey(rand::random())
    }

    /// The key whose secret is `seed` (32 bytes that only its holders know, e.g. exported from
    /// an MLS epoch).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        SigningKey(seed)
    }

    fn inner(&self) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&self.0)
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(self.inner().verifying_key().to_bytes())
    }

    /// Signs `label ‖ encode(payload)`.
    pub fn sign<T: Serialize + ?Sized>(&self, label: &str, payload: &T) -> Signature {
        self.sign_bytes(label, &codec::encode(payload))
    }

    pub fn sign_bytes(&self, label: &str, bytes: &[u8]) -> Signature {
        Signature(self.inner().sign(&labelled(label, bytes)).to_bytes())
    }
}

impl VerifyingKey {
    pub fn verify<T: Serialize + ?Sized>(
        &self,
        label: &str,
        payload: &T,
        signature: &Signature,
    ) -> Result<(), CryptoError> {
        self.verify_bytes(label, &codec::encode(payload), signature)
    }

    pub fn verify_bytes(
        &self,
        label: &str,
        bytes: &[u8],
        signature: &Signature,
    ) -> Result<(), CryptoError> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(&self.0)
            .map_err(|_| CryptoError::BadPublicKey)?;
        key.verify(
            &labelled(label, bytes),
            &ed25519_dalek::Signature::from_bytes(&signature.0),
        )
        .map_err(|_| CryptoError::BadSignature)
    }

    /// A short, stable name for this key: SHA-256 over a label and the key.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint(hash("roost key fingerprint v1", &self.0))
    }
}

/// SHA-256 of a key, naming which key signed something.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fingerprint(pub [u8; 32]);

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fingerprint({})", hex::encode(&self.0[..8]))
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

fn labelled(label: &str, bytes: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(label.len() + 1 + bytes.len());
    message.extend_from_slice(label.as_bytes());
    message.push(0);
    message.extend_from_slice(bytes);
    message
}

/// SHA-256 of `label ‖ 0 ‖ bytes`.
pub fn hash(label: &str, bytes: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(label.as_bytes());
    hasher.update([0]);
    hasher.update(bytes);
    hasher.finalize().into()
}

type Kem = hpke::kem::X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type Aead = hpke::aead::ChaCha20Poly1305;

/// An X25519 public key that things are HPKE-sealed to.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HpkePublicKey(pub [u8; 32]);

impl std::fmt::Debug for HpkePublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HpkePublicKey({})", hex::encode(self.0))
    }
}

/// The matching X25519 private key; secret.
#[derive(Clone, Serialize, Deserialize)]
pub struct HpkeSecretKey([u8; 32]);

impl std::fmt::Debug for HpkeSecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HpkeSecretKey(…)")
    }
}

/// The result of sealing: the encapsulated key and the ciphertext.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    pub encapsulated_key: [u8; 32],
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed({} bytes)", self.ciphertext.len())
    }
}

impl HpkeSecretKey {
    pub fn generate() -> (HpkeSecretKey, HpkePublicKey) {
        let (secret, public) = Kem::gen_keypair();
        let mut sk = [0u8; 32];
        sk.copy_from_slice(&secret.to_bytes());
        let mut pk = [0u8; 32];
        pk.copy_from_slice(&public.to_bytes());
        (HpkeSecretKey(sk), HpkePublicKey(pk))
    }

    pub fn public_key(&self) -> HpkePublicKey {
        let secret = <Kem as hpke::Kem>::PrivateKey::from_bytes(&self.0)
            .expect("32 bytes are an X25519 key");
        let mut pk = [0u8; 32];
        pk.copy_from_slice(&Kem::sk_to_pk(&secret).to_bytes());
        HpkePublicKey(pk)
    }

    /// Opens what [`HpkePublicKey::seal`] sealed with the same `info` and `aad`.
    pub fn open(&self, info: &str, aad: &[u8], sealed: &Sealed) -> Result<Vec<u8>, CryptoError> {
        let secret = <Kem as hpke::Kem>::PrivateKey::from_bytes(&self.0)
            .map_err(|_| CryptoError::Decryption)?;
        let encapped = <Kem as hpke::Kem>::EncappedKey::from_bytes(&sealed.encapsulated_key)
            .map_err(|_| CryptoError::Decryption)?;
        hpke::single_shot_open::<Aead, Kdf, Kem>(
            &hpke::OpModeR::Base,
            &secret,
            &encapped,
            info.as_bytes(),
            &sealed.ciphertext,
            aad,
        )
        .map_err(|_| CryptoError::Decryption)
    }
}

impl HpkePublicKey {
    /// HPKE-seals `plaintext` to this key (base mode, X25519/HKDF-SHA256/ChaCha20-Poly1305).
    pub fn seal(&self, info: &str, aad: &[u8], plaintext: &[u8]) -> Result<Sealed, CryptoError> {
        let public = <Kem as hpke::Kem>::PublicKey::from_bytes(&self.0)
            .map_err(|_| CryptoError::BadPublicKey)?;
        let (encapped, ciphertext) = hpke::single_shot_seal::<Aead, Kdf, Kem>(
            &hpke::OpModeS::Base,
            &public,
            info.as_bytes(),
            plaintext,
            aad,
        )
        .map_err(|_| CryptoError::BadPublicKey)?;
        let mut encapsulated_key = [0u8; 32];
        encapsulated_key.copy_from_slice(&encapped.to_bytes());
        Ok(Sealed {
            encapsulated_key,
            ciphertext,
        })
    }
}

mod byte_array_64 {
    use serde::{de::Error, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let bytes: Vec<u8> = serde_bytes_vec(d)?;
        bytes
            .try_into()
            .map_err(|v: Vec<u8>| D::Error::invalid_length(v.len(), &"64 bytes"))
    }

    fn serde_bytes_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("64 bytes")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(64);
                while let Some(b) = seq.next_element()? {
                    if out.len() == 64 {
                        return Err(A::Error::invalid_length(65, &self));
                    }
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

/// A symmetric key for encryption at rest (EAR): the group state or member credentials.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EarKey(pub [u8; 32]);

impl EarKey {
    pub fn random() -> Self {
        EarKey(rand::random())
    }

    /// Encrypts `plaintext` (ChaCha20-Poly1305, random nonce), binding it to `context` — e.g.
    /// a group id, so a ciphertext cannot be moved to another record.
    pub fn encrypt(&self, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
        use chacha20poly1305::{aead::Aead, aead::Payload, ChaCha20Poly1305, KeyInit};
        let nonce: [u8; 12] = rand::random();
        let cipher = ChaCha20Poly1305::new((&self.0).into());
        let mut out = nonce.to_vec();
        out.extend(
            cipher
                .encrypt(
                    (&nonce).into(),
                    Payload {
                        msg: plaintext,
                        aad: context,
                    },
                )
                .expect("ChaCha20-Poly1305 encryption does not fail"),
        );
        out
    }

    /// Decrypts what [`encrypt`](Self::encrypt) produced with the same key and context.
    pub fn decrypt(&self, context: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        use chacha20poly1305::{aead::Aead, aead::Payload, ChaCha20Poly1305, KeyInit};
        if ciphertext.len() < 12 + 16 {
            return Err(CryptoError::Decryption);
        }
        let (nonce, sealed) = ciphertext.split_at(12);
        ChaCha20Poly1305::new((&self.0).into())
            .decrypt(
                nonce.into(),
                Payload {
                    msg: sealed,
                    aad: context,
                },
            )
            .map_err(|_| CryptoError::Decryption)
    }
}

impl std::fmt::Debug for EarKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EarKey(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_bound_to_its_label() {
        let key = SigningKey::generate();
        let sig = key.sign("label a", &42u32);
        key.verifying_key().verify("label a", &42u32, &sig).unwrap();
        assert_eq!(
            key.verifying_key().verify("label b", &42u32, &sig),
            Err(CryptoError::BadSignature)
        );
        assert_eq!(
            key.verifying_key().verify("label a", &43u32, &sig),
            Err(CryptoError::BadSignature)
        );
    }

    #[test]
    fn sealed_data_opens_only_with_the_right_key_info_and_aad() {
        let (sk, pk) = HpkeSecretKey::generate();
        assert_eq!(sk.public_key(), pk);
        let sealed = pk.seal("info", b"aad", b"hello").unwrap();
        assert_eq!(sk.open("info", b"aad", &sealed).unwrap(), b"hello");
        assert!(sk.open("info", b"other", &sealed).is_err());
        assert!(sk.open("other", b"aad", &sealed).is_err());
        let (other, _) = HpkeSecretKey::generate();
        assert!(other.open("info", b"aad", &sealed).is_err());
    }
}
