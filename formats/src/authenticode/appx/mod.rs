//! MSIX/APPX packages and bundles (.msix, .appx, .msixbundle,
//! .appxbundle): ZIP archives whose signature is the entry
//! `AppxSignature.p7x`, the four bytes `PKCX` then the DER SignedData.
//!
//! The SpcIndirectDataContent names the APPX SIP (SpcSipInfo version
//! 0x01010000 and the package or the bundle GUID) and its "digest" is a blob
//! of hashes, `APPX` then tagged hashes (the block map's algorithm):
//! - `AXPC`: the local records (header, data, descriptor) of every entry but
//!   the signature, as written, in file order;
//! - `AXCD`: the central directory without the signature's record and the
//!   end records as they would be without it;
//! - `AXCT`: `[Content_Types].xml` inflated, after we add the Override for
//!   `/AppxSignature.p7x` if it lacks it;
//! - `AXBM`: `AppxBlockMap.xml` inflated;
//! - `AXCI`: `AppxMetadata/CodeIntegrity.cat` inflated, if present.
//!
//! Signing writes every entry but an old signature in its canonical form
//! ([`zip`]), then our signature entry last, then the central directory:
//! the output has exactly one signature. Refused with a reason: no block
//! map, content types or manifest; a block map whose `HashMethod` is not
//! the format's digest; ZIP features a package does not use (comments,
//! multiple disks, encryption) and any inconsistency between the central
//! directory and the local records.

pub(crate) mod zip;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};

use digest::DynDigest;
use flate2::read::{DeflateDecoder, DeflateEncoder};
use flate2::{Compression, Crc};

use self::zip::{reject, Archive, Entry};
use crate::signed_data::DigestAlg;
use crate::SignError;

pub(crate) const SIGNATURE: &[u8] = b"AppxSignature.p7x";
const CONTENT_TYPES: &[u8] = b"[Content_Types].xml";
const BLOCK_MAP: &[u8] = b"AppxBlockMap.xml";
const MANIFEST: &[u8] = b"AppxManifest.xml";
const BUNDLE_MANIFEST: &[u8] = b"AppxMetadata/AppxBundleManifest.xml";
const CODE_INTEGRITY: &[u8] = b"AppxMetadata/CodeIntegrity.cat";
const SIGNATURE_OVERRIDE: &[u8] = b"<Override PartName=\"/AppxSignature.p7x\" \
    ContentType=\"application/vnd.ms-appx.signature\"/>";
const PKCX: &[u8] = b"PKCX";
/// The SIP GUIDs (as stored) of packages and of bundles.
const APPX_UUID: [u8; 16] = [
    0x4B, 0xDF, 0xC5, 0x0A, 0x07, 0xCE, 0xE2, 0x4D, 0xB7, 0x6E, 0x23, 0xC8, 0x39, 0xA0, 0x9F, 0xD1,
];
const BUNDLE_UUID: [u8; 16] = [
    0xB3, 0x58, 0x5F, 0x0F, 0xDE, 0xAA, 0x9A, 0x4B, 0xA4, 0x34, 0x95, 0x74, 0x2D, 0x92, 0xEC, 0xEB,
];
/// Largest `[Content_Types].xml` we read into memory.
pub(crate) const MAX_CONTENT_TYPES: u64 = 1 << 20;
/// How much of the block map we search for its `HashMethod`.
const BLOCK_MAP_HEAD: u64 = 64 << 10;
/// Largest signature read back when verifying.
const MAX_SIGNATURE: u64 = 16 << 20;
const BUF: usize = 64 << 10;

/// A parsed package.
#[derive(Debug)]
pub(crate) struct Package {
    pub(crate) archive: Archive,
    pub(crate) bundle: bool,
    /// The block map's hash algorithm.
    pub(crate) alg: DigestAlg,
    pub(crate) signed: bool,
}

impl Package {
    fn entry(&self, name: &[u8]) -> Option<&Entry> {
        self.archive.entries.iter().find(|e| e.name == name)
    }
    fn required(&self, name: &[u8]) -> Result<&Entry, SignError> {
        self.entry(name).ok_or_else(|| {
            reject(format!(
                "no {} in the archive",
                String::from_utf8_lossy(name)
            ))
        })
    }
}

