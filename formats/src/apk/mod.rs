//! APK: Android v1 (JAR), v2 and v3 signatures, made in-process.
//!
//! What it does, in one streaming pass over the input:
//! 1. reads and validates the input ZIP's structure ([`zip`]): bad input is
//!    [`SignError::Rejected`] (HTTP 422) with the reason;
//! 2. reads the API range the APK declares from its binary
//!    `AndroidManifest.xml` ([`manifest`]; no manifest: not an APK, 422),
//!    unless the format sets `min_sdk`, and picks the v1 digest for it as
//!    apksigner does ([`v1::choose`]);
//! 3. copies every entry's compressed bytes as they are into the output,
//!    behind a fresh local header aligned zipalign-style (stored entries on
//!    4 bytes, `.so` on 4096), while inflating them to check their CRC and
//!    size and to hash them for MANIFEST.MF; existing JAR signature files
//!    (`META-INF/MANIFEST.MF`, `*.SF`, `*.RSA`, `*.DSA`, `*.EC`, `SIG-*`,
//!    whatever their compression) and any old APK Signing Block (v2, v3,
//!    rotation lineage) are dropped: the output has one signer, ours;
//! 4. appends the v1 files ([`v1`], [`pkcs7`]) if enabled;
//! 5. computes the chunked content digest as bytes are written (entries),
//!    then over the central directory and EOCD, and inserts the APK
//!    Signing Block with v2/v3 ([`block`]) before the central directory.
//!
//! Memory: one 64 KiB copy buffer, one 1 MiB digest chunk, the central
//! directory (at most 32 MiB), the manifest (at most [`MAX_MANIFEST`]) and
//! one manifest line per entry — never the APK. Config: `schemes =
//! v1,v2,v3` (default all), `min_sdk` (overrides the manifest), `digest`
//! may only be `sha256`, `cert` is the signer certificate (PEM), `key` its
//! private key (PKCS#8 PEM, RSA or EC P-256, usually passphrase-encrypted).
//!
//! Deliberately NOT done: no key rotation (v3 lineage), no v4 (.idsig), no
//! ZIP64, no source stamp; `verify` checks our own signatures, not all
//! that apksigner checks — the tests run apksigner itself.

mod block;
pub(crate) mod manifest;
mod pkcs7;
pub(crate) mod v1;
pub(crate) mod zip;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::anyhow;
use openssl::nid::Nid;
use openssl::x509::X509;
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use self::block::{ChunkDigests, Key, ALG_ECDSA_SHA256, ALG_RSA_SHA256};
use self::v1::V1Digest;
use self::zip::{reject, Archive, Counted};
use crate::keys::signing::KeyKind;
use crate::{FormatConfig, KeyStatus, SignContext, SignError, Signer, SigningKey};

/// The settings of `[format:NAME]` a `type = apk` section may have beyond
/// the common ones.
pub const EXTRA_KEYS: &[&str] = &["schemes", "min_sdk"];

/// Copy buffer.
const BUF: usize = 64 << 10;
/// Largest AndroidManifest.xml we read (real ones are well under 1 MiB).
const MAX_MANIFEST: u64 = 8 << 20;
/// The manifest's entry name.
const ANDROID_MANIFEST: &str = "AndroidManifest.xml";

/// `min_sdk = N`: the lowest API level to sign for, instead of the
/// manifest's minSdkVersion.
fn parse_min_sdk(cfg: &FormatConfig) -> Result<Option<u32>, SignError> {
    let Some(text) = cfg.extra.get("min_sdk") else {
        return Ok(None);
    };
    match text.trim().parse::<u32>() {
        Ok(n) if n >= 1 => Ok(Some(n)),
        _ => Err(SignError::Config(format!(
            "format {}: min_sdk must be an API level (an integer, 1 or more), not {text:?}",
            cfg.name
        ))),
    }
}

/// Which schemes to sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Schemes {
    v1: bool,
    v2: bool,
    v3: bool,
}

fn parse_schemes(cfg: &FormatConfig) -> Result<Schemes, SignError> {
    let Some(text) = cfg.extra.get("schemes") else {
        return Ok(Schemes {
            v1: true,
            v2: true,
            v3: true,
        });
    };
    let mut s = Schemes {
        v1: false,
        v2: false,
        v3: false,
    };
    for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match word.to_ascii_lowercase().as_str() {
            "v1" => s.v1 = true,
            "v2" => s.v2 = true,
            "v3" => s.v3 = true,
            other => {
                return Err(SignError::Config(format!(
                    "format {}: unknown APK signature scheme {other:?} (use v1, v2, v3)",
                    cfg.name
                )))
            }
        }
    }
    if !(s.v1 || s.v2 || s.v3) {
        return Err(SignError::Config(format!(
            "format {}: `schemes` is empty",
            cfg.name
        )));
    }
    Ok(s)
}

