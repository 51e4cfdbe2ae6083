//! Clear-signed text checked against the real gpg: the same text as
//! `gpg --clearsign` writes, a signature gpgv accepts, tampering caught.

use std::path::Path;
use std::process::Command;

use crate::test_support::{certs, passphrase};
use crate::{FormatConfig, Output, SignContext, SignError, Signer};

fn signer(dir: &str, digest: Option<&str>) -> Box<dyn Signer> {
    let mut cfg = FormatConfig {
        name: "inrelease".into(),
        kind: "gpg".into(),
        key: certs().join(dir).join("secret.asc"),
        digest: digest.map(str::to_string),
        ..FormatConfig::default()
    };
    cfg.extra.insert("clearsign".into(), "yes".into());
    super::super::open(&cfg, Some(&passphrase())).unwrap()
}

/// `gpgv` with the public key of `certs/DIR` over the clear-signed `file`.
fn gpgv(dir: &str, file: &Path) -> (bool, String) {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new("gpgv")
        .arg("--homedir")
        .arg(home.path())
        .arg("--keyring")
        .arg(certs().join(dir).join("public.gpg").canonicalize().unwrap())
        .arg(file)
        .output()
        .expect("gpgv not installed (apt-get install gpgv)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What `gpg --clearsign` writes for `input` with the key of `certs/DIR`,
/// up to its signature (a throw-away GNUPGHOME; the passphrase from a file).
fn gpg_clearsign_text(dir: &str, input: &Path) -> Vec<u8> {
    let home = tempfile::tempdir().unwrap();
    let gpg = |args: &[&std::ffi::OsStr]| {
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(home.path())
            .args(["--batch", "--no-tty", "--pinentry-mode", "loopback"])
            .arg("--passphrase-file")
            .arg(certs().join("PASSPHRASE"))
            .args(args)
            .output()
            .expect("gpg not installed (apt-get install gnupg)");
        assert!(
            out.status.success(),
            "gpg: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    gpg(&[
        "--import".as_ref(),
        certs().join(dir).join("secret.asc").as_os_str(),
    ]);
    let out = gpg(&[
        "--clearsign".as_ref(),
        "--digest-algo".as_ref(),
        "SHA256".as_ref(),
        "-o".as_ref(),
        "-".as_ref(),
        input.as_os_str(),
    ]);
    let _ = Command::new("gpgconf")
        .arg("--homedir")
        .arg(home.path())
        .args(["--kill", "all"])
        .output();
    text_part(&out).to_vec()
}

/// Everything before the signature's armour (a line of its own, not a dash-escaped one).
fn text_part(signed: &[u8]) -> &[u8] {
    let at = signed
        .windows(30)
        .position(|w| w == b"\n-----BEGIN PGP SIGNATURE-----")
        .expect("a signature");
    &signed[..at + 1]
}

const TRICKY: &[u8] = b"Origin: test  \n-----BEGIN PGP SIGNATURE-----\n- dash\nFrom me\n\
    Fromage\n\ttab\t \ncrlf line \r\n\n\nlast line without a line feed ";

fn clearsign_matches_gpg_and_verifies(dir: &str, text: &[u8]) {
    let s = signer(dir, None);
    assert_eq!(s.output(), Output::File);
    assert!(
        !s.signs_sha256_state(),
        "clear-signing needs the text itself"
    );
    let tmp = tempfile::tempdir().unwrap();
    let (input, output) = (tmp.path().join("Release"), tmp.path().join("InRelease"));
    std::fs::write(&input, text).unwrap();
    s.sign(&input, &output, &SignContext::default()).unwrap();
    let signed = std::fs::read(&output).unwrap();
    assert_eq!(
        String::from_utf8_lossy(text_part(&signed)),
        String::from_utf8_lossy(&gpg_clearsign_text(dir, &input)),
        "our clear-signed text differs from gpg's"
    );
    let (ok, out) = gpgv(dir, &output);
    assert!(ok, "gpgv refused our clear-signed text: {out}");
    s.verify(&input, &output).unwrap();

    // Trailing white space is not signed; any other change is caught.
    let text_end = text_part(&signed).len();
    let at = signed[..text_end]
        .windows(5)
        .rposition(|w| w == b"last ")
        .unwrap_or(text_end - 2);
    let mut tampered = signed.clone();
    tampered[at] ^= 0x20;
    std::fs::write(&output, &tampered).unwrap();
    let (ok, out) = gpgv(dir, &output);
    assert!(!ok, "gpgv accepted a modified clear-signed text: {out}");
    assert!(s.verify(&input, &output).is_err());
}

#[test]
fn ed25519_clearsign_is_gpgs_text_and_gpgv_accepts_it() {
    clearsign_matches_gpg_and_verifies("gpg", TRICKY);
}

#[test]
fn rsa_clearsign_is_gpgs_text_and_gpgv_accepts_it() {
    clearsign_matches_gpg_and_verifies("gpg-rsa", b"Suite: stable\nCodename: x\n");
}

#[test]
fn empty_text_and_text_ending_with_empty_lines() {
    clearsign_matches_gpg_and_verifies("gpg", b"");
    clearsign_matches_gpg_and_verifies("gpg", b"a\n\n");
    clearsign_matches_gpg_and_verifies("gpg", b"\n");
}

#[test]
fn sha512_clearsign_says_so_and_verifies() {
    let s = signer("gpg-rsa", Some("sha512"));
    let tmp = tempfile::tempdir().unwrap();
    let (input, output) = (tmp.path().join("Release"), tmp.path().join("InRelease"));
    std::fs::write(&input, b"Suite: stable\n").unwrap();
    s.sign(&input, &output, &SignContext::default()).unwrap();
    let signed = std::fs::read_to_string(&output).unwrap();
    assert!(signed.contains("\nHash: SHA512\n\n"), "{signed}");
    let (ok, out) = gpgv("gpg-rsa", &output);
    assert!(ok, "{out}");
    s.verify(&input, &output).unwrap();
}

#[test]
fn own_verify_refuses_a_signed_text_of_another_input() {
    let s = signer("gpg", None);
    let tmp = tempfile::tempdir().unwrap();
    let (input, output) = (tmp.path().join("Release"), tmp.path().join("InRelease"));
    std::fs::write(&input, b"Suite: stable\n").unwrap();
    s.sign(&input, &output, &SignContext::default()).unwrap();
    std::fs::write(&input, b"Suite: unstable\n").unwrap();
    assert!(s.verify(&input, &output).is_err());
}

#[test]
fn a_carriage_return_inside_a_line_or_an_endless_line_is_rejected() {
    let s = signer("gpg", None);
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    for (text, what) in [
        (b"ok\nbad\rline\n".to_vec(), "line 2 has a carriage return"),
        (vec![b'x'; super::MAX_LINE + 1], "line 1 is longer than"),
    ] {
        std::fs::write(&input, &text).unwrap();
        let output = tmp.path().join("out");
        let _ = std::fs::remove_file(&output);
        match s.sign(&input, &output, &SignContext::default()) {
            Err(SignError::Rejected(m)) => assert!(m.contains(what), "{m}"),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
}

#[test]
fn clearsign_setting_is_checked() {
    let mut cfg = FormatConfig {
        name: "inrelease".into(),
        kind: "gpg".into(),
        key: certs().join("gpg/secret.asc"),
        ..FormatConfig::default()
    };
    cfg.extra.insert("clearsign".into(), "maybe".into());
    match super::super::open(&cfg, Some(&passphrase())) {
        Err(SignError::Config(m)) => assert!(m.contains("clearsign"), "{m}"),
        other => panic!(
            "expected a config error, got {:?}",
            other.map(|s| s.key_id())
        ),
    }
    cfg.extra.insert("clearsign".into(), "no".into());
    let s = super::super::open(&cfg, Some(&passphrase())).unwrap();
    assert_eq!(s.output(), Output::Detached);
}

#[test]
fn probe_passes_when_clear_signing() {
    let tmp = tempfile::tempdir().unwrap();
    signer("gpg", None).probe(tmp.path()).unwrap();
}
