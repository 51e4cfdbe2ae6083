//! GPG: detached, ASCII-armoured OpenPGP signatures (`FILE.asc`), made
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
//! - no cleartext (`--clearsign`) or inline signatures, no text-mode
//!   signatures, no encryption;
//! - the certificate's other self-signatures (user IDs, third-party
//!   certifications) are not validated; only what selects the signing key.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use pgp::composed::{
    ArmorOptions, Deserializable, DetachedSignature, SignedSecretKey, SignedSecretSubKey,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{
    KeyFlags, SecretKey, SecretSubkey, Signature, SignatureConfig, SignatureType, Subpacket,
    SubpacketData,
};
use pgp::types::{
    Duration, KeyDetails, KeyVersion, Password, S2kParams, SecretParams, SigningKey, StringToKey,
    Tag, Timestamp,
};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::{FormatConfig, SignContext, SignError, Signer};

/// Largest key file we read (a key with many certifications is still far below).
const MAX_KEY_FILE: u64 = 16 << 20;
/// Largest detached signature file we read when verifying.
const MAX_SIG_FILE: u64 = 1 << 20;
/// Read buffer for hashing inputs.
const READ_BUF: usize = 64 << 10;

/// Whether the signing (sub)key in the key file at `cfg.key` is
/// passphrase-protected.
pub fn needs_passphrase(cfg: &FormatConfig) -> Result<bool, SignError> {
    let key = load_key(&cfg.key)?;
    let packet = select_signing_key(&key, &cfg.key)?;
    Ok(packet.secret_params().is_encrypted())
}

/// Parses the key at `cfg.key`, unlocks its signing (sub)key with
/// `passphrase` and returns a [`GpgSigner`].
pub fn open(
    cfg: &FormatConfig,
    passphrase: Option<&SecretString>,
) -> Result<Box<dyn Signer>, SignError> {
    Ok(Box::new(GpgSigner::open(cfg, passphrase)?))
}

/// The digest named by `cfg.digest` (default SHA-256).
fn parse_digest(cfg: &FormatConfig) -> Result<HashAlgorithm, SignError> {
    let Some(name) = cfg.digest.as_deref() else {
        return Ok(HashAlgorithm::Sha256);
    };
    match name.trim().to_ascii_lowercase().as_str() {
        "sha256" => Ok(HashAlgorithm::Sha256),
        "sha384" => Ok(HashAlgorithm::Sha384),
        "sha512" => Ok(HashAlgorithm::Sha512),
        _ => Err(SignError::Config(format!(
            "format {}: digest {name:?} is not supported for gpg signatures \
             (use sha256, sha384 or sha512)",
            cfg.name
        ))),
    }
}

/// Settings a gpg format does not use are errors, not silently ignored.
fn check_unused(cfg: &FormatConfig) -> Result<(), SignError> {
    if cfg.cert.is_some() {
        return Err(SignError::Config(format!(
            "format {}: gpg signatures do not use a certificate (remove `cert`)",
            cfg.name
        )));
    }
    if !cfg.timestamp_urls.is_empty() {
        return Err(SignError::Config(format!(
            "format {}: gpg signatures are not time-stamped (remove `timestamp_urls`)",
            cfg.name
        )));
    }
    if let Some(k) = cfg.extra.keys().next() {
        return Err(SignError::Config(format!(
            "format {}: unknown setting {k:?} for type gpg",
            cfg.name
        )));
    }
    Ok(())
}

/// Reads and parses the transferable secret key at `path` (armoured or binary).
fn load_key(path: &Path) -> Result<SignedSecretKey, SignError> {
    let bad = |what: String| SignError::Key(format!("GPG key {}: {what}", path.display()));
    let bytes = crate::keys::read_bounded(path, "GPG key", MAX_KEY_FILE).map_err(SignError::Key)?;
    let armored = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'-');
    let parsed = if armored {
        SignedSecretKey::from_armor_single(bytes.as_slice()).map(|(k, _)| k)
    } else {
        SignedSecretKey::from_bytes(bytes.as_slice())
    };
    parsed.map_err(|e| {
        bad(format!(
            "not an OpenPGP secret key (expected `gpg --export-secret-keys --armor`): {e}"
        ))
    })
}

/// The one key packet we sign with.
#[derive(Clone)]
enum KeyPacket {
    Primary(SecretKey),
    Sub(SecretSubkey),
}

impl KeyPacket {
    fn secret_params(&self) -> &SecretParams {
        match self {
            KeyPacket::Primary(k) => k.secret_params(),
            KeyPacket::Sub(k) => k.secret_params(),
        }
    }

