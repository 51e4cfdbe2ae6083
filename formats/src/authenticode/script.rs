//! PowerShell scripts and their relatives (.ps1, .psm1, .psd1, .ps1xml,
//! .psc1, .cdxml, .mof): the signature is a base64 PKCS#7 in comment lines
//! at the end of the text, between `SIG # Begin signature block` and
//! `SIG # End signature block`.
//!
//! Text has no magic number: the client's file name (a label, never a path)
//! chooses the comment syntax, `# …` for PowerShell code, `<!-- … -->` for
//! XML, `/* … */` for MOF, the same list as osslsigncode 2.9. The encoding
//! is UTF-16LE when the text starts with the FF FE byte-order mark, UTF-8
//! otherwise (a UTF-8 BOM is kept and hashed as U+FEFF).
//!
//! The hash is that of the text in UTF-16LE (UTF-8 text converted), up to
//! the signature block: that is, up to the line break before the first line
//! that begins with the commented header, where an old signature starts. The
//! block we append starts with CRLF and ends with CRLF, in the text's
//! encoding. Both passes (finding the block, then copying and hashing) stream.
//!
//! Refused: invalid UTF-8, UTF-16 of an odd length, big-endian UTF-16 (which
//! osslsigncode would take for UTF-8), and a signature header on the very
//! first line. JavaScript, VBScript and WSF are not signed: osslsigncode 2.9
//! does not sign them either.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};

use base64::Engine;

use crate::signed_data::DigestAlg;
use crate::SignError;

/// The PowerShell Subject Interface Package, as osslsigncode writes it.
const SIP_UUID: [u8; 16] = [
    0x1f, 0xcc, 0x3b, 0x60, 0x59, 0x4b, 0x08, 0x4e, 0xb7, 0x24, 0xd2, 0xc6, 0x29, 0x7e, 0xf3, 0x51,
];
const HEADER: &str = "SIG # Begin signature block";
const FOOTER: &str = "SIG # End signature block";
/// Characters of a line that are kept for matching (longer lines are
/// matched on their start), as in osslsigncode.
const LINE_MAX: usize = 100;
/// Largest signature block read back when verifying.
const MAX_BLOCK: u64 = 16 << 20;
const READ_BUF: usize = 64 << 10;

/// The file name extensions signed as scripts.
pub(crate) const EXTENSIONS: &[&str] = &[
    ".ps1", ".ps1xml", ".psc1", ".psd1", ".psm1", ".cdxml", ".mof",
];

/// The comment syntax of the signature block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Syntax {
    /// `# …` (PowerShell code and data).
    Hash,
    /// `<!-- … -->` (XML).
    Xml,
    /// `/* … */` (MOF).
    C,
}

impl Syntax {
    fn open_close(self) -> (&'static str, &'static str) {
        match self {
            Syntax::Hash => ("# ", ""),
            Syntax::Xml => ("<!-- ", " -->"),
            Syntax::C => ("/* ", " */"),
        }
    }
}

/// The syntax for the client's file name `filename`, if it names a script.
pub(crate) fn syntax_for(filename: &str) -> Option<Syntax> {
    let lower = filename.to_ascii_lowercase();
    let ext = EXTENSIONS
        .iter()
        .find(|e| lower.len() > e.len() && lower.ends_with(*e))?;
    Some(match *ext {
        ".ps1xml" | ".psc1" | ".cdxml" => Syntax::Xml,
        ".mof" => Syntax::C,
        _ => Syntax::Hash,
    })
}

