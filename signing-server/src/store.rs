//! Content-addressed files under `work_dir`.
//!
//! ```text
//! work_dir/tmp/                      uploads and signer outputs being written
//! work_dir/inputs/ab/cd/<sha256>     uploaded inputs, until signed
//! work_dir/results/<format>/ab/cd/<sha256>   signed outputs, by input sha256
//! ```
//! Files reach `inputs/` and `results/` only by an atomic rename of a
//! complete file, so nothing partial is ever served. Names come from hex
//! digests and config format names only: a client's filename never becomes a
//! path. The store is emptied at start-up (it is a cache; what a killed
//! server left half-written in `tmp/` goes with it).

use std::io;
use std::path::{Path, PathBuf};

use rand::RngCore;

/// The three directories the server owns inside `work_dir`.
const OWNED: [&str; 3] = ["tmp", "inputs", "results"];

/// The store rooted at `work_dir`.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// A file in `tmp/` that is removed when dropped, unless persisted.
#[derive(Debug)]
pub struct TempPath {
    path: Option<PathBuf>,
}

impl TempPath {
    /// The file's path.
    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Atomically renames the file to `dest` (creating its directory).
    pub fn persist(mut self, dest: &Path) -> io::Result<()> {
        let from = self.path.take().unwrap_or_default();
        let mut res = Ok(());
        // Cleanup may remove an empty directory between its creation and the
        // rename (`remove_file` below): then create it again.
        for _ in 0..3 {
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)?;
            }
            res = std::fs::rename(&from, dest);
            match &res {
                Err(e) if e.kind() == io::ErrorKind::NotFound && from.exists() => continue,
                _ => break,
            }
        }
        if res.is_err() {
            let _ = std::fs::remove_file(&from);
        }
        res
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn spread(dir: PathBuf, hex: &str) -> PathBuf {
    // Two levels of 256 directories: no directory ever holds more than a few entries.
    match (hex.get(0..2), hex.get(2..4)) {
        (Some(a), Some(b)) => dir.join(a).join(b).join(hex),
        _ => dir.join(hex),
    }
}

impl Store {
    /// Opens the store, removing whatever an earlier run left in it.
    pub fn open(work_dir: &Path) -> io::Result<Store> {
        std::fs::create_dir_all(work_dir)?;
        for d in OWNED {
            let p = work_dir.join(d);
            match std::fs::remove_dir_all(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            std::fs::create_dir_all(&p)?;
        }
        Ok(Store {
            root: work_dir.to_path_buf(),
        })
    }

    /// The directory for scratch files.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// A fresh, not yet existing path in `tmp/`, removed on drop.
    pub fn temp_path(&self, what: &str) -> TempPath {
        let mut r = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut r);
        TempPath {
            path: Some(self.tmp_dir().join(format!("{what}-{}", hex::encode(r)))),
        }
    }

    /// Where an uploaded input with this sha256 lives.
    pub fn input_path(&self, sha256: &str) -> PathBuf {
        spread(self.root.join("inputs"), sha256)
    }

    /// Where the result of signing the input `sha256` with `format` lives.
    pub fn result_path(&self, format: &str, sha256: &str) -> PathBuf {
        spread(self.root.join("results").join(format), sha256)
    }
}

/// Removes a stored file, then its two spreading directories (`ab/cd/`)
/// if that left them empty, so `work_dir` does not fill with empty
/// directories over time.
pub fn remove_file(path: &Path) {
    let _ = std::fs::remove_file(path);
    let mut dir = path.parent();
    for _ in 0..2 {
        let Some(d) = dir else { break };
        // Fails, as it should, while the directory holds anything.
        if std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// Lower-case hex check for digests coming from clients.
pub fn is_hex_digest(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_spread_and_never_from_client_names() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let h = "ab".repeat(32);
        let p = s.result_path("gpg", &h);
        assert!(
            p.ends_with(format!("results/gpg/ab/ab/{h}")),
            "{}",
            p.display()
        );
        assert!(s.input_path(&h).starts_with(dir.path().join("inputs")));
    }

    #[test]
    fn open_discards_leftovers_and_temp_files_vanish_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        std::fs::write(s.tmp_dir().join("partial"), b"half").unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert!(!s.tmp_dir().join("partial").exists());
        let t = s.temp_path("upload");
        std::fs::write(t.path(), b"x").unwrap();
        let p = t.path().to_path_buf();
        drop(t);
        assert!(!p.exists());
        let t = s.temp_path("upload");
        std::fs::write(t.path(), b"y").unwrap();
        let dest = s.input_path(&"cd".repeat(32));
        t.persist(&dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"y");
    }

    #[test]
    fn removing_the_last_file_removes_its_empty_directories() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let (a, b) = ("ab".repeat(32), format!("ab{}", "cd".repeat(31)));
        for h in [&a, &b] {
            let t = s.temp_path("upload");
            std::fs::write(t.path(), b"x").unwrap();
            t.persist(&s.input_path(h)).unwrap();
        }
        remove_file(&s.input_path(&a));
        assert!(!dir.path().join("inputs/ab/ab").exists());
        assert!(
            dir.path().join("inputs/ab/cd").is_dir(),
            "a directory still in use stays"
        );
        remove_file(&s.input_path(&b));
        assert!(!dir.path().join("inputs/ab").exists());
        assert!(dir.path().join("inputs").is_dir(), "inputs/ itself stays");
    }

    #[test]
    fn hex_digests() {
        assert!(is_hex_digest(&"a".repeat(40), 40));
        assert!(!is_hex_digest(&"A".repeat(40), 40));
        assert!(!is_hex_digest("../../etc/passwd", 16));
    }
}
