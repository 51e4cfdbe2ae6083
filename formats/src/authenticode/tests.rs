//! Signs real mingw-w64 PE files and checks them with osslsigncode.

use super::*;
use std::collections::BTreeMap;
use std::process::Command;

use crate::test_support::{certs, passphrase};

pub(crate) fn cfg(
    key: &str,
    digest: Option<&str>,
    extra: &[(&str, &str)],
    tsa: &[String],
) -> FormatConfig {
    let dir = certs().join("authenticode");
    FormatConfig {
        name: "sha2signcode".into(),
        kind: "authenticode".into(),
        key: dir.join(format!("{key}.key")),
        pkcs11_module: None,
        cert: Some(dir.join(format!("{key}-chain.pem"))),
        digest: digest.map(str::to_string),
        timestamp_urls: tsa.to_vec(),
        extra: extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn signer(key: &str, digest: Option<&str>, extra: &[(&str, &str)]) -> AuthenticodeSigner {
    AuthenticodeSigner::open(&cfg(key, digest, extra, &[]), Some(&passphrase())).unwrap()
}

const EXE_C: &str = r#"
#include <stdio.h>
int main(void) { puts("hello from a signed test program"); return 0; }
"#;
const DLL_C: &str = r#"
__declspec(dllexport) int add(int a, int b) { return a + b; }
"#;

/// Compiles a test PE with mingw-w64: `arch` is x86_64 or i686.
pub(crate) fn build_pe(dir: &Path, arch: &str, dll: bool) -> PathBuf {
    let src = dir.join(if dll { "lib.c" } else { "main.c" });
    std::fs::write(&src, if dll { DLL_C } else { EXE_C }).unwrap();
    let out = dir.join(format!(
        "{arch}-{}",
        if dll { "test.dll" } else { "test.exe" }
    ));
    let mut cmd = Command::new(format!("{arch}-w64-mingw32-gcc"));
    if dll {
        cmd.arg("-shared");
    }
    let st = cmd
        .arg("-O1")
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .expect("mingw-w64 not installed (apt-get install gcc-mingw-w64)");
    assert!(st.success());
    out
}

/// `osslsigncode verify`: (whole output, whether it ended in Succeeded).
pub(crate) fn osslsigncode_verify(file: &Path) -> (String, bool) {
    let ca = certs().join("authenticode/ca.pem");
    let out = Command::new("osslsigncode")
        .arg("verify")
        .arg("-CAfile")
        .arg(&ca)
        .arg("-TSA-CAfile")
        .arg(&ca)
        .arg("-in")
        .arg(file)
        .output()
        .expect("osslsigncode not installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ok = out.status.success() && text.trim_end().ends_with("Succeeded");
    (text, ok)
}

/// osslsigncode 2.9 says "invalid PE checksum", 2.5 "MISMATCH".
fn checksum_mismatch(text: &str) -> bool {
    text.contains("invalid PE checksum") || text.contains("MISMATCH")
}

fn flip(p: &Path, at: u64) {
    let mut d = std::fs::read(p).unwrap();
    d[at as usize] ^= 0x01;
    std::fs::write(p, d).unwrap();
}

fn sign_file(s: &AuthenticodeSigner, input: &Path, name: &str) -> PathBuf {
    let out = input.with_file_name(name);
    let _ = std::fs::remove_file(&out);
    s.sign(input, &out, &SignContext::default()).unwrap();
    out
}

#[test]
fn rsa_sha256_exe_and_dll_both_archs_verify_with_osslsigncode() {
    let tmp = tempfile::tempdir().unwrap();
    let s = signer(
        "rsa",
        None,
        &[
            ("program_name", "Test Program"),
            ("program_url", "https://example.invalid/"),
        ],
    );
    for arch in ["x86_64", "i686"] {
        for dll in [false, true] {
            let pe = build_pe(tmp.path(), arch, dll);
            let signed = sign_file(&s, &pe, &format!("signed-{arch}-{dll}"));
            let (text, ok) = osslsigncode_verify(&signed);
            assert!(ok, "{arch} dll={dll}: {text}");
            assert!(text.contains("Test Program"), "{text}");
            // The CheckSum we wrote is the one osslsigncode computes.
            let line = text
                .lines()
                .find(|l| l.contains("PE checksum"))
                .unwrap_or_default();
            assert!(!line.to_lowercase().contains("mismatch"), "{text}");
            s.verify(&pe, &signed).unwrap();
            // One flipped byte in a section: both osslsigncode and we refuse.
            let tampered = signed.with_file_name(format!("tampered-{arch}-{dll}"));
            std::fs::copy(&signed, &tampered).unwrap();
            flip(&tampered, 0x500);
            let (text, ok) = osslsigncode_verify(&tampered);
            assert!(!ok, "tampered file verified: {text}");
            assert!(s.verify(&pe, &tampered).is_err());
        }
    }
}

#[test]
fn checksum_matches_osslsigncode() {
    let tmp = tempfile::tempdir().unwrap();
    let s = signer("rsa", None, &[]);
    let pe = build_pe(tmp.path(), "x86_64", false);
    let signed = sign_file(&s, &pe, "signed.exe");
    let (text, ok) = osslsigncode_verify(&signed);
    assert!(ok, "{text}");
    assert!(text.contains("PE checksum"), "{text}");
    assert!(!checksum_mismatch(&text), "{text}");
    // The check can fail: a wrong CheckSum is reported.
    let mut f = File::open(&signed).unwrap();
    let len = f.metadata().unwrap().len();
    let l = pe::parse(&mut f, len).unwrap();
    flip(&signed, l.checksum_offset as u64);
    let (text, _) = osslsigncode_verify(&signed);
    assert!(checksum_mismatch(&text), "{text}");
}

#[test]
fn ecdsa_and_larger_digests_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let pe = build_pe(tmp.path(), "x86_64", false);
    for (key, digest) in [
        ("ec", None),
        ("ec", Some("sha384")),
        ("ec384", Some("sha384")),
        ("rsa", Some("sha512")),
    ] {
        let s = signer(key, digest, &[]);
        let signed = sign_file(&s, &pe, &format!("signed-{key}-{digest:?}.exe"));
        let (text, ok) = osslsigncode_verify(&signed);
        assert!(ok, "{key} {digest:?}: {text}");
        s.verify(&pe, &signed).unwrap();
    }
}

#[test]
fn resigning_replaces_or_refuses() {
    let tmp = tempfile::tempdir().unwrap();
    let pe = build_pe(tmp.path(), "i686", true);
    let rsa = signer("rsa", None, &[]);
    let once = sign_file(&rsa, &pe, "once.dll");
    let ec = signer("ec", None, &[]);
    let twice = sign_file(&ec, &once, "twice.dll");
    let (text, ok) = osslsigncode_verify(&twice);
    assert!(ok, "{text}");
    assert!(text.contains("Number of verified signatures: 1"), "{text}");
    assert!(
        !text.contains("code signing RSA"),
        "the old signer is still there: {text}"
    );
    ec.verify(&once, &twice).unwrap();
    assert!(
        rsa.verify(&once, &twice).is_err(),
        "old signature still there"
    );
    // Re-signing the same file gives the same size: nothing appended.
    let again = sign_file(&ec, &twice, "again.dll");
    assert_eq!(
        std::fs::metadata(&again).unwrap().len(),
        std::fs::metadata(&twice).unwrap().len()
    );
    let refuse = signer("rsa", None, &[("resign", "refuse")]);
    let out = tmp.path().join("refused.dll");
    match refuse.sign(&once, &out, &SignContext::default()) {
        Err(SignError::Rejected(m)) => assert!(m.contains("already signed"), "{m}"),
        other => panic!("{other:?}"),
    }
    // An unsigned file is fine with refuse.
    refuse.sign(&pe, &out, &SignContext::default()).unwrap();
}

#[test]
fn bad_inputs_are_rejected_not_panicking() {
    let tmp = tempfile::tempdir().unwrap();
    let s = signer("rsa", None, &[]);
    let pe = build_pe(tmp.path(), "x86_64", false);
    let data = std::fs::read(&pe).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("text", b"#!/bin/sh\necho not a PE\n".repeat(10)),
        ("truncated", data[..data.len() / 2].to_vec()),
        ("headers only", data[..0x400].to_vec()),
        ("lying section size", {
            let mut d = data.clone();
            let pe_off = u32::from_le_bytes(d[0x3c..0x40].try_into().unwrap()) as usize;
            let opt_len =
                u16::from_le_bytes(d[pe_off + 20..pe_off + 22].try_into().unwrap()) as usize;
            let sect = pe_off + 24 + opt_len;
            d[sect + 16..sect + 20].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
            d
        }),
        ("lying section count", {
            let mut d = data.clone();
            let pe_off = u32::from_le_bytes(d[0x3c..0x40].try_into().unwrap()) as usize;
            d[pe_off + 6..pe_off + 8].copy_from_slice(&0xffffu16.to_le_bytes());
            d
        }),
    ];
    for (what, bytes) in cases {
        let input = tmp.path().join(what);
        std::fs::write(&input, &bytes).unwrap();
        let out = tmp.path().join(format!("{what}.out"));
        match s.sign(&input, &out, &SignContext::default()) {
            Err(SignError::Rejected(m)) => {
                eprintln!("{what}: {m}");
                assert!(m.starts_with("not a valid PE file: "), "{m}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn probe_passes_and_config_errors_are_precise() {
    let tmp = tempfile::tempdir().unwrap();
    for key in ["rsa", "ec"] {
        let s = signer(key, None, &[]);
        s.probe(tmp.path()).unwrap();
        s.probe(tmp.path()).unwrap();
    }
    assert!(needs_passphrase(&cfg("rsa", None, &[], &[])).unwrap());
    assert!(!needs_passphrase(&cfg("tsa", None, &[], &[])).unwrap());
    let err = |c: FormatConfig, pw: Option<&SecretString>| match AuthenticodeSigner::open(&c, pw) {
        Ok(_) => panic!("opened"),
        Err(e) => e,
    };
    assert!(matches!(
        err(cfg("rsa", None, &[], &[]), None),
        SignError::Key(_)
    ));
    let wrong = SecretString::from("wrong".to_string());
    assert!(matches!(
        err(cfg("rsa", None, &[], &[]), Some(&wrong)),
        SignError::Key(_)
    ));
    assert!(matches!(
        err(cfg("rsa", Some("sha1"), &[], &[]), Some(&passphrase())),
        SignError::Config(_)
    ));
    assert!(matches!(
        err(
            cfg("rsa", None, &[("resign", "maybe")], &[]),
            Some(&passphrase())
        ),
        SignError::Config(_)
    ));
    let mut c = cfg("rsa", None, &[], &[]);
    c.cert = Some(certs().join("authenticode/ec-chain.pem"));
    assert!(matches!(err(c, Some(&passphrase())), SignError::Config(_)));
}

#[test]
fn overlay_of_odd_length_is_padded_and_hashed_as_osslsigncode_does() {
    // Data after the last section (an installer's payload), 20 MiB + 3 bytes:
    // hashed as a stream, padded to 8 bytes before the certificate table.
    let tmp = tempfile::tempdir().unwrap();
    let pe = build_pe(tmp.path(), "i686", false);
    let mut data = std::fs::read(&pe).unwrap();
    data.extend((0..(20u32 << 20) + 3).map(|i| (i % 251) as u8));
    std::fs::write(&pe, &data).unwrap();
    for key in ["rsa", "ec"] {
        let s = signer(key, None, &[]);
        let signed = sign_file(&s, &pe, &format!("signed-{key}.exe"));
        let (text, ok) = osslsigncode_verify(&signed);
        assert!(ok, "{text}");
        assert!(!checksum_mismatch(&text), "{text}");
        let signed_len = std::fs::metadata(&signed).unwrap().len();
        assert_eq!(signed_len % 8, 0);
        // Flip a byte deep in the overlay.
        flip(&signed, (data.len() - 10) as u64);
        let (text, ok) = osslsigncode_verify(&signed);
        assert!(!ok, "{text}");
        assert!(s.verify(&pe, &signed).is_err());
    }
}

#[test]
fn timestamped_signature_verifies_and_a_dead_tsa_is_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let pe = build_pe(tmp.path(), "x86_64", true);
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/", l.local_addr().unwrap())
    };
    let tsa = crate::timestamp::tests::test_tsa();
    for (key, digest) in [("rsa", None), ("ec", Some("sha384"))] {
        let c = cfg(key, digest, &[], &[dead.clone(), tsa.clone()]);
        let s = AuthenticodeSigner::open(&c, Some(&passphrase())).unwrap();
        // The probe works without asking the TSA.
        s.probe(tmp.path()).unwrap();
        let signed = sign_file(&s, &pe, &format!("ts-{key}.dll"));
        let (text, ok) = osslsigncode_verify(&signed);
        assert!(ok, "{text}");
        assert!(
            text.contains("Timestamp Server Signature verification: ok"),
            "{text}"
        );
        s.verify(&pe, &signed).unwrap();
    }
}
