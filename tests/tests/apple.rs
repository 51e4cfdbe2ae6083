//! Apple signing end to end, through the real server: Mach-O (thin and
//! universal), a `.app` bundle in a `.tar.gz`, and a DMG. Outputs are checked
//! by `rcodesign verify` (built by scripts/setup.sh) and by
//! `openssl cms -verify` against the test CA on the CMS blob cut out of the
//! signature; tampered outputs must fail both.

use std::process::Command;

use signing_tests::apple::*;
use signing_tests::*;

/// Uploads `body` to `format` and fetches the result: (status, body).
fn sign(s: &Server, format: &str, filename: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let token = s.mint("127.0.0.1", 300);
    let (status, text) = Upload::new(&token, filename, body).send(&s.client(), &s.url, format);
    assert_eq!(status, 202, "{text}");
    let (status, _, out) = fetch(&s.client(), &s.url, format, &sha256_hex(body));
    (status, out)
}

fn rcodesign_checks(path: &std::path::Path, tampered: &std::path::Path) {
    let (ok, out) = rcodesign_verify(path);
    assert!(ok, "rcodesign verify: {out}");
    let (ok, out) = rcodesign_verify(tampered);
    assert!(!ok, "rcodesign accepted a tampered binary: {out}");
}

#[test]
fn thin_and_universal_macho_verify_with_rcodesign_and_openssl() {
    let s = Server::start(&apple_opts("hardened_runtime = true"));
    let dir = tempfile::tempdir().unwrap();
    let x86 = build_macho(dir.path(), "x86_64", "exe");
    let arm = build_macho(dir.path(), "arm64", "exe");
    let dylib = build_macho(dir.path(), "x86_64", "dylib");
    let fat = dir.path().join("fat");
    lipo(&[&x86, &arm], &fat);

    for (name, input, slices) in [
        ("firefox", &x86, 1),
        ("libxul.dylib", &dylib, 1),
        ("universal", &fat, 2),
    ] {
        let body = std::fs::read(input).unwrap();
        let (status, signed) = sign(&s, "macapp", name, &body);
        assert_eq!(
            status,
            200,
            "{name}: {}\n{}",
            String::from_utf8_lossy(&signed),
            s.stderr()
        );
        let blobs = macho_blobs(&signed);
        assert_eq!(blobs.len(), slices, "{name}");
        for b in &blobs {
            assert_cms_ok(b);
            // Hardened runtime flag (0x10000) in the code directory's flags (offset 12).
            let flags = u32::from_be_bytes(b.code_directory[12..16].try_into().unwrap());
            assert!(
                flags & 0x10000 != 0,
                "{name}: no hardened runtime flag ({flags:#x})"
            );
            assert!(flags & 0x2 == 0, "{name}: ad-hoc flag set");
        }
        let out = dir.path().join(format!("{name}.signed"));
        std::fs::write(&out, &signed).unwrap();
        // One byte of code changed: the page hash no longer matches.
        let mut bad = signed.clone();
        let text = signed
            .windows(4)
            .position(|w| w == [0x31, 0xff, 0x0f, 0x05] || w == [0x01, 0x00, 0x00, 0xd4])
            .unwrap_or(0x4000);
        bad[text] ^= 0xff;
        let tampered = dir.path().join(format!("{name}.tampered"));
        std::fs::write(&tampered, &bad).unwrap();
        rcodesign_checks(&out, &tampered);
    }
}

#[test]
fn entitlements_from_the_config_are_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let ent = dir.path().join("ent.plist");
    std::fs::write(
        &ent,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict>\
         <key>com.apple.security.cs.allow-jit</key><true/></dict></plist>\n",
    )
    .unwrap();
    let s = Server::start(&apple_opts(&format!(
        "hardened_runtime = true\nentitlements = {}",
        ent.display()
    )));
    let body = std::fs::read(build_macho(dir.path(), "arm64", "exe")).unwrap();
    let (status, signed) = sign(&s, "macapp", "firefox", &body);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&signed));
    assert!(
        signed
            .windows(31)
            .any(|w| w == b"com.apple.security.cs.allow-jit"),
        "entitlements missing"
    );
    assert_cms_ok(&macho_blobs(&signed)[0]);
    let out = dir.path().join("signed");
    std::fs::write(&out, &signed).unwrap();
    let (ok, text) = rcodesign_verify(&out);
    assert!(ok, "{text}");
}

