//! The signing queue: bounded, deduplicated, off the async threads.
//!
//! **Invariants:** at most one job per (format, input sha256) exists at any
//! time, so the same input is never signed twice at once and a finished
//! result is reused; at most `max_queue` uploads in progress plus jobs
//! pending (queued or running) exist at once, each holding a [`Slot`], at
//! most `max_queue_per_peer` of them for one peer address; at
//! most `concurrency` signings run at once, each on a blocking thread:
//! the jobs and the digest signings of `POST /digest` ([`Queue::sign_digest`])
//! alike.
//! A result is visible only once its file is complete in the store.

use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use formats::digest_signing::DigestInput;
use formats::scratch::ScratchBudget;
use formats::{SignContext, SignError, Signer};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Semaphore};

use crate::audit::Audit;
use crate::metrics::Metrics;
use crate::outcome::{Ended, Signing, Withheld};
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
    /// Slots taken per peer address (none at 0).
    per_peer: HashMap<IpAddr, usize>,
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
    peer: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.queue.lock();
        inner.pending = inner.pending.saturating_sub(1);
        if let Some(n) = inner.per_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                inner.per_peer.remove(&self.peer);
            }
        }
    }
}

/// Why [`Queue::reserve`] found no place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// `max_queue` places are taken.
    Full,
    /// This peer holds `max_queue_per_peer` of them.
    PeerShare,
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
    /// Its signer.
    pub signer: Arc<dyn Signer>,
    /// The upload.
    pub upload: Upload,
    /// Hex sha1 of the input, when the client gave one (then clients may ask by it).
    pub sha1: Option<String>,
    /// Who asked and for what (format, input sha256, filename, peer, token).
    pub request: Signing,
    /// The format's rate (`max_rate`): the job waits for its turn before it signs.
    pub rate: Option<crate::rate::Turn>,
}

/// A released digest signing: what the client receives, its SHA-256 (hex,
/// computed once, for the audit, the log and the `X-SHA256-Digest` header)
/// and its log index when the log is on.
pub struct SignedDigest {
    /// The signature material, as answered.
    pub signature: Vec<u8>,
    /// Hex SHA-256 of `signature`.
    pub sha256: String,
    /// Its entry in the transparency log.
    pub log_index: Option<u64>,
}

/// The queue, shared by all requests.
pub struct Queue {
    inner: Mutex<Inner>,
    /// `concurrency` permits: every signing, upload or digest, holds one.
    running: Arc<Semaphore>,
    /// Signings running now, and the most that ever ran at once.
    signing: AtomicUsize,
    signing_peak: AtomicUsize,
    max_queue: usize,
    max_per_peer: usize,
    store: Store,
    audit: Arc<Audit>,
    /// The transparency log, when `[log]` is configured.
    log: Option<Log>,
    /// The scratch space budget all jobs share (`[server] max_scratch`).
    scratch: Arc<ScratchBudget>,
    metrics: Arc<Metrics>,
}

impl Queue {
    /// A queue running at most `concurrency` jobs, holding at most
    /// `max_queue`, of them at most `max_per_peer` for one peer.
    pub fn new(
        store: Store,
        concurrency: usize,
        (max_queue, max_per_peer): (usize, usize),
        audit: Arc<Audit>,
        log: Option<Log>,
        metrics: Arc<Metrics>,
        scratch: Arc<ScratchBudget>,
    ) -> Arc<Queue> {
        Arc::new(Queue {
            inner: Mutex::new(Inner::default()),
            running: Arc::new(Semaphore::new(concurrency)),
            signing: AtomicUsize::new(0),
            signing_peak: AtomicUsize::new(0),
            max_queue,
            max_per_peer,
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

    /// The audit log.
    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// The transparency log, when there is one.
    pub fn log(&self) -> Option<&Log> {
        self.log.as_ref()
    }

    /// Uploads in progress plus jobs queued or running.
    pub fn depth(&self) -> usize {
        self.lock().pending
    }

    /// The most signings, uploads and digest signings together, that ever ran
    /// at once: never more than `concurrency`.
    pub fn signing_peak(&self) -> usize {
        self.signing_peak.load(Ordering::Relaxed)
    }

    /// Runs `sign` on a blocking thread once one of the `concurrency`
    /// permits is free: the one way every signing runs.
    async fn run_signing<T: Send + 'static>(
        self: &Arc<Self>,
        sign: impl FnOnce() -> Result<T, SignError> + Send + 'static,
    ) -> Result<T, SignError> {
        let Ok(_permit) = self.running.clone().acquire_owned().await else {
            return Err(SignError::Internal(anyhow::anyhow!("queue closed")));
        };
        let queue = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let now = queue.signing.fetch_add(1, Ordering::Relaxed) + 1;
            queue.signing_peak.fetch_max(now, Ordering::Relaxed);
            let r = sign();
            queue.signing.fetch_sub(1, Ordering::Relaxed);
            r
        })
        .await
        .unwrap_or_else(|e| {
            Err(SignError::Internal(anyhow::anyhow!(
                "the signing thread failed: {e}"
            )))
        })
    }

