//! Authenticode beyond PE, end to end: MSI packages (wixl), cabinets (gcab),
//! catalogs (openssl asn1parse), PowerShell scripts and MSIX packages and
//! bundles (Python's zipfile) go through the real
//! server's one `sha2signcode` format and are checked with osslsigncode 2.9,
//! which also signs the same inputs as the reference; a flipped byte fails;
//! an already-signed input comes back with exactly one signature, ours.

use std::path::{Path, PathBuf};

use signing_tests::authenticode::{osslsigncode_verify, Tsa, TsaMode};
use signing_tests::windows::*;
use signing_tests::*;

/// `[format:NAME]` of type authenticode with the RSA test key.
fn format(name: &str, extra: &str) -> String {
    let c = certs().join("authenticode");
    format!(
        "[format:{name}]\ntype = authenticode\nkey = {}\ncert = {}\n\
         program_name = signing-server test\nprogram_url = https://example.invalid/\n{extra}",
        c.join("rsa.key").display(),
        c.join("rsa-chain.pem").display(),
    )
}

fn server(formats: String) -> Server {
    let stdin = format!("{p}\n{p}\n", p = passphrase());
    Server::start(&ServerOpts {
        formats,
        stdin,
        ..ServerOpts::default()
    })
}

/// Uploads `body` named `name` to `fmt` and fetches the result: (status, body).
fn sign(s: &Server, fmt: &str, name: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let token = s.mint("127.0.0.1", 300);
    let (status, text) = Upload::new(&token, name, body).send(&s.client(), &s.url, fmt);
    assert_eq!(status, 202, "{text}");
    let (status, _, out) = fetch(&s.client(), &s.url, fmt, &sha256_hex(body));
    (status, out)
}

/// Signs `body` (named `name`) and returns the signed bytes; panics unless 200.
fn sign_ok(s: &Server, fmt: &str, name: &str, body: &[u8]) -> Vec<u8> {
    let (status, out) = sign(s, fmt, name, body);
    assert_eq!(
        status,
        200,
        "{name}: {}\n{}",
        String::from_utf8_lossy(&out),
        s.stderr()
    );
    out
}

/// Writes `data` as `dir/name` and runs osslsigncode verify on it.
fn verify(dir: &Path, name: &str, data: &[u8]) -> (String, bool) {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    osslsigncode_verify(&p)
}

/// Our signature verifies, once; with one byte at `at` flipped it does not.
fn verifies_and_tamper_fails(dir: &Path, name: &str, signed: &[u8], at: usize) {
    let (text, ok) = verify(dir, name, signed);
    assert!(ok, "{name}: {text}");
    assert_eq!(signature_count(&text), Some(1), "{name}: {text}");
    assert!(
        text.contains("signing-server test"),
        "{name}: program name: {text}"
    );
    let mut tampered = signed.to_vec();
    tampered[at] ^= 0x01;
    let (text, ok) = verify(dir, &format!("tampered-{name}"), &tampered);
    assert!(!ok, "{name}: a modified file verified:\n{text}");
}

/// osslsigncode signs `input` too (the reference accepts what we accept).
fn reference_signs(dir: &Path, input: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(format!("ossl-{name}"));
    let (ok, text) = osslsigncode_sign(input, &out, extra);
    assert!(ok, "osslsigncode sign {name}: {text}");
    let (text, ok) = osslsigncode_verify(&out);
    assert!(ok, "osslsigncode's own {name}: {text}");
    out
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{needle:?} not found"))
}

#[test]
fn msi_signs_verifies_and_resigns_to_one_signature() {
    let s = server(format("sha2signcode", ""));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let msi = build_msi(d, "product", "hello from an MSI\n");
    let body = std::fs::read(&msi).unwrap();
    let signed = sign_ok(&s, "sha2signcode", "product.msi", &body);
    // The payload cabinet is a stream of the MSI: a byte of it is hashed.
    let at = find(&signed, b"MSCF") + 10;
    verifies_and_tamper_fails(d, "signed.msi", &signed, at);
    // msitools still reads the package.
    let (ok, text) = run(std::process::Command::new("msiinfo")
        .arg("tables")
        .arg(d.join("signed.msi")));
    assert!(ok && text.contains("File"), "msiinfo: {text}");

    // Signed again (by us): one signature, still valid.
    let again = sign_ok(&s, "sha2signcode", "again.msi", &signed);
    let (text, ok) = verify(d, "again.msi", &again);
    assert!(ok && signature_count(&text) == Some(1), "{text}");

    // The reference signs the same input, with the MsiDigitalSignatureEx
    // pre-hash; we replace its signature (both streams) with ours.
    let theirs = reference_signs(d, &msi, "product.msi", &["-add-msi-dse"]);
    let (text, _) = osslsigncode_verify(&theirs);
    assert!(text.contains("MsiDigitalSignatureEx"), "{text}");
    let ours = sign_ok(
        &s,
        "sha2signcode",
        "theirs.msi",
        &std::fs::read(&theirs).unwrap(),
    );
    let (text, ok) = verify(d, "ours.msi", &ours);
    assert!(ok && signature_count(&text) == Some(1), "{text}");
    assert!(text.contains("signing-server test"), "{text}");
    assert!(!text.contains("Current MsiDigitalSignatureEx"), "{text}");
}

