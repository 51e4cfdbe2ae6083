//! The ZIP layer of MSIX/APPX signing: reads the end records (ZIP64 too)
//! and the central directory, checks every local record against it, and
//! writes records in the one canonical form that the APPX hashes cover.
//!
//! Hand-written rather than the `zip` crate: the APPX hashes cover the raw
//! bytes of local records and of the central directory as osslsigncode
//! and Windows re-serialize them, which that crate neither exposes nor
//! writes on demand.
//!
//! The canonical form (osslsigncode 2.9's): a local header as it was, but
//! with zero CRC and sizes when a data descriptor follows; a data
//! descriptor with its signature and, in a ZIP64 archive, 8-byte sizes;
//! central directory records with no extra field but a ZIP64 one, which
//! holds all three of sizes and offset when any of them needs it; end
//! records on disk 0 without a comment.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use crate::SignError;

/// Largest central directory we read into memory.
pub(crate) const MAX_CD_SIZE: u64 = 32 << 20;

const LOCAL_SIG: u32 = 0x0403_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const DESCRIPTOR_SIG: u32 = 0x0807_4b50;
const ZIP64_EXTRA: u16 = 0x0001;
const EOCD_LEN: u64 = 22;
const LOCATOR_LEN: u64 = 20;
const ZIP64_EOCD_LEN: u64 = 56;
pub(crate) const LOCAL_LEN: u64 = 30;
/// General purpose flag: a data descriptor follows the data.
pub(crate) const FLAG_DESCRIPTOR: u16 = 0x0008;
/// General purpose flags: traditional or strong encryption, masked headers.
const FLAG_ENCRYPTED: u16 = 0x0001 | 0x0040 | 0x2000;

pub(crate) fn reject(what: impl std::fmt::Display) -> SignError {
    SignError::Rejected(format!("not an MSIX/APPX package we can sign: {what}"))
}

/// A bounds-checked little-endian reader over a byte slice.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2)?.try_into().ok().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_le_bytes)
    }
}

/// One entry: its central directory record and what its local record says.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) name: Vec<u8>,
    pub(crate) version_made_by: u16,
    pub(crate) version_needed: u16,
    pub(crate) flags: u16,
    pub(crate) method: u16,
    pub(crate) time: u16,
    pub(crate) date: u16,
    pub(crate) crc: u32,
    pub(crate) csize: u64,
    pub(crate) usize: u64,
    pub(crate) internal_attr: u16,
    pub(crate) external_attr: u32,
    pub(crate) comment: Vec<u8>,
    /// Offset of the local header in the input.
    pub(crate) offset: u64,
    /// The local header (30 bytes), name and extra field, canonical.
    pub(crate) local: Vec<u8>,
    /// Whether a data descriptor follows the data.
    pub(crate) descriptor: bool,
}

impl Entry {
    /// Where the data starts in the input.
    pub(crate) fn data_offset(&self) -> u64 {
        self.offset + self.local.len() as u64
    }

