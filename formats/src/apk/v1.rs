//! v1 (JAR) signing: `META-INF/MANIFEST.MF` with each entry's SHA-256,
//! `META-INF/CERT.SF` with the manifest's and each section's SHA-256, and
//! `META-INF/CERT.RSA` / `CERT.EC`, a detached PKCS#7 SignedData over the
//! `.SF` without signed attributes (as apksigner makes it).
//!
//! The `.SF` says `X-Android-APK-Signed: 2, 3` (the schemes also signed), so
//! a verifier that sees only the v1 signature knows a v2/v3 one was stripped.
//!
//! Deliberately NOT done: SHA-1 digests. SHA-256 in v1 signatures is
//! honoured by Android from API 18; APKs whose minSdkVersion is lower
//! must rely on v2/v3 (API 24+) or another signer. Main attributes of an
//! existing manifest are not carried over.

use std::collections::BTreeMap;

use anyhow::anyhow;
use base64::Engine;
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use const_oid::db::rfc5911::{ID_DATA, ID_SIGNED_DATA};
use const_oid::db::rfc5912::{ECDSA_WITH_SHA_256, ID_SHA_256, RSA_ENCRYPTION};
use der::asn1::{Any, OctetString, SetOfVec};
use der::{Decode, Encode};
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::stack::Stack;
use openssl::x509::X509;
use sha2::{Digest, Sha256};
use spki::AlgorithmIdentifierOwned;

use crate::keys::signing::KeyKind;
use crate::{Hash, SignError, SigningKey};

pub(crate) const MANIFEST: &str = "META-INF/MANIFEST.MF";
pub(crate) const SIGNATURE_FILE: &str = "META-INF/CERT.SF";

/// Whether `name` is a JAR signature file directly in META-INF (MANIFEST.MF,
/// *.SF, *.RSA, *.DSA, *.EC, SIG-*): stripped from the input, never listed.
pub(crate) fn is_signature_file(name: &str) -> bool {
    let Some(file) = name.strip_prefix("META-INF/") else {
        return false;
    };
    if file.contains('/') {
        return false;
    }
    let f = file.to_ascii_lowercase();
    f == "manifest.mf"
        || [".sf", ".rsa", ".dsa", ".ec"]
            .iter()
            .any(|s| f.ends_with(s))
        || f.starts_with("sig-")
}

/// Whether `name` gets a section in MANIFEST.MF (everything but
/// directories and signature files).
pub(crate) fn needs_digest(name: &str) -> bool {
    !name.ends_with('/') && !is_signature_file(name)
}

/// Appends `name: value` with CRLF, wrapped at 72 bytes per line (CRLF
/// included) with a leading space on continuation lines, never inside a
/// UTF-8 character.
fn attr(out: &mut Vec<u8>, name: &str, value: &str) {
    let line = format!("{name}: {value}");
    let mut rest = line.as_bytes();
    let mut max = 70;
    loop {
        if rest.len() <= max {
            out.extend_from_slice(rest);
            out.extend_from_slice(b"\r\n");
            return;
        }
        let mut cut = max;
        while cut > 1 && rest.get(cut).is_some_and(|b| b & 0xc0 == 0x80) {
            cut -= 1;
        }
        let (now, later) = rest.split_at(cut);
        out.extend_from_slice(now);
        out.extend_from_slice(b"\r\n ");
        rest = later;
        max = 69;
    }
}

fn b64(d: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(d)
}

/// The v1 files' contents, in order: MANIFEST.MF, CERT.SF, CERT.RSA/EC.
pub(crate) struct V1Files {
    pub(crate) manifest: Vec<u8>,
    pub(crate) sf: Vec<u8>,
    pub(crate) block: Vec<u8>,
}

/// MANIFEST.MF and CERT.SF for the entries' SHA-256 `digests` (sorted by
/// name); deterministic, so a verifier can rebuild and compare them.
/// `apk_signed` is the `X-Android-APK-Signed` value (`None` = v1 only).
pub(crate) fn manifest_and_sf(
    digests: &BTreeMap<String, [u8; 32]>,
    apk_signed: Option<&str>,
) -> (Vec<u8>, Vec<u8>) {
    let mut manifest = Vec::new();
    attr(&mut manifest, "Manifest-Version", "1.0");
    attr(&mut manifest, "Created-By", "1.0 (Android)");
    manifest.extend_from_slice(b"\r\n");
    let mut sf_sections = Vec::new();
    for (name, digest) in digests {
        let mut section = Vec::new();
        attr(&mut section, "Name", name);
        attr(&mut section, "SHA-256-Digest", &b64(digest));
        section.extend_from_slice(b"\r\n");
        manifest.extend_from_slice(&section);
        attr(&mut sf_sections, "Name", name);
        attr(
            &mut sf_sections,
            "SHA-256-Digest",
            &b64(&Sha256::digest(&section)),
        );
        sf_sections.extend_from_slice(b"\r\n");
    }
    let mut sf = Vec::new();
    attr(&mut sf, "Signature-Version", "1.0");
    attr(&mut sf, "Created-By", "1.0 (Android)");
    attr(
        &mut sf,
        "SHA-256-Digest-Manifest",
        &b64(&Sha256::digest(&manifest)),
    );
    if let Some(v) = apk_signed {
        attr(&mut sf, "X-Android-APK-Signed", v);
    }
    sf.extend_from_slice(b"\r\n");
    sf.extend_from_slice(&sf_sections);
    (manifest, sf)
}

