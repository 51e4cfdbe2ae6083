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
use std::path::Path;
use std::sync::Arc;

use formats::{SignError, Signer};
use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::config::Config;
use crate::token_keys::AskedFor;

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

/// Where passphrases (and token PINs) come from.
pub trait PassphraseSource {
    /// The secret asked with `prompt` (`NAME passphrase`, `TOKEN PIN`); `None` when
    /// there is none (EOF).
    fn ask_prompt(&mut self, prompt: &str) -> std::io::Result<Option<SecretString>>;

    /// The passphrase for the key of format `name`.
    fn ask(&mut self, name: &str) -> std::io::Result<Option<SecretString>> {
        self.ask_prompt(&format!("{name} passphrase"))
    }

    /// The PIN of the PKCS#11 token labelled `token`.
    fn ask_pin(&mut self, token: &str) -> std::io::Result<Option<SecretString>> {
        self.ask_prompt(&format!("{token} PIN"))
    }
}

/// The terminal (no echo) or, when stdin is not a terminal, stdin lines.
pub struct Console;

impl PassphraseSource for Console {
    fn ask_prompt(&mut self, prompt: &str) -> std::io::Result<Option<SecretString>> {
        if std::io::stdin().is_terminal() {
            let p = rpassword::prompt_password(format!("{prompt}: "))?;
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
    fn ask_prompt(&mut self, prompt: &str) -> std::io::Result<Option<SecretString>> {
        let mut child = std::process::Command::new("systemd-ask-password")
            .arg("--timeout=0")
            .arg(format!("--id=signing-server:{prompt}"))
            .arg(format!("{prompt}:"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot run systemd-ask-password: {e}"))
            })?;
        // Room for the longest passphrase, its newline and one byte more: the
        // read stops short of the capacity, so the buffer is never reallocated.
        let mut out = Zeroizing::new(Vec::with_capacity(MAX_PASSPHRASE + 3));
        if let Some(stdout) = child.stdout.take() {
            stdout
                .take(MAX_PASSPHRASE as u64 + 2)
                .read_to_end(&mut out)?;
        }
        let status = child.wait()?;
        if out.len() > MAX_PASSPHRASE + 1 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("passphrase longer than {MAX_PASSPHRASE} bytes"),
            ));
        }
        if !status.success() {
            return Err(std::io::Error::other(format!(
                "systemd-ask-password failed ({status})"
            )));
        }
        while matches!(out.last(), Some(b'\n' | b'\r')) {
            out.pop();
        }
        let text = std::str::from_utf8(&out).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "passphrase is not UTF-8")
        })?;
        Ok(Some(SecretString::from(text.to_string())))
    }
}

/// Longest passphrase line accepted from stdin. The line buffer is
/// allocated at this size once and never grows: growing a `Vec` copies it
/// and frees the old allocation unwiped, out of `Zeroizing`'s reach.
const MAX_PASSPHRASE: usize = 1024;

/// Reads one line from fd 0 byte by byte, unbuffered, so no copy of the
/// passphrase lingers in a stdio buffer; the bytes live in a zeroizing buffer.
fn read_stdin_line() -> std::io::Result<Option<SecretString>> {
    let fd = std::io::stdin().as_fd().try_clone_to_owned()?;
    let mut f = std::fs::File::from(fd);
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_PASSPHRASE));
    if !read_line_into(&mut f, &mut buf)? {
        return Ok(None);
    }
    let text = std::str::from_utf8(&buf).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "passphrase is not UTF-8")
    })?;
    Ok(Some(SecretString::from(text.to_string())))
}

/// Reads one line (without its `\n` or `\r\n`) into `buf`, one byte at a
/// time, never past `buf`'s capacity (a longer line is an error, so `buf`
/// is never reallocated). `false` at end of input with nothing read.
fn read_line_into(r: &mut impl Read, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut byte = [0u8; 1];
    loop {
        match r.read(&mut byte)? {
            0 if buf.is_empty() => return Ok(false),
            0 => break,
            _ if byte[0] == b'\n' => break,
            _ if buf.len() == buf.capacity() => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("passphrase line longer than {} bytes", buf.capacity()),
                ))
            }
            _ => buf.push(byte[0]),
        }
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(true)
}

