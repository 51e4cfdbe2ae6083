//! Unit tests: our own verifier, malformed ZIPs, and apksigner (the
//! relying party's tool) on APKs made with aapt + zipalign.

use super::*;
use std::path::PathBuf;
use std::process::Command;

use crate::test_support::{certs, passphrase};

fn cfg(kind: &str, schemes: Option<&str>) -> FormatConfig {
    let dir = certs().join("apk").join(kind);
    let mut c = FormatConfig {
        name: "apk".into(),
        kind: "apk".into(),
        key: dir.join("key.pem"),
        pkcs11_module: None,
        cert: Some(dir.join("cert.pem")),
        ..FormatConfig::default()
    };
    if let Some(s) = schemes {
        c.extra.insert("schemes".into(), s.into());
    }
    c
}

fn signer(kind: &str) -> ApkSigner {
    ApkSigner::open(&cfg(kind, None), Some(&passphrase())).unwrap()
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// A real APK: aapt-packaged manifest and assets (a compressed text, a
/// stored file), a stored `.so` added with `aapt add -0 so`, zipaligned.
/// (tests/src/apk.rs has the e2e tests' twin.)
fn fixture_apk(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("assets")).unwrap();
    std::fs::create_dir_all(src.join("lib/x86_64")).unwrap();
    std::fs::write(
        src.join("AndroidManifest.xml"),
        r#"<?xml version="1.0" encoding="utf-8"?>
<manifest xmlns:android="http://schemas.android.com/apk/res/android" package="org.example.signing.test" android:versionCode="1" android:versionName="1.0">
  <uses-sdk android:minSdkVersion="21" android:targetSdkVersion="33"/>
  <application android:label="t"/>
</manifest>
"#,
    )
    .unwrap();
    let numbers: String = (0..30_000).map(|i| format!("{i}\n")).collect();
    std::fs::write(src.join("assets/numbers.txt"), numbers).unwrap();
    std::fs::write(src.join("assets/raw.dat"), b"stored, not compressed\n").unwrap();
    // Over 2 MiB: the content digest spans several 1 MiB chunks.
    let so: Vec<u8> = (0..2_500_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(src.join("lib/x86_64/libfoo.so"), so).unwrap();
    let base = dir.join("base.apk");
    let (ok, out) = run(Command::new("aapt")
        .current_dir(&src)
        .args([
            "package",
            "-f",
            "-M",
            "AndroidManifest.xml",
            "-I",
            "/usr/share/android-framework-res/framework-res.apk",
            "-A",
            "assets",
            "-0",
            "dat",
            "-F",
        ])
        .arg(&base));
    assert!(ok, "aapt package: {out}");
    let (ok, out) = run(Command::new("aapt")
        .current_dir(&src)
        .args(["add", "-0", "so"])
        .arg(&base)
        .arg("lib/x86_64/libfoo.so"));
    assert!(ok, "aapt add: {out}");
    let aligned = dir.join("aligned.apk");
    let (ok, out) = run(Command::new("zipalign")
        .args(["-p", "-f", "4"])
        .arg(&base)
        .arg(&aligned));
    assert!(ok, "zipalign: {out}");
    aligned
}

fn apksigner(apk: &Path) -> (bool, String) {
    run(Command::new("apksigner")
        .args(["verify", "--verbose", "--print-certs"])
        .arg(apk))
}

fn zipalign_ok(apk: &Path) -> (bool, String) {
    run(Command::new("zipalign").args(["-c", "-p", "4"]).arg(apk))
}

fn sign(s: &ApkSigner, input: &Path, output: &Path) -> Result<(), SignError> {
    let _ = std::fs::remove_file(output);
    s.sign(input, output, &SignContext::default())
}

fn flip(path: &Path, at: usize) {
    let mut d = std::fs::read(path).unwrap();
    d[at] ^= 1;
    std::fs::write(path, d).unwrap();
}

#[test]
fn apksigner_verifies_v1_v2_v3_with_rsa_and_ec_and_a_flipped_byte_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let apk = fixture_apk(tmp.path());
    for kind in ["rsa", "ec"] {
        let s = signer(kind);
        let out = tmp.path().join(format!("signed-{kind}.apk"));
        sign(&s, &apk, &out).unwrap();
        s.verify(&apk, &out).unwrap();
        let (ok, text) = apksigner(&out);
        assert!(ok, "{kind}: apksigner refused: {text}");
        for want in [
            "Verifies",
            "Verified using v1 scheme (JAR signing): true",
            "Verified using v2 scheme (APK Signature Scheme v2): true",
            "Verified using v3 scheme (APK Signature Scheme v3): true",
        ] {
            assert!(text.contains(want), "{kind}: no {want:?} in {text}");
        }
        let want =
            std::fs::read_to_string(certs().join("apk").join(kind).join("CERT_SHA256")).unwrap();
        assert_eq!(s.key_id(), want);
        assert!(
            text.contains(&format!("Signer #1 certificate SHA-256 digest: {want}")),
            "{text}"
        );
        assert!(!text.contains("WARNING"), "{kind}: {text}");
        let (ok, text) = zipalign_ok(&out);
        assert!(ok, "{kind}: not aligned: {text}");

        // Re-signing a signed APK replaces the signatures.
        let again = tmp.path().join(format!("again-{kind}.apk"));
        sign(
            &signer(if kind == "rsa" { "ec" } else { "rsa" }),
            &out,
            &again,
        )
        .unwrap();
        let other = signer(if kind == "rsa" { "ec" } else { "rsa" });
        other.verify(&again, &again).unwrap();
        assert!(
            s.verify(&again, &again).is_err(),
            "old signer still accepted"
        );
    }
    // A flipped byte inside an entry's data: our verify and apksigner refuse.
    let s = signer("rsa");
    let out = tmp.path().join("signed-rsa.apk");
    let mut f = File::open(&out).unwrap();
    let archive = zip::read_archive(&mut f, |_| false).unwrap();
    let raw = archive
        .entries
        .iter()
        .find(|e| e.name == "assets/raw.dat")
        .unwrap();
    flip(&out, raw.data_offset as usize + 3);
    assert!(s.verify(&apk, &out).is_err());
    let (ok, text) = apksigner(&out);
    assert!(
        !ok && !text.contains("\nVerifies"),
        "apksigner accepted a modified APK: {text}"
    );
}

