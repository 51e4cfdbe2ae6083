//! The explicit list of signer types. Adding a format = one module + one row.

use crate::{FormatConfig, SignError, Signer};
use secrecy::SecretString;

/// Unlocks a format's key (with its passphrase, if any) and builds its signer.
pub type OpenFn =
    fn(cfg: &FormatConfig, passphrase: Option<&SecretString>) -> Result<Box<dyn Signer>, SignError>;

/// A signer type as the config names it (`type = gpg`).
pub struct SignerType {
    /// The config `type` value; also the module name.
    pub name: &'static str,
    /// Keys a `[format:NAME]` section of this type may hold besides the
    /// common ones (type, key, cert, digest, timestamp_urls, max_filesize).
    pub extra_keys: &'static [&'static str],
    /// Whether the key file at `cfg.key` needs a passphrase to unlock.
    pub needs_passphrase: fn(cfg: &FormatConfig) -> Result<bool, SignError>,
    /// Unlocks the key and builds the signer.
    pub open: OpenFn,
}

/// Every signer type this build knows.
pub static REGISTRY: &[SignerType] = &[
    SignerType {
        name: "gpg",
        extra_keys: &["public_key", "clearsign"],
        needs_passphrase: crate::gpg::needs_passphrase,
        open: crate::gpg::open,
    },
    SignerType {
        name: "mar",
        extra_keys: &["resign"],
        needs_passphrase: crate::mar::needs_passphrase,
        open: crate::mar::open,
    },
    SignerType {
        name: "apk",
        extra_keys: crate::apk::EXTRA_KEYS,
        needs_passphrase: crate::apk::needs_passphrase,
        open: crate::apk::open,
    },
    SignerType {
        name: "authenticode",
        extra_keys: crate::authenticode::EXTRA_KEYS,
        needs_passphrase: crate::authenticode::needs_passphrase,
        open: crate::authenticode::open,
    },
    SignerType {
        name: "apple",
        extra_keys: crate::apple::EXTRA_KEYS,
        needs_passphrase: crate::apple::needs_passphrase,
        open: crate::apple::open,
    },
    SignerType {
        name: "rpm",
        extra_keys: crate::rpm::EXTRA_KEYS,
        needs_passphrase: crate::rpm::needs_passphrase,
        open: crate::rpm::open,
    },
];

/// Looks a signer type up by its config name.
pub fn find(kind: &str) -> Option<&'static SignerType> {
    REGISTRY.iter().find(|t| t.name == kind)
}

/// The config names of every known type, for error messages.
pub fn known_types() -> Vec<&'static str> {
    REGISTRY.iter().map(|t| t.name).collect()
}
