//! Authenticode: Windows PE images (.exe, .dll; PE32 and PE32+) signed
//! in-process, the way `signtool.exe sign` / `osslsigncode sign` do; MSI
//! packages, cabinets, catalogs, PowerShell scripts and MSIX/APPX packages
//! too, told from the content by [`container`] and signed there with the same
//! key, chain, digest and TSAs ([`msi`], [`cab`], [`cat`], [`script`],
//! [`appx`]).
//!
//! What it does, per PE file:
//! - parses the headers with goblin ([`pe`]), refusing with a precise reason
//!   anything that is not a PE image we can hash unambiguously;
//! - copies the image to the output while hashing it ([`digest`]): the
//!   Authenticode image hash (CheckSum field, certificate-table entry and any
//!   old certificate table excluded; zero padding to 8 bytes) and the PE
//!   CheckSum, in one streaming pass;
//! - builds the PKCS#7 SignedData ([`pkcs7`]) signed with the configured RSA
//!   or ECDSA key, embeds the whole certificate chain from `cert`, optionally
//!   adds an RFC 3161 timestamp ([`crate::timestamp`]), appends it as a
//!   WIN_CERTIFICATE, and patches the certificate-table entry and CheckSum.
//!
//! Config (`[format:NAME]` with `type = authenticode`): `key` (PEM private
//! key, PKCS#8 encrypted or not, or a `pkcs11:` URI: [`crate::SigningKey`]), `cert` (PEM chain, the key's certificate
//! first or anywhere), `digest` (sha256 default, sha384, sha512),
//! `timestamp_urls`, and the extra keys `resign` (`replace`, the default, or
//! `refuse`), `program_name`, `program_url` and `timestamp_timeout` (seconds).
//!
//! Deliberately NOT done: page hashes, nested (dual) signatures, SHA-1,
//! encrypted MSIX/APPX, and any child process.

pub(crate) mod appx;
pub(crate) mod cab;
pub(crate) mod cat;
pub(crate) mod container;
pub(crate) mod digest;
pub(crate) mod msi;
pub(crate) mod pe;
pub(crate) mod pkcs7;
pub mod remote;
pub(crate) mod script;

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use der::Encode;
use rand::RngCore;
use secrecy::SecretString;
use x509_cert::Certificate;

use self::pkcs7::KeyKind;
use crate::signed_data::DigestAlg;
use crate::timestamp::TimestampClient;
use crate::{FormatConfig, KeyStatus, SignContext, SignError, Signer, SigningKey};

/// Largest certificate table we read back when verifying.
const MAX_CERT_TABLE: u64 = 16 << 20;
/// WIN_CERT_REVISION_2_0.
const WIN_CERT_REVISION_2_0: u16 = 0x0200;
/// WIN_CERT_TYPE_PKCS_SIGNED_DATA.
const WIN_CERT_TYPE_PKCS_SIGNED_DATA: u16 = 0x0002;

/// Config keys of this type besides the common ones.
pub const EXTRA_KEYS: &[&str] = &["resign", "program_name", "program_url", "timestamp_timeout"];

fn internal(msg: impl std::fmt::Display) -> SignError {
    SignError::Internal(anyhow!("{msg}"))
}

/// Whether the key file at `cfg.key` is passphrase-protected.
pub fn needs_passphrase(cfg: &FormatConfig) -> Result<bool, SignError> {
    crate::keys::signing::needs_secret(cfg, "Authenticode key")
}

/// Unlocks the key and builds an [`AuthenticodeSigner`].
pub fn open(
    cfg: &FormatConfig,
    passphrase: Option<&SecretString>,
) -> Result<Box<dyn Signer>, SignError> {
    Ok(Box::new(AuthenticodeSigner::open(cfg, passphrase)?))
}

/// What to do with a PE that is already signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resign {
    Replace,
    Refuse,
}

