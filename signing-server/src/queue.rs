//! The signing queue: bounded, deduplicated, off the async threads.
//!
//! **Invariants:** at most one job per (format, input sha256) exists at any
//! time, so the same input is never signed twice at once and a finished
//! result is reused; at most `max_queue` uploads in progress plus jobs
//! pending (queued or running) exist at once, each holding a [`Slot`]; at
//! most `concurrency` jobs run at once, each on a blocking thread.
//! A result is visible only once its file is complete in the store.

use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use formats::scratch::ScratchBudget;
use formats::{SignContext, SignError, Signer};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Semaphore};

use crate::audit::{Audit, AuditRecord};
use crate::metrics::Metrics;
use crate::release::{release, Withheld};
use crate::store::{Store, TempPath};
use crate::tlog::Log;

/// A finished, stored result.
#[derive(Debug, Clone)]
pub struct ResultInfo {
    /// Where the signed output is.
    pub path: PathBuf,
    /// Hex sha1 of the output.
    pub sha1: String,
    /// Hex sha256 of the output.
    pub sha256: String,
    /// Size of the output.
    pub size: u64,
    /// Its entry's index in the transparency log (`None`: no `[log]`).
    pub log_index: Option<u64>,
}

enum State {
    /// Queued or signing; the channel turns `true` when the job ends.
    Pending(watch::Receiver<bool>),
    Done(Arc<ResultInfo>),
    /// The signer refused the input; the reason is for the client.
    Rejected(String),
    /// The key's token failed while signing it: the client should go to another host
    /// (503); an upload of the same input signs it again.
    Unavailable(String),
    /// Signed, but its log entry or audit record could not be written: not
    /// released (503); an upload of the same input signs it again.
    Withheld(Withheld),
}

struct Entry {
    state: State,
    last_used: Instant,
}

#[derive(Default)]
struct Inner {
    /// (format, input sha256) → job.
    jobs: HashMap<(String, String), Entry>,
    /// (format, input sha1) → input sha256, for the clients that ask by sha1.
    by_sha1: HashMap<(String, String), String>,
    /// Slots taken: uploads in progress plus jobs in `State::Pending`.
    pending: usize,
    /// When the last job ended (its client may not have fetched it yet).
    last_finished: Option<Instant>,
}

/// What a GET finds.
pub enum Lookup {
    /// Signed; serve it.
    Done(Arc<ResultInfo>),
    /// Queued or signing: wait on the receiver.
    Pending(watch::Receiver<bool>),
    /// The signer refused this input.
    Rejected(String),
    /// The key's token failed while signing this input.
    Unavailable(String),
    /// Signed, but not released: see [`Withheld`].
    Withheld(Withheld),
    /// Never seen, expired, or failed on our side.
    Unknown,
}

/// What an upload leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum Submit {
    /// A new job was queued.
    Queued,
    /// The same input is already signed or pending for this format.
    Duplicate,
}

/// A place in the queue, taken before an upload is read. Dropped, it frees
/// the place; [`Queue::submit`] turns it into a pending job.
pub struct Slot {
    queue: Arc<Queue>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.queue.lock();
        inner.pending = inner.pending.saturating_sub(1);
    }
}

/// An upload, as its signer will take it.
pub enum Upload {
    /// Streamed to a file in `tmp/`; moved into the store while the job waits.
    File(TempPath),
    /// Never stored: the signer signs from the SHA-256 state after its bytes
    /// ([`Signer::signs_sha256_state`]), so the upload was hashed once and
    /// nothing of it was written.
    Sha256State(Box<Sha256>),
}

/// What `sign_one` signs.
enum Input {
    File(PathBuf),
    Sha256State(Box<Sha256>),
}

