//! APK signing end to end: upload → fetch → `apksigner verify`, through the
//! real server, with fixture APKs made by aapt and zipalign.

use std::path::{Path, PathBuf};

use signing_tests::apk::{
    apksigner_key, apksigner_sign, apksigner_verify, apksigner_verify_range, cert_sha256,
    fixture_apk, other_key, par_map, raw_entries, sdk_fixture, server_opts, stored, write_zip,
    zipalign_check, RawEntry,
};
use signing_tests::*;

/// Uploads `body` to `format` and fetches the result: (status, body).
fn sign(s: &Server, token: &str, format: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let (status, text) = Upload::new(token, "app.apk", body).send(&s.client(), &s.url, format);
    assert_eq!(status, 202, "{text}");
    let (status, _, out) = fetch(&s.client(), &s.url, format, &sha256_hex(body));
    (status, out)
}

#[test]
fn apksigner_verifies_v1_v2_v3_for_rsa_and_ec_and_a_flipped_byte_fails() {
    let s = Server::start(&server_opts());
    let token = s.mint("127.0.0.1", 300);
    let dir = tempfile::tempdir().unwrap();
    let body = std::fs::read(fixture_apk(dir.path(), 7)).unwrap();
    for (format, kind) in [("apk", "rsa"), ("apk_ec", "ec")] {
        let (status, signed) = sign(&s, &token, format, &body);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&signed));
        let path = dir.path().join(format!("{format}.apk"));
        std::fs::write(&path, &signed).unwrap();
        let (ok, out) = apksigner_verify(&path);
        assert!(ok, "{format}: apksigner refused our APK: {out}");
        for line in [
            "Verifies",
            "Verified using v1 scheme (JAR signing): true",
            "Verified using v2 scheme (APK Signature Scheme v2): true",
            "Verified using v3 scheme (APK Signature Scheme v3): true",
            "Number of signers: 1",
        ] {
            assert!(
                out.lines().any(|l| l == line),
                "{format}: no {line:?} in\n{out}"
            );
        }
        let digest = format!(
            "Signer #1 certificate SHA-256 digest: {}",
            cert_sha256(kind)
        );
        assert!(
            out.lines().any(|l| l == digest),
            "{format}: wrong signer:\n{out}"
        );
        let (ok, out) = zipalign_check(&path);
        assert!(ok, "{format}: alignment lost: {out}");
    }

    // One flipped byte in the signed APK (inside the stored asset's data).
    let path = dir.path().join("apk.apk");
    let mut signed = std::fs::read(&path).unwrap();
    let at = signed
        .windows(7)
        .position(|w| w == b"stored ")
        .expect("the stored asset");
    signed[at] ^= 0x20;
    std::fs::write(&path, &signed).unwrap();
    let (ok, out) = apksigner_verify(&path);
    assert!(!ok, "apksigner accepted a modified APK:\n{out}");
    assert!(!out.lines().any(|l| l == "Verifies"), "{out}");
}

#[test]
fn schemes_setting_limits_the_signature_to_v2() {
    let s = Server::start(&server_opts());
    let token = s.mint("127.0.0.1", 300);
    let dir = tempfile::tempdir().unwrap();
    let body = std::fs::read(fixture_apk(dir.path(), 8)).unwrap();
    let (status, signed) = sign(&s, &token, "apk_v2", &body);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&signed));
    let path = dir.path().join("v2.apk");
    std::fs::write(&path, &signed).unwrap();
    // Without v1 the APK is only valid from API 24 (the first to read v2).
    let (ok, out) = run(std::process::Command::new("apksigner")
        .args(["verify", "--verbose", "--min-sdk-version", "24"])
        .arg(&path));
    assert!(ok, "{out}");
    assert!(
        out.contains("Verified using v1 scheme (JAR signing): false"),
        "{out}"
    );
    assert!(
        out.contains("Verified using v2 scheme (APK Signature Scheme v2): true"),
        "{out}"
    );
    assert!(
        out.contains("Verified using v3 scheme (APK Signature Scheme v3): false"),
        "{out}"
    );
    assert!(
        !signed.windows(16).any(|w| w == b"META-INF/CERT.SF"),
        "v1 files in a v2-only APK"
    );
}

