//! Clear-signed text (RFC 4880 §7, RFC 9580 §7), as `gpg --clearsign` writes
//! it: what an apt repository's `InRelease` is.
//!
//! The text is read and written line by line (a line is bounded by
//! [`MAX_LINE`]), hashed as it goes, so memory does not grow with the file.
//! Like GnuPG 2.2:
//! - lines starting with `-` or `From ` are dash-escaped (`- `) in the output;
//! - the output keeps each line as it is, trailing white space included, and
//!   ends the last line with a line feed if the input did not;
//! - the signature (type 0x01, text) covers the canonical text: every line
//!   without its trailing spaces, tabs and carriage returns, lines joined by
//!   CR LF, no line break after the last one.
//!
//! Refused (422): a line longer than [`MAX_LINE`], and a carriage return
//! inside a line (not in its trailing white space): other OpenPGP
//! implementations (rpgp among them) read a lone CR as a line break and would
//! hash that text differently from gpg, so the signature would depend on the
//! verifier.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;

use pgp::composed::{ArmorOptions, Deserializable, DetachedSignature};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::SignatureType;

use super::{internal, UnlockedKey, MAX_SIG_FILE, READ_BUF};
use crate::SignError;

/// Longest line of a text we clear-sign (GnuPG itself splits lines at 19,995
/// bytes; an apt `Release` line is far shorter).
pub(super) const MAX_LINE: usize = 1 << 20;

const BEGIN_MESSAGE: &[u8] = b"-----BEGIN PGP SIGNED MESSAGE-----";
const BEGIN_SIGNATURE: &[u8] = b"-----BEGIN PGP SIGNATURE-----";

/// The name of `hash` in the `Hash:` armour header.
fn hash_name(hash: HashAlgorithm) -> Result<&'static str, SignError> {
    match hash {
        HashAlgorithm::Sha256 => Ok("SHA256"),
        HashAlgorithm::Sha384 => Ok("SHA384"),
        HashAlgorithm::Sha512 => Ok("SHA512"),
        other => Err(internal(format!(
            "digest {other:?} is not used for clear-signed text"
        ))),
    }
}

/// Reads the next line into `line` (without its line feed); whether there
/// was one. `n` is its 1-based number, for messages.
fn next_line(r: &mut impl BufRead, line: &mut Vec<u8>, n: u64) -> Result<bool, SignError> {
    line.clear();
    let read = r
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', line)
        .map_err(|e| internal(format!("cannot read the text: {e}")))?;
    if read == 0 {
        return Ok(false);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    } else if line.len() > MAX_LINE {
        return Err(SignError::Rejected(format!(
            "line {n} is longer than {MAX_LINE} bytes: not a text to clear-sign"
        )));
    }
    Ok(true)
}

/// The part of `line` that is hashed: without trailing spaces, tabs and CRs.
fn canonical(line: &[u8]) -> &[u8] {
    let end = line
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t' | b'\r'))
        .map_or(0, |i| i + 1);
    line.get(..end).unwrap_or_default()
}

/// Whether gpg dash-escapes `line` in the output.
fn needs_escape(line: &[u8]) -> bool {
    line.starts_with(b"-") || line.starts_with(b"From ")
}