/// Reads the structure of the package in `file` (`len` bytes long).
pub(crate) fn parse(file: &mut File, len: u64) -> Result<Package, SignError> {
    let archive = zip::read_archive(file, len)?;
    let has = |n: &[u8]| archive.entries.iter().any(|e| e.name == n);
    let bundle = has(BUNDLE_MANIFEST);
    if !bundle && !has(MANIFEST) {
        return Err(reject(
            "no AppxManifest.xml (nor AppxMetadata/AppxBundleManifest.xml for a bundle)",
        ));
    }
    let signed = has(SIGNATURE);
    let mut p = Package {
        archive,
        bundle,
        alg: DigestAlg::Sha256,
        signed,
    };
    p.required(CONTENT_TYPES)?;
    let bm = p.required(BLOCK_MAP)?.clone();
    let mut head = Vec::new();
    entry_reader(file, &bm)?
        .take(BLOCK_MAP_HEAD)
        .read_to_end(&mut head)
        .map_err(|e| reject(format!("AppxBlockMap.xml cannot be inflated: {e}")))?;
    p.alg = hash_method(&head)?;
    Ok(p)
}

/// The algorithm the block map's `HashMethod` attribute names.
fn hash_method(head: &[u8]) -> Result<DigestAlg, SignError> {
    let missing = || reject("AppxBlockMap.xml has no HashMethod attribute");
    let at = find(head, b"HashMethod").ok_or_else(missing)?;
    let rest = head.get(at + 10..).ok_or_else(missing)?;
    let rest = rest
        .trim_ascii_start()
        .strip_prefix(b"=")
        .ok_or_else(missing)?;
    let rest = rest.trim_ascii_start();
    let quote = *rest.first().ok_or_else(missing)?;
    let value = rest.get(1..).unwrap_or_default();
    let end = value.iter().position(|b| *b == quote).ok_or_else(missing)?;
    let uri = value.get(..end).unwrap_or_default();
    match uri {
        b"http://www.w3.org/2001/04/xmlenc#sha256" => Ok(DigestAlg::Sha256),
        b"http://www.w3.org/2001/04/xmldsig-more#sha384" => Ok(DigestAlg::Sha384),
        b"http://www.w3.org/2001/04/xmlenc#sha512" => Ok(DigestAlg::Sha512),
        _ => Err(reject(format!(
            "AppxBlockMap.xml's HashMethod {:?} is not SHA-256, SHA-384 or SHA-512",
            String::from_utf8_lossy(uri)
        ))),
    }
}

/// How messages name `alg`.
pub(crate) fn alg_name(alg: DigestAlg) -> &'static str {
    match alg {
        DigestAlg::Sha256 => "SHA-256",
        DigestAlg::Sha384 => "SHA-384",
        DigestAlg::Sha512 => "SHA-512",
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The SpcSipInfo of a package or a bundle.
pub(crate) fn sip_info(p: &Package) -> Vec<u8> {
    let uuid = if p.bundle { &BUNDLE_UUID } else { &APPX_UUID };
    super::pkcs7::spc_sip_info(0x0101_0000, uuid)
}

/// A reader of `e`'s content (stored or deflated).
fn entry_reader<'a>(file: &'a mut File, e: &Entry) -> Result<Box<dyn Read + 'a>, SignError> {
    file.seek(SeekFrom::Start(e.data_offset()))?;
    let raw = file.take(e.csize);
    match e.method {
        0 => Ok(Box::new(raw)),
        8 => Ok(Box::new(DeflateDecoder::new(raw))),
        m => Err(reject(format!(
            "{} is compressed with method {m} (only stored and deflate are read)",
            e.shown()
        ))),
    }
}

/// Streams `e`'s content into `sink`, checking its size and CRC.
fn read_content(file: &mut File, e: &Entry, sink: &mut dyn FnMut(&[u8])) -> Result<(), SignError> {
    let bad = |what: &str| reject(format!("{}: {what}", e.shown()));
    // Deflate cannot expand more than about 1032:1: a larger claim is corrupt
    // or a bomb (small files may claim any ratio).
    if e.method == 8 && e.usize > e.csize.saturating_mul(1100).saturating_add(1 << 20) {
        return Err(bad("claims an impossible compression ratio"));
    }
    let mut r = entry_reader(file, e)?.take(e.usize.saturating_add(1));
    let mut crc = Crc::new();
    let mut n = 0u64;
    let mut buf = vec![0u8; BUF];
    loop {
        let k = r
            .read(&mut buf)
            .map_err(|err| bad(&format!("cannot be inflated ({err})")))?;
        let Some(chunk) = buf.get(..k).filter(|c| !c.is_empty()) else {
            break;
        };
        crc.update(chunk);
        sink(chunk);
        n += k as u64;
    }
    if n != e.usize || crc.sum() != e.crc {
        return Err(bad("content does not match its size or CRC"));
    }
    Ok(())
}

