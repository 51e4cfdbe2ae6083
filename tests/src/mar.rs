//! Helpers for the MAR end-to-end tests: Mozilla's `mar` tool (PyPI `mar`
//! 3.x, in the test venv) to make fixtures and verify signatures, and the
//! server config for the `mar` (SHA-1, 2048) and `mar_sha384` (SHA-384,
//! 4096) formats.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{certs, passphrase, run, ServerOpts};

pub use crate::venv;

/// Mozilla's `mar` tool.
pub fn mar_tool() -> PathBuf {
    let exe = venv().join("bin/mar");
    assert!(
        exe.is_file(),
        "{} missing: run scripts/setup.sh to install PyPI `mar` into the venv",
        exe.display()
    );
    exe
}

/// The public key of a test MAR key (`sha1-2048` or `sha384-4096`).
pub fn pubkey(name: &str) -> PathBuf {
    certs().join("mar").join(format!("{name}.pub.pem"))
}

/// `[format:mar]` (sha1, 2048) and `[format:mar_sha384]` (sha384, 4096),
/// each with `extra` lines; two passphrase lines on stdin (one per key file).
pub fn opts(extra: &str) -> ServerOpts {
    let m = certs().join("mar");
    ServerOpts {
        formats: format!(
            "[format:mar]\ntype = mar\nkey = {}\ndigest = sha1\n{extra}\n\
             [format:mar_sha384]\ntype = mar\nkey = {}\ndigest = sha384\n{extra}\n",
            m.join("sha1-2048.key").display(),
            m.join("sha384-4096.key").display()
        ),
        stdin: format!("{pw}\n{pw}\n", pw = passphrase()),
        ..ServerOpts::default()
    }
}

/// Makes a MAR with `mar -c` in `dir` from `files` (name, bytes), with the
/// given extra flags (`-j`, `-J`, `-V 1.0 -H release`); returns its path.
pub fn make_mar(dir: &Path, name: &str, flags: &[&str], files: &[(&str, &[u8])]) -> PathBuf {
    let src = dir.join(format!("{name}.src"));
    std::fs::create_dir_all(&src).expect("mkdir");
    for (f, data) in files {
        let p = src.join(f);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, data).expect("write");
    }
    let out = dir.join(name);
    let (ok, text) = run(Command::new(mar_tool())
        .args(flags)
        .arg("-C")
        .arg(&src)
        .arg("-c")
        .arg(&out)
        .args(files.iter().map(|(f, _)| *f)));
    assert!(ok, "mar -c failed: {text}");
    out
}

/// `mar -v FILE -k PUBKEY`: (printed `Verification OK`, output).
pub fn mar_verify(file: &Path, pubkey: &Path) -> (bool, String) {
    let (_, out) = run(Command::new(mar_tool())
        .arg("-v")
        .arg(file)
        .arg("-k")
        .arg(pubkey));
    (out.contains("Verification OK"), out)
}
