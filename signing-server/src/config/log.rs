//! `[log]`: the transparency log of every signature (issue 27). Without
//! this section the server keeps no log and behaves as before.

use std::path::PathBuf;
use std::time::Duration;

use super::ini::{Reader, Section};
use super::{unknown, ConfigError};

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// The log's Ed25519 private key: a PKCS#8 PEM file, encrypted or not.
    pub key: PathBuf,
    /// The log's name: the checkpoints' first line and the note key's name.
    pub origin: String,
    /// Where the tiles, entry bundles and checkpoint are kept.
    pub dir: PathBuf,
    /// Longest wait between an entry and the checkpoint that covers it
    /// (entries arriving meanwhile share that checkpoint).
    pub checkpoint_interval: Duration,
}

/// Default `checkpoint_interval`.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

pub(super) fn read_log(r: &Reader<'_>, s: &Section) -> Result<LogConfig, ConfigError> {
    const KNOWN: &[&str] = &["key", "origin", "dir", "checkpoint_interval"];
    let (mut key, mut origin, mut dir) = (None, None, None);
    let mut checkpoint_interval = DEFAULT_CHECKPOINT_INTERVAL;
    for e in &s.entries {
        match e.key.as_str() {
            "key" => {
                if e.value.starts_with("pkcs11:") {
                    return Err(r.err(
                        e.line,
                        "key: a log key in a PKCS#11 token is not supported yet; give a PKCS#8 PEM file (openssl genpkey -algorithm ed25519)",
                    ));
                }
                key = Some(r.file(e, true)?);
            }
            "origin" => {
                let o = e.value.trim();
                if o.is_empty() || o.chars().any(|c| c.is_whitespace() || c == '+') {
                    return Err(r.err(
                        e.line,
                        format!("origin: {o:?} must be non-empty, without spaces or + (for example signing1.example.com/log)"),
                    ));
                }
                origin = Some(o.to_string());
            }
            "dir" => dir = Some(r.file(e, false)?),
            "checkpoint_interval" => {
                let ms: u64 = r.number(e, "a whole number of milliseconds")?;
                if !(1..=60_000).contains(&ms) {
                    return Err(r.err(
                        e.line,
                        "checkpoint_interval: between 1 and 60000 milliseconds",
                    ));
                }
                checkpoint_interval = Duration::from_millis(ms);
            }
            _ => return Err(unknown(r, s, e, KNOWN)),
        }
    }
    let missing = |k: &str| r.err(s.line, format!("[log] needs `{k}`"));
    Ok(LogConfig {
        key: key.ok_or_else(|| missing("key"))?,
        origin: origin.ok_or_else(|| missing("origin"))?,
        dir: dir.ok_or_else(|| missing("dir"))?,
        checkpoint_interval,
    })
}