    /// Signs a digest (`POST /digest`) as a job would be signed: within
    /// `concurrency`, logged, audited and counted by [`crate::outcome::settle`].
    /// The caller's queue place (`slot`, [`Queue::reserve`]) is held while
    /// it signs, and freed before the wait for the transparency log's
    /// checkpoint (up to `checkpoint_interval`, no work: the places bound work,
    /// and many signatures must share each checkpoint). The signature and its
    /// index in the transparency log.
    pub async fn sign_digest(
        self: &Arc<Self>,
        signer: Arc<dyn Signer>,
        input: DigestInput,
        ctx: SignContext,
        request: &Signing,
        slot: Slot,
    ) -> Result<SignedDigest, Ended> {
        let started = Instant::now();
        let result = self
            .run_signing(move || signer.sign_digest(&input, &ctx))
            .await;
        drop(slot);
        let ended = match &result {
            Ok(sig) => Ended::Signed(hex::encode(Sha256::digest(sig))),
            Err(e) => Ended::from_error(e),
        };
        let (ended, index) = crate::outcome::settle(
            &self.audit,
            self.log.as_ref(),
            &self.metrics,
            request,
            ended,
            started.elapsed(),
        )
        .await;
        match (result, ended) {
            (Ok(signature), Ended::Signed(sha256)) => Ok(SignedDigest {
                signature,
                sha256,
                log_index: index,
            }),
            (_, ended) => Err(ended),
        }
    }

    /// Takes a place for `peer`'s upload or digest signing, unless
    /// `max_queue` are taken or `peer` holds its share.
    pub fn reserve(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, Busy> {
        let mut inner = self.lock();
        if inner.pending >= self.max_queue {
            return Err(Busy::Full);
        }
        let held = inner.per_peer.entry(peer).or_insert(0);
        if *held >= self.max_per_peer {
            return Err(Busy::PeerShare);
        }
        *held += 1;
        inner.pending += 1;
        Ok(Slot {
            queue: Arc::clone(self),
            peer,
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
        let Job {
            signer,
            upload,
            sha1,
            request,
            rate,
        } = job;
        let key = (request.format.clone(), request.input_sha256.clone());
        let (tx, rx) = watch::channel(false);
        {
            let mut inner = self.lock();
            // A job that failed on a token fault, or was withheld, is signed again.
            let (duplicate, earlier) = match inner.jobs.get_mut(&key) {
                Some(e) if !matches!(e.state, State::Unavailable(_) | State::Withheld(_)) => {
                    e.last_used = Instant::now();
                    let earlier = match &e.state {
                        State::Done(r) => Some(r.sha256.clone()),
                        _ => None,
                    };
                    (true, earlier)
                }
                _ => (false, None),
            };
            if !duplicate {
                inner.jobs.insert(
                    key.clone(),
                    Entry {
                        state: State::Pending(rx),
                        last_used: Instant::now(),
                    },
                );
            }
            // Once the job it names exists (the client may ask by sha1).
            if let Some(sha1) = sha1 {
                inner.by_sha1.insert((key.0.clone(), sha1), key.1.clone());
            }
            if duplicate {
                drop(inner);
                drop(slot);
                crate::outcome::record_duplicate(&self.audit, &request, earlier.as_deref());
                return Ok(Submit::Duplicate);
            }
        }
        // The slot's place now belongs to the pending job: it is held until
        // the job has ended (dropped after `finish`).
        let input = match upload {
            Upload::File(temp) => {
                let path = self.store.input_path(&request.input_sha256);
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
        let queue = Arc::clone(self);
        tokio::spawn(async move {
            let _place = slot;
            if let Some(turn) = rate {
                turn.wait(&request.format).await;
            }
            let started = Instant::now();
            let store = queue.store.clone();
            let (f, sha) = key.clone();
            let ctx = SignContext {
                filename: request.filename.clone(),
                scratch: Some(queue.scratch.clone()),
            };
            let outcome = queue
                .run_signing(move || sign_one(&store, signer.as_ref(), &f, &sha, input, &ctx))
                .await;
            if let Some(path) = &stored {
                crate::store::remove_file(path);
            }
            let ended = match &outcome {
                Ok(info) => Ended::Signed(info.sha256.clone()),
                Err(e) => Ended::from_error(e),
            };
            // Released (Done) only once logged and audited.
            let (ended, index) = crate::outcome::settle(
                &queue.audit,
                queue.log.as_ref(),
                &queue.metrics,
                &request,
                ended,
                started.elapsed(),
            )
            .await;
            let state = match (outcome, ended) {
                (Ok(info), Ended::Signed(_)) => Some(State::Done(Arc::new(ResultInfo {
                    log_index: index,
                    ..info
                }))),
                (Ok(info), Ended::Withheld(w)) => {
                    crate::store::remove_file(&info.path);
                    Some(State::Withheld(w))
                }
                // `settle` turns a signature into Signed or Withheld only.
                (Ok(info), _) => {
                    crate::store::remove_file(&info.path);
                    None
                }
                (Err(_), Ended::Rejected(reason)) => Some(State::Rejected(reason)),
                (Err(_), Ended::Unavailable(reason)) => Some(State::Unavailable(reason)),
                (Err(_), _) => None,
            };
            queue.finish(&key, state, &tx);
        });
        Ok(Submit::Queued)
    }

    /// Ends a pending job: stores its final state (or forgets it) and wakes
    /// waiters. Its place is given back when its [`Slot`] drops, after this.
    fn finish(&self, key: &(String, String), state: Option<State>, tx: &watch::Sender<bool>) {
        {
            let mut inner = self.lock();
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
