//! The log's one writer: a task that takes appended entries, batches them
//! (one checkpoint per `checkpoint_interval` while entries wait), writes
//! the new tiles and bundles durably, then the signed checkpoint, and only
//! then answers every waiting [`super::Log::append`].
//!
//! While the directory cannot be written (disk full, I/O error), the log is
//! unavailable: waiting appends fail, new ones fail at once, and the writer
//! probes the directory every second until a write works again.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use formats::tlog::{Checkpoint, NoteKey};
use tokio::sync::{mpsc, oneshot};

use super::disk::{Dir, CHECKPOINT};
use super::tree::Tree;
use super::{LogError, Shared};

/// Most entries one checkpoint covers (the rest wait for the next).
const MAX_BATCH: usize = 16 * 1024;
/// How often an unavailable log retries its directory.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// An entry waiting for its checkpoint.
pub(super) struct Pending {
    pub(super) entry: Vec<u8>,
    pub(super) queued: Instant,
    pub(super) done: oneshot::Sender<Result<u64, LogError>>,
}

/// What the writer owns: the tree, the directory and the key.
pub(super) struct Files {
    pub(super) tree: Tree,
    pub(super) dir: Dir,
    pub(super) key: Arc<NoteKey>,
    pub(super) origin: String,
}

/// Why a batch was not published.
struct Failed {
    message: String,
}

impl Files {
    /// Appends `entries` durably and writes the checkpoint that covers them;
    /// the index of the first one and the signed checkpoint.
    fn commit(&mut self, entries: &[Vec<u8>]) -> Result<(u64, String), Failed> {
        let before = self.tree.clone();
        let first = self.tree.size();
        let tiles = self.tree.append(entries);
        let fail = |what: &str, e: &dyn std::fmt::Display| Failed {
            message: format!("{what}: {e}"),
        };
        let mut dirs = HashSet::new();
        let written = (|| {
            for (t, bytes) in &tiles {
                dirs.insert(self.dir.write(&t.path(), bytes)?);
            }
            self.dir.sync_dirs(&dirs)
        })();
        if let Err(e) = written {
            self.tree = before;
            return Err(fail("cannot write the log's tiles", &e));
        }
        let cp = Checkpoint {
            origin: self.origin.clone(),
            size: self.tree.size(),
            root: self.tree.root(),
        };
        let note = match self.key.sign(&cp.text()) {
            Ok(n) => n,
            Err(e) => {
                self.tree = before;
                return Err(fail("cannot sign the checkpoint", &e));
            }
        };
        let parent = match self.dir.write(CHECKPOINT, note.as_bytes()) {
            Ok(p) => p,
            Err(e) => {
                self.tree = before;
                return Err(fail("cannot write the checkpoint", &e));
            }
        };
        // Renamed into place: the checkpoint on disk is the new one, so the
        // tree stays grown even if making the rename durable fails (the
        // entries are then not released, but the next checkpoint extends
        // this one, as any reader of the directory may have seen it).
        self.dir
            .sync_dirs(&HashSet::from([parent]))
            .map_err(|e| fail("cannot make the checkpoint durable", &e))?;
        for (t, _) in &tiles {
            if t.is_full() {
                self.dir.remove_partials(t);
            }
        }
        Ok((first, note))
    }
}

/// The writer task's state.
pub(super) struct Writer {
    pub(super) rx: mpsc::Receiver<Pending>,
    pub(super) files: Arc<Mutex<Files>>,
    pub(super) shared: Arc<Shared>,
    pub(super) interval: Duration,
}

impl Writer {
    /// Runs until every [`super::Log`] handle is dropped.
    pub(super) async fn run(mut self) {
        let interval = self.interval;
        let long_ago = move || {
            Instant::now()
                .checked_sub(interval)
                .unwrap_or_else(Instant::now)
        };
        let mut last = long_ago();
        while let Some(first) = self.rx.recv().await {
            // Entries arriving within the interval share one checkpoint.
            tokio::time::sleep_until((last + self.interval).into()).await;
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            let entries: Vec<Vec<u8>> = batch
                .iter_mut()
                .map(|p| std::mem::take(&mut p.entry))
                .collect();
            let files = self.files.clone();
            let result = tokio::task::spawn_blocking(move || {
                files
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .commit(&entries)
            })
            .await
            .unwrap_or_else(|e| {
                Err(Failed {
                    message: format!("the log writer's thread failed: {e}"),
                })
            });
            last = Instant::now();
            match result {
                Ok((index, note)) => {
                    let size = index + batch.len() as u64;
                    self.shared.published(size, note);
                    for (i, p) in batch.into_iter().enumerate() {
                        self.shared.metrics.observe(p.queued.elapsed());
                        let _ = p.done.send(Ok(index + i as u64));
                    }
                }
                Err(f) => {
                    self.fail(batch, &f.message);
                    self.recover().await;
                    last = long_ago();
                }
            }
        }
    }

    /// A batch was not published: its appends fail, the log is unavailable.
    fn fail(&self, batch: Vec<Pending>, message: &str) {
        tracing::error!(
            entries = batch.len(),
            "transparency log unavailable: {message}"
        );
        self.shared
            .metrics
            .write_failures
            .fetch_add(1, Ordering::Relaxed);
        self.shared.set_unavailable(message);
        for p in batch {
            let _ = p.done.send(Err(LogError::Unavailable(message.to_string())));
        }
    }

    /// Until the directory takes writes again: appends that were already
    /// queued fail, and the directory is probed every second.
    async fn recover(&mut self) {
        loop {
            while let Ok(p) = self.rx.try_recv() {
                let _ = p
                    .done
                    .send(Err(LogError::Unavailable(self.shared.last_error())));
            }
            tokio::time::sleep(PROBE_EVERY).await;
            let files = self.files.clone();
            let probed = tokio::task::spawn_blocking(move || {
                files.lock().unwrap_or_else(|p| p.into_inner()).dir.probe()
            })
            .await;
            match probed {
                Ok(Ok(())) => {
                    tracing::info!("transparency log writable again: signing resumes");
                    self.shared.set_available();
                    return;
                }
                Ok(Err(e)) => {
                    self.shared
                        .metrics
                        .write_failures
                        .fetch_add(1, Ordering::Relaxed);
                    self.shared
                        .set_unavailable(&format!("the log directory is not writable: {e}"));
                }
                Err(e) => self.shared.set_unavailable(&format!("probe failed: {e}")),
            }
        }
    }
}
