//! The local cache (`--cachedir`): `DIR/FORMAT/INPUT_SHA256` holds a verified
//! result and `…/INPUT_SHA256.sha256` its own SHA-256, checked on every hit,
//! so a damaged or foreign entry is never handed out as a signed file. Each
//! is written to a temp file and renamed in.

use std::path::{Path, PathBuf};

use crate::log;
use crate::session::{self, Signed};

/// A copy of the cached result at `entry` in a temp file in `dir`, when the
/// entry exists and matches its recorded digest.
pub(crate) async fn lookup(entry: &Path, dir: &Path, name: &str) -> Option<Signed> {
    if !entry.is_file() {
        return None;
    }
    match copy_to_temp(entry, dir, name).await {
        Ok(signed) if signed.hashes.as_ref().map(|h| &h.sha256) != read_digest(entry).as_ref() => {
            log::warn(format!(
                "warning: cache entry {} does not match its recorded digest; asking the servers",
                entry.display()
            ));
            None
        }
        Ok(signed) => Some(signed),
        Err(e) => {
            log::warn(format!(
                "warning: cache entry {} unusable ({e}); asking the servers",
                entry.display()
            ));
            None
        }
    }
}

async fn copy_to_temp(from: &Path, dir: &Path, name: &str) -> std::io::Result<Signed> {
    let (file, temp) = session::temp_in(dir, name)?;
    let mut out = tokio::fs::File::from_std(file);
    let mut src = tokio::fs::File::open(from).await?;
    tokio::io::copy(&mut src, &mut out).await?;
    out.sync_all().await?;
    drop(out);
    let hashes = session::hash_file(&temp).await?;
    Ok(Signed {
        temp,
        hashes: Some(hashes),
        released: None,
    })
}

fn digest_path(entry: &Path) -> PathBuf {
    let mut s = entry.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

fn read_digest(entry: &Path) -> Option<String> {
    std::fs::read_to_string(digest_path(entry))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Stores a verified result at `to`: the entry, then its digest (each by
/// rename). The result's digests are computed here if nothing needed them yet.
pub(crate) async fn store(signed: &mut Signed, to: &Path) -> std::io::Result<()> {
    let sha256 = match &signed.hashes {
        Some(h) => h.sha256.clone(),
        None => {
            let h = session::hash_file(&signed.temp).await?;
            let sha256 = h.sha256.clone();
            signed.hashes = Some(h);
            sha256
        }
    };
    let dir = match to.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    tokio::fs::create_dir_all(&dir).await?;
    let (file, temp) = session::temp_in(&dir, "cache")?;
    let mut out = tokio::fs::File::from_std(file);
    tokio::io::copy(&mut tokio::fs::File::open(&signed.temp).await?, &mut out).await?;
    out.sync_all().await?;
    drop(out);
    temp.persist(to).map_err(|e| e.error)?;
    let (mut file, temp) = session::temp_in(&dir, "cache")?;
    std::io::Write::write_all(&mut file, sha256.as_bytes())?;
    file.sync_all()?;
    temp.persist(digest_path(to)).map_err(|e| e.error)
}
