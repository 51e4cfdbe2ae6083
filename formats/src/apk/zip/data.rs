//! An entry's data: copied compressed as it is, and inflated on the way to
//! check its size and CRC-32 against the central directory and to feed its
//! content to the caller (who hashes it for MANIFEST.MF).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};

use super::{reject, Entry, MAX_CD_SIZE};
use crate::SignError;

/// Where inflated bytes go: CRC-32 and length of the content, refusing more
/// bytes than the central directory announced (zip bombs stop here), then
/// the caller's `content` writer.
struct Sink<'a, C: Write> {
    crc: flate2::Crc,
    len: u64,
    max: u64,
    content: &'a mut C,
}

impl<C: Write> Write for Sink<'_, C> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.len += buf.len() as u64;
        if self.len > self.max {
            return Err(std::io::Error::other("more data than announced"));
        }
        self.crc.update(buf);
        self.content.write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Mode<'a, C: Write> {
    Inflate(flate2::write::DeflateDecoder<Sink<'a, C>>),
    Stored(Sink<'a, C>),
}

/// Copies `e`'s compressed bytes to `out` and its content to `content`,
/// after checking the content's size and CRC. `e` is an entry we keep
/// (method 0 or 8).
pub(crate) fn copy_entry<W: Write, C: Write>(
    input: &mut File,
    e: &Entry,
    out: &mut W,
    buf: &mut [u8],
    content: &mut C,
) -> Result<(), SignError> {
    let bad = |why: &str| reject(format!("entry {:?}: {why}", e.name));
    input.seek(SeekFrom::Start(e.data_offset))?;
    let mut left = u64::from(e.csize);
    let sink = Sink {
        crc: flate2::Crc::new(),
        len: 0,
        max: u64::from(e.usize),
        content,
    };
    let mut mode = if e.method != 0 {
        Mode::Inflate(flate2::write::DeflateDecoder::new(sink))
    } else {
        Mode::Stored(sink)
    };
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let chunk = buf.get_mut(..want).ok_or_else(|| bad("buffer"))?;
        input.read_exact(chunk).map_err(|err| {
            if err.kind() == std::io::ErrorKind::UnexpectedEof {
                bad("truncated data")
            } else {
                err.into()
            }
        })?;
        out.write_all(chunk)?;
        match &mut mode {
            Mode::Inflate(d) => d.write_all(chunk).map_err(|err| {
                bad(&format!(
                    "corrupt deflate data or larger than announced ({err})"
                ))
            })?,
            Mode::Stored(s) => s
                .write_all(chunk)
                .map_err(|err| bad(&format!("larger than announced ({err})")))?,
        }
        left -= want as u64;
    }
    let sink = match mode {
        Mode::Inflate(d) => d
            .finish()
            .map_err(|err| bad(&format!("corrupt deflate data ({err})")))?,
        Mode::Stored(s) => s,
    };
    let (len, crc) = (sink.len, sink.crc.sum());
    if len != u64::from(e.usize) {
        return Err(bad("content size differs from the central directory"));
    }
    if crc != e.crc {
        return Err(bad("CRC-32 mismatch"));
    }
    Ok(())
}

/// The content of a small entry (a v1 signature file, AndroidManifest.xml),
/// at most `max` bytes (and never more than [`MAX_CD_SIZE`]).
pub(crate) fn small_content(input: &mut File, e: &Entry, max: u64) -> Result<Vec<u8>, SignError> {
    if u64::from(e.usize) > max.min(MAX_CD_SIZE) {
        return Err(reject(format!(
            "entry {:?} is larger than {} bytes",
            e.name,
            max.min(MAX_CD_SIZE)
        )));
    }
    input.seek(SeekFrom::Start(e.data_offset))?;
    let raw = (&mut *input).take(u64::from(e.csize));
    let mut out = Vec::new();
    let limit = u64::from(e.usize) + 1;
    if e.method != 0 {
        flate2::read::DeflateDecoder::new(raw)
            .take(limit)
            .read_to_end(&mut out)
    } else {
        raw.take(limit).read_to_end(&mut out)
    }
    .map_err(|err| reject(format!("entry {:?}: {err}", e.name)))?;
    if out.len() as u64 != u64::from(e.usize) {
        return Err(reject(format!(
            "entry {:?}: size differs from the central directory",
            e.name
        )));
    }
    let mut crc = flate2::Crc::new();
    crc.update(&out);
    if crc.sum() != e.crc {
        return Err(reject(format!("entry {:?}: CRC-32 mismatch", e.name)));
    }
    Ok(out)
}
