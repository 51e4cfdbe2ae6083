use std::io::Write;

use super::*;

/// A stored ZIP of `files`, written the plain way (no descriptors, no ZIP64).
fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut cd = Vec::new();
    for (name, data) in files {
        let mut crc = Crc::new();
        crc.update(data);
        let e = Entry {
            name: name.as_bytes().to_vec(),
            version_made_by: 20,
            version_needed: 20,
            flags: 0,
            method: 0,
            time: 0,
            date: 0x21,
            crc: crc.sum(),
            csize: data.len() as u64,
            usize: data.len() as u64,
            internal_attr: 0,
            external_attr: 0,
            comment: Vec::new(),
            offset: 0,
            local: Vec::new(),
            descriptor: false,
        };
        let offset = out.len() as u64;
        out.extend(zip::local_header(&e, e.crc, e.csize as u32, e.usize as u32));
        out.extend_from_slice(data);
        zip::push_cd_record(&mut cd, &e, offset);
    }
    let cd_offset = out.len() as u64;
    out.extend_from_slice(&cd);
    out.extend(zip::end_records(
        false,
        files.len() as u64,
        cd.len() as u64,
        cd_offset,
    ));
    out
}

const CT: &[u8] = b"<?xml version=\"1.0\"?><Types xmlns=\"x\"><Default Extension=\"xml\" ContentType=\"t\"/></Types>";

fn block_map(method: &str) -> Vec<u8> {
    format!("<?xml version=\"1.0\"?><BlockMap xmlns=\"x\" HashMethod=\"{method}\"></BlockMap>")
        .into_bytes()
}

fn package() -> Vec<u8> {
    let bm = block_map("http://www.w3.org/2001/04/xmlenc#sha256");
    zip_of(&[
        ("AppxManifest.xml", b"<Package/>"),
        ("payload.bin", &[7u8; 1000]),
        ("AppxBlockMap.xml", &bm),
        ("[Content_Types].xml", CT),
    ])
}

fn file_of(dir: &std::path::Path, name: &str, data: &[u8]) -> (File, u64) {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().write_all(data).unwrap();
    (File::open(&p).unwrap(), data.len() as u64)
}

/// Signs `input` with the fake SignedData `der`: (output, blob signed).
fn sign(dir: &std::path::Path, input: &[u8], der: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (mut f, len) = file_of(dir, "in", input);
    let p = parse(&mut f, len).unwrap();
    let mut out = Vec::new();
    let h = copy_and_hash(&mut f, &p, p.alg, true, Some(&mut out)).unwrap();
    let blob = h.blob.clone();
    finish(&mut out, &p, h, der).unwrap();
    (out, blob)
}