/// Issue 31: a compound file whose regular stream starts inside the mini
/// stream (found by fuzzing). Signed in place, its signature did not verify
/// (`MISMATCH!!!`); osslsigncode, which rewrites the file, signs it right, and
/// so must we.
#[test]
fn msi_with_overlapping_sector_chains_signs_as_osslsigncode_does() {
    let s = server(format("sha2signcode", ""));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = repo().join("formats/fuzz/seeds/msi_cfb/regression-signature-changes-hash.msi");
    reference_signs(d, &input, "overlap.msi", &[]);
    let signed = sign_ok(
        &s,
        "sha2signcode",
        "overlap.msi",
        &std::fs::read(&input).unwrap(),
    );
    let (text, ok) = verify(d, "overlap-signed.msi", &signed);
    assert!(ok, "{text}");
    assert_eq!(signature_count(&text), Some(1), "{text}");
    assert!(text.contains("signing-server test"), "{text}");
}

#[test]
fn msi_timestamped_by_the_configured_tsa() {
    let tsa = Tsa::start(TsaMode::Good);
    let s = server(format(
        "sha2signcode-v2",
        &format!("timestamp_urls = {}\n", tsa.url),
    ));
    let dir = tempfile::tempdir().unwrap();
    let msi = build_msi(dir.path(), "ts", "timestamped\n");
    let signed = sign_ok(
        &s,
        "sha2signcode-v2",
        "ts.msi",
        &std::fs::read(&msi).unwrap(),
    );
    assert_eq!(tsa.count(), 1);
    let (text, ok) = verify(dir.path(), "ts.msi", &signed);
    assert!(ok, "{text}");
    // osslsigncode exits 0 even when the timestamp does not verify: read the line.
    assert!(
        text.contains("Timestamp Server Signature verification: ok"),
        "{text}"
    );
}