/// The syntax of the signature block that ends `file`, if one does: how
/// verify tells a signed script without its name.
pub(crate) fn syntax_of_signed(file: &mut File) -> Result<Option<Syntax>, SignError> {
    let len = file.metadata()?.len();
    let utf16 = encoding(file, len).unwrap_or(false);
    let tail = len.min(128);
    file.seek(SeekFrom::Start(len - tail))?;
    let mut raw = Vec::with_capacity(tail as usize);
    (&mut *file).take(tail).read_to_end(&mut raw)?;
    file.seek(SeekFrom::Start(0))?;
    let text = if utf16 {
        let units: Vec<u16> = raw
            .chunks_exact(2)
            .filter_map(|b| Some(u16::from_le_bytes([*b.first()?, *b.get(1)?])))
            .collect();
        String::from_utf16_lossy(&units)
    } else {
        String::from_utf8_lossy(&raw).into_owned()
    };
    let last = text
        .trim_end_matches(['\r', '\n'])
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .trim_end_matches('\r');
    Ok([Syntax::Hash, Syntax::Xml, Syntax::C]
        .into_iter()
        .find(|s| {
            let (open, close) = s.open_close();
            last.strip_prefix(open).and_then(|t| t.strip_suffix(close)) == Some(FOOTER)
        }))
}

/// `filename` as it may appear in a message: printable, at most 64 characters.
pub(crate) fn label(filename: &str) -> String {
    let shown: String = filename
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    format!("{shown:?}")
}

/// The `SpcIndirectDataContent` data value of script signatures.
pub(crate) fn sip_info() -> Vec<u8> {
    super::pkcs7::spc_sip_info(65536, &SIP_UUID)
}

fn reject(what: impl std::fmt::Display) -> SignError {
    SignError::Rejected(format!("cannot sign this script: {what}"))
}

/// What signing needs to know about a script.
#[derive(Debug)]
pub(crate) struct Layout {
    /// UTF-16LE (with a BOM) rather than UTF-8.
    pub(crate) utf16: bool,
    /// The file's length.
    pub(crate) len: u64,
    /// Where an existing signature block starts (its leading line break).
    /// Invariant: `< len`.
    pub(crate) signature_at: Option<u64>,
}

impl Layout {
    /// The end of the signed text.
    fn content_end(&self) -> u64 {
        self.signature_at.unwrap_or(self.len)
    }
}

/// Decodes characters from a byte stream, refusing invalid text.
struct Decoder {
    utf16: bool,
    /// Bytes of an incomplete character carried to the next chunk.
    carry: Vec<u8>,
    /// Byte offset of the next byte fed.
    pos: u64,
}

impl Decoder {
    /// Feeds `chunk`; calls `f(offset, char)` for each complete character.
    fn feed(&mut self, chunk: &[u8], mut f: impl FnMut(u64, char)) -> Result<(), SignError> {
        let mut data = std::mem::take(&mut self.carry);
        data.extend_from_slice(chunk);
        let start = self.pos - (data.len() - chunk.len()) as u64;
        let used = if self.utf16 {
            let units = data.len() / 2;
            let mut off = start;
            let iter = (0..units).filter_map(|i| {
                let b = data.get(2 * i..2 * i + 2)?;
                Some(u16::from_le_bytes([*b.first()?, *b.get(1)?]))
            });
            let mut pending_high: Option<u16> = None;
            let mut used = 0;
            for (i, u) in iter.enumerate() {
                match (pending_high, u) {
                    (None, 0xd800..=0xdbff) => pending_high = Some(u),
                    (Some(h), 0xdc00..=0xdfff) => {
                        let c = 0x10000 + ((u32::from(h) - 0xd800) << 10) + (u32::from(u) - 0xdc00);
                        f(off, char::from_u32(c).unwrap_or('\u{fffd}'));
                        off += 4;
                        pending_high = None;
                        used = 2 * (i + 1);
                    }
                    (Some(_), _) | (None, 0xdc00..=0xdfff) => {
                        return Err(reject(format!(
                            "an unpaired UTF-16 surrogate at byte {}",
                            start + 2 * i as u64
                        )))
                    }
                    (None, _) => {
                        f(off, char::from_u32(u32::from(u)).unwrap_or('\u{fffd}'));
                        off += 2;
                        used = 2 * (i + 1);
                    }
                }
            }
            used
        } else {
            let (text, used) = match std::str::from_utf8(&data) {
                Ok(t) => (t, data.len()),
                Err(e) if e.error_len().is_none() => {
                    let n = e.valid_up_to();
                    (
                        std::str::from_utf8(data.get(..n).unwrap_or_default()).unwrap_or(""),
                        n,
                    )
                }
                Err(e) => {
                    return Err(reject(format!(
                    "invalid UTF-8 at byte {}: a script is signed as UTF-8 or as UTF-16LE with \
                     its FF FE byte-order mark; save it in one of them (PowerShell reads both) \
                     and sign again",
                    start + e.valid_up_to() as u64
                )))
                }
            };
            for (i, c) in text.char_indices() {
                f(start + i as u64, c);
            }
            used
        };
        self.carry = data.get(used..).unwrap_or_default().to_vec();
        self.pos += chunk.len() as u64;
        Ok(())
    }

