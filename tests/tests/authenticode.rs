//! Authenticode end to end: PE files built with mingw-w64 go through the real
//! server (`sha2signcode`, `sha2signcode-v2` with RFC 3161 timestamps from a
//! real `openssl ts` authority on loopback) and are checked with osslsigncode.

use std::path::Path;

use signing_tests::authenticode::{
    build_pe, checksum_mismatch, dead_url, osslsigncode_verify, Tsa, TsaMode,
};
use signing_tests::*;

/// `[format:NAME]` of type authenticode with the RSA test key.
fn format(name: &str, key: &str, extra: &str) -> String {
    let c = certs().join("authenticode");
    format!(
        "[format:{name}]\ntype = authenticode\nkey = {}\ncert = {}\n\
         program_name = signing-server test\nprogram_url = https://example.invalid/\n{extra}",
        c.join(format!("{key}.key")).display(),
        c.join(format!("{key}-chain.pem")).display(),
    )
}

fn server(formats: String) -> Server {
    // One passphrase line per distinct key file (all share the test passphrase).
    let stdin = format!("{p}\n{p}\n{p}\n", p = passphrase());
    Server::start(&ServerOpts {
        formats,
        stdin,
        ..ServerOpts::default()
    })
}

/// Uploads `file` to `fmt` and fetches the result: (status, body).
fn sign(s: &Server, fmt: &str, file: &Path) -> (u16, Vec<u8>) {
    let token = s.mint("127.0.0.1", 300);
    let body = std::fs::read(file).unwrap();
    let name = file.file_name().unwrap().to_string_lossy().to_string();
    let (status, text) = Upload::new(&token, &name, &body).send(&s.client(), &s.url, fmt);
    assert_eq!(status, 202, "{text}");
    let (status, _, out) = fetch(&s.client(), &s.url, fmt, &sha256_hex(&body));
    (status, out)
}

#[test]
fn sha2signcode_signs_exe_and_dll_of_both_architectures() {
    let s = server(format("sha2signcode", "rsa", ""));
    let dir = tempfile::tempdir().unwrap();
    for arch in ["x86_64", "i686"] {
        for dll in [false, true] {
            let pe = build_pe(dir.path(), arch, dll);
            let (status, signed) = sign(&s, "sha2signcode", &pe);
            assert_eq!(
                status,
                200,
                "{}\n{}",
                String::from_utf8_lossy(&signed),
                s.stderr()
            );
            let out = dir.path().join(format!("signed-{arch}-{dll}"));
            std::fs::write(&out, &signed).unwrap();
            let (text, ok) = osslsigncode_verify(&out);
            assert!(ok, "{arch} dll={dll}: {text}");
            assert!(text.contains("signing-server test"), "program name: {text}");
            assert!(!checksum_mismatch(&text), "{text}");
            // One flipped byte and osslsigncode refuses.
            let mut tampered = signed.clone();
            tampered[0x600] ^= 0x01;
            std::fs::write(&out, &tampered).unwrap();
            let (text, ok) = osslsigncode_verify(&out);
            assert!(!ok, "a modified file verified: {text}");
        }
    }
}

#[test]
fn not_a_pe_is_422_with_the_reason() {
    let s = server(format("sha2signcode", "ec", ""));
    let token = s.mint("127.0.0.1", 300);
    let body = data(5000, 9);
    let (status, text) =
        Upload::new(&token, "x.exe", &body).send(&s.client(), &s.url, "sha2signcode");
    assert_eq!(status, 202, "{text}");
    let (status, _, reason) = fetch(&s.client(), &s.url, "sha2signcode", &sha256_hex(&body));
    let reason = String::from_utf8_lossy(&reason);
    assert_eq!(status, 422, "{reason}");
    assert!(reason.contains("not a valid PE file"), "{reason}");
}

