//! GPG: detached, ASCII-armoured OpenPGP signatures (`FILE.asc`), or with
//! `clearsign = yes` clear-signed text (an apt repository's `InRelease`), made
//! in-process with rpgp (the `pgp` crate).
//!
//! What it does:
//! - reads the armoured (or binary) transferable secret key at `cfg.key`, as
//!   made by `gpg --export-secret-keys --armor`, and picks the key gpg would
//!   sign with: the newest valid, unrevoked, unexpired, cross-certified
//!   signing subkey, else the primary key if it may sign;
//! - unlocks it ONCE, in [`open`], with the passphrase, then proves the
//!   unlocked key matches its public key (sign + verify in memory);
//! - signs a file as a binary-mode (type 0x00) v4/v6 detached signature with
//!   the configured digest (`sha256` by default, `sha384`, `sha512`; SHA-1 and
//!   MD5 are refused), hashing the input as a stream through a 64 KiB buffer:
//!   memory does not grow with the input;
//! - verifies such signatures (also streaming) against the signing key;
//! - for v4 keys and SHA-256, signs from a SHA-256 *state* instead of a file
//!   ([`Signer::sign_sha256_state`]): a v4 signature hashes the data, then
//!   the signature's own fields and trailer, so the state after the data is
//!   all it needs. The server hashes every upload with SHA-256 anyway, so a
//!   gpg upload is hashed once and never stored (see docs/BENCHMARKS.md).
//!
//! Deliberately NOT done:
//! - no `gpg`/`gpg-agent` child process, no keyring, no trust database: the
//!   signature is checked against the configured key only;
//! - the key is NOT kept locked between signatures. rpgp could take the
//!   passphrase per signature, but it would then re-run the key's S2K
//!   derivation every time (GnuPG calibrates it to ~65 M iterations of SHA-1,
//!   tens of milliseconds), which rules out hundreds of signatures per second.
//!   So the key is decrypted once and held by the signer; rpgp zeroizes the
//!   secret key material on drop. The passphrase itself is not kept at all;
//! - with `clearsign = yes`, the result is the input clear-signed as
//!   `gpg --clearsign` writes it ([`clearsign`]): a text-mode signature over
//!   the canonical text, which replaces the input;
//! - no inline (`--sign`) signatures, no encryption;
//! - the certificate's other self-signatures (user IDs, third-party
//!   certifications) are not validated; only what selects the signing key.

mod clearsign;
mod config;
mod digest;
pub(crate) mod key;
mod select;
#[cfg(test)]
mod tests;
mod token;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use pgp::composed::{ArmorOptions, Deserializable, DetachedSignature};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::SignatureType;
use pgp::types::{KeyDetails, KeyVersion};
use rand::RngCore;
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use crate::{FormatConfig, SignContext, SignError, Signer};
pub(crate) use config::parse_digest;
pub(crate) use key::UnlockedKey;

pub use digest::check_from_state;

/// Largest detached signature file we read when verifying.
const MAX_SIG_FILE: u64 = 1 << 20;
/// Read buffer for hashing inputs.
const READ_BUF: usize = 64 << 10;

/// Whether the signing (sub)key in the key file at `cfg.key` is
/// passphrase-protected.
pub fn needs_passphrase(cfg: &FormatConfig) -> Result<bool, SignError> {
    if let crate::KeySource::Token { .. } = crate::KeySource::of(cfg)? {
        return Ok(true);
    }
    let key = key::load_key(&cfg.key)?;
    let packet = select::select_signing_key(&key, &cfg.key)?;
    Ok(packet.secret_params().is_encrypted())
}

/// What [`needs_passphrase`] and [`open`] do with a key file, from its bytes,
/// for the `gpg_key` fuzz target: parse, select the signing key, and unlock
/// it (sign + verify in memory) when it is not passphrase-protected.
/// Whether it is protected.
pub(crate) fn check_key_bytes(bytes: &[u8]) -> Result<bool, SignError> {
    let path = Path::new("fuzz-input.asc");
    let key = key::parse_key(bytes, path)?;
    let packet = select::select_signing_key(&key, path)?;
    let protected = packet.secret_params().is_encrypted();
    if !protected {
        UnlockedKey::unlock(packet, None, HashAlgorithm::Sha256, path)?;
    }
    Ok(protected)
}

/// Parses the key at `cfg.key`, unlocks its signing (sub)key with
/// `passphrase` and returns a [`GpgSigner`].
pub fn open(
    cfg: &FormatConfig,
    passphrase: Option<&SecretString>,
) -> Result<Box<dyn Signer>, SignError> {
    Ok(Box::new(GpgSigner::open(cfg, passphrase)?))
}

