//! RSA blind signatures, RFC 9474's RSABSSA-SHA384-PSS-Deterministic with 2048-bit keys: the
//! variant RFC 9578 uses for publicly verifiable Privacy Pass tokens.
//!
//! The client blinds a message, the issuer signs the blinded value without seeing the message,
//! and the client unblinds the answer into an ordinary RSASSA-PSS signature that anyone holding
//! the public key can check — while the issuer cannot tell which of the blinded values it signed
//! a signature came from. Built on the `rsa` crate's raw, constant-time operations; the PSS
//! encoding is here because `rsa` keeps its own private. The issuer's private operation is
//! blinded against side channels (RFC 9474 §7.2) by its `Blinding`, and its result checked by
//! re-encrypting before it leaves (RFC 9474 §4.3, so a fault cannot leak the key).

use std::sync::{Arc, Mutex};

use crypto_bigint::{modular::BoxedMontyForm, BoxedUint, Gcd, NonZero, RandomMod};
use rsa::{
    hazmat::{rsa_decrypt, rsa_encrypt},
    pkcs1::{DecodeRsaPublicKey, EncodeRsaPublicKey},
    pkcs8::{DecodePrivateKey, EncodePrivateKey},
    sha2::{Digest, Sha256, Sha384},
    traits::PublicKeyParts,
};

/// Bytes of the modulus, and so of a blinded message, a blind signature and a signature (Nk).
pub const MODULUS_BYTES: usize = 256;
const MODULUS_BITS: usize = MODULUS_BYTES * 8;
/// SHA-384's output, the PSS salt length of this variant.
const HASH_BYTES: usize = 48;
const SALT_BYTES: usize = HASH_BYTES;

/// The SubjectPublicKeyInfo prefix RFC 9578 §6.5 fixes for a 2048-bit issuer key: the
/// `id-RSASSA-PSS` algorithm with SHA-384, MGF1-SHA-384 and a 48-byte salt, then the bit string
/// holding the PKCS #1 public key (270 bytes for a 2048-bit modulus and exponent 65537).
const SPKI_PREFIX: [u8; 81] = [
    0x30, 0x82, 0x01, 0x52, 0x30, 0x3d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01,
    0x0a, 0x30, 0x30, 0xa0, 0x0d, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
    0x02, 0x02, 0xa1, 0x1a, 0x30, 0x18, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01,
    0x08, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0xa2, 0x03,
    0x02, 0x01, 0x30, 0x03, 0x82, 0x01, 0x0f, 0x00, 0x30, 0x82, 0x01, 0x0a, 0x02, 0x82, 0x01, 0x01,
    0x00,
];
/// Where the PKCS #1 public key starts inside [`SPKI_PREFIX`] (after the bit string's
/// unused-bits byte); what follows it there is that key's own first bytes.
const PKCS1_AT: usize = 72;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlindRsaError {
    #[error("not a 2048-bit RSASSA-PSS issuer key: {0}")]
    BadKey(String),
    #[error("a blinded message, blind signature or signature has {MODULUS_BYTES} bytes below the modulus")]
    BadLength,
    #[error("the signature does not verify")]
    Invalid,
    #[error("the message cannot be blinded under this key")]
    Unblindable,
}

/// How many private operations one blinding pair serves, squared from one to the next, before
/// a fresh pair is drawn (OpenSSL's count).
const BLINDING_REFRESH: u32 = 32;

/// The issuer's own blinding of its private operation: the input is multiplied by rᵉ before it
/// and the result by r⁻¹ after, so the operation never runs on a value a caller chose. A fresh
/// pair costs a modular inversion, as much as the private operation itself; so, as OpenSSL does,
/// each pair is squared into the next ((r²)ᵉ, (r⁻¹)²: two multiplications) and drawn afresh
/// every [`BLINDING_REFRESH`] uses. The pair advances under the lock, so no two operations share
/// one.
struct Blinding {
    r_e: BoxedMontyForm,
    r_inverse: BoxedMontyForm,
    uses: u32,
}

impl Blinding {
    fn fresh(key: &rsa::PrivateKey) -> Blinding {
        let params = key.n_params();
        loop {
            let r = BoxedUint::random_mod_vartime(&mut rand::rng(), key.n());
            let r = BoxedMontyForm::new(r, params);
            if let Some(r_inverse) = Option::from(r.invert()) {
                let r_e = rsa_encrypt(key, &r.retrieve()).expect("r is below the modulus");
                return Blinding {
                    r_e: BoxedMontyForm::new(r_e, params),
                    r_inverse,
                    uses: 0,
                };
            }
        }
    }

