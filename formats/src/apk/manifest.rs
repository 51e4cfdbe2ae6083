//! The API range an APK declares: `minSdkVersion` and `maxSdkVersion` of
//! the `<uses-sdk>` elements in its binary `AndroidManifest.xml` (Android's
//! compiled XML: chunks, a string pool, a resource-id map, elements).
//!
//! Read as apksigner reads it (`ApkUtils.getMinSdkVersionFromBinaryAndroidManifest`
//! over `AndroidBinXmlParser`): the first `RES_XML` chunk holds the document;
//! every `<uses-sdk>` element without namespace directly under the root
//! counts; its attribute whose resource id is `android:minSdkVersion`
//! (0x0101020c) is an integer, or a platform codename mapped the way
//! apksigner maps it (`"O"` → 25); absent, it is 1; several elements: the
//! highest. A chunk that runs past the end of its parent is ignored, as
//! Android does. `maxSdkVersion` (0x01010271, integers only) is reported as
//! declared; Android itself has ignored it since 2.0.1.
//!
//! Bounded against hostile input: the parser only slices the bytes it is
//! given (the caller caps their size), every offset is checked, strings are
//! decoded only for element names and codenames, and the work is linear in
//! the input's size. Any error is [`SignError::Rejected`] with the reason.

use crate::SignError;

/// `android:minSdkVersion`.
const MIN_SDK_ATTR: u32 = 0x0101_020c;
/// `android:maxSdkVersion`.
const MAX_SDK_ATTR: u32 = 0x0101_0271;
/// `xmlns` absent (`0xffffffff` string reference).
const NO_NAMESPACE: u32 = u32::MAX;

const CHUNK_STRING_POOL: u16 = 0x0001;
const CHUNK_XML: u16 = 0x0003;
const CHUNK_START_ELEMENT: u16 = 0x0102;
const CHUNK_END_ELEMENT: u16 = 0x0103;
const CHUNK_RESOURCE_MAP: u16 = 0x0180;

const TYPE_STRING: u8 = 0x03;
const TYPE_INT_DEC: u8 = 0x10;
const TYPE_INT_HEX: u8 = 0x11;

/// The API levels an APK declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SdkRange {
    /// Invariant: at least 1.
    pub(crate) min: u32,
    /// `maxSdkVersion`, when declared (the lowest, if several are).
    pub(crate) max: Option<u32>,
}

fn bad(why: impl std::fmt::Display) -> SignError {
    SignError::Rejected(format!(
        "cannot determine the APK's minSdkVersion: malformed binary AndroidManifest.xml ({why})"
    ))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([*s.first()?, *s.get(1)?]))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    s.try_into().ok().map(u32::from_le_bytes)
}

/// One chunk: its type, header and contents (after the header).
struct Chunk<'a> {
    kind: u16,
    header: &'a [u8],
    contents: &'a [u8],
}

/// Splits the chunk at the start of `b`; `Ok(None)` when what is left
/// cannot hold a chunk (too short, or the chunk runs past the end: Android
/// ignores such a last chunk). Returns the chunk and what follows it.
fn next_chunk(b: &[u8]) -> Result<Option<(Chunk<'_>, &[u8])>, SignError> {
    let (Some(kind), Some(header_size), Some(size)) = (u16_at(b, 0), u16_at(b, 2), u32_at(b, 4))
    else {
        return Ok(None);
    };
    let size = usize::try_from(size).map_err(|_| bad("chunk size"))?;
    if size.saturating_sub(8) > b.len() - 8 {
        return Ok(None);
    }
    let header_size = usize::from(header_size);
    if header_size < 8 {
        return Err(bad(format!("chunk header too short: {header_size} bytes")));
    }
    if header_size > size {
        return Err(bad(format!(
            "chunk header of {header_size} bytes in a chunk of {size}"
        )));
    }
    let chunk = b.get(..size).ok_or_else(|| bad("chunk size"))?;
    let (header, contents) = chunk.split_at(header_size);
    let rest = b.get(size..).unwrap_or_default();
    Ok(Some((
        Chunk {
            kind,
            header,
            contents,
        },
        rest,
    )))
}

/// The string pool: offsets into `strings`, UTF-8 or UTF-16.
struct StringPool<'a> {
    /// The chunk's contents: the offsets table starts here.
    contents: &'a [u8],
    strings: &'a [u8],
    count: u32,
    utf8: bool,
}

