//! RPM header structures (the signature header and the main header), read
//! with bounds and written back: the part of the RPM v4 file format the
//! signer needs.
//!
//! A header is: the magic `8e ad e8 01 00 00 00 00`, the number of index
//! entries and the size of the data store (u32 big-endian each), the index
//! (16 bytes per entry: tag, type, offset into the data store, count), then
//! the data store. In a package both headers are one "region": the first
//! entry (tag 62 in the signature header, 63 in the main header) points at a
//! 16-byte trailer at the end of the data store whose offset is minus the
//! size of the index.

use std::io::Read;
use std::ops::Range;

use crate::SignError;

/// The 8 bytes every header starts with.
pub(crate) const MAGIC: [u8; 8] = [0x8e, 0xad, 0xe8, 0x01, 0, 0, 0, 0];
/// The region tag of the signature header (`RPMTAG_HEADERSIGNATURES`).
pub(crate) const REGION_SIGNATURES: u32 = 62;
/// The region tag of the main header (`RPMTAG_HEADERIMMUTABLE`).
pub(crate) const REGION_IMMUTABLE: u32 = 63;

/// Entry types.
pub(crate) const INT32: u32 = 4;
pub(crate) const STRING: u32 = 6;
pub(crate) const BIN: u32 = 7;
pub(crate) const STRING_ARRAY: u32 = 8;
const I18NSTRING: u32 = 9;

/// How large a header may be.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Most index entries.
    pub(crate) entries: u32,
    /// Most bytes of index and data together.
    pub(crate) bytes: u32,
}

/// One index entry; its data is `Header::data()[range]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) tag: u32,
    pub(crate) kind: u32,
    pub(crate) count: u32,
    pub(crate) range: Range<usize>,
}

/// A header as read: its exact bytes (magic included) and its index.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    /// Invariant: `MAGIC`, the counts, the index and the data store, exactly as read.
    pub(crate) raw: Vec<u8>,
    /// Invariant: every range lies within the data store.
    pub(crate) entries: Vec<Entry>,
    /// Where the data store starts in `raw`.
    data_start: usize,
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        x.copy_from_slice(s);
    }
    u32::from_be_bytes(x)
}

/// Reads one header from `r`. `what` names it in messages ("signature header").
pub(crate) fn read(r: &mut impl Read, limits: Limits, what: &str) -> Result<Header, SignError> {
    let bad = |m: String| SignError::Rejected(format!("not a valid RPM package: {what}: {m}"));
    let mut head = [0u8; 16];
    r.read_exact(&mut head)
        .map_err(|_| bad("the file ends before it".into()))?;
    let (il, dl) = (be32(&head, 8), be32(&head, 12));
    let size = check_sizes(&head, il, dl, limits).map_err(bad)?;
    let mut raw = Vec::with_capacity(16 + size);
    raw.extend_from_slice(&head);
    let got = r
        .by_ref()
        .take(size as u64)
        .read_to_end(&mut raw)
        .map_err(|e| SignError::Internal(anyhow::anyhow!("cannot read the {what}: {e}")))?;
    if got != size {
        return Err(bad(format!(
            "the file ends inside it ({got} of {size} bytes)"
        )));
    }
    index(raw, il).map_err(bad)
}

/// Parses a header from the start of `bytes`: it and the bytes after it.
pub(crate) fn parse<'a>(
    bytes: &'a [u8],
    limits: Limits,
    what: &str,
) -> Result<(Header, &'a [u8]), SignError> {
    let mut rest = bytes;
    let h = read(&mut rest, limits, what)?;
    Ok((h, rest))
}

/// The size of index and data, if the 16 bytes `head` start a header within `limits`.
fn check_sizes(head: &[u8], il: u32, dl: u32, limits: Limits) -> Result<usize, String> {
    if head.get(..8) != Some(&MAGIC[..]) {
        return Err("bad magic (not an RPM header)".into());
    }
    if il == 0 || il > limits.entries {
        return Err(format!(
            "{il} index entries (1 to {} allowed)",
            limits.entries
        ));
    }
    let size = u64::from(il) * 16 + u64::from(dl);
    if size > u64::from(limits.bytes) {
        return Err(format!(
            "{size} bytes, more than the {} this server reads",
            limits.bytes
        ));
    }
    usize::try_from(size).map_err(|_| "too large".to_string())
}

/// Parses the index of `raw` (16 bytes of head, then index and data).
fn index(raw: Vec<u8>, il: u32) -> Result<Header, String> {
    let data_start = 16 + il as usize * 16;
    let dl = raw.len().saturating_sub(data_start);
    let data = raw.get(data_start..).unwrap_or_default();
    let mut entries = Vec::with_capacity(il as usize);
    for i in 0..il as usize {
        let at = 16 + i * 16;
        let (tag, kind, offset, count) = (
            be32(&raw, at),
            be32(&raw, at + 4),
            be32(&raw, at + 8) as usize,
            be32(&raw, at + 12),
        );
        let entry = |m: &str| format!("entry {i} (tag {tag}): {m}");
        if offset > dl {
            return Err(entry("its data is outside the header"));
        }
        let rest = data.get(offset..).unwrap_or_default();
        let len = data_len(kind, count, rest).ok_or_else(|| entry("bad type, count or data"))?;
        entries.push(Entry {
            tag,
            kind,
            count,
            range: offset..offset + len,
        });
    }
    Ok(Header {
        raw,
        entries,
        data_start,
    })
}

