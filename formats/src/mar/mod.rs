//! MAR: Mozilla ARchive update files, signed in-process with RSA PKCS#1 v1.5
//! (algorithm id 1: SHA-1 with a 2048-bit key; id 2: SHA-384 with a
//! 4096-bit key), as Firefox's updater and Mozilla's `mar` tool check them.
//!
//! What it does:
//! - config: `digest = sha384` (the default: what current Firefox updates
//!   use) or `sha1` (legacy); the key's size must match (2048 bits for sha1,
//!   4096 for sha384), else the format is refused at start-up;
//!   `resign = replace` (default) or `refuse` for inputs that already carry
//!   signatures;
//! - the key: an RSA private key in PEM, normally encrypted PKCS#8
//!   (`-----BEGIN ENCRYPTED PRIVATE KEY-----`), unlocked ONCE in [`open`]
//!   with openssl and checked (`RSA_check_key`);
//! - signing: [`parse`] reads and bounds the layout, [`sign`] writes the
//!   output with exactly one signature block (ours), existing signatures
//!   dropped, offsets shifted, in one streaming pass that also hashes; the
//!   signature over the digest is then written in place and checked against
//!   the public key before the output is accepted;
//! - [`Signer::verify`] checks a signed MAR's signature(s) with our public
//!   key, streaming, as `mar -v FILE -k KEY` does.
//!
//! Deliberately NOT done:
//! - no `signmar`/`mar` subprocess, no NSS database: keys come from PEM;
//! - no multiple signatures per file (Mozilla ships one per MAR);
//! - entry contents are copied, never decompressed or inspected;
//! - [`Signer::verify`] checks the signature only, not that the signed file's
//!   entries equal the input's (the signing path cannot change them).

pub mod digest;
pub(crate) mod parse;
mod sign;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use openssl::hash::{Hasher, MessageDigest};
use openssl::md::Md;
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::Padding;
use secrecy::SecretString;
use sha2::Digest as _;

use crate::keys::signing::KeyKind;
use crate::{FormatConfig, Hash, KeyStatus, SignContext, SignError, Signer, SigningKey};

/// Input read buffer.
const READ_BUF: usize = 64 << 10;

/// The MAR signature algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Id 1: RSA PKCS#1 v1.5 with SHA-1, 2048-bit key.
    Sha1,
    /// Id 2: RSA PKCS#1 v1.5 with SHA-384, 4096-bit key.
    Sha384,
}

impl Algorithm {
    fn id(self) -> u32 {
        match self {
            Algorithm::Sha1 => 1,
            Algorithm::Sha384 => 2,
        }
    }
    fn key_bits(self) -> u32 {
        match self {
            Algorithm::Sha1 => 2048,
            Algorithm::Sha384 => 4096,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha384 => "sha384",
        }
    }
    fn message_digest(self) -> MessageDigest {
        match self {
            Algorithm::Sha1 => MessageDigest::sha1(),
            Algorithm::Sha384 => MessageDigest::sha384(),
        }
    }
    fn md(self) -> &'static openssl::md::MdRef {
        match self {
            Algorithm::Sha1 => Md::sha1(),
            Algorithm::Sha384 => Md::sha384(),
        }
    }
    fn hash(self) -> Hash {
        match self {
            Algorithm::Sha1 => Hash::Sha1,
            Algorithm::Sha384 => Hash::Sha384,
        }
    }
}

/// What to do with an input that already carries signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resign {
    /// Drop them; the output carries only ours.
    Replace,
    /// Reject the input (HTTP 422).
    Refuse,
}

fn internal(msg: String) -> SignError {
    SignError::Internal(anyhow!(msg))
}

fn parse_algorithm(cfg: &FormatConfig) -> Result<Algorithm, SignError> {
    match cfg
        .digest
        .as_deref()
        .map(|d| d.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("sha384") => Ok(Algorithm::Sha384),
        Some("sha1") => Ok(Algorithm::Sha1),
        Some(other) => Err(SignError::Config(format!(
            "format {}: digest {other:?} is not a MAR signature algorithm (use sha384 or sha1)",
            cfg.name
        ))),
    }
}

fn parse_resign(cfg: &FormatConfig) -> Result<Resign, SignError> {
    match cfg
        .extra
        .get("resign")
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("replace") => Ok(Resign::Replace),
        Some("refuse") => Ok(Resign::Refuse),
        Some(other) => Err(SignError::Config(format!(
            "format {}: resign = {other:?} (use replace or refuse)",
            cfg.name
        ))),
    }
}