    /// Decrypts the secret key material in place.
    fn remove_password(&mut self, pw: &Password) -> pgp::errors::Result<()> {
        match self {
            KeyPacket::Primary(k) => k.remove_password(pw),
            KeyPacket::Sub(k) => k.remove_password(pw),
        }
    }

    /// A detached binary signature of everything `data` yields, hashed as
    /// it is read (rpgp's `SignatureConfig::sign` copies the reader into a
    /// `SignatureHasher`).
    fn sign_detached<R: Read>(
        &self,
        hash: HashAlgorithm,
        data: R,
    ) -> pgp::errors::Result<DetachedSignature> {
        // The key is unlocked: the empty password is never used.
        let pw = Password::empty();
        let rng = rand::thread_rng();
        match self {
            KeyPacket::Primary(k) => DetachedSignature::sign_binary_data(rng, k, &pw, hash, data),
            KeyPacket::Sub(k) => DetachedSignature::sign_binary_data(rng, k, &pw, hash, data),
        }
    }

    /// The same signature as [`KeyPacket::sign_detached`] with SHA-256, made
    /// from `state`: SHA-256 after every byte of the data, not finalized.
    fn sign_sha256_state(&self, state: &Sha256) -> pgp::errors::Result<DetachedSignature> {
        match self {
            KeyPacket::Primary(k) => sign_state(k, state),
            KeyPacket::Sub(k) => sign_state(k, state),
        }
    }

    fn version(&self) -> KeyVersion {
        match self {
            KeyPacket::Primary(k) => k.version(),
            KeyPacket::Sub(k) => k.version(),
        }
    }

    /// Checks `sig` over everything `data` yields, hashed as it is read.
    fn verify<R: Read>(&self, sig: &Signature, data: R) -> pgp::errors::Result<()> {
        match self {
            KeyPacket::Primary(k) => sig.verify(k.public_key(), data),
            KeyPacket::Sub(k) => sig.verify(k.public_key(), data),
        }
    }
}

/// A v4 binary detached signature (SHA-256) over the data whose SHA-256
/// state is `state`, with the subpackets rpgp's `sign_binary_data` writes
/// (issuer fingerprint and creation time hashed, issuer key id unhashed).
/// The steps are rpgp's `SignatureHasher::sign` (hash the signature fields
/// and the trailer after the data, sign the digest), started from our state.
fn sign_state(key: &impl SigningKey, state: &Sha256) -> pgp::errors::Result<DetachedSignature> {
    let mut config = SignatureConfig::v4(
        SignatureType::Binary,
        key.algorithm(),
        HashAlgorithm::Sha256,
    );
    config.hashed_subpackets = vec![
        Subpacket::regular(SubpacketData::IssuerFingerprint(key.fingerprint()))?,
        Subpacket::regular(SubpacketData::SignatureCreationTime(Timestamp::now()))?,
    ];
    config.unhashed_subpackets = vec![Subpacket::regular(SubpacketData::IssuerKeyId(
        key.legacy_key_id(),
    ))?];
    let mut hasher: Box<dyn digest::DynDigest + Send> = Box::new(state.clone());
    let len = config.hash_signature_data(&mut hasher)?;
    hasher.update(&config.trailer(len)?);
    let hash = hasher.finalize();
    let signed_hash_value = [
        hash.first().copied().unwrap_or_default(),
        hash.get(1).copied().unwrap_or_default(),
    ];
    // The key is unlocked: the empty password is never used.
    let signature = key.sign(&Password::empty(), HashAlgorithm::Sha256, &hash)?;
    Ok(DetachedSignature::new(Signature::from_config(
        config,
        signed_hash_value,
        signature,
    )?))
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

/// A GnuPG "stub" (secret part offline or on a card): S2K type 101+.
fn is_stub(params: &SecretParams) -> bool {
    match params {
        SecretParams::Plain(_) => false,
        SecretParams::Encrypted(e) => match e.string_to_key_params() {
            S2kParams::Cfb { s2k, .. }
            | S2kParams::MalleableCfb { s2k, .. }
            | S2kParams::Aead { s2k, .. } => matches!(s2k, StringToKey::Private { .. }),
            S2kParams::Unprotected | S2kParams::LegacyCfb { .. } => false,
        },
    }
}

/// The key flags subpacket of a signature, if it has one.
fn explicit_flags(sig: &Signature) -> Option<KeyFlags> {
    sig.config()?
        .hashed_subpackets()
        .find_map(|p| match &p.data {
            SubpacketData::KeyFlags(f) => Some(f.clone()),
            _ => None,
        })
}

fn created_secs(sig: &Signature) -> u32 {
    sig.created().map(Timestamp::as_secs).unwrap_or(0)
}

fn expired(created: Timestamp, validity: Option<Duration>, now: u32) -> bool {
    match validity.map(Duration::as_secs) {
        Some(secs) if secs != 0 => u64::from(created.as_secs()) + u64::from(secs) <= u64::from(now),
        _ => false,
    }
}

/// Whether `sub` is a usable signing subkey of `key`: bound, cross-certified,
/// flagged for signing, not revoked, not expired, and its secret part here.
fn usable_signing_subkey(key: &SignedSecretKey, sub: &SignedSecretSubKey, now: u32) -> bool {
    let primary = key.primary_key.public_key();
    let subkey = sub.key.public_key();
    if !sub.key.algorithm().can_sign() || is_stub(sub.key.secret_params()) {
        return false;
    }
    let verifies = |s: &&Signature| s.verify_subkey_binding(primary, subkey).is_ok();
    let revoked = sub
        .signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::SubkeyRevocation))
        .any(|s| verifies(&s));
    if revoked {
        return false;
    }
    let binding = sub
        .signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding))
        .filter(verifies)
        .max_by_key(|s| created_secs(s));
    let Some(binding) = binding else {
        return false;
    };
    // Signing subkeys must be cross-certified ("back signature"), or gpg
    // refuses their signatures.
    let back_signed = binding
        .embedded_signature()
        .is_some_and(|b| b.verify_primary_key_binding(subkey, primary).is_ok());
    binding.key_flags().sign()
        && back_signed
        && !expired(sub.key.created_at(), binding.key_expiration_time(), now)
}

