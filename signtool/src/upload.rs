//! `POST /sign/FORMAT`: the file streamed from disk as the `filedata` part of
//! a multipart form, fails over as [`crate::transfer`] decides.
//!
//! Two orders of the form (docs/PROTOCOL.md):
//! - the file's `sha256` before `filedata` (Mozilla's order, and ours when the
//!   file was already hashed: a cache key, a GET that found nothing);
//! - `sha256` after `filedata`, when the host's /health says
//!   `"trailing_sha256": true` and the file has not been hashed yet: the file
//!   is hashed while it is sent (one read instead of two), and the digest
//!   follows it. The server checks it as it would a leading one.
//!
//! An upload that makes no progress for `--read-timeout` is abandoned; on a
//! terminal, an upload of 1 MiB or more shows a progress bar.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::multipart::{Form, Part};

use formats::digest_signing::Sha256State;

use crate::log;
use crate::session::{describe, refusal, retry, Hashes, Session, TryError};

/// How the file's digest travels with it.
pub(crate) enum Digest<'a> {
    /// Known: sent before the file.
    Before(&'a Hashes),
    /// Computed while sending, sent after the file; returned on success.
    After,
}

/// Uploads `input` to `url` for `format`. Returns the file's digests when
/// they were computed on the way ([`Digest::After`]).
pub(crate) async fn upload(
    s: &Session,
    url: &str,
    format: &str,
    input: &Path,
    label: &str,
    digest: Digest<'_>,
) -> Result<Option<Hashes>, TryError> {
    let file = tokio::fs::File::open(input)
        .await
        .map_err(|e| TryError::Local(format!("cannot read {}: {e}", input.display())))?;
    let size = match &digest {
        Digest::Before(h) => h.size,
        Digest::After => file
            .metadata()
            .await
            .map_err(|e| TryError::Local(format!("cannot read {}: {e}", input.display())))?
            .len(),
    };
    if let Some(limit) = s.health_of(url, format).await.max_filesize {
        if size > limit {
            return Err(TryError::Fatal(format!(
                "413 file too large: {size} bytes, the limit for format {format} is {limit} bytes (from its /health; not uploaded)"
            )));
        }
    }
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    // Hashing on the way: the state is filled as the file is read, and
    // finished by the trailing part (polled only after the file's last byte).
    let hashing =
        matches!(digest, Digest::After).then(|| Arc::new(Mutex::new(Sha256State::default())));
    let stream = read_ahead(file.into_std().await, hashing.clone()).inspect(move |c| {
        if let Ok(c) = c {
            counter.fetch_add(c.len() as u64, Ordering::Relaxed);
        }
    });
    let part = Part::stream_with_length(reqwest::Body::wrap_stream(stream), size)
        .file_name(label.to_string())
        .mime_str("application/octet-stream")
        .map_err(|e| TryError::Local(e.to_string()))?;
    let mut form = Form::new()
        .text("token", s.token.clone())
        .text("nonce", s.nonce.get())
        .text("filename", label.to_string());
    let shown = match &digest {
        Digest::Before(h) => {
            form = form.text("sha256", h.sha256.clone());
            h.sha256.clone()
        }
        Digest::After => label.to_string(),
    };
    // filedata last but for a trailing digest: the server reads the text
    // fields before the file.
    form = form.part("filedata", part);
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<Hashes>();
    if let Some(state) = hashing {
        form = form.part("sha256", trailing(state, size, done_tx));
    }
    let target = format!("{url}/sign/{format}");
    log::debug(format!("{shown}: POST {target} ({size} bytes)"));
    let send = s
        .client
        .post(&target)
        .multipart(form)
        .timeout(s.remaining())
        .send();
    let r = watch(send, label, size, &sent, s.read_timeout)
        .await?
        .map_err(|e| retry(describe(&e)))?;
    if r.status().as_u16() != 202 {
        return Err(refusal(r).await);
    }
    if let Some(n) = r.headers().get("x-nonce").and_then(|v| v.to_str().ok()) {
        s.nonce.store(n);
    }
    match digest {
        Digest::Before(_) => Ok(None),
        // The server answers only after reading the trailing part, so the
        // digest was made; a peer that answers 202 before the file's end is
        // not believed (and waiting for that part would wait forever).
        Digest::After => match done_rx.try_recv() {
            Ok(hashes) => Ok(Some(hashes)),
            Err(_) => Err(retry(
                "answered 202 before the file and its digest were sent: not believed",
            )),
        },
    }
}

