//! RPM: the header signature `rpmsign --addsign` writes in an RPM v4
//! package, made with the format's OpenPGP key (the same key file, or token
//! key, as `type = gpg`; see [`crate::gpg`]).
//!
//! What it does:
//! - reads the lead, the signature header and the main header (each
//!   bounded: [`SIG_LIMITS`], [`MAIN_LIMITS`]), checks the main header's
//!   SHA-256 against the signature header's, if it has one;
//! - signs the main header's bytes (an OpenPGP v4 binary signature, SHA-256
//!   unless `digest` says otherwise), as rpm 4.14+ does by default (no
//!   header+payload v3 signature: the main header holds the payload's
//!   digest, so the header signature covers the payload too);
//! - writes a new signature header: the old one without its OpenPGP
//!   signatures (`RSA`, `DSA`, `PGP`, `GPG` tags: re-signing replaces them),
//!   plus the new one (tag 268 for RSA keys, 267 for DSA and EdDSA, as
//!   rpmsign chooses), shrinking the reserved space by what it added, as
//!   rpmsign does, so the package keeps its size;
//! - copies the main header and the payload behind it, hashing the payload
//!   as it is copied, and refuses the package (422) if the payload does not
//!   match the digest its header gives: memory holds the headers, never the
//!   payload.
//!
//! The `rpm` crate was considered: its `Package` holds the whole payload in
//! memory (`content: Vec<u8>`) and signs that, so the little of the format
//! needed here is in [`header`].
//!
//! Deliberately NOT done: RPM v3 packages (no header region), v6 keys and
//! ECDSA keys (rpm 4.18 cannot check them), file (IMA) signatures.

pub(crate) mod header;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use pgp::composed::{Deserializable, DetachedSignature};
use pgp::crypto::hash::HashAlgorithm;
use pgp::crypto::public_key::PublicKeyAlgorithm;
use pgp::packet::SignatureType;
use pgp::ser::Serialize;
use pgp::types::KeyVersion;
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use crate::gpg::UnlockedKey;
use crate::{FormatConfig, SignContext, SignError, Signer};
use header::{Header, Limits, NewEntry};

/// Settings an rpm format may have besides the common ones.
pub const EXTRA_KEYS: &[&str] = &["public_key"];

/// The signature header: rpm reads at most 32 entries; a real one is a few KiB.
pub(crate) const SIG_LIMITS: Limits = Limits {
    entries: 64,
    bytes: 1 << 20,
};
/// The main header (file lists, changelog): rpm's own cap is 256 MiB of data;
/// the largest real packages have a few MiB.
pub(crate) const MAIN_LIMITS: Limits = Limits {
    entries: 0xffff,
    bytes: 64 << 20,
};

/// Signature-header tags.
const SIG_SHA256: u32 = 273;
const SIG_DSA: u32 = 267;
const SIG_RSA: u32 = 268;
const SIG_RESERVED: u32 = 1008;
/// The signatures rpmsign removes before adding its own (PGP, GPG, PGP5,
/// DSA, RSA) and the broken digests it drops (BADSHA1_1, BADSHA1_2).
const REPLACED: &[u32] = &[1002, 1005, 1006, SIG_DSA, SIG_RSA, 264, 265];
/// Main-header tags: the payload's digest (hex) and its algorithm.
const PAYLOAD_DIGEST: u32 = 5092;
const PAYLOAD_DIGEST_ALGO: u32 = 5093;

/// The lead's size and magic.
const LEAD_LEN: usize = 96;
const LEAD_MAGIC: [u8; 4] = [0xed, 0xab, 0xee, 0xdb];
/// Copy buffer for the payload.
const READ_BUF: usize = 64 << 10;

fn internal(msg: String) -> SignError {
    SignError::Internal(anyhow!(msg))
}

/// Whether the key of `cfg` needs a passphrase (as for `type = gpg`).
pub fn needs_passphrase(cfg: &FormatConfig) -> Result<bool, SignError> {
    crate::gpg::needs_passphrase(cfg)
}

/// Opens the key of `cfg` and returns an [`RpmSigner`].
pub fn open(
    cfg: &FormatConfig,
    passphrase: Option<&SecretString>,
) -> Result<Box<dyn Signer>, SignError> {
    Ok(Box::new(RpmSigner::open(cfg, passphrase)?))
}

/// The lead, signature header and main header of a package, as read.
#[derive(Debug)]
pub(crate) struct Headers {
    pub(crate) lead: [u8; LEAD_LEN],
    pub(crate) sig: Header,
    pub(crate) main: Header,
}

