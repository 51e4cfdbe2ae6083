//! Authenticode's half of digest signing (see [`crate::digest_signing`]).
//!
//! The client tells the container from the content, as the server's signer
//! does ([`super::container::detect`]), and prepares it with the server's
//! own code ([`prepare`]), each container with the function its whole-file
//! signing runs:
//! - a PE is copied to the output while its image hash and CheckSum are
//!   computed ([`super::digest::copy_and_hash`]);
//! - an MSI is copied without its signature streams and hashed
//!   ([`super::msi::copy_unsigned_and_hash`]);
//! - a cabinet is copied in its signed layout without its signature and
//!   hashed ([`super::cab::copy_unsigned_and_hash`]).
//!
//! The request names the container (`container=msi`, `cab`; none for a PE)
//! so that the server's `SpcIndirectDataContent` names it (`SpcPeImageData`,
//! `SpcSipInfo` with the MSI SIP, `SPC_CAB_DATA`). The client sends the
//! hash, checks the SignedData the server returns against it ([`verify`]:
//! what the hash is of, the hash, the signer's signature, the timestamp
//! imprint), and then writes it ([`finish`]): for a PE appended as the
//! certificate table with the directory entry and CheckSum patched (the
//! same [`attach`] the server's signing uses), for an MSI as the
//! `\u{5}DigitalSignature` stream ([`super::msi::write_signature`]), for a
//! cabinet after its data ([`super::cab::write_signature`]).
//!
//! Deliberately NOT done: the server's `resign = refuse` cannot be applied
//! here (the server never sees the file): the client replaces any signature.
//! Catalogs and scripts are not prepared ([`prepare`] answers `None`): they
//! are uploaded whole (a catalog's signature covers the catalog itself, a
//! script is small).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use super::container::{create, detect, Container};
use super::digest::{copy_and_hash, pad8, PeChecksum};
use super::{cab, internal, msi, pe, pkcs7, script, AuthenticodeSigner};
use super::{WIN_CERT_REVISION_2_0, WIN_CERT_TYPE_PKCS_SIGNED_DATA};
use crate::digest_signing::{Container as Named, DigestInput, DigestSpec};
use crate::signed_data::{self, DigestAlg};
use crate::{Hash, SignError};

/// A PE, MSI or cabinet copied with its hash computed, waiting for its signature.
#[derive(Debug)]
pub struct Prepared {
    /// The Authenticode hash, to send.
    pub digest: Vec<u8>,
    alg: DigestAlg,
    kind: Kind,
}

/// What was prepared, and what [`finish`] needs to write the signature.
#[derive(Debug)]
enum Kind {
    /// Where the certificate table goes, and the CheckSum so far.
    Pe(Placement, PeChecksum),
    /// The MSI's signature streams were removed; the new one is added.
    Msi,
    /// The cabinet's length in its signed layout: where the signature goes.
    Cab(u64),
}

impl Kind {
    fn named(&self) -> Named {
        match self {
            Kind::Pe(..) => Named::Pe,
            Kind::Msi => Named::Msi,
            Kind::Cab(_) => Named::Cab,
        }
    }
}

impl Prepared {
    /// The container prepared.
    pub fn container(&self) -> Named {
        self.kind.named()
    }

    /// What the request carries: the hash, and the container unless a PE.
    pub fn input(&self) -> DigestInput {
        match self.kind.named() {
            Named::Pe => DigestInput::Digest(self.digest.clone()),
            other => DigestInput::Authenticode(other, self.digest.clone()),
        }
    }

    /// The file type the server's SpcIndirectDataContent must name, DER.
    fn data(&self) -> Result<Vec<u8>, String> {
        let (data_type, value) = indirect_data(self.kind.named());
        pkcs7::spc_data(data_type, &value)
    }
}

