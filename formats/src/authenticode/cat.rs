//! Catalog files (.cat): the file is itself a PKCS#7 SignedData whose
//! encapsulated content is a certificate trust list (CTL, `szOID_CTL`)
//! listing member files' hashes. Signing makes a new SignedData around the
//! same CTL, byte for byte, signed by our key: its messageDigest covers the
//! CTL's value octets and its contentType attribute is `szOID_CTL`.
//!
//! A catalog is small (its members' hashes, not the members) and must be
//! whole in memory to be re-encoded: inputs over [`MAX_CATALOG`] are refused.
//! Refused too: BER (indefinite lengths) rather than DER, a SignedData whose
//! content is not a CTL or is absent. Existing signers and certificates are
//! dropped: the output has exactly one signature, ours.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use der::{Encode, Tagged};

use super::pkcs7::MS_CTL;
use crate::signed_data::decode_signed_data;
use crate::SignError;

/// Largest catalog accepted.
pub(crate) const MAX_CATALOG: u64 = 64 << 20;
/// DER of the OID pkcs7-signedData (1.2.840.113549.1.7.2).
const SIGNED_DATA_OID: [u8; 11] = [
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
];

fn reject(what: impl std::fmt::Display) -> SignError {
    SignError::Rejected(format!("not a catalog we can sign: {what}"))
}

/// Whether `head` (the file's first bytes) starts like a PKCS#7 SignedData.
pub(crate) fn looks_like(head: &[u8]) -> bool {
    let oid_at = match (head.first(), head.get(1)) {
        (Some(0x30), Some(l)) if *l <= 0x80 => 2,
        (Some(0x30), Some(l @ 0x81..=0x84)) => 2 + usize::from(l - 0x80),
        _ => return false,
    };
    head.get(oid_at..oid_at + SIGNED_DATA_OID.len()) == Some(SIGNED_DATA_OID.as_slice())
}

/// A parsed catalog.
#[derive(Debug)]
pub(crate) struct Catalog {
    /// The whole file.
    pub(crate) der: Vec<u8>,
    /// The encapsulated CTL, a DER SEQUENCE.
    pub(crate) content: Vec<u8>,
    /// Whether it has signers already.
    pub(crate) signed: bool,
}

/// Reads the catalog `file` of `len` bytes.
pub(crate) fn parse(file: &mut File, len: u64) -> Result<Catalog, SignError> {
    if len > MAX_CATALOG {
        return Err(reject(format!(
            "{len} bytes is more than the {MAX_CATALOG} bytes a catalog may have here"
        )));
    }
    file.seek(SeekFrom::Start(0))?;
    let mut der = Vec::new();
    (&mut *file).take(MAX_CATALOG).read_to_end(&mut der)?;
    parse_bytes(der)
}

/// [`parse`] on the file's bytes.
pub(crate) fn parse_bytes(der: Vec<u8>) -> Result<Catalog, SignError> {
    if der.get(1) == Some(&0x80) {
        return Err(reject("it is BER with indefinite lengths, not DER"));
    }
    let sd = decode_signed_data(&der).map_err(reject)?;
    if sd.encap_content_info.econtent_type != MS_CTL {
        return Err(reject(format!(
            "its content type is {}, not a certificate trust list (1.3.6.1.4.1.311.10.1)",
            sd.encap_content_info.econtent_type
        )));
    }
    let content = sd
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or_else(|| reject("it has no content"))?;
    if content.tag() != der::Tag::Sequence {
        return Err(reject("its content is not a SEQUENCE"));
    }
    let content = content.to_der().map_err(reject)?;
    Ok(Catalog {
        signed: !sd.signer_infos.0.is_empty(),
        der,
        content,
    })
}
