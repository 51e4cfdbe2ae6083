//! C2SP signed notes with Ed25519 (the format of Go's
//! `golang.org/x/mod/sumdb/note`): a text ending in a newline, a blank line,
//! then signature lines `— <name> <base64(key ID ‖ signature)>`.
//!
//! The key ID is the first 4 bytes of `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public
//! key)`; a verifier key is written `<name>+<key ID, 8 hex>+<base64(0x01 ‖
//! public key)>`. Ed25519 itself is openssl's (the crate's key library).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use openssl::pkey::{Id, PKey, Private};
use sha2::{Digest, Sha256};

/// The signature algorithm byte of Ed25519 in signed notes.
const ALG_ED25519: u8 = 1;
/// Longest note we read (a checkpoint is about 200 bytes).
pub const MAX_NOTE: usize = 64 * 1024;
/// Signature lines a note may carry (Go's limit too).
const MAX_SIGNATURES: usize = 100;

/// A key name: non-empty, no whitespace, no `+`.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+') {
        return Err(format!(
            "{name:?} is not a note key name (non-empty, no spaces, no +)"
        ));
    }
    Ok(())
}

/// The key ID of Ed25519 public key `public` named `name`.
pub fn key_id(name: &str, public: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ALG_ED25519]);
    h.update(public);
    let d = h.finalize();
    d.as_slice()
        .first_chunk::<4>()
        .map_or(0, |b| u32::from_be_bytes(*b))
}

/// A note signer: an Ed25519 private key and its name.
pub struct NoteKey {
    name: String,
    key: PKey<Private>,
    verifier: NoteVerifier,
}

impl NoteKey {
    /// `key` (Ed25519) signing notes as `name`.
    pub fn new(name: &str, key: PKey<Private>) -> Result<NoteKey, String> {
        check_name(name)?;
        if key.id() != Id::ED25519 {
            return Err("the key is not an Ed25519 key".into());
        }
        let raw = key
            .raw_public_key()
            .map_err(|e| format!("cannot read the public key: {e}"))?;
        let public: [u8; 32] = raw
            .as_slice()
            .try_into()
            .map_err(|_| "an Ed25519 public key is 32 bytes".to_string())?;
        Ok(NoteKey {
            name: name.to_string(),
            key,
            verifier: NoteVerifier {
                name: name.to_string(),
                id: key_id(name, &public),
                public,
            },
        })
    }

    /// The key from its 32-byte Ed25519 seed (tests, and Go's `PRIVATE+KEY+` strings).
    pub fn from_seed(name: &str, seed: &[u8]) -> Result<NoteKey, String> {
        let key = PKey::private_key_from_raw_bytes(seed, Id::ED25519)
            .map_err(|e| format!("not an Ed25519 seed: {e}"))?;
        NoteKey::new(name, key)
    }

    /// Its verifier.
    pub fn verifier(&self) -> &NoteVerifier {
        &self.verifier
    }

    /// The signed note of `text` (which must end with a newline).
    pub fn sign(&self, text: &str) -> Result<String, String> {
        check_text(text)?;
        let mut signer = openssl::sign::Signer::new_without_digest(&self.key)
            .map_err(|e| format!("Ed25519: {e}"))?;
        let sig = signer
            .sign_oneshot_to_vec(text.as_bytes())
            .map_err(|e| format!("Ed25519 signing failed: {e}"))?;
        let mut blob = self.verifier.id.to_be_bytes().to_vec();
        blob.extend_from_slice(&sig);
        Ok(format!(
            "{text}\n\u{2014} {} {}\n",
            self.name,
            B64.encode(blob)
        ))
    }
}

/// A note's text: ends with a newline, no control characters but newlines.
fn check_text(text: &str) -> Result<(), String> {
    if !text.ends_with('\n') {
        return Err("a note's text ends with a newline".into());
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err("a note's text has no control characters".into());
    }
    Ok(())
}

/// A note verifier: a name, a key ID and an Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    id: u32,
    public: [u8; 32],
}

impl std::fmt::Display for NoteVerifier {
    /// The verifier key string (`name+hex ID+base64(0x01 ‖ key)`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut k = vec![ALG_ED25519];
        k.extend_from_slice(&self.public);
        write!(f, "{}+{:08x}+{}", self.name, self.id, B64.encode(k))
    }
}