#[test]
fn malformed_zips_are_rejected_with_422_and_a_reason() {
    let s = Server::start(&server_opts());
    let token = s.mint("127.0.0.1", 300);
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(fixture_apk(dir.path(), 9)).unwrap();

    let junk = data(50_000, 3);
    let (status, body) = sign(&s, &token, "apk", &junk);
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
    assert!(
        String::from_utf8_lossy(&body).contains("not a ZIP"),
        "{}",
        String::from_utf8_lossy(&body)
    );

    // Cut off the central directory's end: no EOCD left.
    let (status, body) = sign(&s, &token, "apk", &good[..good.len() - 40]);
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));

    // Two entries with the same name, "a" (empty, stored).
    let mut z = Vec::new();
    for _ in 0..2 {
        z.extend_from_slice(&[0x50, 0x4b, 3, 4, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        z.extend_from_slice(&[0u8; 12]);
        z.extend_from_slice(&[1, 0, 0, 0, b'a']);
    }
    let cd_start = z.len() as u32;
    for off in [0u32, 31] {
        z.extend_from_slice(&[0x50, 0x4b, 1, 2, 20, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        z.extend_from_slice(&[0u8; 12]);
        z.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        z.extend_from_slice(&off.to_le_bytes());
        z.push(b'a');
    }
    let cd_len = z.len() as u32 - cd_start;
    z.extend_from_slice(&[0x50, 0x4b, 5, 6, 0, 0, 0, 0, 2, 0, 2, 0]);
    z.extend_from_slice(&cd_len.to_le_bytes());
    z.extend_from_slice(&cd_start.to_le_bytes());
    z.extend_from_slice(&[0, 0]);
    let (status, body) = sign(&s, &token, "apk", &z);
    let reason = String::from_utf8_lossy(&body);
    assert_eq!(status, 422, "{reason}");
    assert!(reason.contains("duplicate"), "{reason}");

    // The server is still fine and signs a good APK afterwards.
    let (status, _) = sign(&s, &token, "apk_ec", &good);
    assert_eq!(status, 200);
    let audit = s.audit();
    assert_eq!(
        audit.lines().filter(|l| l.contains("\"rejected\"")).count(),
        3,
        "{audit}"
    );
}

#[test]
fn health_lists_the_apk_formats() {
    let s = Server::start(&server_opts());
    let h: serde_json::Value = serde_json::from_str(
        &s.client()
            .get(format!("{}/health", s.url))
            .send()
            .unwrap()
            .text()
            .unwrap(),
    )
    .unwrap();
    let formats = h["formats"].as_array().unwrap();
    for f in ["apk", "apk_ec", "apk_v2", "gpg"] {
        assert!(formats.iter().any(|v| v == f), "{f} missing: {h}");
    }
}

#[test]
fn a_large_apk_is_signed_in_bounded_memory() {
    let s = Server::start(&server_opts());
    let token = s.mint("127.0.0.1", 300);
    let dir = tempfile::tempdir().unwrap();
    let apk = fixture_apk(dir.path(), 11);
    // Grow the fixture with an 48 MiB stored asset (the test server takes up to 64M) (aapt add -0 bin), realigned.
    let big = dir.path().join("src/assets/big.bin");
    std::fs::write(&big, data(48 << 20, 12)).unwrap();
    let (ok, out) = run(std::process::Command::new("aapt")
        .current_dir(dir.path().join("src"))
        .args(["add", "-0", "bin"])
        .arg(dir.path().join("base.apk"))
        .arg("assets/big.bin"));
    assert!(ok, "{out}");
    std::fs::remove_file(&big).unwrap();
    let (ok, out) = run(std::process::Command::new("zipalign")
        .args(["-p", "-f", "4"])
        .arg(dir.path().join("base.apk"))
        .arg(&apk));
    assert!(ok, "{out}");
    let body = std::fs::read(&apk).unwrap();
    assert!(body.len() > 48 << 20);
    let (status, signed) = sign(&s, &token, "apk_ec", &body);
    assert_eq!(
        status,
        200,
        "{}",
        String::from_utf8_lossy(&signed[..signed.len().min(500)])
    );
    drop(body);
    let path = dir.path().join("big-signed.apk");
    std::fs::write(&path, &signed).unwrap();
    drop(signed);
    let (ok, out) = apksigner_verify(&path);
    assert!(ok && out.lines().any(|l| l == "Verifies"), "{out}");
    assert!(
        out.contains("Verified using v3 scheme (APK Signature Scheme v3): true"),
        "{out}"
    );

    // The server streamed the 48 MiB: its peak resident memory stays far below it.
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).unwrap();
    let hwm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    eprintln!("server peak RSS: {hwm_kb} kB");
    assert!(
        hwm_kb < 40 << 10,
        "server peak RSS {hwm_kb} kB for a 48 MiB APK"
    );
}

/// The JAR digest attribute of an APK's MANIFEST.MF (`SHA1-Digest`,
/// `SHA-256-Digest`), read with unzip.
fn v1_digest_attr(apk: &Path) -> String {
    let (ok, mf) = run(std::process::Command::new("unzip")
        .args(["-p"])
        .arg(apk)
        .arg("META-INF/MANIFEST.MF"));
    assert!(ok, "unzip: {mf}");
    let line = mf
        .lines()
        .find(|l| l.contains("-Digest: "))
        .unwrap_or_else(|| panic!("no digest in MANIFEST.MF of {}:\n{mf}", apk.display()));
    line.split(':').next().unwrap_or_default().to_string()
}

/// The API levels to check an APK signed for [min, max] at: `min` (apksigner
/// then checks every level from it to max) and each level where what
/// Android reads changes (18: SHA-256 and ECDSA in v1; 24: v2; 28: v3).
fn levels(min: u32, max: Option<u32>) -> Vec<u32> {
    let mut v = vec![min];
    v.extend(
        [18, 24, 28]
            .into_iter()
            .filter(|b| *b > min && max.is_none_or(|m| *b <= m)),
    );
    v
}

/// Issue 17: for each minSdkVersion (none, 1, 9, 9 with maxSdkVersion 17,
/// 14, 17, 18, 21, 24, 28, 33) and each key (RSA, EC), apksigner signs the
/// aapt-built APK or refuses it; where it signs, we sign with the same v1
/// digest and `apksigner verify` accepts ours at every API level of the
/// declared range; where it refuses (EC below 18), we answer 422.
#[test]
fn every_min_sdk_is_signed_as_apksigner_signs_it_and_verifies_on_its_range() {
    let s = Server::start(&server_opts());
    let token = s.mint("127.0.0.1", 600);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sdks: [(&str, Option<u32>, Option<u32>); 11] = [
        ("none", None, None),
        ("min1", Some(1), None),
        ("min9", Some(9), None),
        ("min9max17", Some(9), Some(17)),
        ("min14", Some(14), None),
        ("min17", Some(17), None),
        ("min18", Some(18), None),
        ("min21", Some(21), None),
        ("min24", Some(24), None),
        ("min28", Some(28), None),
        ("min33", Some(33), None),
    ];
    let keys = [
        ("rsa", "apk", apksigner_key(d, "rsa")),
        ("ec", "apk_ec", apksigner_key(d, "ec")),
    ];
    let mut cases = Vec::new();
    for (name, min, max) in sdks {
        let apk = sdk_fixture(d, name, min, max);
        for (kind, format, (key, cert)) in &keys {
            cases.push((
                name,
                min.unwrap_or(1),
                max,
                apk.clone(),
                *kind,
                *format,
                key,
                cert,
            ));
        }
    }
    // apksigner's verdict on each input, a few JVMs at a time.
    let theirs: Vec<(bool, String, PathBuf)> =
        par_map(&cases, |(name, _, _, apk, kind, _, key, cert)| {
            let out = d.join(format!("{name}-{kind}-apksigner.apk"));
            let (ok, text) = apksigner_sign(key, cert, &[], apk, &out);
            (ok, text, out)
        });
    // Ours, through the server.
    let mut to_verify = Vec::new();
    for (case, (their_ok, their_text, their_apk)) in cases.iter().zip(&theirs) {
        let (name, min, max, apk, kind, format, _, _) = case;
        let body = std::fs::read(apk).unwrap();
        let (status, signed) = sign(&s, &token, format, &body);
        let what = format!("{name} with {kind}");
        if !their_ok {
            // Only EC keys below API 18 are refused, by both.
            assert!(
                *kind == "ec" && *min < 18,
                "{what}: apksigner refused: {their_text}"
            );
            assert_eq!(status, 422, "{what}: apksigner refused, we said {status}");
            let why = String::from_utf8_lossy(&signed);
            assert!(
                why.contains("API 18") && why.contains("EC key"),
                "{what}: {why}"
            );
            continue;
        }
        assert_eq!(status, 200, "{what}: {}", String::from_utf8_lossy(&signed));
        let ours = d.join(format!("{name}-{kind}-ours.apk"));
        std::fs::write(&ours, &signed).unwrap();
        assert_eq!(
            v1_digest_attr(&ours),
            v1_digest_attr(their_apk),
            "{what}: our v1 digest differs from apksigner's"
        );
        for n in levels(*min, *max) {
            to_verify.push((what.clone(), ours.clone(), n, *max, *kind));
        }
    }
    assert!(to_verify.len() >= 30, "{}", to_verify.len());
    let verdicts = par_map(&to_verify, |(_, apk, n, max, _)| {
        apksigner_verify_range(apk, *n, *max)
    });
    for ((what, _, n, _, kind), (ok, out)) in to_verify.iter().zip(verdicts) {
        assert!(
            ok,
            "{what}: apksigner verify --min-sdk-version {n} refused ours:\n{out}"
        );
        assert!(out.lines().any(|l| l == "Verifies"), "{what} at {n}: {out}");
        assert!(out.lines().any(|l| l == "Number of signers: 1"), "{out}");
        let digest = format!(
            "Signer #1 certificate SHA-256 digest: {}",
            cert_sha256(kind)
        );
        assert!(
            out.lines().any(|l| l == digest),
            "{what} at {n}: wrong signer:\n{out}"
        );
        if *n < 24 {
            assert!(
                out.contains("Verified using v1 scheme (JAR signing): true"),
                "{what} at {n}: {out}"
            );
        }
    }
}

/// A ZIP of `entries` plus the binary AndroidManifest.xml of `base`.
fn with_manifest(base: &[RawEntry], entries: Vec<RawEntry>) -> Vec<RawEntry> {
    let mut all: Vec<RawEntry> = base
        .iter()
        .filter(|e| e.name == "AndroidManifest.xml")
        .cloned()
        .collect();
    all.extend(entries);
    all
}

/// Issue 17: ZIPs made byte by byte from an aapt-built APK's entries. Old
/// signature files with methods Android never reads, and a local header
/// that disagrees with the central directory on the method: apksigner signs
/// them, so do we, and apksigner verifies ours. ZIP64 and 70,000 entries:
/// apksigner refuses them, so do we (422, saying why).
#[test]
fn odd_zips_get_what_apksigner_gives_them() {
    let s = Server::start(&server_opts());
    let token = s.mint("127.0.0.1", 600);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = raw_entries(&std::fs::read(sdk_fixture(d, "odd", Some(21), None)).unwrap());
    assert!(base
        .iter()
        .any(|e| e.name == "assets/a.txt" && e.method == 8));

    let mut meta = base.clone();
    meta.push(stored(
        "META-INF/MANIFEST.MF",
        b"Manifest-Version: 1.0\r\nCreated-By: someone\r\n\r\n",
    ));
    for (name, method, local) in [
        ("META-INF/OLD.RSA", 12, 12),
        ("META-INF/OLD.SF", 14, 99),
        ("META-INF/SIG-OLD", 97, 0),
    ] {
        let mut e = stored(name, b"\x42\x5a\x68\x39 not what the method says");
        e.method = method;
        e.local_method = local;
        meta.push(e);
    }
    let mut disagree = base.clone();
    for e in &mut disagree {
        if e.name == "assets/a.txt" {
            e.local_method = 0;
        }
    }
    let many: Vec<RawEntry> = (0..70_000)
        .map(|i| stored(&format!("assets/{i:05}"), &[i as u8]))
        .collect();
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "old signature files in odd methods",
            write_zip(&meta, false),
            true,
        ),
        (
            "local and central method disagree",
            write_zip(&disagree, false),
            true,
        ),
        (
            "ZIP64, 70,000 entries",
            write_zip(&with_manifest(&base, many.clone()), true),
            false,
        ),
        (
            "70,000 entries without ZIP64",
            write_zip(&with_manifest(&base, many), false),
            false,
        ),
    ];
    let (key, cert) = apksigner_key(d, "rsa");
    let files: Vec<(PathBuf, PathBuf)> = cases
        .iter()
        .enumerate()
        .map(|(i, (_, z, _))| {
            let p = d.join(format!("odd{i}.apk"));
            std::fs::write(&p, z).unwrap();
            (p, d.join(format!("odd{i}-apksigner.apk")))
        })
        .collect();
    let theirs = par_map(&files, |(input, out)| {
        apksigner_sign(&key, &cert, &[], input, out)
    });
    for ((what, body, signs), (ok, text)) in cases.iter().zip(theirs) {
        assert_eq!(ok, *signs, "{what}: apksigner sign: {text}");
        let (status, signed) = sign(&s, &token, "apk", body);
        if !ok {
            let why = String::from_utf8_lossy(&signed);
            assert_eq!(
                status, 422,
                "{what}: apksigner refused ({text}), we said {status}: {why}"
            );
            assert!(why.contains("ZIP64"), "{what}: {why}");
            continue;
        }
        assert_eq!(status, 200, "{what}: {}", String::from_utf8_lossy(&signed));
        let ours = d.join("odd-ours.apk");
        std::fs::write(&ours, &signed).unwrap();
        let (ok, out) = apksigner_verify_range(&ours, 21, None);
        assert!(ok && out.lines().any(|l| l == "Verifies"), "{what}: {out}");
        assert!(
            !out.contains("OLD"),
            "{what}: an old signature file is left: {out}"
        );
        let entries: Vec<String> = raw_entries(&signed).into_iter().map(|e| e.name).collect();
        assert!(
            !entries.iter().any(|n| n.contains("OLD")),
            "{what}: {entries:?}"
        );
    }
}

