//! The log's directory: durable writes, and reading it back at start-up.
//!
//! Every file is written to a temporary name in its own directory, fsynced,
//! renamed into place, and its directory fsynced (a new directory's parent
//! too), so that after `kill -9` or a power cut a file is either absent or
//! whole. Tiles beyond the checkpoint (a batch that was being written when
//! the process died, or whose checkpoint could not be written) were never
//! published: the next batch writes those paths again, and start-up removes
//! them.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use formats::tlog::tile::{self, Kind, Tile, TileSource, WIDTH};
use formats::tlog::{verify, Checkpoint, NoteVerifier};

use super::tree::Tree;

/// The checkpoint's file name in the log's directory.
pub(crate) const CHECKPOINT: &str = "checkpoint";
/// Prefix of our temporary files (never a tile path).
const TEMP_PREFIX: &str = ".tmp-";

/// The log's directory, with the subdirectories known to exist.
pub(crate) struct Dir {
    root: PathBuf,
    known: HashSet<PathBuf>,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Dir {
    /// The directory `root` (created if missing).
    pub(crate) fn open(root: &Path) -> io::Result<Dir> {
        let mut d = Dir {
            root: root.to_path_buf(),
            known: HashSet::new(),
        };
        d.ensure_dir(root)?;
        Ok(d)
    }

    /// The directory.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Creates `dir` and its missing parents, each made durable in its parent.
    fn ensure_dir(&mut self, dir: &Path) -> io::Result<()> {
        if self.known.contains(dir) {
            return Ok(());
        }
        if !dir.is_dir() {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                self.ensure_dir(parent)?;
            }
            match fs::create_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        self.known.insert(dir.to_path_buf());
        Ok(())
    }

    /// Writes `bytes` at `rel` (a tile path or the checkpoint) durably:
    /// temporary file, fsync, rename. The caller fsyncs the directories
    /// ([`Dir::sync_dirs`]) once per batch.
    pub(crate) fn write(&mut self, rel: &str, bytes: &[u8]) -> io::Result<PathBuf> {
        let path = self.root.join(rel);
        let parent = path
            .parent()
            .ok_or_else(|| io::Error::other("a log file has no directory"))?
            .to_path_buf();
        self.ensure_dir(&parent)?;
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = parent.join(format!("{TEMP_PREFIX}{}-{n}", std::process::id()));
        let written = (|| {
            let mut f = File::create(&temp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&temp, &path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        Ok(parent)
    }

    /// fsyncs each directory in `dirs` (where files were renamed).
    pub(crate) fn sync_dirs(&self, dirs: &HashSet<PathBuf>) -> io::Result<()> {
        for d in dirs {
            sync_dir(d)?;
        }
        Ok(())
    }

    /// Reads `rel` whole, at most `limit` bytes.
    pub(crate) fn read(&self, rel: &str, limit: u64) -> io::Result<Vec<u8>> {
        use std::io::Read as _;
        let mut bytes = Vec::new();
        File::open(self.root.join(rel))?
            .take(limit + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{rel}: larger than {limit} bytes"),
            ));
        }
        Ok(bytes)
    }

    /// Removes the partial versions of `tile` (now full): the spec allows
    /// it once the full tile is published, and it bounds the files a busy
    /// log keeps. Best effort.
    pub(crate) fn remove_partials(&self, tile: &Tile) {
        let dir = self.root.join(format!("{}.p", tile.path()));
        if let Err(e) = fs::remove_dir_all(&dir) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::debug!(dir = %dir.display(), "cannot remove superseded partial tiles: {e}");
            }
        }
    }