/// Picks the key gpg would sign with: the newest usable signing subkey,
/// else the primary key.
fn select_signing_key(key: &SignedSecretKey, path: &Path) -> Result<KeyPacket, SignError> {
    let bad = |what: &str| SignError::Key(format!("GPG key {}: {what}", path.display()));
    let now = Timestamp::now().as_secs();
    let primary = &key.primary_key;
    let primary_pub = primary.public_key();

    let revoked = key
        .details
        .revocation_signatures
        .iter()
        .any(|s| s.verify_key(primary_pub).is_ok());
    if revoked {
        return Err(bad("the key is revoked"));
    }

    // The newest valid self-signature carries the primary key's flags and
    // expiry.
    let user_sigs = key.details.users.iter().flat_map(|u| {
        u.signatures.iter().filter(|s| {
            s.verify_certification(primary_pub, Tag::UserId, &u.id)
                .is_ok()
        })
    });
    let direct_sigs = key
        .details
        .direct_signatures
        .iter()
        .filter(|s| s.verify_key(primary_pub).is_ok());
    let self_sig = user_sigs.chain(direct_sigs).max_by_key(|s| created_secs(s));
    let Some(self_sig) = self_sig else {
        return Err(bad("no valid self-signature (damaged key?)"));
    };
    if expired(primary.created_at(), self_sig.key_expiration_time(), now) {
        return Err(bad("the key has expired"));
    }

    let sub = key
        .secret_subkeys
        .iter()
        .filter(|s| usable_signing_subkey(key, s, now))
        .max_by_key(|s| s.key.created_at().as_secs());
    if let Some(sub) = sub {
        return Ok(KeyPacket::Sub(sub.key.clone()));
    }

    let primary_may_sign =
        primary.algorithm().can_sign() && explicit_flags(self_sig).is_none_or(|f| f.sign());
    if !primary_may_sign {
        return Err(bad("neither the primary key nor any subkey may sign"));
    }
    if is_stub(primary.secret_params()) {
        return Err(bad(
            "the primary key's secret part is not in this file (gpg stub) and no signing subkey is",
        ));
    }
    Ok(KeyPacket::Primary(primary.clone()))
}

fn internal(msg: String) -> SignError {
    SignError::Internal(anyhow!(msg))
}

/// Signs files with one unlocked OpenPGP key.
pub struct GpgSigner {
    /// The signing (sub)key, unlocked; zeroized on drop by rpgp.
    key: KeyPacket,
    hash: HashAlgorithm,
    /// Primary key fingerprint, upper-case hex.
    fingerprint: String,
    /// The key file, for messages.
    key_path: PathBuf,
}