/// Signs PE images with one unlocked key.
pub struct AuthenticodeSigner {
    name: String,
    /// The unlocked private key (a file's, or a token's).
    key: SigningKey,
    kind: KeyKind,
    alg: DigestAlg,
    leaf: Certificate,
    chain: Vec<Certificate>,
    resign: Resign,
    program_name: Option<String>,
    program_url: Option<String>,
    timestamps: Option<TimestampClient>,
    /// SHA-256 of the leaf certificate, hex: the key id.
    fingerprint: String,
    key_path: PathBuf,
}

impl std::fmt::Debug for AuthenticodeSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthenticodeSigner")
            .field("name", &self.name)
            .field("fingerprint", &self.fingerprint)
            .field("alg", &self.alg)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl AuthenticodeSigner {
    /// See [`open`].
    pub fn open(cfg: &FormatConfig, passphrase: Option<&SecretString>) -> Result<Self, SignError> {
        let cfg_err = |m: String| SignError::Config(format!("format {}: {m}", cfg.name));
        let alg = match cfg.digest.as_deref().map(|d| d.trim().to_ascii_lowercase()) {
            None => DigestAlg::Sha256,
            Some(d) => match d.as_str() {
                "sha256" => DigestAlg::Sha256,
                "sha384" => DigestAlg::Sha384,
                "sha512" => DigestAlg::Sha512,
                _ => {
                    return Err(cfg_err(format!(
                    "digest {d:?} is not supported for Authenticode (use sha256, sha384 or sha512)"
                )))
                }
            },
        };
        let mut resign = Resign::Replace;
        let mut program_name = None;
        let mut program_url = None;
        let mut timeout = crate::timestamp::DEFAULT_TIMEOUT;
        for (k, v) in &cfg.extra {
            let v = v.trim();
            match k.as_str() {
                "resign" => {
                    resign = match v {
                        "replace" => Resign::Replace,
                        "refuse" => Resign::Refuse,
                        _ => return Err(cfg_err(format!("resign = {v:?}: use replace or refuse"))),
                    }
                }
                "program_name" => program_name = Some(v.to_string()),
                "program_url" => {
                    if !v.is_ascii() {
                        return Err(cfg_err("program_url must be ASCII".into()));
                    }
                    program_url = Some(v.to_string())
                }
                "timestamp_timeout" => {
                    let secs: u64 = v
                        .parse()
                        .ok()
                        .filter(|s| (1..=600).contains(s))
                        .ok_or_else(|| {
                            cfg_err(format!("timestamp_timeout = {v:?}: seconds, 1 to 600"))
                        })?;
                    timeout = Duration::from_secs(secs);
                }
                _ => {
                    return Err(cfg_err(format!(
                        "unknown setting {k:?} for type authenticode"
                    )))
                }
            }
        }
        let timestamps = if cfg.timestamp_urls.is_empty() {
            None
        } else {
            Some(
                TimestampClient::new(cfg.timestamp_urls.clone(), timeout)
                    .map_err(|e| cfg_err(e.to_string()))?,
            )
        };

        let cert_path = cfg
            .cert
            .as_ref()
            .ok_or_else(|| cfg_err("`cert` (the PEM certificate chain) is required".into()))?;
        let chain_pem = crate::keys::read_bounded(
            cert_path,
            "Authenticode certificate chain",
            crate::keys::MAX_SMALL_FILE,
        )
        .map_err(SignError::Config)?;
        let chain = Certificate::load_pem_chain(&chain_pem).map_err(|e| {
            cfg_err(format!(
                "{}: not a PEM certificate chain: {e}",
                cert_path.display()
            ))
        })?;

        let key_path = cfg.key.display();
        let key = SigningKey::open(cfg, passphrase, "Authenticode key")?;
        let kind = match key.kind() {
            crate::keys::signing::KeyKind::Rsa { bits } => {
                if bits < 2048 {
                    return Err(SignError::Key(format!(
                        "{key_path}: RSA keys need at least 2048 bits"
                    )));
                }
                KeyKind::Rsa
            }
            crate::keys::signing::KeyKind::Ec { .. } => KeyKind::Ecdsa,
        };
        let public = key.public_key_der().to_vec();
        let leaf = chain
            .iter()
            .find(|c| {
                c.tbs_certificate
                    .subject_public_key_info
                    .to_der()
                    .is_ok_and(|d| d == public)
            })
            .cloned()
            .ok_or_else(|| {
                cfg_err(format!(
                    "no certificate in {} matches the key {key_path}",
                    cert_path.display()
                ))
            })?;
        let leaf_der = leaf
            .to_der()
            .map_err(|e| cfg_err(format!("cannot encode the certificate: {e}")))?;
        let fingerprint = hex::encode_upper(DigestAlg::Sha256.hash(&leaf_der));

        // SigningKey::open made the key sign once; the certificate matches its public key.
        Ok(AuthenticodeSigner {
            name: cfg.name.clone(),
            key,
            kind,
            alg,
            leaf,
            chain,
            resign,
            program_name,
            program_url,
            timestamps,
            fingerprint,
            key_path: cfg.key.clone(),
        })
    }

    /// The WIN_CERTIFICATE (header, DER PKCS#7, zero padding to 8 bytes)
    /// for the image hash `digest`.
    fn win_certificate(&self, digest: &[u8], timestamp: bool) -> Result<Vec<u8>, SignError> {
        remote::win_certificate(&self.signed_data(digest, timestamp)?)
    }

    /// The DER PKCS#7 SignedData (timestamped if `timestamp` and TSAs are
    /// configured) for the image hash `digest`.
    fn signed_data(&self, digest: &[u8], timestamp: bool) -> Result<Vec<u8>, SignError> {
        let content = pkcs7::spc_indirect_data(self.alg, digest).map_err(internal)?;
        self.signed_data_der(pkcs7::SPC_INDIRECT_DATA, &content, timestamp)
    }

    fn sign_to(
        &self,
        input: &mut File,
        l: &pe::PeLayout,
        out: &mut File,
        timestamp: bool,
    ) -> Result<(), SignError> {
        check_size(l)?;
        let mut w = BufWriter::with_capacity(64 << 10, &mut *out);
        let copied = digest::copy_and_hash(input, l, self.alg, Some(&mut w))?;
        w.flush()?;
        drop(w);
        let table = self.win_certificate(&copied.digest, timestamp)?;
        let at = remote::Placement {
            table_offset: copied.table_offset,
            cert_dir_offset: l.cert_dir_offset as u64,
            checksum_offset: l.checksum_offset as u64,
        };
        remote::attach(out, at, copied.checksum, &table)
    }

    /// Checks the signature of `signed` against our key: the image hash, the
    /// messageDigest and the signature. Errors are strings for the caller.
    fn check(&self, signed: &Path) -> Result<(), String> {
        let mut f = File::open(signed).map_err(|e| format!("cannot open: {e}"))?;
        // A script is told by its name, which verify does not get: the
        // comment syntax of its signature block tells it instead.
        let syntax = script::syntax_of_signed(&mut f).map_err(|e| e.to_string())?;
        match container::detect(&mut f, syntax, "").map_err(|e| e.to_string())? {
            container::Container::Pe => {}
            other => return self.check_container(other, signed),
        }
        let len = f.metadata().map_err(|e| e.to_string())?.len();
        let l = pe::parse(&mut f, len).map_err(|e| e.to_string())?;
        let (addr, size) = l.existing_signature.ok_or("the file is not signed")?;
        if !(8..=MAX_CERT_TABLE).contains(&size) {
            return Err(format!("certificate table of {size} bytes"));
        }
        let mut table = Vec::new();
        f.seek(SeekFrom::Start(addr)).map_err(|e| e.to_string())?;
        (&mut f)
            .take(size)
            .read_to_end(&mut table)
            .map_err(|e| e.to_string())?;
        let der = table.get(8..).ok_or("short certificate table")?;
        let hdr = table.get(4..8).ok_or("short certificate table")?;
        if hdr != [0x00, 0x02, 0x02, 0x00] {
            return Err("the WIN_CERTIFICATE is not revision 2 PKCS#7".into());
        }
        let parsed = pkcs7::parse_authenticode(der)?;
        let copied =
            digest::copy_and_hash(&mut f, &l, parsed.alg, None).map_err(|e| e.to_string())?;
        if copied.digest != parsed.image_hash {
            return Err("the image hash does not match the file (modified after signing?)".into());
        }
        // One signer, ours, and an RFC 3161 timestamp, if any, that stamps it:
        // the same checks as every other container's.
        self.check_signer(&parsed.signed_data)
    }

    /// Signs `input` into the new file `output`; `timestamp`: whether to
    /// ask the configured TSAs (the probe does not, so that a TSA outage
    /// does not stop the server from starting).
    fn sign_file(
        &self,
        input: &Path,
        output: &Path,
        filename: &str,
        timestamp: bool,
    ) -> Result<(), SignError> {
        let mut f = File::open(input)
            .map_err(|e| internal(format!("cannot open {}: {e}", input.display())))?;
        match container::detect(&mut f, script::syntax_for(filename), filename)? {
            container::Container::Pe => {}
            other => return self.sign_container(other, &mut f, output, timestamp),
        }
        let len = f.metadata()?.len();
        let l = pe::parse(&mut f, len)?;
        if l.existing_signature.is_some() && self.resign == Resign::Refuse {
            return Err(SignError::Rejected(
                "the PE file is already signed (this format is configured with resign = refuse)"
                    .into(),
            ));
        }
        let mut out = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(output)
            .map_err(|e| internal(format!("cannot create {}: {e}", output.display())))?;
        self.sign_to(&mut f, &l, &mut out, timestamp)
    }
}

