//! Authenticode's half of digest signing (see [`crate::digest_signing`]).
//!
//! The client copies the PE to its output while computing the image hash
//! and CheckSum ([`prepare`]: the server's own [`super::digest::copy_and_hash`]),
//! sends the image hash, checks the SignedData the server returns against it
//! ([`verify`]: image hash, signer's signature, timestamp imprint), and then
//! appends it as the certificate table and patches the directory entry and
//! CheckSum ([`finish`]: the same [`attach`] the server's signing uses).
//!
//! Deliberately NOT done: the server's `resign = refuse` cannot be applied
//! here (the server never sees the file): the client replaces any signature.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use super::digest::{copy_and_hash, pad8, PeChecksum};
use super::{internal, pe, pkcs7, AuthenticodeSigner};
use super::{WIN_CERT_REVISION_2_0, WIN_CERT_TYPE_PKCS_SIGNED_DATA};
use crate::digest_signing::{DigestInput, DigestSpec};
use crate::signed_data::{self, DigestAlg};
use crate::{Hash, SignError};

/// A PE copied with its image hash computed, waiting for its signature.
#[derive(Debug)]
pub struct Prepared {
    /// The Authenticode image hash, to send.
    pub digest: Vec<u8>,
    alg: DigestAlg,
    table_offset: u64,
    checksum: PeChecksum,
    cert_dir_offset: u64,
    checksum_offset: u64,
}

fn alg(hash: Hash) -> Result<DigestAlg, SignError> {
    match hash {
        Hash::Sha256 => Ok(DigestAlg::Sha256),
        Hash::Sha384 => Ok(DigestAlg::Sha384),
        Hash::Sha512 => Ok(DigestAlg::Sha512),
        Hash::Sha1 => Err(internal("SHA-1 Authenticode is not supported")),
    }
}

/// The [`Hash`] of a digest algorithm.
fn hash_of(alg: DigestAlg) -> Hash {
    alg.key_hash()
}

/// Copies `input` (a PE, any signature dropped) to the new file `output`,
/// padded for its certificate table, and returns its image hash.
pub fn prepare(input: &Path, output: &Path, spec: DigestSpec) -> Result<Prepared, SignError> {
    let DigestSpec::Authenticode { hash } = spec else {
        return Err(internal(format!(
            "not an Authenticode digest-signing spec: {}",
            spec.to_text()
        )));
    };
    let alg = alg(hash)?;
    let mut f =
        File::open(input).map_err(|e| internal(format!("cannot open {}: {e}", input.display())))?;
    let len = f.metadata()?.len();
    let l = pe::parse(&mut f, len)?;
    super::check_size(&l)?;
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(output)
        .map_err(|e| internal(format!("cannot create {}: {e}", output.display())))?;
    let mut w = BufWriter::with_capacity(64 << 10, out);
    let copied = copy_and_hash(&mut f, &l, alg, Some(&mut w))?;
    w.flush()?;
    Ok(Prepared {
        digest: copied.digest,
        alg,
        table_offset: copied.table_offset,
        checksum: copied.checksum,
        cert_dir_offset: l.cert_dir_offset as u64,
        checksum_offset: l.checksum_offset as u64,
    })
}

/// Checks the server's SignedData `der` for `prepared`: it carries this
/// image hash, its signer's signature verifies with the certificate it
/// embeds, and any timestamp stamps that signature. Who the signer is, the
/// relying party's verifier decides (the client has no trust store).
pub fn verify(prepared: &Prepared, der: &[u8]) -> Result<(), SignError> {
    check(prepared, der)
        .map_err(|m| SignError::Rejected(format!("the server's Authenticode signature {m}")))
}

fn check(prepared: &Prepared, der: &[u8]) -> Result<(), String> {
    let parsed = pkcs7::parse_authenticode(der)?;
    if parsed.alg != prepared.alg || parsed.image_hash != prepared.digest {
        return Err("does not carry this file's image hash".into());
    }
    let sd = &parsed.signed_data;
    let si = sd.signer_infos.0.iter().next().ok_or("has no signer")?;
    let cert = signed_data::signer_cert(sd, si).ok_or("does not embed its signer's certificate")?;
    pkcs7::check_signer(sd, si, cert, prepared.alg).map_err(|e| format!("does not verify: {e}"))?;
    Ok(())
}

