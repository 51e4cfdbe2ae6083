//! The file part of an upload: hashed (SHA-256 always, SHA-1 when the client
//! gave one) and, unless the signer signs from the SHA-256 state, written to
//! a temp file, with the size limit checked on every piece before it is
//! handed on.
//!
//! The async task reads, decrypts and parses; for a large upload a blocking
//! thread hashes and writes what it receives through a short bounded channel
//! (at most [`SINK_DEPTH`] pieces in flight), so hashing runs beside the TLS
//! work instead of after it. A small upload (by its Content-Length) is hashed
//! and written in the task: a thread hand-off per piece would cost more than
//! the work.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::{header, StatusCode};
use futures_util::Stream;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::events::next_event;
use super::Refusal;
use crate::config::UPLOAD_RATE_GRACE;
use crate::form::{Event, Form};
use crate::state::{AppState, FormatEntry};
use crate::store::TempPath;

/// Pieces of an upload in flight between the reading task and its writer.
const SINK_DEPTH: usize = 8;
/// Uploads up to this size (declared) are hashed and written inline.
const INLINE_UPLOAD: u64 = 1 << 20;

/// A file received whole: its size, hashes (not finalized) and temp file.
pub(super) struct Received {
    pub size: u64,
    pub sha1: Option<Sha1>,
    pub sha256: Sha256,
    pub file: Option<TempPath>,
}

/// What [`Sink::finish`] hands back: the hashes and the complete temp file.
type Sunk = (Option<Sha1>, Sha256, Option<TempPath>);

/// Where the receiving loop hands each piece of an upload.
enum Feed {
    /// Hashed and written in the receiving task (small uploads).
    Inline(Box<Sink>),
    /// Sent to a blocking thread that hashes and writes (large uploads).
    Worker(
        tokio::sync::mpsc::Sender<bytes::Bytes>,
        tokio::task::JoinHandle<std::io::Result<Sunk>>,
    ),
}

/// Reads the file part (the events up to the next part or the end of the
/// form) into hashes and, when the signer needs one, a temp file.
pub(super) async fn receive<S, E>(
    state: &AppState,
    form: &mut Form<S>,
    fmt: &FormatEntry,
    format: &str,
    want_sha1: bool,
    declared: Option<u64>,
) -> Result<Received, Refusal>
where
    S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let temp = (!fmt.signer.signs_sha256_state()).then(|| state.store.temp_path("upload"));
    let sink = Sink::new(want_sha1, temp);
    let mut feed = if declared.is_some_and(|n| n <= INLINE_UPLOAD) {
        Feed::Inline(Box::new(sink.map_err(|e| storage_error(&e))?))
    } else {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(SINK_DEPTH);
        let worker = tokio::task::spawn_blocking(move || {
            let mut sink = sink?;
            while let Some(chunk) = rx.blocking_recv() {
                sink.feed(&chunk)?;
            }
            sink.finish()
        });
        Feed::Worker(tx, worker)
    };
    let received = async {
        let mut size: u64 = 0;
        let started = tokio::time::Instant::now();
        loop {
            let next = next_event(state, form, None);
            let event = match rate_due(started, size, state.min_upload_rate) {
                None => next.await?,
                Some(due) => match tokio::time::timeout_at(due, next).await {
                    Ok(event) => event?,
                    Err(_) => return Err(too_slow(state.min_upload_rate, size, started)),
                },
            };
            let chunk = match event {
                Event::Data(c) => c,
                Event::PartEnd | Event::Part(_) | Event::End | Event::NeedMore => return Ok(size),
            };
            size += chunk.len() as u64;
            state
                .metrics
                .upload_bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            if size > fmt.max_filesize {
                return Err(too_large(fmt.max_filesize, format));
            }
            match &mut feed {
                Feed::Inline(sink) => sink.feed(&chunk).map_err(|e| storage_error(&e))?,
                Feed::Worker(tx, _) => {
                    if tx.send(chunk).await.is_err() {
                        // The writer stopped on an error: it is reported below.
                        return Ok(size);
                    }
                }
            }
        }
    }
    .await;
    // Always finish the writer (wait for the thread), so a refused upload's
    // temp file is gone before the answer leaves.
    let sunk = match feed {
        Feed::Inline(sink) => sink.finish().map_err(|e| storage_error(&e)),
        Feed::Worker(tx, worker) => {
            drop(tx);
            match worker.await {
                Ok(done) => done.map_err(|e| storage_error(&e)),
                Err(e) => Err(Refusal::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("upload writer failed: {e}"),
                )),
            }
        }
    };
    let size = received?;
    let (sha1, sha256, file) = sunk?;
    Ok(Received {
        size,
        sha1,
        sha256,
        file,
    })
}

/// When the next piece of a file of which `size` bytes came since `started`
/// must arrive for it to average `rate` bytes/s, after the grace; `None` when
/// there is no floor.
fn rate_due(started: tokio::time::Instant, size: u64, rate: u64) -> Option<tokio::time::Instant> {
    if rate == 0 {
        return None;
    }
    Some(started + UPLOAD_RATE_GRACE + Duration::from_secs_f64(size as f64 / rate as f64))
}

/// `408`: the file comes slower than `min_upload_rate`; the connection is
/// closed (so its queue place is not held by a trickle).
fn too_slow(rate: u64, size: u64, started: tokio::time::Instant) -> Refusal {
    Refusal::new(
        StatusCode::REQUEST_TIMEOUT,
        "too_slow",
        format!(
            "upload too slow: {size} bytes in {} s, the floor is {rate} bytes/s (min_upload_rate)",
            started.elapsed().as_secs()
        ),
    )
    .with(header::CONNECTION, "close")
}

/// `413`: the upload passes the format's limit; the connection is closed.
pub(super) fn too_large(limit: u64, format: &str) -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("file too large: the limit for format {format} is {limit} bytes"),
    )
    .with(header::CONNECTION, "close")
}

/// Where an upload's bytes go: the hashes, and the temp file when the
/// signer needs one.
struct Sink {
    h1: Option<Sha1>,
    h256: Sha256,
    file: Option<(TempPath, std::io::BufWriter<std::fs::File>)>,
}

impl Sink {
    fn new(sha1: bool, temp: Option<TempPath>) -> std::io::Result<Sink> {
        let file = match temp {
            Some(t) => {
                let f = std::fs::File::create(t.path())?;
                Some((t, std::io::BufWriter::with_capacity(256 * 1024, f)))
            }
            None => None,
        };
        Ok(Sink {
            h1: sha1.then(Sha1::new),
            h256: Sha256::new(),
            file,
        })
    }

    fn feed(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        if let Some(h1) = &mut self.h1 {
            h1.update(chunk);
        }
        self.h256.update(chunk);
        match &mut self.file {
            Some((_, w)) => std::io::Write::write_all(w, chunk),
            None => Ok(()),
        }
    }

    /// The hashes (not finalized) and the complete temp file, if any.
    fn finish(self) -> std::io::Result<Sunk> {
        let temp = match self.file {
            Some((t, mut w)) => {
                std::io::Write::flush(&mut w)?;
                Some(t)
            }
            None => None,
        };
        Ok((self.h1, self.h256, temp))
    }
}

/// A storage failure: `507` when the disk is full, else `503` (another host may do).
pub(super) fn storage_error(e: &std::io::Error) -> Refusal {
    tracing::error!("storage error: {e}");
    if e.kind() == std::io::ErrorKind::StorageFull {
        return Refusal::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "disk_full",
            "server out of disk space; use another host",
        )
        .with(header::RETRY_AFTER, "30");
    }
    Refusal::busy("storage_error", "server storage error; use another host")
}
