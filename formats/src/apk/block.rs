//! The APK Signing Block with APK Signature Scheme v2 and v3 blocks, and
//! the chunked SHA-256 content digest they sign.
//!
//! Layout (all integers little-endian, "lp" = u32 length prefix):
//! block = u64 size, pairs {u64 len, u32 id, value}, u64 size, "APK Sig Block 42";
//! v2 value = lp(lp(signer)), signer = lp(signed data) lp(signatures) lp(public key),
//! signed data = lp(digests) lp(certificates) lp(additional attributes);
//! v3 adds u32 min/max SDK after the certificates and after the signed data.
//!
//! The content digest covers three sections split into 1 MiB chunks: the
//! entries (everything before the block), the central directory, and the
//! EOCD with its central-directory offset replaced by the block's offset.
//! chunk = SHA-256(0xa5 ‖ u32 len ‖ data), top = SHA-256(0x5a ‖ u32 count ‖ chunks).
//!
//! Deliberately NOT done: one signer only, SHA-256 algorithms only
//! (RSASSA-PKCS1-v1_5 0x0103, ECDSA 0x0201), no key rotation
//! (proof-of-rotation is optional and left out), no v3.1, no v4, no
//! verity padding. [`verify`] checks our own blocks only (digest, signature,
//! key and certificate), not everything apksigner checks.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use sha2::{Digest, Sha256};

use super::zip::{self, Bytes};
use crate::SignError;

const CHUNK: usize = 1 << 20;
const MAGIC: &[u8; 16] = b"APK Sig Block 42";
/// RSASSA-PKCS1-v1_5 with SHA-256 (the APK signature algorithm id).
pub(crate) const ALG_RSA_SHA256: u32 = 0x0103;
/// ECDSA with SHA-256.
pub(crate) const ALG_ECDSA_SHA256: u32 = 0x0201;
pub(crate) const V2_ID: u32 = 0x7109_871a;
pub(crate) const V3_ID: u32 = 0xf053_68c0;
/// v2 additional attribute: "this APK also has a v3 signature" (stripping protection).
const STRIPPING_PROTECTION_ID: u32 = 0xbeef_f00d;
/// Largest signing block we read back when verifying.
const MAX_BLOCK: u64 = 16 << 20;
/// v3 SDK range: Android 9 (API 28, the first to read v3) and up.
const V3_MIN_SDK: u32 = 28;
const V3_MAX_SDK: u32 = i32::MAX as u32;

/// Chunked SHA-256 over sections fed in pieces; holds at most one chunk.
pub(crate) struct ChunkDigests {
    /// Invariant: `buf.len() < CHUNK` between calls.
    buf: Vec<u8>,
    chunks: Vec<[u8; 32]>,
}

impl ChunkDigests {
    pub(crate) fn new() -> Self {
        ChunkDigests {
            buf: Vec::with_capacity(CHUNK),
            chunks: Vec::new(),
        }
    }

    fn flush_chunk(&mut self) {
        let mut h = Sha256::new();
        h.update([0xa5]);
        h.update((self.buf.len() as u32).to_le_bytes());
        h.update(&self.buf);
        self.chunks.push(h.finalize().into());
        self.buf.clear();
    }

    pub(crate) fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = CHUNK - self.buf.len();
            let (now, later) = data.split_at(room.min(data.len()));
            self.buf.extend_from_slice(now);
            data = later;
            if self.buf.len() == CHUNK {
                self.flush_chunk();
            }
        }
    }

    /// Ends a section: its last, shorter chunk is digested now.
    pub(crate) fn end_section(&mut self) {
        if !self.buf.is_empty() {
            self.flush_chunk();
        }
    }

    pub(crate) fn finish(mut self) -> [u8; 32] {
        self.end_section();
        let mut h = Sha256::new();
        h.update([0x5a]);
        h.update((self.chunks.len() as u32).to_le_bytes());
        for c in &self.chunks {
            h.update(c);
        }
        h.finalize().into()
    }
}

/// The signing key, its certificate and the APK signature algorithm id.
pub(crate) struct Key {
    pub(crate) key: crate::SigningKey,
    pub(crate) cert_der: Vec<u8>,
    pub(crate) spki_der: Vec<u8>,
    /// Invariant: [`ALG_RSA_SHA256`] for RSA keys, [`ALG_ECDSA_SHA256`] for
    /// EC P-256 keys.
    pub(crate) alg: u32,
}

impl Key {
    /// The v2/v3 signature (SHA-256) of `data`.
    pub(crate) fn sign(&self, data: &[u8]) -> Result<Vec<u8>, SignError> {
        self.sign_with(crate::Hash::Sha256, data)
    }

    /// RSA PKCS#1 v1.5 or ECDSA (DER) signature of `data` with `hash`, by
    /// the format's key (a file or a token).
    pub(crate) fn sign_with(&self, hash: crate::Hash, data: &[u8]) -> Result<Vec<u8>, SignError> {
        self.key.sign(hash, data)
    }

    pub(crate) fn is_ec(&self) -> bool {
        self.alg == ALG_ECDSA_SHA256
    }
}

