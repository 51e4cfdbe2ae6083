//! Unit tests of the MAR signer: keys, sign / verify / tamper / re-sign round trips, corrupt inputs.

use super::*;

use crate::test_support::{certs, passphrase};

fn cfg(key: &str, digest: Option<&str>) -> FormatConfig {
    FormatConfig {
        name: "mar_test".into(),
        kind: "mar".into(),
        key: certs().join("mar").join(key),
        digest: digest.map(str::to_string),
        ..FormatConfig::default()
    }
}

fn open_err(c: &FormatConfig, pw: Option<&SecretString>) -> SignError {
    match MarSigner::open(c, pw) {
        Ok(s) => panic!("open succeeded: {}", s.key_id()),
        Err(e) => e,
    }
}

fn sha1() -> MarSigner {
    MarSigner::open(&cfg("sha1-2048.key", Some("sha1")), Some(&passphrase())).unwrap()
}

#[test]
fn keys_need_a_passphrase_and_the_right_one() {
    let c = cfg("sha1-2048.key", Some("sha1"));
    assert!(needs_passphrase(&c).unwrap());
    assert!(matches!(open_err(&c, None), SignError::Key(m) if m.contains("no passphrase")));
    let wrong = SecretString::from("nope".to_string());
    assert!(
        matches!(open_err(&c, Some(&wrong)), SignError::Key(m) if m.contains("wrong passphrase"))
    );
}

#[test]
fn key_size_must_match_the_digest() {
    let e = open_err(&cfg("sha1-2048.key", Some("sha384")), Some(&passphrase()));
    assert!(
        matches!(&e, SignError::Config(m) if m.contains("needs a 4096-bit") && m.contains("2048-bit")),
        "{e}"
    );
    // sha384 is the default.
    let e = open_err(&cfg("sha1-2048.key", None), Some(&passphrase()));
    assert!(
        matches!(&e, SignError::Config(m) if m.contains("sha384")),
        "{e}"
    );
    let e = open_err(&cfg("sha384-4096.key", Some("sha1")), Some(&passphrase()));
    assert!(
        matches!(&e, SignError::Config(m) if m.contains("needs a 2048-bit")),
        "{e}"
    );
    let e = open_err(&cfg("sha384-4096.key", Some("sha256")), Some(&passphrase()));
    assert!(matches!(&e, SignError::Config(_)), "{e}");
    let mut c = cfg("sha1-2048.key", Some("sha1"));
    c.extra.insert("resign".into(), "sometimes".into());
    assert!(matches!(
        open_err(&c, Some(&passphrase())),
        SignError::Config(_)
    ));
}

#[test]
fn sign_verify_tamper_and_resign() {
    let s = sha1();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (i, product) in [None, Some(("release", "140.0"))].into_iter().enumerate() {
        let mar =
            parse::build_unsigned(&[("a.txt", b"hello\n"), ("b/c.bin", &[7u8; 5000])], product);
        let (inp, out, again) = (
            d.join(format!("in{i}")),
            d.join(format!("out{i}")),
            d.join(format!("again{i}")),
        );
        std::fs::write(&inp, &mar).unwrap();
        s.sign(&inp, &out, &SignContext::default()).unwrap();
        s.verify(&inp, &out).unwrap();
        let signed = std::fs::read(&out).unwrap();
        assert_eq!(
            signed.len(),
            mar.len() + if product.is_some() { 264 } else { 276 }
        );
        let l = parse::parse(&mut std::io::Cursor::new(&signed)).unwrap();
        assert_eq!(l.signature_block.unwrap().signatures.len(), 1);
        assert_eq!(l.additional.is_some(), product.is_some());

        // Every flipped byte outside the signature fails.
        for at in [
            0usize,
            5,
            10,
            17,
            21,
            300,
            signed.len() / 2,
            signed.len() - 1,
        ] {
            let mut t = signed.clone();
            t[at] ^= 1;
            let p = d.join("t");
            std::fs::write(&p, &t).unwrap();
            assert!(s.verify(&p, &p).is_err(), "flip at {at} verified");
        }

        // Re-signing a signed MAR replaces the signature: same bytes out.
        s.sign(&out, &again, &SignContext::default()).unwrap();
        assert_eq!(
            std::fs::read(&again).unwrap(),
            signed,
            "PKCS#1 v1.5 is deterministic"
        );
    }
    let mut c = cfg("sha1-2048.key", Some("sha1"));
    c.extra.insert("resign".into(), "refuse".into());
    let refuse = MarSigner::open(&c, Some(&passphrase())).unwrap();
    let e = refuse
        .sign(&d.join("out0"), &d.join("refused"), &SignContext::default())
        .unwrap_err();
    assert!(
        matches!(&e, SignError::Rejected(m) if m.contains("already signed")),
        "{e}"
    );
    assert!(
        !d.join("refused").exists(),
        "nothing written before the refusal"
    );
    refuse
        .sign(&d.join("in1"), &d.join("fine"), &SignContext::default())
        .unwrap();
}

#[test]
fn probe_passes_for_both_keys() {
    let dir = tempfile::tempdir().unwrap();
    sha1().probe(dir.path()).unwrap();
    let s = MarSigner::open(&cfg("sha384-4096.key", None), Some(&passphrase())).unwrap();
    assert_eq!(s.signature_len, 512);
    s.probe(dir.path()).unwrap();
}

/// Random corruptions of a valid MAR: never a panic; whatever the parser
/// accepts signs and verifies.
#[test]
fn random_corruptions_never_panic() {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    let s = sha1();
    let dir = tempfile::tempdir().unwrap();
    let base = parse::build_unsigned(
        &[("a.txt", b"hello\n"), ("dir/b", &[3u8; 40]), ("c", b"")],
        Some(("release", "1.0")),
    );
    let mut rng = StdRng::seed_from_u64(5);
    let (mut accepted, mut signed) = (0, 0);
    for i in 0..3000 {
        let mut m = base.clone();
        for _ in 0..rng.gen_range(1..4) {
            if m.is_empty() {
                break;
            }
            let at = rng.gen_range(0..m.len());
            match rng.gen_range(0..4) {
                0 => m[at] ^= 1 << rng.gen_range(0..8),
                1 => m[at] = rng.gen(),
                2 => m[at] = [0x00, 0xff, 0x7f, 0x80][rng.gen_range(0..4)],
                _ => m.truncate(at),
            }
        }
        if parse::parse(&mut std::io::Cursor::new(&m)).is_err() {
            continue;
        }
        accepted += 1;
        if accepted % 10 != 0 {
            continue;
        }
        let (inp, out) = (
            dir.path().join(format!("i{i}")),
            dir.path().join(format!("o{i}")),
        );
        std::fs::write(&inp, &m).unwrap();
        s.sign(&inp, &out, &SignContext::default()).unwrap();
        s.verify(&inp, &out).unwrap();
        signed += 1;
    }
    assert!(
        signed > 5,
        "too few mutants accepted to exercise signing: {accepted}"
    );
}

#[test]
fn malformed_input_is_rejected_and_nothing_is_written() {
    let s = sha1();
    let dir = tempfile::tempdir().unwrap();
    let inp = dir.path().join("bad");
    std::fs::write(&inp, b"not a mar at all").unwrap();
    let out = dir.path().join("out");
    assert!(matches!(
        s.sign(&inp, &out, &SignContext::default()),
        Err(SignError::Rejected(_))
    ));
    assert!(!out.exists());
}
