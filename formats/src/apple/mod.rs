//! Apple code signatures (type `apple`; old clients say `macapp` and `dmg`),
//! made in-process on Linux with the `apple-codesign` crate as a library.
//!
//! What it does:
//! - signs a thin or universal Mach-O (executable, dylib, bundle), a `.dmg`
//!   image, or a `.tar.gz` holding one `.app` bundle (unpacked with strict
//!   checks into a private scratch directory, signed inside out by
//!   apple-codesign — nested code first, then the bundle — and repacked as
//!   `.tar.gz` with the same paths, see [`tarball`]);
//! - with a Developer ID-like key + certificate chain (`key` = encrypted
//!   PKCS#8 PEM, unlocked ONCE at start-up with openssl, or a `pkcs11:` token
//!   key; either way apple-codesign gets it as an external signer, [`key`];
//!   `cert` = PEM chain, leaf first), the hardened runtime (`hardened_runtime = true`) and the
//!   main executable's entitlements (`entitlements = PLIST`) from the config;
//! - optionally time-stamps through `timestamp_urls` (RFC 3161), trying the
//!   authorities in order with the shared [`crate::timestamp::failover`]: a
//!   failure of the time-stamp request moves on to the next one and is
//!   counted ([`Signer::tsa_failures`]); any other error (disk, a bug) ends
//!   the signing at once;
//! - CHECKS every output before returning it ([`check`]): each Mach-O (and
//!   every Mach-O of a bundle, every slice of a universal binary) and each DMG
//!   must carry a CMS signature (never ad-hoc) whose signer certificate is OUR
//!   leaf, whose signature verifies, whose message digest is that of the code
//!   directory, and whose code directory hashes match the bytes. Anything else
//!   is [`SignError::Internal`]: apple-codesign's quiet fallbacks (an ad-hoc
//!   signature when it could not use the key) never become a 200.
//!
//! Deliberately NOT done:
//! - no notarization or stapling (needs Apple's servers), no `.pkg`/XAR, no zip;
//! - no `codesign`/`rcodesign` child process;
//! - Mach-O files are held in memory while signed (apple-codesign's API takes
//!   a byte slice, and holds about three copies): `max_code_file_size`
//!   bounds every file of a bundle and a Mach-O uploaded alone
//!   ([`tarball::DEFAULT_MAX_CODE_FILE`] by default), so one job's memory is
//!   about three times that;
//! - the certificate chain is not validated against Apple's roots: this is
//!   the operator's choice of certificate.

pub mod check;
mod key;
mod log;
pub mod paths;
pub mod tarball;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::anyhow;
use apple_codesign::{
    AppleCodesignError, CodeSignatureFlags, SettingsScope, SigningSettings, UnifiedSigner,
};
use cryptographic_message_syntax::CmsError;
use secrecy::SecretString;
use x509_certificate::CapturedX509Certificate;

use self::key::AppleKey;
use crate::scratch::Reservation;
use crate::timestamp::{self, Attempt, TimestampError, TsaFailures};
use crate::{FormatConfig, KeyStatus, SignContext, SignError, Signer, SigningKey};

pub use self::log::{is_progress_message, LOG_TARGET};

/// The settings of a `[format:NAME]` section of type `apple` besides the common ones.
pub const EXTRA_KEYS: &[&str] = &[
    "hardened_runtime",
    "entitlements",
    "max_unpacked_size",
    "max_code_file_size",
];

/// Whether the key file at `cfg.key` is encrypted (PEM `ENCRYPTED PRIVATE KEY`
/// or a legacy `Proc-Type: 4,ENCRYPTED` PEM).
pub fn needs_passphrase(cfg: &FormatConfig) -> Result<bool, SignError> {
    crate::keys::signing::needs_secret(cfg, "Apple signing key")
}

/// Unlocks the key at `cfg.key` with `passphrase`, loads the chain at
/// `cfg.cert` and returns an [`AppleSigner`].
pub fn open(
    cfg: &FormatConfig,
    passphrase: Option<&SecretString>,
) -> Result<Box<dyn Signer>, SignError> {
    Ok(Box::new(AppleSigner::open(cfg, passphrase)?))
}

/// What an input file is, from its first and last bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// A thin or universal Mach-O.
    MachO,
    /// A UDIF disk image (`koly` trailer).
    Dmg,
    /// A gzip stream: must be a tar holding one `.app` bundle.
    TarGz,
}

