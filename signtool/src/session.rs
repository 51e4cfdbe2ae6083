//! What every request of a run shares, below the failover loop
//! ([`crate::transfer`]) and its ways (digest, upload, fetch): the run's
//! [`Session`], a file's [`Hashes`], a verified [`Signed`] result, how a try
//! ends ([`TryError`]) and the answer-reading helpers they all use.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tempfile::TempPath;

use formats::digest_signing::Sha256State;

use crate::hosts::Backoff;
use crate::log;
pub use crate::log::describe;

/// Everything shared by the files of a run.
pub struct Session {
    /// The HTTPS client (TLS trust and timeouts set).
    pub client: reqwest::Client,
    /// Hosts per format name.
    pub pools: HashMap<String, crate::hosts::HostPool>,
    /// Token text (sent with uploads).
    pub token: String,
    /// The nonce, sent with uploads and replaced by each 202's X-Nonce.
    pub nonce: Nonce,
    /// Delay between tries.
    pub backoff: Backoff,
    /// Errors tolerated per file and format.
    pub max_errors: u32,
    /// End of the overall `--timeout`.
    pub deadline: Instant,
    /// Longest silence tolerated from a server (`--read-timeout`): waiting for
    /// an answer, between body chunks, or an upload making no progress.
    pub read_timeout: Duration,
    /// Per host URL, what its /health says of each format (read once).
    pub health: crate::health::Health,
    /// `--whole-file`: upload even where a host signs digests.
    pub whole_file: bool,
    /// Directories that received a renamed result: each is fsynced once,
    /// before the run ends, instead of once per file.
    pub renamed_in: Mutex<std::collections::BTreeSet<PathBuf>>,
    /// `--log-key`: every result must be in the host's transparency log.
    pub log_key: Option<formats::tlog::NoteVerifier>,
}

impl Session {
    pub(crate) fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// What `url`'s /health says of `format` (read once per host and run).
    pub(crate) async fn health_of(&self, url: &str, format: &str) -> crate::health::FormatInfo {
        let timeout = self.read_timeout.min(self.remaining());
        self.health.get(&self.client, timeout, url, format).await
    }

    /// Whether `format`'s result is a detached signature, as its hosts'
    /// /health say ([`crate::health::Health::detached`]).
    pub(crate) async fn detached(&self, format: &str) -> bool {
        let urls: Vec<&str> = self.pools.get(format).map_or_else(Vec::new, |pool| {
            (0..pool.len())
                .map(|i| pool.url(pool.start() + i))
                .collect()
        });
        let timeout = self.read_timeout.min(self.remaining());
        self.health
            .detached(&self.client, timeout, &urls, format)
            .await
    }
}

/// The nonce file of Mozilla's protocol (kept for compatibility).
pub struct Nonce {
    path: Option<PathBuf>,
    value: Mutex<String>,
}

impl Nonce {
    /// Reads `path` if it exists (a missing file means an empty nonce).
    pub fn load(path: Option<PathBuf>) -> Nonce {
        let value = path
            .as_deref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        Nonce {
            path,
            value: Mutex::new(value.trim().to_string()),
        }
    }

    pub(crate) fn get(&self) -> String {
        self.value.lock().map(|v| v.clone()).unwrap_or_default()
    }

    pub(crate) fn store(&self, new: &str) {
        let Ok(mut v) = self.value.lock() else { return };
        *v = new.to_string();
        if let Some(path) = &self.path {
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let written = tempfile::NamedTempFile::new_in(dir)
                .and_then(|mut t| std::io::Write::write_all(&mut t, new.as_bytes()).map(|_| t))
                .and_then(|t| t.persist(path).map_err(|e| e.error));
            if let Err(e) = written {
                log::warn(format!(
                    "warning: cannot update the nonce file {}: {e}",
                    path.display()
                ));
            }
        }
    }
}

