//! Unit tests of the Apple signer with the committed test PKI (certs/apple).

use super::*;
use std::collections::BTreeMap;

use crate::test_support::{certs, passphrase};

fn cfg(extra: &[(&str, &str)]) -> FormatConfig {
    FormatConfig {
        name: "macapp".into(),
        kind: "apple".into(),
        key: certs().join("apple/developer-id.key"),
        pkcs11_module: None,
        cert: Some(certs().join("apple/chain.pem")),
        extra: extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        ..FormatConfig::default()
    }
}

fn signer(extra: &[(&str, &str)]) -> AppleSigner {
    AppleSigner::open(&cfg(extra), Some(&passphrase())).unwrap()
}

fn leaf(name: &str) -> CapturedX509Certificate {
    CapturedX509Certificate::from_pem(
        std::fs::read(certs().join(format!("apple/{name}.pem"))).unwrap(),
    )
    .unwrap()
}

#[test]
fn key_is_encrypted_and_the_probe_signs_and_checks() {
    assert!(needs_passphrase(&cfg(&[])).unwrap());
    let s = signer(&[("hardened_runtime", "true")]);
    let dir = tempfile::tempdir().unwrap();
    s.probe(dir.path()).unwrap();
    assert!(s.key_id().starts_with("sha256:"));
}

#[test]
fn wrong_passphrase_and_wrong_key_are_key_errors() {
    let bad = SecretString::from("nope".to_string());
    assert!(matches!(
        AppleSigner::open(&cfg(&[]), Some(&bad)),
        Err(SignError::Key(_))
    ));
    let mut c = cfg(&[]);
    c.key = certs().join("apple/other.key");
    match AppleSigner::open(&c, Some(&passphrase())) {
        Err(SignError::Config(m)) => assert!(m.contains("does not belong"), "{m}"),
        other => panic!("{:?}", other.err()),
    }
}

#[test]
fn bad_settings_are_config_errors() {
    for extra in [
        [("hardened_runtime", "maybe")],
        [("entitlements", "/nonexistent.plist")],
    ] {
        assert!(matches!(
            AppleSigner::open(&cfg(&extra), Some(&passphrase())),
            Err(SignError::Config(_))
        ));
    }
    let mut c = cfg(&[]);
    c.digest = Some("sha1".into());
    assert!(matches!(
        AppleSigner::open(&c, Some(&passphrase())),
        Err(SignError::Config(_))
    ));
    c.digest = None;
    c.cert = None;
    assert!(matches!(
        AppleSigner::open(&c, Some(&passphrase())),
        Err(SignError::Config(_))
    ));
}

#[test]
fn the_check_refuses_another_certificate_and_ad_hoc_signatures() {
    let s = signer(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::write(&input, check::minimal_macho()).unwrap();
    s.sign(
        &input,
        &output,
        &SignContext {
            filename: "x".into(),
            ..Default::default()
        },
    )
    .unwrap();
    let signed = std::fs::read(&output).unwrap();
    let mine = leaf("developer-id");
    let other = leaf("other");
    let expect = |cert| check::Expect {
        cert,
        hardened_runtime: false,
        timestamped: false,
    };
    check::check_macho(&signed, &expect(&mine)).unwrap();
    let e = check::check_macho(&signed, &expect(&other)).unwrap_err();
    assert!(format!("{e:#}").contains("wrong certificate"), "{e:#}");
    // Hardened runtime was not asked for, so it is absent: the check sees it.
    let e = check::check_macho(
        &signed,
        &check::Expect {
            cert: &mine,
            hardened_runtime: true,
            timestamped: false,
        },
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("hardened runtime"), "{e:#}");

    // apple-codesign without a key: an ad-hoc signature, which must never pass.
    let adhoc = dir.path().join("adhoc");
    UnifiedSigner::new(SigningSettings::default())
        .sign_macho(&input, &adhoc)
        .unwrap();
    let e = check::check_macho(&std::fs::read(&adhoc).unwrap(), &expect(&mine)).unwrap_err();
    assert!(format!("{e:#}").contains("ad-hoc"), "{e:#}");

    // One changed code byte: the page hash check fails.
    let mut bad = signed.clone();
    bad[0x801] ^= 1;
    let e = check::check_macho(&bad, &expect(&mine)).unwrap_err();
    assert!(format!("{e:#}").contains("digest mismatch"), "{e:#}");
}

#[test]
fn an_unreachable_timestamp_authority_is_an_internal_error_not_an_unstamped_signature() {
    let mut c = cfg(&[]);
    c.timestamp_urls = vec!["http://127.0.0.1:9/a".into(), "http://127.0.0.1:9/b".into()];
    let s = AppleSigner::open(&c, Some(&passphrase())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::write(&input, check::minimal_macho()).unwrap();
    let e = s
        .sign(&input, &output, &SignContext::default())
        .unwrap_err();
    assert!(matches!(e, SignError::Internal(_)), "{e:?}");
    assert!(e.to_string().contains("no time-stamping authority"), "{e}");
    // Each authority was tried once, and each failure counted by this signer.
    assert_eq!(
        s.tsa_failures(),
        [
            ("http://127.0.0.1:9/a".to_string(), 1),
            ("http://127.0.0.1:9/b".to_string(), 1)
        ]
    );
}

#[test]
fn an_error_that_is_not_the_tsa_does_not_fail_over() {
    let mut c = cfg(&[]);
    c.timestamp_urls = vec!["http://127.0.0.1:9/a".into(), "http://127.0.0.1:9/b".into()];
    let s = AppleSigner::open(&c, Some(&passphrase())).unwrap();
    let tried = std::cell::Cell::new(0);
    let r = s.with_failover(|_| {
        tried.set(tried.get() + 1);
        Err(Attempt::Other(SignError::Internal(anyhow!("disk full"))))
    });
    assert!(matches!(r, Err(SignError::Internal(e)) if e.to_string() == "disk full"));
    assert_eq!(
        tried.get(),
        1,
        "a disk error moved on to the next authority"
    );
    assert!(
        s.tsa_failures().is_empty(),
        "a disk error was counted as a TSA failure"
    );
}

#[test]
fn other_inputs_are_rejected() {
    let s = signer(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    for body in [
        &b"hello world, not code"[..],
        &[0xca, 0xfe, 0xba, 0xbe, 0, 0, 0, 52][..],
        &[][..],
    ] {
        std::fs::write(&input, body).unwrap();
        match s.sign(&input, &output, &SignContext::default()) {
            Err(SignError::Rejected(m)) => assert_eq!(m, NOT_SUPPORTED),
            other => panic!("{other:?}"),
        }
    }
    // A koly trailer pointing far outside the file.
    let mut dmg = vec![0u8; 4096];
    let koly = dmg.len() - 512;
    dmg[koly..koly + 4].copy_from_slice(b"koly");
    dmg[koly + 0xd8..koly + 0xe0].copy_from_slice(&(1u64 << 50).to_be_bytes());
    dmg[koly + 0xe0..koly + 0xe8].copy_from_slice(&100u64.to_be_bytes());
    std::fs::write(&input, &dmg).unwrap();
    assert!(matches!(
        s.sign(&input, &output, &SignContext::default()),
        Err(SignError::Rejected(_))
    ));
}
