//! Thin entry points for the `cargo fuzz` targets in `formats/fuzz/`.
//!
//! The parsers are crate-private; these wrappers hand them fuzzer bytes and
//! check the invariants their result types document, panicking (which the
//! fuzzer reports) when one does not hold. Not an API: hidden from the docs,
//! never called by the signers, and it adds no parsing of its own.
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::io::{Cursor, Seek, SeekFrom, Write};
use std::path::Path;

use crate::SignError;

/// `data` in an unnamed temporary file, rewound, for parsers that take a `File`.
fn temp_file(data: &[u8]) -> std::io::Result<std::fs::File> {
    let mut f = tempfile::tempfile()?;
    f.write_all(data)?;
    f.seek(SeekFrom::Start(0))?;
    Ok(f)
}

/// MAR: parses the layout and checks its documented invariants.
pub fn mar_parse(data: &[u8]) -> Result<(), SignError> {
    let l = crate::mar::parse::parse(&mut Cursor::new(data))?;
    assert_eq!(l.file_len, data.len() as u64);
    assert!(!l.entries.is_empty(), "a parsed MAR has entries");
    assert!(l.content.start <= l.content.end && l.content.end <= l.file_len);
    let mut spans: Vec<(u64, u64)> = l
        .entries
        .iter()
        .map(|e| (u64::from(e.offset), u64::from(e.offset) + u64::from(e.len)))
        .collect();
    spans.sort_unstable();
    let mut last_end = l.content.start;
    for ((start, end), e) in spans.iter().zip(&l.entries) {
        assert!(
            *start >= last_end,
            "entries overlap or start before the content"
        );
        assert!(*end <= l.content.end, "an entry runs past the content");
        assert!(!e.name.is_empty() && !e.name.contains(&0));
        last_end = *end;
    }
    if let Some(block) = &l.signature_block {
        for s in &block.signatures {
            assert!(s.offset + u64::from(s.len) <= l.file_len);
        }
    }
    Ok(())
}

/// APK: reads and validates the ZIP structure (EOCD, central directory,
/// local headers).
pub fn apk_zip(data: &[u8]) -> Result<(), SignError> {
    let mut f = temp_file(data)?;
    let archive = crate::apk::zip::read_archive(&mut f, crate::apk::v1::is_signature_file)?;
    for e in &archive.entries {
        assert!(
            e.data_offset <= data.len() as u64,
            "entry data starts past the end"
        );
    }
    Ok(())
}

/// APK: the API range of a binary AndroidManifest.xml (`<uses-sdk>`).
pub fn apk_manifest(data: &[u8]) -> Result<(), SignError> {
    let r = crate::apk::manifest::sdk_range(data)?;
    assert!(r.min >= 1, "minSdkVersion below 1");
    Ok(())
}

/// Authenticode: parses the PE headers, then hashes the image the way
/// signing does (the exact Authenticode ranges).
pub fn pe_authenticode(data: &[u8]) -> Result<(), SignError> {
    use crate::authenticode::{digest, pe};
    let mut f = temp_file(data)?;
    let l = pe::parse(&mut f, data.len() as u64)?;
    assert!(
        l.headers.len() as u64 <= l.content_len,
        "headers longer than the image"
    );
    assert!(l.content_len <= data.len() as u64);
    assert!(l.checksum_offset + 4 <= l.headers.len());
    assert!(l.cert_dir_offset + 8 <= l.headers.len());
    if let Some((off, len)) = l.existing_signature {
        assert_eq!(off, l.content_len);
        assert_eq!(off + len, data.len() as u64);
    }
    let copied = digest::copy_and_hash(&mut f, &l, crate::signed_data::DigestAlg::Sha256, None)?;
    assert_eq!(copied.digest.len(), 32);
    assert_eq!(copied.table_offset % 8, 0);
    Ok(())
}