/// Digest of a file, hex. Only SHA-256: the protocol takes `sha1` and/or
/// `sha256`, and a server hashes with each one it is given, so sending SHA-1
/// too would cost both sides a second hash of every byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashes {
    /// SHA-256 (the key of results, the cache and log lines).
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// The SHA-256 state before it was finished (for gpg's digest signing),
    /// when this file was hashed by [`hash_file`].
    pub state: Option<Sha256State>,
}

/// Hashes a file (SHA-256) in one pass, off the async threads.
pub async fn hash_file(path: &Path) -> std::io::Result<Hashes> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(&path)?;
        // Our resumable SHA-256: digest signing sends its state (gpg) with no second pass.
        let (mut h256, mut size) = (Sha256State::default(), 0u64);
        // No bigger than the file: many small files would each zero 1 MiB.
        let len = f.metadata()?.len();
        let mut buf = vec![0u8; len.clamp(4096, 1 << 20) as usize];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            let chunk = buf.get(..n).unwrap_or_default();
            h256.absorb(chunk);
            size += n as u64;
        }
        Ok(Hashes {
            sha256: hex::encode(h256.clone().finish()),
            size,
            state: Some(h256),
        })
    })
    .await
    .map_err(std::io::Error::other)?
}

/// A verified result in a temp file beside its destination (deleted on drop).
#[derive(Debug)]
pub struct Signed {
    /// The temp file.
    pub temp: TempPath,
    /// Its digests: checked against the server's header (a download), or
    /// not computed yet (a file built here by digest signing: computed when
    /// a next format or the cache needs them).
    pub hashes: Option<Hashes>,
    /// What the host released (for the `--log-key` check); `None` from the cache.
    pub released: Option<crate::transparency::Released>,
}

/// Why a file could not be signed.
#[derive(Debug)]
pub enum Failure {
    /// The servers could not or would not sign it (exit 1).
    Remote(String),
    /// Our side: unreadable input, unwritable output (exit 2).
    Local(String),
}

/// Why a request did not give an answer we can use.
pub(crate) enum TryError {
    /// Connection, timeout, TLS, 5xx, bad digest: the next host may do better.
    Retry {
        what: String,
        retry_after: Option<Duration>,
    },
    /// An answer every host would give (4xx): fail the file now.
    Fatal(String),
    /// `429`: the host signs this format at a limited rate; wait as it says
    /// and ask the same host again. Not a failure of the host: not counted
    /// against --max-errors, no rotation.
    Wait { what: String, wait: Duration },
    /// Our side.
    Local(String),
}

pub(crate) fn retry(what: impl Into<String>) -> TryError {
    TryError::Retry {
        what: what.into(),
        retry_after: None,
    }
}

/// The first line of an error body, bounded.
pub(crate) async fn message(r: reqwest::Response) -> String {
    let mut r = r;
    let mut buf = Vec::new();
    while buf.len() < 2048 {
        match r.chunk().await {
            Ok(Some(c)) => buf.extend_from_slice(&c),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().next().unwrap_or("").trim();
    line.chars().take(300).collect()
}

/// An answer that is neither success nor an expected 404.
pub(crate) async fn refusal(r: reqwest::Response) -> TryError {
    let status = r.status();
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let what = format!("{} {}", status.as_u16(), message(r).await);
    let what = what.trim_end().to_string();
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        // Whole seconds, at least 1 (and never more than a minute at a time).
        let wait = retry_after
            .unwrap_or(Duration::from_secs(1))
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        TryError::Wait { what, wait }
    } else if status.is_client_error() {
        TryError::Fatal(what)
    } else {
        TryError::Retry { what, retry_after }
    }
}

/// Creates a temp file in `dir` named after `name`, closed-over by a TempPath.
pub fn temp_in(dir: &Path, name: &str) -> std::io::Result<(std::fs::File, TempPath)> {
    let t = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".signtool-tmp")
        .tempfile_in(dir)?;
    Ok(t.into_parts())
}
