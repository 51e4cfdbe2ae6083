use std::io::Write as _;

use super::*;

/// An uncompressed cabinet with one folder, one file and one data block;
/// `next`: with next-cabinet names.
pub(crate) fn tiny_cab(content: &[u8], next: bool) -> Vec<u8> {
    let names: &[u8] = if next { b"next.cab\0disk2\0" } else { b"" };
    let file_entry_len = 16 + b"hello.txt\0".len();
    let coff_files = FIXED + names.len() + 8;
    let data_at = coff_files + file_entry_len;
    let total = data_at + 8 + content.len();
    let mut v = Vec::new();
    v.extend_from_slice(b"MSCF");
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&(total as u32).to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&(coff_files as u32).to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&[3, 1]); // version 1.3
    v.extend_from_slice(&1u16.to_le_bytes()); // folders
    v.extend_from_slice(&1u16.to_le_bytes()); // files
    v.extend_from_slice(&(if next { FLAG_NEXT_CABINET } else { 0 }).to_le_bytes());
    v.extend_from_slice(&0x1234u16.to_le_bytes()); // setID
    v.extend_from_slice(&0u16.to_le_bytes()); // iCabinet
    v.extend_from_slice(names);
    // CFFOLDER: first data block, 1 block, no compression.
    v.extend_from_slice(&(data_at as u32).to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&0u16.to_le_bytes());
    // CFFILE
    v.extend_from_slice(&(content.len() as u32).to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0u16.to_le_bytes());
    v.extend_from_slice(&[0x21, 0x5b, 0x00, 0x60, 0x20, 0x00]); // date, time, attribs
    v.extend_from_slice(b"hello.txt\0");
    // CFDATA (checksum 0: none)
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&(content.len() as u16).to_le_bytes());
    v.extend_from_slice(&(content.len() as u16).to_le_bytes());
    v.extend_from_slice(content);
    assert_eq!(v.len(), total);
    v
}

fn file(data: &[u8]) -> File {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(data).unwrap();
    f
}

fn rejected(data: &[u8]) -> String {
    match parse(&mut file(data), data.len() as u64) {
        Err(SignError::Rejected(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Signs `data` with `der` as the signature; returns the output.
fn sign(data: &[u8], der: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut f = file(data);
    let l = parse(&mut f, data.len() as u64).unwrap();
    let mut out = tempfile::tempfile().unwrap();
    let mut w = std::io::BufWriter::new(&mut out);
    let (h, body) = copy_and_hash(&mut f, &l, DigestAlg::Sha256, Some(&mut w)).unwrap();
    let padded = append_signature(&mut w, der).unwrap();
    w.flush().unwrap();
    drop(w);
    patch_signature_size(&mut out, body, padded).unwrap();
    out.seek(SeekFrom::Start(0)).unwrap();
    let mut v = Vec::new();
    out.read_to_end(&mut v).unwrap();
    (v, h)
}

#[test]
fn signing_inserts_the_reserve_and_the_hash_survives() {
    for next in [false, true] {
        let cab = tiny_cab(b"hello, cabinet\n", next);
        let (signed, h) = sign(&cab, b"\x30\x03\x02\x01\x07");
        assert_eq!(signed.len(), cab.len() + 24 + 8);
        assert_eq!(
            u16_at(&signed, 30) & FLAG_RESERVE_PRESENT,
            FLAG_RESERVE_PRESENT
        );
        assert_eq!(u32_at(&signed, 8) as usize, cab.len() + 24);
        assert_eq!(u32_at(&signed, 44) as usize, cab.len() + 24);
        assert_eq!(u32_at(&signed, 48), 8);
        // The data block moved by 24 bytes and the folder entry points at it.
        let folder_at = SIGNED_HEADER + if next { 15 } else { 0 };
        let data_at = u32_at(&signed, folder_at) as usize;
        assert_eq!(&signed[data_at + 8..data_at + 8 + 15], b"hello, cabinet\n");

        let mut g = file(&signed);
        let l = parse(&mut g, signed.len() as u64).unwrap();
        assert_eq!(l.signature, Some(((cab.len() + 24) as u64, 8)));
        assert_eq!(
            read_signature(&mut g, &l).unwrap(),
            b"\x30\x03\x02\x01\x07\0\0\0"
        );
        assert_eq!(
            copy_and_hash(&mut g, &l, DigestAlg::Sha256, None)
                .unwrap()
                .0,
            h
        );
        // Signing again replaces the signature and keeps the layout.
        let (again, h2) = sign(&signed, &[0x30, 0x00]);
        assert_eq!(h2, h);
        assert_eq!(again.len(), signed.len());
        assert_eq!(&again[..48], &signed[..48]);
    }
}

#[test]
fn bad_cabinets_are_refused_with_the_reason() {
    let cab = tiny_cab(b"x", false);
    assert!(rejected(&cab[..20]).contains("shorter than a cabinet header"));
    let mut v = cab.clone();
    v[4] = 1;
    assert!(rejected(&v).contains("reserved1"));
    let mut v = cab.clone();
    v[30] |= FLAG_PREV_CABINET as u8;
    assert!(rejected(&v).contains("multi-volume"));
    let mut v = cab.clone();
    v[16] += 1;
    assert!(rejected(&v).contains("coffFiles"));
    let mut v = cab.clone();
    v[26] = 0xff;
    assert!(rejected(&v).contains("folder entries"));
    assert!(rejected(&cab[..cab.len() - 1]).contains("cbCabinet"));
    let mut v = cab.clone();
    v[30] |= FLAG_RESERVE_PRESENT as u8;
    v.splice(36..36, [0u8; 24]);
    assert!(rejected(&v).contains("reserves other than"));
    let (mut signed, _) = sign(&cab, &[0x30, 0x00]);
    signed.push(0);
    assert!(rejected(&signed).contains("does not describe a signature"));
}