/// Refuses an image too large to carry a signature (offsets are 32-bit).
fn check_size(l: &pe::PeLayout) -> Result<(), SignError> {
    if l.content_len >= u64::from(u32::MAX) - (1 << 20) {
        return Err(SignError::Rejected(format!(
            "the PE image is {} bytes: too large for a signature (4 GiB limit)",
            l.content_len
        )));
    }
    Ok(())
}

impl Signer for AuthenticodeSigner {
    fn sign(&self, input: &Path, output: &Path, ctx: &SignContext) -> Result<(), SignError> {
        self.sign_file(input, output, &ctx.filename, true)
    }

    fn verify(&self, _input: &Path, signed: &Path) -> Result<(), SignError> {
        self.check(signed).map_err(|e| {
            internal(format!(
                "the Authenticode signature of {} does not verify: {e}",
                signed.display()
            ))
        })
    }

    fn probe(&self, scratch: &Path) -> Result<(), SignError> {
        let mut nonce = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut nonce);
        let pe = pe::minimal_pe32_plus(&nonce);
        let files = crate::probe::Files::new(scratch, "authenticode-probe.exe", &pe)?;
        // Not timestamped: a TSA outage must not stop a start. The byte
        // flipped is in the code section.
        crate::probe::run(
            "Authenticode",
            &files,
            crate::probe::Tamper::OutputAt(0x200),
            |i, o| self.sign_file(i, o, "authenticode-probe.exe", false),
            |i, o| self.verify(i, o),
        )
    }

    fn key_id(&self) -> String {
        self.fingerprint.clone()
    }

    fn digest_spec(&self) -> Option<crate::digest_signing::DigestSpec> {
        Some(remote::spec(self))
    }

    fn sign_digest(
        &self,
        input: &crate::digest_signing::DigestInput,
        _ctx: &SignContext,
    ) -> Result<Vec<u8>, SignError> {
        remote::sign_digest(self, input)
    }

    fn tsa_failures(&self) -> Vec<(String, u64)> {
        self.timestamps
            .as_ref()
            .map(|t| t.failures().counts())
            .unwrap_or_default()
    }

    fn tsa_certificate_expiry(&self) -> Vec<(String, u64)> {
        self.timestamps
            .as_ref()
            .map(|t| t.certificates().expiry())
            .unwrap_or_default()
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