impl NoteVerifier {
    /// Parses a verifier key string; its key ID must match its key.
    pub fn parse(vkey: &str) -> Result<NoteVerifier, String> {
        let bad = |why: &str| format!("not a note verifier key ({why}): {vkey:?}");
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected NAME+ID+KEY"));
        };
        check_name(name).map_err(|e| bad(&e))?;
        if id.len() != 8 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad("the key ID is 8 lowercase hex digits"));
        }
        let id = u32::from_str_radix(id, 16).map_err(|_| bad("key ID"))?;
        let raw = B64.decode(key).map_err(|_| bad("the key is not base64"))?;
        let Some((&ALG_ED25519, public)) = raw.split_first() else {
            return Err(bad("not an Ed25519 key"));
        };
        let public: [u8; 32] = public
            .try_into()
            .map_err(|_| bad("an Ed25519 key is 32 bytes"))?;
        if key_id(name, &public) != id {
            return Err(bad("the key ID does not match the key"));
        }
        Ok(NoteVerifier {
            name: name.to_string(),
            id,
            public,
        })
    }

    /// The key's name (a log's origin).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks `note` carries a valid signature by this key; returns its
    /// text. Signatures by other keys are ignored (the spec's rule: they may
    /// be witnesses' cosignatures).
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, String> {
        if note.len() > MAX_NOTE {
            return Err(format!("a note is at most {MAX_NOTE} bytes"));
        }
        let split = note
            .rfind("\n\n")
            .ok_or("malformed note: no blank line before the signatures")?;
        let (Some(text), Some(sigs)) = (note.get(..split + 1), note.get(split + 2..)) else {
            return Err("malformed note".into());
        };
        check_text(text).map_err(|e| format!("malformed note: {e}"))?;
        if !sigs.ends_with('\n') {
            return Err("malformed note: the last signature line has no newline".into());
        }
        let mut found = false;
        for (i, line) in sigs.lines().enumerate() {
            if i >= MAX_SIGNATURES {
                return Err("malformed note: too many signatures".into());
            }
            let rest = line
                .strip_prefix("\u{2014} ")
                .ok_or("malformed note: a signature line does not start with \u{2014}")?;
            let (name, b64) = rest
                .split_once(' ')
                .ok_or("malformed note: a signature line has no signature")?;
            let blob = B64
                .decode(b64)
                .map_err(|_| "malformed note: a signature is not base64")?;
            let Some((id, sig)) = blob.split_first_chunk::<4>() else {
                return Err("malformed note: a signature is too short".into());
            };
            if name != self.name || u32::from_be_bytes(*id) != self.id {
                continue;
            }
            if !self.verify(text.as_bytes(), sig) {
                return Err(format!("the signature by {} does not verify", self.name));
            }
            found = true;
        }
        if found {
            Ok(text)
        } else {
            Err(format!("the note is not signed by {}", self))
        }
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(key) = PKey::public_key_from_raw_bytes(&self.public, Id::ED25519) else {
            return false;
        };
        let Ok(mut v) = openssl::sign::Verifier::new_without_digest(&key) else {
            return false;
        };
        v.verify_oneshot(sig, msg).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // golang.org/x/mod/sumdb/note's own test key and note (note_test.go).
    const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                        then you don't know what your problem is.\n";
    const SIG: &str = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    fn go_key() -> NoteKey {
        // The key material may itself hold a `+`.
        let b64 = SKEY
            .strip_prefix("PRIVATE+KEY+PeterNeumann+c74f20a3+")
            .unwrap();
        let seed = B64.decode(b64).unwrap();
        assert_eq!(seed[0], ALG_ED25519);
        NoteKey::from_seed("PeterNeumann", &seed[1..]).unwrap()
    }

    #[test]
    fn signs_gos_note_byte_for_byte() {
        let key = go_key();
        assert_eq!(key.verifier().to_string(), VKEY);
        assert_eq!(key.sign(TEXT).unwrap(), format!("{TEXT}\n{SIG}"));
    }

    #[test]
    fn opens_gos_note_and_refuses_changes() {
        let v = NoteVerifier::parse(VKEY).unwrap();
        let note = format!("{TEXT}\n{SIG}");
        assert_eq!(v.open(&note).unwrap(), TEXT);
        let changed = note.replace("cryptography", "cryptographY");
        assert!(v.open(&changed).unwrap_err().contains("does not verify"));
        // Another key's signature is ignored; ours must still be there.
        let other = NoteKey::from_seed("someone", &[7u8; 32]).unwrap();
        let signed_by_other = other.sign(TEXT).unwrap();
        assert!(v
            .open(&signed_by_other)
            .unwrap_err()
            .contains("not signed by"));
        let both = format!(
            "{TEXT}\n{SIG}{}",
            signed_by_other.split("\n\n").nth(1).unwrap()
        );
        assert_eq!(v.open(&both).unwrap(), TEXT);
        for bad in [
            TEXT.to_string(),
            format!("{TEXT}\n{}", SIG.trim_end()),
            format!("{TEXT}\n- PeterNeumann AAAA\n"),
            format!("{TEXT}\n— PeterNeumann !!!\n"),
        ] {
            assert!(v.open(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn verifier_keys_are_checked() {
        for bad in [
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",
            "PeterNeumann+c74f20a3",
            "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        ] {
            assert!(NoteVerifier::parse(bad).is_err(), "{bad}");
        }
        assert!(NoteKey::from_seed("a b", &[1u8; 32]).is_err());
        assert!(go_key().sign("no newline").is_err());
    }
}