    /// The name, for messages.
    pub(crate) fn shown(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// The structure of an input package.
#[derive(Debug)]
pub(crate) struct Archive {
    /// Entries in the order of their local records.
    pub(crate) entries: Vec<Entry>,
    /// Whether the end records are ZIP64 ones (and descriptors 8-byte).
    pub(crate) zip64: bool,
    /// Where the central directory starts: the entries end before it.
    pub(crate) cd_offset: u64,
}

fn read_at(file: &mut File, at: u64, n: usize, what: &str) -> Result<Vec<u8>, SignError> {
    let mut buf = vec![0u8; n];
    file.seek(SeekFrom::Start(at))?;
    file.read_exact(&mut buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => reject(format!("truncated {what}")),
        _ => SignError::from(e),
    })?;
    Ok(buf)
}

/// Reads the end records, the central directory and every local header.
pub(crate) fn read_archive(file: &mut File, len: u64) -> Result<Archive, SignError> {
    if len < EOCD_LEN {
        return Err(reject("too short for a ZIP archive"));
    }
    let eocd = read_at(file, len - EOCD_LEN, EOCD_LEN as usize, "end record")?;
    let mut b = Bytes(&eocd);
    let ok = b.u32() == Some(EOCD_SIG);
    let (disk, cd_disk) = (b.u16().unwrap_or(1), b.u16().unwrap_or(1));
    let (_, count16) = (b.u16(), b.u16().unwrap_or(0));
    let (size32, offset32) = (b.u32().unwrap_or(0), b.u32().unwrap_or(0));
    let comment_len = b.u16().unwrap_or(1);
    if !ok || comment_len != 0 {
        return Err(reject(
            "no end of central directory record at the end of the file \
             (truncated, or an archive comment, which packages do not have)",
        ));
    }
    // ZIP64 end records: announced by the markers, or simply present (as
    // Python's zipfile writes them when only some values need them).
    let loc = match len.checked_sub(EOCD_LEN + LOCATOR_LEN) {
        Some(at) => Some((
            at,
            read_at(file, at, LOCATOR_LEN as usize, "ZIP64 locator")?,
        )),
        None => None,
    };
    let has_locator = loc
        .as_ref()
        .is_some_and(|(_, l)| l.starts_with(&ZIP64_LOCATOR_SIG.to_le_bytes()));
    let zip64 = size32 == u32::MAX || offset32 == u32::MAX || has_locator;
    let (count, cd_size, cd_offset, cd_end) = if zip64 {
        let (at, loc) = loc
            .filter(|_| has_locator)
            .ok_or_else(|| reject("no ZIP64 end of central directory locator"))?;
        let mut b = Bytes(&loc);
        let _sig = b.u32();
        let (_, rec_at) = (b.u32(), b.u64().unwrap_or(u64::MAX));
        if rec_at.checked_add(ZIP64_EOCD_LEN).is_none_or(|e| e > at) {
            return Err(reject("the ZIP64 end record lies outside the file"));
        }
        let rec = read_at(file, rec_at, ZIP64_EOCD_LEN as usize, "ZIP64 end record")?;
        let mut b = Bytes(&rec);
        if b.u32() != Some(ZIP64_EOCD_SIG) {
            return Err(reject("no ZIP64 end of central directory record"));
        }
        let (_size, _made, _needed) = (b.u64(), b.u16(), b.u16());
        let (d, cd_d) = (b.u32().unwrap_or(1), b.u32().unwrap_or(1));
        let (on_disk, total) = (b.u64().unwrap_or(0), b.u64().unwrap_or(1));
        let (size, offset) = (b.u64().unwrap_or(u64::MAX), b.u64().unwrap_or(u64::MAX));
        if d != 0 || cd_d != 0 || on_disk != total {
            return Err(reject("a multi-disk archive"));
        }
        (total, size, offset, rec_at)
    } else {
        if disk != 0 || cd_disk != 0 {
            return Err(reject("a multi-disk archive"));
        }
        (
            u64::from(count16),
            u64::from(size32),
            u64::from(offset32),
            len - EOCD_LEN,
        )
    };
    if cd_offset.checked_add(cd_size) != Some(cd_end) {
        return Err(reject(
            "the central directory does not end where the end records start",
        ));
    }
    if cd_size > MAX_CD_SIZE {
        return Err(reject(format!(
            "central directory of {cd_size} bytes (limit {MAX_CD_SIZE})"
        )));
    }
    let cd = read_at(file, cd_offset, cd_size as usize, "central directory")?;
    let mut entries = parse_cd(&cd, count)?;
    entries.sort_by_key(|e| e.offset);
    let mut end = 0;
    for e in &mut entries {
        if e.offset < end {
            return Err(reject(format!(
                "entry {} overlaps the one before",
                e.shown()
            )));
        }
        end = read_local(file, e, zip64, cd_offset)?;
    }
    Ok(Archive {
        entries,
        zip64,
        cd_offset,
    })
}

fn parse_cd(cd: &[u8], count: u64) -> Result<Vec<Entry>, SignError> {
    let bad = || reject("corrupt central directory record");
    let mut b = Bytes(cd);
    let mut entries = Vec::new();
    let mut names = std::collections::HashSet::new();
    for _ in 0..count {
        if b.u32() != Some(CENTRAL_SIG) {
            return Err(reject("central directory record signature missing"));
        }
        let fixed = b.take(42).ok_or_else(bad)?;
        let mut f = Bytes(fixed);
        let mut u16f = || f.u16().unwrap_or(0);
        let (made, needed, flags, method, time, date) =
            (u16f(), u16f(), u16f(), u16f(), u16f(), u16f());
        let crc = f.u32().unwrap_or(0);
        let (csize32, usize32) = (f.u32().unwrap_or(0), f.u32().unwrap_or(0));
        let mut u16f = || f.u16().unwrap_or(0);
        let (name_len, extra_len, comment_len, disk, internal) =
            (u16f(), u16f(), u16f(), u16f(), u16f());
        let (external, offset32) = (f.u32().unwrap_or(0), f.u32().unwrap_or(0));
        let name = b.take(usize::from(name_len)).ok_or_else(bad)?.to_vec();
        let extra = b.take(usize::from(extra_len)).ok_or_else(bad)?;
        let comment = b.take(usize::from(comment_len)).ok_or_else(bad)?.to_vec();
        let shown = String::from_utf8_lossy(&name).into_owned();
        if name.is_empty() {
            return Err(reject("an entry without a name"));
        }
        if flags & FLAG_ENCRYPTED != 0 {
            return Err(reject(format!("entry {shown} is encrypted")));
        }
        if disk != 0 {
            return Err(reject("a multi-disk archive"));
        }
        if !names.insert(name.to_ascii_lowercase()) {
            return Err(reject(format!("entry {shown} appears twice")));
        }
        let (mut csize, mut usize, mut offset) =
            (u64::from(csize32), u64::from(usize32), u64::from(offset32));
        if csize32 == u32::MAX || usize32 == u32::MAX || offset32 == u32::MAX {
            let mut z = zip64_field(extra)
                .ok_or_else(|| reject(format!("entry {shown}: ZIP64 extra field missing")))?;
            let short = || reject(format!("entry {shown}: ZIP64 extra field too short"));
            if usize32 == u32::MAX {
                usize = z.u64().ok_or_else(short)?;
            }
            if csize32 == u32::MAX {
                csize = z.u64().ok_or_else(short)?;
            }
            if offset32 == u32::MAX {
                offset = z.u64().ok_or_else(short)?;
            }
        }
        entries.push(Entry {
            name,
            version_made_by: made,
            version_needed: needed,
            flags,
            method,
            time,
            date,
            crc,
            csize,
            usize,
            internal_attr: internal,
            external_attr: external,
            comment,
            offset,
            local: Vec::new(),
            descriptor: false,
        });
    }
    if !b.0.is_empty() {
        return Err(reject(
            "the central directory holds more than its entry count says",
        ));
    }
    Ok(entries)
}

/// The data of the ZIP64 extra block in `extra`, if any.
fn zip64_field(extra: &[u8]) -> Option<Bytes<'_>> {
    let mut b = Bytes(extra);
    while let (Some(id), Some(n)) = (b.u16(), b.u16()) {
        let data = b.take(usize::from(n))?;
        if id == ZIP64_EXTRA {
            return Some(Bytes(data));
        }
    }
    None
}

