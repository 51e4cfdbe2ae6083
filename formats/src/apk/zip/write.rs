//! The raw-copy ZIP writer: a fresh local header per entry whose extra
//! field aligns stored entries zipalign-style (4 bytes, `.so` files 4096),
//! the central directory and EOCD built in memory (bounded by
//! [`MAX_CD_SIZE`]), and a small writer for the probe's and tests' inputs.

use std::fs::File;
use std::io::Write;

use super::{
    reject, Entry, ALIGN_EXTRA_ID, CENTRAL_SIG, EOCD_SIG, FLAG_DESCRIPTOR, LOCAL_SIG, MAX_CD_SIZE,
};
use crate::SignError;

/// A writer that knows its offset.
pub(crate) struct Counted<W: Write> {
    pub(crate) inner: W,
    pub(crate) pos: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Alignment zipalign/apksigner use for an entry's data.
fn alignment(e: &Entry) -> u64 {
    if e.method != 0 {
        1
    } else if e.name.ends_with(".so") {
        4096
    } else {
        4
    }
}

/// Writes `e`'s local header at `out.pos` so its data lands aligned;
/// returns the header's offset (for the central directory).
pub(crate) fn write_local_header<W: Write>(
    out: &mut Counted<W>,
    e: &Entry,
) -> Result<u64, SignError> {
    let offset = out.pos;
    let mut extra = e.local_extra.clone();
    let align = alignment(e);
    if align > 1 {
        // id, size, alignment, padding: at least 6 bytes.
        let base = offset + 30 + e.name.len() as u64 + extra.len() as u64 + 6;
        let pad = (align - base % align) % align;
        let size = u16::try_from(2 + pad).map_err(|_| reject("alignment"))?;
        extra.extend_from_slice(&ALIGN_EXTRA_ID.to_le_bytes());
        extra.extend_from_slice(&size.to_le_bytes());
        extra.extend_from_slice(&u16::try_from(align).unwrap_or(4).to_le_bytes());
        extra.resize(extra.len() + pad as usize, 0);
    }
    let extra_len = u16::try_from(extra.len())
        .map_err(|_| reject(format!("entry {:?}: local extra field too large", e.name)))?;
    let mut h = Vec::with_capacity(30 + e.name.len() + extra.len());
    h.extend_from_slice(&LOCAL_SIG.to_le_bytes());
    h.extend_from_slice(&e.version_needed.to_le_bytes());
    h.extend_from_slice(&(e.flags & !FLAG_DESCRIPTOR).to_le_bytes());
    h.extend_from_slice(&e.method.to_le_bytes());
    h.extend_from_slice(&e.time.to_le_bytes());
    h.extend_from_slice(&e.date.to_le_bytes());
    h.extend_from_slice(&e.crc.to_le_bytes());
    h.extend_from_slice(&e.csize.to_le_bytes());
    h.extend_from_slice(&e.usize.to_le_bytes());
    h.extend_from_slice(&u16::try_from(e.name.len()).unwrap_or(0).to_le_bytes());
    h.extend_from_slice(&extra_len.to_le_bytes());
    h.extend_from_slice(e.name.as_bytes());
    h.extend_from_slice(&extra);
    out.write_all(&h)?;
    Ok(offset)
}

/// Appends `e`'s central directory record (local header at `offset`).
pub(crate) fn push_cd_record(cd: &mut Vec<u8>, e: &Entry, offset: u64) -> Result<(), SignError> {
    let offset = u32::try_from(offset).map_err(|_| reject("output would need ZIP64"))?;
    let len16 = |v: &[u8]| u16::try_from(v.len()).map_err(|_| reject("field too large"));
    cd.extend_from_slice(&CENTRAL_SIG.to_le_bytes());
    cd.extend_from_slice(&e.version_made_by.to_le_bytes());
    cd.extend_from_slice(&e.version_needed.to_le_bytes());
    cd.extend_from_slice(&(e.flags & !FLAG_DESCRIPTOR).to_le_bytes());
    cd.extend_from_slice(&e.method.to_le_bytes());
    cd.extend_from_slice(&e.time.to_le_bytes());
    cd.extend_from_slice(&e.date.to_le_bytes());
    cd.extend_from_slice(&e.crc.to_le_bytes());
    cd.extend_from_slice(&e.csize.to_le_bytes());
    cd.extend_from_slice(&e.usize.to_le_bytes());
    cd.extend_from_slice(&len16(e.name.as_bytes())?.to_le_bytes());
    cd.extend_from_slice(&len16(&e.cd_extra)?.to_le_bytes());
    cd.extend_from_slice(&len16(&e.comment)?.to_le_bytes());
    cd.extend_from_slice(&0u16.to_le_bytes());
    cd.extend_from_slice(&e.internal_attr.to_le_bytes());
    cd.extend_from_slice(&e.external_attr.to_le_bytes());
    cd.extend_from_slice(&offset.to_le_bytes());
    cd.extend_from_slice(e.name.as_bytes());
    cd.extend_from_slice(&e.cd_extra);
    cd.extend_from_slice(&e.comment);
    if cd.len() as u64 > MAX_CD_SIZE {
        return Err(reject("central directory too large"));
    }
    Ok(())
}

/// The EOCD record for `count` entries.
pub(crate) fn eocd_record(
    count: usize,
    cd_size: u64,
    cd_offset: u64,
    comment: &[u8],
) -> Result<Vec<u8>, SignError> {
    let count = u16::try_from(count)
        .ok()
        .filter(|c| *c != 0xffff)
        .ok_or_else(|| reject("too many entries (would need ZIP64)"))?;
    let cd_size = u32::try_from(cd_size).map_err(|_| reject("output would need ZIP64"))?;
    let cd_offset = u32::try_from(cd_offset)
        .ok()
        .filter(|o| *o != u32::MAX)
        .ok_or_else(|| reject("output would need ZIP64"))?;
    let comment_len = u16::try_from(comment.len()).map_err(|_| reject("comment too long"))?;
    let mut r = Vec::with_capacity(22 + comment.len());
    r.extend_from_slice(&EOCD_SIG.to_le_bytes());
    r.extend_from_slice(&[0u8; 4]);
    r.extend_from_slice(&count.to_le_bytes());
    r.extend_from_slice(&count.to_le_bytes());
    r.extend_from_slice(&cd_size.to_le_bytes());
    r.extend_from_slice(&cd_offset.to_le_bytes());
    r.extend_from_slice(&comment_len.to_le_bytes());
    r.extend_from_slice(comment);
    Ok(r)
}

/// Offset of the CD-offset field inside an EOCD record.
pub(crate) const EOCD_CD_OFFSET_FIELD: usize = 16;

/// A new entry of our own (the v1 signature files): stored, fixed time.
pub(crate) fn new_stored_entry(name: &str, data: &[u8]) -> Entry {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    Entry {
        name: name.to_string(),
        version_made_by: 20,
        version_needed: 10,
        flags: 0x0800,
        method: 0,
        time: 0,
        // 1981-01-01, as apksigner stamps its files.
        date: (1 << 9) | (1 << 5) | 1,
        crc: crc.sum(),
        csize: len,
        usize: len,
        internal_attr: 0,
        external_attr: 0,
        cd_extra: Vec::new(),
        comment: Vec::new(),
        local_extra: Vec::new(),
        data_offset: 0,
        dropped: false,
    }
}

/// Writes a small, plain ZIP of `(name, data, deflate)` files: the probe's
/// input and the unit tests' fixtures (entries in memory: small files only).
pub(crate) fn write_simple(
    path: &std::path::Path,
    files: &[(&str, &[u8], bool)],
) -> Result<(), SignError> {
    let mut out = Counted {
        inner: std::io::BufWriter::new(File::create(path)?),
        pos: 0,
    };
    let mut cd = Vec::new();
    for (name, data, deflate) in files {
        let mut e = new_stored_entry(name, data);
        let body = if *deflate {
            let mut enc =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(data)?;
            let body = enc.finish()?;
            e.method = 8;
            e.version_needed = 20;
            e.csize = u32::try_from(body.len()).map_err(|_| reject("too large"))?;
            body
        } else {
            data.to_vec()
        };
        let off = write_local_header(&mut out, &e)?;
        out.write_all(&body)?;
        push_cd_record(&mut cd, &e, off)?;
    }
    let cd_offset = out.pos;
    out.write_all(&cd)?;
    out.write_all(&eocd_record(files.len(), cd.len() as u64, cd_offset, b"")?)?;
    out.flush()?;
    Ok(())
}
