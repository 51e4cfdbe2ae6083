//! The error type every signer returns.
//!
//! The split matters to clients: a [`SignError::Rejected`] input will be
//! rejected by every host (HTTP 422, never retried), while
//! [`SignError::Internal`] is our fault or the environment's (HTTP 5xx, the
//! client may try another host).

/// Why signing (or unlocking a key) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The input is not acceptable for this format (not a PE, corrupt APK).
    /// The message is shown to the client: it must not contain secrets.
    #[error("{0}")]
    Rejected(String),
    /// The key could not be unlocked or used (wrong passphrase, bad file).
    #[error("{0}")]
    Key(String),
    /// The configuration of the format is wrong (unknown digest, missing cert).
    #[error("{0}")]
    Config(String),
    /// The key's device (a PKCS#11 token) failed or is gone: this job fails with HTTP
    /// 503 + Retry-After (the client goes to another host); the next job reconnects.
    #[error("the signing key's token is unavailable: {0}")]
    Unavailable(String),
    /// Our fault or the environment's (I/O error, TSA down).
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<std::io::Error> for SignError {
    fn from(e: std::io::Error) -> Self {
        SignError::Internal(e.into())
    }
}