/// Writes `sig`, armoured, to the new file `output`.
fn write_armored(sig: &DetachedSignature, output: &Path) -> Result<(), SignError> {
    let armored = sig
        .to_armored_bytes(ArmorOptions::default())
        .map_err(|e| internal(format!("cannot armour the GPG signature: {e}")))?;
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(output)
        .map_err(|e| internal(format!("cannot create {}: {e}", output.display())))?;
    out.write_all(&armored)
        .and_then(|()| out.flush())
        .map_err(|e| internal(format!("cannot write {}: {e}", output.display())))
}

fn internal(msg: String) -> SignError {
    SignError::Internal(anyhow!(msg))
}

/// Opens the OpenPGP key of `cfg` (a key file, or a PKCS#11 token key with its
/// `public_key`) and unlocks it: the key and its primary fingerprint (upper-case
/// hex). Shared by `type = gpg` and `type = rpm`, which sign with the same keys.
pub(crate) fn open_key(
    cfg: &FormatConfig,
    passphrase: Option<&SecretString>,
    hash: HashAlgorithm,
) -> Result<(UnlockedKey, String), SignError> {
    if let crate::KeySource::Token { .. } = crate::KeySource::of(cfg)? {
        let key = crate::SigningKey::open(cfg, passphrase, "GPG key")?;
        let (token, fingerprint) = token::open(cfg, key, hash)?;
        return Ok((UnlockedKey::Token(Box::new(token)), fingerprint));
    }
    let key = key::load_key(&cfg.key)?;
    let packet = select::select_signing_key(&key, &cfg.key)?;
    let fingerprint = hex::encode_upper(key.primary_key.fingerprint().as_bytes());
    drop(key);
    let packet = UnlockedKey::unlock(packet, passphrase, hash, &cfg.key)?;
    Ok((packet, fingerprint))
}

/// Signs files with one unlocked OpenPGP key.
pub struct GpgSigner {
    /// The signing (sub)key, unlocked; zeroized on drop by rpgp.
    key: UnlockedKey,
    hash: HashAlgorithm,
    /// Primary key fingerprint, upper-case hex.
    fingerprint: String,
    /// The key file, for messages.
    key_path: PathBuf,
    /// `clearsign = yes`: the result is the clear-signed text, not a detached signature.
    clearsign: bool,
}

impl fmt::Debug for GpgSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpgSigner")
            .field("fingerprint", &self.fingerprint)
            .field("hash", &self.hash)
            .field("key_path", &self.key_path)
            .field("clearsign", &self.clearsign)
            .finish_non_exhaustive()
    }
}

impl GpgSigner {
    /// See [`open`].
    pub fn open(cfg: &FormatConfig, passphrase: Option<&SecretString>) -> Result<Self, SignError> {
        let hash = config::parse_digest(cfg)?;
        config::check_unused(cfg)?;
        let clearsign = config::parse_clearsign(cfg)?;
        let (key, fingerprint) = open_key(cfg, passphrase, hash)?;
        Ok(GpgSigner {
            key,
            hash,
            fingerprint,
            key_path: cfg.key.clone(),
            clearsign,
        })
    }

    /// A signing failure: [`SignError::Unavailable`] when the key's token has just
    /// failed (a 503: another host may sign), else internal.
    fn failed(&self, msg: String) -> SignError {
        match self.key.status() {
            Some(s) if !s.available => SignError::Unavailable(msg),
            _ => internal(msg),
        }
    }

    /// An internal error becomes [`SignError::Unavailable`] when the key's token has
    /// just failed; a rejected input stays rejected.
    fn failed_if_token(&self, e: SignError) -> SignError {
        match e {
            SignError::Internal(e) => self.failed(format!("{e:#}")),
            e => e,
        }
    }

    fn read_signature(signed: &Path) -> Result<DetachedSignature, SignError> {
        let file = File::open(signed)
            .map_err(|e| internal(format!("cannot open {}: {e}", signed.display())))?;
        let mut bytes = Vec::new();
        file.take(MAX_SIG_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| internal(format!("cannot read {}: {e}", signed.display())))?;
        if bytes.len() as u64 > MAX_SIG_FILE {
            return Err(internal(format!(
                "{} is too large for a detached signature",
                signed.display()
            )));
        }
        DetachedSignature::from_armor_single(bytes.as_slice())
            .map(|(s, _)| s)
            .map_err(|e| {
                internal(format!(
                    "{} is not an armoured OpenPGP signature: {e}",
                    signed.display()
                ))
            })
    }
}