/// Reads and checks `e`'s local record (header, data extent, descriptor)
/// against its central directory record; returns where the record ends.
fn read_local(file: &mut File, e: &mut Entry, zip64: bool, limit: u64) -> Result<u64, SignError> {
    let shown = e.shown();
    let mismatch = |what: &str| {
        reject(format!(
            "the local header of {shown} does not match the central directory ({what})"
        ))
    };
    if e.offset.saturating_add(LOCAL_LEN) > limit {
        return Err(reject(format!("entry {shown} starts past the entries")));
    }
    let mut head = read_at(file, e.offset, LOCAL_LEN as usize, "local header")?;
    let mut b = Bytes(&head);
    if b.u32() != Some(LOCAL_SIG) {
        return Err(reject(format!("no local header signature for {shown}")));
    }
    let (_version, flags, method) = (b.u16(), b.u16().unwrap_or(0), b.u16().unwrap_or(0));
    let (_time, _date) = (b.u16(), b.u16());
    let crc = b.u32().unwrap_or(0);
    let (csize32, usize32) = (b.u32().unwrap_or(0), b.u32().unwrap_or(0));
    let (name_len, extra_len) = (b.u16().unwrap_or(0), b.u16().unwrap_or(0));
    let var = read_at(
        file,
        e.offset + LOCAL_LEN,
        usize::from(name_len) + usize::from(extra_len),
        "local header",
    )?;
    let (name, extra) = var.split_at(usize::from(name_len));
    if name != e.name.as_slice() {
        return Err(mismatch("name"));
    }
    if method != e.method {
        return Err(mismatch("compression method"));
    }
    if flags & FLAG_ENCRYPTED != 0 {
        return Err(reject(format!("entry {shown} is encrypted")));
    }
    e.descriptor = flags & FLAG_DESCRIPTOR != 0;
    let data_end = (e.offset + LOCAL_LEN + var.len() as u64)
        .checked_add(e.csize)
        .filter(|end| *end <= limit)
        .ok_or_else(|| reject(format!("the data of {shown} runs past the entries")))?;
    let end = if e.descriptor {
        let n = if zip64 { 24 } else { 16 };
        if data_end + n > limit {
            return Err(reject(format!(
                "the data descriptor of {shown} runs past the entries"
            )));
        }
        let dd = read_at(file, data_end, n as usize, "data descriptor")?;
        let mut d = Bytes(&dd);
        let sig = d.u32();
        let dcrc = d.u32();
        let (dc, du) = if zip64 {
            (d.u64(), d.u64())
        } else {
            (d.u32().map(u64::from), d.u32().map(u64::from))
        };
        if sig != Some(DESCRIPTOR_SIG)
            || dcrc != Some(e.crc)
            || dc != Some(e.csize)
            || du != Some(e.usize)
        {
            return Err(reject(format!(
                "the data descriptor of {shown} does not match the central directory \
                 (it needs its signature, and 8-byte sizes in a ZIP64 package)"
            )));
        }
        // Canonical: CRC and sizes live in the descriptor only.
        if let Some(fields) = head.get_mut(14..26) {
            fields.fill(0);
        }
        data_end + n
    } else {
        let (mut c, mut u) = (u64::from(csize32), u64::from(usize32));
        if c == u64::from(u32::MAX) || u == u64::from(u32::MAX) {
            // The ZIP64 block must come first, as osslsigncode reads it.
            let mut x = Bytes(extra);
            let short = || reject(format!("entry {shown}: bad ZIP64 local extra field"));
            if x.u16() != Some(ZIP64_EXTRA) {
                return Err(short());
            }
            let n = usize::from(x.u16().unwrap_or(0));
            let mut z = Bytes(x.take(n).ok_or_else(short)?);
            if u == u64::from(u32::MAX) {
                u = z.u64().ok_or_else(short)?;
            }
            if c == u64::from(u32::MAX) {
                c = z.u64().ok_or_else(short)?;
            }
        }
        if crc != e.crc || c != e.csize || u != e.usize {
            return Err(mismatch("CRC or sizes"));
        }
        data_end
    };
    head.extend_from_slice(&var);
    e.local = head;
    Ok(end)
}

