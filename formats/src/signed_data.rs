//! CMS / PKCS#7 `SignedData` pieces shared by the Authenticode signer and the
//! RFC 3161 client: the digest algorithms we sign with, a few DER helpers,
//! decoding a `SignedData`, finding a signer's certificate and verifying a
//! `SignerInfo` (messageDigest attribute + signature over the signed
//! attributes, with openssl).
//!
//! It imports neither `authenticode` nor `timestamp`: both import it, so
//! there is no cycle between them.

use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier, SignerInfo};
use const_oid::db::rfc5911::{ID_MESSAGE_DIGEST, ID_SIGNED_DATA};
use const_oid::db::rfc5912::{ID_SHA_256, ID_SHA_384, ID_SHA_512};
use const_oid::ObjectIdentifier;
use der::asn1::{Any, OctetString, SetOfVec};
use der::{Decode, Encode, Reader, SliceReader};
use digest::DynDigest;
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;
use x509_cert::Certificate;

/// Errors while encoding or decoding: reported as strings (for
/// `SignError::Internal` when encoding ours, or a verification failure).
pub(crate) type Result<T> = std::result::Result<T, String>;

/// The digest algorithms we sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DigestAlg {
    Sha256,
    Sha384,
    Sha512,
}

impl DigestAlg {
    /// A fresh hasher.
    pub(crate) fn hasher(self) -> Box<dyn DynDigest + Send> {
        match self {
            DigestAlg::Sha256 => Box::new(sha2::Sha256::default()),
            DigestAlg::Sha384 => Box::new(sha2::Sha384::default()),
            DigestAlg::Sha512 => Box::new(sha2::Sha512::default()),
        }
    }

    /// The hash of `data`.
    pub(crate) fn hash(self, data: &[u8]) -> Vec<u8> {
        let mut h = self.hasher();
        h.update(data);
        h.finalize().to_vec()
    }

    pub(crate) fn oid(self) -> ObjectIdentifier {
        match self {
            DigestAlg::Sha256 => ID_SHA_256,
            DigestAlg::Sha384 => ID_SHA_384,
            DigestAlg::Sha512 => ID_SHA_512,
        }
    }

    pub(crate) fn from_oid(oid: &ObjectIdentifier) -> Option<Self> {
        [DigestAlg::Sha256, DigestAlg::Sha384, DigestAlg::Sha512]
            .into_iter()
            .find(|d| d.oid() == *oid)
    }

    /// The same digest as the key interface names it.
    pub(crate) fn key_hash(self) -> crate::Hash {
        match self {
            DigestAlg::Sha256 => crate::Hash::Sha256,
            DigestAlg::Sha384 => crate::Hash::Sha384,
            DigestAlg::Sha512 => crate::Hash::Sha512,
        }
    }

    pub(crate) fn openssl(self) -> openssl::hash::MessageDigest {
        match self {
            DigestAlg::Sha256 => openssl::hash::MessageDigest::sha256(),
            DigestAlg::Sha384 => openssl::hash::MessageDigest::sha384(),
            DigestAlg::Sha512 => openssl::hash::MessageDigest::sha512(),
        }
    }
}

pub(crate) fn der_err(what: &str) -> impl Fn(der::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// One DER TLV with a one-byte tag.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let significant = bytes.get(skip..).unwrap_or_default();
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}

pub(crate) fn oid_der(oid: &ObjectIdentifier) -> Result<Vec<u8>> {
    oid.to_der().map_err(der_err("OID"))
}

/// The value octets of a DER TLV (what follows the tag and length).
pub(crate) fn value_octets(der: &[u8]) -> Result<&[u8]> {
    let mut r = SliceReader::new(der).map_err(der_err("DER"))?;
    let header = der::Header::decode(&mut r).map_err(der_err("DER header"))?;
    let start = der.len() - usize::try_from(r.remaining_len()).map_err(der_err("length"))?;
    let len = usize::try_from(header.length).map_err(der_err("length"))?;
    der.get(start..start + len)
        .ok_or_else(|| "truncated DER value".to_string())
}

/// An attribute with the single value `value_der`.
pub(crate) fn attribute(oid: ObjectIdentifier, value_der: &[u8]) -> Result<Attribute> {
    let value = Any::from_der(value_der).map_err(der_err("attribute value"))?;
    let values = SetOfVec::try_from(vec![value]).map_err(der_err("attribute set"))?;
    Ok(Attribute { oid, values })
}

