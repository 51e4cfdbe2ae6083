//! Safe file-system access inside an unpacked bundle: where its symlinks
//! really lead, and opening a file without following a link or blocking.
//!
//! A symlink's target is checked against the bundle as the kernel would
//! resolve it, not lexically: `Resources/sub/up -> ..` makes
//! `sub/up/..` the bundle's `Contents`, not `Resources/sub`, so a lexical
//! check of `MacOS/x -> ../Resources/sub/up/../../..` is fooled into
//! accepting a way out. Links through other links inside the bundle are
//! kept (every versioned framework has `Foo -> Versions/Current/Foo` with
//! `Versions/Current -> A`); only where they end up matters.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// Most symlinks one path may pass through (Linux's own limit is 40).
const MAX_HOPS: usize = 40;

/// Why a symlink is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkError {
    /// It leads out of the bundle (through `..`, possibly via other links).
    Outside,
    /// It is absolute, or leads through a link that is.
    Absolute,
    /// Following it takes more than [`MAX_HOPS`] links (a loop).
    Loop,
}

/// Resolves the symlink at `dest/link` (`link` relative to `dest`, its first
/// component the bundle's directory) through every link it meets, as the
/// kernel would. `Ok` if it stays inside the bundle, or ends at something
/// missing (the kernel stops there too: a dangling link leads nowhere).
pub fn check_symlink(dest: &Path, link: &Path) -> Result<(), LinkError> {
    let mut at: Vec<OsString> = link
        .parent()
        .unwrap_or(Path::new(""))
        .components()
        .map(|c| c.as_os_str().to_os_string())
        .collect();
    let mut todo: VecDeque<OsString> = VecDeque::new();
    let mut hops = 0;
    expand(&mut todo, &read_link(&dest.join(link))?)?;
    while let Some(c) = todo.pop_front() {
        if c == ".." {
            // The bundle's own directory is the floor.
            if at.len() <= 1 {
                return Err(LinkError::Outside);
            }
            at.pop();
            continue;
        }
        at.push(c);
        let here: PathBuf = dest.join(at.iter().collect::<PathBuf>());
        match std::fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_HOPS {
                    return Err(LinkError::Loop);
                }
                at.pop();
                expand(&mut todo, &read_link(&here)?)?;
            }
            Ok(m) if m.is_dir() => {}
            // A file with more to come, or nothing at all: the kernel stops.
            Ok(_) | Err(_) => return Ok(()),
        }
    }
    Ok(())
}

fn read_link(path: &Path) -> Result<PathBuf, LinkError> {
    // Our own unpacked link: unreadable only if it vanished, so it leads nowhere.
    Ok(std::fs::read_link(path).unwrap_or_default())
}

/// Puts the components of the link target `target` in front of `todo`.
fn expand(todo: &mut VecDeque<OsString>, target: &Path) -> Result<(), LinkError> {
    let mut parts = Vec::new();
    for c in target.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_os_string()),
            Component::ParentDir => parts.push("..".into()),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(LinkError::Absolute),
        }
    }
    for p in parts.into_iter().rev() {
        todo.push_front(p);
    }
    Ok(())
}

/// Opens `path` for reading if it is a regular file: never through a final
/// symlink (`O_NOFOLLOW`), never blocking on a fifo or a device
/// (`O_NONBLOCK`, then the opened file's own type is checked).
pub fn open_regular(path: &Path) -> std::io::Result<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A bundle `A.app` in a fresh directory, with `Contents/Resources/sub`.
    fn bundle() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("A.app/Contents/Resources/sub")).unwrap();
        std::fs::create_dir_all(d.path().join("A.app/Contents/MacOS")).unwrap();
        std::fs::write(d.path().join("A.app/Contents/MacOS/a"), b"x").unwrap();
        d
    }

    fn link(d: &tempfile::TempDir, at: &str, to: &str) -> Result<(), LinkError> {
        symlink(to, d.path().join(at)).unwrap();
        check_symlink(d.path(), Path::new(at))
    }

    #[test]
    fn links_inside_the_bundle_pass_even_through_other_links() {
        let d = bundle();
        assert_eq!(link(&d, "A.app/Contents/Resources/l", "../MacOS/a"), Ok(()));
        // A versioned framework.
        let fw = "A.app/Contents/Frameworks/F.framework";
        std::fs::create_dir_all(d.path().join(fw).join("Versions/A")).unwrap();
        std::fs::write(d.path().join(fw).join("Versions/A/F"), b"x").unwrap();
        assert_eq!(link(&d, &format!("{fw}/Versions/Current"), "A"), Ok(()));
        assert_eq!(link(&d, &format!("{fw}/F"), "Versions/Current/F"), Ok(()));
        // Dangling: leads nowhere.
        assert_eq!(link(&d, "A.app/Contents/d", "nothing/../../.."), Ok(()));
    }

    #[test]
    fn a_link_through_a_link_out_of_the_bundle_is_refused() {
        let d = bundle();
        // Lexically `sub/up/..` is `sub`; really it is `Contents`.
        assert_eq!(link(&d, "A.app/Contents/Resources/sub/up", ".."), Ok(()));
        let way_out = format!(
            "../Resources/{}{}etc/passwd",
            "sub/up/".repeat(20),
            "../".repeat(40)
        );
        assert_eq!(
            link(&d, "A.app/Contents/MacOS/x", &way_out),
            Err(LinkError::Outside)
        );
        assert_eq!(
            link(&d, "A.app/Contents/o", "../.."),
            Err(LinkError::Outside)
        );
        assert_eq!(
            link(&d, "A.app/Contents/abs", "/etc"),
            Err(LinkError::Absolute)
        );
        assert_eq!(
            link(&d, "A.app/Contents/via", "abs/passwd"),
            Err(LinkError::Absolute)
        );
        link(&d, "A.app/Contents/p", "q").unwrap();
        assert_eq!(link(&d, "A.app/Contents/q", "p/x"), Err(LinkError::Loop));
    }

    #[test]
    fn only_regular_files_are_opened_and_never_through_a_link() {
        let d = bundle();
        let a = d.path().join("A.app/Contents/MacOS/a");
        assert!(open_regular(&a).is_ok());
        let l = d.path().join("l");
        symlink(&a, &l).unwrap();
        assert!(open_regular(&l).is_err());
        assert!(open_regular(d.path()).is_err());
        // A fifo nobody writes to: refused at once, not waited on.
        let fifo = d.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        assert!(open_regular(&fifo).is_err());
    }
}
