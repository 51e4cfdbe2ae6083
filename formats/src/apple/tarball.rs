//! `.tar.gz` holding one `.app` bundle: strict unpacking into a private
//! scratch directory, and repacking after signing.
//!
//! Uses the `tar` and `flate2` crates (the standard, well-kept tar and gzip
//! implementations; apple-codesign works on directories, so the bundle has
//! to be on disk) and streams: no archive member is held in memory.
//!
//! Refused with [`SignError::Rejected`] (422): absolute paths, `..`, paths
//! outside the one top-level `NAME.app` directory, paths through a symlink,
//! symlinks or hard links pointing outside the bundle, device files, fifos,
//! unknown entry types, duplicate files, more than [`Limits::max_entries`]
//! entries or more than [`Limits::max_bytes`] unpacked bytes. Set-id bits are
//! dropped from modes. Owners and times are not restored.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use tar::EntryType;

use super::paths::{self, LinkError};
use crate::scratch::Reservation;
use crate::SignError;

/// Bounds on what an uploaded bundle may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most archive entries.
    pub max_entries: u64,
    /// Most bytes of file content, all files together (the format's
    /// `max_unpacked_size`; the server's default is 4 × `max_filesize`).
    pub max_bytes: u64,
    /// Most bytes of any one file (the format's `max_code_file_size`):
    /// apple-codesign holds each Mach-O it signs in memory, about three
    /// times over, so this bounds the memory of one job.
    pub max_code_file: u64,
}

impl Default for Limits {
    fn default() -> Self {
        // A Firefox.app is ~1,500 entries and ~400 MB unpacked.
        Limits {
            max_entries: 200_000,
            max_bytes: 8 << 30,
            max_code_file: DEFAULT_MAX_CODE_FILE,
        }
    }
}

/// The default of [`Limits::max_code_file`]: 512 MiB (Firefox's universal
/// `XUL`, the largest Mach-O it ships, is under half of that).
pub const DEFAULT_MAX_CODE_FILE: u64 = 512 << 20;

/// Most bytes of an `Info.plist` (real ones are a few KiB; apple-codesign
/// parses each bundle's in memory).
pub const MAX_INFO_PLIST: u64 = 1 << 20;
const INFO_PLIST: &str = "Info.plist";

fn reject(msg: impl std::fmt::Display) -> SignError {
    SignError::Rejected(format!("bad .app tarball: {msg}"))
}

/// Longest name of one file or directory (Linux's and macOS's `NAME_MAX`).
const MAX_NAME: usize = 255;
/// Longest path inside the bundle, or symlink target (macOS's `PATH_MAX`).
const MAX_PATH: usize = 1024;

/// `raw` as a clean relative path of normal components (`.` dropped), or a
/// rejection (also for names longer than the file systems take).
fn clean(raw: &Path) -> Result<PathBuf, SignError> {
    if raw.as_os_str().len() > MAX_PATH {
        return Err(reject(format!(
            "a path is longer than {MAX_PATH} bytes ({}…)",
            raw.to_string_lossy().chars().take(64).collect::<String>()
        )));
    }
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) if n.len() > MAX_NAME => {
                return Err(reject(format!(
                    "a name is longer than {MAX_NAME} bytes ({}…)",
                    n.to_string_lossy().chars().take(64).collect::<String>()
                )))
            }
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err(reject(format!("{:?} contains `..`", raw))),
            Component::RootDir | Component::Prefix(_) => {
                return Err(reject(format!("{:?} is absolute", raw)))
            }
        }
    }
    Ok(out)
}

/// Whether the relative path `rel` (inside the bundle `app`) stays inside
/// it, resolving `..` lexically.
fn inside(app: &Path, rel: &Path) -> bool {
    let mut depth: Vec<&std::ffi::OsStr> = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => depth.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    depth.first().is_some_and(|first| Path::new(first) == app)
}

