//! PE/COFF header parsing for Authenticode: where the CheckSum field and the
//! certificate-table directory entry are, where the image ends and whether a
//! signature is already attached.
//!
//! Only the first [`HEADERS_MAX`] bytes are read into memory; goblin parses
//! the DOS, COFF and optional headers from them, and the section table is
//! read here (goblin's section parser would follow long section names into
//! the COFF string table, which lies beyond the headers).
//!
//! Deliberately NOT done: no import/export/resource parsing, no page hashes,
//! and no support for files whose sections are not laid out back to back
//! after the headers (for those the Authenticode specification's
//! section-by-section hash and the linear hash that osslsigncode and Windows
//! tools compute differ; such a file is rejected rather than signed with a
//! hash someone will disagree with).

use std::fs::File;
use std::io::Read;

use goblin::pe::header::Header;

use crate::SignError;

/// How much of the file start we read and parse as headers.
pub(crate) const HEADERS_MAX: u64 = 1 << 20;

const MAGIC_PE32: u16 = 0x10b;
const MAGIC_PE32_PLUS: u16 = 0x20b;
/// Index of the certificate table in the data directories.
const CERT_TABLE_INDEX: usize = 4;
const SECTION_HEADER_LEN: usize = 40;

/// What signing needs to know about one PE file.
#[derive(Debug)]
pub(crate) struct PeLayout {
    /// File offset of the 4-byte CheckSum field.
    pub(crate) checksum_offset: usize,
    /// File offset of the 8-byte certificate-table directory entry.
    pub(crate) cert_dir_offset: usize,
    /// Length of the image without any attached certificate table.
    /// Invariant: `headers.len() <= content_len`.
    pub(crate) content_len: u64,
    /// The certificate table already attached (file offset, size), if any.
    /// Invariant: when set, `offset == content_len` and it ends at the file end.
    pub(crate) existing_signature: Option<(u64, u64)>,
    /// The first `min(content_len, HEADERS_MAX)` bytes of the file.
    /// Invariant: contains the CheckSum field and the directory entry.
    pub(crate) headers: Vec<u8>,
}

fn reject(what: impl std::fmt::Display) -> SignError {
    SignError::Rejected(format!("not a valid PE file: {what}"))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    let mut a = [0u8; 4];
    a.copy_from_slice(s);
    Some(u32::from_le_bytes(a))
}

/// Parses the headers of the PE file `file` (of `file_len` bytes, read from
/// its start) and checks that the layout is one we can sign.
pub(crate) fn parse(file: &mut File, file_len: u64) -> Result<PeLayout, SignError> {
    if file_len < 64 {
        return Err(reject(format!(
            "{file_len} bytes is shorter than an MS-DOS header (64 bytes)"
        )));
    }
    let want = file_len.min(HEADERS_MAX);
    let mut buf = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
    file.take(want).read_to_end(&mut buf)?;
    if (buf.len() as u64) < want {
        return Err(SignError::Internal(anyhow::anyhow!(
            "the input file shrank while being read"
        )));
    }
    parse_headers(buf, file_len)
}

