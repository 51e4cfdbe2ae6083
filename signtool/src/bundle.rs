//! `.app` bundles: packed as `.tar.gz` to be signed as one file (the apple
//! formats take bundles that way), and the signed bundle unpacked in place.

use std::path::{Path, PathBuf};

/// Packs `app` into `NAME.app.tar.gz` inside a private directory beside it.
pub(crate) fn pack(app: &Path) -> Result<(PathBuf, tempfile::TempDir, PathBuf), String> {
    let name = app
        .file_name()
        .ok_or_else(|| format!("{} has no name", app.display()))?
        .to_owned();
    let parent = app
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let err = |e: std::io::Error| format!("cannot pack {}: {e}", app.display());
    let dir = tempfile::Builder::new()
        .prefix(".signtool-bundle-")
        .tempdir_in(parent)
        .map_err(err)?;
    let mut tarball = dir.path().join(&name);
    tarball.as_mut_os_string().push(".tar.gz");
    let file = std::fs::File::create(&tarball).map_err(err)?;
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        file,
        flate2::Compression::default(),
    ));
    // Symlinks stay symlinks: a bundle's links are part of what is signed.
    tar.follow_symlinks(false);
    tar.append_dir_all(&name, app).map_err(err)?;
    tar.into_inner()
        .and_then(|gz| gz.finish())
        .and_then(|f| f.sync_all())
        .map_err(err)?;
    Ok((app.to_path_buf(), dir, tarball))
}

/// Unpacks the signed `tarball` and swaps it in for `app`: the old bundle
/// is moved aside, the new one renamed in, the old one removed. On any
/// failure the original bundle is left (or put back) where it was.
pub(crate) fn unpack_in_place(
    tarball: &Path,
    app: &Path,
    dir: &tempfile::TempDir,
) -> Result<(), String> {
    let name = app.file_name().unwrap_or_default();
    let out = dir.path().join("signed");
    let err = |e: std::io::Error| format!("cannot unpack the signed bundle: {e}");
    std::fs::create_dir_all(&out).map_err(err)?;
    let file = std::fs::File::open(tarball).map_err(err)?;
    // tar refuses absolute paths and `..` on unpack.
    tar::Archive::new(flate2::read::GzDecoder::new(file))
        .unpack(&out)
        .map_err(err)?;
    let entries: Vec<_> = std::fs::read_dir(&out)
        .map_err(err)?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    if entries != [name.to_owned()] {
        return Err(format!(
            "the signed archive does not hold exactly {}",
            name.to_string_lossy()
        ));
    }
    let old = dir.path().join("original");
    std::fs::rename(app, &old).map_err(|e| format!("cannot move {} aside: {e}", app.display()))?;
    if let Err(e) = std::fs::rename(out.join(name), app) {
        let _ = std::fs::rename(&old, app);
        return Err(format!("cannot put the signed bundle in place: {e}"));
    }
    if let Some(parent) = app.parent() {
        if let Ok(d) = std::fs::File::open(if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        }) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}
