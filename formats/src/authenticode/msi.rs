//! Windows Installer packages (.msi, .msm, .msp): OLE compound files (MS-CFB)
//! whose signature is the root stream `\u{5}DigitalSignature`, a DER PKCS#7.
//!
//! The hash (what `osslsigncode` and Windows' MSI SIP compute): each storage's
//! children in the order of their raw UTF-16LE names (byte-wise, terminator
//! included; [`hash_order`] for names with a NUL inside), each stream's
//! content in that order, each sub-storage recursively, and after the
//! children the storage's own 16-byte CLSID; at the root the
//! `\u{5}DigitalSignature` and `\u{5}MsiDigitalSignatureEx` streams (and, as
//! osslsigncode reads them, any name that starts with one of them and its
//! terminator) are left out. The data type of the `SpcIndirectDataContent` is an
//! `SpcSipInfo` naming the MSI SIP.
//!
//! Signing writes the input's storages and streams, less any old signature
//! streams, into a fresh compound file, hashing them on the way
//! ([`copy_unsigned_and_hash`]; a rewrite, not an edit in place: see there
//! why), then adds the new `\u{5}DigitalSignature` stream and checks that the
//! written file still hashes the same ([`sign_and_check`]): the server's
//! whole-file signing does both; a client signing by digest
//! ([`super::remote`]) does both around the server's signature over the hash.
//! The compound-file structure is read and written by the `cfb` crate, which
//! holds the allocation tables and the directory in memory (a few bytes per
//! 512-byte sector), never the streams.
//!
//! Deliberately NOT done: the `MsiDigitalSignatureEx` metadata pre-hash
//! (osslsigncode adds one only on request, `-add-msi-dse`; an input that has
//! one loses it with the old signature), nested signatures.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use cfb::CompoundFile;
use digest::DynDigest;

use crate::signed_data::DigestAlg;
use crate::SignError;

/// The signature stream, at the root.
pub(crate) const SIGNATURE: &str = "\u{5}DigitalSignature";
/// The metadata pre-hash of signtool's extended MSI signatures, at the root.
pub(crate) const SIGNATURE_EX: &str = "\u{5}MsiDigitalSignatureEx";
/// The compound file magic number.
pub(crate) const MAGIC: [u8; 8] = [0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1];
/// CLSID of the MSI Subject Interface Package, as osslsigncode and signtool write it.
const SIP_UUID: [u8; 16] = [
    0xf1, 0x10, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x46,
];
/// Storages nested deeper than this are refused (MSI uses one level, if any).
const MAX_DEPTH: usize = 32;
/// Directory entries beyond this are refused: real packages have hundreds,
/// and the hash lists a storage's children in memory to sort them.
const MAX_ENTRIES: usize = 1 << 16;
/// Largest signature stream read back when verifying.
const MAX_SIGNATURE: u64 = 16 << 20;
/// Streams of this length or more are refused: osslsigncode would leave them
/// out of the hash (it takes them for corrupt), so nobody could verify them.
const MAX_STREAM: u64 = 0xffff_fffa;

fn reject(what: impl std::fmt::Display) -> SignError {
    SignError::Rejected(format!("not a valid MSI (compound file): {what}"))
}

/// The `SpcIndirectDataContent` data of MSI signatures: type and value.
pub(crate) fn indirect_data() -> (const_oid::ObjectIdentifier, Vec<u8>) {
    (
        super::pkcs7::SPC_SIPINFO,
        super::pkcs7::spc_sip_info(1, &SIP_UUID),
    )
}

/// Runs `f` on the parsed file; a panic inside the `cfb` parser (hostile
/// input) becomes a refusal instead of taking the worker down.
fn guarded<T>(f: impl FnOnce() -> Result<T, SignError>) -> Result<T, SignError> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(reject("the compound-file structure is inconsistent")))
}

/// Opens `file` as a compound file, refusing what is not one.
pub(crate) fn open(file: File) -> Result<CompoundFile<File>, SignError> {
    guarded(|| {
        let cf = CompoundFile::open(file).map_err(|e| match e.kind() {
            // cfb's word for a name MS-CFB forbids.
            std::io::ErrorKind::InvalidInput => bad_name(e),
            _ => reject(e),
        })?;
        let n = cf.walk().take(MAX_ENTRIES + 1).count();
        if n > MAX_ENTRIES {
            return Err(reject(format!("more than {MAX_ENTRIES} directory entries")));
        }
        Ok(cf)
    })
}