/// The message for inputs that are none of the supported kinds.
pub const NOT_SUPPORTED: &str = "not a Mach-O, .dmg or .tar.gz .app bundle";

/// Detects the kind of `path` from magic numbers (never from its name).
pub fn detect(path: &Path) -> Result<InputKind, SignError> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut head = [0u8; 8];
    let n = read_up_to(&mut f, &mut head)?;
    let head = head.get(..n).unwrap_or_default();
    if let Some(magic) = head.get(..4) {
        match magic {
            // MH_MAGIC(_64) in either byte order.
            [0xfe, 0xed, 0xfa, 0xce | 0xcf] | [0xce | 0xcf, 0xfa, 0xed, 0xfe] => {
                return Ok(InputKind::MachO)
            }
            // FAT_MAGIC(_64); FAT_MAGIC is also a Java class file's magic:
            // a fat header has a handful of architectures where a class file
            // has its version (45 and above).
            [0xca, 0xfe, 0xba, 0xbe | 0xbf] => {
                let narch = head
                    .get(4..8)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .map(u32::from_be_bytes);
                if matches!(narch, Some(1..=32)) {
                    return Ok(InputKind::MachO);
                }
            }
            _ => {}
        }
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(InputKind::TarGz);
    }
    // UDIF: a 512-byte trailer starting with "koly".
    if len >= 512 {
        f.seek(SeekFrom::Start(len - 512))?;
        let mut koly = [0u8; 4];
        if read_up_to(&mut f, &mut koly)? == 4 && &koly == b"koly" {
            return Ok(InputKind::Dmg);
        }
    }
    Err(SignError::Rejected(NOT_SUPPORTED.to_string()))
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let got = f.read(buf.get_mut(n..).unwrap_or_default())?;
        if got == 0 {
            break;
        }
        n += got;
    }
    Ok(n)
}

/// An unlocked Apple signing identity plus the format's settings.
pub struct AppleSigner {
    name: String,
    key: AppleKey,
    /// Our leaf certificate: every signature we return must name it.
    cert: CapturedX509Certificate,
    /// The rest of the chain (issuers), embedded in each signature.
    chain: Vec<CapturedX509Certificate>,
    hardened_runtime: bool,
    /// Entitlements plist (XML), already parsed once at start-up.
    entitlements: Option<String>,
    timestamp_urls: Vec<String>,
    /// Bounds on what an `.app` tarball may unpack to.
    unpack_limits: tarball::Limits,
    /// Failed requests per time-stamping authority, for the server's metrics.
    tsa_failures: TsaFailures,
}

impl AppleSigner {
    /// Unlocks the key, loads the chain and validates the settings.
    pub fn open(
        cfg: &FormatConfig,
        passphrase: Option<&SecretString>,
    ) -> Result<AppleSigner, SignError> {
        let name = cfg.name.clone();
        let config = |m: String| SignError::Config(format!("format {name}: {m}"));
        match cfg.digest.as_deref().map(|d| d.trim().to_ascii_lowercase()) {
            None => {}
            Some(d) if d == "sha256" => {}
            Some(d) => {
                return Err(config(format!(
                    "digest {d:?} is not supported for Apple signatures (sha256 only)"
                )))
            }
        }
        let hardened_runtime = match cfg
            .extra
            .get("hardened_runtime")
            .map(|v| v.trim().to_ascii_lowercase())
        {
            None => false,
            Some(v) if matches!(v.as_str(), "true" | "yes" | "1" | "on") => true,
            Some(v) if matches!(v.as_str(), "false" | "no" | "0" | "off") => false,
            Some(v) => {
                return Err(config(format!(
                    "hardened_runtime = {v:?}: expected true or false"
                )))
            }
        };
        let mut unpack_limits = tarball::Limits::default();
        if let Some(v) = cfg.extra.get("max_unpacked_size") {
            unpack_limits.max_bytes = v.trim().parse().map_err(|_| {
                config(format!(
                    "max_unpacked_size = {v:?}: expected a number of bytes"
                ))
            })?;
        }
        if let Some(v) = cfg.extra.get("max_code_file_size") {
            unpack_limits.max_code_file = v.trim().parse().map_err(|_| {
                config(format!(
                    "max_code_file_size = {v:?}: expected a number of bytes"
                ))
            })?;
        }
        let entitlements = match cfg.extra.get("entitlements") {
            None => None,
            Some(p) => {
                let bytes = crate::keys::read_bounded(
                    Path::new(p.trim()),
                    "entitlements",
                    crate::keys::MAX_SMALL_FILE,
                )
                .map_err(config)?;
                let xml = std::str::from_utf8(&bytes)
                    .map_err(|_| config(format!("entitlements {p}: not UTF-8 XML")))?
                    .to_string();
                // Parse once now, so a bad plist fails at start-up, not per request.
                SigningSettings::default()
                    .set_entitlements_xml(SettingsScope::Main, &xml)
                    .map_err(|e| config(format!("entitlements {p}: not an XML plist: {e}")))?;
                Some(xml)
            }
        };
        for url in &cfg.timestamp_urls {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(config(format!(
                    "timestamp URL {url:?} must be http:// or https://"
                )));
            }
        }