/// The length of an entry's data at the start of `rest`, if it fits.
fn data_len(kind: u32, count: u32, rest: &[u8]) -> Option<usize> {
    let count = count as usize;
    if count == 0 || count > rest.len().max(1) {
        return None;
    }
    // Type 0 (NULL) never appears in a package, and its count is unbounded by
    // the data: refused (the fuzzer found one that did not survive a rewrite).
    let len = match kind {
        1 | 2 | BIN => count,
        3 => count.checked_mul(2)?,
        INT32 => count.checked_mul(4)?,
        5 => count.checked_mul(8)?,
        STRING if count == 1 => rest.iter().position(|b| *b == 0)? + 1,
        STRING_ARRAY | I18NSTRING => {
            let mut len = 0;
            for _ in 0..count {
                len += rest.get(len..)?.iter().position(|b| *b == 0)? + 1;
            }
            len
        }
        _ => return None,
    };
    (len <= rest.len()).then_some(len)
}

impl Header {
    /// The data store.
    pub(crate) fn data(&self) -> &[u8] {
        self.raw.get(self.data_start..).unwrap_or_default()
    }

    /// The first entry with `tag`.
    pub(crate) fn get(&self, tag: u32) -> Option<&Entry> {
        self.entries.iter().find(|e| e.tag == tag)
    }

    /// The data of `e`.
    pub(crate) fn bytes(&self, e: &Entry) -> &[u8] {
        self.data().get(e.range.clone()).unwrap_or_default()
    }

    /// A STRING (or the first of a STRING_ARRAY) entry's text, without its NUL.
    pub(crate) fn string(&self, tag: u32) -> Option<&str> {
        let e = self
            .get(tag)
            .filter(|e| matches!(e.kind, STRING | STRING_ARRAY))?;
        let b = self.bytes(e);
        let end = b.iter().position(|b| *b == 0)?;
        std::str::from_utf8(b.get(..end)?).ok()
    }

    /// An INT32 entry's first value.
    pub(crate) fn int32(&self, tag: u32) -> Option<u32> {
        let e = self.get(tag).filter(|e| e.kind == INT32)?;
        Some(be32(self.bytes(e), 0))
    }

    /// Whether the first entry is the region `tag` (a package's headers are).
    pub(crate) fn has_region(&self, tag: u32) -> bool {
        self.entries
            .first()
            .is_some_and(|e| e.tag == tag && e.kind == BIN && e.count == 16)
    }

    /// The entries as owned values, for [`write`].
    pub(crate) fn owned(&self) -> Vec<NewEntry> {
        self.entries
            .iter()
            .map(|e| NewEntry {
                tag: e.tag,
                kind: e.kind,
                count: e.count,
                data: self.bytes(e).to_vec(),
            })
            .collect()
    }
}

/// An entry to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewEntry {
    pub(crate) tag: u32,
    pub(crate) kind: u32,
    pub(crate) count: u32,
    pub(crate) data: Vec<u8>,
}

/// The alignment of a type's data in the data store (as rpm checks it).
fn align(kind: u32) -> usize {
    match kind {
        3 => 2,
        INT32 => 4,
        5 => 8,
        _ => 1,
    }
}

/// Writes a header made of one region `region` holding `entries` (any
/// existing region entry among them is dropped), in tag order, each entry's
/// data aligned for its type, the region trailer last: as rpm writes it.
pub(crate) fn write(entries: &[NewEntry], region: u32) -> Vec<u8> {
    let mut sorted: Vec<&NewEntry> = entries.iter().filter(|e| e.tag != region).collect();
    sorted.sort_by_key(|e| e.tag);
    let il = sorted.len() + 1;
    let mut index = Vec::with_capacity(il * 16);
    let mut data: Vec<u8> = Vec::new();
    let put = |v: &mut Vec<u8>, tag: u32, kind: u32, offset: u32, count: u32| {
        for x in [tag, kind, offset, count] {
            v.extend_from_slice(&x.to_be_bytes());
        }
    };
    let mut body = Vec::new();
    for e in sorted {
        while !data.len().is_multiple_of(align(e.kind)) {
            data.push(0);
        }
        put(&mut body, e.tag, e.kind, data.len() as u32, e.count);
        data.extend_from_slice(&e.data);
    }
    let trailer_at = data.len() as u32;
    let minus_index = (il as u32 * 16).wrapping_neg();
    put(&mut data, region, BIN, minus_index, 16);
    put(&mut index, region, BIN, trailer_at, 16);
    index.extend_from_slice(&body);
    let mut out = Vec::with_capacity(16 + index.len() + data.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(il as u32).to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(&index);
    out.extend_from_slice(&data);
    out
}

/// Zero bytes after a signature header of `len` bytes, up to a multiple of 8.
pub(crate) fn padding(len: usize) -> usize {
    (8 - len % 8) % 8
}
