//! Reading and validating an input ZIP's structure.
//!
//! Finds the end-of-central-directory record (EOCD), reads the central
//! directory (bounded in size and count) and checks every entry's local
//! header against it. Refuses, as [`SignError::Rejected`] with a reason, what
//! cannot be signed safely: ZIP64, multi-disk archives, encrypted entries,
//! compression methods other than stored/deflate, duplicate or unusable
//! names, entries that overlap or lie outside the entries section, local
//! headers that disagree with the central directory (CRC, sizes, name, data
//! descriptor), data descriptors that disagree, and compression ratios no
//! deflate stream can reach (zip bombs).
//!
//! Entries that signing removes (old signature files, chosen by the
//! caller) are only located: their method, flags and sizes do not matter,
//! since their data is never read. A local header's compression method is
//! not compared: the central directory's is the one Android uses.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use super::{
    reject, Archive, Bytes, Entry, Eocd, ALIGN_EXTRA_ID, CENTRAL_SIG, DESCRIPTOR_SIG, EOCD_SIG,
    FLAG_DESCRIPTOR, FLAG_ENCRYPTED, LOCAL_SIG, MAX_CD_SIZE, MAX_NAME, MAX_RATIO, RATIO_FREE,
    ZIP64_LOCATOR_SIG,
};
use crate::SignError;

/// Why ZIP64 is refused (apksigner and Android's v2/v3 verifier do not read it).
const NO_ZIP64: &str = "ZIP64 archives (over 65,535 entries or 4 GiB) are not supported: \
     Android's APK signature verification and apksigner do not read ZIP64";

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
                        return Err(reject(NO_ZIP64));
                    }
                    if offset >= 20 {
                        let mut loc = [0u8; 4];
                        read_at(file, offset - 20, &mut loc)?;
                        if u32::from_le_bytes(loc) == ZIP64_LOCATOR_SIG {
                            return Err(reject(NO_ZIP64));
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
/// `dropped` says which entries signing removes (see the module docs).
pub(crate) fn read_archive(
    file: &mut File,
    dropped: fn(&str) -> bool,
) -> Result<Archive, SignError> {
    let eocd = find_eocd(file)?;
    let cd = read_cd(file, &eocd)?;
    let mut b = Bytes::new(&cd);
    let mut entries = Vec::with_capacity(usize::from(eocd.entries));
    let mut names = HashSet::new();
    let truncated = || reject("truncated central directory");
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
            return Err(bad(NO_ZIP64));
        }
        if disk != 0 {
            return Err(bad("multi-disk archives are not supported"));
        }
        let drop = dropped(&name);
        if !drop {
            check_kept(flags, method, csize, usize).map_err(|why| bad(&why))?;
        }
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
                dropped: drop,
            },
        ));
    }
    if !b.is_empty() {
        return Err(reject(
            "the central directory holds more than its entry count says (over 65,535 \
             entries need ZIP64, which Android's APK signature verification does not read)",
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
        let _lmethod = h.u16();
        let (_ltime, _ldate) = (h.u16(), h.u16());
        let (lcrc, lcsize, lusize) = (field(h.u32()), field(h.u32()), field(h.u32()));
        let lname_len = h.u16().unwrap_or(0);
        let lextra_len = h.u16().unwrap_or(0);
        if sig != LOCAL_SIG {
            return Err(bad("bad local header signature"));
        }
        // The central directory's method wins (Android reads only it);
        // the flags that change how the data is laid out or read must agree.
        let flag_mask = if e.dropped {
            FLAG_DESCRIPTOR
        } else {
            FLAG_DESCRIPTOR | FLAG_ENCRYPTED
        };
        if (lflags ^ e.flags) & flag_mask != 0 {
            return Err(bad(
                "local header and central directory disagree (data descriptor or encryption flag)",
            ));
        }
        let descriptor = e.flags & FLAG_DESCRIPTOR != 0;
        let sizes_agree = (lcrc, lcsize, lusize) == (e.crc, e.csize, e.usize);
        let zeros = (lcrc, lcsize, lusize) == (0, 0, 0);
        // With a data descriptor the local values may be anything for an
        // entry we drop (apksigner compares them only without one).
        if !(sizes_agree || descriptor && (zeros || e.dropped)) {
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
        // What apksigner and Android take as the data's length.
        let data_len = if e.method == 0 { e.usize } else { e.csize };
        let mut end = e.data_offset + u64::from(data_len);
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
            if !e.dropped && (crc, cs, us) != (Some(e.crc), Some(e.csize), Some(e.usize)) {
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

/// The checks on an entry that is copied: the flags, method and sizes its
/// data will be read with.
fn check_kept(flags: u16, method: u16, csize: u32, usize: u32) -> Result<(), String> {
    if flags & FLAG_ENCRYPTED != 0 {
        return Err("encrypted entries are not supported".into());
    }
    match method {
        0 if csize != usize => return Err("stored entry with differing sizes".into()),
        0 | 8 => {}
        m => {
            return Err(format!(
                "compression method {m} is not supported (Android installs only stored \
                 and deflate entries)"
            ))
        }
    }
    let (c, u) = (u64::from(csize), u64::from(usize));
    if u > RATIO_FREE && u > c.saturating_mul(MAX_RATIO) {
        return Err(format!(
            "compression ratio {u}:{c} is impossible for deflate (zip bomb?)"
        ));
    }
    Ok(())
}