/// A local header of ours (no extra field, no descriptor).
pub(crate) fn local_header(e: &Entry, crc: u32, csize: u32, usize: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(LOCAL_LEN as usize + e.name.len());
    h.extend_from_slice(&LOCAL_SIG.to_le_bytes());
    for v in [
        e.version_needed,
        e.flags & !FLAG_DESCRIPTOR,
        e.method,
        e.time,
        e.date,
    ] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    for v in [crc, csize, usize] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
    h.extend_from_slice(&0u16.to_le_bytes());
    h.extend_from_slice(&e.name);
    h
}

/// The data descriptor of `e` in canonical form.
pub(crate) fn descriptor(e: &Entry, zip64: bool) -> Vec<u8> {
    let mut d = DESCRIPTOR_SIG.to_le_bytes().to_vec();
    d.extend_from_slice(&e.crc.to_le_bytes());
    if zip64 {
        d.extend_from_slice(&e.csize.to_le_bytes());
        d.extend_from_slice(&e.usize.to_le_bytes());
    } else {
        d.extend_from_slice(&(e.csize as u32).to_le_bytes());
        d.extend_from_slice(&(e.usize as u32).to_le_bytes());
    }
    d
}

/// Appends the central directory record of `e`, whose local record is at `offset`.
pub(crate) fn push_cd_record(cd: &mut Vec<u8>, e: &Entry, offset: u64) {
    let max = u64::from(u32::MAX);
    let big = e.csize >= max || e.usize >= max || offset >= max;
    let field = |v: u64| if big { u32::MAX } else { v as u32 };
    cd.extend_from_slice(&CENTRAL_SIG.to_le_bytes());
    for v in [
        e.version_made_by,
        e.version_needed,
        e.flags,
        e.method,
        e.time,
        e.date,
    ] {
        cd.extend_from_slice(&v.to_le_bytes());
    }
    for v in [e.crc, field(e.csize), field(e.usize)] {
        cd.extend_from_slice(&v.to_le_bytes());
    }
    let extra_len: u16 = if big { 28 } else { 0 };
    for v in [
        e.name.len() as u16,
        extra_len,
        e.comment.len() as u16,
        0,
        e.internal_attr,
    ] {
        cd.extend_from_slice(&v.to_le_bytes());
    }
    cd.extend_from_slice(&e.external_attr.to_le_bytes());
    cd.extend_from_slice(&field(offset).to_le_bytes());
    cd.extend_from_slice(&e.name);
    if big {
        cd.extend_from_slice(&ZIP64_EXTRA.to_le_bytes());
        cd.extend_from_slice(&24u16.to_le_bytes());
        for v in [e.usize, e.csize, offset] {
            cd.extend_from_slice(&v.to_le_bytes());
        }
    }
    cd.extend_from_slice(&e.comment);
}