#[test]
fn sha2signcode_v2_timestamps_and_falls_over_to_the_next_tsa() {
    let tsa = Tsa::start(TsaMode::Good);
    let broken = Tsa::start(TsaMode::ServerError);
    let garbage = Tsa::start(TsaMode::Garbage);
    let dead = dead_url();
    let urls = format!(
        "timestamp_urls = {dead}, {}, {}, {}\ntimestamp_timeout = 10\n",
        broken.url, garbage.url, tsa.url
    );
    let s = server(format("sha2signcode", "rsa", "") + &format("sha2signcode-v2", "ec", &urls));
    // The start-up probe does not need a TSA.
    assert_eq!(tsa.count(), 0);

    let dir = tempfile::tempdir().unwrap();
    let pe = build_pe(dir.path(), "x86_64", true);
    let (status, signed) = sign(&s, "sha2signcode-v2", &pe);
    assert_eq!(
        status,
        200,
        "{}\n{}",
        String::from_utf8_lossy(&signed),
        s.stderr()
    );
    assert_eq!((broken.count(), garbage.count(), tsa.count()), (1, 1, 1));
    let out = dir.path().join("signed.dll");
    std::fs::write(&out, &signed).unwrap();
    let (text, ok) = osslsigncode_verify(&out);
    assert!(ok, "{text}");
    // osslsigncode exits 0 even when the timestamp does not verify: read the line.
    assert!(
        text.contains("Timestamp Server Signature verification: ok"),
        "{text}"
    );
    assert!(
        !text.contains("Timestamp Server Signature verification: failed"),
        "{text}"
    );
    // /metrics counts each failed authority once; the good one never.
    for bad in [&dead, &broken.url, &garbage.url] {
        assert_eq!(
            s.metric(&format!("signing_tsa_failures_total{{url=\"{bad}\"}}")),
            Some(1.0),
            "{bad}"
        );
    }
    assert_eq!(
        s.metric(&format!(
            "signing_tsa_failures_total{{url=\"{}\"}}",
            tsa.url
        )),
        None
    );
    // The certificate the good TSA signed with: its notAfter in /metrics (issue 20),
    // as openssl reads it; the failed TSAs gave no certificate.
    let tsa_expiry = s.metric(&format!(
        "signing_certificate_expiry_timestamp_seconds{{format=\"sha2signcode-v2\",cert=\"tsa\",url=\"{}\"}}",
        tsa.url
    ));
    assert_eq!(
        tsa_expiry,
        Some(not_after_of(&certs().join("authenticode/tsa.pem")) as f64)
    );
    assert!(s
        .metric(&format!(
            "signing_certificate_expiry_timestamp_seconds{{format=\"sha2signcode-v2\",cert=\"tsa\",url=\"{}\"}}",
            broken.url
        ))
        .is_none());

    // The untimestamped format on the same server has no timestamp.
    let pe32 = build_pe(dir.path(), "i686", false);
    let (status, signed) = sign(&s, "sha2signcode", &pe32);
    assert_eq!(status, 200);
    std::fs::write(&out, &signed).unwrap();
    let (text, ok) = osslsigncode_verify(&out);
    assert!(ok, "{text}");
    assert!(
        !text.contains("Timestamp Server Signature verification: ok"),
        "{text}"
    );
    assert_eq!(tsa.count(), 1);
}

#[test]
fn when_every_tsa_fails_the_job_fails_and_says_why() {
    let broken = Tsa::start(TsaMode::ServerError);
    let dead = dead_url();
    let urls = format!(
        "timestamp_urls = {dead}, {}\ntimestamp_timeout = 5\n",
        broken.url
    );
    let s = server(format("sha2signcode-v2", "rsa", &urls));
    let dir = tempfile::tempdir().unwrap();
    let pe = build_pe(dir.path(), "x86_64", false);
    let (status, body) = sign(&s, "sha2signcode-v2", &pe);
    assert_ne!(status, 200, "signed without a timestamp");
    assert!(!body.starts_with(b"MZ"));
    // The log line is read from the server's stderr by another thread: wait for it.
    let said = s.wait_log(
        "no time-stamping authority gave a valid timestamp",
        std::time::Duration::from_secs(10),
    );
    let log = s.stderr();
    assert!(said, "{log}");
    assert!(
        log.contains(&dead) && log.contains(&broken.url) && log.contains("500"),
        "{log}"
    );
}

/// A certificate's notAfter in Unix seconds, as openssl reads it.
fn not_after_of(cert: &std::path::Path) -> u64 {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-enddate", "-dateopt", "iso_8601", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let date = text.trim().trim_start_matches("notAfter=").to_string();
    let unix = std::process::Command::new("date")
        .args(["-u", "-d", &date, "+%s"])
        .output()
        .unwrap();
    String::from_utf8(unix.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}