/// The `SpcIndirectDataContent` data of a container's signatures: what the
/// whole-file signing of each names, for the server's half and the client's check.
fn indirect_data(c: Named) -> (const_oid::ObjectIdentifier, Vec<u8>) {
    match c {
        Named::Pe => pkcs7::spc_pe_image_data(),
        Named::Msi => msi::indirect_data(),
        Named::Cab => cab::indirect_data(),
    }
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

/// Tells the container of `input` from its content (`label`, the file's
/// name, tells scripts) and copies it, any signature dropped, to the new
/// file `output`: a PE padded for its certificate table, an MSI without its
/// signature streams, a cabinet in its signed layout. Returns its hash;
/// `None` (and no `output`) for a container `spec` does not sign by digest,
/// which is uploaded instead.
pub fn prepare(
    input: &Path,
    output: &Path,
    spec: DigestSpec,
    label: &str,
) -> Result<Option<Prepared>, SignError> {
    let DigestSpec::Authenticode { hash, containers } = spec else {
        return Err(internal(format!(
            "not an Authenticode digest-signing spec: {}",
            spec.to_text()
        )));
    };
    let alg = alg(hash)?;
    let mut f =
        File::open(input).map_err(|e| internal(format!("cannot open {}: {e}", input.display())))?;
    let prepared = |digest, kind| -> Result<Option<Prepared>, SignError> {
        Ok(Some(Prepared { digest, alg, kind }))
    };
    match detect(&mut f, script::syntax_for(label), label)? {
        Container::Pe => {}
        Container::Msi if containers.contains(Named::Msi) => {
            let (cf, digest) = msi::copy_unsigned_and_hash(&mut f, create(output)?, alg)?;
            msi::close(cf)?;
            return prepared(digest, Kind::Msi);
        }
        Container::Cab if containers.contains(Named::Cab) => {
            let len = f.metadata()?.len();
            let l = cab::parse(&mut f, len)?;
            let mut out = create(output)?;
            let (digest, body_len) = cab::copy_unsigned_and_hash(&mut f, &l, &mut out, alg)?;
            out.sync_data()?;
            return prepared(digest, Kind::Cab(body_len));
        }
        _ => return Ok(None),
    }
    let len = f.metadata()?.len();
    let l = pe::parse(&mut f, len)?;
    super::check_size(&l)?;
    let mut w = BufWriter::with_capacity(64 << 10, create(output)?);
    let copied = copy_and_hash(&mut f, &l, alg, Some(&mut w))?;
    w.flush()?;
    let at = Placement {
        table_offset: copied.table_offset,
        cert_dir_offset: l.cert_dir_offset as u64,
        checksum_offset: l.checksum_offset as u64,
    };
    prepared(copied.digest, Kind::Pe(at, copied.checksum))
}

/// Checks the server's SignedData `der` for `prepared`: it is over this
/// kind of file and carries this hash, its signer's signature verifies with the certificate it
/// embeds, and any timestamp stamps that signature. Who the signer is, the
/// relying party's verifier decides (the client has no trust store).
pub fn verify(prepared: &Prepared, der: &[u8]) -> Result<(), SignError> {
    check(prepared, der)
        .map_err(|m| SignError::Rejected(format!("the server's Authenticode signature {m}")))
}

fn check(prepared: &Prepared, der: &[u8]) -> Result<(), String> {
    let parsed = pkcs7::parse_authenticode(der)?;
    if parsed.data != prepared.data()? {
        return Err(format!(
            "is not over this kind of file ({})",
            prepared.kind.named().name()
        ));
    }
    if parsed.alg != prepared.alg || parsed.image_hash != prepared.digest {
        return Err("does not carry this file's hash".into());
    }
    let sd = &parsed.signed_data;
    let si = sd.signer_infos.0.iter().next().ok_or("has no signer")?;
    let cert = signed_data::signer_cert(sd, si).ok_or("does not embed its signer's certificate")?;
    pkcs7::check_signer(sd, si, cert, prepared.alg).map_err(|e| format!("does not verify: {e}"))?;
    Ok(())
}

/// Writes the SignedData `der` into the prepared `output`: a PE's
/// certificate table (the directory entry and CheckSum patched), an MSI's
/// `\u{5}DigitalSignature` stream, a cabinet's signature after its data.
pub fn finish(output: &Path, prepared: Prepared, der: &[u8]) -> Result<(), SignError> {
    let mut out = OpenOptions::new()
        .read(true)
        .write(true)
        .open(output)
        .map_err(|e| internal(format!("cannot open {}: {e}", output.display())))?;
    match prepared.kind {
        Kind::Pe(at, checksum) => attach(&mut out, at, checksum, &win_certificate(der)?),
        Kind::Msi => msi::sign_and_check(msi::open(out)?, der, &prepared.digest, prepared.alg),
        Kind::Cab(body_len) => {
            cab::write_signature(&mut out, body_len, der)?;
            out.sync_data()?;
            // As the server checks its own outputs: read back, the hash is the one signed.
            let len = out.metadata()?.len();
            let l = cab::parse(&mut out, len)?;
            if cab::copy_and_hash(&mut out, &l, prepared.alg, None)?.0 != prepared.digest {
                return Err(SignError::Rejected(
                    "writing the signature changed the content the signature covers".into(),
                ));
            }
            Ok(())
        }
    }
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
#[derive(Debug)]
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
        containers: crate::digest_signing::Containers::all(),
    }
}

/// The server's half: the timestamped SignedData over the client's hash,
/// of a PE, an MSI or a cabinet (what the whole-file signing of each builds).
pub(super) fn sign_digest(
    signer: &AuthenticodeSigner,
    input: &DigestInput,
) -> Result<Vec<u8>, SignError> {
    match input {
        DigestInput::Digest(digest) => signer.signed_data(digest, true),
        DigestInput::Authenticode(c, digest) => {
            let (data_type, value) = indirect_data(*c);
            signer.indirect_der(data_type, &value, digest, true)
        }
        DigestInput::Sha256State(_) => Err(SignError::Rejected(
            "authenticode signs a file's hash, not a SHA-256 state".into(),
        )),
    }
}