/// An AlgorithmIdentifier with NULL parameters.
pub(crate) fn alg_with_null(oid: ObjectIdentifier) -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid,
        parameters: Some(Any::null()),
    }
}

/// Decodes a DER `ContentInfo` holding a SignedData (trailing bytes, such
/// as WIN_CERTIFICATE padding, are ignored).
pub(crate) fn decode_signed_data(der: &[u8]) -> Result<SignedData> {
    let mut r = SliceReader::new(der).map_err(der_err("DER"))?;
    let ci = ContentInfo::decode(&mut r).map_err(der_err("ContentInfo"))?;
    if ci.content_type != ID_SIGNED_DATA {
        return Err(format!(
            "content type {} is not signedData",
            ci.content_type
        ));
    }
    ci.content
        .decode_as::<SignedData>()
        .map_err(der_err("SignedData"))
}

/// The single value of the signed attribute `oid`.
pub(crate) fn signed_attr<'a>(si: &'a SignerInfo, oid: &ObjectIdentifier) -> Option<&'a Any> {
    si.signed_attrs
        .as_ref()?
        .iter()
        .find(|a| a.oid == *oid)?
        .values
        .iter()
        .next()
}

/// The certificate in `sd` that `si` names.
pub(crate) fn signer_cert<'a>(sd: &'a SignedData, si: &SignerInfo) -> Option<&'a Certificate> {
    let SignerIdentifier::IssuerAndSerialNumber(ias) = &si.sid else {
        return None;
    };
    sd.certificates.as_ref()?.0.iter().find_map(|c| match c {
        CertificateChoices::Certificate(c)
            if c.tbs_certificate.issuer == ias.issuer
                && c.tbs_certificate.serial_number == ias.serial_number =>
        {
            Some(c)
        }
        _ => None,
    })
}

/// Checks that `si` signs `content` (the encapsulated content's value
/// octets): its messageDigest matches, and its signature over the signed
/// attributes verifies with `cert`'s public key. Returns the digest algorithm.
pub(crate) fn verify_signer_info(
    si: &SignerInfo,
    content: &[u8],
    cert: &Certificate,
) -> Result<DigestAlg> {
    let alg = DigestAlg::from_oid(&si.digest_alg.oid)
        .ok_or_else(|| format!("unsupported digest algorithm {}", si.digest_alg.oid))?;
    let md = signed_attr(si, &ID_MESSAGE_DIGEST).ok_or("no messageDigest attribute")?;
    let md = md
        .decode_as::<OctetString>()
        .map_err(der_err("messageDigest"))?;
    if md.as_bytes() != alg.hash(content).as_slice() {
        return Err("the messageDigest attribute does not match the content".into());
    }
    let attrs = si.signed_attrs.as_ref().ok_or("no signed attributes")?;
    let signed = attrs.to_der().map_err(der_err("signed attributes"))?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(der_err("public key"))?;
    let key = openssl::pkey::PKey::public_key_from_der(&spki)
        .map_err(|e| format!("the signer's public key: {e}"))?;
    let mut v =
        openssl::sign::Verifier::new(alg.openssl(), &key).map_err(|e| format!("verifier: {e}"))?;
    v.update(&signed).map_err(|e| format!("verifier: {e}"))?;
    match v.verify(si.signature.as_bytes()) {
        Ok(true) => Ok(alg),
        Ok(false) => Err("the signature does not verify".into()),
        Err(e) => Err(format!("the signature does not verify: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlv_lengths() {
        assert_eq!(tlv(0x04, &[1, 2]), vec![0x04, 2, 1, 2]);
        assert_eq!(&tlv(0x04, &[0; 200])[..3], &[0x04, 0x81, 200]);
        assert_eq!(&tlv(0x04, &[0; 300])[..4], &[0x04, 0x82, 1, 44]);
    }

    #[test]
    fn digest_oids_round_trip() {
        for d in [DigestAlg::Sha256, DigestAlg::Sha384, DigestAlg::Sha512] {
            assert_eq!(DigestAlg::from_oid(&d.oid()), Some(d));
            assert_eq!(d.hash(b"x").len(), d.openssl().size());
        }
    }
}