/// Authenticode MSI: opens the compound file, copies it the way signing does
/// (a fresh compound file without its signature streams, hashed on the way),
/// adds a signature stream, and checks that the written file hashes the same
/// and that the new stream reads back.
pub fn msi_cfb(data: &[u8]) -> Result<(), SignError> {
    use crate::authenticode::msi;
    use crate::signed_data::DigestAlg;
    let mut f = temp_file(data)?;
    let mut cf = msi::open(f.try_clone()?)?;
    if msi::is_signed(&cf)? {
        let _ = msi::read_signature(&mut cf);
    }
    drop(cf);
    let (mut cf, before) =
        msi::copy_unsigned_and_hash(&mut f, tempfile::tempfile()?, DigestAlg::Sha256)?;
    msi::write_signature(&mut cf, b"\x30\x03\x02\x01\x01")?;
    // What the signer checks before it releases an output (msi::sign_and_check):
    // the written file, reopened, hashes as the copy did.
    let mut again = msi::open(cf.into_inner()).expect("our own compound file does not open");
    assert!(msi::is_signed(&again)?, "no signature after writing one");
    let after = msi::digest(&mut again, DigestAlg::Sha256)?;
    assert_eq!(
        before, after,
        "adding the signature stream changed the hash"
    );
    assert_eq!(
        msi::read_signature(&mut again).as_deref(),
        Ok(b"\x30\x03\x02\x01\x01".as_slice())
    );
    Ok(())
}

/// Authenticode cabinets: parses the header, copies the cabinet in its signed
/// layout with a dummy signature, and checks that the copy parses as signed
/// with the same hash.
pub fn cab_parse(data: &[u8]) -> Result<(), SignError> {
    use crate::authenticode::cab;
    use crate::signed_data::DigestAlg;
    let mut f = temp_file(data)?;
    let l = cab::parse(&mut f, data.len() as u64)?;
    let mut out = tempfile::tempfile()?;
    let (h, body) = cab::copy_and_hash(&mut f, &l, DigestAlg::Sha256, Some(&mut out))?;
    let padded = cab::append_signature(&mut out, &[0x30, 0x00])?;
    cab::patch_signature_size(&mut out, body, padded)?;
    let len = out.seek(SeekFrom::End(0))?;
    let l2 = cab::parse(&mut out, len).expect("our own signed layout does not parse");
    assert_eq!(l2.signature, Some((body, 8)));
    let (h2, _) = cab::copy_and_hash(&mut out, &l2, DigestAlg::Sha256, None)?;
    assert_eq!(h, h2, "the signed layout hashes differently");
    Ok(())
}

/// Authenticode MSIX/APPX: reads the ZIP structure and the block map, then
/// copies the package with a dummy signature and checks that the copy
/// parses as signed, gives the signature back and hashes the same.
pub fn appx_zip(data: &[u8]) -> Result<(), SignError> {
    use crate::authenticode::appx;
    let mut f = temp_file(data)?;
    let p = appx::parse(&mut f, data.len() as u64)?;
    for e in &p.archive.entries {
        assert!(e.data_offset() + e.csize <= p.archive.cd_offset);
    }
    let mut out = tempfile::tempfile()?;
    let h = appx::copy_and_hash(&mut f, &p, p.alg, true, Some(&mut out))?;
    let blob = h.blob.clone();
    appx::finish(&mut out, &p, h, &[0x30, 0x00])?;
    let len = out.seek(SeekFrom::End(0))?;
    let p2 = appx::parse(&mut out, len).expect("our own signed package does not parse");
    assert!(p2.signed);
    assert_eq!(appx::read_signature(&mut out, &p2), Ok(vec![0x30, 0x00]));
    let none: Option<&mut std::io::Sink> = None;
    let h2 = appx::copy_and_hash(&mut out, &p2, p2.alg, false, none)?;
    assert_eq!(h2.blob, blob, "the signed package hashes differently");
    Ok(())
}

/// Authenticode scripts: finds the signature block (in each comment
/// syntax), hashes the text, and reads an existing block back.
pub fn script_scan(data: &[u8]) -> Result<(), SignError> {
    use crate::authenticode::script::{self, Syntax};
    use crate::signed_data::DigestAlg;
    let mut f = temp_file(data)?;
    let _ = script::syntax_of_signed(&mut f)?;
    let mut last = Ok(());
    for syntax in [Syntax::Hash, Syntax::Xml, Syntax::C] {
        match script::scan(&mut f, data.len() as u64, syntax) {
            Ok(l) => {
                if let Some(at) = l.signature_at {
                    assert!(at < data.len() as u64 && at > 0);
                    let _ = script::read_signature(&mut f, &l, syntax);
                }
                let h = script::copy_and_hash(&mut f, &l, DigestAlg::Sha256, None)?;
                assert_eq!(h.len(), 32);
            }
            Err(e) => last = Err(e),
        }
    }
    last
}

