//! Unit tests of the rpm signer on packages of our own making (the
//! end-to-end tests sign rpmbuild's packages and check them with rpmkeys).

use std::path::Path;

use super::header::{self, NewEntry};
use super::*;
use crate::test_support::{certs, passphrase};

fn signer(dir: &str) -> RpmSigner {
    let cfg = FormatConfig {
        name: "rpm".into(),
        kind: "rpm".into(),
        key: certs().join(dir).join("secret.asc"),
        ..FormatConfig::default()
    };
    RpmSigner::open(&cfg, Some(&passphrase())).unwrap()
}

fn sign(s: &RpmSigner, dir: &Path, name: &str, input: &[u8]) -> Result<Vec<u8>, SignError> {
    let (i, o) = (dir.join(name), dir.join(format!("{name}.signed")));
    std::fs::write(&i, input).unwrap();
    let _ = std::fs::remove_file(&o);
    s.sign(&i, &o, &SignContext::default())?;
    Ok(std::fs::read(&o).unwrap())
}

fn headers(pkg: &[u8]) -> Headers {
    read_headers(&mut &pkg[..]).unwrap()
}

fn signature_tags(pkg: &[u8]) -> Vec<u32> {
    headers(pkg)
        .sig
        .entries
        .iter()
        .map(|e| e.tag)
        .filter(|t| REPLACED.contains(t))
        .collect()
}

fn rejected(r: Result<Vec<u8>, SignError>) -> String {
    match r {
        Err(SignError::Rejected(m)) => m,
        other => panic!("expected a rejection, got {:?}", other.map(|v| v.len())),
    }
}

#[test]
fn signs_verifies_and_resigning_replaces_the_signature() {
    for (dir, tag) in [("gpg", SIG_DSA), ("gpg-rsa", SIG_RSA)] {
        let s = signer(dir);
        let tmp = tempfile::tempdir().unwrap();
        let pkg = probe_package(b"payload bytes");
        let once = sign(&s, tmp.path(), "a.rpm", &pkg).unwrap();
        assert_eq!(signature_tags(&once), vec![tag], "{dir}");
        assert_eq!(once.len(), pkg.len(), "the reserved space keeps the size");
        s.verify(&tmp.path().join("a.rpm"), &tmp.path().join("a.rpm.signed"))
            .unwrap();
        let twice = sign(&s, tmp.path(), "b.rpm", &once).unwrap();
        assert_eq!(
            signature_tags(&twice),
            vec![tag],
            "{dir}: replaced, not added"
        );
        assert_eq!(twice.len(), pkg.len());
        s.verify(&tmp.path().join("b.rpm"), &tmp.path().join("b.rpm.signed"))
            .unwrap();
        // The main header and payload are carried over unchanged.
        assert_eq!(headers(&twice).main.raw, headers(&pkg).main.raw);
        assert!(twice.ends_with(b"payload bytes"));
    }
}

#[test]
fn a_modified_signed_package_does_not_verify() {
    let s = signer("gpg");
    let tmp = tempfile::tempdir().unwrap();
    let pkg = probe_package(b"payload bytes");
    let mut signed = sign(&s, tmp.path(), "a.rpm", &pkg).unwrap();
    let main_at = signed.len() - b"payload bytes".len() - headers(&pkg).main.raw.len();
    // A byte of the main header's data (the name): the signature no longer verifies.
    let name_at = main_at
        + signed[main_at..]
            .windows(8)
            .position(|w| w == b"signing-")
            .unwrap();
    signed[name_at] ^= 1;
    let out = tmp.path().join("bad.rpm");
    std::fs::write(&out, &signed).unwrap();
    let e = s.verify(&tmp.path().join("a.rpm"), &out).unwrap_err();
    assert!(e.to_string().contains("header"), "{e}");
}

