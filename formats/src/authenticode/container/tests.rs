//! Each container beyond PE signed by the signer and checked by its own
//! `verify` (what the probe and any caller rely on): a signature verifies, a
//! flipped byte does not, signing again leaves one signature, and
//! `resign = refuse` refuses a signed input.

use std::io::Write as _;
use std::path::PathBuf;

use super::*;
use crate::authenticode::tests::cfg;
use crate::test_support::passphrase;
use crate::{SignContext, Signer};

fn signer(extra: &[(&str, &str)]) -> AuthenticodeSigner {
    AuthenticodeSigner::open(&cfg("ec", None, extra, &[]), Some(&passphrase())).unwrap()
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{needle:?} not found"))
}

/// A compound file with a stream of recognisable content and a storage.
fn msi(dir: &Path) -> Vec<u8> {
    let p = dir.join("built.msi");
    let mut cf = cfb::create(&p).unwrap();
    cf.create_stream("/payload")
        .unwrap()
        .write_all(&b"MSI-PAYLOAD".repeat(500))
        .unwrap();
    cf.create_storage("/sub").unwrap();
    cf.create_stream("/sub/s")
        .unwrap()
        .write_all(b"tiny")
        .unwrap();
    cf.flush().unwrap();
    drop(cf);
    std::fs::read(&p).unwrap()
}

/// Signs `data` named `name`, checks it, flips the byte at the first
/// occurrence of `marker` and checks that verification then fails.
fn sign_verify_tamper(
    s: &AuthenticodeSigner,
    dir: &Path,
    name: &str,
    data: &[u8],
    marker: &[u8],
) -> PathBuf {
    let input = dir.join(format!("in-{name}"));
    std::fs::write(&input, data).unwrap();
    let out = dir.join(format!("out-{name}"));
    let ctx = SignContext {
        filename: name.to_string(),
        ..SignContext::default()
    };
    s.sign(&input, &out, &ctx)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    s.verify(&input, &out)
        .unwrap_or_else(|e| panic!("{name}: {e}"));

    let mut bad = std::fs::read(&out).unwrap();
    let at = find(&bad, marker);
    bad[at] ^= 0x01;
    let tampered = dir.join(format!("bad-{name}"));
    std::fs::write(&tampered, &bad).unwrap();
    assert!(
        s.verify(&input, &tampered).is_err(),
        "{name}: a modified file verified"
    );

    // Signed again: the old signature is replaced, the result verifies.
    let again = dir.join(format!("again-{name}"));
    s.sign(&out, &again, &ctx)
        .unwrap_or_else(|e| panic!("{name} again: {e}"));
    s.verify(&out, &again)
        .unwrap_or_else(|e| panic!("{name} again: {e}"));
    out
}

#[test]
fn every_container_signs_verifies_and_detects_tampering() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let s = signer(&[]);

    let out = sign_verify_tamper(&s, d, "x.msi", &msi(d), b"MSI-PAYLOAD");
    let mut cf = msi::open(File::open(out).unwrap()).unwrap();
    assert!(msi::is_signed(&cf).unwrap());
    assert!(msi::read_signature(&mut cf).is_ok());

    let cab = cab::tests::tiny_cab(b"hello, cabinet\n", true);
    sign_verify_tamper(&s, d, "x.cab", &cab, b"hello, cabinet");

    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/cat_parse");
    let cat = std::fs::read(seeds.join("unsigned.cat")).unwrap();
    sign_verify_tamper(&s, d, "x.cat", &cat, &[0x01, 0x23, 0x45]);
    // The signed catalog of another signer (osslsigncode's) is re-signed by us.
    let theirs = std::fs::read(seeds.join("signed.cat")).unwrap();
    sign_verify_tamper(&s, d, "theirs.cat", &theirs, &[0x01, 0x23, 0x45]);

    // MSIX: a package, and osslsigncode's signed bundle re-signed by us.
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/appx_zip");
    let payload = [0, 7, 14, 21, 28, 35];
    let msix = std::fs::read(seeds.join("unsigned.msix")).unwrap();
    sign_verify_tamper(&s, d, "x.msix", &msix, &payload);
    let theirs = std::fs::read(seeds.join("signed-stream.msixbundle")).unwrap();
    sign_verify_tamper(&s, d, "theirs.msixbundle", &theirs, &payload);

    for (name, text) in [
        ("x.ps1", "Write-Output 'MARKER'\r\n".as_bytes().to_vec()),
        ("x.ps1xml", b"<Types><!-- MARKER --></Types>\n".to_vec()),
        ("x.mof", b"// MARKER\r\n".to_vec()),
    ] {
        sign_verify_tamper(&s, d, name, &text, b"MARKER");
    }
}

#[test]
fn resign_refuse_refuses_every_signed_container() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let replace = signer(&[]);
    let refuse = signer(&[("resign", "refuse")]);
    let inputs = [
        ("r.msi", msi(d)),
        ("r.cab", cab::tests::tiny_cab(b"x", false)),
        ("r.ps1", b"Write-Output 1\r\n".to_vec()),
        (
            "r.msix",
            std::fs::read(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/appx_zip/unsigned.msix"),
            )
            .unwrap(),
        ),
    ];
    for (name, data) in inputs {
        let ctx = SignContext {
            filename: name.to_string(),
            ..SignContext::default()
        };
        let input = d.join(name);
        std::fs::write(&input, &data).unwrap();
        let once = d.join(format!("once-{name}"));
        refuse.sign(&input, &once, &ctx).unwrap();
        let twice = d.join(format!("twice-{name}"));
        match refuse.sign(&once, &twice, &ctx) {
            Err(SignError::Rejected(m)) => assert!(m.contains("already signed"), "{m}"),
            other => panic!("{name}: {other:?}"),
        }
        replace.sign(&once, &twice, &ctx).unwrap();
    }
}

#[test]
fn content_decides_and_the_name_only_chooses_a_script_syntax() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let kind = |data: &[u8], name: &str| {
        let p = d.join("probe");
        std::fs::write(&p, data).unwrap();
        detect(&mut File::open(&p).unwrap(), script::syntax_for(name), name)
    };
    // An MSI named .exe is an MSI; a PE named .ps1 is a PE.
    assert_eq!(kind(&msi(d), "setup.exe").unwrap(), Container::Msi);
    assert_eq!(kind(b"MZ\x90\0", "x.ps1").unwrap(), Container::Pe);
    assert_eq!(kind(b"MSCF\0\0\0\0", "x.msi").unwrap(), Container::Cab);
    assert_eq!(
        kind(b"Write-Output 1", "x.psm1").unwrap(),
        Container::Script(Syntax::Hash)
    );
    match kind(b"Write-Output 1", "x.txt") {
        Err(SignError::Rejected(m)) => {
            assert!(
                m.contains("not a valid PE file") && m.contains("\"x.txt\""),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        kind(b"PK\x03\x04rest", "app.msix").unwrap(),
        Container::Appx
    );
}