#[test]
fn app_bundle_tarball_is_signed_inside_out_and_repacked() {
    let s = Server::start(&apple_opts("hardened_runtime = true"));
    let dir = tempfile::tempdir().unwrap();
    let body = app_tarball(dir.path(), "Firefox");
    let (status, signed) = sign(&s, "macapp", "firefox.tar.gz", &body);
    assert_eq!(
        status,
        200,
        "{}\n{}",
        String::from_utf8_lossy(&signed),
        s.stderr()
    );
    let orig = untar(&body, &dir.path().join("orig").tap_mkdir());
    let out_dir = dir.path().join("out").tap_mkdir();
    let list = untar(&signed, &out_dir);
    // Same layout, plus the signature files.
    for entry in &orig {
        assert!(
            list.contains(entry),
            "{entry} missing from the signed tarball: {list:?}"
        );
    }
    for sealed in ["Firefox.app/Contents/_CodeSignature/CodeResources", "Firefox.app/Contents/Library/LaunchServices/helper.app/Contents/_CodeSignature/CodeResources"] {
        assert!(list.iter().any(|l| l == sealed), "{sealed} missing: {list:?}");
    }
    let app = out_dir.join("Firefox.app/Contents");
    assert_eq!(
        std::fs::read_link(app.join("Resources/firefox-link"))
            .unwrap()
            .to_str(),
        Some("../MacOS/firefox")
    );
    for exe in [
        "MacOS/firefox",
        "MacOS/libxul.dylib",
        "Library/LaunchServices/helper.app/Contents/MacOS/helper",
    ] {
        let data = std::fs::read(app.join(exe)).unwrap();
        for b in macho_blobs(&data) {
            assert_cms_ok(&b);
        }
    }
    for exe in [
        "MacOS/firefox",
        "MacOS/libxul.dylib",
        "Library/LaunchServices/helper.app/Contents/MacOS/helper",
    ] {
        let (ok, out) = rcodesign_verify(&app.join(exe));
        assert!(ok, "{exe}: {out}");
    }
}

#[test]
fn dmg_is_signed_and_its_digests_match() {
    let s = Server::start(&apple_opts(""));
    let dir = tempfile::tempdir().unwrap();
    let exe = build_macho(dir.path(), "x86_64", "exe");
    let body = build_dmg(dir.path(), &exe);
    let (status, signed) = sign(&s, "dmg", "Firefox 140.0.dmg", &body);
    assert_eq!(
        status,
        200,
        "{}\n{}",
        String::from_utf8_lossy(&signed),
        s.stderr()
    );
    let blobs = dmg_blobs(&signed);
    assert_cms_ok(&blobs);
    // Our own recomputation: the code directory's one code hash is SHA-256
    // of the image up to the signature.
    let cd = &blobs.code_directory;
    let be32 = |at: usize| u32::from_be_bytes(cd[at..at + 4].try_into().unwrap()) as usize;
    let (hash_offset, hash_size, hash_type) = (be32(16), cd[36] as usize, cd[37]);
    assert_eq!((hash_size, hash_type), (32, 2), "SHA-256 code directory");
    let koly = &signed[signed.len() - 512..];
    let sig_off = u64::from_be_bytes(koly[0x128..0x130].try_into().unwrap()) as usize;
    assert_eq!(
        &cd[hash_offset..hash_offset + 32],
        hex::decode(sha256_hex(&signed[..sig_off]))
            .unwrap()
            .as_slice()
    );
    // The image content is unchanged up to the old trailer's plist end.
    let plist_end = {
        let k = &body[body.len() - 512..];
        (u64::from_be_bytes(k[0xd8..0xe0].try_into().unwrap())
            + u64::from_be_bytes(k[0xe0..0xe8].try_into().unwrap())) as usize
    };
    assert_eq!(&signed[..plist_end], &body[..plist_end]);
    {
        let rcs = rcodesign().expect("rcodesign missing: run scripts/setup.sh");
        let f = dir.path().join("signed.dmg");
        std::fs::write(&f, &signed).unwrap();
        let (ok, out) = run(Command::new(&rcs).arg("print-signature-info").arg(&f));
        assert!(ok, "{out}");
        assert!(
            out.contains("Developer ID Application: signing-server TEST ONLY"),
            "{out}"
        );
        // rcodesign parses the same code directory and CMS as our own check did.
        assert!(
            out.contains(&format!("message_digest: {}", sha256_hex(cd))),
            "{out}"
        );
        assert!(
            out.contains(&format!("signed_entity_size: {sig_off}")),
            "{out}"
        );
        assert!(out.contains("code_digests_count: 1"), "{out}");
    }
}

#[test]
fn bad_inputs_are_422() {
    let s = Server::start(&apple_opts(""));
    let dir = tempfile::tempdir().unwrap();
    let (status, text) = sign(&s, "macapp", "notes.txt", &data(5000, 9));
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&text));
    assert!(String::from_utf8_lossy(&text).contains("not a Mach-O, .dmg or .tar.gz .app bundle"));
    // A tarball escaping its directory.
    let evil = dir.path().join("evil");
    std::fs::create_dir_all(evil.join("A.app/Contents")).unwrap();
    std::fs::write(evil.join("A.app/Contents/Info.plist"), "<plist/>").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", evil.join("A.app/Contents/pw")).unwrap();
    let tgz = dir.path().join("evil.tar.gz");
    assert!(
        run(Command::new("tar")
            .arg("-C")
            .arg(&evil)
            .arg("-czf")
            .arg(&tgz)
            .arg("A.app"))
        .0
    );
    let (status, text) = sign(&s, "macapp", "evil.tar.gz", &std::fs::read(&tgz).unwrap());
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&text));
    assert!(
        String::from_utf8_lossy(&text).contains("absolute"),
        "{}",
        String::from_utf8_lossy(&text)
    );
    // A truncated Mach-O.
    let mut macho = std::fs::read(build_macho(dir.path(), "x86_64", "exe")).unwrap();
    macho.truncate(200);
    let (status, text) = sign(&s, "macapp", "cut", &macho);
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&text));
}