/// Refuses `rel` if any existing ancestor below `root` is a symlink (so no
/// entry is ever written through a link).
fn no_symlink_ancestor(root: &Path, rel: &Path) -> Result<(), SignError> {
    let mut p = root.to_path_buf();
    let parent = rel.parent().unwrap_or(Path::new(""));
    for c in parent.components() {
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(reject(format!(
                    "{} is written through a symlink",
                    rel.display()
                )))
            }
            Ok(m) if !m.is_dir() => {
                return Err(reject(format!("{} is below a file", rel.display())))
            }
            Ok(_) => {}
            Err(_) => std::fs::create_dir_all(&p)?,
        }
    }
    Ok(())
}

/// Refuses a file apple-codesign might read whole that is larger than it
/// may: any file beyond [`Limits::max_code_file`] (apple-codesign decides
/// what is code by looking, and reads a nested bundle's executable whatever
/// it is), an `Info.plist` beyond [`MAX_INFO_PLIST`]. Checked from the
/// header, before anything is written.
fn check_file_size(rel: &Path, size: u64, limits: &Limits) -> Result<(), SignError> {
    if size > limits.max_code_file {
        return Err(reject(format!(
            "{} has {size} bytes, more than {} (the format's max_code_file_size: signing \
             holds a code file in memory)",
            rel.display(),
            limits.max_code_file
        )));
    }
    if size > MAX_INFO_PLIST && rel.file_name() == Some(INFO_PLIST.as_ref()) {
        return Err(reject(format!(
            "{} has {size} bytes, more than {MAX_INFO_PLIST}",
            rel.display()
        )));
    }
    Ok(())
}

/// Adds `size` to the unpacked `bytes` so far, refusing a total beyond
/// [`Limits::max_bytes`].
fn add_bytes(bytes: &mut u64, size: u64, limits: &Limits) -> Result<(), SignError> {
    *bytes = bytes.saturating_add(size);
    if *bytes > limits.max_bytes {
        return Err(reject(format!(
            "it unpacks to more than {} bytes (the format's max_unpacked_size; a hard link \
             counts as a copy of its target)",
            limits.max_bytes
        )));
    }
    Ok(())
}

/// Copies the `size` bytes of `entry` to `out`; returns how many came.
/// A read error is the input's fault (422), a write error is ours.
fn copy_entry(entry: &mut impl Read, size: u64, out: &mut File) -> Result<u64, SignError> {
    let mut entry = entry.take(size);
    let mut buf = vec![0u8; 64 << 10];
    let mut copied = 0u64;
    loop {
        let got = match entry.read(&mut buf) {
            Ok(0) => return Ok(copied),
            Ok(got) => got,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(reject(format!("truncated: {e}"))),
        };
        out.write_all(buf.get(..got).unwrap_or_default())?;
        copied += got as u64;
    }
}

/// Unpacks the `.tar.gz` at `input` into the empty directory `dest`; returns
/// the name of the one top-level `.app` directory.
pub fn unpack(input: &Path, dest: &Path, limits: &Limits) -> Result<String, SignError> {
    unpack_within(input, dest, limits, &mut Reservation::default())
}

