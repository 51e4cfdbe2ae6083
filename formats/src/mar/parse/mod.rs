//! Reading a MAR's layout: header, signature block, additional sections and
//! index, with every count, size and offset bounded before it is used.
//!
//! The layout (all integers big-endian; see Mozilla's
//! `modules/libmar/README` and the MAR wiki page):
//!
//! ```text
//! "MAR1"  u32 offset_to_index
//! [signature block]      u64 total_size  u32 count  {u32 algorithm  u32 len  bytes}*
//! [additional sections]  u32 count  {u32 size (incl. these 8 bytes)  u32 id  bytes}*
//! content (the entries' bytes)
//! index: u32 index_size  {u32 offset  u32 len  u32 flags  name NUL}*
//! ```
//!
//! Old MARs (and `mar -c` without `-V`/`-H`) have neither block: the first
//! entry starts right after the 8-byte header. As libmar does, we tell the
//! two apart by the lowest entry offset.
//!
//! What it does: reads only the header blocks and the index (bounded by
//! [`MAX_INDEX_LEN`]); the content is never read here. It rejects, with a
//! reason: bad magic, files over libmar's 500 MiB cap, offsets past the end,
//! a total size that is not the file's, absurd counts, entries outside the
//! content or overlapping each other, bytes nobody accounts for (between the
//! header blocks and the first entry, or after the index).
//!
//! Deliberately NOT done: decompressing or checking entry contents, judging
//! additional sections beyond their framing (they are copied as they are),
//! rejecting duplicate entry names.

use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;

use crate::SignError;

/// libmar's cap on a MAR file (`MAX_SIZE_OF_MAR_FILE`).
pub(crate) const MAX_MAR_SIZE: u64 = 500 << 20;
/// The 8 bytes of `MAR1` + offset_to_index.
pub(crate) const HEADER_LEN: u64 = 8;
/// u64 total size + u32 signature count.
pub(crate) const SIG_BLOCK_HEADER_LEN: u64 = 12;
/// u32 algorithm id + u32 length in front of each signature.
pub(crate) const SIG_ENTRY_HEADER_LEN: u64 = 8;
/// libmar accepts at most 8 signatures.
pub(crate) const MAX_SIGNATURES: u32 = 8;
/// libmar's `MAX_SIGNATURE_LENGTH`: enough for RSA-16384.
pub(crate) const MAX_SIGNATURE_LEN: u32 = 2048;
/// More additional sections than any tool writes (Mozilla defines one kind).
pub(crate) const MAX_ADDITIONAL_SECTIONS: u32 = 64;
/// Largest index we hold in memory. A Firefox update's index is a few hundred KiB.
pub(crate) const MAX_INDEX_LEN: u32 = 16 << 20;
/// Most index entries we accept (a Firefox update has a few thousand); bounds
/// the memory the parsed index takes (about 64 bytes per entry).
pub(crate) const MAX_ENTRIES: usize = 1 << 17;
/// Longest entry name (libmar's `MAXPATHLEN`-sized buffers are smaller still).
pub(crate) const MAX_NAME_LEN: usize = 4096;
const MAGIC: &[u8; 4] = b"MAR1";

/// One signature found in the signature block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExistingSignature {
    /// Algorithm id (1 = RSA-PKCS#1 SHA-1, 2 = RSA-PKCS#1 SHA-384).
    pub algorithm: u32,
    /// Where the signature bytes start in the file.
    pub offset: u64,
    /// How many signature bytes there are.
    pub len: u32,
}

/// The signature block of a MAR that has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SignatureBlock {
    /// The signatures, in file order (possibly none).
    pub signatures: Vec<ExistingSignature>,
}

/// One index entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Offset of the entry's bytes in the file.
    pub offset: u32,
    /// Their length.
    pub len: u32,
    /// Mode bits.
    pub flags: u32,
    /// The name, without its NUL. Invariant: non-empty, no NUL, at most [`MAX_NAME_LEN`].
    pub name: Vec<u8>,
}