#[test]
fn scheme_subsets_verify_with_apksigner() {
    let tmp = tempfile::tempdir().unwrap();
    let apk = fixture_apk(tmp.path());
    let s = ApkSigner::open(&cfg("ec", Some("v1, v2")), Some(&passphrase())).unwrap();
    let out = tmp.path().join("v1v2.apk");
    sign(&s, &apk, &out).unwrap();
    s.verify(&apk, &out).unwrap();
    let (ok, text) = apksigner(&out);
    assert!(ok, "{text}");
    assert!(
        text.contains("Verified using v1 scheme (JAR signing): true"),
        "{text}"
    );
    assert!(
        text.contains("Verified using v2 scheme (APK Signature Scheme v2): true"),
        "{text}"
    );
    assert!(
        text.contains("Verified using v3 scheme (APK Signature Scheme v3): false"),
        "{text}"
    );
}

#[test]
fn own_verify_and_probe() {
    let tmp = tempfile::tempdir().unwrap();
    for kind in ["rsa", "ec"] {
        let s = signer(kind);
        s.probe(tmp.path()).unwrap();
        s.probe(tmp.path()).unwrap();
    }
    // Our verifier catches a flipped byte anywhere in the three sections.
    let s = signer("ec");
    let input = tmp.path().join("in.apk");
    write_apk(
        &input,
        &[
            ("a.txt", b"hello hello hello", true),
            ("b.bin", b"raw", false),
        ],
    );
    let out = tmp.path().join("out.apk");
    sign(&s, &input, &out).unwrap();
    s.verify(&input, &out).unwrap();
    let len = std::fs::metadata(&out).unwrap().len() as usize;
    for at in [35, len - 30, len - 3] {
        flip(&out, at);
        assert!(s.verify(&input, &out).is_err(), "flip at {at} not caught");
        flip(&out, at);
        s.verify(&input, &out).unwrap();
    }
}