/// [`unpack`], taking every file's bytes from `scratch` before writing them.
pub fn unpack_within(
    input: &Path,
    dest: &Path,
    limits: &Limits,
    scratch: &mut Reservation,
) -> Result<String, SignError> {
    let gz = GzDecoder::new(BufReader::new(File::open(input)?));
    let mut archive = tar::Archive::new(gz);
    let mut app: Option<PathBuf> = None;
    let (mut entries, mut bytes) = (0u64, 0u64);
    let mut symlinks: Vec<PathBuf> = Vec::new();
    let iter = archive
        .entries()
        .map_err(|e| reject(format!("not a tar.gz: {e}")))?;
    for entry in iter {
        let mut entry = entry.map_err(|e| reject(format!("not a tar.gz: {e}")))?;
        entries += 1;
        if entries > limits.max_entries {
            return Err(reject(format!("more than {} entries", limits.max_entries)));
        }
        let raw = entry
            .path()
            .map_err(|e| reject(format!("bad path: {e}")))?
            .into_owned();
        let rel = clean(&raw)?;
        let Some(first) = rel.components().next() else {
            continue; // the archive's "./" entry
        };
        let first = PathBuf::from(first.as_os_str());
        match &app {
            None => {
                if first.extension().and_then(|e| e.to_str()) != Some("app") {
                    return Err(reject(format!(
                        "{} is not inside a NAME.app directory",
                        raw.display()
                    )));
                }
                app = Some(first.clone());
            }
            Some(a) if *a != first => {
                return Err(reject(format!(
                    "{} is outside {} (one .app per tarball)",
                    raw.display(),
                    a.display()
                )))
            }
            Some(_) => {}
        }
        let target = dest.join(&rel);
        no_symlink_ancestor(dest, &rel)?;
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        let kind = entry.header().entry_type();
        match kind {
            EntryType::Directory => {
                match std::fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(reject(format!("duplicate entry {}", raw.display()))),
                    Err(_) => std::fs::create_dir(&target)?,
                }
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode | 0o700))?;
            }
            EntryType::Regular | EntryType::Continuous => {
                let size = entry
                    .header()
                    .size()
                    .map_err(|e| reject(format!("bad size: {e}")))?;
                add_bytes(&mut bytes, size, limits)?;
                check_file_size(&rel, size, limits)?;
                scratch.take(size)?;
                let mut out = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode | 0o600)
                    .open(&target)
                    .map_err(|e| match e.kind() {
                        std::io::ErrorKind::AlreadyExists => {
                            reject(format!("duplicate entry {}", raw.display()))
                        }
                        _ => e.into(),
                    })?;
                let copied = copy_entry(&mut entry, size, &mut out)?;
                if copied != size {
                    return Err(reject(format!("{} is truncated", raw.display())));
                }
            }
            EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(|e| reject(format!("bad link: {e}")))?
                    .ok_or_else(|| reject(format!("symlink {} without target", raw.display())))?
                    .into_owned();
                if rel.file_name() == Some(INFO_PLIST.as_ref()) {
                    return Err(reject(format!(
                        "{} is a symlink (an Info.plist must be a file)",
                        raw.display()
                    )));
                }
                if link.as_os_str().len() > MAX_PATH {
                    return Err(reject(format!(
                        "symlink {} points to a path longer than {MAX_PATH} bytes",
                        raw.display()
                    )));
                }
                if link.is_absolute() {
                    return Err(reject(format!(
                        "symlink {} points to an absolute path",
                        raw.display()
                    )));
                }
                let base = rel.parent().unwrap_or(Path::new(""));
                if !inside(&first, &base.join(&link)) {
                    return Err(reject(format!(
                        "symlink {} points outside the bundle",
                        raw.display()
                    )));
                }
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(|_| reject(format!("duplicate entry {}", raw.display())))?;
                symlinks.push(rel);
            }
            EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(|e| reject(format!("bad link: {e}")))?
                    .ok_or_else(|| reject(format!("hard link {} without target", raw.display())))?
                    .into_owned();
                let link_rel = clean(&link)?;
                if !inside(&first, &link_rel) {
                    return Err(reject(format!(
                        "hard link {} points outside the bundle",
                        raw.display()
                    )));
                }
                no_symlink_ancestor(dest, &link_rel)?;
                let src = dest.join(&link_rel);
                let size = match std::fs::symlink_metadata(&src) {
                    Ok(m) if m.is_file() => m.len(),
                    _ => {
                        return Err(reject(format!(
                            "hard link {} to a missing file",
                            raw.display()
                        )))
                    }
                };
                // Signing copies every link as a whole file (and so does the
                // repacked output): a link costs its target's size.
                add_bytes(&mut bytes, size, limits)?;
                check_file_size(&rel, size, limits)?;
                scratch.take(size)?;
                std::fs::hard_link(&src, &target)
                    .map_err(|_| reject(format!("duplicate entry {}", raw.display())))?;
            }
            EntryType::Char | EntryType::Block => {
                return Err(reject(format!("{} is a device file", raw.display())))
            }
            EntryType::Fifo => return Err(reject(format!("{} is a fifo", raw.display()))),
            other => {
                return Err(reject(format!(
                    "{} has unsupported type {other:?}",
                    raw.display()
                )))
            }
        }
    }
    let app = app.ok_or_else(|| reject("no NAME.app directory"))?;
    // Only now, with every entry in place: a later link may change where an
    // earlier one leads.
    for link in &symlinks {
        let why = match paths::check_symlink(dest, link) {
            Ok(()) => continue,
            Err(LinkError::Outside) => "leads outside the bundle through another symlink",
            Err(LinkError::Absolute) => "leads to an absolute path through another symlink",
            Err(LinkError::Loop) => "is a loop of symlinks",
        };
        return Err(reject(format!("symlink {} {why}", link.display())));
    }
    let meta =
        std::fs::symlink_metadata(dest.join(&app)).map_err(|_| reject("no NAME.app directory"))?;
    if !meta.is_dir() {
        return Err(reject(format!("{} is not a directory", app.display())));
    }
    if !dest.join(&app).join("Contents/Info.plist").is_file() {
        return Err(reject(format!(
            "{} has no Contents/Info.plist",
            app.display()
        )));
    }
    app.to_str()
        .map(str::to_string)
        .ok_or_else(|| reject("the .app name is not UTF-8"))
}

