//! APK signing end to end: upload → fetch → `apksigner verify`, through the
//! real server, with fixture APKs made by aapt and zipalign.

use signing_tests::apk::{apksigner_verify, cert_sha256, fixture_apk, server_opts, zipalign_check};
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
