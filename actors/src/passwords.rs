//! Password hashing (argon2id) on a few threads of its own, each with working memory it
//! allocates once and reuses.
//!
//! argon2id is slow and memory-hard by design: 19 MiB and tens of milliseconds per hash. Run on
//! tokio's blocking pool, every pool thread that ever hashed kept that memory in its allocator
//! arena (≈ 90 MiB of resident memory per thread, measured), and a burst of registrations could
//! take every core. Here at most as many hashes run at once as [`Passwords::start`] was given
//! threads, so hashing holds `threads × 19 MiB` and never more, and a burst queues instead of
//! starving the server.
//!
//! Hashes are PHC strings (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`), the same as the `argon2`
//! crate's `PasswordHasher` writes, so stored hashes of either kind verify with either.

use argon2::{
    password_hash::{Output, ParamsString, PasswordHash, SaltString},
    Algorithm, Argon2, Block, Params, Version,
};

use crate::compute::{ComputeThreads, Priority, Stopped};

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing failed: {0}")]
    Hashing(String),
    #[error("the password hashing threads have stopped")]
    Stopped(#[from] Stopped),
}

/// Handle to the hashing threads. Cheap to clone; the threads stop when the last handle is
/// dropped.
#[derive(Clone)]
pub struct Passwords(ComputeThreads<Vec<Block>>);

impl Passwords {
    /// Starts `threads` hashing threads (at least one).
    pub fn start(threads: usize) -> std::io::Result<Passwords> {
        ComputeThreads::start("roost-argon2", threads, Priority::Normal, Vec::new).map(Passwords)
    }

    /// A PHC string of `password` under a fresh salt, with the default parameters.
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        self.0
            .run(move |memory| hash_with(memory, &password))
            .await?
    }

    /// Whether `password` matches the PHC string `stored`; false for anything unreadable.
    pub async fn matches(&self, password: String, stored: String) -> Result<bool, PasswordError> {
        Ok(self
            .0
            .run(move |memory| matches_with(memory, &password, &stored))
            .await?)
    }
}

/// Hashes with `memory` grown to what `params` need (it is kept for the next hash).
fn argon2_into(
    memory: &mut Vec<Block>,
    argon2: &Argon2<'_>,
    params: &Params,
    password: &str,
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), argon2::Error> {
    if memory.len() < params.block_count() {
        memory.resize(params.block_count(), Block::default());
    }
    argon2.hash_password_into_with_memory(password.as_bytes(), salt, out, &mut memory[..])
}

/// What [`Passwords::hash`] does on a hashing thread.
pub fn hash_with(memory: &mut Vec<Block>, password: &str) -> Result<String, PasswordError> {
    let failed = |e: &dyn std::fmt::Display| PasswordError::Hashing(e.to_string());
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| failed(&e))?;
    let params = Params::default();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2_into(memory, &argon2, &params, password, &salt_bytes, &mut out)
        .map_err(|e| failed(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| failed(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| failed(&e))?),
    };
    Ok(phc.to_string())
}

/// What [`Passwords::matches`] does on a hashing thread.
pub fn matches_with(memory: &mut Vec<Block>, password: &str, stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        Algorithm::try_from(parsed.algorithm),
        Params::try_from(&parsed),
    ) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(version)) => version,
        Some(Err(_)) => return false,
    };
    let mut salt_buffer = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buffer) else {
        return false;
    };
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    if argon2_into(memory, &argon2, &params, password, salt, &mut out).is_err() {
        return false;
    }
    // `Output`'s equality is constant-time.
    Output::new(&out).is_ok_and(|computed| computed == expected)
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    use super::*;

    #[tokio::test]
    async fn a_password_matches_its_hash_and_no_other_password_does() {
        let passwords = Passwords::start(2).unwrap();
        let hash = passwords.hash("correct horse".into()).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(passwords
            .matches("correct horse".into(), hash.clone())
            .await
            .unwrap());
        assert!(!passwords
            .matches("correct horsf".into(), hash.clone())
            .await
            .unwrap());
        assert!(!passwords
            .matches("correct horse".into(), "not a hash".into())
            .await
            .unwrap());
        let other = passwords.hash("correct horse".into()).await.unwrap();
        assert_ne!(hash, other, "every hash has its own salt");
    }

    #[test]
    fn hashes_stored_before_verify_and_verify_with_the_argon2_crate() {
        let mut memory = Vec::new();
        let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap();
        let older = Argon2::default()
            .hash_password(b"stored before", &salt)
            .unwrap()
            .to_string();
        assert!(matches_with(&mut memory, "stored before", &older));
        assert!(!matches_with(&mut memory, "stored after", &older));

        let ours = hash_with(&mut memory, "stored after").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default()
            .verify_password(b"stored after", &parsed)
            .is_ok());
    }

    #[test]
    fn hashes_with_other_parameters_verify_too() {
        let mut memory = Vec::new();
        let params = Params::new(8 * 1024, 1, 1, None).unwrap();
        let small = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap();
        let hash = small.hash_password(b"pw", &salt).unwrap().to_string();
        assert!(matches_with(&mut memory, "pw", &hash));
        assert!(!matches_with(&mut memory, "px", &hash));
    }
}