/// Writes `input` clear-signed with `key` to the new file `output`.
pub(super) fn sign(
    key: &UnlockedKey,
    hash: HashAlgorithm,
    input: &Path,
    output: &Path,
) -> Result<(), SignError> {
    let file =
        File::open(input).map_err(|e| internal(format!("cannot open {}: {e}", input.display())))?;
    let mut reader = BufReader::with_capacity(READ_BUF, file);
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(output)
        .map_err(|e| internal(format!("cannot create {}: {e}", output.display())))?;
    let mut out = BufWriter::with_capacity(READ_BUF, out);
    let write_err = |e: std::io::Error| internal(format!("cannot write {}: {e}", output.display()));

    let mut pending = key
        .start(SignatureType::Text, hash)
        .map_err(|e| internal(format!("cannot start the text signature: {e}")))?;
    let name = hash_name(hash)?;
    out.write_all(BEGIN_MESSAGE)
        .and_then(|()| write!(out, "\nHash: {name}\n\n"))
        .map_err(write_err)?;
    let mut line = Vec::new();
    let mut n: u64 = 0;
    while next_line(&mut reader, &mut line, n + 1)? {
        n += 1;
        let hashed = canonical(&line);
        if hashed.contains(&b'\r') {
            return Err(SignError::Rejected(format!(
                "line {n} has a carriage return inside it: not a text to clear-sign \
                 (OpenPGP implementations would disagree on its signature)"
            )));
        }
        if n > 1 {
            pending.update(b"\r\n");
        }
        pending.update(hashed);
        if needs_escape(&line) {
            out.write_all(b"- ").map_err(write_err)?;
        }
        out.write_all(&line).map_err(write_err)?;
        out.write_all(b"\n").map_err(write_err)?;
    }
    if n == 0 {
        // gpg writes one empty line for an empty text.
        out.write_all(b"\n").map_err(write_err)?;
    }
    let sig = key
        .finish(pending)
        .map_err(|e| internal(format!("clear-signing {} failed: {e}", input.display())))?;
    DetachedSignature::new(sig)
        .to_armored_writer(&mut out, ArmorOptions::default())
        .map_err(|e| internal(format!("cannot armour the signature: {e}")))?;
    out.flush().map_err(write_err)?;
    out.into_inner()
        .map_err(|e| write_err(e.into_error()))?
        .sync_all()
        .map_err(write_err)
}

/// Reads the clear-signed text of `signed` as a relying party would
/// (header, dash-escaped text, signature), and checks its signature with
/// `key`. `input` is the text that was signed: the signed text must be it
/// (up to trailing white space, which the signature does not cover).
pub(super) fn verify(key: &UnlockedKey, input: &Path, signed: &Path) -> Result<(), SignError> {
    let bad = |what: String| internal(format!("{}: {what}", signed.display()));
    let open = |p: &Path| {
        File::open(p)
            .map(|f| BufReader::with_capacity(READ_BUF, f))
            .map_err(|e| internal(format!("cannot open {}: {e}", p.display())))
    };

    // First pass: the framework's structure, the Hash header, the signature.
    let mut r = open(signed)?;
    let mut line = Vec::new();
    let n = std::cell::Cell::new(0u64);
    let next = |r: &mut BufReader<File>, line: &mut Vec<u8>| {
        n.set(n.get() + 1);
        next_line(r, line, n.get()).map_err(|e| bad(e.to_string()))
    };
    if !next(&mut r, &mut line)? || line != BEGIN_MESSAGE {
        return Err(bad(
            "does not start with a clear-signed message header".into()
        ));
    }
    let mut hashes = Vec::new();
    loop {
        if !next(&mut r, &mut line)? {
            return Err(bad("ends in the armour headers".into()));
        }
        if line.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(&line);
        match text.strip_prefix("Hash: ") {
            Some(names) => hashes.extend(names.split(',').map(|h| h.trim().to_string())),
            None => return Err(bad(format!("unexpected armour header {text:?}"))),
        }
    }
    // Lines before the text: the message header, the armour headers, the blank line.
    let text_start = n.get();
    let mut text_lines = 0u64;
    loop {
        if !next(&mut r, &mut line)? {
            return Err(bad("has no signature".into()));
        }
        if line == BEGIN_SIGNATURE {
            break;
        }
        text_lines += 1;
    }
    let mut armored = BEGIN_SIGNATURE.to_vec();
    armored.push(b'\n');
    r.take(MAX_SIG_FILE)
        .read_to_end(&mut armored)
        .map_err(|e| bad(format!("cannot read the signature: {e}")))?;
    let sig = DetachedSignature::from_armor_single(armored.as_slice())
        .map_err(|e| bad(format!("not an armoured OpenPGP signature: {e}")))?
        .0
        .signature;
    if sig.typ() != Some(SignatureType::Text) {
        return Err(bad(format!("not a text signature ({:?})", sig.typ())));
    }
    let declared = sig.hash_alg().map(hash_name).transpose()?;
    if !declared.is_some_and(|h| hashes.iter().any(|x| x == h)) {
        return Err(bad(format!(
            "the signature's digest {:?} is not in the Hash header {hashes:?}",
            sig.hash_alg()
        )));
    }

    // Second pass: the canonical text of the signed file, then of the input.
    let signed_text = CanonicalText::new(open(signed)?, text_start, text_lines)
        .map_err(|e| bad(e.to_string()))?;
    key.verify(&sig, signed_text)
        .map_err(|e| bad(format!("the clear-signed text does not verify: {e}")))?;
    let mut ours = CanonicalText::new(open(signed)?, text_start, text_lines)
        .map_err(|e| bad(e.to_string()))?;
    let mut theirs = CanonicalText::new(open(input)?, 0, u64::MAX)?;
    theirs.escaped = false;
    if !same_bytes(&mut ours, &mut theirs)? {
        return Err(bad(format!(
            "the signed text is not the text of {}",
            input.display()
        )));
    }
    Ok(())
}

