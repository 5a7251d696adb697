//! The one place that knows how Roost values become bytes.
//!
//! Storage records, wire bodies and signed payloads all go through here, so the encoding can be
//! swapped in one spot. Untrusted bytes are decoded only with a size limit and must be consumed
//! completely: trailing garbage is an error, not something to ignore.

use serde::{de::DeserializeOwned, Serialize};

/// Largest value [`decode`] accepts. Wire bodies are capped lower by the HTTP front-end.
pub const DEFAULT_LIMIT: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("malformed encoding: {0}")]
    Malformed(String),
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
}

fn config<const LIMIT: usize>() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<LIMIT>()
}

/// Encodes a value. Encoding a well-formed Roost type cannot fail.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .expect("Roost types always encode")
}

/// Decodes a value of at most [`DEFAULT_LIMIT`] bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    decode_limited::<T, DEFAULT_LIMIT>(bytes)
}

/// Decodes a value, refusing any that would allocate more than `LIMIT` bytes.
pub fn decode_limited<T: DeserializeOwned, const LIMIT: usize>(
    bytes: &[u8],
) -> Result<T, CodecError> {
    if bytes.len() > LIMIT {
        return Err(CodecError::Malformed(format!(
            "{} bytes exceed the limit of {LIMIT}",
            bytes.len()
        )));
    }
    let (value, read) = bincode::serde::decode_from_slice(bytes, config::<LIMIT>())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if read != bytes.len() {
        return Err(CodecError::TrailingBytes(bytes.len() - read));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_trailing_bytes() {
        let bytes = encode(&(7u32, "seven".to_string()));
        let back: (u32, String) = decode(&bytes).unwrap();
        assert_eq!(back, (7, "seven".to_string()));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode::<(u32, String)>(&longer),
            Err(CodecError::TrailingBytes(1))
        ));
    }

    #[test]
    fn a_length_prefix_beyond_the_limit_is_refused_without_allocating() {
        // A vector claiming u64::MAX elements.
        let mut bytes = vec![253u8];
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode::<Vec<u8>>(&bytes).is_err());
    }
}