    /// The pair for one operation, advancing the kept one.
    fn next(kept: &Mutex<Blinding>, key: &rsa::PrivateKey) -> (BoxedMontyForm, BoxedMontyForm) {
        let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.uses >= BLINDING_REFRESH {
            *kept = Blinding::fresh(key);
        }
        let pair = (kept.r_e.clone(), kept.r_inverse.clone());
        kept.r_e = kept.r_e.square();
        kept.r_inverse = kept.r_inverse.square();
        kept.uses += 1;
        pair
    }
}

/// An issuer's private key, with its public key.
#[derive(Clone)]
pub struct IssuerSecretKey {
    key: rsa::PrivateKey,
    public: IssuerPublicKey,
    blinding: Arc<Mutex<Blinding>>,
}

/// An issuer's public key, with its RFC 9578 SubjectPublicKeyInfo encoding (which is what
/// servers publish and what the token key id hashes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerPublicKey {
    key: rsa::PublicKey,
    spki: Vec<u8>,
}

/// What the client keeps between blinding and finalizing: the inverse of the blinding factor.
pub struct Unblinder(BoxedUint);

impl std::fmt::Debug for IssuerSecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IssuerSecretKey(..)")
    }
}

impl IssuerSecretKey {
    /// A fresh 2048-bit key with exponent 65537.
    pub fn generate() -> IssuerSecretKey {
        let mut key = rsa::PrivateKey::new(&mut rand::rng(), MODULUS_BITS)
            .expect("2048-bit RSA key generation with the system RNG");
        key.precompute()
            .expect("a generated key has its CRT values");
        IssuerSecretKey::new(key).expect("a generated key has the parameters it was made with")
    }

    fn new(key: rsa::PrivateKey) -> Result<IssuerSecretKey, BlindRsaError> {
        let public = IssuerPublicKey::new(key.to_public_key())?;
        let blinding = Arc::new(Mutex::new(Blinding::fresh(&key)));
        Ok(IssuerSecretKey {
            key,
            public,
            blinding,
        })
    }

    pub fn from_pkcs8_der(der: &[u8]) -> Result<IssuerSecretKey, BlindRsaError> {
        let mut key = rsa::PrivateKey::from_pkcs8_der(der)
            .map_err(|e| BlindRsaError::BadKey(e.to_string()))?;
        key.validate()
            .map_err(|e| BlindRsaError::BadKey(e.to_string()))?;
        key.precompute()
            .map_err(|e| BlindRsaError::BadKey(e.to_string()))?;
        IssuerSecretKey::new(key)
    }

    pub fn to_pkcs8_der(&self) -> Vec<u8> {
        self.key
            .to_pkcs8_der()
            .expect("an RSA key encodes as PKCS #8")
            .as_bytes()
            .to_vec()
    }

    pub fn public_key(&self) -> &IssuerPublicKey {
        &self.public
    }

    /// RFC 9474 BlindSign: the raw private operation on a blinded message, under the issuer's
    /// own `Blinding`, checked by re-encrypting (so a fault cannot leak the key).
    pub fn blind_sign(&self, blinded: &[u8]) -> Result<Vec<u8>, BlindRsaError> {
        let m = uint(blinded, self.key.n())?;
        let (r_e, r_inverse) = Blinding::next(&self.blinding, &self.key);
        let params = self.key.n_params();
        let hidden = (BoxedMontyForm::new(m.clone(), params) * r_e).retrieve();
        let s = rsa_decrypt(None::<&mut rand::rngs::ThreadRng>, &self.key, &hidden)
            .map_err(|_| BlindRsaError::Unblindable)?;
        let s = (BoxedMontyForm::new(s, params) * r_inverse).retrieve();
        match rsa_encrypt(&self.key, &s) {
            Ok(check) if check == m => Ok(padded(&s)),
            _ => Err(BlindRsaError::Unblindable),
        }
    }
}

impl IssuerPublicKey {
    fn new(key: rsa::PublicKey) -> Result<IssuerPublicKey, BlindRsaError> {
        if key.size() != MODULUS_BYTES || key.e() != &BoxedUint::from(65537u32) {
            return Err(BlindRsaError::BadKey(
                "the modulus must have 2048 bits and the exponent be 65537".into(),
            ));
        }
        let pkcs1 = key
            .to_pkcs1_der()
            .map_err(|e| BlindRsaError::BadKey(e.to_string()))?;
        let mut spki = SPKI_PREFIX[..PKCS1_AT].to_vec();
        spki.extend_from_slice(pkcs1.as_bytes());
        if spki[..SPKI_PREFIX.len()] != SPKI_PREFIX {
            return Err(BlindRsaError::BadKey("unexpected PKCS #1 encoding".into()));
        }
        Ok(IssuerPublicKey { key, spki })
    }