/// An uploaded, hash-checked input, ready to be signed.
pub struct Job {
    /// Format name.
    pub format: String,
    /// The format's type (`gpg`, `authenticode`…), for the transparency log.
    pub kind: String,
    /// Its signer.
    pub signer: Arc<dyn Signer>,
    /// The upload.
    pub upload: Upload,
    /// Hex sha1 of the input, when the client gave one (then clients may ask by it).
    pub sha1: Option<String>,
    /// Hex sha256 of the input.
    pub sha256: String,
    /// Client's filename label.
    pub filename: String,
    /// Who uploaded it.
    pub peer: IpAddr,
    /// The token's chaff (its public id), for the audit log.
    pub token_id: String,
    /// The token's format scope (`gpg,mar`; "" when unscoped), for the audit log.
    pub token_scope: String,
}

/// The queue, shared by all requests.
pub struct Queue {
    inner: Mutex<Inner>,
    running: Arc<Semaphore>,
    max_queue: usize,
    store: Store,
    audit: Arc<Audit>,
    /// The transparency log, when `[log]` is configured.
    log: Option<Log>,
    /// The scratch space budget all jobs share (`[server] max_scratch`).
    scratch: Arc<ScratchBudget>,
    metrics: Arc<Metrics>,
}

impl Queue {
    /// A queue running at most `concurrency` jobs, holding at most `max_queue`.
    pub fn new(
        store: Store,
        concurrency: usize,
        max_queue: usize,
        audit: Arc<Audit>,
        log: Option<Log>,
        metrics: Arc<Metrics>,
        scratch: Arc<ScratchBudget>,
    ) -> Arc<Queue> {
        Arc::new(Queue {
            inner: Mutex::new(Inner::default()),
            running: Arc::new(Semaphore::new(concurrency)),
            max_queue,
            store,
            audit,
            log,
            metrics,
            scratch,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Uploads in progress plus jobs queued or running.
    pub fn depth(&self) -> usize {
        self.lock().pending
    }

    /// The audit log (digest signings are audited beside the jobs).
    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// The transparency log, when there is one (digest signings are logged beside the jobs).
    pub fn log(&self) -> Option<&Log> {
        self.log.as_ref()
    }

    /// Takes a place for an upload, or `None` when `max_queue` are taken.
    pub fn reserve(self: &Arc<Self>) -> Option<Slot> {
        let mut inner = self.lock();
        if inner.pending >= self.max_queue {
            return None;
        }
        inner.pending += 1;
        Some(Slot {
            queue: Arc::clone(self),
        })
    }

    /// Finds the job for `hash` (input sha1 or sha256) and marks it used.
    pub fn lookup(&self, format: &str, hash: &str) -> Lookup {
        let mut inner = self.lock();
        let sha256 = if hash.len() == 40 {
            match inner.by_sha1.get(&(format.to_string(), hash.to_string())) {
                Some(s) => s.clone(),
                None => return Lookup::Unknown,
            }
        } else {
            hash.to_string()
        };
        let Some(entry) = inner.jobs.get_mut(&(format.to_string(), sha256)) else {
            return Lookup::Unknown;
        };
        entry.last_used = Instant::now();
        match &entry.state {
            State::Pending(rx) => Lookup::Pending(rx.clone()),
            State::Done(r) => Lookup::Done(r.clone()),
            State::Rejected(m) => Lookup::Rejected(m.clone()),
            State::Unavailable(m) => Lookup::Unavailable(m.clone()),
            State::Withheld(w) => Lookup::Withheld(w.clone()),
        }
    }

    /// Queues `job` in the place `slot` holds, unless the same input is
    /// already known (then the slot is freed).
    pub fn submit(self: &Arc<Self>, job: Job, slot: Slot) -> std::io::Result<Submit> {
        let key = (job.format.clone(), job.sha256.clone());
        let (tx, rx) = watch::channel(false);
        {
            let mut inner = self.lock();
            if let Some(sha1) = &job.sha1 {
                inner
                    .by_sha1
                    .insert((job.format.clone(), sha1.clone()), job.sha256.clone());
            }
            // A job that failed on a token fault is signed again.
            if let Some(e) = inner
                .jobs
                .get_mut(&key)
                .filter(|e| !matches!(e.state, State::Unavailable(_) | State::Withheld(_)))
            {
                e.last_used = Instant::now();
                drop(inner);
                drop(slot);
                return Ok(Submit::Duplicate);
            }
            inner.jobs.insert(
                key.clone(),
                Entry {
                    state: State::Pending(rx),
                    last_used: Instant::now(),
                },
            );
        }
        // The slot's place now belongs to the pending job; `finish` frees it.
        std::mem::forget(slot);
        let Job {
            format,
            kind,
            signer,
            upload,
            sha1: _,
            sha256,
            filename,
            peer,
            token_id,
            token_scope,
        } = job;
        let input = match upload {
            Upload::File(temp) => {
                let path = self.store.input_path(&sha256);
                if let Err(e) = temp.persist(&path) {
                    self.finish(&key, None, &tx);
                    return Err(e);
                }
                Input::File(path)
            }
            Upload::Sha256State(state) => Input::Sha256State(state),
        };
        let stored = match &input {
            Input::File(path) => Some(path.clone()),
            Input::Sha256State(_) => None,
        };
        let key_id = signer.log_key_id();
        let queue = Arc::clone(self);
        tokio::spawn(async move {
            let started = Instant::now();
            let outcome = match queue.running.clone().acquire_owned().await {
                Ok(_permit) => {
                    let store = queue.store.clone();
                    let f = format.clone();
                    let ctx = SignContext {
                        filename: filename.clone(),
                        scratch: Some(queue.scratch.clone()),
                    };
                    let sha = sha256.clone();
                    tokio::task::spawn_blocking(move || {
                        sign_one(&store, signer.as_ref(), &f, &sha, input, &ctx)
                    })
                    .await
                    .unwrap_or_else(|e| {
                        Err(SignError::Internal(anyhow::anyhow!(
                            "signing task failed: {e}"
                        )))
                    })
                }
                Err(_) => Err(SignError::Internal(anyhow::anyhow!("queue closed"))),
            };
            if let Some(path) = &stored {
                crate::store::remove_file(path);
            }
            let elapsed = started.elapsed();
            let (label, output_sha256, reason, state) = match outcome {
                Ok(info) => (
                    "ok",
                    Some(info.sha256.clone()),
                    None,
                    Some(State::Done(Arc::new(info))),
                ),
                Err(SignError::Rejected(reason)) => {
                    let reason = crate::clean::clean(&reason);
                    tracing::info!(format = %format, input_sha256 = %sha256, %reason, "input rejected");
                    (
                        "rejected",
                        None,
                        Some(reason.clone()),
                        Some(State::Rejected(reason)),
                    )
                }
                Err(SignError::Unavailable(reason)) => {
                    let reason = crate::clean::clean(&format!("the key's token: {reason}"));
                    tracing::error!(format = %format, input_sha256 = %sha256, "signing failed: {reason}");
                    (
                        "error",
                        None,
                        Some(reason.clone()),
                        Some(State::Unavailable(reason)),
                    )
                }
                Err(e) => {
                    let reason = crate::clean::clean(&format!("{e:#}"));
                    tracing::error!(format = %format, input_sha256 = %sha256, "signing failed: {reason}");
                    ("error", None, Some(reason), None)
                }
            };
            queue.metrics.signed(&format, label, elapsed);
            let record = AuditRecord {
                peer,
                token_id: &token_id,
                token_scope: &token_scope,
                format: &format,
                filename: &filename,
                input_sha256: &sha256,
                output_sha256: output_sha256.as_deref(),
                duration: elapsed,
                outcome: label,
                reason: reason.as_deref(),
                digest: None,
            };
            let state = match state {
                // Released only once logged and audited.
                Some(State::Done(info)) => {
                    let entry = crate::tlog::Entry {
                        format: &format,
                        kind: &kind,
                        mode: "upload",
                        key: &key_id,
                        input_sha256: Some(&sha256),
                        signed_digest: None,
                        output_sha256: &info.sha256,
                        token_id: &token_id,
                        token_scope: &token_scope,
                    };
                    match release(queue.log.as_ref(), &queue.audit, entry, record).await {
                        Ok(index) => {
                            let info = ResultInfo {
                                log_index: index,
                                ..(*info).clone()
                            };
                            Some(State::Done(Arc::new(info)))
                        }
                        Err(w) => {
                            crate::store::remove_file(&info.path);
                            Some(State::Withheld(w))
                        }
                    }
                }
                other => {
                    // Nothing is released: an audit failure is logged and counted only.
                    let _ = queue.audit.record(&record);
                    other
                }
            };
            queue.finish(&key, state, &tx);
        });
        Ok(Submit::Queued)
    }

    /// Ends a pending job: stores its final state (or forgets it) and wakes waiters.
    fn finish(&self, key: &(String, String), state: Option<State>, tx: &watch::Sender<bool>) {
        {
            let mut inner = self.lock();
            inner.pending = inner.pending.saturating_sub(1);
            inner.last_finished = Some(Instant::now());
            match state {
                Some(s) => {
                    inner.jobs.insert(
                        key.clone(),
                        Entry {
                            state: s,
                            last_used: Instant::now(),
                        },
                    );
                }
                None => {
                    inner.jobs.remove(key);
                }
            }
        }
        let _ = tx.send(true);
    }

    /// Removes finished results unused for `max_age`; returns how many.
    pub fn cleanup(&self, max_age: Duration) -> usize {
        let now = Instant::now();
        let mut doomed = Vec::new();
        {
            let mut inner = self.lock();
            inner.jobs.retain(|_, e| {
                let stale = !matches!(e.state, State::Pending(_))
                    && now.duration_since(e.last_used) > max_age;
                if stale {
                    if let State::Done(r) = &e.state {
                        doomed.push(r.path.clone());
                    }
                }
                !stale
            });
            let Inner { jobs, by_sha1, .. } = &mut *inner;
            by_sha1
                .retain(|(format, _), sha256| jobs.contains_key(&(format.clone(), sha256.clone())));
        }
        for p in &doomed {
            crate::store::remove_file(p);
        }
        doomed.len()
    }

    /// Whether nothing is pending and no job ended within `window`: then no
    /// client can be waiting for a result from this server.
    pub fn quiet_for(&self, window: Duration) -> bool {
        let inner = self.lock();
        inner.pending == 0 && inner.last_finished.is_none_or(|t| t.elapsed() >= window)
    }

    /// Waits until no job is pending, at most `limit`. Returns whether idle.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.depth() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }
}

/// Signs one input into the store (blocking; runs on a blocking thread).
fn sign_one(
    store: &Store,
    signer: &dyn Signer,
    format: &str,
    sha256: &str,
    input: Input,
    ctx: &SignContext,
) -> Result<ResultInfo, SignError> {
    let out = store.temp_path("result");
    match input {
        Input::File(path) => signer.sign(&path, out.path(), ctx)?,
        Input::Sha256State(state) => signer.sign_sha256_state(&state, out.path(), ctx)?,
    }
    let (sha1, out_sha256, size) = hash_file(out.path())?;
    let dest = store.result_path(format, sha256);
    out.persist(&dest)?;
    Ok(ResultInfo {
        path: dest,
        sha1,
        sha256: out_sha256,
        size,
        log_index: None,
    })
}

/// sha1 and sha256 of a file in one pass.
pub fn hash_file(path: &Path) -> std::io::Result<(String, String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h1 = Sha1::new();
    let mut h256 = Sha256::new();
    // No bigger than the file: zeroing 1 MiB for a 300-byte signature costs more than hashing it.
    let len = f.metadata()?.len();
    let mut buf = vec![0u8; len.clamp(4096, 1 << 20) as usize];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = buf.get(..n).unwrap_or_default();
        h1.update(chunk);
        h256.update(chunk);
        size += n as u64;
    }
    Ok((
        hex::encode(h1.finalize()),
        hex::encode(h256.finalize()),
        size,
    ))
}
