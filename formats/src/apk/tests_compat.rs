//! Unit tests of what issue 17 added: the API range from the manifest and
//! the v1 algorithm it selects, `min_sdk`, inputs that are not APKs, and the
//! ZIP tolerance apksigner has (old signature files in any method, the
//! central directory's method winning). apksigner itself checks these
//! cases end to end in tests/tests/apk.rs.

use super::*;
use crate::test_support::{certs, passphrase};

fn cfg(kind: &str, extra: &[(&str, &str)]) -> FormatConfig {
    let dir = certs().join("apk").join(kind);
    let mut c = FormatConfig {
        name: "apk".into(),
        kind: "apk".into(),
        key: dir.join("key.pem"),
        cert: Some(dir.join("cert.pem")),
        ..FormatConfig::default()
    };
    for (k, v) in extra {
        c.extra.insert((*k).into(), (*v).into());
    }
    c
}

fn signer(kind: &str, extra: &[(&str, &str)]) -> ApkSigner {
    ApkSigner::open(&cfg(kind, extra), Some(&passphrase())).unwrap()
}

fn sign_files(
    s: &ApkSigner,
    dir: &Path,
    files: &[(&str, &[u8], bool)],
) -> Result<std::path::PathBuf, SignError> {
    let input = dir.join("in.apk");
    zip::write_simple(&input, files).unwrap();
    let out = dir.join("out.apk");
    let _ = std::fs::remove_file(&out);
    s.sign(&input, &out, &SignContext::default())?;
    s.verify(&input, &out)?;
    Ok(out)
}

fn entry(path: &Path, name: &str) -> String {
    let mut f = File::open(path).unwrap();
    let a = zip::read_archive(&mut f, |_| false).unwrap();
    let e = a.entries.iter().find(|e| e.name == name).unwrap();
    String::from_utf8(zip::small_content(&mut f, e, 1 << 20).unwrap()).unwrap()
}