impl Signer for GpgSigner {
    fn sign(&self, input: &Path, output: &Path, _ctx: &SignContext) -> Result<(), SignError> {
        if self.clearsign {
            return clearsign::sign(&self.key, self.hash, input, output)
                .map_err(|e| self.failed_if_token(e));
        }
        let file = File::open(input)
            .map_err(|e| internal(format!("cannot open {}: {e}", input.display())))?;
        let reader = BufReader::with_capacity(READ_BUF, file);
        let sig = self
            .key
            .sign_detached(self.hash, reader)
            .map_err(|e| self.failed(format!("GPG signing of {} failed: {e}", input.display())))?;
        write_armored(&sig, output)
    }

    fn signs_sha256_state(&self) -> bool {
        !self.clearsign
            && self.hash == HashAlgorithm::Sha256
            && self.key.version() == KeyVersion::V4
    }

    fn sign_sha256_state(
        &self,
        state: &Sha256,
        output: &Path,
        _ctx: &SignContext,
    ) -> Result<(), SignError> {
        if !self.signs_sha256_state() {
            return Err(internal(format!(
                "this GPG key ({:?}, {:?}) cannot sign from a SHA-256 state",
                self.key.version(),
                self.hash
            )));
        }
        let sig = self
            .key
            .sign_sha256_state(Box::new(state.clone()))
            .map_err(|e| self.failed(format!("GPG signing failed: {e}")))?;
        write_armored(&sig, output)
    }

    fn verify(&self, input: &Path, signed: &Path) -> Result<(), SignError> {
        if self.clearsign {
            return clearsign::verify(&self.key, input, signed);
        }
        let sig = Self::read_signature(signed)?.signature;
        if sig.typ() != Some(SignatureType::Binary) {
            return Err(internal(format!(
                "{} is not a binary detached signature ({:?})",
                signed.display(),
                sig.typ()
            )));
        }
        let strong = sig
            .hash_alg()
            .and_then(HashAlgorithm::digest_size)
            .is_some_and(|n| n >= 32);
        if !strong {
            return Err(internal(format!(
                "{} uses a weak or unknown digest ({:?})",
                signed.display(),
                sig.hash_alg()
            )));
        }
        let file = File::open(input)
            .map_err(|e| internal(format!("cannot open {}: {e}", input.display())))?;
        self.key
            .verify(&sig, BufReader::with_capacity(READ_BUF, file))
            .map_err(|e| {
                internal(format!(
                    "the GPG signature {} does not verify for {}: {e}",
                    signed.display(),
                    input.display()
                ))
            })
    }

    fn probe(&self, scratch: &Path) -> Result<(), SignError> {
        let mut data = b"signing-server gpg probe\n".to_vec();
        let mut nonce = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut nonce);
        // Hex: a clear-signing format signs text.
        data.extend_from_slice(hex::encode(nonce).as_bytes());
        let files = crate::probe::Files::new(scratch, "gpg-probe.bin", &data)?;
        let ctx = SignContext {
            filename: "gpg-probe.bin".into(),
            ..Default::default()
        };
        // A detached signature: the byte flipped is the input's. A clear-signed text:
        // a byte of the signed text ("signing-server" after the 49 bytes of header).
        let tamper = if self.clearsign {
            crate::probe::Tamper::OutputAt(52)
        } else {
            crate::probe::Tamper::InputLastByte
        };
        crate::probe::run(
            "GPG",
            &files,
            tamper,
            |i, o| self.sign(i, o, &ctx),
            |i, o| self.verify(i, o),
        )?;
        if self.signs_sha256_state() {
            // The server signs gpg uploads from their SHA-256 state: prove that path too.
            let from_state = scratch.join("gpg-probe-state.bin.asc");
            let _ = std::fs::remove_file(&from_state);
            self.sign_sha256_state(&Sha256::new_with_prefix(&data), &from_state, &ctx)?;
            self.verify(&files.input, &from_state).map_err(|e| {
                internal(format!(
                    "probe: a GPG signature made from the SHA-256 state does not verify: {e}"
                ))
            })?;
        }
        Ok(())
    }

    fn key_id(&self) -> String {
        self.fingerprint.clone()
    }

    fn digest_spec(&self) -> Option<crate::digest_signing::DigestSpec> {
        self.signs_sha256_state()
            .then_some(crate::digest_signing::DigestSpec::Sha256State)
    }

    fn sign_digest(
        &self,
        input: &crate::digest_signing::DigestInput,
        _ctx: &SignContext,
    ) -> Result<Vec<u8>, SignError> {
        digest::sign(self, input)
    }

    fn output(&self) -> crate::Output {
        if self.clearsign {
            crate::Output::File
        } else {
            crate::Output::Detached
        }
    }

    fn key_status(&self) -> crate::KeyStatus {
        match self.key.status() {
            Some(s) => s,
            None => crate::KeyStatus {
                source: "file",
                available: true,
                errors: 0,
                last_error: None,
            },
        }
    }
}