/// Appends the SignedData `der` to the prepared `output` as its certificate
/// table and patches the directory entry and CheckSum.
pub fn finish(output: &Path, prepared: Prepared, der: &[u8]) -> Result<(), SignError> {
    let table = win_certificate(der)?;
    let mut out = OpenOptions::new()
        .read(true)
        .write(true)
        .open(output)
        .map_err(|e| internal(format!("cannot open {}: {e}", output.display())))?;
    attach(
        &mut out,
        Placement {
            table_offset: prepared.table_offset,
            cert_dir_offset: prepared.cert_dir_offset,
            checksum_offset: prepared.checksum_offset,
        },
        prepared.checksum,
        &table,
    )
}

/// The WIN_CERTIFICATE (header, DER PKCS#7, zero padding to 8 bytes) for `der`.
pub(crate) fn win_certificate(der: &[u8]) -> Result<Vec<u8>, SignError> {
    let len = 8 + der.len() as u64 + pad8(der.len() as u64);
    let dw_length = u32::try_from(len).map_err(|_| internal("signature too large"))?;
    let mut out = Vec::with_capacity(len as usize);
    out.extend_from_slice(&dw_length.to_le_bytes());
    out.extend_from_slice(&WIN_CERT_REVISION_2_0.to_le_bytes());
    out.extend_from_slice(&WIN_CERT_TYPE_PKCS_SIGNED_DATA.to_le_bytes());
    out.extend_from_slice(der);
    out.resize(len as usize, 0);
    Ok(out)
}

/// Where a copied image's certificate table and patched fields go.
pub(crate) struct Placement {
    /// Image length with its padding: where the table starts.
    pub(crate) table_offset: u64,
    /// The certificate-table directory entry.
    pub(crate) cert_dir_offset: u64,
    /// The CheckSum field.
    pub(crate) checksum_offset: u64,
}

/// Writes `table` at `at.table_offset` of `out` (the copied image), then the
/// directory entry naming it and the CheckSum (`checksum`: over the copy).
pub(crate) fn attach(
    out: &mut File,
    at: Placement,
    mut checksum: PeChecksum,
    table: &[u8],
) -> Result<(), SignError> {
    checksum.add(at.table_offset, table);
    out.seek(SeekFrom::Start(at.table_offset))?;
    out.write_all(table)?;
    let total = at.table_offset + table.len() as u64;
    out.set_len(total)?;
    let table_offset = u32::try_from(at.table_offset)
        .map_err(|_| SignError::Rejected("the PE image is too large for a signature".into()))?;
    let table_len = u32::try_from(table.len()).map_err(|_| internal("signature too large"))?;
    let mut dir = [0u8; 8];
    dir[..4].copy_from_slice(&table_offset.to_le_bytes());
    dir[4..].copy_from_slice(&table_len.to_le_bytes());
    checksum.add(at.cert_dir_offset, &dir);
    let sum = checksum.finish(total);
    out.seek(SeekFrom::Start(at.cert_dir_offset))?;
    out.write_all(&dir)?;
    out.seek(SeekFrom::Start(at.checksum_offset))?;
    out.write_all(&sum.to_le_bytes())?;
    out.sync_data()?;
    Ok(())
}

/// The server's half: the spec clients prepare for.
pub(super) fn spec(signer: &AuthenticodeSigner) -> DigestSpec {
    DigestSpec::Authenticode {
        hash: hash_of(signer.alg),
    }
}

/// The server's half: the timestamped SignedData over the client's image hash.
pub(super) fn sign_digest(
    signer: &AuthenticodeSigner,
    input: &DigestInput,
) -> Result<Vec<u8>, SignError> {
    let DigestInput::Digest(digest) = input else {
        return Err(SignError::Rejected(
            "authenticode signs an image hash, not a SHA-256 state".into(),
        ));
    };
    signer.signed_data(digest, true)
}