/// Issue 17: APKs signed by apksigner with another key (v1 only; v1, v2 and
/// v3; v3 with a rotation lineage from one key to a second) come out with
/// exactly one signer, ours.
#[test]
fn already_signed_apks_get_exactly_one_signer_ours() {
    let s = Server::start(&server_opts());
    let token = s.mint("127.0.0.1", 600);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let apk = sdk_fixture(d, "signed", Some(21), None);
    let (a_key, a_cert) = other_key(d, "old-signer");
    let (b_key, b_cert) = other_key(d, "new-signer");
    let lineage = d.join("lineage.bin");
    let (ok, out) = run(std::process::Command::new("apksigner")
        .args(["rotate", "--out"])
        .arg(&lineage)
        .args(["--old-signer", "--key"])
        .arg(&a_key)
        .arg("--cert")
        .arg(&a_cert)
        .args(["--new-signer", "--key"])
        .arg(&b_key)
        .arg("--cert")
        .arg(&b_cert));
    assert!(ok, "apksigner rotate: {out}");
    let lineage_args: Vec<String> = [
        "--next-signer".into(),
        "--key".into(),
        b_key.display().to_string(),
        "--cert".into(),
        b_cert.display().to_string(),
        "--lineage".into(),
        lineage.display().to_string(),
    ]
    .to_vec();
    let variants: Vec<(&str, Vec<String>)> = vec![
        (
            "v1 only",
            vec![
                "--v2-signing-enabled".into(),
                "false".into(),
                "--v3-signing-enabled".into(),
                "false".into(),
            ],
        ),
        ("v1, v2, v3", vec![]),
        ("v3 with a rotation lineage", lineage_args),
    ];
    for (what, extra) in &variants {
        let theirs = d.join("theirs.apk");
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let (ok, out) = apksigner_sign(&a_key, &a_cert, &extra, &apk, &theirs);
        assert!(ok, "{what}: apksigner sign: {out}");
        let (ok, out) = apksigner_verify(&theirs);
        assert!(ok, "{what}: apksigner's own output: {out}");
        let (status, signed) = sign(&s, &token, "apk_ec", &std::fs::read(&theirs).unwrap());
        assert_eq!(status, 200, "{what}: {}", String::from_utf8_lossy(&signed));
        let ours = d.join("ours.apk");
        std::fs::write(&ours, &signed).unwrap();
        let (ok, out) = apksigner_verify_range(&ours, 21, None);
        assert!(ok, "{what}: {out}");
        assert!(
            out.lines().any(|l| l == "Number of signers: 1"),
            "{what}: {out}"
        );
        let ec = cert_sha256("ec");
        let digests: Vec<&str> = out
            .lines()
            .filter(|l| l.contains("certificate SHA-256 digest"))
            .collect();
        assert!(
            !digests.is_empty() && digests.iter().all(|l| l.ends_with(&ec)),
            "{what}: another signer is left: {out}"
        );
        for line in [
            "Verified using v1 scheme (JAR signing): true",
            "Verified using v2 scheme (APK Signature Scheme v2): true",
            "Verified using v3 scheme (APK Signature Scheme v3): true",
        ] {
            assert!(out.lines().any(|l| l == line), "{what}: no {line:?}: {out}");
        }
    }
}