/// Builds the v1 signature files (see [`manifest_and_sf`]): the key signs CERT.SF
/// (in the token, for a token key) and the PKCS#7 block is encoded here.
pub(crate) fn sign(
    digests: &BTreeMap<String, [u8; 32]>,
    apk_signed: Option<&str>,
    cert_der: &[u8],
    key: &SigningKey,
) -> Result<V1Files, SignError> {
    let (manifest, sf) = manifest_and_sf(digests, apk_signed);
    let signature = key.sign(Hash::Sha256, &sf)?;
    let ec = matches!(key.kind(), KeyKind::Ec { .. });
    let block = pkcs7_block(cert_der, ec, signature)
        .map_err(|e| SignError::Internal(anyhow!("v1 PKCS#7: {e}")))?;
    Ok(V1Files {
        manifest,
        sf,
        block,
    })
}

/// The detached PKCS#7 SignedData over CERT.SF with no attributes, as `jarsigner` and
/// `openssl smime -sign -noattr` make it: version 1, SHA-256, the one certificate, a
/// SignerInfo naming it by issuer and serial number and carrying `signature`.
fn pkcs7_block(cert_der: &[u8], ec: bool, signature: Vec<u8>) -> Result<Vec<u8>, der::Error> {
    let cert = x509_cert::Certificate::from_der(cert_der)?;
    let sha256 = AlgorithmIdentifierOwned {
        oid: ID_SHA_256,
        parameters: Some(Any::null()),
    };
    let signature_algorithm = if ec {
        AlgorithmIdentifierOwned {
            oid: ECDSA_WITH_SHA_256,
            parameters: None,
        }
    } else {
        AlgorithmIdentifierOwned {
            oid: RSA_ENCRYPTION,
            parameters: Some(Any::null()),
        }
    };
    let signer_info = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: cert.tbs_certificate.issuer.clone(),
            serial_number: cert.tbs_certificate.serial_number.clone(),
        }),
        digest_alg: sha256.clone(),
        signed_attrs: None,
        signature_algorithm,
        signature: OctetString::new(signature)?,
        unsigned_attrs: None,
    };
    let signed_data = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::try_from(vec![sha256])?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: ID_DATA,
            econtent: None,
        },
        certificates: Some(CertificateSet(SetOfVec::try_from(vec![
            CertificateChoices::Certificate(cert),
        ])?)),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::try_from(vec![signer_info])?),
    };
    ContentInfo {
        content_type: ID_SIGNED_DATA,
        content: Any::encode_from(&signed_data)?,
    }
    .to_der()
}

/// Checks a detached PKCS#7 `block` over `sf`: signed by `cert` (only).
pub(crate) fn verify_block(block: &[u8], sf: &[u8], cert: &X509) -> Result<(), SignError> {
    let bad = |why: String| SignError::Rejected(format!("APK v1 signature: {why}"));
    let p7 = Pkcs7::from_der(block).map_err(|e| bad(format!("not PKCS#7: {e}")))?;
    let mut certs = Stack::new().map_err(|e| bad(e.to_string()))?;
    certs.push(cert.clone()).map_err(|e| bad(e.to_string()))?;
    let store = openssl::x509::store::X509StoreBuilder::new()
        .map_err(|e| bad(e.to_string()))?
        .build();
    // NOVERIFY: no chain to check (Android pins the certificate, not a CA);
    // NOINTERN: the signer must be our certificate, not one the block carries.
    let flags = Pkcs7Flags::NOVERIFY | Pkcs7Flags::NOINTERN | Pkcs7Flags::BINARY;
    p7.verify(&certs, &store, Some(sf), None, flags)
        .map_err(|e| bad(format!("does not verify: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_wrap_at_72_bytes_on_char_boundaries() {
        let name = format!("{}é{}", "a".repeat(63), "b".repeat(100));
        let mut out = Vec::new();
        attr(&mut out, "Name", &name);
        let text = String::from_utf8(out.clone()).unwrap();
        for line in text.split_inclusive("\r\n") {
            assert!(line.len() <= 72, "{line:?}");
        }
        let joined: String = text.trim_end().split("\r\n ").collect();
        assert_eq!(joined, format!("Name: {name}"));
    }

    #[test]
    fn signature_files_are_recognised() {
        for n in [
            "META-INF/MANIFEST.MF",
            "META-INF/CERT.SF",
            "META-INF/x.rsa",
            "META-INF/A.EC",
            "META-INF/SIG-foo",
        ] {
            assert!(is_signature_file(n) && !needs_digest(n), "{n}");
        }
        for n in [
            "META-INF/services/x.SF",
            "classes.dex",
            "META-INF/foo.txt",
            "res/",
        ] {
            assert!(!is_signature_file(n), "{n}");
        }
        assert!(!needs_digest("res/"));
        assert!(needs_digest("META-INF/services/x.SF"));
    }
}
