//! Signature formats of the signing service.
//!
//! One module per format, each behind the [`Signer`] trait; the [`registry`]
//! maps a config `type` (`gpg`, `authenticode`, …) to a constructor.
//!
//! **Architecture invariant:** this crate knows nothing of the server's HTTP,
//! INI files or tokens; its only network traffic is RFC 3161 requests to the
//! configured time-stamping authorities ([`timestamp`], and apple-codesign's
//! own). Files in, files out: a signer reads its input from a path and
//! writes its output to a path; gpg, mar, apk, authenticode and rpm stream its
//! content (headers, indexes and directories aside), so their memory does not
//! grow with the data, while apple reads a Mach-O
//! whole (apple-codesign takes a byte slice; the server's `max_filesize`
//! bounds it). Digest signing ([`digest_signing`]) is the exception to files in,
//! files out: a signer signs what a client computed (a SHA-256 state, a digest)
//! and returns the signature material, and the client builds its output with
//! the format's own `prepare`/`finish` halves from this crate.
//! Log lines go through `tracing`, never `eprintln!`.
//! Passphrases arrive as [`secrecy::SecretString`] and unlocked keys never
//! leave the signer that holds them.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)
)]

pub mod apk;
pub mod apple;
pub mod authenticode;
pub mod digest_signing;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod gpg;
pub mod keys;
pub mod mar;
pub mod pkcs11;
pub(crate) mod probe;
pub mod registry;
pub mod rpm;
pub mod scratch;
pub(crate) mod signed_data;
pub mod timestamp;
pub mod tlog;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use error::SignError;
pub use keys::signing::{Hash, KeySource, SigningKey};
pub use pkcs11::KeyStatus;
pub use registry::{SignerType, REGISTRY};

/// What the server knows about one `[format:NAME]` section, already checked
/// for syntax; each signer type checks the values it understands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormatConfig {
    /// The format's name, as it appears in URLs (`gpg`, `sha2signcode`, …).
    pub name: String,
    /// The signer type (`gpg`, `authenticode`, …).
    pub kind: String,
    /// Private key: a PEM file, or a `pkcs11:` URI (RFC 7512) naming a key in a token.
    pub key: PathBuf,
    /// The `[pkcs11] module` default, for a `pkcs11:` key whose URI has no `module-path`.
    pub pkcs11_module: Option<PathBuf>,
    /// Certificate (chain) file, for the formats that use X.509.
    pub cert: Option<PathBuf>,
    /// Digest name (`sha256`, `sha384`, `sha512`, `sha1`), if set.
    pub digest: Option<String>,
    /// RFC 3161 time-stamping authorities, tried in order.
    pub timestamp_urls: Vec<String>,
    /// Type-specific settings (keys listed in [`SignerType::extra_keys`]).
    pub extra: BTreeMap<String, String>,
}

/// Per-request information a signer may use. Never contains secrets.
#[derive(Debug, Clone, Default)]
pub struct SignContext {
    /// The client's file name: a label only, never a path.
    pub filename: String,
    /// The server-wide scratch space budget, for signers that expand their
    /// input on disk (None: unbounded but for the signer's own limits).
    pub scratch: Option<std::sync::Arc<scratch::ScratchBudget>>,
}

/// What a signer's result is to the client: a new version of the file, or a
/// detached signature written beside it (told in /health, so that clients need
/// not guess from a format's name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The signed file, which replaces the input (authenticode, mar, apk, …).
    File,
    /// A detached signature over the unchanged input (gpg's `.asc`).
    Detached,
}

impl Output {
    /// The name /health gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Output::File => "file",
            Output::Detached => "detached",
        }
    }
}

/// One signature format with its unlocked key. Shared across jobs and threads.
pub trait Signer: Send + Sync {
    /// Signs `input` into `output` (both files on local disk). `output` does
    /// not exist yet; on error the caller removes whatever was written.
    fn sign(&self, input: &Path, output: &Path, ctx: &SignContext) -> Result<(), SignError>;

    /// Checks `signed` (made from `input`) as a relying party would.
    fn verify(&self, input: &Path, signed: &Path) -> Result<(), SignError>;

