//! The Authenticode image hash and the PE CheckSum, computed in one
//! streaming pass while the image is copied to the output.
//!
//! The hash covers the image from its first byte to the start of the
//! certificate table, skipping the CheckSum field and the certificate-table
//! directory entry, followed by zero padding to a multiple of 8 bytes (the
//! same padding that is written to the output before the certificate
//! table). [`super::pe`] guarantees that sections follow the headers back to
//! back, so this linear hash equals the specification's section-by-section
//! hash (the unit tests compare it with goblin's `authenticode_ranges`).
//!
//! Deliberately NOT done: page hashes, SHA-1/MD5 (refused by config).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};

use digest::DynDigest;

use super::pe::PeLayout;
use crate::signed_data::DigestAlg;
use crate::SignError;

/// Read buffer for streaming the image.
const READ_BUF: usize = 64 << 10;

/// The PE CheckSum: the 16-bit one's-complement sum of the file's
/// little-endian words (CheckSum field counted as zero) plus the file length.
///
/// One's-complement addition is order-independent, so bytes may be added in
/// any order: each byte adds `b` at an even offset and `b << 8` at an odd one.
#[derive(Debug, Default)]
pub(crate) struct PeChecksum {
    total: u64,
}

impl PeChecksum {
    pub(crate) fn add(&mut self, offset: u64, bytes: &[u8]) {
        let mut bytes = bytes;
        if offset & 1 == 1 {
            if let Some((first, rest)) = bytes.split_first() {
                self.total += u64::from(*first) << 8;
                bytes = rest;
            }
        }
        // Whole little-endian words, summed in a plain loop the compiler
        // vectorizes (a byte at a time was the slowest part of signing a
        // large PE). u64 cannot overflow: images are under 4 GiB.
        let words = bytes.chunks_exact(2);
        if let [last] = words.remainder() {
            self.total += u64::from(*last);
        }
        self.total += words
            .map(|w| {
                u64::from(u16::from_le_bytes(
                    <[u8; 2]>::try_from(w).unwrap_or_default(),
                ))
            })
            .sum::<u64>();
    }

    pub(crate) fn finish(&self, file_len: u64) -> u32 {
        let folded = match self.total % 0xffff {
            0 if self.total != 0 => 0xffff,
            r => r,
        };
        // Both fit in 32 bits: the caller refuses images of 4 GiB or more.
        (folded as u32).wrapping_add(file_len as u32)
    }
}

/// Hashes `chunk` (the file's first bytes) without the CheckSum field and
/// the certificate-table directory entry.
fn hash_excluding(h: &mut dyn DynDigest, l: &PeLayout, chunk: &[u8]) {
    let (c, d) = (l.checksum_offset, l.cert_dir_offset);
    let (a, b) = if c < d {
        ((c, c + 4), (d, d + 8))
    } else {
        ((d, d + 8), (c, c + 4))
    };
    for (start, end) in [(0, a.0), (a.1, b.0), (b.1, chunk.len())] {
        if let Some(part) = chunk.get(start..end) {
            h.update(part);
        }
    }
}

/// What [`copy_and_hash`] produced.
pub(crate) struct Copied {
    /// The Authenticode image hash.
    pub(crate) digest: Vec<u8>,
    /// Image length including the padding: where the certificate table goes.
    pub(crate) table_offset: u64,
    /// CheckSum over everything written so far (with the CheckSum field and
    /// the directory entry zeroed).
    pub(crate) checksum: PeChecksum,
}

/// Number of zero bytes that pad `len` to a multiple of 8.
pub(crate) fn pad8(len: u64) -> u64 {
    (8 - len % 8) % 8
}

/// Copies the image part of `input` (described by `l`) to `out` with the
/// CheckSum field and certificate directory entry zeroed, padded to 8 bytes,
/// hashing it on the way. `out` may be `None` to only hash.
pub(crate) fn copy_and_hash(
    input: &mut File,
    l: &PeLayout,
    alg: DigestAlg,
    mut out: Option<&mut dyn Write>,
) -> Result<Copied, SignError> {
    let mut h = alg.hasher();
    let mut ck = PeChecksum::default();
    let mut head = l.headers.clone();
    for (off, len) in [(l.checksum_offset, 4), (l.cert_dir_offset, 8)] {
        if let Some(field) = head.get_mut(off..off + len) {
            field.fill(0);
        }
    }
    hash_excluding(h.as_mut(), l, &head);
    ck.add(0, &head);
    if let Some(w) = out.as_mut() {
        w.write_all(&head)?;
    }

    let mut pos = head.len() as u64;
    input.seek(SeekFrom::Start(pos))?;
    let mut rest = input.take(l.content_len - pos);
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let n = rest.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = buf.get(..n).unwrap_or_default();
        h.update(chunk);
        ck.add(pos, chunk);
        if let Some(w) = out.as_mut() {
            w.write_all(chunk)?;
        }
        pos += n as u64;
    }
    if pos != l.content_len {
        return Err(SignError::Internal(anyhow::anyhow!(
            "the input file shrank while being read ({pos} of {} bytes)",
            l.content_len
        )));
    }
    let pad = [0u8; 8];
    let pad = pad.get(..pad8(pos) as usize).unwrap_or_default();
    h.update(pad);
    if let Some(w) = out.as_mut() {
        w.write_all(pad)?;
    }
    Ok(Copied {
        digest: h.finalize().to_vec(),
        table_offset: pos + pad.len() as u64,
        checksum: ck,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authenticode::pe;

    #[test]
    fn checksum_matches_the_word_algorithm() {
        // The reference algorithm, word by word, in file order.
        fn reference(data: &[u8], skip: usize) -> u32 {
            let mut sum: u32 = 0;
            for (i, w) in data.chunks(2).enumerate() {
                let word = if i * 2 == skip || i * 2 == skip + 2 {
                    0
                } else {
                    u32::from(w[0]) | u32::from(*w.get(1).unwrap_or(&0)) << 8
                };
                sum += word;
                sum = 0xffff & (sum + (sum >> 16));
            }
            sum = 0xffff & (sum + (sum >> 16));
            sum + data.len() as u32
        }
        for data in [
            vec![0u8; 64],
            vec![0xffu8; 64],
            (0..=255u8).cycle().take(10_001).collect(),
        ] {
            let mut ck = PeChecksum::default();
            let mut zeroed = data.clone();
            zeroed[8..12].fill(0);
            // Added in two unaligned, out-of-order pieces.
            ck.add(7, &zeroed[7..]);
            ck.add(0, &zeroed[..7]);
            assert_eq!(ck.finish(data.len() as u64), reference(&data, 8));
        }
    }

    #[test]
    fn linear_hash_equals_goblin_authenticode_ranges() {
        let data = pe::minimal_pe32_plus(b"trailing data, not a multiple of 8");
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x.exe");
        std::fs::write(&p, &data).unwrap();
        let mut f = File::open(&p).unwrap();
        let l = pe::parse(&mut f, data.len() as u64).unwrap();
        let ours = copy_and_hash(&mut f, &l, DigestAlg::Sha256, None).unwrap();
        let parsed = goblin::pe::PE::parse(&data).unwrap();
        let mut h = DigestAlg::Sha256.hasher();
        for r in parsed.authenticode_ranges() {
            h.update(r);
        }
        assert_eq!(ours.digest, h.finalize().to_vec());
        assert_eq!(ours.table_offset % 8, 0);
    }
}