/// Settings a mar format does not use are errors, not silently ignored.
fn check_unused(cfg: &FormatConfig) -> Result<(), SignError> {
    if cfg.cert.is_some() {
        return Err(SignError::Config(format!(
            "format {}: MAR signatures do not use a certificate (remove `cert`)",
            cfg.name
        )));
    }
    if !cfg.timestamp_urls.is_empty() {
        return Err(SignError::Config(format!(
            "format {}: MAR signatures are not time-stamped (remove `timestamp_urls`)",
            cfg.name
        )));
    }
    if let Some(k) = cfg.extra.keys().find(|k| k.as_str() != "resign") {
        return Err(SignError::Config(format!(
            "format {}: unknown setting {k:?} for type mar",
            cfg.name
        )));
    }
    Ok(())
}

/// Whether the PEM key at `cfg.key` is encrypted (PKCS#8 or legacy OpenSSL).
pub fn needs_passphrase(cfg: &FormatConfig) -> Result<bool, SignError> {
    crate::keys::signing::needs_secret(cfg, "MAR key")
}

/// Unlocks the RSA key at `cfg.key`, checks it suits the digest and returns
/// a [`MarSigner`].
pub fn open(
    cfg: &FormatConfig,
    passphrase: Option<&SecretString>,
) -> Result<Box<dyn Signer>, SignError> {
    Ok(Box::new(MarSigner::open(cfg, passphrase)?))
}

/// Signs MAR files with one unlocked RSA key.
pub struct MarSigner {
    /// The private key (a file's, or a token's).
    key: SigningKey,
    algorithm: Algorithm,
    resign: Resign,
    /// Signature length in bytes (the modulus size).
    signature_len: u32,
    /// SHA-256 of the public key's SubjectPublicKeyInfo DER, hex.
    key_id: String,
    key_path: PathBuf,
}

impl fmt::Debug for MarSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MarSigner")
            .field("key_id", &self.key_id)
            .field("algorithm", &self.algorithm)
            .field("resign", &self.resign)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl MarSigner {
    /// See [`open`].
    pub fn open(cfg: &FormatConfig, passphrase: Option<&SecretString>) -> Result<Self, SignError> {
        let algorithm = parse_algorithm(cfg)?;
        let resign = parse_resign(cfg)?;
        check_unused(cfg)?;
        let path = cfg.key.display();
        let key = SigningKey::open(cfg, passphrase, "MAR key")?;
        if let Some(rsa) = key.private_pkey().and_then(|k| k.rsa().ok()) {
            if !rsa.check_key().unwrap_or(false) {
                return Err(SignError::Key(format!(
                    "the MAR key {path} fails the RSA consistency check"
                )));
            }
        }
        let KeyKind::Rsa { bits } = key.kind() else {
            return Err(SignError::Key(format!(
                "the MAR key {path} is not an RSA key"
            )));
        };
        if bits != algorithm.key_bits() {
            return Err(SignError::Config(format!(
                "format {}: digest {} (MAR algorithm id {}) needs a {}-bit RSA key, but {path} is {bits}-bit \
                 (use digest = {} for this key, or another key)",
                cfg.name,
                algorithm.name(),
                algorithm.id(),
                algorithm.key_bits(),
                if bits == 2048 { "sha1" } else { "sha384" },
            )));
        }
        let der = key.public_key_der();
        let signature_len = u32::try_from(key.public_key().size())
            .map_err(|_| internal(format!("the key {path} has an absurd size")))?;
        Ok(MarSigner {
            key_id: hex::encode(sha2::Sha256::digest(der)),
            key,
            algorithm,
            resign,
            signature_len,
            key_path: cfg.key.clone(),
        })
    }

    fn hasher(&self) -> Result<Hasher, SignError> {
        Hasher::new(self.algorithm.message_digest()).map_err(|e| internal(format!("digest: {e}")))
    }

    /// RSA PKCS#1 v1.5 over a precomputed digest (its DigestInfo).
    fn sign_digest(&self, digest: &[u8]) -> Result<Vec<u8>, SignError> {
        self.key.sign_digest(self.algorithm.hash(), digest)
    }

    fn verify_digest(&self, digest: &[u8], signature: &[u8]) -> bool {
        let run = || -> Result<bool, openssl::error::ErrorStack> {
            let mut ctx = PkeyCtx::new(self.key.public_key())?;
            ctx.verify_init()?;
            ctx.set_rsa_padding(Padding::PKCS1)?;
            ctx.set_signature_md(self.algorithm.md())?;
            ctx.verify(digest, signature)
        };
        run().unwrap_or(false)
    }

    fn sign_file(&self, input: &Path, output: &Path) -> Result<(), SignError> {
        let mut reader = BufReader::with_capacity(
            READ_BUF,
            File::open(input)
                .map_err(|e| internal(format!("cannot open {}: {e}", input.display())))?,
        );
        let layout = parse::parse(&mut reader)?;
        if let Some(block) = &layout.signature_block {
            if !block.signatures.is_empty() && self.resign == Resign::Refuse {
                return Err(SignError::Rejected(format!(
                    "the MAR is already signed ({} signature(s)) and this format is configured to refuse re-signing",
                    block.signatures.len()
                )));
            }
        }
        let plan = sign::plan(&layout, self.algorithm.id(), self.signature_len)?;

        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(output)
            .map_err(|e| internal(format!("cannot create {}: {e}", output.display())))?;
        let mut out = BufWriter::with_capacity(READ_BUF, file);
        let mut hasher = self.hasher()?;
        let mut update = |b: &[u8]| {
            hasher
                .update(b)
                .map_err(|e| internal(format!("digest: {e}")))
        };
        sign::write_signed(&mut reader, &layout, &plan, &mut out, &mut update)?;
        let digest = hasher
            .finish()
            .map_err(|e| internal(format!("digest: {e}")))?;

        let signature = self.sign_digest(&digest)?;
        // A faulty RSA computation must never leave the building.
        if signature.len() != plan.signature_len as usize
            || !self.verify_digest(&digest, &signature)
        {
            return Err(internal(
                "the RSA signature just made does not verify".into(),
            ));
        }
        let mut file = sign::written_file(out, &plan)?;
        file.seek(SeekFrom::Start(plan.signature_offset))?;
        file.write_all(&signature)?;
        file.flush()?;
        Ok(())
    }
}