impl<'a> StringPool<'a> {
    fn new(chunk: &Chunk<'a>) -> Result<Self, SignError> {
        let h = chunk.header;
        let field = |at: usize| u32_at(h, at).ok_or_else(|| bad("string pool header too short"));
        let (count, style_count, flags) = (field(8)?, field(12)?, field(16)?);
        let (strings_start, styles_start) = (field(20)?, field(24)?);
        if count > i32::MAX as u32 || style_count > i32::MAX as u32 {
            return Err(bad("too many strings"));
        }
        let header_len = h.len() as u64;
        let contents = chunk.contents;
        let strings = if count == 0 {
            &[][..]
        } else {
            let start = u64::from(strings_start)
                .checked_sub(header_len)
                .ok_or_else(|| bad("strings before the string pool's header ends"))?;
            let end = if style_count > 0 {
                if styles_start < strings_start {
                    return Err(bad("styles before strings"));
                }
                u64::from(styles_start) - header_len
            } else {
                contents.len() as u64
            };
            usize::try_from(start)
                .ok()
                .zip(usize::try_from(end).ok())
                .and_then(|(s, e)| contents.get(s..e))
                .ok_or_else(|| bad("strings section out of bounds"))?
        };
        Ok(StringPool {
            contents,
            strings,
            count,
            utf8: flags & (1 << 8) != 0,
        })
    }

    fn get(&self, index: u32) -> Result<String, SignError> {
        if index >= self.count {
            return Err(bad(format!("string index {index} out of range")));
        }
        let at = usize::try_from(index)
            .ok()
            .and_then(|i| i.checked_mul(4))
            .ok_or_else(|| bad("string index"))?;
        let offset = u32_at(self.contents, at).ok_or_else(|| bad("string offsets truncated"))?;
        let s = usize::try_from(offset)
            .ok()
            .and_then(|o| self.strings.get(o..))
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad(format!("string {index} out of bounds")))?;
        if self.utf8 {
            utf8_string(s)
        } else {
            utf16_string(s)
        }
        .ok_or_else(|| bad(format!("string {index} truncated or not NUL-terminated")))
    }
}

/// A UTF-8 pool string: UTF-16 length (skipped), UTF-8 length (one byte,
/// or two with the top bit set), the bytes, a NUL.
fn utf8_string(s: &[u8]) -> Option<String> {
    let mut pos = 0usize;
    let mut len = || -> Option<usize> {
        let first = *s.get(pos)?;
        pos += 1;
        if first & 0x80 == 0 {
            return Some(usize::from(first));
        }
        let second = *s.get(pos)?;
        pos += 1;
        Some((usize::from(first & 0x7f) << 8) | usize::from(second))
    };
    let _utf16_len = len()?;
    let n = len()?;
    let bytes = s.get(pos..pos.checked_add(n)?)?;
    (*s.get(pos + n)? == 0).then(|| String::from_utf8_lossy(bytes).into_owned())
}

/// A UTF-16 pool string: length in units (one u16, or two with the top bit
/// set), the units, a NUL unit.
fn utf16_string(s: &[u8]) -> Option<String> {
    let first = usize::from(u16_at(s, 0)?);
    let (n, pos): (usize, usize) = if first & 0x8000 != 0 {
        (((first & 0x7fff) << 16) | usize::from(u16_at(s, 2)?), 4)
    } else {
        (first, 2)
    };
    let end = pos.checked_add(n.checked_mul(2)?)?;
    let units: Vec<u16> = s
        .get(pos..end)?
        .chunks_exact(2)
        .map(|c| {
            u16::from_le_bytes([
                c.first().copied().unwrap_or(0),
                c.get(1).copied().unwrap_or(0),
            ])
        })
        .collect();
    (u16_at(s, end)? == 0).then(|| String::from_utf16_lossy(&units))
}