impl fmt::Debug for GpgSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpgSigner")
            .field("fingerprint", &self.fingerprint)
            .field("hash", &self.hash)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl GpgSigner {
    /// See [`open`].
    pub fn open(cfg: &FormatConfig, passphrase: Option<&SecretString>) -> Result<Self, SignError> {
        let hash = parse_digest(cfg)?;
        check_unused(cfg)?;
        let path = cfg.key.display();
        let key = load_key(&cfg.key)?;
        let mut packet = select_signing_key(&key, &cfg.key)?;
        let fingerprint = hex::encode_upper(key.primary_key.fingerprint().as_bytes());
        drop(key);

        if packet.secret_params().is_encrypted() {
            let Some(passphrase) = passphrase else {
                return Err(SignError::Key(format!(
                    "the GPG key {path} is passphrase-protected but no passphrase was given"
                )));
            };
            // Zeroized on drop.
            let pw = Password::from(passphrase.expose_secret().as_bytes());
            packet.remove_password(&pw).map_err(|e| {
                // rpgp's error never contains the passphrase.
                SignError::Key(format!(
                    "wrong passphrase for {path} (or unsupported key protection: {e})"
                ))
            })?;
        }

        // With the legacy 16-bit checksum a wrong passphrase may "unlock"
        // into garbage: prove the key matches its public half.
        let check = b"signing-server gpg key self-check";
        let sig = packet
            .sign_detached(hash, check.as_slice())
            .map_err(|e| SignError::Key(format!("the GPG key {path} cannot sign: {e}")))?;
        packet
            .verify(&sig.signature, check.as_slice())
            .map_err(|_| {
                SignError::Key(format!(
                    "wrong passphrase for {path} (the unlocked key does not match its public key)"
                ))
            })?;

        Ok(GpgSigner {
            key: packet,
            hash,
            fingerprint,
            key_path: cfg.key.clone(),
        })
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
        let file = File::open(input)
            .map_err(|e| internal(format!("cannot open {}: {e}", input.display())))?;
        let reader = BufReader::with_capacity(READ_BUF, file);
        let sig = self
            .key
            .sign_detached(self.hash, reader)
            .map_err(|e| internal(format!("GPG signing of {} failed: {e}", input.display())))?;
        write_armored(&sig, output)
    }

    fn signs_sha256_state(&self) -> bool {
        self.hash == HashAlgorithm::Sha256 && self.key.version() == KeyVersion::V4
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
            .sign_sha256_state(state)
            .map_err(|e| internal(format!("GPG signing failed: {e}")))?;
        write_armored(&sig, output)
    }

    fn verify(&self, input: &Path, signed: &Path) -> Result<(), SignError> {
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
        let input = scratch.join("gpg-probe.bin");
        let tampered = scratch.join("gpg-probe-tampered.bin");
        let output = scratch.join("gpg-probe.bin.asc");
        let mut data = b"signing-server gpg probe\n".to_vec();
        let mut nonce = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut nonce);
        data.extend_from_slice(&nonce);
        let write = |p: &Path, d: &[u8]| {
            std::fs::write(p, d)
                .map_err(|e| internal(format!("probe: cannot write {}: {e}", p.display())))
        };
        write(&input, &data)?;
        match std::fs::remove_file(&output) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(internal(format!(
                    "probe: cannot remove {}: {e}",
                    output.display()
                )))
            }
            _ => {}
        }
        let ctx = SignContext {
            filename: "gpg-probe.bin".into(),
        };
        self.sign(&input, &output, &ctx)?;
        self.verify(&input, &output)
            .map_err(|e| internal(format!("probe: our own GPG signature does not verify: {e}")))?;
        if self.signs_sha256_state() {
            // The server signs gpg uploads from their SHA-256 state: prove that path too.
            let from_state = scratch.join("gpg-probe-state.bin.asc");
            let _ = std::fs::remove_file(&from_state);
            self.sign_sha256_state(&Sha256::new_with_prefix(&data), &from_state, &ctx)?;
            self.verify(&input, &from_state).map_err(|e| {
                internal(format!(
                    "probe: a GPG signature made from the SHA-256 state does not verify: {e}"
                ))
            })?;
        }
        if let Some(b) = data.last_mut() {
            *b ^= 0x01;
        }
        write(&tampered, &data)?;
        match self.verify(&tampered, &output) {
            Ok(()) => Err(internal(
                "probe: a GPG signature verified over a modified file".into(),
            )),
            Err(_) => Ok(()),
        }
    }

    fn key_id(&self) -> String {
        self.fingerprint.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};
    use std::process::Command;

    use crate::test_support::{certs, passphrase};

    fn cfg(dir: &str, digest: Option<&str>) -> FormatConfig {
        FormatConfig {
            name: "gpg".into(),
            kind: "gpg".into(),
            key: certs().join(dir).join("secret.asc"),
            pkcs11_module: None,
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
}