/// Reads the lead and both headers from `r` (left at the payload's start).
pub(crate) fn read_headers(r: &mut impl Read) -> Result<Headers, SignError> {
    let bad = |m: &str| SignError::Rejected(format!("not a valid RPM package: {m}"));
    let mut lead = [0u8; LEAD_LEN];
    r.read_exact(&mut lead)
        .map_err(|_| bad("shorter than an RPM lead (96 bytes)"))?;
    if lead.get(..4) != Some(&LEAD_MAGIC[..]) {
        return Err(bad("no RPM lead magic (ed ab ee db) at its start"));
    }
    if !matches!(lead.get(4), Some(3 | 4)) {
        return Err(bad("unknown lead version (not an RPM v3/v4 file)"));
    }
    if lead.get(78..80) != Some(&[0, 5][..]) {
        return Err(bad("its lead does not announce a header-style signature"));
    }
    let sig = header::read(r, SIG_LIMITS, "signature header")?;
    if !sig.has_region(header::REGION_SIGNATURES) {
        return Err(bad("the signature header has no region"));
    }
    let mut pad = [0u8; 8];
    let pad_len = header::padding(sig.raw.len());
    r.read_exact(pad.get_mut(..pad_len).unwrap_or_default())
        .map_err(|_| bad("the file ends after the signature header"))?;
    let main = header::read(r, MAIN_LIMITS, "main header")?;
    if !main.has_region(header::REGION_IMMUTABLE) {
        return Err(bad(
            "the main header has no immutable region (an RPM v3 package?): rpm cannot sign it",
        ));
    }
    if let Some(want) = sig.string(SIG_SHA256) {
        if !hex::encode(Sha256::digest(&main.raw)).eq_ignore_ascii_case(want) {
            return Err(SignError::Rejected(
                "damaged RPM package: its header does not match the header SHA-256 digest".into(),
            ));
        }
    }
    Ok(Headers { lead, sig, main })
}

/// A payload hasher and the digest (lower-case hex) the payload must have.
type PayloadCheck = (Box<dyn digest::DynDigest>, String);

/// The payload digest the main header gives: the hasher and the expected hex.
fn payload_digest(main: &Header) -> Result<Option<PayloadCheck>, SignError> {
    let Some(want) = main.string(PAYLOAD_DIGEST) else {
        return Ok(None);
    };
    let hasher: Box<dyn digest::DynDigest> = match main.int32(PAYLOAD_DIGEST_ALGO).unwrap_or(8) {
        2 => Box::new(sha1::Sha1::new()),
        8 => Box::new(Sha256::new()),
        9 => Box::new(sha2::Sha384::new()),
        10 => Box::new(sha2::Sha512::new()),
        n => {
            return Err(SignError::Rejected(format!(
            "RPM payload digest algorithm {n} is not supported (SHA-1, SHA-256, SHA-384, SHA-512)"
        )))
        }
    };
    Ok(Some((hasher, want.to_ascii_lowercase())))
}

/// The signature header of `h` with `packet` (a binary OpenPGP signature) as
/// its only signature, under `tag`.
pub(crate) fn new_sig_header(h: &Headers, tag: u32, packet: &[u8]) -> Vec<u8> {
    let mut entries: Vec<NewEntry> = h
        .sig
        .owned()
        .into_iter()
        .filter(|e| !REPLACED.contains(&e.tag))
        .collect();
    entries.push(NewEntry {
        tag,
        kind: header::BIN,
        count: packet.len() as u32,
        data: packet.to_vec(),
    });
    let mut out = header::write(&entries, header::REGION_SIGNATURES);
    // Keep the package's size, as rpmsign does, when the reserved space allows it.
    let old = h.sig.raw.len();
    if let Some(reserved) = entries
        .iter_mut()
        .find(|e| e.tag == SIG_RESERVED && e.kind == header::BIN)
    {
        let target = reserved.data.len() as i64 - (out.len() as i64 - old as i64);
        if target > 0 && target as usize != reserved.data.len() {
            reserved.data = vec![0; target as usize];
            reserved.count = target as u32;
            out = header::write(&entries, header::REGION_SIGNATURES);
        }
    }
    out
}

/// Signs RPM packages with one unlocked OpenPGP key.
pub struct RpmSigner {
    key: UnlockedKey,
    hash: HashAlgorithm,
    /// The signature-header tag rpm expects for this key's algorithm.
    tag: u32,
    fingerprint: String,
    key_path: PathBuf,
}