#[test]
fn powershell_scripts_in_every_encoding_and_comment_syntax() {
    require_osslsigncode_2_9();
    let s = server(format("sha2signcode", ""));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = [
        ("crlf.ps1", ps1_text(true, TextEncoding::Utf8)),
        ("lf.psm1", ps1_text(false, TextEncoding::Utf8)),
        ("bom.psd1", ps1_text(true, TextEncoding::Utf8Bom)),
        ("utf16.ps1", ps1_text(true, TextEncoding::Utf16Le)),
        (
            "types.ps1xml",
            b"<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n<Types>\r\n</Types>\r\n".to_vec(),
        ),
        (
            "class.mof",
            b"#pragma namespace(\"\\\\\\\\.\\\\root\\\\cimv2\")\r\n".to_vec(),
        ),
    ];
    for (name, body) in &cases {
        let signed = sign_ok(&s, "sha2signcode", name, body);
        assert!(signed.starts_with(body), "{name}: the text changed");
        let tail = if name.starts_with("utf16") {
            String::from_utf16_lossy(
                &signed[body.len()..]
                    .chunks(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect::<Vec<_>>(),
            )
        } else {
            String::from_utf8_lossy(&signed[body.len()..]).into_owned()
        };
        assert!(tail.starts_with("\r\n"), "{name}: {tail:?}");
        assert!(
            tail.contains("SIG # End signature block") && tail.ends_with("\r\n"),
            "{name}: {tail:?}"
        );
        verifies_and_tamper_fails(d, name, &signed, 4);

        // The reference signs the same text; we sign its output again: one signature.
        let input = d.join(format!("in-{name}"));
        std::fs::write(&input, body).unwrap();
        let theirs = reference_signs(d, &input, name, &[]);
        let ours = sign_ok(&s, "sha2signcode", name, &std::fs::read(&theirs).unwrap());
        assert!(
            ours.starts_with(body),
            "{name}: re-signing changed the text"
        );
        let (text, ok) = verify(d, &format!("re-{name}"), &ours);
        assert!(ok && signature_count(&text) == Some(1), "{name}: {text}");
        assert!(text.contains("signing-server test"), "{name}: {text}");
    }
}

#[test]
fn cabinets_stored_and_compressed() {
    let s = server(format("sha2signcode", ""));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for compress in [false, true] {
        let name = if compress { "mszip" } else { "stored" };
        let cab = build_cab(d, name, compress);
        let body = std::fs::read(&cab).unwrap();
        let signed = sign_ok(&s, "sha2signcode", &format!("{name}.cab"), &body);
        // The header reserve points at the signature, padded to 8 bytes, at the end.
        let u32_at = |o: usize| u32::from_le_bytes(signed[o..o + 4].try_into().unwrap()) as usize;
        assert_eq!((u32_at(44) + u32_at(48), u32_at(48) % 8), (signed.len(), 0));
        verifies_and_tamper_fails(d, &format!("{name}.cab"), &signed, body.len() - 10);
        // The cabinet still lists and extracts.
        let p = d.join(format!("{name}.cab"));
        let (ok, text) = run(std::process::Command::new("gcab").arg("-t").arg(&p));
        assert!(
            ok && text.contains("a.txt") && text.contains("b.bin"),
            "gcab: {text}"
        );

        let theirs = reference_signs(d, &cab, &format!("{name}.cab"), &[]);
        let ours = sign_ok(
            &s,
            "sha2signcode",
            "theirs.cab",
            &std::fs::read(&theirs).unwrap(),
        );
        assert_eq!(ours.len(), signed.len(), "re-signing keeps the layout");
        let (text, ok) = verify(d, &format!("re-{name}.cab"), &ours);
        assert!(ok && signature_count(&text) == Some(1), "{text}");
    }
}

#[test]
fn catalogs_are_signed_around_the_same_trust_list() {
    require_osslsigncode_2_9();
    let s = server(format("sha2signcode", ""));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cat = build_cat(d, "drivers", &sha256_hex(b"a driver file"));
    let body = std::fs::read(&cat).unwrap();
    let signed = sign_ok(&s, "sha2signcode", "drivers.cat", &body);
    let at = find(&signed, &[0x01, 0x23, 0x45, 0x67, 0x89]);
    verifies_and_tamper_fails(d, "drivers.cat", &signed, at);
    let (_, text) = run(std::process::Command::new("osslsigncode")
        .args(["verify", "-verbose", "-CAfile"])
        .arg(certs().join("authenticode/ca.pem"))
        .arg("-in")
        .arg(d.join("drivers.cat")));
    assert!(
        text.contains(&sha256_hex(b"a driver file").to_ascii_uppercase()),
        "the member is listed: {text}"
    );

    let theirs = reference_signs(d, &cat, "drivers.cat", &[]);
    let ours = sign_ok(
        &s,
        "sha2signcode",
        "theirs.cat",
        &std::fs::read(&theirs).unwrap(),
    );
    let (text, ok) = verify(d, "re-drivers.cat", &ours);
    assert!(ok && signature_count(&text) == Some(1), "{text}");
}

/// Where osslsigncode 2.9 refuses an input, so do we, with the reason (422).
#[test]
fn refusals_say_why() {
    require_osslsigncode_2_9();
    let s = server(format("sha2signcode", ""));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let refused = |name: &str, body: &[u8], reason: &str| {
        let (status, text) = sign(&s, "sha2signcode", name, body);
        let text = String::from_utf8_lossy(&text);
        assert_eq!(status, 422, "{name}: {text}");
        assert!(text.contains(reason), "{name}: {text}");
        // The reference refuses it too.
        let p = d.join(name);
        std::fs::write(&p, body).unwrap();
        let (ok, out) = osslsigncode_sign(&p, &d.join(format!("ossl-{name}")), &[]);
        assert!(!ok, "osslsigncode signed {name}: {out}");
    };
    // JavaScript: osslsigncode 2.9 does not sign it, nor do we.
    refused("app.js", b"WScript.Echo('hi');\r\n", "not a valid PE file");
    // A truncated MSI.
    let msi = std::fs::read(build_msi(d, "cut", "x")).unwrap();
    refused("cut.msi", &msi[..1000], "not a valid MSI");
    // A cabinet continued from another one.
    let mut cab = std::fs::read(build_cab(d, "multi", false)).unwrap();
    cab[30] |= 0x01;
    refused("multi.cab", &cab, "multi-volume");
    // MSIX: no block map; a truncated package; a SHA-1 block map.
    let msix = |name: &str, args: &[&str]| std::fs::read(build_msix(d, name, args)).unwrap();
    let no_map = msix("no-map.msix", &["--no-block-map"]);
    refused("no-map.msix", &no_map, "no AppxBlockMap.xml in the archive");
    let whole = msix("whole.msix", &[]);
    refused(
        "cut.msix",
        &whole[..whole.len() - 30],
        "no end of central directory record",
    );
    let sha1 = msix("sha1.msix", &["--hash", "sha1"]);
    refused("sha1.msix", &sha1, "is not SHA-256, SHA-384 or SHA-512");
    // Text that is not UTF-8 and has no UTF-16 BOM.
    let (status, text) = sign(
        &s,
        "sha2signcode",
        "bad.ps1",
        b"Write-Host \xff\xfe\xfd\r\n",
    );
    let text = String::from_utf8_lossy(&text);
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("invalid UTF-8 at byte 11"), "{text}");
    assert!(
        text.contains("save it in one of them"),
        "what to do: {text}"
    );
}