/// apksigner's codename → API level (pessimistic: one below the release).
fn codename_level(codename: &str) -> Option<u32> {
    const TABLE: [(u8, u32); 13] = [
        (b'C', 2),
        (b'D', 3),
        (b'E', 4),
        (b'F', 7),
        (b'G', 8),
        (b'H', 10),
        (b'I', 13),
        (b'J', 15),
        (b'K', 18),
        (b'L', 20),
        (b'M', 22),
        (b'N', 23),
        (b'O', 25),
    ];
    let c = *codename.as_bytes().first()?;
    if !c.is_ascii_uppercase() {
        return None;
    }
    // The newest codename at or before `c`; A and B were never released.
    match TABLE.iter().rev().find(|(first, _)| *first <= c) {
        Some((first, level)) => Some(level + u32::from(c - first)),
        None => Some(1),
    }
}

/// One attribute of a start element: (resource id, value type, data).
fn attributes<'a>(
    element: &'a [u8],
    resource_ids: &'a [u8],
) -> Result<impl Iterator<Item = (u32, u8, u32)> + 'a, SignError> {
    let start = usize::from(u16_at(element, 8).ok_or_else(|| bad("short element"))?);
    let size = usize::from(u16_at(element, 10).ok_or_else(|| bad("short element"))?);
    let count = usize::from(u16_at(element, 12).ok_or_else(|| bad("short element"))?);
    let end = start + size * count;
    if start > element.len() || end > element.len() {
        return Err(bad("attributes out of bounds"));
    }
    if count > 0 && size < 20 {
        return Err(bad(format!("attribute size {size}")));
    }
    Ok((0..count).filter_map(move |i| {
        let at = start + i * size;
        let name = u32_at(element, at + 4)?;
        let kind = *element.get(at + 15)?;
        let data = u32_at(element, at + 16)?;
        let id = usize::try_from(name)
            .ok()
            .and_then(|n| n.checked_mul(4))
            .and_then(|o| u32_at(resource_ids, o))
            .unwrap_or(0);
        Some((id, kind, data))
    }))
}