/// Bytes read from disk at a time.
const CHUNK: usize = 256 * 1024;

/// The file as a stream of chunks, read (and, for a trailing digest, hashed)
/// on a thread of its own a few chunks ahead of the connection, so hashing
/// and TLS encryption run side by side. The thread stops when the upload is
/// dropped (the receiver goes away).
fn read_ahead(
    mut file: std::fs::File,
    hashing: Option<Arc<Mutex<Sha256State>>>,
) -> impl futures_util::Stream<Item = std::io::Result<Vec<u8>>> {
    use std::io::Read as _;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    tokio::task::spawn_blocking(move || loop {
        let mut buf = vec![0u8; CHUNK];
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                buf.truncate(n);
                if let Some(h) = &hashing {
                    if let Ok(mut h) = h.lock() {
                        h.absorb(&buf);
                    }
                }
                if tx.blocking_send(Ok(buf)).is_err() {
                    break;
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                break;
            }
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// The trailing `sha256` part: 64 hex digits, made when the server asks for
/// them, i.e. after the file's last byte went out. The digests also go to
/// `done` (for the GET that follows and the log).
fn trailing(
    state: Arc<Mutex<Sha256State>>,
    size: u64,
    done: tokio::sync::oneshot::Sender<Hashes>,
) -> Part {
    let hex = futures_util::stream::once(async move {
        let state = state
            .lock()
            .map(|s| s.clone())
            .map_err(|_| std::io::Error::other("the upload's hash state was poisoned"))?;
        if state.length() != size {
            return Err(std::io::Error::other(format!(
                "the file changed while it was sent ({} of {size} bytes read)",
                state.length()
            )));
        }
        let sha256 = hex::encode(state.clone().finish());
        let _ = done.send(Hashes {
            sha256: sha256.clone(),
            size,
            state: Some(state),
        });
        Ok::<_, std::io::Error>(sha256)
    });
    Part::stream_with_length(reqwest::Body::wrap_stream(hex), 64)
}

/// Awaits `send` (an upload whose body counts its bytes in `sent`). Fails it
/// when nothing moved for `idle`: no byte sent and no answer (a stalled
/// server), however long the whole upload takes. On a terminal, an upload of
/// 1 MiB or more also shows a progress bar.
async fn watch<F: std::future::Future>(
    send: F,
    label: &str,
    size: u64,
    sent: &AtomicU64,
    idle: Duration,
) -> Result<F::Output, TryError> {
    let bar = if size >= (1 << 20) {
        log::upload_bar(label, size)
    } else {
        None
    };
    tokio::pin!(send);
    let step = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut tick = tokio::time::interval(step);
    let (mut last, mut last_change) = (0u64, Instant::now());
    let finish = |bar: &Option<indicatif::ProgressBar>| {
        if let Some(b) = bar {
            b.finish_and_clear();
        }
    };
    loop {
        tokio::select! {
            r = &mut send => {
                finish(&bar);
                return Ok(r);
            }
            _ = tick.tick() => {
                let now_sent = sent.load(Ordering::Relaxed);
                if now_sent != last {
                    (last, last_change) = (now_sent, Instant::now());
                } else if last_change.elapsed() >= idle {
                    finish(&bar);
                    let what = if now_sent >= size { "no answer after the upload" } else { "upload stalled" };
                    return Err(retry(format!("timed out: {what}, nothing moved for {} s (--read-timeout)", idle.as_secs_f64())));
                }
                if let Some(b) = &bar {
                    b.set_position(now_sent.min(size));
                }
            }
        }
    }
}
