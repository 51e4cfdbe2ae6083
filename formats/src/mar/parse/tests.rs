//! Unit tests of the MAR parser: archives made by `build_unsigned`, and every kind of damage.

use super::*;

fn parse_bytes(b: &[u8]) -> Result<Layout, SignError> {
    parse(&mut io::Cursor::new(b))
}

fn reason(b: &[u8]) -> String {
    match parse_bytes(b) {
        Err(SignError::Rejected(r)) => r,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn set_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn index_offset(b: &[u8]) -> usize {
    u32::from_be_bytes(b[4..8].try_into().unwrap()) as usize
}

#[test]
fn old_style_mar_parses() {
    let m = build_unsigned(&[("a.txt", b"hello\n"), ("b", b"xyz")], None);
    let l = parse_bytes(&m).unwrap();
    assert_eq!(l.signature_block, None);
    assert_eq!(l.additional, None);
    assert_eq!(l.content, 8..17);
    assert_eq!(l.entries.len(), 2);
    assert_eq!(l.entries[1].name, b"b");
    assert_eq!(l.entries[1].offset, 14);
}

#[test]
fn product_info_mar_parses() {
    let m = build_unsigned(&[("a.txt", b"hello\n")], Some(("release", "140.0")));
    let l = parse_bytes(&m).unwrap();
    assert_eq!(
        l.signature_block,
        Some(SignatureBlock { signatures: vec![] })
    );
    let add = l.additional.clone().unwrap();
    assert_eq!(add.start, 20);
    assert_eq!(add.end, l.content.start);
}

#[test]
fn bad_magic() {
    let mut m = build_unsigned(&[("a", b"x")], None);
    m[0] = b'Z';
    assert!(reason(&m).contains("bad magic"));
    assert!(reason(b"MA").contains("truncated"));
    assert!(reason(b"PK\x03\x04 this is a zip").contains("bad magic"));
}

#[test]
fn index_offset_past_end() {
    let mut m = build_unsigned(&[("a", b"x")], None);
    set_u32(&mut m, 4, 0x7fff_ffff);
    assert!(reason(&m).contains("past the end"), "{}", reason(&m));
    set_u32(&mut m, 4, 3);
    assert!(reason(&m).contains("into the header"));
}

#[test]
fn index_size_past_end_and_trailing_bytes() {
    let m = build_unsigned(&[("a", b"x")], None);
    let at = index_offset(&m);
    let mut big = m.clone();
    set_u32(&mut big, at, 0xffff_fff0);
    assert!(
        reason(&big).contains("runs past the end"),
        "{}",
        reason(&big)
    );
    let mut trailing = m.clone();
    trailing.extend_from_slice(b"junk");
    assert!(reason(&trailing).contains("after the index"));
}

#[test]
fn entry_offsets_past_the_content() {
    let m = build_unsigned(&[("a", b"xyz")], None);
    let at = index_offset(&m) + 4;
    let mut past = m.clone();
    set_u32(&mut past, at, 0xffff_0000);
    assert!(
        reason(&past).contains("runs past the start of the index"),
        "{}",
        reason(&past)
    );
    let mut long = m.clone();
    set_u32(&mut long, at + 4, 100);
    assert!(reason(&long).contains("runs past the start of the index"));
    let mut early = m.clone();
    set_u32(&mut early, at, 2);
    assert!(reason(&early).contains("inside the MAR header"));
}

#[test]
fn overlapping_entries() {
    let m = build_unsigned(&[("a", b"abcd"), ("b", b"efgh")], None);
    // Entry b's offset: after a's 12-byte header and "a\0".
    let at = index_offset(&m) + 4 + 14;
    let mut o = m.clone();
    set_u32(&mut o, at, 10);
    assert!(reason(&o).contains("overlap"), "{}", reason(&o));
}

#[test]
fn huge_counts() {
    let m = build_unsigned(&[("a", b"x")], Some(("c", "1")));
    // Signature count.
    let mut sigs = m.clone();
    set_u32(&mut sigs, 16, 0xffff_ffff);
    assert!(
        reason(&sigs).contains("signatures (at most 8"),
        "{}",
        reason(&sigs)
    );
    // Additional-section count.
    let mut add = m.clone();
    set_u32(&mut add, 20, 0x1000_0000);
    assert!(
        reason(&add).contains("additional sections (at most"),
        "{}",
        reason(&add)
    );
    // An additional section larger than the room before the content.
    let mut sec = m.clone();
    set_u32(&mut sec, 24, 0x7fff_0000);
    assert!(
        reason(&sec).contains("overlaps the first entry"),
        "{}",
        reason(&sec)
    );
    // A huge signature length.
    let mut one = m.clone();
    set_u32(&mut one, 16, 1);
    set_u32(&mut one, 24, 0x7fff_0000);
    assert!(reason(&one).contains("signature 0 is"), "{}", reason(&one));
    // A huge index size.
    let mut idx = build_unsigned(&[("a", b"x")], None);
    let at = index_offset(&idx);
    set_u32(&mut idx, at, u32::MAX);
    assert!(reason(&idx).contains("past the end"));
}

#[test]
fn too_many_entries() {
    let names: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("{i:x}")).collect();
    let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b""[..])).collect();
    let m = build_unsigned(&entries, None);
    assert!(reason(&m).contains("index entries"), "{}", reason(&m));
    let ok = build_unsigned(&entries[1..], None);
    assert_eq!(parse_bytes(&ok).unwrap().entries.len(), MAX_ENTRIES);
}

#[test]
fn wrong_total_size_and_no_entries() {
    let mut m = build_unsigned(&[("a", b"x")], Some(("c", "1")));
    m[15] ^= 1;
    assert!(reason(&m).contains("header says the file is"));
    let empty = build_unsigned(&[], None);
    assert!(reason(&empty).contains("no entries"));
}

#[test]
fn index_names() {
    let m = build_unsigned(&[("a", b"x")], None);
    let mut no_nul = m.clone();
    *no_nul.last_mut().unwrap() = b'z';
    assert!(reason(&no_nul).contains("no NUL"));
    let mut cut = m.clone();
    let at = index_offset(&cut);
    set_u32(&mut cut, at, 5);
    cut.truncate(at + 4 + 5);
    assert!(reason(&cut).contains("truncated"), "{}", reason(&cut));
}

#[test]
fn oversized_file() {
    // A sparse file: the size check comes before any read.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.mar");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(MAX_MAR_SIZE + 1).unwrap();
    let r = parse(&mut std::fs::File::open(&p).unwrap());
    assert!(matches!(r, Err(SignError::Rejected(m)) if m.contains("500 MiB")));
}

#[test]
fn every_truncation_is_rejected_without_panic() {
    let m = build_unsigned(&[("a.txt", b"hello"), ("b", b"")], Some(("release", "1.0")));
    for n in 0..m.len() {
        assert!(
            parse_bytes(&m[..n]).is_err(),
            "prefix of {n} bytes accepted"
        );
    }
    for i in 0..m.len() {
        for bit in [0x01u8, 0x80] {
            let mut x = m.clone();
            x[i] ^= bit;
            let _ = parse_bytes(&x);
        }
    }
}