/// Where everything is in a well-formed MAR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    /// The file's length. Invariant: <= [`MAX_MAR_SIZE`].
    pub file_len: u64,
    /// None for an old MAR without a signature block.
    pub signature_block: Option<SignatureBlock>,
    /// The additional-sections block (its count and sections), if any.
    pub additional: Option<Range<u64>>,
    /// The bytes from the first entry to the index. Invariant: starts right
    /// after the header blocks and ends at the index.
    pub content: Range<u64>,
    /// The index's size field. Invariant: the index ends at `file_len`.
    pub index_len: u32,
    /// The entries in index order. Invariant: non-empty, within `content`,
    /// not overlapping.
    pub entries: Vec<Entry>,
}

fn rejected(msg: impl Into<String>) -> SignError {
    SignError::Rejected(format!("malformed MAR: {}", msg.into()))
}

/// Reads exactly `buf.len()` bytes; a short file is the input's fault.
fn read_exact<R: Read>(r: &mut R, buf: &mut [u8], what: &str) -> Result<(), SignError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => rejected(format!("truncated {what}")),
        _ => SignError::from(e),
    })
}

fn read_u32<R: Read>(r: &mut R, what: &str) -> Result<u32, SignError> {
    let mut b = [0u8; 4];
    read_exact(r, &mut b, what)?;
    Ok(u32::from_be_bytes(b))
}

fn read_u64<R: Read>(r: &mut R, what: &str) -> Result<u64, SignError> {
    let mut b = [0u8; 8];
    read_exact(r, &mut b, what)?;
    Ok(u64::from_be_bytes(b))
}

/// A cursor over the in-memory index that cannot read out of bounds.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn u32(&mut self) -> Option<u32> {
        let (head, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_be_bytes(*head))
    }

    /// Bytes up to the next NUL (consumed, not returned).
    fn cstr(&mut self) -> Option<&'a [u8]> {
        let nul = self.0.iter().position(|b| *b == 0)?;
        let (name, rest) = self.0.split_at_checked(nul)?;
        self.0 = rest.get(1..)?;
        Some(name)
    }
}

/// Parses the index bytes (after its size field) into entries.
fn parse_index(bytes: &[u8]) -> Result<Vec<Entry>, SignError> {
    let mut c = Cursor(bytes);
    let mut entries = Vec::new();
    while !c.0.is_empty() {
        let n = entries.len();
        if n >= MAX_ENTRIES {
            return Err(rejected(format!("more than {MAX_ENTRIES} index entries")));
        }
        let (Some(offset), Some(len), Some(flags)) = (c.u32(), c.u32(), c.u32()) else {
            return Err(rejected(format!("index entry {n} is truncated")));
        };
        let Some(name) = c.cstr() else {
            return Err(rejected(format!(
                "the name of index entry {n} has no NUL terminator"
            )));
        };
        if name.is_empty() {
            return Err(rejected(format!("index entry {n} has an empty name")));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(rejected(format!(
                "the name of index entry {n} is longer than {MAX_NAME_LEN} bytes"
            )));
        }
        entries.push(Entry {
            offset,
            len,
            flags,
            name: name.to_vec(),
        });
    }
    Ok(entries)
}

fn entry_end(e: &Entry) -> u64 {
    u64::from(e.offset) + u64::from(e.len)
}

fn show(name: &[u8]) -> String {
    String::from_utf8_lossy(name).chars().take(200).collect()
}