/// [`parse`] on the already-read first bytes of the file.
pub(crate) fn parse_headers(mut buf: Vec<u8>, file_len: u64) -> Result<PeLayout, SignError> {
    if buf.get(..2) != Some(b"MZ".as_slice()) {
        return Err(reject("no MZ signature at offset 0"));
    }
    let pe_off = u32_at(&buf, 0x3c).ok_or_else(|| reject("truncated MS-DOS header"))? as usize;
    let have = buf.len();
    if pe_off < 0x40 || pe_off.saturating_add(24) > have {
        return Err(reject(format!(
            "the PE header offset {pe_off:#x} (e_lfanew) lies outside the file's first {have} bytes"
        )));
    }
    if buf.get(pe_off..pe_off + 4) != Some(b"PE\0\0".as_slice()) {
        return Err(reject(format!(
            "no PE\\0\\0 signature at offset {pe_off:#x}"
        )));
    }
    let header = Header::parse(&buf).map_err(|e| reject(format!("bad headers: {e}")))?;
    let Some(opt) = header.optional_header else {
        return Err(reject("no optional header (an object file, not an image)"));
    };
    let opt_off = pe_off + 24;
    let opt_len = usize::from(header.coff_header.size_of_optional_header);
    let magic = opt.standard_fields.magic;
    let dirs_off = match magic {
        MAGIC_PE32 => 96,
        MAGIC_PE32_PLUS => 112,
        m => return Err(reject(format!("unknown optional header magic {m:#x}"))),
    };
    let n_dirs = opt.windows_fields.number_of_rva_and_sizes as usize;
    if n_dirs <= CERT_TABLE_INDEX {
        return Err(reject(format!(
            "only {n_dirs} data directories: there is no certificate table entry"
        )));
    }
    let cert_dir_rel = dirs_off + 8 * CERT_TABLE_INDEX;
    if cert_dir_rel + 8 > opt_len {
        return Err(reject(format!(
            "the optional header ({opt_len} bytes) is too short for a certificate table entry"
        )));
    }
    let checksum_offset = opt_off + 64;
    let cert_dir_offset = opt_off + cert_dir_rel;

    // The section table follows the optional header.
    let n_sections = usize::from(header.coff_header.number_of_sections);
    let sect_off = opt_off + opt_len;
    let sect_end = sect_off + n_sections * SECTION_HEADER_LEN;
    if sect_end > have {
        return Err(reject(format!(
            "the section table ({n_sections} sections) ends at {sect_end:#x}, beyond the file's first {have} bytes"
        )));
    }
    let size_of_headers = u64::from(opt.windows_fields.size_of_headers);
    if size_of_headers < sect_end as u64 {
        return Err(reject(format!(
            "SizeOfHeaders {size_of_headers:#x} is smaller than the headers themselves ({sect_end:#x})"
        )));
    }

    // An attached certificate table must be the file's tail.
    let cert_addr = u64::from(u32_at(&buf, cert_dir_offset).unwrap_or(0));
    let cert_size = u64::from(u32_at(&buf, cert_dir_offset + 4).unwrap_or(0));
    let existing_signature = match (cert_addr, cert_size) {
        (_, 0) => None,
        (0, _) => {
            return Err(reject(format!(
                "the certificate table entry has size {cert_size} but offset 0"
            )))
        }
        (addr, size) => {
            if addr.checked_add(size) != Some(file_len) {
                return Err(reject(format!(
                    "the certificate table ({size} bytes at {addr:#x}) does not end at the end of the file ({file_len} bytes)"
                )));
            }
            Some((addr, size))
        }
    };
    let content_len = existing_signature.map_or(file_len, |(addr, _)| addr);
    if size_of_headers > content_len {
        return Err(reject(format!(
            "SizeOfHeaders {size_of_headers:#x} is beyond the end of the image ({content_len} bytes): truncated file?"
        )));
    }

    // Sections with raw data, in file order, must follow the headers back to
    // back and lie inside the image.
    let mut raw: Vec<(u64, u64, String)> = Vec::new();
    for i in 0..n_sections {
        let at = sect_off + i * SECTION_HEADER_LEN;
        let size = u64::from(u32_at(&buf, at + 16).unwrap_or(0));
        let ptr = u64::from(u32_at(&buf, at + 20).unwrap_or(0));
        if size == 0 {
            continue;
        }
        let name_bytes = buf.get(at..at + 8).unwrap_or_default();
        let name: String = String::from_utf8_lossy(name_bytes)
            .trim_end_matches('\0')
            .chars()
            .filter(|c| !c.is_control())
            .collect();
        raw.push((ptr, size, name));
    }
    raw.sort_by_key(|(ptr, _, _)| *ptr);
    let mut pos = size_of_headers;
    for (ptr, size, name) in &raw {
        if *ptr != pos {
            return Err(reject(format!(
                "section {name:?} starts at {ptr:#x}, expected {pos:#x} (sections must follow the headers without gaps or overlaps)"
            )));
        }
        pos = ptr + size;
        if pos > content_len {
            return Err(reject(format!(
                "section {name:?} ends at {pos:#x}, beyond the end of the image ({content_len} bytes): truncated file?"
            )));
        }
    }
    if let Some((addr, _)) = existing_signature {
        if addr < pos {
            return Err(reject(format!(
                "the certificate table at {addr:#x} overlaps the sections (which end at {pos:#x})"
            )));
        }
    }

    let keep = usize::try_from(content_len.min(buf.len() as u64)).unwrap_or(0);
    buf.truncate(keep);
    if cert_dir_offset + 8 > buf.len() {
        return Err(reject("the headers extend beyond the image"));
    }
    Ok(PeLayout {
        checksum_offset,
        cert_dir_offset,
        content_len,
        existing_signature,
        headers: buf,
    })
}