fn lp(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
}

fn lp_seq(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for i in items {
        lp(&mut out, i);
    }
    out
}

fn id_and_lp(id: u32, data: &[u8]) -> Vec<u8> {
    let mut v = id.to_le_bytes().to_vec();
    lp(&mut v, data);
    v
}

/// One v2 (`v3 == None`) or v3 (`Some((min, max))`) scheme block value.
fn scheme_value(
    key: &Key,
    digest: &[u8; 32],
    v3: Option<(u32, u32)>,
    also_v3: bool,
) -> Result<Vec<u8>, SignError> {
    let digests = lp_seq(&[id_and_lp(key.alg, digest)]);
    let certs = lp_seq(std::slice::from_ref(&key.cert_der));
    let mut attrs = Vec::new();
    if v3.is_none() && also_v3 {
        let mut a = STRIPPING_PROTECTION_ID.to_le_bytes().to_vec();
        a.extend_from_slice(&3u32.to_le_bytes());
        attrs = lp_seq(&[a]);
    }
    let mut signed = Vec::new();
    lp(&mut signed, &digests);
    lp(&mut signed, &certs);
    if let Some((min, max)) = v3 {
        signed.extend_from_slice(&min.to_le_bytes());
        signed.extend_from_slice(&max.to_le_bytes());
    }
    lp(&mut signed, &attrs);
    let sig = key.sign(&signed)?;
    let mut signer = Vec::new();
    lp(&mut signer, &signed);
    if let Some((min, max)) = v3 {
        signer.extend_from_slice(&min.to_le_bytes());
        signer.extend_from_slice(&max.to_le_bytes());
    }
    lp(&mut signer, &lp_seq(&[id_and_lp(key.alg, &sig)]));
    lp(&mut signer, &key.spki_der);
    Ok(lp_seq(&[lp_seq(&[signer])]))
}

/// The whole APK Signing Block for the given content digest.
pub(crate) fn signing_block(
    key: &Key,
    digest: &[u8; 32],
    v2: bool,
    v3: bool,
) -> Result<Vec<u8>, SignError> {
    let mut pairs = Vec::new();
    let mut pair = |id: u32, value: Vec<u8>| {
        pairs.extend_from_slice(&(4 + value.len() as u64).to_le_bytes());
        pairs.extend_from_slice(&id.to_le_bytes());
        pairs.extend_from_slice(&value);
    };
    if v2 {
        pair(V2_ID, scheme_value(key, digest, None, v3)?);
    }
    if v3 {
        pair(
            V3_ID,
            scheme_value(key, digest, Some((V3_MIN_SDK, V3_MAX_SDK)), false)?,
        );
    }
    let size = (pairs.len() + 8 + 16) as u64;
    let mut block = size.to_le_bytes().to_vec();
    block.extend_from_slice(&pairs);
    block.extend_from_slice(&size.to_le_bytes());
    block.extend_from_slice(MAGIC);
    Ok(block)
}

fn bad(why: &str) -> SignError {
    SignError::Rejected(format!("APK signature: {why}"))
}

/// Feeds `len` bytes of `file` from `offset` into `d`.
fn digest_range(
    file: &mut File,
    offset: u64,
    len: u64,
    d: &mut ChunkDigests,
) -> Result<(), SignError> {
    file.seek(SeekFrom::Start(offset))?;
    let mut r = file.take(len);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        d.update(buf.get(..n).unwrap_or_default());
    }
    d.end_section();
    Ok(())
}