/// Whether the key at `cfg.key` is an encrypted PEM key.
pub fn needs_passphrase(cfg: &FormatConfig) -> Result<bool, SignError> {
    crate::keys::signing::needs_secret(cfg, "APK key")
}

/// Unlocks the key and builds an [`ApkSigner`].
pub fn open(
    cfg: &FormatConfig,
    passphrase: Option<&SecretString>,
) -> Result<Box<dyn Signer>, SignError> {
    Ok(Box::new(ApkSigner::open(cfg, passphrase)?))
}

/// Signs APKs with one key and certificate.
pub struct ApkSigner {
    key: Key,
    cert: X509,
    schemes: Schemes,
    /// `min_sdk`: overrides the manifest's minSdkVersion.
    min_sdk: Option<u32>,
    /// Hex SHA-256 of the certificate (what `apksigner --print-certs` shows).
    cert_sha256: String,
}

impl std::fmt::Debug for ApkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApkSigner")
            .field("cert_sha256", &self.cert_sha256)
            .field("schemes", &self.schemes)
            .field("min_sdk", &self.min_sdk)
            .finish_non_exhaustive()
    }
}

fn internal(msg: String) -> SignError {
    SignError::Internal(anyhow!(msg))
}

impl ApkSigner {
    /// See [`open`].
    pub fn open(cfg: &FormatConfig, passphrase: Option<&SecretString>) -> Result<Self, SignError> {
        let schemes = parse_schemes(cfg)?;
        let min_sdk = parse_min_sdk(cfg)?;
        if let Some(k) = cfg.extra.keys().find(|k| !EXTRA_KEYS.contains(&k.as_str())) {
            return Err(SignError::Config(format!(
                "format {}: unknown setting {k:?} for type apk",
                cfg.name
            )));
        }
        if let Some(d) = &cfg.digest {
            if !d.trim().eq_ignore_ascii_case("sha256") {
                return Err(SignError::Config(format!(
                    "format {}: APK signatures use sha256 only (digest {d:?})",
                    cfg.name
                )));
            }
        }
        if !cfg.timestamp_urls.is_empty() {
            return Err(SignError::Config(format!(
                "format {}: APK signatures are not time-stamped (remove `timestamp_urls`)",
                cfg.name
            )));
        }
        let Some(cert_path) = &cfg.cert else {
            return Err(SignError::Config(format!(
                "format {}: type apk needs `cert` (the signer certificate, PEM)",
                cfg.name
            )));
        };
        let key_path = cfg.key.display();
        let signing_key = SigningKey::open(cfg, passphrase, "APK key")?;
        let alg = match signing_key.kind() {
            KeyKind::Rsa { bits } if bits >= 2048 => ALG_RSA_SHA256,
            KeyKind::Ec {
                curve: Some(Nid::X9_62_PRIME256V1),
            } => ALG_ECDSA_SHA256,
            _ => {
                return Err(SignError::Key(format!(
                    "the APK key {key_path} must be RSA (2048 bits or more) or EC P-256"
                )))
            }
        };
        let cert_pem =
            crate::keys::read_bounded(cert_path, "APK certificate", crate::keys::MAX_SMALL_FILE)
                .map_err(SignError::Key)?;
        let cert = X509::from_pem(&cert_pem).map_err(|e| {
            SignError::Config(format!(
                "{}: not a PEM certificate: {e}",
                cert_path.display()
            ))
        })?;
        let cert_key = cert
            .public_key()
            .map_err(|e| SignError::Config(format!("{}: {e}", cert_path.display())))?;
        if !cert_key.public_eq(signing_key.public_key()) {
            return Err(SignError::Config(format!(
                "{} is not the certificate of the key {key_path}",
                cert_path.display()
            )));
        }
        let cert_der = cert
            .to_der()
            .map_err(|e| internal(format!("certificate: {e}")))?;
        let spki_der = cert_key
            .public_key_to_der()
            .map_err(|e| internal(format!("public key: {e}")))?;
        let cert_sha256 = hex::encode(Sha256::digest(&cert_der));
        // SigningKey::open made the key sign once.
        let key = Key {
            key: signing_key,
            cert_der,
            spki_der,
            alg,
        };
        if let (Some(min), true) = (min_sdk, schemes.v1) {
            v1::choose(key.is_ec(), min).map_err(|why| {
                SignError::Config(format!("format {}: min_sdk = {min}: {why}", cfg.name))
            })?;
        }
        Ok(ApkSigner {
            key,
            cert,
            schemes,
            min_sdk,
            cert_sha256,
        })
    }

