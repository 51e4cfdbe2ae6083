//! ZIP reading and validation, and the raw-copy ZIP writer the APK signer
//! uses.
//!
//! What it does:
//! - finds the end-of-central-directory record (EOCD), reads the central
//!   directory (bounded in size and count) and checks every entry's local
//!   header against it;
//! - refuses, as [`SignError::Rejected`] with a reason, what it cannot sign
//!   safely: ZIP64, multi-disk archives, encrypted entries, compression
//!   methods other than stored/deflate, duplicate or unusable names, entries
//!   that overlap or lie outside the entries section, local headers that
//!   disagree with the central directory, data descriptors that disagree,
//!   and compression ratios no deflate stream can reach (zip bombs);
//! - writes entries by copying their compressed bytes as they are, with a
//!   fresh local header whose extra field aligns stored entries
//!   zipalign-style (4 bytes, `.so` files 4096), and builds the central
//!   directory and EOCD in memory (bounded by [`MAX_CD_SIZE`]).
//!
//! Deliberately NOT done: no ZIP64, no encryption, no recompression, no
//! reading of anything between entries (gaps, an old APK Signing Block):
//! entries are located through the central directory only, which is also
//! how an old signing block gets dropped.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};

use crate::SignError;

/// Largest central directory we read into memory.
pub(crate) const MAX_CD_SIZE: u64 = 32 << 20;
/// Longest entry name we accept.
const MAX_NAME: usize = 4096;
/// Deflate cannot expand more than about 1032:1; anything above is corrupt
/// or a bomb.
const MAX_RATIO: u64 = 1100;
/// Entries up to this size may claim any ratio (tiny files of zeros).
const RATIO_FREE: u64 = 1 << 20;

const LOCAL_SIG: u32 = 0x0403_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const DESCRIPTOR_SIG: u32 = 0x0807_4b50;
/// Android's alignment extra field (what apksigner and zipalign -p use).
const ALIGN_EXTRA_ID: u16 = 0xd935;

/// General purpose flag: data descriptor follows the data.
const FLAG_DESCRIPTOR: u16 = 0x0008;
/// General purpose flags: traditional or strong encryption, masked headers.
const FLAG_ENCRYPTED: u16 = 0x0001 | 0x0040 | 0x2000;

pub(crate) fn reject(msg: impl Into<String>) -> SignError {
    SignError::Rejected(msg.into())
}

/// A bounds-checked little-endian reader over a byte slice.
pub(crate) struct Bytes<'a> {
    buf: &'a [u8],
}

impl<'a> Bytes<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Bytes { buf }
    }
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }
    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.take(2)?.try_into().ok().map(u16::from_le_bytes)
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_le_bytes)
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_le_bytes)
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }
}

/// One entry, as the central directory describes it (checked against its
/// local header).
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) version_made_by: u16,
    pub(crate) version_needed: u16,
    /// Invariant: no encryption bits; the descriptor bit is cleared on output.
    pub(crate) flags: u16,
    /// Invariant: 0 (stored) or 8 (deflate).
    pub(crate) method: u16,
    pub(crate) time: u16,
    pub(crate) date: u16,
    pub(crate) crc: u32,
    pub(crate) csize: u32,
    pub(crate) usize: u32,
    pub(crate) internal_attr: u16,
    pub(crate) external_attr: u32,
    pub(crate) cd_extra: Vec<u8>,
    pub(crate) comment: Vec<u8>,
    /// The local header's extra field (copied, minus old alignment padding).
    pub(crate) local_extra: Vec<u8>,
    /// Where the compressed data starts in the input.
    pub(crate) data_offset: u64,
}

/// The EOCD of a file: where the central directory is.
#[derive(Debug, Clone)]
pub(crate) struct Eocd {
    /// Offset of the EOCD record itself.
    pub(crate) offset: u64,
    pub(crate) cd_offset: u64,
    pub(crate) cd_size: u64,
    pub(crate) entries: u16,
    pub(crate) comment: Vec<u8>,
}

/// A validated input archive: its entries in file order.
#[derive(Debug)]
pub(crate) struct Archive {
    pub(crate) entries: Vec<Entry>,
    pub(crate) comment: Vec<u8>,
}

fn read_at(file: &mut File, offset: u64, buf: &mut [u8]) -> Result<(), SignError> {
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            reject("truncated ZIP")
        } else {
            e.into()
        }
    })
}

