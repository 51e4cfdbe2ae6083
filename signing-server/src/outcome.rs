//! How one signing ended, and the one mapping from that to its audit record,
//! its metric and its log line: uploads (signed by the queue's jobs) and
//! digest signings (`POST /digest`, signed by [`crate::queue::Queue::sign_digest`])
//! alike. The answer to the client is made from the same [`Ended`].

use std::net::IpAddr;
use std::time::Duration;

use formats::SignError;

use crate::audit::{Audit, AuditRecord};
use crate::metrics::Metrics;

/// Who asked for a signing, and of what: what the audit log keeps.
#[derive(Debug, Clone)]
pub struct Signing {
    /// Format name.
    pub format: String,
    /// Client's filename label.
    pub filename: String,
    /// Who asked.
    pub peer: IpAddr,
    /// The token's chaff (its public id).
    pub token_id: String,
    /// The token's format scope (`gpg,mar`; "" when unscoped).
    pub token_scope: String,
    /// Hex sha256 of the input file, where the server knows it ("" otherwise:
    /// a digest signing of a MAR or an Authenticode hash).
    pub input_sha256: String,
    /// Digest signing: the digest the client sent, hex; `None` for an upload.
    pub digest: Option<String>,
}

/// How a signing ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Signed; the hex sha256 of what the client receives.
    Signed(String),
    /// The input's fault (422); the reason is for the client.
    Rejected(String),
    /// The key's token failed (503): another host, or later, may sign it.
    Unavailable(String),
    /// Failed on our side (500).
    Failed(String),
}

impl Ended {
    /// The ending of a signer's error, its reason made safe for a client, a
    /// log line and the audit log.
    pub fn from_error(e: &SignError) -> Ended {
        match e {
            SignError::Rejected(m) => Ended::Rejected(crate::clean::clean(m)),
            SignError::Unavailable(m) => {
                Ended::Unavailable(crate::clean::clean(&format!("the key's token: {m}")))
            }
            e => Ended::Failed(crate::clean::clean(&format!("{e:#}"))),
        }
    }

    /// The outcome label of the audit log and the metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Ended::Signed(_) => "ok",
            Ended::Rejected(_) => "rejected",
            Ended::Unavailable(_) | Ended::Failed(_) => "error",
        }
    }

    fn reason(&self) -> Option<&str> {
        match self {
            Ended::Signed(_) => None,
            Ended::Rejected(m) | Ended::Unavailable(m) | Ended::Failed(m) => Some(m),
        }
    }
}

/// Audits, counts and logs one ended signing.
pub fn record(audit: &Audit, metrics: &Metrics, r: &Signing, ended: &Ended, took: Duration) {
    let label = ended.label();
    let output = match ended {
        Ended::Signed(sha256) => Some(sha256.as_str()),
        _ => None,
    };
    audit.record(&AuditRecord {
        peer: r.peer,
        token_id: &r.token_id,
        token_scope: &r.token_scope,
        format: &r.format,
        filename: &r.filename,
        input_sha256: &r.input_sha256,
        output_sha256: output,
        duration: took,
        outcome: label,
        reason: ended.reason(),
        digest: r.digest.as_deref(),
    });
    match &r.digest {
        None => metrics.signed(&r.format, label, took),
        Some(_) => metrics.inc(
            "signing_digest_signatures_total",
            &[("format", &r.format), ("outcome", label)],
        ),
    }
    let mode = if r.digest.is_some() {
        "digest"
    } else {
        "upload"
    };
    let (format, input) = (&r.format, &r.input_sha256);
    match ended {
        Ended::Signed(out) => {
            tracing::info!(%format, mode, input_sha256 = %input, digest = r.digest.as_deref().unwrap_or(""), output_sha256 = %out, "signed")
        }
        Ended::Rejected(reason) => {
            tracing::info!(%format, mode, input_sha256 = %input, %reason, "input rejected")
        }
        Ended::Unavailable(reason) | Ended::Failed(reason) => {
            tracing::error!(%format, mode, input_sha256 = %input, "signing failed: {reason}")
        }
    }
}

/// Audits an upload of an input already signed or being signed for its
/// format: nothing is signed again, the earlier result (`earlier`, its
/// output sha256 when it is done) is what the client will fetch; the record
/// says who asked for it.
pub fn record_duplicate(audit: &Audit, r: &Signing, earlier: Option<&str>) {
    audit.record(&AuditRecord {
        peer: r.peer,
        token_id: &r.token_id,
        token_scope: &r.token_scope,
        format: &r.format,
        filename: &r.filename,
        input_sha256: &r.input_sha256,
        output_sha256: earlier,
        duration: Duration::ZERO,
        outcome: "duplicate",
        reason: Some("already signed or being signed: the earlier result is served"),
        digest: None,
    });
    tracing::debug!(format = %r.format, input_sha256 = %r.input_sha256, "already signed or pending: not signed again");
}