        let cert_path = cfg.cert.as_ref().ok_or_else(|| {
            config("`cert` (PEM certificate chain, leaf first) is required".into())
        })?;
        let cert_pem =
            crate::keys::read_bounded(cert_path, "certificate", crate::keys::MAX_SMALL_FILE)
                .map_err(config)?;
        let mut certs = CapturedX509Certificate::from_pem_multiple(&cert_pem)
            .map_err(|e| {
                config(format!(
                    "certificate {}: not PEM certificates: {e}",
                    cert_path.display()
                ))
            })?
            .into_iter();
        let cert = certs.next().ok_or_else(|| {
            config(format!(
                "certificate {}: no certificate",
                cert_path.display()
            ))
        })?;
        let chain: Vec<_> = certs.collect();

        let key = SigningKey::open(cfg, passphrase, "Apple signing key")?;
        // The key must belong to the leaf certificate.
        let ossl_cert = openssl::x509::X509::from_pem(&cert_pem)
            .map_err(|e| config(format!("certificate {}: {e}", cert_path.display())))?;
        let cert_pub = ossl_cert
            .public_key()
            .map_err(|e| config(format!("certificate {}: {e}", cert_path.display())))?;
        if !cert_pub.public_eq(key.public_key()) {
            return Err(config(format!(
                "key {} does not belong to the certificate {}",
                cfg.key.display(),
                cert_path.display()
            )));
        }
        let key = AppleKey::new(key, cert.public_key_data())
            .map_err(|m| SignError::Key(format!("Apple signing key {}: {m}", cfg.key.display())))?;
        Ok(AppleSigner {
            name,
            key,
            cert,
            chain,
            hardened_runtime,
            entitlements,
            timestamp_urls: cfg.timestamp_urls.clone(),
            unpack_limits,
            tsa_failures: TsaFailures::default(),
        })
    }

    /// Signing settings for one job, with the time-stamp authority `tsa`.
    fn settings(&self, tsa: Option<&str>) -> Result<SigningSettings<'_>, SignError> {
        let mut s = SigningSettings::default();
        s.set_signing_key(&self.key, self.cert.clone());
        for c in &self.chain {
            s.chain_certificate(c.clone());
        }
        s.set_team_id_from_signing_certificate();
        if self.hardened_runtime {
            // The flag for the main scope, and "for notarization" so apple-codesign
            // also sets it on every nested Mach-O of a bundle (it has no other
            // effect in the library: its notarization checks are CLI-only).
            s.add_code_signature_flags(SettingsScope::Main, CodeSignatureFlags::RUNTIME);
            s.set_for_notarization(true);
        }
        if let Some(xml) = &self.entitlements {
            s.set_entitlements_xml(SettingsScope::Main, xml)
                .map_err(|e| SignError::Internal(anyhow!("entitlements: {e}")))?;
        }
        if let Some(url) = tsa {
            s.set_time_stamp_url(url).map_err(|e| {
                SignError::Config(format!("format {}: timestamp URL {url}: {e}", self.name))
            })?;
        }
        Ok(s)
    }

    /// Runs `f` with signing settings, trying each time-stamp authority in
    /// order (or none if none is configured) until one attempt succeeds; only
    /// a TSA failure ([`Attempt::Tsa`]) moves on to the next authority.
    fn with_failover(
        &self,
        mut f: impl FnMut(&UnifiedSigner<'_>) -> Result<(), Attempt<SignError>>,
    ) -> Result<(), SignError> {
        let result = if self.timestamp_urls.is_empty() {
            f(&UnifiedSigner::new(self.settings(None)?))
        } else {
            timestamp::failover(&self.timestamp_urls, &self.tsa_failures, |url| {
                let settings = self.settings(Some(url)).map_err(Attempt::Other)?;
                f(&UnifiedSigner::new(settings))
            })
        };
        result.map_err(|e| match e {
            Attempt::Tsa(e) => SignError::Internal(anyhow::Error::new(e)),
            Attempt::Other(e) => e,
        })
    }

    fn expectations(&self) -> check::Expect<'_> {
        check::Expect {
            cert: &self.cert,
            hardened_runtime: self.hardened_runtime,
            timestamped: !self.timestamp_urls.is_empty(),
        }
    }

    fn sign_macho(&self, input: &Path, output: &Path, ctx: &SignContext) -> Result<(), SignError> {
        let size = std::fs::metadata(input)?.len();
        let most = self.unpack_limits.max_code_file;
        if size > most {
            return Err(SignError::Rejected(format!(
                "a Mach-O of {size} bytes, more than {most} (the format's max_code_file_size: \
                 signing holds it in memory)"
            )));
        }
        let data = std::fs::read(input)?;
        check::precheck_macho(&data)?;
        drop(data);
        // apple-codesign names an unsigned binary after its file: give it the
        // client's file name, not our spool name.
        let scratch = scratch_dir(output)?;
        let named = scratch
            .path()
            .join(identifier_from(&ctx.filename, "binary"));
        std::os::unix::fs::symlink(std::fs::canonicalize(input)?, &named)?;
        self.with_failover(|signer| {
            codesign("signing the Mach-O", || {
                signer.sign_macho(&named, output).map_err(Box::new)
            })
        })?;
        let signed = std::fs::read(output)?;
        check::check_macho(&signed, &self.expectations())
            .map_err(|e| SignError::Internal(e.context("checking our own signature")))
    }

    fn sign_dmg(&self, input: &Path, output: &Path, ctx: &SignContext) -> Result<(), SignError> {
        check::precheck_dmg(input)?;
        let scratch = scratch_dir(output)?;
        let named = scratch
            .path()
            .join(format!("{}.dmg", identifier_from(&ctx.filename, "image")));
        std::os::unix::fs::symlink(std::fs::canonicalize(input)?, &named)?;
        self.with_failover(|signer| {
            codesign("signing the DMG", || {
                signer.sign_dmg(&named, output).map_err(Box::new)
            })
        })?;
        check::check_dmg(output, &self.expectations())
            .map_err(|e| SignError::Internal(e.context("checking our own signature")))
    }

    fn sign_tarball(
        &self,
        input: &Path,
        output: &Path,
        ctx: &SignContext,
    ) -> Result<(), SignError> {
        let scratch = scratch_dir(output)?;
        let unpacked = scratch.path().join("in");
        let signed = scratch.path().join("out");
        std::fs::create_dir(&unpacked)?;
        std::fs::create_dir(&signed)?;
        // Declared after `scratch`, so dropped (given back) after the files went.
        let mut held = Reservation::new(ctx.scratch.clone());
        let app = tarball::unpack_within(input, &unpacked, &self.unpack_limits, &mut held)?;
        // The signed copy takes as much again.
        held.take(held.held())?;
        let src = unpacked.join(&app);
        tarball::check_bundle_input(&src)?;
        let dst = signed.join(&app);
        self.with_failover(|signer| {
            if dst.exists() {
                std::fs::remove_dir_all(&dst).map_err(|e| Attempt::Other(e.into()))?;
            }
            codesign(&format!("signing the bundle {app}"), || {
                signer.sign_bundle(&src, &dst).map_err(Box::new)
            })
        })?;
        // apple-codesign copies files, not empty directories: restore them.
        tarball::copy_dir_tree(&src, &dst)?;
        check::check_bundle(&dst, &self.expectations())
            .map_err(|e| SignError::Internal(e.context("checking our own signature")))?;
        tarball::pack(&signed, &app, output)
            .map_err(|e| SignError::Internal(e.context("repacking the bundle")))
    }
}