/// A child of a storage, as the hash needs it.
struct Child {
    /// UTF-16LE name with its terminator: the sort key.
    key: Vec<u8>,
    path: PathBuf,
    stream: bool,
    len: u64,
}

fn children(cf: &CompoundFile<File>, dir: &Path) -> Result<Vec<Child>, SignError> {
    let entries = cf.read_storage(dir).map_err(reject)?;
    let mut out: Vec<Child> = entries
        .map(|e| Child {
            key: e
                .name()
                .encode_utf16()
                .chain([0])
                .flat_map(u16::to_le_bytes)
                .collect(),
            path: e.path().to_path_buf(),
            stream: e.is_stream(),
            len: e.len(),
        })
        .collect();
    out.sort_by(|a, b| hash_order(&a.key, &b.key));
    Ok(out)
}

/// The order of a storage's children in the hash: their UTF-16LE names with
/// terminator, compared byte-wise over the shorter one's length; where those
/// bytes are equal (a name with a NUL inside, which MS-CFB does not allow
/// but files have), the longer comes first, as osslsigncode orders them.
fn hash_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let n = a.len().min(b.len());
    match a.get(..n).cmp(&b.get(..n)) {
        std::cmp::Ordering::Equal => b.len().cmp(&a.len()),
        other => other,
    }
}

/// Whether the root has a signature stream (either kind).
pub(crate) fn is_signed(cf: &CompoundFile<File>) -> Result<bool, SignError> {
    guarded(
        || Ok(cf.is_stream(format!("/{SIGNATURE}")) || cf.is_stream(format!("/{SIGNATURE_EX}"))),
    )
}

/// The MSI hash of `cf` (see the module doc).
pub(crate) fn digest(cf: &mut CompoundFile<File>, alg: DigestAlg) -> Result<Vec<u8>, SignError> {
    let mut h = alg.hasher();
    guarded(|| walk(cf, None, Path::new("/"), 0, h.as_mut()))?;
    Ok(h.finalize().to_vec())
}

/// Hashes the storage `dir` of `src` (see the module doc); with `dst`, also
/// writes each of its storages and streams there, with the same names, CLSIDs
/// and state bits: the one walk of the hash and of the copy, so the copy holds
/// exactly what was hashed.
fn walk(
    src: &mut CompoundFile<File>,
    mut dst: Option<&mut CompoundFile<File>>,
    dir: &Path,
    depth: usize,
    h: &mut dyn DynDigest,
) -> Result<(), SignError> {
    if depth > MAX_DEPTH {
        return Err(reject(format!("storages nested deeper than {MAX_DEPTH}")));
    }
    let skip: [Vec<u8>; 2] = [SIGNATURE, SIGNATURE_EX].map(|n| {
        n.encode_utf16()
            .chain([0])
            .flat_map(u16::to_le_bytes)
            .collect()
    });
    let mut buf = vec![0u8; 64 << 10];
    for c in children(src, dir)? {
        if depth == 0 && skip.iter().any(|sig| c.key.starts_with(sig)) {
            continue;
        }
        if c.stream {
            if c.len >= MAX_STREAM {
                return Err(reject(format!(
                    "the stream {} of {} bytes is too large to sign",
                    c.path.display(),
                    c.len
                )));
            }
            let mut s = src.open_stream(&c.path).map_err(reject)?;
            let mut out = match dst.as_deref_mut() {
                Some(d) => Some(
                    d.create_stream(&c.path)
                        .map_err(|e| unwritable(&c.path, e))?,
                ),
                None => None,
            };
            let mut total = 0u64;
            loop {
                let n = s.read(&mut buf).map_err(reject)?;
                if n == 0 {
                    break;
                }
                let piece = buf.get(..n).unwrap_or_default();
                h.update(piece);
                if let Some(o) = out.as_mut() {
                    o.write_all(piece).map_err(write_err)?;
                }
                total += n as u64;
            }
            if total != c.len {
                return Err(reject(format!(
                    "the stream {} ends after {total} of its {} bytes",
                    c.path.display(),
                    c.len
                )));
            }
            if let Some(mut o) = out {
                o.flush().map_err(write_err)?;
            }
        } else {
            if let Some(d) = dst.as_deref_mut() {
                d.create_storage(&c.path)
                    .map_err(|e| unwritable(&c.path, e))?;
            }
            walk(src, dst.as_deref_mut(), &c.path, depth + 1, h)?;
        }
    }
    let entry = src.entry(dir).map_err(reject)?;
    let clsid = *entry.clsid();
    let bits = entry.state_bits();
    if let Some(d) = dst {
        d.set_storage_clsid(dir, clsid).map_err(write_err)?;
        d.set_state_bits(dir, bits).map_err(write_err)?;
    }
    h.update(&clsid.to_bytes_le());
    Ok(())
}