#[test]
fn v1_only_is_checked_entry_by_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let s = ApkSigner::open(&cfg("rsa", Some("v1")), Some(&passphrase())).unwrap();
    let input = tmp.path().join("in.apk");
    let long = format!("assets/{}.txt", "long-name-".repeat(12));
    write_apk(
        &input,
        &[
            ("a.txt", b"hello hello hello", true),
            ("b.bin", b"raw bytes", false),
            (&long, b"x", false),
        ],
    );
    let out = tmp.path().join("out.apk");
    sign(&s, &input, &out).unwrap();
    s.verify(&input, &out).unwrap();
    // A v2/v3 signer does not accept it (no signing block).
    assert!(signer("rsa").verify(&input, &out).is_err());
    let data = std::fs::read(&out).unwrap();
    let at = find(&data, b"raw bytes");
    flip(&out, at);
    match s.verify(&input, &out) {
        Err(SignError::Rejected(why)) => {
            assert!(why.contains("CRC") || why.contains("MANIFEST"), "{why}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn config_errors() {
    let pw = passphrase();
    assert!(matches!(
        ApkSigner::open(&cfg("rsa", Some("v4")), Some(&pw)),
        Err(SignError::Config(_))
    ));
    assert!(matches!(
        ApkSigner::open(&cfg("rsa", Some(" , ")), Some(&pw)),
        Err(SignError::Config(_))
    ));
    let mut c = cfg("rsa", None);
    c.cert = Some(certs().join("apk/ec/cert.pem"));
    assert!(matches!(
        ApkSigner::open(&c, Some(&pw)),
        Err(SignError::Config(_))
    ));
    c.cert = None;
    assert!(matches!(
        ApkSigner::open(&c, Some(&pw)),
        Err(SignError::Config(_))
    ));
    let c = cfg("rsa", None);
    assert!(needs_passphrase(&c).unwrap());
    assert!(matches!(ApkSigner::open(&c, None), Err(SignError::Key(_))));
    let wrong = SecretString::from("wrong".to_string());
    assert!(matches!(
        ApkSigner::open(&c, Some(&wrong)),
        Err(SignError::Key(_))
    ));
    let mut c = cfg("ec", None);
    c.digest = Some("sha1".into());
    assert!(matches!(
        ApkSigner::open(&c, Some(&pw)),
        Err(SignError::Config(_))
    ));
}

fn rejected(s: &ApkSigner, dir: &Path, name: &str, data: &[u8]) -> String {
    let input = dir.join(name);
    std::fs::write(&input, data).unwrap();
    let out = dir.join(format!("{name}.out"));
    match sign(s, &input, &out) {
        Err(SignError::Rejected(why)) => why,
        other => panic!("{name}: expected Rejected, got {other:?}"),
    }
}

/// Writes a small APK: `files`, then a minimal binary AndroidManifest.xml
/// (minSdkVersion 21) as the last entry.
fn write_apk(path: &Path, files: &[(&str, &[u8], bool)]) {
    let m = manifest::minimal(21);
    let mut all = files.to_vec();
    all.push(("AndroidManifest.xml", &m, true));
    zip::write_simple(path, &all).unwrap();
}

/// Builds a small APK (see [`write_apk`]) and returns its bytes.
fn small_zip(files: &[(&str, &[u8], bool)], dir: &Path) -> Vec<u8> {
    let p = dir.join("tmp.zip");
    write_apk(&p, files);
    std::fs::read(p).unwrap()
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).unwrap()
}

#[test]
fn malformed_zips_are_rejected_with_a_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let s = signer("ec");
    let why = rejected(&s, d, "empty", b"");
    assert!(why.contains("not a ZIP"), "{why}");
    let why = rejected(&s, d, "text", &[b'x'; 5000]);
    assert!(why.contains("not a ZIP"), "{why}");

    let good = small_zip(
        &[
            ("a.txt", b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", true),
            ("b.txt", b"bbbb", false),
        ],
        d,
    );
    let cd = find(&good, &[0x50, 0x4b, 1, 2]);

    // Duplicate names: rename b.txt to a.txt in both headers.
    let mut dup = good.clone();
    for _ in 0..2 {
        let at = find(&dup, b"b.txt");
        dup[at] = b'a';
    }
    let why = rejected(&s, d, "dup", &dup);
    assert!(why.contains("duplicate"), "{why}");

    // Local name differs from the central one.
    let mut mismatch = good.clone();
    let at = find(&mismatch, b"b.txt");
    mismatch[at] = b'c';
    let why = rejected(&s, d, "mismatch", &mismatch);
    assert!(why.contains("disagree"), "{why}");

    // Local CRC differs.
    let mut crc = good.clone();
    crc[14] ^= 1;
    let why = rejected(&s, d, "crc", &crc);
    assert!(why.contains("disagree"), "{why}");

    // CRC wrong in both headers: caught while inflating.
    let mut crc2 = good.clone();
    crc2[14] ^= 1;
    crc2[cd + 16] ^= 1;
    let why = rejected(&s, d, "crc2", &crc2);
    assert!(why.contains("CRC"), "{why}");

    // ZIP64: the EOCD says 0xffffffff.
    let mut z64 = good.clone();
    let eocd = good.len() - 22;
    z64[eocd + 16..eocd + 20].copy_from_slice(&[0xff; 4]);
    let why = rejected(&s, d, "zip64", &z64);
    assert!(why.contains("ZIP64"), "{why}");

    // Truncated: the central directory points past the data.
    let why = rejected(&s, d, "trunc", &good[..good.len() - 30]);
    assert!(why.contains("ZIP"), "{why}");

    // Encrypted flag.
    let mut enc = good.clone();
    enc[6] |= 1;
    enc[cd + 8] |= 1;
    let why = rejected(&s, d, "enc", &enc);
    assert!(why.contains("encrypted"), "{why}");

    // Zip bomb: the central directory claims an absurd uncompressed size.
    let mut bomb = good.clone();
    bomb[22..26].copy_from_slice(&(1u32 << 30).to_le_bytes());
    bomb[cd + 24..cd + 28].copy_from_slice(&(1u32 << 30).to_le_bytes());
    let why = rejected(&s, d, "bomb", &bomb);
    assert!(why.contains("ratio"), "{why}");

    // Content larger than announced (below the ratio limit): the inflater stops.
    let mut short = good.clone();
    short[22..26].copy_from_slice(&10u32.to_le_bytes());
    short[cd + 24..cd + 28].copy_from_slice(&10u32.to_le_bytes());
    let why = rejected(&s, d, "short", &short);
    assert!(why.contains("announced") || why.contains("size"), "{why}");

    // Corrupt deflate data.
    let mut corrupt = good.clone();
    // The first entry is deflated, so no alignment field: data at 30 + "a.txt".
    let start = 30 + 5;
    for b in &mut corrupt[start..start + 4] {
        *b = 0xff;
    }
    let why = rejected(&s, d, "corrupt", &corrupt);
    assert!(
        why.contains("deflate") || why.contains("CRC") || why.contains("size"),
        "{why}"
    );
}

#[test]
fn data_descriptors_are_handled() {
    // Python's zipfile writes data descriptors when writing to a stream; we
    // make one by hand on the last entry: set bit 3, zero the local
    // CRC/sizes, append a descriptor.
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let s = signer("rsa");
    let p = d.join("base.zip");
    let m = manifest::minimal(21);
    zip::write_simple(
        &p,
        &[
            ("AndroidManifest.xml", &m, true),
            ("a.txt", b"hello", false),
        ],
    )
    .unwrap();
    let good = std::fs::read(&p).unwrap();
    let cd = find(&good, &[0x50, 0x4b, 1, 2]);
    let lfh = good[..cd]
        .windows(4)
        .rposition(|w| w == [0x50, 0x4b, 3, 4])
        .unwrap();
    let mut z = good[..cd].to_vec();
    let (crc, size) = (
        z[lfh + 14..lfh + 18].to_vec(),
        z[lfh + 18..lfh + 22].to_vec(),
    );
    z[lfh + 6] |= 8;
    z[lfh + 14..lfh + 26].fill(0);
    z.extend_from_slice(&[0x50, 0x4b, 7, 8]);
    z.extend_from_slice(&crc);
    z.extend_from_slice(&size);
    z.extend_from_slice(&size);
    let mut central = good[cd..good.len() - 22].to_vec();
    let second = central
        .windows(4)
        .rposition(|w| w == [0x50, 0x4b, 1, 2])
        .unwrap();
    central[second + 8] |= 8;
    let new_cd = z.len() as u32;
    let cd_descriptor_crc = z.len() + second + 16;
    z.extend_from_slice(&central);
    let mut eocd = good[good.len() - 22..].to_vec();
    eocd[16..20].copy_from_slice(&new_cd.to_le_bytes());
    z.extend_from_slice(&eocd);
    let input = d.join("dd.zip");
    std::fs::write(&input, &z).unwrap();
    let out = d.join("dd-signed.zip");
    sign(&s, &input, &out).unwrap();
    s.verify(&input, &out).unwrap();
    // A descriptor that disagrees is refused.
    z[cd_descriptor_crc] ^= 1;
    std::fs::write(&input, &z).unwrap();
    let why = match sign(&s, &input, &out) {
        Err(SignError::Rejected(w)) => w,
        other => panic!("{other:?}"),
    };
    assert!(why.contains("descriptor"), "{why}");
}

#[test]
fn an_apk_signed_by_apksigner_is_stripped_and_resigned() {
    // A throwaway key for apksigner (it wants unencrypted PKCS#8 DER).
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (key, cert) = (d.join("other.pk8"), d.join("other.pem"));
    let (ok, out) = run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=other signer",
        ])
        .arg("-keyout")
        .arg(d.join("other.key"))
        .arg("-out")
        .arg(&cert));
    assert!(ok, "{out}");
    let (ok, out) = run(Command::new("openssl")
        .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
        .arg(d.join("other.key"))
        .arg("-out")
        .arg(&key));
    assert!(ok, "{out}");
    let apk = fixture_apk(d);
    let theirs = d.join("theirs.apk");
    let (ok, out) = run(Command::new("apksigner")
        .args(["sign", "--key"])
        .arg(&key)
        .arg("--cert")
        .arg(&cert)
        .arg("--out")
        .arg(&theirs)
        .arg(&apk));
    assert!(ok, "apksigner sign: {out}");

    let s = signer("ec");
    let ours = d.join("ours.apk");
    sign(&s, &theirs, &ours).unwrap();
    s.verify(&theirs, &ours).unwrap();
    let (ok, text) = apksigner(&ours);
    assert!(ok, "{text}");
    assert!(text.contains("Number of signers: 1"), "{text}");
    let want = std::fs::read_to_string(certs().join("apk/ec/CERT_SHA256")).unwrap();
    assert!(
        text.contains(&format!("Signer #1 certificate SHA-256 digest: {want}")),
        "{text}"
    );
    for line in [
        "v1 scheme (JAR signing): true",
        "v2 scheme (APK Signature Scheme v2): true",
        "v3 scheme (APK Signature Scheme v3): true",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }
}