/// Whether two readers yield the same bytes.
fn same_bytes(a: &mut impl Read, b: &mut impl Read) -> Result<bool, SignError> {
    let (mut ba, mut bb) = (vec![0u8; READ_BUF], vec![0u8; READ_BUF]);
    loop {
        let na = read_full(a, &mut ba)?;
        let nb = read_full(b, &mut bb)?;
        if ba.get(..na) != bb.get(..nb) {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, SignError> {
    let mut n = 0;
    while let Some(rest) = buf.get_mut(n..).filter(|b| !b.is_empty()) {
        match r.read(rest) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(internal(format!("cannot read: {e}"))),
        }
    }
    Ok(n)
}

/// The canonical text (what the signature covers) of `count` lines after
/// the first `skip` lines of a file, un-dash-escaped, as a reader.
struct CanonicalText {
    reader: BufReader<File>,
    /// Lines still to read.
    left: u64,
    /// Whether lines are dash-escaped (the signed file) or plain (the input).
    escaped: bool,
    first: bool,
    line: Vec<u8>,
    /// The canonical bytes of the current line not handed out yet.
    buf: Vec<u8>,
    pos: usize,
    n: u64,
}

impl CanonicalText {
    fn new(mut reader: BufReader<File>, skip: u64, count: u64) -> Result<Self, SignError> {
        let mut line = Vec::new();
        for i in 0..skip {
            next_line(&mut reader, &mut line, i + 1)?;
        }
        Ok(CanonicalText {
            reader,
            left: count,
            escaped: true,
            first: true,
            line,
            buf: Vec::new(),
            pos: 0,
            n: skip,
        })
    }

    /// Loads the next line into `buf`; false when there is none.
    fn refill(&mut self) -> std::io::Result<bool> {
        if self.left == 0 {
            return Ok(false);
        }
        self.n += 1;
        let more = next_line(&mut self.reader, &mut self.line, self.n)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        if !more {
            return Ok(false);
        }
        self.left -= 1;
        let mut text = self.line.as_slice();
        if self.escaped {
            text = text.strip_prefix(b"- ").unwrap_or(text);
        }
        self.buf.clear();
        if !self.first {
            self.buf.extend_from_slice(b"\r\n");
        }
        self.first = false;
        self.buf.extend_from_slice(canonical(text));
        self.pos = 0;
        Ok(true)
    }
}

impl Read for CanonicalText {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            if !self.refill()? {
                return Ok(0);
            }
        }
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let k = rest.len().min(out.len());
        if let (Some(dst), Some(src)) = (out.get_mut(..k), rest.get(..k)) {
            dst.copy_from_slice(src);
        }
        self.pos += k;
        Ok(k)
    }
}

#[cfg(test)]
#[path = "clearsign_tests.rs"]
mod tests;