fn rejected(r: Result<Package, SignError>) -> String {
    match r {
        Err(SignError::Rejected(m)) => m,
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_signed_package_hashes_to_the_signed_blob_and_holds_one_signature() {
    let tmp = tempfile::tempdir().unwrap();
    let (signed, blob) = sign(tmp.path(), &package(), b"first");
    assert!(blob.starts_with(b"APPX"));
    assert_eq!(
        blob.len(),
        4 + 4 * (4 + 32),
        "no AXCI without CodeIntegrity.cat"
    );
    let (mut f, len) = file_of(tmp.path(), "out", &signed);
    let p = parse(&mut f, len).unwrap();
    assert!(p.signed && !p.bundle);
    assert_eq!(read_signature(&mut f, &p).unwrap(), b"first");
    let none: Option<&mut Vec<u8>> = None;
    let again = copy_and_hash(&mut f, &p, p.alg, false, none).unwrap();
    assert_eq!(again.blob, blob, "a verifier's hashes are the ones signed");

    // Re-signing replaces the signature: one p7x entry, one Override.
    let (resigned, blob2) = sign(tmp.path(), &signed, b"second");
    assert_eq!(blob2, blob, "same content, same hashes");
    let (mut f, len) = file_of(tmp.path(), "out2", &resigned);
    let p = parse(&mut f, len).unwrap();
    let sigs = p.archive.entries.iter().filter(|e| e.name == SIGNATURE);
    assert_eq!(sigs.count(), 1);
    assert_eq!(read_signature(&mut f, &p).unwrap(), b"second");
    let ct = p.entry(CONTENT_TYPES).unwrap().clone();
    let mut xml = Vec::new();
    read_content(&mut f, &ct, &mut |c| xml.extend_from_slice(c)).unwrap();
    assert_eq!(
        xml.windows(SIGNATURE_OVERRIDE.len())
            .filter(|w| *w == SIGNATURE_OVERRIDE)
            .count(),
        1
    );
}

#[test]
fn an_existing_signature_override_is_kept_whatever_its_spelling() {
    let tmp = tempfile::tempdir().unwrap();
    let ct = b"<Types><Override PartName=\"/appxsignature.P7X\" ContentType=\"application/vnd.ms-appx.signature\" /></Types>";
    let bm = block_map("http://www.w3.org/2001/04/xmlenc#sha256");
    let z = zip_of(&[
        ("AppxManifest.xml", b"<Package/>"),
        ("AppxBlockMap.xml", &bm),
        ("[Content_Types].xml", ct),
    ]);
    let (signed, _) = sign(tmp.path(), &z, b"sig");
    let (mut f, len) = file_of(tmp.path(), "o", &signed);
    let p = parse(&mut f, len).unwrap();
    let e = p.entry(CONTENT_TYPES).unwrap().clone();
    let mut xml = Vec::new();
    read_content(&mut f, &e, &mut |c| xml.extend_from_slice(c)).unwrap();
    assert_eq!(xml, ct);
}

#[test]
fn an_old_signature_anywhere_is_dropped_and_ours_goes_last() {
    let tmp = tempfile::tempdir().unwrap();
    let bm = block_map("http://www.w3.org/2001/04/xmlenc#sha256");
    let z = zip_of(&[
        ("AppxManifest.xml", b"<Package/>"),
        ("AppxSignature.p7x", b"PKCXold"),
        ("AppxBlockMap.xml", &bm),
        ("[Content_Types].xml", CT),
    ]);
    let (signed, blob) = sign(tmp.path(), &z, b"new");
    let (mut f, len) = file_of(tmp.path(), "o", &signed);
    let p = parse(&mut f, len).unwrap();
    let names: Vec<_> = p.archive.entries.iter().map(|e| e.shown()).collect();
    assert_eq!(
        names,
        [
            "AppxManifest.xml",
            "AppxBlockMap.xml",
            "[Content_Types].xml",
            "AppxSignature.p7x"
        ]
    );
    assert_eq!(read_signature(&mut f, &p).unwrap(), b"new");
    let none: Option<&mut Vec<u8>> = None;
    assert_eq!(
        copy_and_hash(&mut f, &p, p.alg, false, none).unwrap().blob,
        blob
    );
}

#[test]
fn a_modified_entry_changes_the_hashes() {
    let tmp = tempfile::tempdir().unwrap();
    let (signed, blob) = sign(tmp.path(), &package(), b"sig");
    let at = signed.windows(4).position(|w| w == [7, 7, 7, 7]).unwrap();
    let mut tampered = signed.clone();
    tampered[at] = 8;
    let (mut f, len) = file_of(tmp.path(), "t", &tampered);
    let p = parse(&mut f, len).unwrap();
    let none: Option<&mut Vec<u8>> = None;
    let h = copy_and_hash(&mut f, &p, p.alg, false, none).unwrap();
    assert_ne!(h.blob, blob);
}

#[test]
fn bundles_and_code_integrity_are_recognized() {
    let tmp = tempfile::tempdir().unwrap();
    let bm = block_map("http://www.w3.org/2001/04/xmldsig-more#sha384");
    let z = zip_of(&[
        ("AppxMetadata/AppxBundleManifest.xml", b"<Bundle/>"),
        ("AppxMetadata/CodeIntegrity.cat", b"cat"),
        ("AppxBlockMap.xml", &bm),
        ("[Content_Types].xml", CT),
    ]);
    let (_, blob) = sign(tmp.path(), &z, b"x");
    assert_eq!(blob.len(), 4 + 5 * (4 + 48));
    let (mut f, len) = file_of(tmp.path(), "b", &z);
    let p = parse(&mut f, len).unwrap();
    assert!(p.bundle);
    assert_eq!(p.alg, DigestAlg::Sha384);
    assert!(sip_info(&p).windows(16).any(|w| w == BUNDLE_UUID));
}

#[test]
fn malformed_packages_are_refused_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let good = package();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (good[..good.len() - 5].to_vec(), "end of central directory"),
        (b"PK\x03\x04".to_vec(), "too short"),
        (
            zip_of(&[("AppxManifest.xml", b"m"), ("[Content_Types].xml", CT)]),
            "no AppxBlockMap.xml",
        ),
        (
            zip_of(&[("a.txt", b"m"), ("AppxBlockMap.xml", b"x")]),
            "no AppxManifest.xml",
        ),
        (
            zip_of(&[
                ("AppxManifest.xml", b"m"),
                ("[Content_Types].xml", CT),
                (
                    "AppxBlockMap.xml",
                    &block_map("http://www.w3.org/2000/09/xmldsig#sha1"),
                ),
            ]),
            "is not SHA-256",
        ),
        (
            zip_of(&[("AppxManifest.xml", b"m"), ("AppxManifest.xml", b"n")]),
            "appears twice",
        ),
    ];
    for (i, (data, want)) in cases.iter().enumerate() {
        let (mut f, len) = file_of(tmp.path(), &format!("c{i}"), data);
        let m = rejected(parse(&mut f, len));
        assert!(m.contains(want), "case {i}: {m}");
    }
    // A local header that disagrees with the central directory.
    let mut bad = good.clone();
    let at = bad.windows(11).position(|w| w == b"payload.bin").unwrap();
    bad[at] = b'P';
    let (mut f, len) = file_of(tmp.path(), "n", &bad);
    let m = rejected(parse(&mut f, len));
    assert!(m.contains("does not match the central directory"), "{m}");
}