/// Runs one apple-codesign call under [`check::guard`]. A failed time-stamp
/// request (apple-codesign asks the TSA itself, through
/// cryptographic-message-syntax) is [`Attempt::Tsa`], so the next authority
/// is tried; anything else (I/O, a parse error, a panic) is not.
fn codesign(
    what: &str,
    call: impl FnOnce() -> Result<(), Box<AppleCodesignError>>,
) -> Result<(), Attempt<SignError>> {
    let mut tsa_error = None;
    check::guard("apple-codesign", || {
        call().map_err(|e| {
            if matches!(*e, AppleCodesignError::Cms(CmsError::TimeStampProtocol(_))) {
                tsa_error = Some(e.to_string());
            }
            anyhow!("{what}: {e}")
        })
    })
    .map_err(|e| match tsa_error.take() {
        Some(tsa) => Attempt::Tsa(TimestampError::Library(tsa)),
        None => Attempt::Other(SignError::Internal(e)),
    })
}

/// A private scratch directory beside `output` (same file system, 0700).
fn scratch_dir(output: &Path) -> Result<tempfile::TempDir, SignError> {
    let parent = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok(tempfile::Builder::new()
        .prefix(".apple-")
        .tempdir_in(parent)?)
}

/// A code identifier from the client's file name: `[A-Za-z0-9._-]` only,
/// without the extension of a disk image.
fn identifier_from(filename: &str, fallback: &str) -> String {
    let base = filename.rsplit(['/', '\\']).next().unwrap_or_default();
    let base = base.strip_suffix(".dmg").unwrap_or(base);
    let id: String = base
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(128)
        .collect();
    let id = id.trim_start_matches('.').to_string();
    if id.is_empty() {
        fallback.to_string()
    } else {
        id
    }
}

