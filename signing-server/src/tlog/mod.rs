//! The transparency log of every signature (issue 27): an append-only
//! RFC 6962 Merkle tree kept as C2SP tlog-tiles in `[log] dir`, with a
//! signed checkpoint (C2SP signed note, Ed25519) that anyone can check.
//!
//! [`Log::append`] resolves only once its entry is durable and covered by a
//! written, signed checkpoint: callers release a signature only then.
//! While the directory cannot be written, appends fail with
//! [`LogError::Unavailable`] (HTTP 503 `log_unavailable`) and the log
//! recovers by itself (`writer.rs`). Start-up reads the whole directory back
//! and refuses one whose tiles do not match its checkpoint (`disk.rs`).
//!
//! The formats (hashes, tiles, notes) are `formats::tlog`, shared with
//! signtool's checks. One writer per log: a fleet has one log per server.

mod disk;
mod entry;
mod tree;
mod writer;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use formats::tlog::tile::{self, Tile, MAX_ENTRY};
use formats::tlog::{Checkpoint, NoteKey};
use tokio::sync::{mpsc, oneshot};

pub use entry::{rfc3339, Entry};

use crate::config::LogConfig;
use writer::{Files, Pending, Writer};

/// Why an append was not logged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// The log cannot be written now (disk full, I/O error): try another host.
    #[error("the transparency log cannot be written: {0}")]
    Unavailable(String),
    /// The entry is longer than an entry bundle can hold (our bug, not the client's).
    #[error("log entry of {0} bytes is too long")]
    TooLong(usize),
}

/// Why the log could not be opened at start-up.
#[derive(Debug, thiserror::Error)]
#[error("[log] dir {dir}: {message}")]
pub struct StartupError {
    /// The directory.
    pub dir: String,
    /// What is wrong.
    pub message: String,
    /// The directory does not match its checkpoint, or belongs to another
    /// log (exit code 2), rather than an I/O error (exit code 1).
    pub mismatch: bool,
}

/// The last checkpoint written, as served.
struct Published {
    size: u64,
    note: Arc<str>,
    at: Instant,
}

/// What the handles and the writer share.
struct Shared {
    origin: String,
    verifier_key: String,
    published: RwLock<Published>,
    available: AtomicBool,
    last_error: Mutex<String>,
    metrics: LogMetrics,
}

impl Shared {
    fn published(&self, size: u64, note: String) {
        *self.published.write().unwrap_or_else(|p| p.into_inner()) = Published {
            size,
            note: note.into(),
            at: Instant::now(),
        };
    }