impl fmt::Debug for RpmSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpmSigner")
            .field("fingerprint", &self.fingerprint)
            .field("hash", &self.hash)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl RpmSigner {
    /// See [`open`].
    pub fn open(cfg: &FormatConfig, passphrase: Option<&SecretString>) -> Result<Self, SignError> {
        let config = |m: String| SignError::Config(format!("format {}: {m}", cfg.name));
        let hash = crate::gpg::parse_digest(cfg)?;
        if cfg.cert.is_some() || !cfg.timestamp_urls.is_empty() {
            return Err(config(
                "rpm signatures use neither `cert` nor `timestamp_urls`".into(),
            ));
        }
        let token = matches!(crate::KeySource::of(cfg)?, crate::KeySource::Token { .. });
        if let Some(k) = cfg
            .extra
            .keys()
            .find(|k| !EXTRA_KEYS.contains(&k.as_str()) || !token)
        {
            return Err(config(format!(
                "unknown setting {k:?} for type rpm (`public_key` is for a key in a token)"
            )));
        }
        let (key, fingerprint) = crate::gpg::open_key(cfg, passphrase, hash)?;
        let tag = match key.algorithm() {
            PublicKeyAlgorithm::RSA | PublicKeyAlgorithm::RSASign => SIG_RSA,
            PublicKeyAlgorithm::DSA | PublicKeyAlgorithm::EdDSALegacy => SIG_DSA,
            other => {
                return Err(config(format!(
                "rpm checks RSA, DSA and EdDSA (legacy ed25519) signatures; this key is {other:?}"
            )))
            }
        };
        if key.version() != KeyVersion::V4 {
            return Err(config(
                "rpm checks signatures of v4 OpenPGP keys only".into(),
            ));
        }
        Ok(RpmSigner {
            key,
            hash,
            tag,
            fingerprint,
            key_path: cfg.key.clone(),
        })
    }

    /// The binary signature packet over `main` (a main header's bytes).
    fn signature_packet(&self, main: &[u8]) -> Result<Vec<u8>, SignError> {
        let failed = |m: String| match self.key.status() {
            Some(s) if !s.available => SignError::Unavailable(m),
            _ => internal(m),
        };
        let mut pending = self
            .key
            .start(SignatureType::Binary, self.hash)
            .map_err(|e| failed(format!("cannot start the RPM signature: {e}")))?;
        pending.update(main);
        let sig = self
            .key
            .finish(pending)
            .map_err(|e| failed(format!("RPM header signing failed: {e}")))?;
        DetachedSignature::new(sig)
            .to_bytes()
            .map_err(|e| internal(format!("cannot encode the RPM signature: {e}")))
    }
}

impl Signer for RpmSigner {
    fn sign(&self, input: &Path, output: &Path, _ctx: &SignContext) -> Result<(), SignError> {
        let file = File::open(input)
            .map_err(|e| internal(format!("cannot open {}: {e}", input.display())))?;
        let mut r = BufReader::with_capacity(READ_BUF, file);
        let headers = read_headers(&mut r)?;
        let mut payload = payload_digest(&headers.main)?;
        let packet = self.signature_packet(&headers.main.raw)?;
        let sig = new_sig_header(&headers, self.tag, &packet);

        let out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(output)
            .map_err(|e| internal(format!("cannot create {}: {e}", output.display())))?;
        let mut out = BufWriter::with_capacity(READ_BUF, out);
        let werr = |e: std::io::Error| internal(format!("cannot write {}: {e}", output.display()));
        out.write_all(&headers.lead)
            .and_then(|()| out.write_all(&sig))
            .and_then(|()| {
                out.write_all(
                    [0u8; 8]
                        .get(..header::padding(sig.len()))
                        .unwrap_or_default(),
                )
            })
            .and_then(|()| out.write_all(&headers.main.raw))
            .map_err(werr)?;
        let mut buf = vec![0u8; READ_BUF];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(internal(format!("cannot read {}: {e}", input.display()))),
            };
            let chunk = buf.get(..n).unwrap_or_default();
            if let Some((h, _)) = payload.as_mut() {
                h.update(chunk);
            }
            out.write_all(chunk).map_err(werr)?;
        }
        if let Some((h, want)) = payload {
            if hex::encode(h.finalize()) != want {
                return Err(SignError::Rejected(
                    "damaged RPM package: its payload does not match the payload digest in its \
                     header (truncated or modified?)"
                        .into(),
                ));
            }
        }
        out.flush().map_err(werr)?;
        out.into_inner()
            .map_err(|e| werr(e.into_error()))?
            .sync_all()
            .map_err(werr)
    }

    fn verify(&self, input: &Path, signed: &Path) -> Result<(), SignError> {
        let bad = |m: String| internal(format!("{}: {m}", signed.display()));
        let open = |p: &Path| {
            File::open(p)
                .map(|f| BufReader::with_capacity(READ_BUF, f))
                .map_err(|e| internal(format!("cannot open {}: {e}", p.display())))
        };
        let mut r = open(signed)?;
        let h = read_headers(&mut r).map_err(|e| bad(e.to_string()))?;
        let sigs: Vec<_> = h
            .sig
            .entries
            .iter()
            .filter(|e| REPLACED.contains(&e.tag))
            .collect();
        let [entry] = sigs.as_slice() else {
            return Err(bad(format!("{} OpenPGP signatures, not one", sigs.len())));
        };
        if entry.tag != self.tag {
            return Err(bad(format!("the signature is under tag {}", entry.tag)));
        }
        let sig = DetachedSignature::from_bytes(h.sig.bytes(entry))
            .map_err(|e| bad(format!("not an OpenPGP signature: {e}")))?
            .signature;
        if sig.typ() != Some(SignatureType::Binary) {
            return Err(bad(format!("not a binary signature ({:?})", sig.typ())));
        }
        self.key
            .verify(&sig, h.main.raw.as_slice())
            .map_err(|e| bad(format!("the header signature does not verify: {e}")))?;
        // The main header and payload are the input's, unchanged.
        let rest = |mut r: BufReader<File>, main: &[u8]| -> Result<Vec<u8>, SignError> {
            let mut hasher = Sha256::new_with_prefix(main);
            std::io::copy(&mut r, &mut hasher)
                .map_err(|e| internal(format!("cannot read: {e}")))?;
            Ok(hasher.finalize().to_vec())
        };
        let mut ri = open(input)?;
        let hi = read_headers(&mut ri)?;
        if rest(r, &h.main.raw)? != rest(ri, &hi.main.raw)? {
            return Err(bad(format!(
                "its header or payload differs from {}",
                input.display()
            )));
        }
        Ok(())
    }

    fn probe(&self, scratch: &Path) -> Result<(), SignError> {
        let mut nonce = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut nonce);
        let files = crate::probe::Files::new(scratch, "rpm-probe.rpm", &probe_package(&nonce))?;
        let ctx = SignContext {
            filename: "rpm-probe.rpm".into(),
            ..Default::default()
        };
        // The byte flipped: in the main header's data (before its 16-byte region
        // trailer and the 32-byte payload), which the signature covers.
        crate::probe::run(
            "RPM",
            &files,
            crate::probe::Tamper::OutputFromEnd(60),
            |i, o| self.sign(i, o, &ctx),
            |i, o| self.verify(i, o),
        )?;
        // Re-signing replaces the signature.
        let again = scratch.join("rpm-probe.rpm.resigned");
        let _ = std::fs::remove_file(&again);
        self.sign(&files.output, &again, &ctx)?;
        self.verify(&files.input, &again)
            .map_err(|e| internal(format!("probe: a re-signed RPM does not verify: {e}")))
    }

    fn key_id(&self) -> String {
        self.fingerprint.clone()
    }

    fn key_status(&self) -> crate::KeyStatus {
        self.key.status().unwrap_or(crate::KeyStatus {
            source: "file",
            available: true,
            errors: 0,
            last_error: None,
        })
    }
}