/// A name MS-CFB forbids (`/`, `\\`, `:` or `!`), which some signing tools
/// write and no Windows Installer tool does: the refusal says what to do.
fn bad_name(e: impl std::fmt::Display) -> SignError {
    reject(format!(
        "{e}: MS-CFB forbids such names and Windows Installer tools never write them; \
         rebuild the package (WiX, msitools) and sign it again"
    ))
}

/// A storage or stream the new compound file cannot hold (its name).
fn unwritable(path: &Path, e: std::io::Error) -> SignError {
    match e.kind() {
        std::io::ErrorKind::InvalidInput => bad_name(format!("{}: {e}", path.display())),
        _ => write_err(e),
    }
}

/// Writes into `out`, a new empty file, a fresh compound file with every
/// storage and stream of `input` but its signature streams, and returns it,
/// open, with its MSI hash: what the signature covers, ready for
/// [`write_signature`]. The one preparation of every MSI signing,
/// whole-file or by digest.
///
/// The input is rewritten, not patched in place, as osslsigncode does: a
/// compound file whose sector chains overlap (one sector in two streams, or
/// a regular stream inside the mini stream) reads consistently, but adding a
/// stream to it in place would change what other streams read, and so the
/// hash. The new file is laid out afresh; only what the hash covers (names,
/// contents, CLSIDs) and the state bits are kept.
pub(crate) fn copy_unsigned_and_hash(
    input: &mut File,
    out: File,
    alg: DigestAlg,
) -> Result<(CompoundFile<File>, Vec<u8>), SignError> {
    input.seek(SeekFrom::Start(0))?;
    let mut src = open(input.try_clone()?)?;
    let mut h = alg.hasher();
    let dst = guarded(|| {
        let mut dst = CompoundFile::create_with_version(src.version(), out).map_err(write_err)?;
        walk(&mut src, Some(&mut dst), Path::new("/"), 0, h.as_mut())?;
        dst.flush().map_err(write_err)?;
        Ok(dst)
    })?;
    Ok((dst, h.finalize().to_vec()))
}

/// Writes `der` as the signature of `cf` (the output of
/// [`copy_unsigned_and_hash`], whose hash was `digest`), syncs the file, and
/// checks the written file: reopened, it must hash to `digest` again. A file
/// that does not is never handed out: the signature would not verify.
pub(crate) fn sign_and_check(
    mut cf: CompoundFile<File>,
    der: &[u8],
    digest: &[u8],
    alg: DigestAlg,
) -> Result<(), SignError> {
    write_signature(&mut cf, der)?;
    let file = cf.into_inner();
    file.sync_data()?;
    let mut again = open(file)?;
    if self::digest(&mut again, alg)? != digest {
        return Err(reject(
            "writing the signature changed the content the signature covers",
        ));
    }
    Ok(())
}

/// An error of `cfb` while writing: the structure's fault (422) or the disk's (500).
fn write_err(e: std::io::Error) -> SignError {
    use std::io::ErrorKind::*;
    match e.kind() {
        InvalidData | InvalidInput | UnexpectedEof | NotFound | AlreadyExists => reject(e),
        _ => SignError::Internal(e.into()),
    }
}

/// Writes out the pending changes of `cf` and syncs its file.
pub(crate) fn close(mut cf: CompoundFile<File>) -> Result<(), SignError> {
    guarded(|| cf.flush().map_err(write_err))?;
    cf.into_inner().sync_data()?;
    Ok(())
}