/// Finds and parses the EOCD record (the last one whose comment runs
/// exactly to the end of the file).
pub(crate) fn find_eocd(file: &mut File) -> Result<Eocd, SignError> {
    let len = file.metadata()?.len();
    if len < 22 {
        return Err(reject("not a ZIP file (too short)"));
    }
    let tail_len = len.min(22 + 0xffff);
    let start = len - tail_len;
    let mut tail = vec![0u8; usize::try_from(tail_len).map_err(|_| reject("bad length"))?];
    read_at(file, start, &mut tail)?;
    let mut pos = tail.len() - 22;
    loop {
        let rec = tail.get(pos..).unwrap_or_default();
        let mut b = Bytes::new(rec);
        if b.u32() == Some(EOCD_SIG) {
            let (disk, cd_disk) = (b.u16(), b.u16());
            let (n_disk, n_total) = (b.u16(), b.u16());
            let (cd_size, cd_offset) = (b.u32(), b.u32());
            let comment_len = b.u16();
            if let (
                Some(disk),
                Some(cd_disk),
                Some(n_disk),
                Some(n_total),
                Some(cd_size),
                Some(cd_offset),
                Some(comment_len),
            ) = (
                disk,
                cd_disk,
                n_disk,
                n_total,
                cd_size,
                cd_offset,
                comment_len,
            ) {
                if usize::from(comment_len) == b.rest().len() {
                    let offset = start + pos as u64;
                    if disk != 0 || cd_disk != 0 || n_disk != n_total {
                        return Err(reject("multi-disk ZIP archives are not supported"));
                    }
                    if n_total == 0xffff || cd_size == u32::MAX || cd_offset == u32::MAX {
                        return Err(reject("ZIP64 archives are not supported"));
                    }
                    if offset >= 20 {
                        let mut loc = [0u8; 4];
                        read_at(file, offset - 20, &mut loc)?;
                        if u32::from_le_bytes(loc) == ZIP64_LOCATOR_SIG {
                            return Err(reject("ZIP64 archives are not supported"));
                        }
                    }
                    return Ok(Eocd {
                        offset,
                        cd_offset: u64::from(cd_offset),
                        cd_size: u64::from(cd_size),
                        entries: n_total,
                        comment: b.rest().to_vec(),
                    });
                }
            }
        }
        if pos == 0 {
            return Err(reject(
                "not a ZIP file (no end of central directory record)",
            ));
        }
        pos -= 1;
    }
}

/// Reads the central directory (whose end must meet the EOCD).
pub(crate) fn read_cd(file: &mut File, eocd: &Eocd) -> Result<Vec<u8>, SignError> {
    if eocd.cd_offset.checked_add(eocd.cd_size) != Some(eocd.offset) {
        return Err(reject(
            "the central directory does not end where the end record begins",
        ));
    }
    if eocd.cd_size > MAX_CD_SIZE {
        return Err(reject(format!(
            "central directory larger than {MAX_CD_SIZE} bytes"
        )));
    }
    let mut cd = vec![0u8; usize::try_from(eocd.cd_size).map_err(|_| reject("bad size"))?];
    read_at(file, eocd.cd_offset, &mut cd)?;
    Ok(cd)
}

/// Drops old alignment records and zero padding (zipalign's) from a local
/// extra field; keeps every well-formed record before them.
fn clean_local_extra(extra: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut b = Bytes::new(extra);
    while let (Some(id), Some(len)) = (b.u16(), b.u16()) {
        let Some(data) = b.take(usize::from(len)) else {
            break;
        };
        if id == ALIGN_EXTRA_ID || id == 0 {
            continue;
        }
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(data);
    }
    out
}

