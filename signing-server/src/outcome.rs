//! How one signing ended, and the one mapping from that to its audit record,
//! its metric and its log line: uploads (signed by the queue's jobs) and
//! digest signings (`POST /digest`, signed by [`crate::queue::Queue::sign_digest`])
//! alike. The answer to the client is made from the same [`Ended`].
//!
//! [`settle`] is the one gate between a signature and its release: its
//! transparency log entry (with `[log]`) is durable and checkpointed, then its
//! audit record is written; either failing turns the ending into
//! [`Ended::Withheld`] (503 `log_unavailable` / `audit_unavailable`): nothing
//! signed is released unlogged or unaudited.

use std::net::IpAddr;
use std::time::Duration;

use formats::SignError;

use crate::audit::{Audit, AuditRecord};
use crate::metrics::Metrics;
use crate::tlog::{Entry, Log};

/// Who asked for a signing, and of what: what the audit log keeps.
#[derive(Debug, Clone)]
pub struct Signing {
    /// Format name.
    pub format: String,
    /// The format's type (`gpg`, `authenticode`…), for the transparency log.
    pub kind: String,
    /// The signing key as the transparency log names it ([`formats::Signer::log_key_id`]).
    pub key_id: String,
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
    /// Who made the token, when it names them (second factor, two people).
    pub minted_by: Option<crate::auth::MintedBy>,
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
    /// Signed, but its log entry or audit record could not be written: not
    /// released (503); another host, or later, may sign it.
    Withheld(Withheld),
}

/// Why a signature was withheld.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Withheld {
    /// Its transparency log entry could not be written.
    Log(String),
    /// Its audit record could not be written.
    Audit(String),
}

impl Withheld {
    /// The reason label of the 503 (`signing_refused_requests_total`).
    pub fn label(&self) -> &'static str {
        match self {
            Withheld::Log(_) => "log_unavailable",
            Withheld::Audit(_) => "audit_unavailable",
        }
    }

    /// The client's message.
    pub fn message(&self) -> &'static str {
        match self {
            Withheld::Log(_) => {
                "the transparency log cannot be written on this server, so nothing signed is released; use another host"
            }
            Withheld::Audit(_) => {
                "the audit log cannot be written on this server, so nothing signed is released; use another host"
            }
        }
    }

    fn reason(&self) -> &str {
        match self {
            Withheld::Log(m) | Withheld::Audit(m) => m,
        }
    }
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
            Ended::Unavailable(_) | Ended::Failed(_) | Ended::Withheld(_) => "error",
        }
    }

    fn reason(&self) -> Option<&str> {
        match self {
            Ended::Signed(_) => None,
            Ended::Rejected(m) | Ended::Unavailable(m) | Ended::Failed(m) => Some(m),
            Ended::Withheld(w) => Some(w.reason()),
        }
    }
}

/// The gate: for a signature, appends its transparency log entry (when
/// there is a log) and waits until it is durable and checkpointed, then
/// [`record`]s the ending. Returns the ending as released (a signature
/// whose entry or record could not be written is [`Ended::Withheld`]) and
/// the entry's index in the log.
pub async fn settle(
    audit: &Audit,
    log: Option<&Log>,
    metrics: &Metrics,
    r: &Signing,
    ended: Ended,
    took: Duration,
) -> (Ended, Option<u64>) {
    let mut index = None;
    let mut ended = ended;
    if let (Ended::Signed(output), Some(log)) = (&ended, log) {
        let entry = Entry {
            format: &r.format,
            kind: &r.kind,
            mode: if r.digest.is_some() {
                "digest"
            } else {
                "upload"
            },
            key: &r.key_id,
            input_sha256: Some(&r.input_sha256),
            signed_digest: r.digest.as_deref(),
            output_sha256: output,
            token_id: &r.token_id,
            token_scope: &r.token_scope,
        };
        match log
            .append(entry.to_bytes(std::time::SystemTime::now()))
            .await
        {
            Ok(i) => index = Some(i),
            Err(e) => {
                ended = Ended::Withheld(Withheld::Log(crate::clean::clean(&format!(
                    "signed but not released: {e}"
                ))))
            }
        }
    }
    (record(audit, metrics, r, ended, took), index)
}

/// Audits, counts and logs one ended signing; returns the ending as
/// released: a signature whose audit record could not be written is
/// [`Ended::Withheld`].
pub fn record(
    audit: &Audit,
    metrics: &Metrics,
    r: &Signing,
    ended: Ended,
    took: Duration,
) -> Ended {
    let output = match &ended {
        Ended::Signed(sha256) => Some(sha256.as_str()),
        _ => None,
    };
    let written = audit.record(&AuditRecord {
        peer: r.peer,
        token_id: &r.token_id,
        token_scope: &r.token_scope,
        format: &r.format,
        filename: &r.filename,
        input_sha256: &r.input_sha256,
        output_sha256: output,
        duration: took,
        outcome: ended.label(),
        reason: ended.reason(),
        digest: r.digest.as_deref(),
        minted_by: r.minted_by.as_ref(),
    });
    let ended = match (ended, written) {
        (Ended::Signed(_), Err(e)) => Ended::Withheld(Withheld::Audit(e.to_string())),
        (ended, _) => ended,
    };
    let label = ended.label();
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
    match &ended {
        Ended::Signed(out) => {
            tracing::info!(%format, mode, input_sha256 = %input, digest = r.digest.as_deref().unwrap_or(""), output_sha256 = %out, "signed")
        }
        Ended::Rejected(reason) => {
            tracing::info!(%format, mode, input_sha256 = %input, %reason, "input rejected")
        }
        Ended::Unavailable(reason) | Ended::Failed(reason) => {
            tracing::error!(%format, mode, input_sha256 = %input, "signing failed: {reason}")
        }
        Ended::Withheld(w) => {
            tracing::error!(%format, mode, input_sha256 = %input, "signed but withheld: {}", w.reason())
        }
    }
    ended
}

/// Audits an upload of an input already signed or being signed for its
/// format: nothing is signed again, the earlier result (`earlier`, its
/// output sha256 when it is done) is what the client will fetch; the record
/// says who asked for it.
pub fn record_duplicate(audit: &Audit, r: &Signing, earlier: Option<&str>) {
    // Nothing new is released here (the earlier result had its own record),
    // so a failure is logged, not withheld.
    let written = audit.record(&AuditRecord {
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
        minted_by: r.minted_by.as_ref(),
    });
    if let Err(e) = written {
        tracing::error!(format = %r.format, input_sha256 = %r.input_sha256, "the audit record of a re-upload was not written: {e}");
    }
    tracing::debug!(format = %r.format, input_sha256 = %r.input_sha256, "already signed or pending: not signed again");
}