    fn finish(&self) -> Result<(), SignError> {
        if self.carry.is_empty() {
            Ok(())
        } else if self.utf16 {
            Err(reject("the UTF-16 text ends in the middle of a character"))
        } else {
            Err(reject("the UTF-8 text ends in the middle of a character"))
        }
    }
}

fn encoding(file: &mut File, len: u64) -> Result<bool, SignError> {
    let mut bom = Vec::with_capacity(2);
    file.seek(SeekFrom::Start(0))?;
    (&mut *file).take(2).read_to_end(&mut bom)?;
    file.seek(SeekFrom::Start(0))?;
    match bom.as_slice() {
        [0xff, 0xfe] if len % 2 == 1 => Err(reject(format!(
            "UTF-16 text (FF FE byte-order mark) of an odd length ({len} bytes)"
        ))),
        [0xff, 0xfe] => Ok(true),
        [0xfe, 0xff] => Err(reject(
            "big-endian UTF-16 (FE FF byte-order mark): save it as UTF-16LE or UTF-8",
        )),
        _ => Ok(false),
    }
}

/// Reads the script once: its encoding, and where an old signature block
/// starts (the line-matching rule of osslsigncode, see the module doc).
pub(crate) fn scan(file: &mut File, len: u64, syntax: Syntax) -> Result<Layout, SignError> {
    let utf16 = encoding(file, len)?;
    let (open, close) = syntax.open_close();
    let wanted: Vec<char> = open
        .chars()
        .chain(HEADER.chars())
        .chain(close.chars())
        .collect();
    // osslsigncode's line buffer: the first LINE_MAX - 1 characters of the
    // line, then its last slot is overwritten by each further character; a
    // header line's CR is looked for in the slot before the LF's.
    let mut line = ['\0'; LINE_MAX];
    let mut line_pos = 0usize;
    // Offset of the line break that ended the previous line (None: first line).
    let mut prev_break: Option<u64> = None;
    let mut found: Option<Result<u64, SignError>> = None;
    let unit: u64 = if utf16 { 2 } else { 1 };
    let mut d = Decoder {
        utf16,
        carry: Vec::new(),
        pos: 0,
    };
    let mut buf = vec![0u8; READ_BUF];
    let mut total = 0u64;
    while found.is_none() {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        d.feed(buf.get(..n).unwrap_or_default(), |off, c| {
            if found.is_some() {
                return;
            }
            if let Some(slot) = line.get_mut(line_pos) {
                *slot = c;
            }
            if c != '\n' {
                if line_pos < LINE_MAX - 1 {
                    line_pos += 1;
                }
                return;
            }
            let header =
                line_pos >= wanted.len() && line.get(..wanted.len()) == Some(wanted.as_slice());
            if header {
                let crlf = line_pos
                    .checked_sub(1)
                    .and_then(|i| line.get(i))
                    .is_some_and(|c| *c == '\r');
                let at = prev_break.map(|at| if crlf { at.saturating_sub(unit) } else { at });
                found = Some(match at {
                    Some(at) if at > 0 => Ok(at),
                    _ => Err(reject(
                        "it starts with a signature block (there is no script to sign)",
                    )),
                });
            }
            line_pos = 0;
            prev_break = Some(off);
        })?;
    }
    let signature_at = match found {
        Some(r) => Some(r?),
        None => {
            d.finish()?;
            if total != len {
                return Err(SignError::Internal(anyhow::anyhow!(
                    "the input changed while being read"
                )));
            }
            None
        }
    };
    file.seek(SeekFrom::Start(0))?;
    Ok(Layout {
        utf16,
        len,
        signature_at,
    })
}

