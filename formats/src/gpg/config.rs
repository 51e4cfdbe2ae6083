//! The `[format:NAME]` settings of a gpg format: the digest, and the
//! settings a gpg format does not use (errors, not silently ignored).

use pgp::crypto::hash::HashAlgorithm;

use crate::{FormatConfig, SignError};

/// The digest named by `cfg.digest` (default SHA-256).
pub(crate) fn parse_digest(cfg: &FormatConfig) -> Result<HashAlgorithm, SignError> {
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
pub(super) fn check_unused(cfg: &FormatConfig) -> Result<(), SignError> {
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
    let token = matches!(crate::KeySource::of(cfg)?, crate::KeySource::Token { .. });
    if !token && cfg.extra.contains_key("public_key") {
        return Err(SignError::Config(format!(
            "format {}: `public_key` is for a key in a token (key = pkcs11:…); the key file \
             holds its public key",
            cfg.name
        )));
    }
    if let Some(k) = cfg
        .extra
        .keys()
        .find(|k| !matches!(k.as_str(), "public_key" | "clearsign"))
    {
        return Err(SignError::Config(format!(
            "format {}: unknown setting {k:?} for type gpg",
            cfg.name
        )));
    }
    Ok(())
}

/// `clearsign = yes|no` (default no): a clear-signed text instead of a detached signature.
pub(super) fn parse_clearsign(cfg: &FormatConfig) -> Result<bool, SignError> {
    let Some(value) = cfg.extra.get("clearsign") else {
        return Ok(false);
    };
    match value.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" | "on" => Ok(true),
        "no" | "false" | "0" | "off" => Ok(false),
        _ => Err(SignError::Config(format!(
            "format {}: clearsign = {value:?}: use yes or no",
            cfg.name
        ))),
    }
}
