//! The audit log: one JSON line per signing, appended to `audit_log`.
//!
//! It holds who (peer IP, token chaff: a token's public id), what (format,
//! filename label, input and output sha256; for digest signing the digest
//! the client sent), how long and how it ended.
//! Never a token's MAC, a password or a passphrase.
//!
//! Fail closed (issue 25): [`Audit::record`] says whether the line was
//! written, and a signature whose record was not is not released (503
//! `audit_unavailable`). Failures are counted and /health shows the state
//! until a write works again.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One signing, as audited.
pub struct AuditRecord<'a> {
    /// Uploader.
    pub peer: IpAddr,
    /// The token's chaff.
    pub token_id: &'a str,
    /// The formats the token was limited to (`gpg,mar`), "" when it was not.
    pub token_scope: &'a str,
    /// Format name.
    pub format: &'a str,
    /// Client's filename label.
    pub filename: &'a str,
    /// Input digest.
    pub input_sha256: &'a str,
    /// Output digest, when signed.
    pub output_sha256: Option<&'a str>,
    /// Time from queueing to the end.
    pub duration: Duration,
    /// `ok`, `rejected`, `error`, or `duplicate` (an upload of an input
    /// already signed or being signed: not signed again).
    pub outcome: &'a str,
    /// Why, when not `ok` (control characters escaped, cut to one line).
    pub reason: Option<&'a str>,
    /// Digest signing: the digest the client sent, hex (`None`: an upload).
    pub digest: Option<&'a str>,
    /// Who made the token, when it names them (second factor, two people).
    pub minted_by: Option<&'a crate::auth::MintedBy>,
}

/// The audit sink (a file, or nowhere).
pub struct Audit {
    file: Option<Mutex<std::fs::File>>,
    /// Records that could not be written.
    failures: AtomicU64,
    /// The last write failed (and none has worked since).
    failing: AtomicBool,
}

impl Audit {
    /// Opens (appends to) the audit log, creating it with mode 0600.
    pub fn open(path: Option<&Path>) -> std::io::Result<Audit> {
        let file = match path {
            Some(p) => {
                use std::os::unix::fs::OpenOptionsExt;
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                Some(Mutex::new(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .mode(0o600)
                        .open(p)?,
                ))
            }
            None => None,
        };
        Ok(Audit {
            file,
            failures: AtomicU64::new(0),
            failing: AtomicBool::new(false),
        })
    }

    /// Records that could not be written, since start-up.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Whether the last write failed.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// Writes one record, in one `write` call; `Err` (logged and counted)
    /// when it could not be written: then nothing it records is released.
    pub fn record(&self, r: &AuditRecord<'_>) -> Result<(), std::io::Error> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let mut line = serde_json::json!({
            "time": time,
            "peer": r.peer.to_string(),
            "token_id": r.token_id,
            "token_scope": (!r.token_scope.is_empty()).then_some(r.token_scope),
            "format": r.format,
            "filename": r.filename,
            "input_sha256": r.input_sha256,
            "output_sha256": r.output_sha256,
            "duration_ms": r.duration.as_millis() as u64,
            "outcome": r.outcome,
            "reason": r.reason,
            "mode": if r.digest.is_some() { "digest" } else { "upload" },
            "digest": r.digest,
        });
        if let (Some(m), Some(map)) = (r.minted_by, line.as_object_mut()) {
            map.insert("minted_by".into(), m.user.clone().into());
            map.insert("approved_by".into(), m.approver.clone().into());
            let factor = if m.second_factor { "totp" } else { "none" };
            map.insert("second_factor".into(), factor.into());
        }
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        let written = file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(&bytes);
        match &written {
            Ok(()) => self.failing.store(false, Ordering::Relaxed),
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.failing.store(true, Ordering::Relaxed);
                tracing::error!("cannot write the audit log: {e}");
            }
        }
        written
    }
}
