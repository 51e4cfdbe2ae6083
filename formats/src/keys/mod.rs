//! PEM private keys for the openssl-backed signers (MAR, APK, Authenticode,
//! Apple): read bounded, tell whether a passphrase is needed, unlock once.
//!
//! What it does: reads a key file of at most [`MAX_SMALL_FILE`] bytes into a
//! buffer wiped on drop ([`read_bounded`], also the reader of every signer's
//! certificates, entitlements and OpenPGP key files); recognises encrypted PEM (PKCS#8 `ENCRYPTED PRIVATE
//! KEY` and legacy `Proc-Type: 4,ENCRYPTED`); decrypts with the passphrase
//! through openssl, which clears private key material when the `PKey` is
//! freed. Errors name the key file, never the passphrase.
//!
//! [`signing`] is the one key interface of the X.509 signers: a file key unlocked
//! here, or a token key ([`crate::pkcs11`]), behind [`signing::SigningKey`].
//!
//! Deliberately NOT done: checks of the key's type or size (each signer knows
//! what it accepts); OpenPGP keys (`gpg.rs`, rpgp).

pub mod signing;
pub mod validity;

use std::fs::File;
use std::io::Read;
use std::path::Path;

use openssl::pkey::{PKey, Private};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::SignError;

/// Largest PEM key, certificate or entitlements file read: such files are
/// far smaller (even an RSA-16384 key).
pub const MAX_SMALL_FILE: u64 = 1 << 20;

/// Reads the file at `path` whole, refusing one over `limit` bytes (reading
/// stops just past it), into a buffer wiped on drop. The error says
/// `"{what} {path}: cannot open|cannot read|larger than …"`; the caller
/// chooses its kind (a key error, a config error).
pub fn read_bounded(path: &Path, what: &str, limit: u64) -> Result<Zeroizing<Vec<u8>>, String> {
    let bad = |m: String| format!("{what} {}: {m}", path.display());
    let file = File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| bad(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > limit {
        return Err(bad(format!("larger than {limit} bytes")));
    }
    Ok(bytes)
}

/// Reads the PEM key file at `path` (bounded; wiped on drop). `what` names
/// the key in messages ("MAR key", "APK key"…).
pub fn read_key_file(path: &Path, what: &str) -> Result<Zeroizing<Vec<u8>>, SignError> {
    read_bounded(path, what, MAX_SMALL_FILE).map_err(SignError::Key)
}

/// Whether `pem` is an encrypted PEM private key.
pub fn is_encrypted_pem(pem: &[u8]) -> bool {
    let has = |needle: &[u8]| pem.windows(needle.len()).any(|w| w == needle);
    has(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || has(b"Proc-Type: 4,ENCRYPTED")
}

/// Whether the key file at `path` needs a passphrase.
pub fn needs_passphrase(path: &Path, what: &str) -> Result<bool, SignError> {
    Ok(is_encrypted_pem(&read_key_file(path, what)?))
}

/// Reads and unlocks the PEM private key at `path`: with `passphrase` when
/// the file is encrypted (a missing passphrase is an error), as is otherwise.
pub fn load_private_key(
    path: &Path,
    what: &str,
    passphrase: Option<&SecretString>,
) -> Result<PKey<Private>, SignError> {
    let shown = path.display();
    let pem = read_key_file(path, what)?;
    if is_encrypted_pem(&pem) {
        let Some(pw) = passphrase else {
            return Err(SignError::Key(format!(
                "the {what} {shown} is passphrase-protected but no passphrase was given"
            )));
        };
        // openssl's error would say only "bad decrypt": name the likely cause.
        PKey::private_key_from_pem_passphrase(&pem, pw.expose_secret().as_bytes()).map_err(|_| {
            SignError::Key(format!(
                "wrong passphrase for {shown} (or not a PEM private key)"
            ))
        })
    } else {
        PKey::private_key_from_pem(&pem).map_err(|e| {
            SignError::Key(format!("the {what} {shown} is not a PEM private key: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::{certs, passphrase};

    #[test]
    fn encrypted_keys_need_and_take_the_passphrase() {
        let key = certs().join("mar/sha1-2048.key");
        assert!(needs_passphrase(&key, "MAR key").unwrap());
        let k = load_private_key(&key, "MAR key", Some(&passphrase())).unwrap();
        assert_eq!(k.bits(), 2048);
        let wrong = SecretString::from("not-the-passphrase".to_string());
        let e = load_private_key(&key, "MAR key", Some(&wrong))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("wrong passphrase") && !e.contains("not-the-passphrase"),
            "{e}"
        );
        let e = load_private_key(&key, "MAR key", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no passphrase was given"), "{e}");
    }

    #[test]
    fn plain_bad_and_missing_files() {
        let tmp = tempfile::tempdir().unwrap();
        let plain = tmp.path().join("plain.pem");
        let k = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        std::fs::write(&plain, k.private_key_to_pem_pkcs8().unwrap()).unwrap();
        assert!(!needs_passphrase(&plain, "key").unwrap());
        assert_eq!(load_private_key(&plain, "key", None).unwrap().bits(), 2048);
        let junk = tmp.path().join("junk.pem");
        std::fs::write(&junk, "not a key").unwrap();
        assert!(matches!(
            load_private_key(&junk, "key", None),
            Err(SignError::Key(_))
        ));
        let big = tmp.path().join("big.pem");
        std::fs::write(&big, vec![b'A'; (MAX_SMALL_FILE + 1) as usize]).unwrap();
        let e = read_key_file(&big, "key").unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
        let e = read_key_file(&tmp.path().join("none"), "APK key")
            .unwrap_err()
            .to_string();
        assert!(e.contains("APK key") && e.contains("cannot open"), "{e}");
    }
}