fn hash_entry(file: &mut File, e: &Entry, alg: DigestAlg) -> Result<Vec<u8>, SignError> {
    let mut h = alg.hasher();
    read_content(file, e, &mut |c| h.update(c))?;
    Ok(h.finalize().to_vec())
}

/// `[Content_Types].xml` with the signature's Override, if it lacked it.
fn content_types_with_signature(file: &mut File, e: &Entry) -> Result<Option<Vec<u8>>, SignError> {
    if e.usize > MAX_CONTENT_TYPES {
        return Err(reject(format!(
            "[Content_Types].xml of {} bytes (limit {MAX_CONTENT_TYPES})",
            e.usize
        )));
    }
    let mut xml = Vec::new();
    read_content(file, e, &mut |c| xml.extend_from_slice(c))?;
    // Any Override of the signature's part (signtool writes it with a space
    // before "/>"; part names are case-insensitive) is kept: a second one
    // would make the package invalid.
    let lower = xml.to_ascii_lowercase();
    if [
        &b"partname=\"/appxsignature.p7x\""[..],
        b"partname='/appxsignature.p7x'",
    ]
    .iter()
    .any(|n| find(&lower, n).is_some())
    {
        return Ok(None);
    }
    let close = xml
        .windows(8)
        .rposition(|w| w == b"</Types>")
        .ok_or_else(|| reject("[Content_Types].xml has no </Types>"))?;
    let mut new = xml.get(..close).unwrap_or_default().to_vec();
    new.extend_from_slice(SIGNATURE_OVERRIDE);
    new.extend_from_slice(xml.get(close..).unwrap_or_default());
    Ok(Some(new))
}

/// `data` compressed as `method` says (stored or deflate).
fn compress(data: &[u8], method: u16) -> Result<Vec<u8>, SignError> {
    match method {
        0 => Ok(data.to_vec()),
        _ => {
            let mut out = Vec::new();
            DeflateEncoder::new(data, Compression::default()).read_to_end(&mut out)?;
            Ok(out)
        }
    }
}

/// Writes to an optional output while hashing and counting.
struct Sink<'a, W: Write> {
    hash: Box<dyn DynDigest + Send>,
    out: Option<&'a mut W>,
    pos: u64,
}

impl<W: Write> Sink<'_, W> {
    fn put(&mut self, data: &[u8]) -> Result<(), SignError> {
        self.hash.update(data);
        if let Some(w) = self.out.as_mut() {
            w.write_all(data)?;
        }
        self.pos += data.len() as u64;
        Ok(())
    }
}

/// What [`copy_and_hash`] leaves for [`finish`].
pub(crate) struct Hashed {
    /// The APPX blob of hashes: the SpcIndirectDataContent's digest.
    pub(crate) blob: Vec<u8>,
    /// The central directory records written so far.
    cd: Vec<u8>,
    count: u64,
    /// Where the entries end: the signature entry goes there.
    end: u64,
    /// Date and time for the signature entry (the content types').
    stamp: (u16, u16),
}

