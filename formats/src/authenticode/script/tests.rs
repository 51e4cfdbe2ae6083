use std::io::Write as _;

use super::*;

fn file(data: &[u8]) -> File {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(data).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn rejected(r: Result<Layout, SignError>) -> String {
    match r {
        Err(SignError::Rejected(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn the_name_chooses_the_comment_syntax() {
    assert_eq!(syntax_for("Install.PS1"), Some(Syntax::Hash));
    assert_eq!(syntax_for("m.psm1"), Some(Syntax::Hash));
    assert_eq!(syntax_for("d.psd1"), Some(Syntax::Hash));
    assert_eq!(syntax_for("types.ps1xml"), Some(Syntax::Xml));
    assert_eq!(syntax_for("x.cdxml"), Some(Syntax::Xml));
    assert_eq!(syntax_for("wmi.mof"), Some(Syntax::C));
    assert_eq!(syntax_for(".ps1"), None);
    assert_eq!(syntax_for("a.js"), None);
    assert_eq!(syntax_for("a.ps1.txt"), None);
}

/// Signs `text` the way the signer does (with `der` as the signature) and
/// checks that the result scans, hashes and reads back as it should.
fn round_trip(text: &[u8], utf16: bool, syntax: Syntax) {
    let der = b"\x30\x03\x02\x01\x05-not-really-der-but-base64-needs-some-length".repeat(3);
    let mut f = file(text);
    let l = scan(&mut f, text.len() as u64, syntax).unwrap();
    assert_eq!(l.utf16, utf16);
    assert_eq!(l.signature_at, None);
    let mut out = Vec::new();
    let h = copy_and_hash(&mut f, &l, DigestAlg::Sha256, Some(&mut out)).unwrap();
    assert_eq!(out, text);
    let block = signature_block(syntax, utf16, &der);
    out.extend_from_slice(&block);

    let mut g = file(&out);
    assert_eq!(syntax_of_signed(&mut g).unwrap(), Some(syntax));
    let m = scan(&mut g, out.len() as u64, syntax).unwrap();
    assert_eq!(
        m.signature_at,
        Some(text.len() as u64),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(
        copy_and_hash(&mut g, &m, DigestAlg::Sha256, None).unwrap(),
        h
    );
    assert_eq!(read_signature(&mut g, &m, syntax).unwrap(), der);

    // Signing the signed text again replaces the block: the same text is hashed.
    let mut again = Vec::new();
    let h2 = copy_and_hash(&mut g, &m, DigestAlg::Sha256, Some(&mut again)).unwrap();
    assert_eq!((h2, again.as_slice()), (h, text));
}

#[test]
fn utf8_text_is_hashed_as_utf16le() {
    let text = "\u{feff}Write-Host 'héllo'\r\n# a comment\r\n";
    let mut f = file(text.as_bytes());
    let l = scan(&mut f, text.len() as u64, Syntax::Hash).unwrap();
    let h = copy_and_hash(&mut f, &l, DigestAlg::Sha256, None).unwrap();
    assert_eq!(h, DigestAlg::Sha256.hash(&utf16le(text)));
}

#[test]
fn signature_blocks_round_trip_in_every_syntax_and_encoding() {
    let crlf = "param($x)\r\nWrite-Output \"ünïcödé ✓ 𝄞\"\r\n";
    let lf = "Write-Output 1\nWrite-Output 2";
    for syntax in [Syntax::Hash, Syntax::Xml, Syntax::C] {
        round_trip(crlf.as_bytes(), false, syntax);
        round_trip(lf.as_bytes(), false, syntax);
        let mut bom = vec![0xff, 0xfe];
        bom.extend(utf16le(crlf));
        round_trip(&bom, true, syntax);
    }
    // A long script crosses read buffers, a multi-byte character at each boundary.
    let long: String = "Write-Output 'é𝄞'\r\n".repeat(20_000);
    round_trip(long.as_bytes(), false, Syntax::Hash);
}

#[test]
fn a_header_elsewhere_than_a_line_start_is_text() {
    let text = b"Write-Host '# SIG # Begin signature block'\r\n";
    let mut f = file(text);
    assert_eq!(
        scan(&mut f, text.len() as u64, Syntax::Hash)
            .unwrap()
            .signature_at,
        None
    );
}

#[test]
fn bad_text_is_refused_with_the_reason() {
    let bad = b"Write-Host \xff\xff\r\n";
    assert!(
        rejected(scan(&mut file(bad), bad.len() as u64, Syntax::Hash))
            .contains("invalid UTF-8 at byte 11")
    );
    let cut = "é".as_bytes();
    let cut = &cut[..1];
    assert!(rejected(scan(&mut file(cut), 1, Syntax::Hash)).contains("middle of a character"));
    let be = [0xfe, 0xff, 0, b'a'];
    assert!(rejected(scan(&mut file(&be), 4, Syntax::Hash)).contains("big-endian"));
    let odd = [0xff, 0xfe, b'a', 0, b'b'];
    assert!(rejected(scan(&mut file(&odd), 5, Syntax::Hash)).contains("odd length"));
    let mut lone = vec![0xff, 0xfe];
    lone.extend_from_slice(&0xdc00u16.to_le_bytes());
    assert!(rejected(scan(&mut file(&lone), 4, Syntax::Hash)).contains("surrogate"));
    let first = b"# SIG # Begin signature block\r\n# abc\r\n";
    assert!(
        rejected(scan(&mut file(first), first.len() as u64, Syntax::Hash))
            .contains("starts with a signature block")
    );
}