/// Regression guard for the parser: no mutation of a valid ZIP's headers
/// may panic; each is signed or refused with `Rejected`.
#[test]
fn mutated_zips_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let s = signer("ec");
    let good = small_zip(
        &[
            ("a.txt", b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", true),
            ("lib/x.so", b"elf", false),
            ("META-INF/OLD.SF", b"x", false),
        ],
        d,
    );
    let input = d.join("m.zip");
    let output = d.join("m.out");
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut signed = 0;
    for i in 0..800 {
        let mut z = good.clone();
        // Mostly single bytes; sometimes a run of 0xff / 0x00.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = (x as usize) % z.len();
        match i % 3 {
            0 => z[at] ^= (x >> 32) as u8 | 1,
            1 => z[at..(at + 4).min(good.len())].fill(0xff),
            _ => z[at..(at + 2).min(good.len())].fill(0),
        }
        std::fs::write(&input, &z).unwrap();
        let _ = std::fs::remove_file(&output);
        match s.sign(&input, &output, &SignContext::default()) {
            Ok(()) => {
                s.verify(&input, &output).unwrap();
                signed += 1;
            }
            Err(SignError::Rejected(_)) => {}
            Err(e) => panic!("mutation {i} at {at}: not a rejection: {e:?}"),
        }
    }
    assert!(signed > 0 && signed < 800, "{signed}");
}

/// A real, large APK (Debian's framework-res.apk: 7600 entries, 45 MB,
/// unsigned): apksigner accepts our signature.
#[test]
fn the_android_framework_res_apk_signs_and_verifies() {
    let apk = Path::new("/usr/share/android-framework-res/framework-res.apk");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("framework-res-signed.apk");
    let s = signer("rsa");
    sign(&s, apk, &out).unwrap();
    s.verify(apk, &out).unwrap();
    // Its manifest targets the platform (API 28+, where only v3 is checked):
    // ask for API 21 up so that v1 and v2 are checked as well.
    let (ok, text) = run(Command::new("apksigner")
        .args(["verify", "--verbose", "--min-sdk-version", "21"])
        .arg(&out));
    assert!(ok, "{text}");
    for line in [
        "Verified using v1 scheme (JAR signing): true",
        "Verified using v2 scheme (APK Signature Scheme v2): true",
        "Verified using v3 scheme (APK Signature Scheme v3): true",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }
    let (ok, text) = zipalign_ok(&out);
    assert!(ok, "{text}");
}