/// The end records after a central directory of `count` records and
/// `cd_size` bytes at `cd_offset`.
pub(crate) fn end_records(zip64: bool, count: u64, cd_size: u64, cd_offset: u64) -> Vec<u8> {
    let mut r = Vec::with_capacity(98);
    if zip64 {
        r.extend_from_slice(&ZIP64_EOCD_SIG.to_le_bytes());
        r.extend_from_slice(&(ZIP64_EOCD_LEN - 12).to_le_bytes());
        r.extend_from_slice(&45u16.to_le_bytes());
        r.extend_from_slice(&45u16.to_le_bytes());
        r.extend_from_slice(&[0; 8]);
        for v in [count, count, cd_size, cd_offset] {
            r.extend_from_slice(&v.to_le_bytes());
        }
        r.extend_from_slice(&ZIP64_LOCATOR_SIG.to_le_bytes());
        r.extend_from_slice(&0u32.to_le_bytes());
        r.extend_from_slice(&(cd_offset + cd_size).to_le_bytes());
        r.extend_from_slice(&1u32.to_le_bytes());
    }
    r.extend_from_slice(&EOCD_SIG.to_le_bytes());
    r.extend_from_slice(&[0; 4]);
    let count16 = if zip64 { u16::MAX } else { count as u16 };
    r.extend_from_slice(&count16.to_le_bytes());
    r.extend_from_slice(&count16.to_le_bytes());
    let (size32, offset32) = if zip64 {
        (u32::MAX, u32::MAX)
    } else {
        (cd_size as u32, cd_offset as u32)
    };
    r.extend_from_slice(&size32.to_le_bytes());
    r.extend_from_slice(&offset32.to_le_bytes());
    r.extend_from_slice(&0u16.to_le_bytes());
    r
}

/// Whether a non-ZIP64 archive can hold a central directory of `count`
/// records, `cd_size` bytes at `cd_offset`.
pub(crate) fn fits_zip32(count: u64, cd_size: u64, cd_offset: u64) -> bool {
    count < u64::from(u16::MAX)
        && cd_size < u64::from(u32::MAX)
        && cd_offset.saturating_add(cd_size) < u64::from(u32::MAX)
}