#[test]
fn the_v1_digest_follows_the_manifest_min_sdk() {
    let tmp = tempfile::tempdir().unwrap();
    let rsa = signer("rsa", &[]);
    for (min, attr) in [
        (1, "SHA1-Digest"),
        (17, "SHA1-Digest"),
        (18, "SHA-256-Digest"),
    ] {
        let m = manifest::minimal(min);
        let out = sign_files(&rsa, tmp.path(), &[("AndroidManifest.xml", &m, true)]).unwrap();
        let mf = entry(&out, "META-INF/MANIFEST.MF");
        assert!(mf.contains(&format!("{attr}: ")), "{min}: {mf}");
        let sf = entry(&out, "META-INF/CERT.SF");
        assert!(sf.contains(&format!("{attr}-Manifest: ")), "{min}: {sf}");
    }
    // EC below API 18: refused with the reason, as apksigner refuses.
    let ec = signer("ec", &[]);
    let m = manifest::minimal(17);
    match sign_files(&ec, tmp.path(), &[("AndroidManifest.xml", &m, true)]) {
        Err(SignError::Rejected(why)) => assert!(why.contains("API 18"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Without v1 an EC key signs it (v2/v3 only).
    let ec23 = signer("ec", &[("schemes", "v2,v3")]);
    sign_files(&ec23, tmp.path(), &[("AndroidManifest.xml", &m, true)]).unwrap();
}

#[test]
fn min_sdk_overrides_the_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let rsa = signer("rsa", &[("min_sdk", "9")]);
    let m = manifest::minimal(24);
    let out = sign_files(&rsa, tmp.path(), &[("AndroidManifest.xml", &m, true)]).unwrap();
    assert!(entry(&out, "META-INF/MANIFEST.MF").contains("SHA1-Digest: "));
    // A manifest we cannot read is no obstacle then; a missing one still is.
    sign_files(&rsa, tmp.path(), &[("AndroidManifest.xml", b"junk", true)]).unwrap();
    match sign_files(&rsa, tmp.path(), &[("classes.dex", b"x", true)]) {
        Err(SignError::Rejected(why)) => assert!(why.contains("AndroidManifest.xml"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Config errors: not a number; EC with v1 below 18 can never sign.
    let pw = passphrase();
    for bad in ["0", "x", "-3", ""] {
        assert!(
            matches!(
                ApkSigner::open(&cfg("rsa", &[("min_sdk", bad)]), Some(&pw)),
                Err(SignError::Config(_))
            ),
            "{bad:?}"
        );
    }
    match ApkSigner::open(&cfg("ec", &[("min_sdk", "14")]), Some(&pw)) {
        Err(SignError::Config(why)) => assert!(why.contains("EC key"), "{why}"),
        other => panic!("{other:?}"),
    }
    ApkSigner::open(
        &cfg("ec", &[("min_sdk", "14"), ("schemes", "v2")]),
        Some(&pw),
    )
    .unwrap();
}

#[test]
fn not_an_apk_is_rejected_naming_the_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let s = signer("rsa", &[]);
    for files in [
        &[][..],
        &[("classes.dex", &b"dex"[..], true)][..],
        &[(
            "META-INF/MANIFEST.MF",
            &b"Manifest-Version: 1.0\r\n"[..],
            true,
        )][..],
    ] {
        match sign_files(&s, tmp.path(), files) {
            Err(SignError::Rejected(why)) => {
                assert!(why.contains("no AndroidManifest.xml"), "{why}")
            }
            other => panic!("{other:?}"),
        }
    }
    // A manifest that is not binary XML: the reason says so.
    match sign_files(
        &s,
        tmp.path(),
        &[("AndroidManifest.xml", b"<manifest/>", true)],
    ) {
        Err(SignError::Rejected(why)) => assert!(why.contains("malformed"), "{why}"),
        other => panic!("{other:?}"),
    }
}

/// Sets the compression method of entry `name`: in the central directory,
/// and in the local header when `local` is given.
fn set_method(z: &mut [u8], name: &str, central: u16, local: Option<u16>) {
    let n = name.as_bytes();
    let hits: Vec<usize> = (0..z.len() - n.len())
        .filter(|&i| &z[i..i + n.len()] == n)
        .collect();
    for at in hits {
        if at >= 46 && z[at - 46..at - 42] == [0x50, 0x4b, 1, 2] {
            z[at - 36..at - 34].copy_from_slice(&central.to_le_bytes());
        } else if at >= 30 && z[at - 30..at - 26] == [0x50, 0x4b, 3, 4] {
            if let Some(m) = local {
                z[at - 22..at - 20].copy_from_slice(&m.to_le_bytes());
            }
        }
    }
}

#[test]
fn old_signature_files_go_whatever_their_method_and_the_central_method_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let s = signer("rsa", &[]);
    let m = manifest::minimal(21);
    let base = d.join("base.apk");
    zip::write_simple(
        &base,
        &[
            ("AndroidManifest.xml", &m, true),
            ("META-INF/OLD.RSA", b"\x42\x5a\x68 not bzip2 at all", false),
            ("META-INF/OLD.SF", b"lzma? no", false),
            ("assets/a.txt", b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", true),
        ],
    )
    .unwrap();
    let mut z = std::fs::read(&base).unwrap();
    set_method(&mut z, "META-INF/OLD.RSA", 12, Some(12));
    set_method(&mut z, "META-INF/OLD.SF", 14, Some(99));
    // The local header says stored, the central directory deflate.
    set_method(&mut z, "assets/a.txt", 8, Some(0));
    let input = d.join("odd.apk");
    std::fs::write(&input, &z).unwrap();
    let out = d.join("odd-signed.apk");
    s.sign(&input, &out, &SignContext::default()).unwrap();
    s.verify(&input, &out).unwrap();
    let mut f = File::open(&out).unwrap();
    let names: Vec<String> = zip::read_archive(&mut f, |_| false)
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(!names.iter().any(|n| n.contains("OLD")), "{names:?}");

    // An entry we keep with a method Android cannot read: refused, named.
    let mut z = std::fs::read(&base).unwrap();
    set_method(&mut z, "assets/a.txt", 12, Some(12));
    std::fs::write(&input, &z).unwrap();
    let _ = std::fs::remove_file(&out);
    match s.sign(&input, &out, &SignContext::default()) {
        Err(SignError::Rejected(why)) => {
            assert!(
                why.contains("assets/a.txt") && why.contains("method 12"),
                "{why}"
            )
        }
        other => panic!("{other:?}"),
    }
}