#[test]
fn a_key_that_does_not_match_the_certificate_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs().join("apple");
    let mut opts = apple_opts("");
    opts.formats = format!(
        "[format:macapp]\ntype = apple\nkey = {}\ncert = {}\n",
        c.join("other.key").display(),
        c.join("chain.pem").display()
    );
    let config = write_config(dir.path(), &opts);
    let (status, out) = run_server_to_end(&[config.as_os_str()], &opts.stdin);
    assert!(!status.success());
    assert!(out.contains("does not belong to the certificate"), "{out}");
    // And a wrong passphrase.
    let mut opts = apple_opts("");
    opts.stdin = "wrong passphrase\n".into();
    let config = write_config(dir.path(), &opts);
    let (status, out) = run_server_to_end(&[config.as_os_str()], &opts.stdin);
    assert!(!status.success(), "{out}");
    assert!(!out.contains(&passphrase()));
}

#[test]
fn mozilla_signtool_signs_a_firefox_app_with_macapp() {
    let s = Server::start(&apple_opts("hardened_runtime = true"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("firefox.tar.gz");
    std::fs::write(&file, app_tarball(dir.path(), "Firefox")).unwrap();
    let out = dir.path().join("signed.tar.gz");
    // signtool maps `-f macapp` to the server format `dmg`, with the hosts of `macapp`.
    let (ok, text) = mozilla_sign(&s, dir.path(), "macapp", &file, &out);
    assert!(
        ok,
        "Mozilla's signtool failed:\n{text}\nserver log:\n{}",
        s.stderr()
    );
    let unpacked = dir.path().join("unpacked").tap_mkdir();
    untar(&std::fs::read(&out).unwrap(), &unpacked);
    let main = std::fs::read(unpacked.join("Firefox.app/Contents/MacOS/firefox")).unwrap();
    assert_cms_ok(&macho_blobs(&main)[0]);
    assert!(s.audit().contains("\"format\":\"dmg\""), "{}", s.audit());
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}
impl TapMkdir for std::path::PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

#[test]
fn timestamp_urls_fail_over_to_a_working_authority_and_the_token_verifies() {
    let tsa = local_tsa();
    // The first authority refuses connections: the second one answers.
    let s = Server::start(&apple_opts(&format!(
        "timestamp_urls = http://127.0.0.1:9/, {tsa}"
    )));
    let dir = tempfile::tempdir().unwrap();
    let body = std::fs::read(build_macho(dir.path(), "x86_64", "exe")).unwrap();
    let (status, signed) = sign(&s, "macapp", "firefox", &body);
    assert_eq!(
        status,
        200,
        "{}\n{}",
        String::from_utf8_lossy(&signed),
        s.stderr()
    );
    let blobs = &macho_blobs(&signed)[0];
    assert_cms_ok(blobs);
    // The CMS signer info carries an RFC 3161 token (id-aa-timeStampToken, 1.2.840.113549.1.9.16.2.14).
    let cms = dir.path().join("cms.der");
    std::fs::write(&cms, &blobs.cms).unwrap();
    let (ok, out) = run(Command::new("openssl")
        .args(["cms", "-cmsout", "-print", "-inform", "DER", "-in"])
        .arg(&cms));
    assert!(ok, "{out}");
    assert!(
        out.contains("id-smime-aa-timeStampToken"),
        "no time-stamp token:\n{out}"
    );
    assert!(
        out.contains("signing-server TEST TSA"),
        "token not from our TSA:\n{out}"
    );
    let f = dir.path().join("signed");
    std::fs::write(&f, &signed).unwrap();
    let (ok, text) = rcodesign_verify(&f);
    assert!(ok, "{text}");
}

/// apple-codesign logs its routine progress at WARN ("signing … as a Mach-O
/// binary", "writing Mach-O to …"); the server logs it at DEBUG, so that an
/// operator's WARN lines are real warnings (issue 21: 145 WARN lines for 30
/// signings before).
#[test]
fn apple_codesign_progress_is_logged_at_debug_not_warn() {
    let s = Server::start(&apple_opts(""));
    let dir = tempfile::tempdir().unwrap();
    let x86 = build_macho(dir.path(), "x86_64", "exe");
    let body = std::fs::read(&x86).unwrap();
    let (status, signed) = sign(&s, "macapp", "firefox", &body);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&signed));
    let log = s.stderr();
    let from_codesign: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("apple_codesign"))
        .collect();
    // The progress is still there (the tests log at debug), one level down.
    assert!(
        from_codesign
            .iter()
            .any(|l| l.contains("DEBUG") && l.contains("as a Mach-O binary")),
        "no apple-codesign progress at DEBUG in:\n{log}"
    );
    let warn: Vec<&&str> = from_codesign
        .iter()
        .filter(|l| l.contains(" WARN ") || l.contains("\"level\":\"WARN\""))
        .collect();
    assert!(warn.is_empty(), "apple-codesign WARN lines: {warn:#?}");
}