impl Signer for AppleSigner {
    fn sign(&self, input: &Path, output: &Path, ctx: &SignContext) -> Result<(), SignError> {
        let signed = match detect(input)? {
            InputKind::MachO => self.sign_macho(input, output, ctx),
            InputKind::Dmg => self.sign_dmg(input, output, ctx),
            InputKind::TarGz => self.sign_tarball(input, output, ctx),
        };
        match signed {
            // apple-codesign wraps our key's errors: a token fault must stay a 503.
            Err(SignError::Internal(e)) if !self.key.key.status().available => {
                Err(SignError::Unavailable(format!("{e:#}")))
            }
            other => other,
        }
    }

    fn verify(&self, _input: &Path, signed: &Path) -> Result<(), SignError> {
        let expect = self.expectations();
        let fail = |e: anyhow::Error| SignError::Rejected(format!("{e:#}"));
        match detect(signed)? {
            InputKind::MachO => check::check_macho(&std::fs::read(signed)?, &expect).map_err(fail),
            InputKind::Dmg => check::check_dmg(signed, &expect).map_err(fail),
            InputKind::TarGz => {
                let parent = signed.parent().unwrap_or(Path::new("."));
                let scratch = tempfile::Builder::new()
                    .prefix(".apple-verify-")
                    .tempdir_in(parent)?;
                let app = tarball::unpack(signed, scratch.path(), &tarball::Limits::default())?;
                check::check_bundle(&scratch.path().join(app), &expect).map_err(fail)
            }
        }
    }

    fn probe(&self, scratch: &Path) -> Result<(), SignError> {
        let files = crate::probe::Files::new(scratch, "probe-input", &check::minimal_macho())?;
        let ctx = SignContext {
            filename: "signing-probe".into(),
            ..Default::default()
        };
        crate::probe::run(
            "Apple",
            &files,
            crate::probe::Tamper::Skip,
            |i, o| self.sign(i, o, &ctx),
            |i, o| self.verify(i, o),
        )
    }

    fn log_key_id(&self) -> String {
        crate::keys::signing::spki_sha256(self.key.key.public_key_der())
    }

    fn key_status(&self) -> KeyStatus {
        self.key.key.status()
    }

    fn key_id(&self) -> String {
        match self.cert.sha256_fingerprint() {
            Ok(d) => format!("sha256:{}", hex::encode(d.as_ref())),
            Err(_) => "unknown".into(),
        }
    }

    fn tsa_failures(&self) -> Vec<(String, u64)> {
        self.tsa_failures.counts()
    }
}

#[cfg(test)]
mod tests;