/// Creates below `to` every directory that exists below `from` (not
/// following symlinks), so empty directories survive signing.
pub fn copy_dir_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(from.join(&rel))? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                let sub = rel.join(entry.file_name());
                std::fs::create_dir_all(to.join(&sub))?;
                stack.push(sub);
            }
        }
    }
    Ok(())
}

/// Refuses a bundle that apple-codesign could only fail on, as the input's
/// fault: no `Info.plist` (`Contents/Info.plist` on macOS, `Info.plist` in a
/// flat bundle), or a main executable (`CFBundleExecutable`) that is missing
/// or not Mach-O.
pub fn check_bundle_input(app_dir: &Path) -> Result<(), SignError> {
    let (plist_path, exe_dir) = if app_dir.join("Contents/Info.plist").is_file() {
        (
            app_dir.join("Contents/Info.plist"),
            app_dir.join("Contents/MacOS"),
        )
    } else if app_dir.join("Info.plist").is_file() {
        (app_dir.join("Info.plist"), app_dir.to_path_buf())
    } else {
        return Err(reject("the bundle has no Contents/Info.plist"));
    };
    // Not through a link, never a fifo, at most MAX_INFO_PLIST bytes.
    let mut bytes = Vec::new();
    paths::open_regular(&plist_path)
        .and_then(|f| f.take(MAX_INFO_PLIST).read_to_end(&mut bytes))
        .map_err(|e| reject(format!("its Info.plist cannot be read as a file: {e}")))?;
    let info = plist::Value::from_reader(std::io::Cursor::new(bytes))
        .map_err(|e| reject(format!("its Info.plist is not a property list: {e}")))?;
    let Some(exe) = info
        .as_dictionary()
        .and_then(|d| d.get("CFBundleExecutable"))
        .and_then(plist::Value::as_string)
    else {
        return Ok(()); // a bundle without code: nothing to check here
    };
    let rel = clean(Path::new(exe))?;
    let path = exe_dir.join(&rel);
    no_symlink_ancestor(&exe_dir, &rel)?;
    let mut head = [0u8; 4];
    let read = paths::open_regular(&path).and_then(|mut f| f.read_exact(&mut head));
    if read.is_err() {
        return Err(reject(format!(
            "its main executable {exe:?} (CFBundleExecutable) is missing, not a regular file \
             (a symlink, a fifo) or shorter than 4 bytes"
        )));
    }
    if !super::check::is_macho_magic(&head) {
        return Err(reject(format!(
            "its main executable {exe:?} is not a Mach-O binary"
        )));
    }
    Ok(())
}

/// Packs `root/app` (recursively, symlinks as symlinks) into a `.tar.gz` at
/// `output`, paths relative to `root` as in the input. Times and owners are
/// normalised (deterministic headers); modes are kept.
pub fn pack(root: &Path, app: &str, output: &Path) -> anyhow::Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(output)?;
    let gz = GzEncoder::new(BufWriter::new(file), flate2::Compression::default());
    let mut builder = tar::Builder::new(gz);
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Deterministic);
    builder
        .append_dir_all(app, root.join(app))
        .with_context(|| format!("adding {app}"))?;
    let gz = builder.into_inner()?;
    let mut out = gz.finish()?;
    out.flush()?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

#[cfg(test)]
#[path = "tarball_tests.rs"]
mod tests;
