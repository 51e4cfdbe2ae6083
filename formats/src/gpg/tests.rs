//! Unit tests of the gpg signer, checked with the real gpgv and gpg.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use pgp::composed::{ArmorOptions, Deserializable, DetachedSignature, SignedSecretKey};
use pgp::types::Password;
use rand::{rngs::StdRng, RngCore, SeedableRng};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::{needs_passphrase, open};
use crate::{FormatConfig, SignContext, SignError, Signer};

use crate::test_support::{certs, passphrase};

fn cfg(dir: &str, digest: Option<&str>) -> FormatConfig {
    FormatConfig {
        name: "gpg".into(),
        kind: "gpg".into(),
        key: certs().join(dir).join("secret.asc"),
        digest: digest.map(str::to_string),
        ..FormatConfig::default()
    }
}

fn open_err(c: &FormatConfig, pw: Option<&SecretString>) -> SignError {
    match open(c, pw) {
        Ok(s) => panic!("open succeeded: {}", s.key_id()),
        Err(e) => e,
    }
}

fn signer(dir: &str, digest: Option<&str>) -> Box<dyn Signer> {
    open(&cfg(dir, digest), Some(&passphrase())).unwrap()
}

fn random_file(dir: &Path, name: &str, len: usize) -> PathBuf {
    let mut data = vec![0u8; len];
    StdRng::seed_from_u64(len as u64).fill_bytes(&mut data);
    let p = dir.join(name);
    std::fs::write(&p, &data).unwrap();
    p
}

fn flip_byte(p: &Path, at: usize) {
    let mut data = std::fs::read(p).unwrap();
    data[at] ^= 0x80;
    std::fs::write(p, &data).unwrap();
}

/// The real gpgv, with a throw-away home so nothing outside the tempdir is touched.
fn gpgv(dir: &str, sig: &Path, file: &Path) -> bool {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new("gpgv")
        .arg("--homedir")
        .arg(home.path())
        .arg("--keyring")
        .arg(certs().join(dir).join("public.gpg").canonicalize().unwrap())
        .arg(sig)
        .arg(file)
        .output()
        .expect("gpgv not installed (apt-get install gpgv)");
    if !out.status.success() {
        eprintln!("gpgv: {}", String::from_utf8_lossy(&out.stderr));
    }
    out.status.success()
}

/// The real `gpg --verify`, with a temporary GNUPGHOME that imported public.asc.
fn gpg_verify(dir: &str, sig: &Path, file: &Path) -> bool {
    let home = tempfile::tempdir().unwrap();
    let gpg = |args: &[&std::ffi::OsStr]| {
        Command::new("gpg")
            .arg("--homedir")
            .arg(home.path())
            .args(["--batch", "--no-tty", "--no-auto-key-retrieve"])
            .args(args)
            .output()
            .expect("gpg not installed (apt-get install gnupg)")
    };
    let public = certs().join(dir).join("public.asc");
    let imported = gpg(&["--import".as_ref(), public.as_os_str()]);
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    let out = gpg(&["--verify".as_ref(), sig.as_os_str(), file.as_os_str()]);
    let _ = Command::new("gpgconf")
        .arg("--homedir")
        .arg(home.path())
        .args(["--kill", "all"])
        .output();
    if !out.status.success() {
        eprintln!("gpg --verify: {}", String::from_utf8_lossy(&out.stderr));
    }
    out.status.success()
}

fn sign_and_check_with_gnupg(dir: &str, digest: Option<&str>, len: usize) {
    let s = signer(dir, digest);
    let tmp = tempfile::tempdir().unwrap();
    let file = random_file(tmp.path(), "data.bin", len);
    let sig = tmp.path().join("data.bin.asc");
    s.sign(&file, &sig, &SignContext::default()).unwrap();
    let text = std::fs::read_to_string(&sig).unwrap();
    assert!(text.starts_with("-----BEGIN PGP SIGNATURE-----"), "{text}");
    assert!(gpgv(dir, &sig, &file), "gpgv rejected a good signature");
    assert!(
        gpg_verify(dir, &sig, &file),
        "gpg --verify rejected a good signature"
    );
    s.verify(&file, &sig).unwrap();
    flip_byte(&file, len / 2);
    assert!(!gpgv(dir, &sig, &file), "gpgv accepted a tampered file");
    assert!(
        !gpg_verify(dir, &sig, &file),
        "gpg --verify accepted a tampered file"
    );
    assert!(s.verify(&file, &sig).is_err());
}

#[test]
fn ed25519_1mib_verified_by_gpgv_and_gpg() {
    sign_and_check_with_gnupg("gpg", None, 1 << 20);
}

#[test]
fn rsa4096_1mib_verified_by_gpgv_and_gpg() {
    sign_and_check_with_gnupg("gpg-rsa", None, 1 << 20);
}