/// Asks the passphrases, opens every format's key and runs its probe in a
/// private directory under `scratch`. Stops at the first failure.
pub fn unlock_all(
    cfg: &Config,
    source: &mut dyn PassphraseSource,
    scratch: &Path,
) -> Result<Signers, UnlockError> {
    // Secrets already asked for: by canonical key path, or by token.
    let mut asked: HashMap<AskedFor, Option<SecretString>> = HashMap::new();
    let mut signers: Signers = Vec::new();
    for f in &cfg.formats {
        let fail = |message: String| UnlockError {
            format: f.signer.name.clone(),
            message,
            config: false,
        };
        let failed = |e: SignError| UnlockError {
            config: matches!(e, SignError::Config(_)),
            ..fail(describe(&e))
        };
        let kind = formats::registry::find(&f.signer.kind).ok_or_else(|| UnlockError {
            config: true,
            ..fail(format!("unknown type {}", f.signer.kind))
        })?;
        let (canon, token) = crate::token_keys::asked_for(&f.signer).map_err(failed)?;
        if !asked.contains_key(&canon) {
            let (needs, what) = match &token {
                Some(_) => (true, "PIN"),
                None => (
                    (kind.needs_passphrase)(&f.signer).map_err(failed)?,
                    "passphrase",
                ),
            };
            let pass = if needs {
                let answer = match &token {
                    Some(label) => source.ask_pin(label),
                    None => source.ask(&f.signer.name),
                };
                match answer {
                    Ok(Some(p)) => Some(p),
                    Ok(None) => {
                        return Err(fail(format!(
                            "no {what} given for key {} (stdin ended; give one line per encrypted key or token)",
                            f.signer.key.display()
                        )))
                    }
                    Err(e) => return Err(fail(format!("cannot read the {what}: {e}"))),
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
        std::fs::create_dir_all(&dir).map_err(|e| {
            fail(format!(
                "cannot create probe directory {}: {e}",
                dir.display()
            ))
        })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn zeroized_on_drop<T: zeroize::ZeroizeOnDrop>(_: &T) {}

    #[test]
    fn the_line_buffer_is_zeroizing_and_never_reallocated() {
        // The longest accepted line fills the buffer exactly: the allocation
        // Zeroizing wipes on drop is the only one that ever held the bytes.
        let mut input = vec![b'p'; MAX_PASSPHRASE];
        input.extend_from_slice(b"\nnext line\n");
        let mut buf = Zeroizing::new(Vec::with_capacity(MAX_PASSPHRASE));
        zeroized_on_drop(&buf);
        let (ptr, cap) = (buf.as_ptr(), buf.capacity());
        let mut r = input.as_slice();
        assert!(read_line_into(&mut r, &mut buf).unwrap());
        assert_eq!(buf.as_slice(), &[b'p'; MAX_PASSPHRASE][..]);
        assert_eq!(
            (buf.as_ptr(), buf.capacity()),
            (ptr, cap),
            "the buffer was reallocated"
        );
        // Only the line was consumed: the next key's line is still there.
        assert_eq!(r, b"next line\n");
        // What Drop does: wipe the allocation.
        zeroize::Zeroize::zeroize(&mut *buf);
        assert!(buf.is_empty());
        assert_eq!(buf.as_ptr(), ptr);
    }

    #[test]
    fn a_longer_line_is_refused_not_grown_into() {
        let input = vec![b'p'; MAX_PASSPHRASE + 1];
        let mut buf = Zeroizing::new(Vec::with_capacity(MAX_PASSPHRASE));
        let ptr = buf.as_ptr();
        let err = read_line_into(&mut input.as_slice(), &mut buf).unwrap_err();
        assert!(err.to_string().contains("longer than 1024 bytes"), "{err}");
        assert!(
            !err.to_string().contains("ppp"),
            "the error must not carry the passphrase"
        );
        assert_eq!(buf.as_ptr(), ptr);
    }

    #[test]
    fn end_of_input_and_short_lines() {
        let mut buf = Zeroizing::new(Vec::with_capacity(MAX_PASSPHRASE));
        assert!(!read_line_into(&mut &b""[..], &mut buf).unwrap());
        assert!(read_line_into(&mut &b"typed on Windows\r\n"[..], &mut buf).unwrap());
        assert_eq!(buf.as_slice(), b"typed on Windows");
        buf.clear();
        assert!(read_line_into(&mut &b"last line without newline"[..], &mut buf).unwrap());
        assert_eq!(buf.as_slice(), b"last line without newline");
    }

    #[test]
    fn passphrase_holders_are_zeroized_on_drop() {
        // Compile-time facts: the types that hold passphrases here wipe themselves.
        zeroized_on_drop(&SecretString::from(String::from("x")));
        zeroized_on_drop(&Zeroizing::new(Vec::<u8>::new()));
    }
}
