//! v1 (JAR) signing: `META-INF/MANIFEST.MF` with each entry's digest,
//! `META-INF/CERT.SF` with the manifest's and each section's digest, and
//! `META-INF/CERT.RSA` / `CERT.EC`, a detached PKCS#7 SignedData over the
//! `.SF` without signed attributes ([`super::pkcs7`]).
//!
//! The digest algorithm follows apksigner (`V1SchemeSigner`) from the
//! lowest API level the APK supports ([`choose`]): Android before 4.3
//! (API 18) reads only SHA-1 in JAR signatures and cannot verify ECDSA ones
//! at all, so RSA signs with SHA-1 below API 18 and SHA-256 from 18, and an
//! EC key below API 18 is refused, as apksigner refuses it. One algorithm
//! throughout, as apksigner: SHA-1 verifies on every later version too.
//!
//! The `.SF` says `X-Android-APK-Signed: 2, 3` (the schemes also signed), so
//! a verifier that sees only the v1 signature knows a v2/v3 one was stripped.
//!
//! Deliberately NOT done: main attributes of an existing manifest are not
//! carried over (apksigner copies them).

use std::collections::BTreeMap;
use std::io::Write;

use base64::Engine;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::stack::Stack;
use openssl::x509::X509;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::block::Key;
use crate::SignError;

/// The first API level whose JAR verifier reads SHA-256 digests and ECDSA
/// signatures (Android 4.3).
pub(crate) const SHA256_FROM_SDK: u32 = 18;

/// The digest of a v1 signature (entries, sections, manifest, PKCS#7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum V1Digest {
    Sha1,
    Sha256,
}

impl V1Digest {
    /// The JAR attribute prefix: `SHA1-Digest`, `SHA-256-Digest`.
    fn attr(self) -> &'static str {
        match self {
            V1Digest::Sha1 => "SHA1",
            V1Digest::Sha256 => "SHA-256",
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            V1Digest::Sha1 => Sha1::digest(data).to_vec(),
            V1Digest::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    /// The hash the key signs the `.SF` with.
    pub(crate) fn key_hash(self) -> crate::Hash {
        match self {
            V1Digest::Sha1 => crate::Hash::Sha1,
            V1Digest::Sha256 => crate::Hash::Sha256,
        }
    }

    /// A hasher for an entry's content.
    pub(crate) fn hasher(self) -> ContentHasher {
        match self {
            V1Digest::Sha1 => ContentHasher::Sha1(Sha1::new()),
            V1Digest::Sha256 => ContentHasher::Sha256(Sha256::new()),
        }
    }
}

/// apksigner's choice for a key (`ec`: an EC key, else RSA) and the APK's
/// lowest API level; `Err` says why no v1 signature can serve it.
pub(crate) fn choose(ec: bool, min_sdk: u32) -> Result<V1Digest, String> {
    match (ec, min_sdk < SHA256_FROM_SDK) {
        (false, true) => Ok(V1Digest::Sha1),
        (_, false) => Ok(V1Digest::Sha256),
        (true, true) => Err(format!(
            "the APK supports API level {min_sdk} (minSdkVersion), but Android before 4.3 \
             (API 18) cannot verify a v1 (JAR) signature made with an EC key (apksigner \
             refuses too): sign it with an RSA key, raise its minSdkVersion to 18, or leave \
             v1 out of this format's schemes"
        )),
    }
}

/// Hashes what is written to it (an entry's content).
pub(crate) enum ContentHasher {
    Sha1(Sha1),
    Sha256(Sha256),
}

impl ContentHasher {
    pub(crate) fn finish(self) -> Vec<u8> {
        match self {
            ContentHasher::Sha1(h) => h.finalize().to_vec(),
            ContentHasher::Sha256(h) => h.finalize().to_vec(),
        }
    }
}

impl Write for ContentHasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            ContentHasher::Sha1(h) => h.update(buf),
            ContentHasher::Sha256(h) => h.update(buf),
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

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

/// Whether `name` is in a subdirectory of META-INF (so signed as content,
/// [`needs_digest`]) yet ends as a signature block does (`.RSA`, `.DSA`,
/// `.EC`, case as apksigner's verifier compares it), like apktool's
/// `META-INF/../../../../CERT.RSA`: apksigner's verifier would take it for a
/// signer of its own, and reject any APK that carries it.
pub(crate) fn is_phantom_signature_block(name: &str) -> bool {
    name.strip_prefix("META-INF/")
        .is_some_and(|f| f.contains('/'))
        && [".RSA", ".DSA", ".EC"].iter().any(|s| name.ends_with(s))
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

/// MANIFEST.MF and CERT.SF for the entries' `alg` `digests` (sorted by
/// name); deterministic, so a verifier can rebuild and compare them.
/// `apk_signed` is the `X-Android-APK-Signed` value (`None` = v1 only).
pub(crate) fn manifest_and_sf(
    digests: &BTreeMap<String, Vec<u8>>,
    alg: V1Digest,
    apk_signed: Option<&str>,
) -> (Vec<u8>, Vec<u8>) {
    let digest_attr = format!("{}-Digest", alg.attr());
    let mut manifest = Vec::new();
    attr(&mut manifest, "Manifest-Version", "1.0");
    attr(&mut manifest, "Created-By", "1.0 (Android)");
    manifest.extend_from_slice(b"\r\n");
    let mut sf_sections = Vec::new();
    for (name, digest) in digests {
        let mut section = Vec::new();
        attr(&mut section, "Name", name);
        attr(&mut section, &digest_attr, &b64(digest));
        section.extend_from_slice(b"\r\n");
        manifest.extend_from_slice(&section);
        attr(&mut sf_sections, "Name", name);
        attr(&mut sf_sections, &digest_attr, &b64(&alg.hash(&section)));
        sf_sections.extend_from_slice(b"\r\n");
    }
    let mut sf = Vec::new();
    attr(&mut sf, "Signature-Version", "1.0");
    attr(&mut sf, "Created-By", "1.0 (Android)");
    attr(
        &mut sf,
        &format!("{digest_attr}-Manifest"),
        &b64(&alg.hash(&manifest)),
    );
    if let Some(v) = apk_signed {
        attr(&mut sf, "X-Android-APK-Signed", v);
    }
    sf.extend_from_slice(b"\r\n");
    sf.extend_from_slice(&sf_sections);
    // Android up to 1.6 fails on a .SF whose length is a multiple of 1024
    // (apksigner adds a line break then, and so do we).
    if sf.len() % 1024 == 0 {
        sf.extend_from_slice(b"\r\n");
    }
    (manifest, sf)
}

/// Builds the v1 signature files (see [`manifest_and_sf`]).
pub(crate) fn sign(
    digests: &BTreeMap<String, Vec<u8>>,
    alg: V1Digest,
    apk_signed: Option<&str>,
    key: &Key,
) -> Result<V1Files, SignError> {
    let (manifest, sf) = manifest_and_sf(digests, alg, apk_signed);
    let block = super::pkcs7::sign(&sf, alg.key_hash(), key)?;
    Ok(V1Files {
        manifest,
        sf,
        block,
    })
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
        for n in [
            "META-INF/../../../../CERT.RSA",
            "META-INF/sub/K.EC",
            "META-INF/a/b.DSA",
        ] {
            assert!(is_phantom_signature_block(n), "{n}");
        }
        for n in [
            "META-INF/CERT.RSA",
            "META-INF/../../../../CERT.SF",
            "META-INF/sub/k.rsa",
            "lib/CERT.RSA",
        ] {
            assert!(!is_phantom_signature_block(n), "{n}");
        }
    }
}