    /// Reads an RFC 9578 SubjectPublicKeyInfo; anything but the one canonical encoding of a
    /// 2048-bit RSASSA-PSS key with SHA-384 is refused.
    pub fn from_spki(spki: &[u8]) -> Result<IssuerPublicKey, BlindRsaError> {
        if spki.len() < SPKI_PREFIX.len() || spki[..SPKI_PREFIX.len()] != SPKI_PREFIX {
            return Err(BlindRsaError::BadKey(
                "not an RSASSA-PSS SHA-384 SubjectPublicKeyInfo".into(),
            ));
        }
        let key = rsa::PublicKey::from_pkcs1_der(&spki[PKCS1_AT..])
            .map_err(|e| BlindRsaError::BadKey(e.to_string()))?;
        let public = IssuerPublicKey::new(key)?;
        if public.spki != spki {
            return Err(BlindRsaError::BadKey("non-canonical encoding".into()));
        }
        Ok(public)
    }

    pub fn spki(&self) -> &[u8] {
        &self.spki
    }

    /// RFC 9578's token key id: SHA-256 of the SubjectPublicKeyInfo.
    pub fn key_id(&self) -> [u8; 32] {
        Sha256::digest(&self.spki).into()
    }

    /// The last byte of the key id, which a token request names its key by.
    pub fn truncated_key_id(&self) -> u8 {
        self.key_id()[31]
    }

    /// RFC 9474 Blind, with a fresh salt and blinding factor.
    pub fn blind(&self, message: &[u8]) -> Result<(Vec<u8>, Unblinder), BlindRsaError> {
        let mut salt = [0u8; SALT_BYTES];
        rand::fill(&mut salt);
        let n = self.key.n();
        let r = loop {
            let r = BoxedUint::random_mod_vartime(&mut rand::rng(), n);
            if !bool::from(r.is_zero()) {
                break r;
            }
        };
        self.blind_with(message, &salt, r)
    }

    /// Blind with a given salt and blinding factor `r` (in `[1, n)`); the test vectors fix both.
    pub(super) fn blind_with(
        &self,
        message: &[u8],
        salt: &[u8; SALT_BYTES],
        r: BoxedUint,
    ) -> Result<(Vec<u8>, Unblinder), BlindRsaError> {
        let n = self.key.n();
        let encoded = emsa_pss_encode(&Sha384::digest(message), MODULUS_BITS - 1, salt);
        let m = uint(&encoded, n)?;
        if m.gcd(n.as_ref()) != BoxedUint::one_with_precision(n.bits_precision()) {
            return Err(BlindRsaError::Unblindable);
        }
        let inverse = Option::from(r.invert_mod(n)).ok_or(BlindRsaError::Unblindable)?;
        let x = rsa_encrypt(&self.key, &r).map_err(|_| BlindRsaError::Unblindable)?;
        Ok((padded(&m.mul_mod(&x, n)), Unblinder(inverse)))
    }

    /// RFC 9474 Finalize: unblinds the issuer's answer and checks the signature it gives, so a
    /// wrong answer is caught here rather than when the token is spent.
    pub fn finalize(
        &self,
        message: &[u8],
        blind_signature: &[u8],
        unblinder: &Unblinder,
    ) -> Result<Vec<u8>, BlindRsaError> {
        let n = self.key.n();
        let z = uint(blind_signature, n)?;
        let signature = padded(&z.mul_mod(&unblinder.0, n));
        self.verify(message, &signature)?;
        Ok(signature)
    }

    /// RSASSA-PSS verification with SHA-384, MGF1-SHA-384 and a 48-byte salt.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), BlindRsaError> {
        if signature.len() != MODULUS_BYTES {
            return Err(BlindRsaError::BadLength);
        }
        self.key
            .pss_verify::<Sha384>(message, signature)
            .map_err(|_| BlindRsaError::Invalid)
    }
}

/// `bytes` as an integer below the modulus.
fn uint(bytes: &[u8], n: &NonZero<BoxedUint>) -> Result<BoxedUint, BlindRsaError> {
    if bytes.len() != MODULUS_BYTES {
        return Err(BlindRsaError::BadLength);
    }
    let value = BoxedUint::from_be_slice(bytes, n.bits_precision())
        .map_err(|_| BlindRsaError::BadLength)?;
    if value >= **n {
        return Err(BlindRsaError::BadLength);
    }
    Ok(value)
}