/// A minimal RPM v4 package of our own making (lead, signature header with
/// the header's SHA-256 and reserved space, main header with a name and the
/// payload's SHA-256, and `payload`): the probe's input, and the unit tests'.
pub(crate) fn probe_package(payload: &[u8]) -> Vec<u8> {
    let string = |tag, s: &str| NewEntry {
        tag,
        kind: header::STRING,
        count: 1,
        data: [s.as_bytes(), b"\0"].concat(),
    };
    let main = header::write(
        &[
            string(1000, "signing-server-probe"),
            NewEntry {
                tag: PAYLOAD_DIGEST,
                kind: header::STRING_ARRAY,
                count: 1,
                data: [hex::encode(Sha256::digest(payload)).as_bytes(), b"\0"].concat(),
            },
            NewEntry {
                tag: PAYLOAD_DIGEST_ALGO,
                kind: header::INT32,
                count: 1,
                data: 8u32.to_be_bytes().to_vec(),
            },
        ],
        header::REGION_IMMUTABLE,
    );
    let sig = header::write(
        &[
            string(SIG_SHA256, &hex::encode(Sha256::digest(&main))),
            NewEntry {
                tag: SIG_RESERVED,
                kind: header::BIN,
                count: 4128,
                data: vec![0; 4128],
            },
        ],
        header::REGION_SIGNATURES,
    );
    // magic, version 3.0, binary package, arch 1 (x86), name (66 bytes), os 1
    // (Linux), header-style signature (5), 16 reserved bytes.
    let name = b"signing-server-probe";
    let mut lead = LEAD_MAGIC.to_vec();
    lead.extend_from_slice(&[3, 0, 0, 0, 0, 1]);
    lead.extend_from_slice(name);
    lead.resize(LEAD_LEN - 20, 0);
    lead.extend_from_slice(&[0, 1, 0, 5]);
    lead.resize(LEAD_LEN, 0);
    let mut out = lead;
    out.extend_from_slice(&sig);
    out.resize(out.len() + header::padding(sig.len()), 0);
    out.extend_from_slice(&main);
    out.extend_from_slice(payload);
    out
}
