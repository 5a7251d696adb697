//! Seeded fuzz inputs, shared by every fuzz test (`protocol/tests/fuzz.rs` includes this file
//! too): random bytes, and mutations of valid encodings — bit flips, cut-offs, insertions,
//! overwritten length prefixes, spliced valid pieces. `ROOST_FUZZ_ITERATIONS=N` sets how many
//! inputs a target gets; `ROOST_FUZZ_SEED=S` runs a failure again.
#![allow(dead_code)]

use std::panic::{catch_unwind, AssertUnwindSafe};

/// SplitMix64: small, fast, and a seed reproduces a run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

pub fn iterations() -> usize {
    std::env::var("ROOST_FUZZ_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000)
}

pub fn base_seed() -> u64 {
    std::env::var("ROOST_FUZZ_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0x5EED_0000)
}

/// One input: random bytes, or a valid sample mutated.
pub fn input(rng: &mut Rng, samples: &[Vec<u8>]) -> Vec<u8> {
    if samples.is_empty() || rng.below(8) == 0 {
        let len = rng.below(512);
        return rng.bytes(len);
    }
    let mut bytes = samples[rng.below(samples.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(6) {
            // Flip a bit.
            0 if !bytes.is_empty() => {
                let i = rng.below(bytes.len());
                bytes[i] ^= 1 << rng.below(8);
            }
            // Cut it off.
            1 => bytes.truncate(at),
            // Insert junk.
            2 => {
                let len = 1 + rng.below(16);
                let junk = rng.bytes(len);
                bytes.splice(at..at, junk);
            }
            // A huge length prefix (bincode's varint markers 251..=254, then a big number).
            3 => {
                let marker = [251u8, 252, 253, 254][rng.below(4)];
                let mut prefix = vec![marker];
                prefix.extend_from_slice(&u64::MAX.to_le_bytes()[..1 << (marker - 250).min(3)]);
                bytes.splice(at..at, prefix);
            }
            // Splice in a piece of another sample.
            4 => {
                let other = &samples[rng.below(samples.len())];
                let start = rng.below(other.len());
                let end = start + rng.below(other.len() - start + 1);
                bytes.splice(at..at, other[start..end].iter().copied());
            }
            // Overwrite a byte with an extreme value.
            _ if !bytes.is_empty() => {
                let i = rng.below(bytes.len());
                bytes[i] = [0, 0x7f, 0x80, 0xff, 251, 252, 253][rng.below(7)];
            }
            _ => {}
        }
    }
    bytes
}

/// Runs `decode` over many inputs made from `samples`; a panic fails with what reproduces it.
pub fn fuzz(name: &str, samples: &[Vec<u8>], decode: impl Fn(&[u8])) {
    for sample in samples {
        decode(sample);
    }
    let seed = base_seed()
        ^ name
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31) ^ b as u64);
    let mut rng = Rng(seed);
    for iteration in 0..iterations() {
        let bytes = input(&mut rng, samples);
        if catch_unwind(AssertUnwindSafe(|| decode(&bytes))).is_err() {
            panic!(
                "{name} panicked at iteration {iteration} (ROOST_FUZZ_SEED={} runs it again): {}",
                base_seed(),
                hex::encode(&bytes)
            );
        }
    }
}
