//! The one gate between a signature and its release: its transparency log
//! entry (when `[log]` is configured) is durable and checkpointed, then its
//! audit record is written; only then may the caller release it (the GET of
//! an upload's result, the 200 of `/digest`). Either failing withholds the
//! signature: 503 with `log_unavailable` or `audit_unavailable`.

use std::time::SystemTime;

use crate::audit::{Audit, AuditRecord};
use crate::tlog::{Entry, Log};

/// Why a signature was withheld.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Withheld {
    /// Its log entry could not be written.
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
}

/// Logs `entry` (when there is a log), then audits `record` (an `ok`
/// signing); `Ok` with the entry's index in the log (`None`: no log) when
/// the signature may be released.
pub async fn release(
    log: Option<&Log>,
    audit: &Audit,
    entry: Entry<'_>,
    record: AuditRecord<'_>,
) -> Result<Option<u64>, Withheld> {
    let mut index = None;
    if let Some(log) = log {
        match log.append(entry.to_bytes(SystemTime::now())).await {
            Ok(i) => index = Some(i),
            Err(e) => {
                let reason = format!("signed but not released: {e}");
                // Best effort: the signature is withheld whether or not this is written.
                let _ = audit.record(&AuditRecord {
                    outcome: "error",
                    reason: Some(&reason),
                    ..record
                });
                return Err(Withheld::Log(e.to_string()));
            }
        }
    }
    audit
        .record(&record)
        .map_err(|e| Withheld::Audit(e.to_string()))?;
    Ok(index)
}