#[test]
fn damaged_packages_are_rejected_with_a_reason() {
    let s = signer("gpg");
    let tmp = tempfile::tempdir().unwrap();
    let pkg = probe_package(b"payload bytes");
    let t = tmp.path();

    let mut payload = pkg.clone();
    *payload.last_mut().unwrap() ^= 1;
    assert!(rejected(sign(&s, t, "p.rpm", &payload)).contains("payload does not match"));
    assert!(rejected(sign(&s, t, "t.rpm", &pkg[..pkg.len() - 3])).contains("payload"));
    assert!(
        rejected(sign(&s, t, "z.rpm", b"PK\x03\x04 not an rpm at all, a zip")).contains("lead")
    );
    assert!(rejected(sign(&s, t, "s.rpm", &pkg[..50])).contains("lead"));
    assert!(rejected(sign(&s, t, "h.rpm", &pkg[..200])).contains("signature header"));

    let h = headers(&pkg);
    let main_at = LEAD_LEN + h.sig.raw.len() + header::padding(h.sig.raw.len());
    let mut bad_main = pkg.clone();
    bad_main[main_at + 40] ^= 1;
    let m = rejected(sign(&s, t, "m.rpm", &bad_main));
    assert!(m.contains("main header") || m.contains("SHA-256"), "{m}");
    let mut magic = pkg.clone();
    magic[main_at] = 0;
    assert!(rejected(sign(&s, t, "g.rpm", &magic)).contains("bad magic"));
    let mut huge = pkg.clone();
    huge[main_at + 12..main_at + 16].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(rejected(sign(&s, t, "u.rpm", &huge)).contains("more than"));
}

#[test]
fn header_written_back_is_the_header_read() {
    let pkg = probe_package(b"x");
    let h = headers(&pkg);
    for (hd, region) in [
        (&h.sig, header::REGION_SIGNATURES),
        (&h.main, header::REGION_IMMUTABLE),
    ] {
        assert_eq!(header::write(&hd.owned(), region), hd.raw);
    }
}

#[test]
fn alignment_of_int32_data_after_a_string() {
    let entries = [
        NewEntry {
            tag: 1000,
            kind: header::STRING,
            count: 1,
            data: b"ab\0".to_vec(),
        },
        NewEntry {
            tag: 1001,
            kind: header::INT32,
            count: 1,
            data: 7u32.to_be_bytes().to_vec(),
        },
    ];
    let raw = header::write(&entries, header::REGION_IMMUTABLE);
    let (h, rest) = header::parse(&raw, MAIN_LIMITS, "test").unwrap();
    assert!(rest.is_empty());
    assert_eq!(h.get(1001).unwrap().range.start % 4, 0);
    assert_eq!(h.int32(1001), Some(7));
    assert_eq!(h.string(1000), Some("ab"));
}

#[test]
fn probe_passes_and_unknown_settings_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    signer("gpg-rsa").probe(tmp.path()).unwrap();
    let mut cfg = FormatConfig {
        name: "rpm".into(),
        kind: "rpm".into(),
        key: certs().join("gpg/secret.asc"),
        ..FormatConfig::default()
    };
    cfg.extra.insert("clearsign".into(), "yes".into());
    match RpmSigner::open(&cfg, Some(&passphrase())) {
        Err(SignError::Config(m)) => assert!(m.contains("clearsign"), "{m}"),
        other => panic!("expected a config error, got {other:?}"),
    }
}

/// Regression (fuzzer, rpm_headers): a NULL-type entry whose count exceeded the data
/// after it was accepted, then its rewritten header did not parse.
#[test]
fn a_null_type_entry_is_rejected() {
    let mut pkg = probe_package(b"x");
    // The signature header's second entry (after the region) becomes type 0, count 4128.
    let at = LEAD_LEN + 16 + 16;
    pkg[at + 4..at + 8].copy_from_slice(&0u32.to_be_bytes());
    pkg[at + 12..at + 16].copy_from_slice(&4128u32.to_be_bytes());
    match read_headers(&mut &pkg[..]) {
        Err(SignError::Rejected(m)) => assert!(m.contains("bad type"), "{m}"),
        other => panic!("expected a rejection, got {other:?}"),
    }
}