/// Authenticode catalogs: parses the PKCS#7 and its CTL content.
pub fn cat_parse(data: &[u8]) -> Result<(), SignError> {
    let c = crate::authenticode::cat::parse_bytes(data.to_vec())?;
    assert_eq!(c.content.first(), Some(&0x30));
    Ok(())
}

/// Authenticode: parses a DER SignedData as `verify` does.
pub fn authenticode_pkcs7(data: &[u8]) -> Result<(), String> {
    let p = crate::authenticode::pkcs7::parse_authenticode(data)?;
    let _ = (p.alg, p.image_hash.len());
    Ok(())
}

/// Apple: unpacks a `.tar.gz` bundle into the empty directory `dest` with
/// small limits, checks nothing landed outside it, then lets apple-codesign
/// read the bundle as it does before signing it.
pub fn apple_tarball(data: &[u8], dest: &Path) -> Result<String, SignError> {
    let input = tempfile::NamedTempFile::new()?;
    std::fs::write(input.path(), data)?;
    let limits = crate::apple::tarball::Limits {
        max_entries: 64,
        max_bytes: 1 << 20,
        max_code_file: 1 << 20,
    };
    let app = crate::apple::tarball::unpack(input.path(), dest, &limits)?;
    let root = dest.join(&app);
    let meta = std::fs::symlink_metadata(&root)?;
    assert!(meta.is_dir(), "the returned .app is not a directory");
    assert!(
        app.ends_with(".app") && !app.contains('/'),
        "odd .app name {app:?}"
    );
    // Beyond the names: the bundle as apple-codesign reads it before it signs
    // (Info.plist, main executable, nested bundles), under the panic guard
    // signing runs under.
    let _ = crate::apple::check::guard("apple-codesign", || {
        let mut signer = apple_codesign::BundleSigner::new_from_path(&root)?;
        signer.collect_nested_bundles()?;
        Ok(())
    });
    Ok(app)
}

/// GPG: parses a key file (armoured or binary) and selects the key gpg would
/// sign with, as `needs_passphrase` and `open` do; an unprotected key is also
/// unlocked (the sign + verify self-check). Whether the key is protected.
pub fn gpg_key(data: &[u8]) -> Result<bool, SignError> {
    let r = crate::gpg::check_key_bytes(data);
    if let Err(e) = &r {
        assert!(matches!(e, SignError::Key(_)), "not a key error: {e:?}");
    }
    r
}

/// Apple: what the signer does with an input before apple-codesign signs
/// it: the kind from its magic numbers, then the Mach-O parse and
/// signing-capability check (or the DMG trailer check). Panics inside
/// apple-codesign are caught there, as in production ([`crate::apple::check`]).
pub fn apple_macho(data: &[u8]) -> Result<crate::apple::InputKind, SignError> {
    use crate::apple::{check, detect, InputKind};
    let input = tempfile::NamedTempFile::new()?;
    std::fs::write(input.path(), data)?;
    let kind = detect(input.path())?;
    match kind {
        InputKind::MachO => {
            assert!(
                check::is_macho_magic(data),
                "detected as Mach-O without its magic"
            );
            check::precheck_macho(data)?;
        }
        InputKind::Dmg => check::precheck_dmg(input.path())?,
        InputKind::TarGz => assert!(data.starts_with(&[0x1f, 0x8b])),
    }
    Ok(kind)
}