impl Signer for MarSigner {
    fn sign(&self, input: &Path, output: &Path, _ctx: &SignContext) -> Result<(), SignError> {
        self.sign_file(input, output)
    }

    fn verify(&self, _input: &Path, signed: &Path) -> Result<(), SignError> {
        let mut reader = BufReader::with_capacity(
            READ_BUF,
            File::open(signed)
                .map_err(|e| internal(format!("cannot open {}: {e}", signed.display())))?,
        );
        let layout = parse::parse(&mut reader)?;
        let sigs = layout
            .signature_block
            .as_ref()
            .map(|b| b.signatures.clone())
            .unwrap_or_default();
        if sigs.is_empty() {
            return Err(SignError::Rejected("the MAR carries no signature".into()));
        }
        let mut hasher = self.hasher()?;
        let mut update = |b: &[u8]| {
            hasher
                .update(b)
                .map_err(|e| internal(format!("digest: {e}")))
        };
        sign::hash_signed_data(&mut reader, &layout, &mut update)?;
        let digest = hasher
            .finish()
            .map_err(|e| internal(format!("digest: {e}")))?;
        // As `mar -v`: every signature must verify with our key.
        for (i, s) in sigs.iter().enumerate() {
            if s.algorithm != self.algorithm.id() {
                return Err(SignError::Rejected(format!(
                    "signature {i} has algorithm id {}, expected {}",
                    s.algorithm,
                    self.algorithm.id()
                )));
            }
            let mut bytes = vec![0u8; s.len as usize];
            reader.seek(SeekFrom::Start(s.offset))?;
            reader.read_exact(&mut bytes)?;
            if !self.verify_digest(&digest, &bytes) {
                return Err(SignError::Rejected(format!(
                    "MAR signature {i} does not verify with key {}",
                    self.key_id
                )));
            }
        }
        Ok(())
    }

    fn probe(&self, scratch: &Path) -> Result<(), SignError> {
        let mut nonce = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut nonce);
        let mar = parse::build_unsigned(
            &[
                ("probe.txt", b"signing-server MAR probe\n"),
                ("nonce", &nonce),
            ],
            Some(("probe-channel", "1.0")),
        );
        let files = crate::probe::Files::new(scratch, "mar-probe.mar", &mar)?;
        let ctx = SignContext {
            filename: "mar-probe.mar".into(),
            ..Default::default()
        };
        // The byte flipped: in the last entry's content, before the index.
        crate::probe::run(
            "MAR",
            &files,
            crate::probe::Tamper::OutputFromEnd(60),
            |i, o| self.sign(i, o, &ctx),
            |i, o| self.verify(i, o),
        )
    }

    fn key_id(&self) -> String {
        self.key_id.clone()
    }

    fn digest_spec(&self) -> Option<crate::digest_signing::DigestSpec> {
        Some(digest::spec(self))
    }

    fn sign_digest(
        &self,
        input: &crate::digest_signing::DigestInput,
        _ctx: &SignContext,
    ) -> Result<Vec<u8>, SignError> {
        digest::sign_digest(self, input)
    }

    fn public_key_der(&self) -> Option<Vec<u8>> {
        Some(self.key.public_key_der().to_vec())
    }

    fn log_key_id(&self) -> String {
        crate::keys::signing::spki_sha256(self.key.public_key_der())
    }

    fn key_status(&self) -> KeyStatus {
        self.key.status()
    }
}

#[cfg(test)]
mod tests;