fn padded(value: &BoxedUint) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let mut out = vec![0u8; MODULUS_BYTES.saturating_sub(bytes.len())];
    out.extend_from_slice(&bytes[bytes.len().saturating_sub(MODULUS_BYTES)..]);
    out
}

/// EMSA-PSS-ENCODE (RFC 8017 §9.1.1) of a SHA-384 message hash.
fn emsa_pss_encode(m_hash: &[u8], em_bits: usize, salt: &[u8]) -> Vec<u8> {
    let em_len = em_bits.div_ceil(8);
    let h: [u8; HASH_BYTES] = Sha384::new()
        .chain_update([0u8; 8])
        .chain_update(m_hash)
        .chain_update(salt)
        .finalize()
        .into();
    let db_len = em_len - HASH_BYTES - 1;
    let mut db = vec![0u8; db_len];
    db[db_len - salt.len() - 1] = 0x01;
    db[db_len - salt.len()..].copy_from_slice(salt);
    mgf1_xor(&mut db, &h);
    db[0] &= 0xff >> (8 * em_len - em_bits);
    let mut em = db;
    em.extend_from_slice(&h);
    em.push(0xbc);
    em
}

/// XORs MGF1-SHA-384(`seed`) into `out`.
fn mgf1_xor(out: &mut [u8], seed: &[u8]) {
    for (counter, chunk) in out.chunks_mut(HASH_BYTES).enumerate() {
        let mask = Sha384::new()
            .chain_update(seed)
            .chain_update((counter as u32).to_be_bytes())
            .finalize();
        for (byte, m) in chunk.iter_mut().zip(mask.iter()) {
            *byte ^= m;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blind_signature_unblinds_into_a_signature_anyone_verifies() {
        let secret = IssuerSecretKey::generate();
        let public = IssuerPublicKey::from_spki(secret.public_key().spki()).unwrap();
        let (blinded, unblinder) = public.blind(b"token input").unwrap();
        let blind_signature = secret.blind_sign(&blinded).unwrap();
        let signature = public
            .finalize(b"token input", &blind_signature, &unblinder)
            .unwrap();
        public.verify(b"token input", &signature).unwrap();
        assert_eq!(
            public.verify(b"another input", &signature),
            Err(BlindRsaError::Invalid)
        );
        let again = IssuerSecretKey::from_pkcs8_der(&secret.to_pkcs8_der()).unwrap();
        assert_eq!(again.public_key(), &public);
    }

    #[test]
    fn the_issuers_own_blinding_never_changes_what_it_signs() {
        // Past a refresh, so both the squared pairs and a fresh one are used.
        let secret = IssuerSecretKey::generate();
        let public = secret.public_key();
        for i in 0..BLINDING_REFRESH + 3 {
            let message = i.to_be_bytes();
            let (blinded, unblinder) = public.blind(&message).unwrap();
            let blind_signature = secret.blind_sign(&blinded).unwrap();
            public
                .finalize(&message, &blind_signature, &unblinder)
                .unwrap();
        }
    }

    #[test]
    fn another_keys_answer_does_not_finalize() {
        let (secret, other) = (IssuerSecretKey::generate(), IssuerSecretKey::generate());
        let public = secret.public_key();
        let (blinded, unblinder) = public.blind(b"m").unwrap();
        let wrong = other.blind_sign(&blinded);
        // Either the value is above the other modulus, or it signs under the wrong key.
        if let Ok(wrong) = wrong {
            assert!(public.finalize(b"m", &wrong, &unblinder).is_err());
        }
    }

    #[test]
    fn malformed_inputs_are_refused() {
        let secret = IssuerSecretKey::generate();
        assert_eq!(secret.blind_sign(&[1u8; 10]), Err(BlindRsaError::BadLength));
        assert_eq!(
            secret.blind_sign(&[0xffu8; MODULUS_BYTES]),
            Err(BlindRsaError::BadLength)
        );
        let mut spki = secret.public_key().spki().to_vec();
        spki.push(0);
        assert!(IssuerPublicKey::from_spki(&spki).is_err());
        assert!(IssuerPublicKey::from_spki(&spki[..40]).is_err());
        assert!(IssuerSecretKey::from_pkcs8_der(b"garbage").is_err());
    }
}