    fn set_unavailable(&self, message: &str) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = message.to_string();
        self.available.store(false, Ordering::SeqCst);
    }

    fn set_available(&self) {
        self.available.store(true, Ordering::SeqCst);
    }

    fn last_error(&self) -> String {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A handle on the log (cheap to clone).
#[derive(Clone)]
pub struct Log {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Pending>,
    dir: std::path::PathBuf,
    config: LogConfig,
}

/// The writer, to be spawned on the runtime ([`LogWriter::run`]).
pub struct LogWriter(Writer);

impl LogWriter {
    /// Runs the writer until every [`Log`] handle is gone.
    pub async fn run(self) {
        self.0.run().await
    }
}

/// Appends waiting for the writer, at most (then `append` waits for room).
const CHANNEL: usize = 64 * 1024;

impl Log {
    /// Opens (or creates) the log in `cfg.dir`, signed by `key`: reads the
    /// directory back and checks it against its checkpoint, removes what was
    /// never published, and writes the first checkpoint of a new log.
    pub fn open(cfg: &LogConfig, key: NoteKey) -> Result<(Log, LogWriter), StartupError> {
        let err = |message: String, mismatch: bool| StartupError {
            dir: cfg.dir.display().to_string(),
            message,
            mismatch,
        };
        let mut dir = disk::Dir::open(&cfg.dir).map_err(|e| err(e.to_string(), false))?;
        let verifier = key.verifier().clone();
        let key = Arc::new(key);
        let (tree, note) = match disk::read_back(&dir, &verifier).map_err(|m| err(m, true))? {
            Some(found) => found,
            None => {
                let tree = tree::Tree::default();
                let cp = Checkpoint {
                    origin: cfg.origin.clone(),
                    size: 0,
                    root: tree.root(),
                };
                let note = key.sign(&cp.text()).map_err(|e| err(e, false))?;
                let parent = dir
                    .write(disk::CHECKPOINT, note.as_bytes())
                    .map_err(|e| err(format!("cannot write the first checkpoint: {e}"), false))?;
                dir.sync_dirs(&std::collections::HashSet::from([parent]))
                    .map_err(|e| err(e.to_string(), false))?;
                tracing::info!(origin = %cfg.origin, "transparency log created");
                (tree, note)
            }
        };
        let removed = disk::remove_unpublished(&dir, tree.size());
        if removed > 0 {
            tracing::warn!(
                removed,
                "transparency log: removed tiles beyond the checkpoint (never published)"
            );
        }
        let size = tree.size();
        let shared = Arc::new(Shared {
            origin: cfg.origin.clone(),
            verifier_key: verifier.to_string(),
            published: RwLock::new(Published {
                size,
                note: note.into(),
                at: Instant::now(),
            }),
            available: AtomicBool::new(true),
            last_error: Mutex::new(String::new()),
            metrics: LogMetrics::default(),
        });
        let (tx, rx) = mpsc::channel(CHANNEL);
        let files = Files {
            tree,
            dir,
            key,
            origin: cfg.origin.clone(),
        };
        let writer = Writer {
            rx,
            files: Arc::new(Mutex::new(files)),
            shared: shared.clone(),
            interval: cfg.checkpoint_interval,
        };
        tracing::info!(origin = %cfg.origin, size, verifier_key = %shared.verifier_key, "transparency log open");
        Ok((
            Log {
                shared,
                tx,
                dir: cfg.dir.clone(),
                config: cfg.clone(),
            },
            LogWriter(writer),
        ))
    }

    /// Appends `entry`; resolves with its index once it is durable and a
    /// signed checkpoint covering it is written. Fails at once while the
    /// log is unavailable.
    pub async fn append(&self, entry: Vec<u8>) -> Result<u64, LogError> {
        if entry.len() > MAX_ENTRY {
            return Err(LogError::TooLong(entry.len()));
        }
        if !self.shared.available.load(Ordering::SeqCst) {
            return Err(LogError::Unavailable(self.shared.last_error()));
        }
        let (done, rx) = oneshot::channel();
        let stopped = || LogError::Unavailable("the log writer stopped".into());
        self.shared.metrics.waiting.fetch_add(1, Ordering::Relaxed);
        let sent = self
            .tx
            .send(Pending {
                entry,
                queued: Instant::now(),
                done,
            })
            .await;
        let result = match sent {
            Ok(()) => rx.await.unwrap_or_else(|_| Err(stopped())),
            Err(_) => Err(stopped()),
        };
        self.shared.metrics.waiting.fetch_sub(1, Ordering::Relaxed);
        result
    }

    /// The latest signed checkpoint (what `GET /log/checkpoint` serves).
    pub fn checkpoint(&self) -> Arc<str> {
        self.shared
            .published
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .note
            .clone()
    }

    fn size(&self) -> u64 {
        self.shared
            .published
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .size
    }

    /// The bytes of tile `path` (`tile/…`, strictly parsed), when the
    /// published tree has that tile; `None` for anything else. A partial
    /// tile removed since its full tile was written is cut from the full one
    /// (its first hashes or entries are the same).
    pub async fn tile(&self, path: &str) -> Option<Vec<u8>> {
        let tile = Tile::parse(path)?;
        if !tile.within(self.size()) {
            return None;
        }
        match tokio::fs::read(self.dir.join(tile.path())).await {
            Ok(bytes) => return Some(bytes),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound || tile.is_full() => return None,
            Err(_) => {}
        }
        let full = Tile {
            width: tile::WIDTH as u16,
            ..tile
        };
        if !full.within(self.size()) {
            return None;
        }
        let bytes = tokio::fs::read(self.dir.join(full.path())).await.ok()?;
        tile::cut_from_full(&tile, &bytes)
    }

    /// The `[log]` section it was opened with (a reload cannot change it).
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Whether appends are accepted now.
    pub fn available(&self) -> bool {
        self.shared.available.load(Ordering::SeqCst)
    }

    /// The signed-note verifier key (`origin+ID+key`).
    pub fn verifier_key(&self) -> &str {
        &self.shared.verifier_key
    }

    /// `/health`'s `"log"`.
    pub fn health(&self) -> serde_json::Value {
        let available = self.available();
        let mut h = serde_json::json!({
            "origin": self.shared.origin,
            "size": self.size(),
            "verifier_key": self.shared.verifier_key,
            "state": if available { "ok" } else { "unavailable" },
        });
        if !available {
            h["error"] = crate::clean::clean(&self.shared.last_error()).into();
        }
        h
    }

    /// The log's Prometheus metrics.
    pub fn metrics(&self) -> String {
        let (size, age) = {
            let p = self
                .shared
                .published
                .read()
                .unwrap_or_else(|p| p.into_inner());
            (p.size, p.at.elapsed())
        };
        self.shared.metrics.render(size, age, self.available())
    }
}

/// Latency buckets of append → checkpoint, in seconds (near the interval).
const BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 10.0];

