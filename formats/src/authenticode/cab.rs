//! Cabinet files (.cab, MS-CAB): the signature lives after the data, and the
//! header's 20-byte reserve (`cbCFHeader = 20`) says where: `00 00 10 00`,
//! the signature's offset (= `cbCabinet`), its length, eight zero bytes.
//!
//! Signing an unsigned cabinet inserts that reserve (24 bytes: the three
//! reserve-size fields and the 20 bytes) after the fixed header, so
//! `cbCabinet`, `coffFiles` and each folder's `coffCabStart` grow by 24 and
//! the flags gain `cfhdrRESERVE_PRESENT`; a signed cabinet keeps its layout
//! and only its signature is replaced. The hash (osslsigncode's and the
//! Windows cabinet SIP's) covers the signed layout: the header without
//! `reserved1`, `iCabinet`, the reserve sizes and the first 16 reserve
//! bytes (offset and length of the signature), then the optional
//! next-cabinet names, the folder entries and everything up to the
//! signature. The signature is padded with zeros to a multiple of 8 bytes.
//!
//! Refused, as osslsigncode refuses them: `reserved1` not zero, a cabinet
//! continued from a previous one (`cfhdrPREV_CABINET`), header, folder or
//! data reserves other than the signature's, a reserve without a signature
//! and a signature that does not end the file. Also refused: folder entries
//! that do not end where the file entries start, `cbCabinet` not the
//! cabinet's length.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};

use crate::signed_data::DigestAlg;
use crate::SignError;

const FLAG_PREV_CABINET: u16 = 0x0001;
const FLAG_NEXT_CABINET: u16 = 0x0002;
const FLAG_RESERVE_PRESENT: u16 = 0x0004;
/// The fixed header without reserve fields.
const FIXED: usize = 36;
/// The fixed header with the signature reserve.
const SIGNED_HEADER: usize = 60;
/// What the signature reserve adds: cbCFHeader, cbCFFolder, cbCFData and 20 bytes.
const RESERVE: u32 = 24;
/// Longest optional cabinet or disk name (the format allows 255 bytes).
const MAX_NAME: usize = 256;
/// Largest signature read back when verifying.
const MAX_SIGNATURE: u64 = 16 << 20;
const READ_BUF: usize = 64 << 10;

