//! SHA-256 whose state can leave the process and come back: the client
//! hashes a file, sends the state after its last whole block (8 words, the
//! length and the < 64 bytes not yet compressed), and the server goes on
//! hashing from there (gpg's signature fields and trailer) without the file.
//!
//! `sha2::Sha256` keeps its state private, so this runs the same compression
//! function (`sha2::compress256`, with the same CPU extensions) over its own
//! state. It implements `digest`'s traits, so rpgp's signature hasher takes it
//! as it takes a `Sha256`.

use digest::generic_array::GenericArray;
use digest::typenum::U32;
use digest::{FixedOutput, FixedOutputReset, HashMarker, Output, OutputSizeUser, Reset, Update};

/// The SHA-256 initial state (FIPS 180-4, 5.3.3).
const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];
/// Bytes per block.
const BLOCK: usize = 64;

/// A SHA-256 computation in progress, resumable from its parts.
#[derive(Clone, PartialEq, Eq)]
pub struct Sha256State {
    h: [u32; 8],
    /// Bytes hashed so far (compressed blocks and `tail`).
    len: u64,
    /// Invariant: `tail.len() == len % 64`.
    tail: Vec<u8>,
}

impl std::fmt::Debug for Sha256State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sha256State")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Default for Sha256State {
    fn default() -> Self {
        Sha256State {
            h: IV,
            len: 0,
            tail: Vec::with_capacity(BLOCK),
        }
    }
}

impl Sha256State {
    /// A state from its parts: the 8 words (as 32 big-endian bytes), the
    /// number of bytes hashed, and the bytes after the last whole block.
    /// Refused when the tail's length is not `length % 64`.
    pub fn from_parts(words: &[u8], length: u64, tail: &[u8]) -> Result<Self, String> {
        let words: [u8; 32] = words
            .try_into()
            .map_err(|_| format!("the state must be 32 bytes, not {}", words.len()))?;
        if tail.len() as u64 != length % BLOCK as u64 {
            return Err(format!(
                "the tail must be length % 64 = {} bytes, not {}",
                length % BLOCK as u64,
                tail.len()
            ));
        }
        let mut h = [0u32; 8];
        for (w, b) in h.iter_mut().zip(words.chunks_exact(4)) {
            *w = u32::from_be_bytes([
                b.first().copied().unwrap_or(0),
                b.get(1).copied().unwrap_or(0),
                b.get(2).copied().unwrap_or(0),
                b.get(3).copied().unwrap_or(0),
            ]);
        }
        Ok(Sha256State {
            h,
            len: length,
            tail: tail.to_vec(),
        })
    }

    /// The 8 state words as 32 big-endian bytes.
    pub fn words(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(self.h) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out
    }

    /// Bytes hashed so far.
    pub fn length(&self) -> u64 {
        self.len
    }

    /// The bytes after the last whole block (fewer than 64).
    pub fn tail(&self) -> &[u8] {
        &self.tail
    }

    fn compress(&mut self, block: &[u8]) {
        sha2::compress256(
            &mut self.h,
            std::slice::from_ref(GenericArray::from_slice(block)),
        );
    }

    /// Hashes `data`.
    pub fn absorb(&mut self, mut data: &[u8]) {
        self.len = self.len.wrapping_add(data.len() as u64);
        if !self.tail.is_empty() {
            let take = (BLOCK - self.tail.len()).min(data.len());
            let (head, rest) = data.split_at(take);
            self.tail.extend_from_slice(head);
            data = rest;
            if self.tail.len() < BLOCK {
                return;
            }
            let block = std::mem::take(&mut self.tail);
            self.compress(&block);
            self.tail = block;
            self.tail.clear();
        }
        let mut blocks = data.chunks_exact(BLOCK);
        for block in &mut blocks {
            self.compress(block);
        }
        self.tail.extend_from_slice(blocks.remainder());
    }

    /// The digest: padding and length, as FIPS 180-4 5.1.1.
    pub fn finish(mut self) -> [u8; 32] {
        let bits = self.len.wrapping_mul(8);
        let mut last = std::mem::take(&mut self.tail);
        last.push(0x80);
        while last.len() % BLOCK != BLOCK - 8 {
            last.push(0);
        }
        last.extend_from_slice(&bits.to_be_bytes());
        for block in last.chunks_exact(BLOCK) {
            self.compress(block);
        }
        self.words()
    }
}

impl HashMarker for Sha256State {}

impl OutputSizeUser for Sha256State {
    type OutputSize = U32;
}

impl Update for Sha256State {
    fn update(&mut self, data: &[u8]) {
        self.absorb(data);
    }
}

impl FixedOutput for Sha256State {
    fn finalize_into(self, out: &mut Output<Self>) {
        out.copy_from_slice(&self.finish());
    }
}

impl Reset for Sha256State {
    fn reset(&mut self) {
        *self = Sha256State::default();
    }
}

impl FixedOutputReset for Sha256State {
    fn finalize_into_reset(&mut self, out: &mut Output<Self>) {
        let done = std::mem::take(self);
        out.copy_from_slice(&done.finish());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    #[test]
    fn equals_sha2_for_every_split() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in [0usize, 1, 55, 56, 63, 64, 65, 127, 128, 129, 1000] {
            let want = sha2::Sha256::digest(&data[..len]);
            for split in [0, 1, 13, 63, 64, 65, len / 2, len] {
                let split = split.min(len);
                let mut s = Sha256State::default();
                s.absorb(&data[..split]);
                // Out through its parts and back, as over the wire.
                let s = Sha256State::from_parts(&s.words(), s.length(), s.tail()).unwrap();
                let mut s = s;
                s.absorb(&data[split..len]);
                assert_eq!(
                    s.finish().as_slice(),
                    want.as_slice(),
                    "len {len} split {split}"
                );
            }
        }
    }

    #[test]
    fn bad_parts_are_refused() {
        assert!(Sha256State::from_parts(&[0; 31], 0, &[]).is_err());
        assert!(Sha256State::from_parts(&[0; 32], 65, &[]).is_err());
        assert!(Sha256State::from_parts(&[0; 32], 64, &[1]).is_err());
        assert!(Sha256State::from_parts(&[0; 32], 65, &[1]).is_ok());
    }

    #[test]
    fn works_as_a_dyn_digest() {
        let mut d: Box<dyn digest::DynDigest> = Box::new(Sha256State::default());
        d.update(b"abc");
        assert_eq!(
            hex::encode(d.finalize()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