/// The log's counters.
#[derive(Default)]
struct LogMetrics {
    write_failures: AtomicU64,
    waiting: AtomicU64,
    latency: Mutex<([u64; BUCKETS.len()], f64, u64)>,
}

impl LogMetrics {
    fn observe(&self, took: Duration) {
        let s = took.as_secs_f64();
        let mut l = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        for (b, c) in BUCKETS.iter().zip(l.0.iter_mut()) {
            if s <= *b {
                *c += 1;
            }
        }
        l.1 += s;
        l.2 += 1;
    }

    fn render(&self, size: u64, age: Duration, available: bool) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# TYPE signing_log_size gauge\nsigning_log_size {size}\n\
             # TYPE signing_log_checkpoint_age_seconds gauge\nsigning_log_checkpoint_age_seconds {:.3}\n\
             # TYPE signing_log_available gauge\nsigning_log_available {}\n\
             # TYPE signing_log_waiting_entries gauge\nsigning_log_waiting_entries {}\n\
             # TYPE signing_log_write_failures_total counter\nsigning_log_write_failures_total {}",
            age.as_secs_f64(),
            u8::from(available),
            self.waiting.load(Ordering::Relaxed),
            self.write_failures.load(Ordering::Relaxed),
        );
        let l = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "# TYPE signing_log_append_seconds histogram");
        for (b, c) in BUCKETS.iter().zip(l.0.iter()) {
            let _ = writeln!(out, "signing_log_append_seconds_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "signing_log_append_seconds_bucket{{le=\"+Inf\"}} {}\nsigning_log_append_seconds_sum {}\nsigning_log_append_seconds_count {}",
            l.2, l.1, l.2
        );
        out
    }
}

/// Unlocks the log's key file (PKCS#8 PEM, Ed25519) for `cfg.origin`,
/// asking `source` for its passphrase (prompt `log passphrase`) when it is
/// encrypted: after every format's key, in the start-up order.
pub fn unlock_key(
    cfg: &LogConfig,
    source: &mut dyn crate::passphrase::PassphraseSource,
) -> Result<NoteKey, String> {
    let encrypted =
        formats::keys::needs_passphrase(&cfg.key, "log key").map_err(|e| e.to_string())?;
    let pass = if encrypted {
        match source.ask("log") {
            Ok(Some(p)) => Some(p),
            Ok(None) => {
                return Err(format!(
                    "no passphrase given for the log key {} (stdin ended)",
                    cfg.key.display()
                ))
            }
            Err(e) => return Err(format!("cannot read the log key's passphrase: {e}")),
        }
    } else {
        None
    };
    let key = formats::keys::load_private_key(&cfg.key, "log key", pass.as_ref())
        .map_err(|e| e.to_string())?;
    NoteKey::new(&cfg.origin, key).map_err(|e| format!("log key {}: {e}", cfg.key.display()))
}