#[test]
fn sha384_and_sha512_verified_by_gpgv() {
    sign_and_check_with_gnupg("gpg", Some("sha512"), 100 << 10);
    sign_and_check_with_gnupg("gpg-rsa", Some("SHA384"), 100 << 10);
}

#[test]
fn empty_file() {
    sign_and_check_with_gnupg_empty("gpg");
}

fn sign_and_check_with_gnupg_empty(dir: &str) {
    let s = signer(dir, None);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("empty");
    std::fs::write(&file, b"").unwrap();
    let sig = tmp.path().join("empty.asc");
    s.sign(&file, &sig, &SignContext::default()).unwrap();
    assert!(gpgv(dir, &sig, &file));
    s.verify(&file, &sig).unwrap();
}

#[test]
fn needs_passphrase_for_test_keys() {
    assert!(needs_passphrase(&cfg("gpg", None)).unwrap());
    assert!(needs_passphrase(&cfg("gpg-rsa", None)).unwrap());
}

#[test]
fn wrong_or_missing_passphrase_is_a_key_error() {
    let wrong = "not-the-Passphrase-42";
    for dir in ["gpg", "gpg-rsa"] {
        let err = open_err(&cfg(dir, None), Some(&SecretString::from(wrong)));
        let SignError::Key(msg) = &err else {
            panic!("expected SignError::Key, got {err:?}");
        };
        assert!(msg.contains("wrong passphrase for"), "{msg}");
        assert!(msg.contains("secret.asc"), "{msg}");
        assert!(!msg.contains(wrong), "{msg}");
        assert!(!format!("{err:?}").contains(wrong));

        let err = open_err(&cfg(dir, None), None);
        assert!(matches!(err, SignError::Key(_)), "{err:?}");
    }
}

#[test]
fn weak_or_unknown_digest_is_a_config_error() {
    for d in ["sha1", "md5", "SHA1", "sha224", "whirlpool", ""] {
        let err = open_err(&cfg("gpg", Some(d)), Some(&passphrase()));
        let SignError::Config(msg) = &err else {
            panic!("digest {d:?}: expected SignError::Config, got {err:?}");
        };
        assert!(msg.contains("sha256"), "{msg}");
    }
}

#[test]
fn unused_settings_are_config_errors() {
    let mut c = cfg("gpg", None);
    c.extra.insert("foo".into(), "bar".into());
    assert!(matches!(
        open(&c, Some(&passphrase())),
        Err(SignError::Config(_))
    ));
    let mut c = cfg("gpg", None);
    c.cert = Some(certs().join("ca.pem"));
    assert!(matches!(
        open(&c, Some(&passphrase())),
        Err(SignError::Config(_))
    ));
}

#[test]
fn bad_key_file_is_a_key_error() {
    let mut c = cfg("gpg", None);
    c.key = certs().join("gpg/public.asc");
    assert!(matches!(needs_passphrase(&c), Err(SignError::Key(_))));
    c.key = certs().join("does-not-exist.asc");
    assert!(matches!(
        open(&c, Some(&passphrase())),
        Err(SignError::Key(_))
    ));
}

#[test]
fn unprotected_key_needs_no_passphrase() {
    let (mut key, _) =
        SignedSecretKey::from_armor_single(File::open(certs().join("gpg/secret.asc")).unwrap())
            .unwrap();
    let pw = Password::from(passphrase().expose_secret());
    key.primary_key.remove_password(&pw).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("plain.asc");
    std::fs::write(
        &path,
        key.to_armored_bytes(ArmorOptions::default()).unwrap(),
    )
    .unwrap();
    let mut c = cfg("gpg", None);
    c.key = path;
    assert!(!needs_passphrase(&c).unwrap());
    open(&c, None).unwrap().probe(tmp.path()).unwrap();
}