/// The `<uses-sdk>` range of the binary AndroidManifest.xml `xml`.
pub(crate) fn sdk_range(xml: &[u8]) -> Result<SdkRange, SignError> {
    // The document: the first RES_XML chunk.
    let mut rest = xml;
    let doc = loop {
        match next_chunk(rest)? {
            Some((c, _)) if c.kind == CHUNK_XML => break c.contents,
            Some((_, after)) => rest = after,
            None => return Err(bad("no XML chunk")),
        }
    };
    let mut pool: Option<StringPool<'_>> = None;
    let mut resource_ids: Option<&[u8]> = None;
    let mut depth = 0i64;
    let mut range = SdkRange { min: 1, max: None };
    let mut rest = doc;
    while let Some((c, after)) = next_chunk(rest)? {
        rest = after;
        match c.kind {
            CHUNK_STRING_POOL => {
                if pool.is_some() {
                    return Err(bad("several string pools"));
                }
                pool = Some(StringPool::new(&c)?);
            }
            CHUNK_RESOURCE_MAP => {
                if resource_ids.is_some() {
                    return Err(bad("several resource maps"));
                }
                resource_ids = Some(c.contents);
            }
            CHUNK_START_ELEMENT | CHUNK_END_ELEMENT => {
                let pool = pool
                    .as_ref()
                    .ok_or_else(|| bad("element before the string pool"))?;
                let e = c.contents;
                let short = || bad("element chunk too short");
                let ns = u32_at(e, 0).ok_or_else(short)?;
                let name = pool.get(u32_at(e, 4).ok_or_else(short)?)?;
                // apksigner compares the namespace's text: an empty one counts as none.
                let no_ns = ns == NO_NAMESPACE || pool.get(ns)?.is_empty();
                if c.kind == CHUNK_END_ELEMENT {
                    depth -= 1;
                    continue;
                }
                if e.len() < 20 {
                    return Err(short());
                }
                depth += 1;
                if depth == 2 && no_ns && name == "uses-sdk" {
                    let ids = resource_ids.unwrap_or_default();
                    let (min, max) = uses_sdk(pool, attributes(e, ids)?)?;
                    range.min = range.min.max(min);
                    if let Some(m) = max {
                        range.max = Some(range.max.map_or(m, |old| old.min(m)));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(range)
}

/// One `<uses-sdk>`: its minSdkVersion (default 1) and maxSdkVersion.
fn uses_sdk(
    pool: &StringPool<'_>,
    attrs: impl Iterator<Item = (u32, u8, u32)>,
) -> Result<(u32, Option<u32>), SignError> {
    let (mut min, mut max, mut min_seen) = (1u32, None, false);
    for (id, kind, data) in attrs {
        if id == MIN_SDK_ATTR && !min_seen {
            min_seen = true;
            min = match kind {
                // A negative integer: no constraint (the default, 1, wins).
                TYPE_INT_DEC | TYPE_INT_HEX => u32::try_from(data as i32).unwrap_or(1),
                TYPE_STRING => {
                    let name = pool.get(data)?;
                    codename_level(&name).ok_or_else(|| {
                        SignError::Rejected(format!(
                            "cannot determine the APK's minSdkVersion: unsupported codename \
                             {name:?} in AndroidManifest.xml"
                        ))
                    })?
                }
                _ => {
                    return Err(SignError::Rejected(format!(
                        "cannot determine the APK's minSdkVersion: AndroidManifest.xml gives \
                         it as a value of type {kind:#04x}; only integers and codenames are \
                         supported (set min_sdk for this format to override)"
                    )))
                }
            };
        } else if id == MAX_SDK_ATTR && matches!(kind, TYPE_INT_DEC | TYPE_INT_HEX) {
            max = u32::try_from(data as i32).ok();
        }
    }
    Ok((min.max(1), max))
}

/// A minimal binary AndroidManifest.xml declaring `<uses-sdk
/// android:minSdkVersion="min_sdk"/>`: the start-up probe's APK, the tests'.
pub(crate) fn minimal(min_sdk: u32) -> Vec<u8> {
    // Strings: 0 minSdkVersion, 1 manifest, 2 uses-sdk, 3 the android namespace.
    let strings = [
        "minSdkVersion",
        "manifest",
        "uses-sdk",
        "http://schemas.android.com/apk/res/android",
    ];
    let mut data = Vec::new();
    let mut offsets = Vec::new();
    for s in strings {
        offsets.extend_from_slice(&(data.len() as u32).to_le_bytes());
        data.push(s.len() as u8);
        data.push(s.len() as u8);
        data.extend_from_slice(s.as_bytes());
        data.push(0);
    }
    while data.len() % 4 != 0 {
        data.push(0);
    }
    let chunk = |kind: u16, header: &[u8], body: &[u8]| {
        let mut c = kind.to_le_bytes().to_vec();
        c.extend_from_slice(&(8 + header.len() as u16).to_le_bytes());
        c.extend_from_slice(&((8 + header.len() + body.len()) as u32).to_le_bytes());
        c.extend_from_slice(header);
        c.extend_from_slice(body);
        c
    };
    let mut pool_header = Vec::new();
    for v in [4u32, 0, 1 << 8, 28 + 16, 0] {
        pool_header.extend_from_slice(&v.to_le_bytes());
    }
    let mut pool_body = offsets;
    pool_body.extend_from_slice(&data);
    let mut doc = chunk(CHUNK_STRING_POOL, &pool_header, &pool_body);
    doc.extend(chunk(CHUNK_RESOURCE_MAP, &[], &MIN_SDK_ATTR.to_le_bytes()));
    // Node header: line number, comment (none).
    let node: Vec<u8> = [1u32, u32::MAX]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let element = |name: u32, attrs: &[[u32; 5]]| {
        let mut e: Vec<u8> = [NO_NAMESPACE, name]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        for v in [20u16, 20, attrs.len() as u16, 0, 0, 0] {
            e.extend_from_slice(&v.to_le_bytes());
        }
        for a in attrs {
            e.extend(a.iter().flat_map(|v| v.to_le_bytes()));
        }
        e
    };
    let end = |name: u32| -> Vec<u8> {
        [NO_NAMESPACE, name]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    };
    // Attribute: ns, name, raw value (none), (size 8, res0 0, type int) , data.
    let min_attr = [3, 0, u32::MAX, 8 | (u32::from(TYPE_INT_DEC) << 24), min_sdk];
    doc.extend(chunk(CHUNK_START_ELEMENT, &node, &element(1, &[])));
    doc.extend(chunk(CHUNK_START_ELEMENT, &node, &element(2, &[min_attr])));
    doc.extend(chunk(CHUNK_END_ELEMENT, &node, &end(2)));
    doc.extend(chunk(CHUNK_END_ELEMENT, &node, &end(1)));
    chunk(CHUNK_XML, &[], &doc)
}

#[cfg(test)]
mod tests;