    /// Signs and verifies a small input of the signer's own making in
    /// `scratch` (an empty private directory): the start-up probe that proves
    /// the key was unlocked and works.
    fn probe(&self, scratch: &Path) -> Result<(), SignError>;

    /// A public identifier of the key (a fingerprint): safe for logs.
    fn key_id(&self) -> String;

    /// The key as the transparency log names it: the SHA-256 hex of its
    /// SubjectPublicKeyInfo DER (X.509 signers), or an OpenPGP key's v4
    /// fingerprint (the default: gpg and rpm's `key_id`).
    fn log_key_id(&self) -> String {
        self.key_id()
    }

    /// What the result is: the signed file (the default) or a detached signature.
    fn output(&self) -> Output {
        Output::File
    }

    /// Failed requests to each time-stamping authority since this signer
    /// was opened (URL, count), for the server's metrics. Empty for the
    /// signers that do not timestamp.
    fn tsa_failures(&self) -> Vec<(String, u64)> {
        Vec::new()
    }

    /// (TSA URL, `notAfter` in Unix seconds) of the certificate each
    /// time-stamping authority signed its last valid reply with, for the
    /// server's expiry metrics. Empty for the signers that do not timestamp
    /// through [`timestamp`] (apple's timestamps come from apple-codesign).
    fn tsa_certificate_expiry(&self) -> Vec<(String, u64)> {
        Vec::new()
    }

    /// Where the key is and whether it can sign now (a token may be gone): for /health
    /// and /metrics. A file key is always available.
    fn key_status(&self) -> KeyStatus {
        KeyStatus {
            source: "file",
            available: true,
            errors: 0,
            last_error: None,
        }
    }

    /// Whether this signer's output depends on the input only through its
    /// SHA-256 (gpg, v4 key, SHA-256): then [`Signer::sign_sha256_state`]
    /// works, and a caller that hashed the input while receiving it need
    /// neither store it nor read it again.
    fn signs_sha256_state(&self) -> bool {
        false
    }

    /// Signs the input whose SHA-256 state after all its bytes (not
    /// finalized) is `state`, into `output`. Only when
    /// [`Signer::signs_sha256_state`] is true.
    fn sign_sha256_state(
        &self,
        state: &sha2::Sha256,
        output: &Path,
        ctx: &SignContext,
    ) -> Result<(), SignError> {
        let _ = (state, output, ctx);
        Err(SignError::Internal(anyhow::anyhow!(
            "this signer cannot sign from a SHA-256 state"
        )))
    }

    /// What a client must compute to have this signer sign without the file
    /// (see [`digest_signing`]); `None`: whole files only.
    fn digest_spec(&self) -> Option<digest_signing::DigestSpec> {
        None
    }

    /// The public key (SubjectPublicKeyInfo DER) a client checks a bare
    /// signature from [`Signer::sign_digest`] with (mar); `None` where the
    /// signature material carries its certificate or the client checks it otherwise.
    fn public_key_der(&self) -> Option<Vec<u8>> {
        None
    }

    /// Signs what a client computed for [`Signer::digest_spec`]; returns the
    /// signature material the client builds its output from. The caller has
    /// checked `input` against the spec.
    fn sign_digest(
        &self,
        input: &digest_signing::DigestInput,
        ctx: &SignContext,
    ) -> Result<Vec<u8>, SignError> {
        let _ = (input, ctx);
        Err(SignError::Internal(anyhow::anyhow!(
            "this signer cannot sign digests"
        )))
    }
}

/// Fixtures shared by the unit tests: the TEST-ONLY keys of `certs/`.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::{Path, PathBuf};

    use secrecy::SecretString;

    /// `certs/` at the top of the workspace.
    pub(crate) fn certs() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs")
    }

    /// The passphrase of every test key (certs/PASSPHRASE, no newline).
    pub(crate) fn passphrase() -> SecretString {
        let text = std::fs::read_to_string(certs().join("PASSPHRASE")).expect("certs/PASSPHRASE");
        SecretString::from(text.trim_end_matches(['\r', '\n']).to_string())
    }
}