/// Checks one v2/v3 scheme value: our key and certificate, the signature
/// over the signed data, and the digest.
fn check_scheme(key: &Key, value: &[u8], v3: bool, digest: &[u8; 32]) -> Result<(), SignError> {
    let t = |why: &'static str| move || bad(why);
    let mut signers = Bytes::new(value);
    let seq = signers
        .u32()
        .and_then(|n| signers.take(n as usize))
        .ok_or_else(t("truncated signers"))?;
    let mut seq = Bytes::new(seq);
    let signer = seq
        .u32()
        .and_then(|n| seq.take(n as usize))
        .ok_or_else(t("truncated signer"))?;
    if !seq.is_empty() {
        return Err(bad("more than one signer"));
    }
    let mut s = Bytes::new(signer);
    let signed = s
        .u32()
        .and_then(|n| s.take(n as usize))
        .ok_or_else(t("truncated signed data"))?;
    let outer_sdk = if v3 { Some((s.u32(), s.u32())) } else { None };
    let sigs = s
        .u32()
        .and_then(|n| s.take(n as usize))
        .ok_or_else(t("truncated signatures"))?;
    let spki = s
        .u32()
        .and_then(|n| s.take(n as usize))
        .ok_or_else(t("truncated public key"))?;
    if spki != key.spki_der.as_slice() {
        return Err(bad("signed by another key"));
    }
    // The signature with our algorithm.
    let mut sigs = Bytes::new(sigs);
    let mut found = None;
    while !sigs.is_empty() {
        let one = sigs
            .u32()
            .and_then(|n| sigs.take(n as usize))
            .ok_or_else(t("truncated signature"))?;
        let mut one = Bytes::new(one);
        let alg = one.u32();
        let sig = one.u32().and_then(|n| one.take(n as usize));
        if alg == Some(key.alg) {
            found = sig;
        }
    }
    let sig = found.ok_or_else(t("no signature with our algorithm"))?;
    if !key.key.verify(crate::Hash::Sha256, signed, sig) {
        return Err(bad("the signature over the signed data does not verify"));
    }
    let mut sd = Bytes::new(signed);
    let digests = sd
        .u32()
        .and_then(|n| sd.take(n as usize))
        .ok_or_else(t("truncated digests"))?;
    let certs = sd
        .u32()
        .and_then(|n| sd.take(n as usize))
        .ok_or_else(t("truncated certificates"))?;
    if let Some(outer) = outer_sdk {
        if (sd.u32(), sd.u32()) != outer {
            return Err(bad(
                "v3 SDK versions differ inside and outside the signed data",
            ));
        }
    }
    let mut certs = Bytes::new(certs);
    let first = certs
        .u32()
        .and_then(|n| certs.take(n as usize))
        .ok_or_else(t("no certificate"))?;
    if first != key.cert_der.as_slice() {
        return Err(bad("the certificate is not ours"));
    }
    let mut digests = Bytes::new(digests);
    let mut found = None;
    while !digests.is_empty() {
        let one = digests
            .u32()
            .and_then(|n| digests.take(n as usize))
            .ok_or_else(t("truncated digest"))?;
        let mut one = Bytes::new(one);
        let alg = one.u32();
        let d = one.u32().and_then(|n| one.take(n as usize));
        if alg == Some(key.alg) {
            found = d;
        }
    }
    if found != Some(digest.as_slice()) {
        return Err(bad("the APK's content does not match the signed digest"));
    }
    Ok(())
}

/// Which schemes [`verify`] found valid.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Verified {
    pub(crate) v2: bool,
    pub(crate) v3: bool,
}

/// Checks the v2/v3 blocks of `path` against `key`: every scheme block
/// present must verify; returns which were present.
pub(crate) fn verify(key: &Key, path: &std::path::Path) -> Result<Verified, SignError> {
    let mut file = File::open(path)?;
    let eocd = zip::find_eocd(&mut file)?;
    let cd = zip::read_cd(&mut file, &eocd)?;
    if eocd.cd_offset < 32 {
        return Err(bad("no APK Signing Block"));
    }
    let mut footer = [0u8; 24];
    file.seek(SeekFrom::Start(eocd.cd_offset - 24))?;
    file.read_exact(&mut footer)?;
    let (size, magic) = footer.split_at(8);
    if magic != MAGIC {
        return Err(bad("no APK Signing Block"));
    }
    let size = u64::from_le_bytes(size.try_into().map_err(|_| bad("footer"))?);
    if !(24..=MAX_BLOCK).contains(&size) || size + 8 > eocd.cd_offset {
        return Err(bad("bad APK Signing Block size"));
    }
    let start = eocd.cd_offset - size - 8;
    let mut block = vec![0u8; (size + 8) as usize];
    file.seek(SeekFrom::Start(start))?;
    file.read_exact(&mut block)?;
    let mut b = Bytes::new(&block);
    if b.u64() != Some(size) {
        return Err(bad("the APK Signing Block's two sizes differ"));
    }
    let pairs = b
        .take((size - 24) as usize)
        .ok_or_else(|| bad("truncated block"))?;

    // The content digest, with the EOCD pointing at the block.
    let mut d = ChunkDigests::new();
    digest_range(&mut file, 0, start, &mut d)?;
    d.update(&cd);
    d.end_section();
    let mut eocd_bytes = vec![0u8; (file.metadata()?.len() - eocd.offset) as usize];
    file.seek(SeekFrom::Start(eocd.offset))?;
    file.read_exact(&mut eocd_bytes)?;
    let field = eocd_bytes
        .get_mut(zip::EOCD_CD_OFFSET_FIELD..zip::EOCD_CD_OFFSET_FIELD + 4)
        .ok_or_else(|| bad("short EOCD"))?;
    field.copy_from_slice(&(start as u32).to_le_bytes());
    d.update(&eocd_bytes);
    let digest = d.finish();

    let mut found = Verified::default();
    let mut p = Bytes::new(pairs);
    while !p.is_empty() {
        let len = p.u64().ok_or_else(|| bad("truncated pair"))?;
        let pair = usize::try_from(len)
            .ok()
            .and_then(|n| p.take(n))
            .ok_or_else(|| bad("truncated pair"))?;
        let mut pair = Bytes::new(pair);
        let id = pair.u32().ok_or_else(|| bad("truncated pair"))?;
        match id {
            V2_ID => {
                check_scheme(key, pair.rest(), false, &digest)?;
                found.v2 = true;
            }
            V3_ID => {
                check_scheme(key, pair.rest(), true, &digest)?;
                found.v3 = true;
            }
            _ => {}
        }
    }
    Ok(found)
}