/// RPM: reads the lead and both headers ([`crate::rpm::read_headers`]), checks
/// every entry's data lies in its header, and that the signature header the
/// signer would write parses back with the same entries plus the signature.
pub fn rpm_headers(data: &[u8]) -> Result<(), SignError> {
    use crate::rpm::header;
    let h = crate::rpm::read_headers(&mut &data[..])?;
    for hd in [&h.sig, &h.main] {
        for e in &hd.entries {
            assert!(
                e.range.end <= hd.data().len(),
                "entry data outside its header"
            );
        }
    }
    let written = crate::rpm::new_sig_header(&h, 268, b"not really a signature");
    let (back, rest) = header::parse(&written, crate::rpm::SIG_LIMITS, "rewritten")
        .unwrap_or_else(|e| panic!("the signature header we write does not parse: {e}"));
    assert!(rest.is_empty());
    assert!(back.has_region(header::REGION_SIGNATURES));
    assert_eq!(
        back.bytes(back.get(268).expect("the new signature")),
        b"not really a signature"
    );
    Ok(())
}

/// The transparency log's parsers of remote input: a tile path (what a
/// client asks the server for), a signed note and a checkpoint (what
/// signtool reads from a host), an entry bundle. Every input is tried as
/// each; whatever parses must round-trip.
pub fn tlog_parse(data: &[u8]) -> Result<(), SignError> {
    use crate::tlog::{tile, Checkpoint, NoteKey};
    let text = String::from_utf8_lossy(data);
    if let Some(t) = tile::Tile::parse(&text) {
        assert_eq!(
            t.path(),
            text,
            "a parsed tile path is its canonical spelling"
        );
        assert!(!text.contains("..") && !text.contains("//") && !text.starts_with('/'));
    }
    if let Ok(cp) = Checkpoint::parse(&text) {
        assert_eq!(Checkpoint::parse(&cp.text()).as_ref(), Ok(&cp));
    }
    // A fixed key: a note it signed must open, and no input may panic.
    let key = NoteKey::from_seed("fuzz.example/log", &[7u8; 32]).map_err(SignError::Config)?;
    let _ = key.verifier().open(&text);
    if text.ends_with('\n') {
        if let Ok(note) = key.sign(&text) {
            assert_eq!(key.verifier().open(&note), Ok(&*text));
        }
    }
    if let Some(entries) = tile::split_bundle(data) {
        let mut again = Vec::new();
        for e in &entries {
            assert!(tile::push_entry(&mut again, e));
        }
        assert_eq!(again, data, "a bundle round-trips");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds")
            .join(target);
        let mut out: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let data = std::fs::read(&p).unwrap();
                (p, data)
            })
            .collect();
        out.sort();
        assert!(!out.is_empty(), "no seeds in {}", dir.display());
        out
    }

    /// The committed seeds are valid inputs, so the fuzzer starts deep in each parser.
    #[test]
    fn seeds_parse() {
        for (p, d) in seeds("mar_parse") {
            super::mar_parse(&d).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
        for (p, d) in seeds("apk_zip") {
            super::apk_zip(&d).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
        for (p, d) in seeds("apk_manifest") {
            super::apk_manifest(&d).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
        for (p, d) in seeds("pe_authenticode") {
            super::pe_authenticode(&d).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
        for (p, d) in seeds("rpm_headers") {
            super::rpm_headers(&d).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
        for (p, d) in seeds("msi_cfb") {
            super::msi_cfb(&d).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
        for (p, d) in seeds("cab_parse") {
            super::cab_parse(&d).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
        for (p, d) in seeds("appx_zip") {
            super::appx_zip(&d).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
        for (p, d) in seeds("tlog_parse") {
            super::tlog_parse(&d).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
        for (p, d) in seeds("script_scan") {
            super::script_scan(&d).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
        for (p, d) in seeds("cat_parse") {
            super::cat_parse(&d).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
        for (p, d) in seeds("authenticode_pkcs7") {
            super::authenticode_pkcs7(&d).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
        for (p, d) in seeds("gpg_key") {
            let protected = super::gpg_key(&d).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            assert_eq!(protected, !name.starts_with("plain"), "{name}");
        }
        for (p, d) in seeds("apple_macho") {
            let kind = super::apple_macho(&d).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert_eq!(kind, crate::apple::InputKind::MachO, "{}", p.display());
        }
        for (p, d) in seeds("apple_tarball") {
            let dest = tempfile::tempdir().unwrap();
            let app = super::apple_tarball(&d, dest.path())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert_eq!(app, "Tiny.app");
        }
    }
}