/// Reads the layout of the MAR in `r` (header blocks and index only).
pub(crate) fn parse<R: Read + Seek>(r: &mut R) -> Result<Layout, SignError> {
    let file_len = r.seek(SeekFrom::End(0))?;
    if file_len > MAX_MAR_SIZE {
        return Err(rejected(format!(
            "{file_len} bytes is over the MAR size limit of {MAX_MAR_SIZE} bytes (500 MiB)"
        )));
    }
    r.seek(SeekFrom::Start(0))?;
    let mut magic = [0u8; 4];
    read_exact(r, &mut magic, "header (not a MAR file)")?;
    if &magic != MAGIC {
        return Err(rejected("bad magic: not a MAR file (expected \"MAR1\")"));
    }
    let index_offset = u64::from(read_u32(r, "header")?);
    if index_offset < HEADER_LEN {
        return Err(rejected(format!(
            "index offset {index_offset} points into the header"
        )));
    }
    if index_offset + 4 > file_len {
        return Err(rejected(format!(
            "index offset {index_offset} is past the end of the file ({file_len} bytes)"
        )));
    }

    // The index, which ends the file.
    r.seek(SeekFrom::Start(index_offset))?;
    let index_len = read_u32(r, "index size")?;
    let index_end = index_offset + 4 + u64::from(index_len);
    if index_end > file_len {
        return Err(rejected(format!(
            "the index ({index_len} bytes at {index_offset}) runs past the end of the file ({file_len} bytes)"
        )));
    }
    if index_end < file_len {
        return Err(rejected(format!(
            "{} unexpected bytes after the index",
            file_len - index_end
        )));
    }
    if index_len > MAX_INDEX_LEN {
        return Err(rejected(format!(
            "the index is larger than {MAX_INDEX_LEN} bytes"
        )));
    }
    // Bounded just above; the file holds that many bytes.
    let mut index = vec![0u8; index_len as usize];
    read_exact(r, &mut index, "index")?;
    let entries = parse_index(&index)?;
    drop(index);

    // Entries: inside [header, index), not overlapping.
    let mut order: Vec<&Entry> = entries.iter().collect();
    order.sort_by_key(|e| (e.offset, e.len));
    let Some(first) = order.first() else {
        return Err(rejected("the index has no entries"));
    };
    let content_start = u64::from(first.offset);
    for e in &order {
        if u64::from(e.offset) < HEADER_LEN {
            return Err(rejected(format!(
                "entry {:?} starts inside the MAR header",
                show(&e.name)
            )));
        }
        if entry_end(e) > index_offset {
            return Err(rejected(format!(
                "entry {:?} ({} bytes at {}) runs past the start of the index at {index_offset}",
                show(&e.name),
                e.len,
                e.offset
            )));
        }
    }
    for pair in order.windows(2) {
        if let [a, b] = pair {
            if u64::from(b.offset) < entry_end(a) {
                return Err(rejected(format!(
                    "entries {:?} and {:?} overlap",
                    show(&a.name),
                    show(&b.name)
                )));
            }
        }
    }
    drop(order);

    let (signature_block, additional) = if content_start == HEADER_LEN {
        (None, None)
    } else {
        parse_header_blocks(r, file_len, content_start)?
    };

    Ok(Layout {
        file_len,
        signature_block,
        additional,
        content: content_start..index_offset,
        index_len,
        entries,
    })
}