/// PE32+ machine code for the probe: `ret`.
const PROBE_CODE: &[u8] = &[0xc3];

/// A minimal valid PE32+ image (x86-64 console program, one `.text`
/// section that returns), for the start-up probe.
pub(crate) fn minimal_pe32_plus(extra: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 0x400];
    let mut put = |off: usize, bytes: &[u8]| {
        if let Some(dst) = f.get_mut(off..off + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    };
    put(0, b"MZ");
    put(0x3c, &0x80u32.to_le_bytes());
    put(0x80, b"PE\0\0");
    // COFF header.
    put(0x84, &0x8664u16.to_le_bytes()); // AMD64
    put(0x86, &1u16.to_le_bytes()); // one section
    put(0x94, &240u16.to_le_bytes()); // SizeOfOptionalHeader
    put(0x96, &0x0022u16.to_le_bytes()); // executable, large-address-aware
                                         // Optional header (PE32+) at 0x98.
    let o = 0x98;
    put(o, &MAGIC_PE32_PLUS.to_le_bytes());
    put(o + 4, &0x200u32.to_le_bytes()); // SizeOfCode
    put(o + 16, &0x1000u32.to_le_bytes()); // AddressOfEntryPoint
    put(o + 20, &0x1000u32.to_le_bytes()); // BaseOfCode
    put(o + 24, &0x1_4000_0000u64.to_le_bytes()); // ImageBase
    put(o + 32, &0x1000u32.to_le_bytes()); // SectionAlignment
    put(o + 36, &0x200u32.to_le_bytes()); // FileAlignment
    put(o + 40, &6u16.to_le_bytes()); // OS version 6.0
    put(o + 48, &6u16.to_le_bytes()); // subsystem version 6.0
    put(o + 56, &0x2000u32.to_le_bytes()); // SizeOfImage
    put(o + 60, &0x200u32.to_le_bytes()); // SizeOfHeaders
    put(o + 68, &3u16.to_le_bytes()); // console subsystem
    put(o + 70, &0x8160u16.to_le_bytes()); // NX, dynamic base, high entropy VA, TS aware
    put(o + 72, &0x10_0000u64.to_le_bytes()); // stack reserve
    put(o + 80, &0x1000u64.to_le_bytes()); // stack commit
    put(o + 88, &0x10_0000u64.to_le_bytes()); // heap reserve
    put(o + 96, &0x1000u64.to_le_bytes()); // heap commit
    put(o + 108, &16u32.to_le_bytes()); // NumberOfRvaAndSizes
                                        // Section table at 0x98 + 240 = 0x188.
    let s = 0x188;
    put(s, b".text\0\0\0");
    put(s + 8, &(PROBE_CODE.len() as u32).to_le_bytes()); // VirtualSize
    put(s + 12, &0x1000u32.to_le_bytes()); // VirtualAddress
    put(s + 16, &0x200u32.to_le_bytes()); // SizeOfRawData
    put(s + 20, &0x200u32.to_le_bytes()); // PointerToRawData
    put(s + 36, &0x6000_0020u32.to_le_bytes()); // code, execute, read
    put(0x200, PROBE_CODE);
    f.extend_from_slice(extra);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_vec(v: Vec<u8>) -> Result<PeLayout, SignError> {
        let len = v.len() as u64;
        parse_headers(v, len)
    }

    fn rejected(v: Vec<u8>) -> String {
        match parse_vec(v) {
            Err(SignError::Rejected(m)) => m,
            other => panic!("expected Rejected, got {other:?}"),
        }
    }

    #[test]
    fn minimal_pe_parses() {
        let l = parse_vec(minimal_pe32_plus(&[])).unwrap();
        assert_eq!(l.checksum_offset, 0x98 + 64);
        assert_eq!(l.cert_dir_offset, 0x98 + 144);
        assert_eq!(l.content_len, 0x400);
        assert!(l.existing_signature.is_none());
    }

    #[test]
    fn bad_inputs_are_rejected_precisely() {
        assert!(rejected(b"hello".to_vec()).contains("no MZ"));
        assert!(rejected(vec![0u8; 100]).contains("no MZ"));
        let mut v = minimal_pe32_plus(&[]);
        v[0x3c..0x40].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        assert!(rejected(v).contains("e_lfanew"));
        let mut v = minimal_pe32_plus(&[]);
        v[0x80] = b'X';
        assert!(rejected(v).contains("no PE\\0\\0"));
        let mut v = minimal_pe32_plus(&[]);
        v[0x98..0x9a].copy_from_slice(&0x999u16.to_le_bytes());
        assert!(rejected(v).contains("magic"));
        // Truncated: the section's raw data is cut.
        let v = minimal_pe32_plus(&[]);
        assert!(rejected(v[..0x300].to_vec()).contains("truncated"));
        // Lying number of sections.
        let mut v = minimal_pe32_plus(&[]);
        v[0x86..0x88].copy_from_slice(&0xffffu16.to_le_bytes());
        assert!(rejected(v).contains("section table"));
        // Lying certificate table.
        let mut v = minimal_pe32_plus(&[]);
        v[0x98 + 144..0x98 + 148].copy_from_slice(&0x300u32.to_le_bytes());
        v[0x98 + 148..0x98 + 152].copy_from_slice(&0x10_0000u32.to_le_bytes());
        assert!(rejected(v).contains("certificate table"));
        // Too few data directories.
        let mut v = minimal_pe32_plus(&[]);
        v[0x98 + 108..0x98 + 112].copy_from_slice(&2u32.to_le_bytes());
        assert!(rejected(v).contains("data directories"));
    }

    /// What `parse` promises for any input: a layout whose documented
    /// invariants hold, or a refusal (422), never another error.
    fn check_outcome(r: Result<PeLayout, SignError>, file_len: u64, what: &str) -> bool {
        match r {
            Ok(l) => {
                assert!(l.headers.len() as u64 <= l.content_len, "{what}");
                assert!(l.content_len <= file_len, "{what}");
                assert!(l.checksum_offset + 4 <= l.headers.len(), "{what}");
                assert!(l.cert_dir_offset + 8 <= l.headers.len(), "{what}");
                if let Some((off, len)) = l.existing_signature {
                    assert_eq!(off, l.content_len, "{what}");
                    assert_eq!(off + len, file_len, "{what}");
                }
                true
            }
            Err(SignError::Rejected(_)) => false,
            Err(e) => panic!("{what}: expected a layout or Rejected, got {e:?}"),
        }
    }

    #[test]
    fn every_prefix_and_single_byte_change_is_parsed_or_refused() {
        let v = minimal_pe32_plus(&[1, 2, 3]);
        // The image is 0x400 bytes: every shorter prefix is truncated.
        for n in 0..v.len() {
            let ok = check_outcome(parse_vec(v[..n].to_vec()), n as u64, &format!("prefix {n}"));
            assert_eq!(ok, n >= 0x400, "prefix of {n} bytes");
        }
        let mut refused = 0;
        for i in 0..0x200 {
            for b in [0x00, 0x7f, 0xff] {
                let mut w = v.clone();
                w[i] = b;
                let len = w.len() as u64;
                if !check_outcome(parse_vec(w), len, &format!("byte {i:#x} = {b:#x}")) {
                    refused += 1;
                }
            }
        }
        // Breaking the DOS/PE headers, the optional header or the section table is caught.
        assert!(refused > 50, "only {refused} of 1536 changes were refused");
    }
}