/// Issue 17: a ZIP without AndroidManifest.xml is not an APK: apksigner
/// refuses it ("Missing AndroidManifest.xml"), we answer 422 naming it.
#[test]
fn a_zip_without_android_manifest_is_422() {
    let s = Server::start(&server_opts());
    let token = s.mint("127.0.0.1", 300);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, cert) = apksigner_key(d, "rsa");
    let jar = write_zip(
        &[
            stored("META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\r\n\r\n"),
            stored("org/example/Main.class", b"\xca\xfe\xba\xbe"),
        ],
        false,
    );
    for (what, body) in [
        ("an empty ZIP", write_zip(&[], false)),
        ("a plain .jar", jar),
    ] {
        let input = d.join("in.zip");
        std::fs::write(&input, &body).unwrap();
        let (ok, out) = apksigner_sign(&key, &cert, &[], &input, &d.join("out.apk"));
        assert!(
            !ok && out.contains("Missing AndroidManifest.xml"),
            "{what}: {out}"
        );
        let (status, reply) = sign(&s, &token, "apk", &body);
        let why = String::from_utf8_lossy(&reply);
        assert_eq!(status, 422, "{what}: {why}");
        assert!(why.contains("no AndroidManifest.xml"), "{what}: {why}");
    }
}

/// Issue 25 item 12 (from apktool's tests): signer files named
/// `META-INF/../../../../CERT.SF` and `.RSA`. apksigner signs such an APK as
/// content, but its verifier takes the `.RSA` for a signer of its own, so its
/// output does not verify: we refuse it (422, saying what to do). With the
/// `.SF` alone, apksigner's output verifies, and so does ours.
#[test]
fn signer_files_that_climb_out_of_meta_inf_get_what_apksigner_gives_them() {
    let s = Server::start(&server_opts());
    let token = s.mint("127.0.0.1", 300);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = raw_entries(&std::fs::read(sdk_fixture(d, "climb", Some(21), None)).unwrap());
    let (key, cert) = apksigner_key(d, "rsa");
    for (i, with_block) in [false, true].into_iter().enumerate() {
        let mut entries = base.clone();
        entries.push(stored(
            "META-INF/../../../../CERT.SF",
            b"Signature-Version: 1.0\r\n\r\n",
        ));
        if with_block {
            entries.push(stored("META-INF/../../../../CERT.RSA", b"\x30\x00"));
        }
        let input = d.join(format!("climb{i}.apk"));
        std::fs::write(&input, write_zip(&entries, false)).unwrap();
        let theirs = d.join(format!("climb{i}-apksigner.apk"));
        let (signed, text) = apksigner_sign(&key, &cert, &[], &input, &theirs);
        assert!(signed, "apksigner sign: {text}");
        let (theirs_ok, theirs_out) = apksigner_verify_range(&theirs, 21, None);
        assert_eq!(
            theirs_ok, !with_block,
            "apksigner's own output: {theirs_out}"
        );

        let (status, body) = sign(&s, &token, "apk", &std::fs::read(&input).unwrap());
        let why = String::from_utf8_lossy(&body);
        if with_block {
            assert_eq!(status, 422, "{why}");
            assert!(
                why.contains("CERT.RSA") && why.contains("remove it"),
                "{why}"
            );
            continue;
        }
        assert_eq!(status, 200, "{why}");
        let ours = d.join(format!("climb{i}-ours.apk"));
        std::fs::write(&ours, &body).unwrap();
        let (ok, out) = apksigner_verify_range(&ours, 21, None);
        assert!(ok && out.lines().any(|l| l == "Verifies"), "{out}");
    }
}