/// Reads the signature block and the additional sections, which must fill
/// the bytes between the header and `content_start` exactly.
fn parse_header_blocks<R: Read + Seek>(
    r: &mut R,
    file_len: u64,
    content_start: u64,
) -> Result<(Option<SignatureBlock>, Option<Range<u64>>), SignError> {
    r.seek(SeekFrom::Start(HEADER_LEN))?;
    let mut pos = HEADER_LEN + SIG_BLOCK_HEADER_LEN;
    if pos > content_start {
        return Err(rejected(format!(
            "the first entry starts at {content_start}, inside the signature block header"
        )));
    }
    let total = read_u64(r, "signature block")?;
    if total != file_len {
        return Err(rejected(format!(
            "the header says the file is {total} bytes, but it is {file_len}"
        )));
    }
    let count = read_u32(r, "signature block")?;
    if count > MAX_SIGNATURES {
        return Err(rejected(format!(
            "{count} signatures (at most {MAX_SIGNATURES} are allowed)"
        )));
    }
    let mut signatures = Vec::new();
    for i in 0..count {
        pos += SIG_ENTRY_HEADER_LEN;
        if pos > content_start {
            return Err(rejected(format!("signature {i} overlaps the first entry")));
        }
        let algorithm = read_u32(r, "signature entry")?;
        let len = read_u32(r, "signature entry")?;
        if len > MAX_SIGNATURE_LEN {
            return Err(rejected(format!(
                "signature {i} is {len} bytes (at most {MAX_SIGNATURE_LEN} are allowed)"
            )));
        }
        let offset = pos;
        pos += u64::from(len);
        if pos > content_start {
            return Err(rejected(format!("signature {i} overlaps the first entry")));
        }
        r.seek(SeekFrom::Start(pos))?;
        signatures.push(ExistingSignature {
            algorithm,
            offset,
            len,
        });
    }

    let mut additional = None;
    if pos < content_start {
        let start = pos;
        pos += 4;
        if pos > content_start {
            return Err(rejected(format!(
                "{} unexplained bytes before the first entry",
                content_start - start
            )));
        }
        let n = read_u32(r, "additional sections")?;
        if n > MAX_ADDITIONAL_SECTIONS {
            return Err(rejected(format!(
                "{n} additional sections (at most {MAX_ADDITIONAL_SECTIONS} are allowed)"
            )));
        }
        for i in 0..n {
            if pos + 8 > content_start {
                return Err(rejected(format!(
                    "additional section {i} overlaps the first entry"
                )));
            }
            let size = read_u32(r, "additional section")?;
            let _id = read_u32(r, "additional section")?;
            if size < 8 {
                return Err(rejected(format!(
                    "additional section {i} declares {size} bytes, less than its own header"
                )));
            }
            pos += u64::from(size);
            if pos > content_start {
                return Err(rejected(format!(
                    "additional section {i} overlaps the first entry"
                )));
            }
            r.seek(SeekFrom::Start(pos))?;
        }
        additional = Some(start..pos);
    }
    if pos != content_start {
        return Err(rejected(format!(
            "{} unexplained bytes between the header blocks and the first entry",
            content_start - pos
        )));
    }
    Ok((Some(SignatureBlock { signatures }), additional))
}

/// Builds an unsigned MAR in memory: old style (no header blocks) without
/// `product`, else with an empty signature block and a product-information
/// section (channel, version), as `mar -c -H channel -V version` does. For
/// the start-up probe and tests: small inputs only.
pub(crate) fn build_unsigned(entries: &[(&str, &[u8])], product: Option<(&str, &str)>) -> Vec<u8> {
    let mut blocks = Vec::new();
    if let Some((channel, version)) = product {
        let size = 8 + channel.len() + 1 + version.len() + 1;
        blocks.extend_from_slice(&1u32.to_be_bytes());
        blocks.extend_from_slice(&(size as u32).to_be_bytes());
        blocks.extend_from_slice(&1u32.to_be_bytes());
        for s in [channel, version] {
            blocks.extend_from_slice(s.as_bytes());
            blocks.push(0);
        }
    }
    let sig_block_len = if product.is_some() {
        SIG_BLOCK_HEADER_LEN as usize
    } else {
        0
    };
    let content_start = HEADER_LEN as usize + sig_block_len + blocks.len();
    let mut content = Vec::new();
    let mut index = Vec::new();
    for (name, data) in entries {
        index.extend_from_slice(&((content_start + content.len()) as u32).to_be_bytes());
        index.extend_from_slice(&(data.len() as u32).to_be_bytes());
        index.extend_from_slice(&0o644u32.to_be_bytes());
        index.extend_from_slice(name.as_bytes());
        index.push(0);
        content.extend_from_slice(data);
    }
    let index_offset = content_start + content.len();
    let total = index_offset + 4 + index.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(index_offset as u32).to_be_bytes());
    if product.is_some() {
        out.extend_from_slice(&(total as u64).to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
    }
    out.extend_from_slice(&blocks);
    out.extend_from_slice(&content);
    out.extend_from_slice(&(index.len() as u32).to_be_bytes());
    out.extend_from_slice(&index);
    out
}

#[cfg(test)]
mod tests;