    /// The `X-Android-APK-Signed` value for our schemes.
    fn apk_signed(&self) -> Option<&'static str> {
        match (self.schemes.v2, self.schemes.v3) {
            (true, true) => Some("2, 3"),
            (true, false) => Some("2"),
            (false, true) => Some("3"),
            (false, false) => None,
        }
    }

    fn block_name(&self) -> &'static str {
        if self.key.is_ec() {
            "META-INF/CERT.EC"
        } else {
            "META-INF/CERT.RSA"
        }
    }

    /// The lowest API level `archive` (read from `input`) is signed for:
    /// `min_sdk` if set, else its manifest's minSdkVersion. Refuses an
    /// archive without AndroidManifest.xml: it is not an APK.
    fn min_sdk_of(&self, input: &mut File, archive: &Archive) -> Result<u32, SignError> {
        let Some(entry) = archive.entries.iter().find(|e| e.name == ANDROID_MANIFEST) else {
            return Err(reject(
                "not an APK: there is no AndroidManifest.xml entry (apksigner refuses it too: \
                 \"Missing AndroidManifest.xml\")",
            ));
        };
        if let Some(min) = self.min_sdk {
            return Ok(min);
        }
        let xml = zip::small_content(input, entry, MAX_MANIFEST)?;
        Ok(manifest::sdk_range(&xml)?.min)
    }

    /// The v1 digest for an APK whose lowest API level is `min_sdk`.
    fn v1_digest(&self, min_sdk: u32) -> Result<V1Digest, SignError> {
        v1::choose(self.key.is_ec(), min_sdk).map_err(SignError::Rejected)
    }

    /// Our v1 signature of `signed`: every entry's digest, rebuilt
    /// MANIFEST.MF and CERT.SF identical to the stored ones, and the PKCS#7
    /// block over CERT.SF made by our certificate.
    fn verify_v1(&self, signed: &Path) -> Result<(), SignError> {
        let mut f = File::open(signed)?;
        let archive = zip::read_archive(&mut f, |_| false)?;
        let alg = self.v1_digest(self.min_sdk_of(&mut f, &archive)?)?;
        let mut digests = BTreeMap::new();
        let mut buf = vec![0u8; BUF];
        let (mut manifest, mut sf, mut block) = (None, None, None);
        let small = |f: &mut File, e: &zip::Entry| zip::small_content(f, e, zip::MAX_CD_SIZE);
        for e in &archive.entries {
            if e.name == v1::MANIFEST {
                manifest = Some(small(&mut f, e)?);
            } else if e.name == v1::SIGNATURE_FILE {
                sf = Some(small(&mut f, e)?);
            } else if e.name == self.block_name() {
                block = Some(small(&mut f, e)?);
            } else if v1::needs_digest(&e.name) {
                let mut h = alg.hasher();
                zip::copy_entry(&mut f, e, &mut std::io::sink(), &mut buf, &mut h)?;
                digests.insert(e.name.clone(), h.finish());
            }
        }
        let bad = |why: &str| reject(format!("APK v1 signature: {why}"));
        let (Some(manifest), Some(sf), Some(block)) = (manifest, sf, block) else {
            return Err(bad("signature files missing"));
        };
        let (want_manifest, want_sf) = v1::manifest_and_sf(&digests, alg, self.apk_signed());
        if manifest != want_manifest {
            return Err(bad("MANIFEST.MF does not match the entries"));
        }
        if sf != want_sf {
            return Err(bad("CERT.SF does not match MANIFEST.MF"));
        }
        v1::verify_block(&block, &sf, &self.cert)
    }

    /// The whole pipeline; `out` is a fresh file.
    fn sign_into(&self, input: &mut File, out: File) -> Result<(), SignError> {
        let archive = zip::read_archive(input, v1::is_signature_file)?;
        if let Some(e) = archive
            .entries
            .iter()
            .find(|e| v1::is_phantom_signature_block(&e.name))
        {
            return Err(SignError::Rejected(format!(
                "entry {:?}: apksigner's verifier takes every META-INF/…/*.RSA, *.DSA or *.EC \
                 for a JAR signature block, but as it is not directly in META-INF it is signed as \
                 content, so no APK carrying it verifies; remove it (or move it out of META-INF) \
                 and sign again",
                e.name
            )));
        }
        let min_sdk = self.min_sdk_of(input, &archive)?;
        let v1_alg = if self.schemes.v1 {
            Some(self.v1_digest(min_sdk)?)
        } else {
            None
        };
        let mut w = Counted {
            inner: Hashing {
                inner: BufWriter::with_capacity(BUF, out),
                digests: ChunkDigests::new(),
            },
            pos: 0,
        };
        let mut cd = Vec::new();
        let mut count = 0usize;
        let mut manifest = BTreeMap::new();
        let mut buf = vec![0u8; BUF];
        for e in archive.entries.iter().filter(|e| !e.dropped) {
            let offset = zip::write_local_header(&mut w, e)?;
            match v1_alg.filter(|_| v1::needs_digest(&e.name)) {
                Some(alg) => {
                    let mut h = alg.hasher();
                    zip::copy_entry(input, e, &mut w, &mut buf, &mut h)?;
                    manifest.insert(e.name.clone(), h.finish());
                }
                None => zip::copy_entry(input, e, &mut w, &mut buf, &mut std::io::sink())?,
            }
            zip::push_cd_record(&mut cd, e, offset)?;
            count += 1;
        }
        if let Some(alg) = v1_alg {
            let files = v1::sign(&manifest, alg, self.apk_signed(), &self.key)?;
            let block_name = self.block_name();
            for (name, data) in [
                (v1::MANIFEST, &files.manifest),
                (v1::SIGNATURE_FILE, &files.sf),
                (block_name, &files.block),
            ] {
                let e = zip::new_stored_entry(name, data);
                let offset = zip::write_local_header(&mut w, &e)?;
                w.write_all(data)?;
                zip::push_cd_record(&mut cd, &e, offset)?;
                count += 1;
            }
        }
        let block_offset = w.pos;
        let eocd = zip::eocd_record(count, cd.len() as u64, block_offset, &archive.comment)?;
        let Counted {
            inner:
                Hashing {
                    inner: mut out,
                    mut digests,
                },
            pos,
        } = w;
        let mut cd_offset = pos;
        if self.schemes.v2 || self.schemes.v3 {
            digests.end_section();
            digests.update(&cd);
            digests.end_section();
            digests.update(&eocd);
            let digest = digests.finish();
            let block = block::signing_block(&self.key, &digest, self.schemes.v2, self.schemes.v3)?;
            out.write_all(&block)?;
            cd_offset += block.len() as u64;
        }
        out.write_all(&cd)?;
        out.write_all(&zip::eocd_record(
            count,
            cd.len() as u64,
            cd_offset,
            &archive.comment,
        )?)?;
        out.flush()?;
        out.into_inner()
            .map_err(|e| SignError::from(e.into_error()))?
            .sync_all()?;
        Ok(())
    }
}

