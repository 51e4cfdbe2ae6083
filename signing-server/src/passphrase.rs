//! Asking every key's passphrase at start-up, unlocking the keys and probing them.
//!
//! On a terminal each passphrase is read without echo (rpassword, from
//! /dev/tty) after a `NAME passphrase: ` prompt. When stdin is not a
//! terminal, one line per encrypted key is read from stdin, in the order of
//! the `[format:…]` sections; a key file shared by several formats is asked
//! once. Passphrases go straight into [`SecretString`] (zeroized on drop) and
//! are dropped as soon as the keys are open; they are never logged, written
//! or handed to another process.

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use formats::{SignError, Signer};
use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::config::Config;

/// A start-up failure that names the format at fault (exit code 1, or 2
/// when the format's settings are wrong).
#[derive(Debug, thiserror::Error)]
#[error("format {format}: {message}")]
pub struct UnlockError {
    /// The `[format:NAME]`.
    pub format: String,
    /// What went wrong (never contains a passphrase).
    pub message: String,
    /// The settings are at fault (a setting the type does not take, an
    /// unknown digest...), not the key or its passphrase: a config error.
    pub config: bool,
}

/// An unlocked, probed signer for each format, in config order.
pub type Signers = Vec<(String, Arc<dyn Signer>)>;

/// Where passphrases come from.
pub trait PassphraseSource {
    /// The passphrase for the key of format `name`; `None` when there is none (EOF).
    fn ask(&mut self, name: &str) -> std::io::Result<Option<SecretString>>;
}

/// The terminal (no echo) or, when stdin is not a terminal, stdin lines.
pub struct Console;

impl PassphraseSource for Console {
    fn ask(&mut self, name: &str) -> std::io::Result<Option<SecretString>> {
        if std::io::stdin().is_terminal() {
            let p = rpassword::prompt_password(format!("{name} passphrase: "))?;
            return Ok(Some(SecretString::from(p)));
        }
        read_stdin_line()
    }
}

/// `systemd-ask-password`: for a server started by systemd, where ops answer
/// with `systemd-tty-ask-password-agent` (or on the console). The helper
/// only ever *produces* the passphrase; it is read from its stdout into a
/// zeroizing buffer.
pub struct SystemdAskPassword;

impl PassphraseSource for SystemdAskPassword {
    fn ask(&mut self, name: &str) -> std::io::Result<Option<SecretString>> {
        let mut child = std::process::Command::new("systemd-ask-password")
            .arg("--timeout=0")
            .arg(format!("--id=signing-server:{name}"))
            .arg(format!("{name} passphrase:"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot run systemd-ask-password: {e}")))?;
        let mut out = Zeroizing::new(Vec::with_capacity(256));
        if let Some(mut stdout) = child.stdout.take() {
            stdout.read_to_end(&mut out)?;
        }
        let status = child.wait()?;
        if !status.success() {
            return Err(std::io::Error::other(format!("systemd-ask-password failed ({status})")));
        }
        while matches!(out.last(), Some(b'\n' | b'\r')) {
            out.pop();
        }
        let text = std::str::from_utf8(&out)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "passphrase is not UTF-8"))?;
        Ok(Some(SecretString::from(text.to_string())))
    }
}

/// Reads one line from fd 0 byte by byte, unbuffered, so no copy of the
/// passphrase lingers in a stdio buffer; the bytes live in a zeroizing buffer.
fn read_stdin_line() -> std::io::Result<Option<SecretString>> {
    let fd = std::io::stdin().as_fd().try_clone_to_owned()?;
    let mut f = std::fs::File::from(fd);
    let mut buf = Zeroizing::new(Vec::with_capacity(256));
    let mut byte = [0u8; 1];
    loop {
        match f.read(&mut byte)? {
            0 if buf.is_empty() => return Ok(None),
            0 => break,
            _ if byte[0] == b'\n' => break,
            _ => buf.push(byte[0]),
        }
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    let text = std::str::from_utf8(&buf)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "passphrase is not UTF-8"))?;
    Ok(Some(SecretString::from(text.to_string())))
}

/// Asks the passphrases, opens every format's key and runs its probe in a
/// private directory under `scratch`. Stops at the first failure.
pub fn unlock_all(cfg: &Config, source: &mut dyn PassphraseSource, scratch: &Path) -> Result<Signers, UnlockError> {
    // Keys already asked for, by canonical path.
    let mut asked: HashMap<PathBuf, Option<SecretString>> = HashMap::new();
    let mut signers: Signers = Vec::new();
    for f in &cfg.formats {
        let fail = |message: String| UnlockError { format: f.signer.name.clone(), message, config: false };
        let failed = |e: SignError| UnlockError { config: matches!(e, SignError::Config(_)), ..fail(describe(&e)) };
        let kind = formats::registry::find(&f.signer.kind)
            .ok_or_else(|| UnlockError { config: true, ..fail(format!("unknown type {}", f.signer.kind)) })?;
        let canon = f.signer.key.canonicalize().unwrap_or_else(|_| f.signer.key.clone());
        if !asked.contains_key(&canon) {
            let needs = (kind.needs_passphrase)(&f.signer).map_err(failed)?;
            let pass = if needs {
                match source.ask(&f.signer.name) {
                    Ok(Some(p)) => Some(p),
                    Ok(None) => {
                        return Err(fail(format!(
                            "no passphrase given for key {} (stdin ended; give one line per encrypted key)",
                            f.signer.key.display()
                        )))
                    }
                    Err(e) => return Err(fail(format!("cannot read the passphrase: {e}"))),
                }
            } else {
                None
            };
            asked.insert(canon.clone(), pass);
        }
        let pass = asked.get(&canon).and_then(|p| p.as_ref());
        let signer = (kind.open)(&f.signer, pass).map_err(failed)?;
        let dir = scratch.join(format!("probe-{}", f.signer.name));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| fail(format!("cannot create probe directory {}: {e}", dir.display())))?;
        let probed = signer.probe(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        probed.map_err(|e| fail(format!("probe signature failed: {}", describe(&e))))?;
        signers.push((f.signer.name.clone(), Arc::from(signer)));
    }
    Ok(signers)
}

fn describe(e: &SignError) -> String {
    match e {
        SignError::Internal(err) => format!("{err:#}"),
        other => other.to_string(),
    }
}