    /// Writes and removes a small file: whether the directory takes writes
    /// again (after a full disk or an I/O error).
    pub(crate) fn probe(&mut self) -> io::Result<()> {
        let parent = self.write(".probe", &[0u8; 64 * 1024])?;
        fs::remove_file(self.root.join(".probe"))?;
        sync_dir(&parent)
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Largest tile file (a full hash tile; a bundle is bounded by its entries).
const MAX_TILE: u64 = WIDTH * 32;
/// Largest entry bundle: 256 entries of at most 64 KiB and their lengths.
const MAX_BUNDLE: u64 = WIDTH * (tile::MAX_ENTRY as u64 + 2);

/// What start-up found wrong with the directory (exit code 2).
pub(crate) type Mismatch = String;

/// Reads the log in `dir` back: the checkpoint (signed by `verifier`, for
/// its origin), then every tile and entry bundle it implies, each checked
/// against the level above and the root against the checkpoint. Returns the
/// tree and the signed checkpoint; `None` for an empty directory (a new log).
pub(crate) fn read_back(
    dir: &Dir,
    verifier: &NoteVerifier,
) -> Result<Option<(Tree, String)>, Mismatch> {
    let note = match dir.read(CHECKPOINT, formats::tlog::note::MAX_NOTE as u64) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return if has_files(&dir.root().join("tile")) {
                Err(format!(
                    "{}: tiles but no checkpoint (restore the checkpoint from a backup, or give an empty dir for a new log)",
                    dir.root().display()
                ))
            } else {
                Ok(None)
            };
        }
        Err(e) => return Err(format!("{CHECKPOINT}: cannot read: {e}")),
    };
    let note = String::from_utf8(note).map_err(|_| format!("{CHECKPOINT}: not UTF-8"))?;
    let text = verifier
        .open(&note)
        .map_err(|e| format!("{CHECKPOINT}: {e} (is this the log of another key or origin?)"))?;
    let cp = Checkpoint::parse(text).map_err(|e| format!("{CHECKPOINT}: {e}"))?;
    if cp.origin != verifier.name() {
        return Err(format!(
            "{CHECKPOINT}: origin {:?}, but [log] origin is {:?}",
            cp.origin,
            verifier.name()
        ));
    }
    let edge = verify::check_tree(&mut DirTiles(dir), cp.size, &cp.root, |_, _| Ok(()))?;
    let tree = Tree::from_edge(cp.size, edge);
    Ok(Some((tree, note)))
}

/// The directory's tiles, for `verify::check_tree`.
struct DirTiles<'a>(&'a Dir);

impl TileSource for DirTiles<'_> {
    fn read(&mut self, t: &Tile) -> Result<Vec<u8>, String> {
        let limit = match t.kind {
            Kind::Hashes(_) => MAX_TILE,
            Kind::Entries => MAX_BUNDLE,
        };
        let rel = t.path();
        self.0.read(&rel, limit).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                format!("{rel}: missing, but the checkpoint's tree needs it")
            } else {
                format!("{rel}: cannot read: {e}")
            }
        })
    }
}

fn has_files(dir: &Path) -> bool {
    let Ok(rd) = fs::read_dir(dir) else {
        return false;
    };
    rd.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            has_files(&p)
        } else {
            true
        }
    })
}

/// Removes what a tree of `size` leaves does not have: tiles beyond it
/// (never published: written by a batch whose checkpoint was not) and our
/// temporary files. Returns how many files were removed.
pub(crate) fn remove_unpublished(dir: &Dir, size: u64) -> usize {
    let tiles = dir.root().join("tile");
    let mut removed = 0;
    let mut stack = vec![tiles];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let name = e.file_name();
            let temp = name.to_string_lossy().starts_with(TEMP_PREFIX);
            let rel = p
                .strip_prefix(dir.root())
                .ok()
                .and_then(|r| r.to_str())
                .and_then(Tile::parse);
            let beyond = rel.is_some_and(|t| !t.within(size));
            if (temp || beyond) && fs::remove_file(&p).is_ok() {
                removed += 1;
            }
        }
    }
    let _ = fs::remove_file(dir.root().join(".probe"));
    if let Ok(rd) = fs::read_dir(dir.root()) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(TEMP_PREFIX)
                && fs::remove_file(e.path()).is_ok()
            {
                removed += 1;
            }
        }
    }
    removed
}