/// Writes `der` as the root's `\u{5}DigitalSignature` stream and flushes the file.
pub(crate) fn write_signature(cf: &mut CompoundFile<File>, der: &[u8]) -> Result<(), SignError> {
    guarded(|| {
        let mut s = cf
            .create_new_stream(format!("/{SIGNATURE}"))
            .map_err(write_err)?;
        s.write_all(der).map_err(write_err)?;
        s.flush().map_err(write_err)?;
        drop(s);
        cf.flush().map_err(write_err)
    })
}

/// The DER of the root's `\u{5}DigitalSignature` stream.
pub(crate) fn read_signature(cf: &mut CompoundFile<File>) -> Result<Vec<u8>, String> {
    guarded(|| read_signature_unguarded(cf).map_err(SignError::Rejected)).map_err(|e| e.to_string())
}

fn read_signature_unguarded(cf: &mut CompoundFile<File>) -> Result<Vec<u8>, String> {
    let path = format!("/{SIGNATURE}");
    if !cf.is_stream(&path) {
        return Err("the MSI has no \\005DigitalSignature stream".into());
    }
    let mut s = cf.open_stream(&path).map_err(|e| e.to_string())?;
    if s.len() > MAX_SIGNATURE {
        return Err(format!("a signature stream of {} bytes", s.len()));
    }
    let mut der = Vec::new();
    s.read_to_end(&mut der).map_err(|e| e.to_string())?;
    Ok(der)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compound file with streams and a storage, built with cfb.
    fn sample(dir: &Path) -> PathBuf {
        let p = dir.join("x.msi");
        let mut cf = cfb::create(&p).unwrap();
        cf.create_stream("/B").unwrap().write_all(b"bee").unwrap();
        cf.create_stream("/a").unwrap().write_all(b"ay").unwrap();
        cf.create_storage("/S").unwrap();
        cf.create_stream("/S/x")
            .unwrap()
            .write_all(&[7u8; 5000])
            .unwrap();
        cf.create_stream("/empty").unwrap();
        cf.flush().unwrap();
        p
    }

    #[test]
    fn hash_follows_the_byte_order_of_names_and_adds_clsids() {
        let tmp = tempfile::tempdir().unwrap();
        let p = sample(tmp.path());
        let mut cf = open(File::options().read(true).write(true).open(&p).unwrap()).unwrap();
        let ours = digest(&mut cf, DigestAlg::Sha256).unwrap();
        // UTF-16LE byte order: "B" (0x42) < "S" (0x53) < "a" (0x61) < "empty";
        // storage S: its stream, then its CLSID (nil); then the root's CLSID.
        let mut want = Vec::new();
        want.extend_from_slice(b"bee");
        want.extend_from_slice(&[7u8; 5000]);
        want.extend_from_slice(&[0u8; 16]);
        want.extend_from_slice(b"ay");
        want.extend_from_slice(&[0u8; 16]);
        assert_eq!(ours, DigestAlg::Sha256.hash(&want));

        // Signing adds a stream the hash leaves out...
        write_signature(&mut cf, b"\x30\x00").unwrap();
        assert!(is_signed(&cf).unwrap());
        assert_eq!(digest(&mut cf, DigestAlg::Sha256).unwrap(), ours);
        assert_eq!(read_signature(&mut cf).unwrap(), b"\x30\x00");
        drop(cf);
        // ...and the copy for a new signature leaves it out, keeping all that is hashed.
        let (copy, d) = copy_unsigned_and_hash(
            &mut File::open(&p).unwrap(),
            new_file(&tmp.path().join("y.msi")),
            DigestAlg::Sha256,
        )
        .unwrap();
        assert_eq!(d, ours);
        assert!(!is_signed(&copy).unwrap());
        sign_and_check(copy, b"\x30\x00", &d, DigestAlg::Sha256).unwrap();
    }

    fn new_file(p: &Path) -> File {
        File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(p)
            .unwrap()
    }

    /// Regression (issue 31, found by the fuzz target msi_cfb): the regular
    /// stream of 8192 bytes starts at sector 0, inside the mini stream, so a
    /// signature stream added in place grew the mini stream over it and the
    /// hash changed. The rewritten copy signs it, and the check of the
    /// written file passes.
    #[test]
    fn overlapping_sector_chains_sign_with_an_unchanged_hash() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds/msi_cfb/regression-signature-changes-hash.msi");
        let tmp = tempfile::tempdir().unwrap();
        let mut input = File::open(&src).unwrap();
        let before = digest(
            &mut open(input.try_clone().unwrap()).unwrap(),
            DigestAlg::Sha256,
        )
        .unwrap();
        let out = tmp.path().join("out.msi");
        let (cf, d) =
            copy_unsigned_and_hash(&mut input, new_file(&out), DigestAlg::Sha256).unwrap();
        assert_eq!(d, before, "the copy holds what the input holds");
        sign_and_check(cf, b"\x30\x03\x02\x01\x01", &d, DigestAlg::Sha256).unwrap();
    }

    /// The last check before an output is released fails on a file that does
    /// not hash to what was signed.
    #[test]
    fn a_written_file_that_hashes_otherwise_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let p = sample(tmp.path());
        let (cf, mut d) = copy_unsigned_and_hash(
            &mut File::open(&p).unwrap(),
            new_file(&tmp.path().join("y.msi")),
            DigestAlg::Sha256,
        )
        .unwrap();
        d[0] ^= 1;
        match sign_and_check(cf, b"\x30\x00", &d, DigestAlg::Sha256) {
            Err(SignError::Rejected(m)) => assert!(m.contains("changed the content"), "{m}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// Regression (fuzz target msi_cfb): cfb panicked in remove_stream on this
    /// corrupt mini-stream chain; whatever cfb does with it, the guard makes
    /// a panic a refusal.
    #[test]
    fn a_panic_inside_cfb_is_a_refusal() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/authenticode/testdata/cfb-remove-stream-panic.msi");
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x.msi");
        std::fs::copy(src, &p).unwrap();
        let r = copy_unsigned_and_hash(
            &mut File::open(&p).unwrap(),
            new_file(&tmp.path().join("y.msi")),
            DigestAlg::Sha256,
        );
        match r {
            Err(SignError::Rejected(m)) => assert!(m.contains("not a valid MSI"), "{m}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// osslsigncode's order: byte-wise over the shorter name with its
    /// terminator; a name that continues past a NUL comes before its prefix.
    #[test]
    fn names_with_a_nul_inside_sort_as_osslsigncode_sorts_them() {
        let key = |s: &str| -> Vec<u8> {
            s.encode_utf16()
                .chain([0])
                .flat_map(u16::to_le_bytes)
                .collect()
        };
        let mut names = vec![key("ab"), key("ab\0c"), key("a"), key("b")];
        names.sort_by(|a, b| hash_order(a, b));
        assert_eq!(names, [key("a"), key("ab\0c"), key("ab"), key("b")]);
    }

    /// Issue 25 item 13: a storage name with `\\` (other signing tools write
    /// them; MS-CFB forbids it): refused, saying what to do.
    #[test]
    fn a_name_the_compound_file_cannot_hold_is_refused_saying_what_to_do() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x.msi");
        let mut cf = cfb::create(&p).unwrap();
        cf.create_storage("/aQb").unwrap();
        cf.create_stream("/aQb/s").unwrap().write_all(b"x").unwrap();
        cf.flush().unwrap();
        drop(cf);
        let mut data = std::fs::read(&p).unwrap();
        let at = data.windows(6).position(|w| w == b"a\0Q\0b\0").unwrap();
        data[at + 2] = b'\\';
        std::fs::write(&p, &data).unwrap();
        let r = copy_unsigned_and_hash(
            &mut File::open(&p).unwrap(),
            new_file(&tmp.path().join("y.msi")),
            DigestAlg::Sha256,
        );
        match r {
            Err(SignError::Rejected(m)) => assert!(m.contains("rebuild the package"), "{m}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn not_a_compound_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("bad.msi");
        let mut data = MAGIC.to_vec();
        data.resize(1024, 0xff);
        std::fs::write(&p, &data).unwrap();
        match open(File::open(&p).unwrap()) {
            Err(SignError::Rejected(m)) => assert!(m.contains("not a valid MSI"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