/// Reads and validates the whole archive structure of `file`.
pub(crate) fn read_archive(file: &mut File) -> Result<Archive, SignError> {
    let eocd = find_eocd(file)?;
    let cd = read_cd(file, &eocd)?;
    let mut b = Bytes::new(&cd);
    let mut entries = Vec::with_capacity(usize::from(eocd.entries));
    let mut names = HashSet::new();
    let truncated = || reject("truncated central directory");
    let mut total_usize: u64 = 0;
    for _ in 0..eocd.entries {
        if b.u32().ok_or_else(truncated)? != CENTRAL_SIG {
            return Err(reject("bad central directory entry signature"));
        }
        let version_made_by = b.u16().ok_or_else(truncated)?;
        let version_needed = b.u16().ok_or_else(truncated)?;
        let flags = b.u16().ok_or_else(truncated)?;
        let method = b.u16().ok_or_else(truncated)?;
        let time = b.u16().ok_or_else(truncated)?;
        let date = b.u16().ok_or_else(truncated)?;
        let crc = b.u32().ok_or_else(truncated)?;
        let csize = b.u32().ok_or_else(truncated)?;
        let usize = b.u32().ok_or_else(truncated)?;
        let name_len = b.u16().ok_or_else(truncated)?;
        let extra_len = b.u16().ok_or_else(truncated)?;
        let comment_len = b.u16().ok_or_else(truncated)?;
        let disk = b.u16().ok_or_else(truncated)?;
        let internal_attr = b.u16().ok_or_else(truncated)?;
        let external_attr = b.u32().ok_or_else(truncated)?;
        let local_offset = b.u32().ok_or_else(truncated)?;
        let name_bytes = b.take(usize::from(name_len)).ok_or_else(truncated)?;
        let cd_extra = b.take(usize::from(extra_len)).ok_or_else(truncated)?;
        let comment = b.take(usize::from(comment_len)).ok_or_else(truncated)?;

        let name = std::str::from_utf8(name_bytes)
            .map_err(|_| reject("an entry name is not valid UTF-8"))?
            .to_string();
        let bad = |why: &str| reject(format!("entry {name:?}: {why}"));
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(bad("empty or overlong name"));
        }
        if name.bytes().any(|c| c == 0 || c == b'\r' || c == b'\n') {
            return Err(bad("NUL, CR or LF in the name"));
        }
        if !names.insert(name.clone()) {
            return Err(bad("duplicate entry name"));
        }
        if csize == u32::MAX || usize == u32::MAX || local_offset == u32::MAX || disk == 0xffff {
            return Err(bad("ZIP64 entries are not supported"));
        }
        if disk != 0 {
            return Err(bad("multi-disk archives are not supported"));
        }
        if flags & FLAG_ENCRYPTED != 0 {
            return Err(bad("encrypted entries are not supported"));
        }
        match method {
            0 if csize != usize => return Err(bad("stored entry with differing sizes")),
            0 | 8 => {}
            m => return Err(bad(&format!("compression method {m} is not supported"))),
        }
        let (c, u) = (u64::from(csize), u64::from(usize));
        if u > RATIO_FREE && u > c.saturating_mul(MAX_RATIO) {
            return Err(bad(&format!(
                "compression ratio {u}:{c} is impossible for deflate (zip bomb?)"
            )));
        }
        total_usize = total_usize.saturating_add(u);
        entries.push((
            u64::from(local_offset),
            Entry {
                name,
                version_made_by,
                version_needed,
                flags,
                method,
                time,
                date,
                crc,
                csize,
                usize,
                internal_attr,
                external_attr,
                cd_extra: cd_extra.to_vec(),
                comment: comment.to_vec(),
                local_extra: Vec::new(),
                data_offset: 0,
            },
        ));
    }
    if !b.is_empty() {
        return Err(reject(
            "the central directory holds more than its entry count says",
        ));
    }
    entries.sort_by_key(|(off, _)| *off);

    // Local headers: in file order, inside the entries section, no overlap,
    // agreeing with the central directory.
    let mut end_of_previous = 0u64;
    let mut out = Vec::with_capacity(entries.len());
    for (offset, mut e) in entries {
        let name = e.name.clone();
        let bad = |why: &str| reject(format!("entry {name:?}: {why}"));
        if offset < end_of_previous {
            return Err(bad("overlaps the previous entry"));
        }
        let mut hdr = [0u8; 30];
        if offset.saturating_add(30) > eocd.cd_offset {
            return Err(bad("local header outside the entries section"));
        }
        read_at(file, offset, &mut hdr)?;
        let mut h = Bytes::new(&hdr);
        let field = |v: Option<u32>| v.unwrap_or(0);
        let sig = field(h.u32());
        let _version = h.u16();
        let lflags = h.u16().unwrap_or(0);
        let lmethod = h.u16().unwrap_or(0);
        let (_ltime, _ldate) = (h.u16(), h.u16());
        let (lcrc, lcsize, lusize) = (field(h.u32()), field(h.u32()), field(h.u32()));
        let lname_len = h.u16().unwrap_or(0);
        let lextra_len = h.u16().unwrap_or(0);
        if sig != LOCAL_SIG {
            return Err(bad("bad local header signature"));
        }
        if lmethod != e.method || (lflags ^ e.flags) & (FLAG_DESCRIPTOR | FLAG_ENCRYPTED) != 0 {
            return Err(bad(
                "local header and central directory disagree (method or flags)",
            ));
        }
        let descriptor = e.flags & FLAG_DESCRIPTOR != 0;
        let sizes_agree = (lcrc, lcsize, lusize) == (e.crc, e.csize, e.usize);
        let zeros = (lcrc, lcsize, lusize) == (0, 0, 0);
        if !(sizes_agree || descriptor && zeros) {
            return Err(bad(
                "local header and central directory disagree (CRC or sizes)",
            ));
        }
        let var_len = usize::from(lname_len) + usize::from(lextra_len);
        let mut var = vec![0u8; var_len];
        read_at(file, offset + 30, &mut var)?;
        let (lname, lextra) = var.split_at(usize::from(lname_len));
        if lname != e.name.as_bytes() {
            return Err(bad("local header and central directory disagree (name)"));
        }
        e.local_extra = clean_local_extra(lextra);
        e.data_offset = offset + 30 + var_len as u64;
        let mut end = e.data_offset + u64::from(e.csize);
        if descriptor {
            let mut d = [0u8; 16];
            let avail = eocd.cd_offset.saturating_sub(end).min(16);
            let d = d.get_mut(..avail as usize).unwrap_or_default();
            read_at(file, end, d)?;
            let mut r = Bytes::new(d);
            let first = r.u32();
            let (crc, rest_len) = if first == Some(DESCRIPTOR_SIG) {
                (r.u32(), 16)
            } else {
                (first, 12)
            };
            let (cs, us) = (r.u32(), r.u32());
            if (crc, cs, us) != (Some(e.crc), Some(e.csize), Some(e.usize)) {
                return Err(bad("data descriptor and central directory disagree"));
            }
            end += rest_len;
        }
        if end > eocd.cd_offset {
            return Err(bad("data runs into the central directory"));
        }
        end_of_previous = end;
        out.push(e);
    }
    Ok(Archive {
        entries: out,
        comment: eocd.comment,
    })
}

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
pub(crate) fn alignment(e: &Entry) -> u64 {
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