/// The output writer: everything written also feeds the chunked digest.
struct Hashing<W: Write> {
    inner: W,
    digests: ChunkDigests,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digests.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Signer for ApkSigner {
    fn sign(&self, input: &Path, output: &Path, _ctx: &SignContext) -> Result<(), SignError> {
        let mut inp = File::open(input)
            .map_err(|e| internal(format!("cannot open {}: {e}", input.display())))?;
        let out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(output)
            .map_err(|e| internal(format!("cannot create {}: {e}", output.display())))?;
        self.sign_into(&mut inp, out)
    }

    fn verify(&self, _input: &Path, signed: &Path) -> Result<(), SignError> {
        let found = if self.schemes.v2 || self.schemes.v3 {
            block::verify(&self.key, signed)?
        } else {
            block::Verified::default()
        };
        if found.v2 != self.schemes.v2 || found.v3 != self.schemes.v3 {
            return Err(reject(format!(
                "APK signature: expected schemes {:?}, found {found:?}",
                self.schemes
            )));
        }
        if self.schemes.v1 {
            self.verify_v1(signed)?;
        }
        Ok(())
    }

    fn probe(&self, scratch: &Path) -> Result<(), SignError> {
        let mut nonce = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut nonce);
        // A real binary manifest; the lowest API level this key signs v1 for.
        let manifest = manifest::minimal(match (self.min_sdk, self.key.is_ec()) {
            (Some(min), _) => min,
            (None, true) => v1::SHA256_FROM_SDK,
            (None, false) => 1,
        });
        let apk = scratch.join("apk-probe.zip");
        zip::write_simple(
            &apk,
            &[
                (ANDROID_MANIFEST, &manifest, true),
                ("classes.dex", &nonce, true),
                ("lib/x86_64/libprobe.so", &nonce, false),
            ],
        )?;
        let files = crate::probe::Files::new(scratch, "apk-probe.apk", &std::fs::read(&apk)?)?;
        let ctx = SignContext {
            filename: "apk-probe.apk".into(),
            ..Default::default()
        };
        // The byte flipped is in the first entry.
        crate::probe::run(
            "APK",
            &files,
            crate::probe::Tamper::OutputAt(40),
            |i, o| self.sign(i, o, &ctx),
            |i, o| self.verify(i, o),
        )
    }

    fn key_id(&self) -> String {
        self.cert_sha256.clone()
    }

    fn log_key_id(&self) -> String {
        crate::keys::signing::spki_sha256(self.key.key.public_key_der())
    }

    fn key_status(&self) -> KeyStatus {
        self.key.key.status()
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_compat;