/// Hashes the package the way the APPX SIP does and, with `out`, writes its
/// entries but the signature (adding the signature's content type when
/// `sign`). Returns the blob of hashes and what [`finish`] needs.
pub(crate) fn copy_and_hash<W: Write>(
    file: &mut File,
    p: &Package,
    alg: DigestAlg,
    sign: bool,
    out: Option<&mut W>,
) -> Result<Hashed, SignError> {
    let ct = p.required(CONTENT_TYPES)?.clone();
    let new_ct = if sign {
        content_types_with_signature(file, &ct)?
    } else {
        None
    };
    let ct_hash = match &new_ct {
        Some(xml) => alg.hash(xml),
        None => hash_entry(file, &ct, alg)?,
    };
    let bm_hash = hash_entry(file, p.required(BLOCK_MAP)?, alg)?;
    let ci_hash = match p.entry(CODE_INTEGRITY) {
        Some(e) => Some(hash_entry(file, e, alg)?),
        None => None,
    };

    let mut sink = Sink {
        hash: alg.hasher(),
        out,
        pos: 0,
    };
    let mut cd = Vec::new();
    let mut count = 0u64;
    let mut buf = vec![0u8; BUF];
    for e in p.archive.entries.iter().filter(|e| e.name != SIGNATURE) {
        let offset = sink.pos;
        match new_ct.as_ref().filter(|_| e.name == CONTENT_TYPES) {
            Some(xml) => {
                let data = compress(xml, e.method)?;
                let mut crc = Crc::new();
                crc.update(xml);
                let mut n = e.clone();
                n.flags &= !zip::FLAG_DESCRIPTOR;
                (n.crc, n.csize, n.usize) = (crc.sum(), data.len() as u64, xml.len() as u64);
                sink.put(&zip::local_header(
                    &n,
                    n.crc,
                    n.csize as u32,
                    n.usize as u32,
                ))?;
                sink.put(&data)?;
                zip::push_cd_record(&mut cd, &n, offset);
            }
            None => {
                sink.put(&e.local)?;
                file.seek(SeekFrom::Start(e.data_offset()))?;
                let mut left = e.csize;
                while left > 0 {
                    let n = usize::try_from(left.min(BUF as u64)).unwrap_or(BUF);
                    let chunk = buf.get_mut(..n).unwrap_or_default();
                    file.read_exact(chunk)?;
                    sink.put(chunk)?;
                    left -= n as u64;
                }
                if e.descriptor {
                    sink.put(&zip::descriptor(e, p.archive.zip64))?;
                }
                zip::push_cd_record(&mut cd, e, offset);
            }
        }
        count += 1;
    }
    let end = sink.pos;
    let data_hash = sink.hash.finalize_reset().to_vec();
    // Room for our signature entry: its central directory record (at most
    // 46 + 17 + 28 bytes) and its local record (at most MAX_SIGNATURE).
    let (cd_room, entry_room) = (128, MAX_SIGNATURE);
    if !p.archive.zip64 && !zip::fits_zip32(count + 1, cd.len() as u64 + cd_room, end + entry_room)
    {
        return Err(reject(
            "too large for its non-ZIP64 end records once signed",
        ));
    }
    let mut h = alg.hasher();
    h.update(&cd);
    h.update(&zip::end_records(
        p.archive.zip64,
        count,
        cd.len() as u64,
        end,
    ));
    let cd_hash = h.finalize().to_vec();

    let mut blob = b"APPX".to_vec();
    let mut tagged = |tag: &[u8], hash: &[u8]| {
        blob.extend_from_slice(tag);
        blob.extend_from_slice(hash);
    };
    tagged(b"AXPC", &data_hash);
    tagged(b"AXCD", &cd_hash);
    tagged(b"AXCT", &ct_hash);
    tagged(b"AXBM", &bm_hash);
    if let Some(ci) = ci_hash {
        tagged(b"AXCI", &ci);
    }
    Ok(Hashed {
        blob,
        cd,
        count,
        end,
        stamp: (ct.time, ct.date),
    })
}

/// Writes the signature entry (`PKCX` + `der`, deflated), the central
/// directory and the end records after what [`copy_and_hash`] wrote to `w`.
pub(crate) fn finish<W: Write>(
    w: &mut W,
    p: &Package,
    h: Hashed,
    der: &[u8],
) -> Result<(), SignError> {
    let mut p7x = PKCX.to_vec();
    p7x.extend_from_slice(der);
    let data = compress(&p7x, 8)?;
    let mut crc = Crc::new();
    crc.update(&p7x);
    let e = Entry {
        name: SIGNATURE.to_vec(),
        version_made_by: 45,
        version_needed: 20,
        flags: 0,
        method: 8,
        time: h.stamp.0,
        date: h.stamp.1,
        crc: crc.sum(),
        csize: data.len() as u64,
        usize: p7x.len() as u64,
        internal_attr: 0,
        external_attr: 0,
        comment: Vec::new(),
        offset: h.end,
        local: Vec::new(),
        descriptor: false,
    };
    let local = zip::local_header(&e, e.crc, e.csize as u32, e.usize as u32);
    w.write_all(&local)?;
    w.write_all(&data)?;
    let mut cd = h.cd;
    zip::push_cd_record(&mut cd, &e, h.end);
    let cd_offset = h.end + (local.len() + data.len()) as u64;
    w.write_all(&cd)?;
    w.write_all(&zip::end_records(
        p.archive.zip64,
        h.count + 1,
        cd.len() as u64,
        cd_offset,
    ))?;
    Ok(())
}

/// The DER SignedData of a signed package.
pub(crate) fn read_signature(file: &mut File, p: &Package) -> Result<Vec<u8>, String> {
    let e = p.entry(SIGNATURE).ok_or("the package is not signed")?;
    if e.usize > MAX_SIGNATURE {
        return Err(format!("signature of {} bytes", e.usize));
    }
    let mut p7x = Vec::new();
    read_content(file, e, &mut |c| p7x.extend_from_slice(c)).map_err(|e| e.to_string())?;
    p7x.strip_prefix(PKCX)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| "AppxSignature.p7x does not start with PKCX".into())
}

#[cfg(test)]
mod tests;