/// A certify-only primary key with a signing subkey, made by the real gpg
/// (unprotected): we must sign with the subkey, as gpg would.
#[test]
fn signs_with_signing_subkey() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("gnupg");
    std::fs::create_dir(&home).unwrap();
    let gpg = |args: &[&str]| {
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(&home)
            .args([
                "--batch",
                "--no-tty",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(args)
            .output()
            .expect("gpg not installed (apt-get install gnupg)");
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    gpg(&[
        "--quick-gen-key",
        "subkey test <sub@example.invalid>",
        "ed25519",
        "cert",
        "never",
    ]);
    let colons = String::from_utf8(gpg(&["--with-colons", "--list-keys"])).unwrap();
    let fpr = colons
        .lines()
        .find_map(|l| {
            l.strip_prefix("fpr:")
                .map(|r| r.trim_matches(':').to_string())
        })
        .unwrap();
    gpg(&["--quick-add-key", &fpr, "ed25519", "sign", "never"]);
    let secret = tmp.path().join("secret.asc");
    std::fs::write(&secret, gpg(&["--armor", "--export-secret-keys"])).unwrap();
    let keyring = tmp.path().join("public.gpg");
    std::fs::write(&keyring, gpg(&["--export"])).unwrap();
    let _ = Command::new("gpgconf")
        .arg("--homedir")
        .arg(&home)
        .args(["--kill", "all"])
        .output();

    let mut c = cfg("gpg", None);
    c.key = secret;
    assert!(!needs_passphrase(&c).unwrap());
    let s = open(&c, None).unwrap();
    assert_eq!(s.key_id(), fpr);
    let file = random_file(tmp.path(), "f", 4096);
    let sig = tmp.path().join("f.asc");
    s.sign(&file, &sig, &SignContext::default()).unwrap();
    s.verify(&file, &sig).unwrap();
    let (parsed, _) = DetachedSignature::from_armor_single(File::open(&sig).unwrap()).unwrap();
    let issuer = hex::encode_upper(parsed.signature.issuer_fingerprint()[0].as_bytes());
    assert_ne!(issuer, fpr, "signed with the primary key, not the subkey");
    let gpgv_home = tempfile::tempdir().unwrap();
    let ok = Command::new("gpgv")
        .arg("--homedir")
        .arg(gpgv_home.path())
        .arg("--keyring")
        .arg(&keyring)
        .arg(&sig)
        .arg(&file)
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn probe_passes() {
    for dir in ["gpg", "gpg-rsa"] {
        let tmp = tempfile::tempdir().unwrap();
        let s = signer(dir, None);
        s.probe(tmp.path()).unwrap();
        // Twice in the same scratch directory.
        s.probe(tmp.path()).unwrap();
    }
}

#[test]
fn signs_from_a_sha256_state_only_with_sha256() {
    let tmp = tempfile::tempdir().unwrap();
    let file = random_file(tmp.path(), "f", 300_000);
    let data = std::fs::read(&file).unwrap();
    for dir in ["gpg", "gpg-rsa"] {
        let s = signer(dir, None);
        assert!(s.signs_sha256_state(), "{dir}");
        let sig = tmp.path().join(format!("{dir}.asc"));
        // The state after the data, fed in uneven pieces as an upload arrives.
        let mut state = Sha256::new();
        for piece in data.chunks(7_777) {
            state.update(piece);
        }
        s.sign_sha256_state(&state, &sig, &SignContext::default())
            .unwrap();
        s.verify(&file, &sig).unwrap();
        // A state over other bytes gives a signature the file does not match.
        let other = tmp.path().join(format!("{dir}-other.asc"));
        let mut wrong = Sha256::new();
        wrong.update(&data[1..]);
        s.sign_sha256_state(&wrong, &other, &SignContext::default())
            .unwrap();
        assert!(s.verify(&file, &other).is_err());
    }
    // SHA-512 signatures hash the data with SHA-512: no state path.
    let s = signer("gpg", Some("sha512"));
    assert!(!s.signs_sha256_state());
    let out = tmp.path().join("512.asc");
    assert!(s
        .sign_sha256_state(&Sha256::new(), &out, &SignContext::default())
        .is_err());
    assert!(!out.exists());
}

#[test]
fn own_verify_accepts_good_and_rejects_tampered() {
    let s = signer("gpg", None);
    let other = signer("gpg-rsa", None);
    let tmp = tempfile::tempdir().unwrap();
    let file = random_file(tmp.path(), "f", 300_000);
    let sig = tmp.path().join("f.asc");
    s.sign(&file, &sig, &SignContext::default()).unwrap();
    s.verify(&file, &sig).unwrap();
    // Another key's signer does not accept it.
    assert!(other.verify(&file, &sig).is_err());
    // Garbage signature file.
    let junk = tmp.path().join("junk.asc");
    std::fs::write(&junk, "not a signature").unwrap();
    assert!(s.verify(&file, &junk).is_err());
    // Tampered (and truncated) input.
    flip_byte(&file, 0);
    assert!(s.verify(&file, &sig).is_err());
    flip_byte(&file, 0);
    s.verify(&file, &sig).unwrap();
    let data = std::fs::read(&file).unwrap();
    std::fs::write(&file, &data[..data.len() - 1]).unwrap();
    assert!(s.verify(&file, &sig).is_err());
}

#[test]
fn key_id_is_primary_fingerprint() {
    for dir in ["gpg", "gpg-rsa"] {
        let want = std::fs::read_to_string(certs().join(dir).join("FINGERPRINT")).unwrap();
        assert_eq!(signer(dir, None).key_id(), want.trim());
    }
}

#[test]
fn existing_output_is_not_overwritten() {
    let s = signer("gpg", None);
    let tmp = tempfile::tempdir().unwrap();
    let file = random_file(tmp.path(), "f", 10);
    let sig = tmp.path().join("f.asc");
    std::fs::write(&sig, "keep").unwrap();
    assert!(matches!(
        s.sign(&file, &sig, &SignContext::default()),
        Err(SignError::Internal(_))
    ));
    assert_eq!(std::fs::read_to_string(&sig).unwrap(), "keep");
}