/// Copies the text before any signature block to `out` (when given) and
/// returns its hash (over its UTF-16LE form).
pub(crate) fn copy_and_hash(
    file: &mut File,
    l: &Layout,
    alg: DigestAlg,
    mut out: Option<&mut dyn Write>,
) -> Result<Vec<u8>, SignError> {
    let mut h = alg.hasher();
    let mut d = Decoder {
        utf16: l.utf16,
        carry: Vec::new(),
        pos: 0,
    };
    let end = l.content_end();
    file.seek(SeekFrom::Start(0))?;
    let mut rest = (&mut *file).take(end);
    let mut buf = vec![0u8; READ_BUF];
    let mut utf16 = Vec::with_capacity(2 * READ_BUF + 8);
    let mut done = 0u64;
    loop {
        let n = rest.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = buf.get(..n).unwrap_or_default();
        if let Some(w) = out.as_mut() {
            w.write_all(chunk)?;
        }
        if l.utf16 {
            h.update(chunk);
        } else {
            utf16.clear();
            d.feed(chunk, |_, c| {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    utf16.extend_from_slice(&u.to_le_bytes());
                }
            })?;
            h.update(&utf16);
        }
        done += n as u64;
    }
    if !l.utf16 {
        d.finish()?;
    }
    if done != end {
        return Err(SignError::Internal(anyhow::anyhow!(
            "the input shrank while being read ({done} of {end} bytes)"
        )));
    }
    Ok(h.finalize().to_vec())
}

/// The signature block for the DER `der`, in the script's encoding.
pub(crate) fn signature_block(syntax: Syntax, utf16: bool, der: &[u8]) -> Vec<u8> {
    let (open, close) = syntax.open_close();
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut text = String::with_capacity(b64.len() * 2);
    let mut line = |t: &str| {
        text.push_str("\r\n");
        text.push_str(open);
        text.push_str(t);
        text.push_str(close);
    };
    line(HEADER);
    for chunk in b64.as_bytes().chunks(64) {
        line(std::str::from_utf8(chunk).unwrap_or_default());
    }
    line(FOOTER);
    // signtool expects the text to end with CRLF.
    text.push_str("\r\n");
    if utf16 {
        text.encode_utf16().flat_map(u16::to_le_bytes).collect()
    } else {
        text.into_bytes()
    }
}

/// The DER signature in the block of a signed script.
pub(crate) fn read_signature(
    file: &mut File,
    l: &Layout,
    syntax: Syntax,
) -> Result<Vec<u8>, String> {
    let at = l.signature_at.ok_or("the script has no signature block")?;
    if l.len - at > MAX_BLOCK {
        return Err(format!("a signature block of {} bytes", l.len - at));
    }
    file.seek(SeekFrom::Start(at)).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    (&mut *file)
        .take(MAX_BLOCK)
        .read_to_end(&mut raw)
        .map_err(|e| e.to_string())?;
    let text = if l.utf16 {
        let units: Vec<u16> = raw
            .chunks_exact(2)
            .filter_map(|b| Some(u16::from_le_bytes([*b.first()?, *b.get(1)?])))
            .collect();
        String::from_utf16(&units).map_err(|e| e.to_string())?
    } else {
        String::from_utf8(raw).map_err(|e| e.to_string())?
    };
    let (open, close) = syntax.open_close();
    let mut b64 = String::new();
    let mut lines = text.split('\n').map(|s| s.trim_end_matches('\r'));
    let mut begun = false;
    for line in &mut lines {
        let Some(inner) = line.strip_prefix(open).and_then(|s| s.strip_suffix(close)) else {
            if begun {
                return Err(format!("an odd line in the signature block: {line:?}"));
            }
            continue;
        };
        match inner {
            HEADER => begun = true,
            FOOTER if begun => {
                return base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .map_err(|e| format!("the signature block is not base64: {e}"));
            }
            _ if begun => b64.push_str(inner),
            _ => {}
        }
    }
    Err("the signature block has no end line".into())
}

#[cfg(test)]
mod tests;