#[test]
fn mozilla_signtool_signs_an_msi_with_sha2signcode() {
    let s = server(format("sha2signcode", ""));
    let dir = tempfile::tempdir().unwrap();
    let msi = build_msi(dir.path(), "moz", "signed by Mozilla's client\n");
    let signed = dir.path().join("signed.msi");
    let (ok, out) = mozilla_sign(&s, dir.path(), "sha2signcode", &msi, &signed);
    assert!(
        ok,
        "Mozilla's signtool failed:\n{out}\nserver log:\n{}",
        s.stderr()
    );
    let (text, ok) = osslsigncode_verify(&signed);
    assert!(ok && signature_count(&text) == Some(1), "{text}");
}

/// The entry of the payload `make_msix.py` writes: (i * 7) % 251.
fn payload_offset(package: &[u8]) -> usize {
    find(package, &[0, 7, 14, 21, 28, 35, 42]) + 1000
}

#[test]
fn msix_packages_and_bundles_sign_verify_and_resign_to_one_signature() {
    require_osslsigncode_2_9();
    let s = server(format("sha2signcode", ""));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Plain local headers; data descriptors (a streaming packer); a bundle;
    // ZIP64 records everywhere (as MakeAppx writes them).
    for (name, args) in [
        ("app.msix", &[][..]),
        ("stream.appx", &["--stream"][..]),
        ("app.msixbundle", &["--bundle", "--stream"][..]),
        ("zip64.msix", &["--zip64"][..]),
    ] {
        let input = build_msix(d, name, args);
        let body = std::fs::read(&input).unwrap();
        let signed = sign_ok(&s, "sha2signcode", name, &body);
        verifies_and_tamper_fails(d, name, &signed, payload_offset(&signed));
        let (ok, text) = zip_entries_intact(&d.join(name));
        assert!(ok, "{name}: zipfile: {text}");
        // The local record and the central directory record name it once each.
        let names = |b: &[u8]| b.windows(17).filter(|w| w == b"AppxSignature.p7x").count();
        assert_eq!(names(&signed), 2, "{name}");

        // Signed again by us: still one signature, and it verifies.
        let again = sign_ok(&s, "sha2signcode", name, &signed);
        let (text, ok) = verify(d, &format!("again-{name}"), &again);
        assert!(ok && signature_count(&text) == Some(1), "{name}: {text}");
        assert_eq!(names(&again), 2, "{name}");

        // The reference signs the same input; its output verifies, and we
        // replace its signature with ours. (osslsigncode 2.9 signs the ZIP64
        // package but cannot verify its own output: it rewrites
        // [Content_Types].xml and leaves the old sizes in its ZIP64 field.)
        if name == "zip64.msix" {
            continue;
        }
        let theirs = reference_signs(d, &input, name, &[]);
        let ours = sign_ok(&s, "sha2signcode", name, &std::fs::read(&theirs).unwrap());
        let (text, ok) = verify(d, &format!("ours-{name}"), &ours);
        assert!(ok && signature_count(&text) == Some(1), "{name}: {text}");
        assert!(text.contains("signing-server test"), "{name}: {text}");
        assert_eq!(names(&ours), 2, "{name}");
    }
}

#[test]
fn msix_hash_follows_the_block_map_and_is_timestamped() {
    require_osslsigncode_2_9();
    let tsa = Tsa::start(TsaMode::Good);
    let s = server(format(
        "sha2signcode-384",
        &format!("digest = sha384\ntimestamp_urls = {}\n", tsa.url),
    ));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let body = std::fs::read(build_msix(d, "384.msix", &["--hash", "sha384"])).unwrap();
    let signed = sign_ok(&s, "sha2signcode-384", "384.msix", &body);
    assert_eq!(tsa.count(), 1);
    let (text, ok) = verify(d, "384.msix", &signed);
    assert!(ok && signature_count(&text) == Some(1), "{text}");
    assert!(text.contains("SHA384"), "{text}");
    assert!(
        text.contains("Timestamp Server Signature verification: ok"),
        "{text}"
    );
    // A SHA-256 block map does not fit a SHA-384 format.
    let body = std::fs::read(build_msix(d, "256.msix", &[])).unwrap();
    let (status, text) = sign(&s, "sha2signcode-384", "256.msix", &body);
    let text = String::from_utf8_lossy(&text);
    assert_eq!(status, 422, "{text}");
    assert!(
        text.contains("AppxBlockMap.xml hashes with SHA-256, this format signs with SHA-384")
            && text.contains("configured with `digest = sha256`"),
        "{text}"
    );
}