fn reject(what: impl std::fmt::Display) -> SignError {
    SignError::Rejected(format!("not a cabinet we can sign: {what}"))
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    let mut a = [0u8; 2];
    if let Some(s) = b.get(off..off + 2) {
        a.copy_from_slice(s);
    }
    u16::from_le_bytes(a)
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(off..off + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

/// What signing needs to know about one cabinet.
#[derive(Debug)]
pub(crate) struct CabLayout {
    /// The fixed header as found (36 bytes, or 60 with the signature reserve).
    header: Vec<u8>,
    /// Whether the header already has the signature reserve.
    reserved: bool,
    /// The optional next-cabinet and next-disk names, terminators included.
    names: Vec<u8>,
    /// The CFFOLDER entries, 8 bytes each, as found.
    folders: Vec<u8>,
    /// Where the file entries start (`coffFiles`): the end of `folders`.
    data_start: u64,
    /// The end of the cabinet proper (where a signature starts, or the file's end).
    /// Invariant: `data_start <= content_end <= file length`.
    content_end: u64,
    /// The existing signature (offset, length). Invariant: ends at the file's end.
    pub(crate) signature: Option<(u64, u64)>,
}

/// Reads and checks the header, names and folder entries of the cabinet `file`.
pub(crate) fn parse(file: &mut File, len: u64) -> Result<CabLayout, SignError> {
    file.seek(SeekFrom::Start(0))?;
    let mut header = Vec::with_capacity(SIGNED_HEADER);
    (&mut *file).take(FIXED as u64).read_to_end(&mut header)?;
    if header.len() < FIXED {
        return Err(reject(format!(
            "{len} bytes is shorter than a cabinet header"
        )));
    }
    if header.get(..4) != Some(b"MSCF".as_slice()) {
        return Err(reject("no MSCF signature"));
    }
    if u32_at(&header, 4) != 0 {
        return Err(reject("the reserved1 field is not zero"));
    }
    let flags = u16_at(&header, 30);
    if flags & FLAG_PREV_CABINET != 0 {
        return Err(reject(
            "it continues a previous cabinet (multi-volume cabinets are not supported)",
        ));
    }
    if flags & !(FLAG_PREV_CABINET | FLAG_NEXT_CABINET | FLAG_RESERVE_PRESENT) != 0 {
        return Err(reject(format!("unknown header flags {flags:#06x}")));
    }
    let reserved = flags & FLAG_RESERVE_PRESENT != 0;
    let mut signature = None;
    let mut content_end = len;
    if reserved {
        (&mut *file)
            .take((SIGNED_HEADER - FIXED) as u64)
            .read_to_end(&mut header)?;
        if header.len() < SIGNED_HEADER {
            return Err(reject("the header reserve is truncated"));
        }
        if u32_at(&header, 36) != 20 || u32_at(&header, 40) != 0x0010_0000 {
            return Err(reject(
                "it has header, folder or data reserves other than an Authenticode signature's",
            ));
        }
        let (pos, size) = (
            u64::from(u32_at(&header, 44)),
            u64::from(u32_at(&header, 48)),
        );
        if pos == 0 || size == 0 || pos.checked_add(size) != Some(len) {
            return Err(reject(format!(
                "its signature reserve ({size} bytes at {pos}) does not describe a signature \
                 at the end of the file ({len} bytes)"
            )));
        }
        signature = Some((pos, size));
        content_end = pos;
    }
    let cb_cabinet = u64::from(u32_at(&header, 8));
    if cb_cabinet != content_end {
        return Err(reject(format!(
            "cbCabinet says {cb_cabinet} bytes, the cabinet has {content_end}"
        )));
    }
    let mut names = Vec::new();
    if flags & FLAG_NEXT_CABINET != 0 {
        for what in ["szCabinetNext", "szDiskNext"] {
            let mut n = 0;
            loop {
                let mut b = [0u8; 1];
                file.read_exact(&mut b)
                    .map_err(|_| reject(format!("{what} runs past the end of the file")))?;
                names.push(b[0]);
                if b[0] == 0 {
                    break;
                }
                n += 1;
                if n > MAX_NAME {
                    return Err(reject(format!("{what} is longer than {MAX_NAME} bytes")));
                }
            }
        }
    }
    let n_folders = usize::from(u16_at(&header, 26));
    let mut folders = Vec::with_capacity(8 * n_folders);
    (&mut *file)
        .take(8 * n_folders as u64)
        .read_to_end(&mut folders)?;
    if folders.len() != 8 * n_folders {
        return Err(reject(format!(
            "its {n_folders} folder entries run past the end of the file"
        )));
    }
    let data_start = (header.len() + names.len() + folders.len()) as u64;
    let coff_files = u64::from(u32_at(&header, 16));
    if coff_files != data_start {
        return Err(reject(format!(
            "the folder entries end at {data_start} but coffFiles says {coff_files}"
        )));
    }
    if data_start > content_end {
        return Err(reject(
            "the file entries start beyond the end of the cabinet",
        ));
    }
    if !reserved && u64::from(u32::MAX) - content_end < u64::from(RESERVE) + (16 << 20) {
        return Err(reject("the cabinet is too large to sign (4 GiB limit)"));
    }
    Ok(CabLayout {
        header,
        reserved,
        names,
        folders,
        data_start,
        content_end,
        signature,
    })
}

/// The signed layout of `l`'s header, names and folders: (hashed parts
/// interleaved with unhashed ones) written to `out`, hashed into `h`.
fn head(l: &CabLayout) -> Result<(Vec<u8>, Vec<u8>), SignError> {
    let shift = if l.reserved { 0 } else { RESERVE };
    let add = |v: u32| {
        v.checked_add(shift)
            .ok_or_else(|| reject("an offset overflows when the signature reserve is added"))
    };
    let mut hdr = l.header.clone();
    if !l.reserved {
        let cb = add(u32_at(&hdr, 8))?;
        let coff = add(u32_at(&hdr, 16))?;
        let flags = u16_at(&hdr, 30) | FLAG_RESERVE_PRESENT;
        let mut patch = |off: usize, bytes: &[u8]| {
            if let Some(d) = hdr.get_mut(off..off + bytes.len()) {
                d.copy_from_slice(bytes);
            }
        };
        patch(8, &cb.to_le_bytes());
        patch(16, &coff.to_le_bytes());
        patch(30, &flags.to_le_bytes());
        hdr.extend_from_slice(&20u32.to_le_bytes());
        hdr.extend_from_slice(&0x0010_0000u32.to_le_bytes());
        hdr.extend_from_slice(&cb.to_le_bytes());
        hdr.extend_from_slice(&[0u8; 12]);
    }
    // The signature's length is not known yet: written as 0, patched later.
    if let Some(d) = hdr.get_mut(48..52) {
        d.fill(0);
    }
    let mut hashed = Vec::with_capacity(hdr.len() + l.names.len() + l.folders.len());
    for (a, b) in [(0, 4), (8, 34), (56, 60)] {
        hashed.extend_from_slice(hdr.get(a..b).unwrap_or_default());
    }
    let mut written = hdr;
    for part in [&mut hashed, &mut written] {
        part.extend_from_slice(&l.names);
    }
    for f in l.folders.chunks_exact(8) {
        let start = add(u32_at(f, 0))?.to_le_bytes();
        for part in [&mut hashed, &mut written] {
            part.extend_from_slice(&start);
            part.extend_from_slice(f.get(4..8).unwrap_or_default());
        }
    }
    Ok((hashed, written))
}

/// Copies the cabinet in its signed layout to `out` (when given) without
/// any old signature, hashing it; returns the hash and the length written
/// (the signature's offset).
pub(crate) fn copy_and_hash(
    file: &mut File,
    l: &CabLayout,
    alg: DigestAlg,
    mut out: Option<&mut dyn Write>,
) -> Result<(Vec<u8>, u64), SignError> {
    let (hashed, written) = head(l)?;
    let mut h = alg.hasher();
    h.update(&hashed);
    if let Some(w) = out.as_mut() {
        w.write_all(&written)?;
    }
    file.seek(SeekFrom::Start(l.data_start))?;
    let want = l.content_end - l.data_start;
    let mut rest = (&mut *file).take(want);
    let mut buf = vec![0u8; READ_BUF];
    let mut done = 0u64;
    loop {
        let n = rest.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = buf.get(..n).unwrap_or_default();
        h.update(chunk);
        if let Some(w) = out.as_mut() {
            w.write_all(chunk)?;
        }
        done += n as u64;
    }
    if done != want {
        return Err(SignError::Internal(anyhow::anyhow!(
            "the input shrank while being read"
        )));
    }
    Ok((h.finalize().to_vec(), written.len() as u64 + want))
}

/// Appends `der` padded with zeros to 8 bytes; returns the padded length.
pub(crate) fn append_signature(w: &mut impl Write, der: &[u8]) -> Result<u32, SignError> {
    let pad = (8 - der.len() % 8) % 8;
    w.write_all(der)?;
    w.write_all([0u8; 8].get(..pad).unwrap_or_default())?;
    u32::try_from(der.len() + pad)
        .map_err(|_| SignError::Internal(anyhow::anyhow!("signature too large")))
}

/// Writes the signature's length into the header reserve of the output.
pub(crate) fn patch_signature_size(
    out: &mut File,
    body_len: u64,
    len: u32,
) -> Result<(), SignError> {
    if u64::from(u32::MAX) - body_len < u64::from(len) {
        return Err(SignError::Rejected(
            "the signed cabinet would exceed 4 GiB".into(),
        ));
    }
    out.seek(SeekFrom::Start(48))?;
    out.write_all(&len.to_le_bytes())?;
    Ok(())
}

/// Copies the cabinet `l` of `input` to `out` in its signed layout, any
/// old signature left out, and returns its hash and length (where the
/// signature goes): the one preparation of every cabinet signing,
/// whole-file or by digest.
pub(crate) fn copy_unsigned_and_hash(
    input: &mut File,
    l: &CabLayout,
    out: &mut File,
    alg: DigestAlg,
) -> Result<(Vec<u8>, u64), SignError> {
    let mut w = BufWriter::with_capacity(READ_BUF, out);
    let copied = copy_and_hash(input, l, alg, Some(&mut w))?;
    w.flush()?;
    Ok(copied)
}

/// Writes `der` after the `body_len` bytes of `out` (a cabinet copied by
/// [`copy_and_hash`]) and its length into the header reserve: the one
/// signature placement of every cabinet signing, whole-file or by digest.
pub(crate) fn write_signature(out: &mut File, body_len: u64, der: &[u8]) -> Result<(), SignError> {
    out.seek(SeekFrom::Start(body_len))?;
    let padded = append_signature(out, der)?;
    out.set_len(body_len + u64::from(padded))?;
    patch_signature_size(out, body_len, padded)
}

/// The `SpcIndirectDataContent` data of cabinet signatures: type and value.
pub(crate) fn indirect_data() -> (const_oid::ObjectIdentifier, Vec<u8>) {
    (
        super::pkcs7::SPC_CAB_DATA,
        super::pkcs7::spc_link_obsolete(),
    )
}

/// The DER signature of a signed cabinet.
pub(crate) fn read_signature(file: &mut File, l: &CabLayout) -> Result<Vec<u8>, String> {
    let (pos, size) = l.signature.ok_or("the cabinet is not signed")?;
    if size > MAX_SIGNATURE {
        return Err(format!("a signature of {size} bytes"));
    }
    file.seek(SeekFrom::Start(pos)).map_err(|e| e.to_string())?;
    let mut der = Vec::new();
    (&mut *file)
        .take(size)
        .read_to_end(&mut der)
        .map_err(|e| e.to_string())?;
    Ok(der)
}

#[cfg(test)]
pub(crate) mod tests;
