//! Digest signing (issue 16) end to end: the real server with
//! `digest_signing = yes`, our signtool, real TLS; every output checked by
//! the tool users trust (gpgv, Mozilla's `mar -v -k`, `osslsigncode verify`
//! for PE and MSI), and the server's `signing_received_bytes_total` shows
//! the file never travelled.

use std::path::Path;

use signing_tests::digest::sha256_parts;
use signing_tests::mar::{make_mar, mar_verify, pubkey};
use signing_tests::signtool::{host_of, output, signtool_sign};
use signing_tests::*;

/// gpg and the two MAR formats, all with `digest_signing = yes`, plus
/// `gpg-upload` (the same key, whole files only).
fn opts() -> ServerOpts {
    let mut o = signing_tests::mar::opts("digest_signing = yes");
    let gpg = ServerOpts::default().formats;
    o.formats = format!(
        "{gpg}digest_signing = yes\n\n{}\n{}",
        gpg.replace("[format:gpg]", "[format:gpg-upload]"),
        o.formats
    );
    o.stdin = format!("{pw}\n{pw}\n{pw}\n", pw = passphrase());
    o
}

fn received(s: &Server, format: &str) -> f64 {
    s.metric(&format!(
        "signing_received_bytes_total{{format=\"{format}\"}}"
    ))
    .unwrap_or(0.0)
}

fn token_file(s: &Server, dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (token, nonce) = (dir.join("token"), dir.join("nonce"));
    std::fs::write(&token, s.mint("127.0.0.1", 300)).unwrap();
    (token, nonce)
}

#[test]
fn health_tells_each_formats_output_and_digest_signing() {
    let s = Server::start(&opts());
    let h = s.health();
    let d = &h["format_details"];
    assert_eq!(d["gpg"]["output"], "detached", "{h}");
    assert_eq!(d["gpg"]["digest_signing"], true, "{h}");
    assert_eq!(d["gpg"]["digest"], "sha256_state", "{h}");
    assert_eq!(d["gpg-upload"]["digest_signing"], false, "{h}");
    assert!(d["gpg-upload"].get("digest").is_none(), "{h}");
    assert_eq!(d["mar"]["output"], "file", "{h}");
    assert_eq!(d["mar"]["digest"], "mar:1:256", "{h}");
    assert_eq!(d["mar_sha384"]["digest"], "mar:2:512", "{h}");
}

#[test]
fn signtool_signs_a_gpg_file_by_digest_without_sending_it() {
    let s = Server::start(&opts());
    let dir = tempfile::tempdir().unwrap();
    let (token, nonce) = token_file(&s, dir.path());
    // Several MiB, not a multiple of 64 bytes: the state has a tail.
    let file = dir.path().join("big.bin");
    let body = data((6 << 20) + 37, 11);
    std::fs::write(&file, &body).unwrap();
    let host = host_of("gpg", &s.url);
    let (code, out) = output(
        signtool_sign(std::slice::from_ref(&host), &token, &nonce)
            .args(["-f", "gpg"])
            .arg(&file),
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("signed by digest"), "{out}");
    let asc = dir.path().join("big.bin.asc");
    let (ok, text) = gpgv(&asc, &file);
    assert!(ok, "gpgv: {text}");
    let got = received(&s, "gpg");
    assert!(
        got > 0.0 && got < 64.0 * 1024.0,
        "received {got} bytes for a 6 MiB file"
    );
    assert_eq!(
        s.metric("signing_digest_signatures_total{format=\"gpg\",outcome=\"ok\"}"),
        Some(1.0)
    );
    // Audited: mode, the file's sha256 (the state, finished), label, token id.
    let audit = s.audit();
    let line = audit
        .lines()
        .find(|l| l.contains("\"mode\":\"digest\""))
        .expect(&audit);
    let rec: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(rec["format"], "gpg");
    assert_eq!(rec["filename"], "big.bin");
    assert_eq!(rec["digest"], sha256_hex(&body));
    assert_eq!(rec["input_sha256"], sha256_hex(&body));
    assert!(
        rec["token_id"].as_str().is_some_and(|t| !t.is_empty()),
        "{rec}"
    );
    // A changed file does not verify against that signature.
    let mut other = body.clone();
    other[1000] ^= 1;
    std::fs::write(&file, &other).unwrap();
    assert!(
        !gpgv(&asc, &file).0,
        "a signature verified over another file"
    );

    // --whole-file uploads: the counter grows by the file's size.
    std::fs::write(&file, &body).unwrap();
    std::fs::remove_file(&asc).unwrap();
    let (code, out) = output(
        signtool_sign(&[host], &token, &nonce)
            .args(["-f", "gpg", "--whole-file"])
            .arg(&file),
    );
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("signed by digest"), "{out}");
    assert!(gpgv(&asc, &file).0);
    assert!(received(&s, "gpg") - got >= body.len() as f64);
}

#[test]
fn a_format_without_digest_signing_is_uploaded() {
    let s = Server::start(&opts());
    let dir = tempfile::tempdir().unwrap();
    let (token, nonce) = token_file(&s, dir.path());
    let file = dir.path().join("f.bin");
    let body = data(200_000, 12);
    std::fs::write(&file, &body).unwrap();
    let (code, out) = output(
        signtool_sign(&[host_of("gpg-upload", &s.url)], &token, &nonce)
            .args(["-f", "gpg-upload"])
            .arg(&file),
    );
    assert_eq!(code, 0, "{out}");
    // Uploaded: every byte arrived.
    assert!(gpgv(&dir.path().join("f.bin.asc"), &file).0);
    assert!(received(&s, "gpg-upload") >= body.len() as f64);
}

#[test]
fn signtool_signs_mars_by_digest_and_mozillas_tool_verifies_them() {
    let s = Server::start(&opts());
    let dir = tempfile::tempdir().unwrap();
    let (token, nonce) = token_file(&s, dir.path());
    let big = data(3 << 20, 13);
    let files: [(&str, &[u8]); 2] = [
        ("update.manifest", b"type \"complete\"\nadd \"firefox\"\n"),
        ("firefox", &big),
    ];
    for (format, key) in [("mar", "sha1-2048"), ("mar_sha384", "sha384-4096")] {
        let mar = make_mar(
            dir.path(),
            &format!("{format}.mar"),
            &["-V", "1.0", "-H", "release"],
            &files,
        );
        let size = std::fs::metadata(&mar).unwrap().len();
        let before = received(&s, format);
        let (code, out) = output(
            signtool_sign(&[host_of(format, &s.url)], &token, &nonce)
                .args(["-f", format])
                .arg(&mar),
        );
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("signed by digest"), "{out}");
        let (ok, text) = mar_verify(&mar, &pubkey(key));
        assert!(ok, "mar -v -k for {format}: {text}");
        let sent = received(&s, format) - before;
        assert!(
            sent < 64.0 * 1024.0,
            "{format}: received {sent} bytes for a {size}-byte MAR"
        );
        // The other key does not verify it.
        let other = if key == "sha1-2048" {
            "sha384-4096"
        } else {
            "sha1-2048"
        };
        assert!(!mar_verify(&mar, &pubkey(other)).0);
        // Signed again (it now carries a signature): replaced, still verifies.
        let (code, out) = output(
            signtool_sign(&[host_of(format, &s.url)], &token, &nonce)
                .args(["-f", format])
                .arg(&mar),
        );
        assert_eq!(code, 0, "{out}");
        assert!(mar_verify(&mar, &pubkey(key)).0);
    }
}

#[test]
fn a_digest_request_by_hand_gets_a_signature_gpgv_accepts() {
    let s = Server::start(&opts());
    let token = s.mint("127.0.0.1", 60);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.bin");
    let body = data(100_003, 14);
    std::fs::write(&file, &body).unwrap();
    let (words, length, tail) = sha256_parts(&body);
    let r = s
        .client()
        .post(format!("{}/digest/gpg", s.url))
        .form(&[
            ("token", token.as_str()),
            ("filename", "f.bin"),
            ("sha256_state", &words),
            ("length", &length),
            ("tail", &tail),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let want = r.headers()["x-sha256-digest"].to_str().unwrap().to_string();
    let sig = r.bytes().unwrap();
    assert_eq!(sha256_hex(&sig), want);
    std::fs::write(dir.path().join("f.bin.asc"), &sig).unwrap();
    let (ok, text) = gpgv(&dir.path().join("f.bin.asc"), &file);
    assert!(ok, "{text}");
}

#[test]
fn signtool_follows_health_not_the_name_for_detached_output() {
    // A gpg format named like a content format: /health says detached.
    let mut o = ServerOpts::default();
    o.formats =
        o.formats.replace("[format:gpg]", "[format:release-sig]") + "digest_signing = yes\n";
    let s = Server::start(&o);
    let dir = tempfile::tempdir().unwrap();
    let (token, nonce) = token_file(&s, dir.path());
    let file = dir.path().join("app.bin");
    let body = data(70_000, 15);
    std::fs::write(&file, &body).unwrap();
    let (code, out) = output(
        signtool_sign(&[host_of("release-sig", &s.url)], &token, &nonce)
            .args(["-f", "release-sig"])
            .arg(&file),
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        body,
        "the input must stay untouched"
    );
    let (ok, text) = gpgv(&dir.path().join("app.bin.asc"), &file);
    assert!(ok, "{text}");
}

#[test]
fn signtool_signs_pes_by_digest_with_a_timestamp_and_osslsigncode_verifies_them() {
    use signing_tests::authenticode::{
        build_pe, checksum_mismatch, osslsigncode_verify, Tsa, TsaMode,
    };
    let tsa = Tsa::start(TsaMode::Good);
    let s = authenticode_server(&tsa.url);
    let dir = tempfile::tempdir().unwrap();
    let (token, nonce) = token_file(&s, dir.path());
    let host = host_of("sha2signcode", &s.url);
    for (arch, dll) in [("x86_64", false), ("i686", true)] {
        let pe = build_pe(dir.path(), arch, dll);
        let (code, out) = output(
            signtool_sign(std::slice::from_ref(&host), &token, &nonce)
                .args(["-f", "sha2signcode"])
                .arg(&pe),
        );
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("signed by digest"), "{out}");
        let (text, ok) = osslsigncode_verify(&pe);
        assert!(ok, "{arch} dll={dll}: {text}");
        assert!(text.contains("digest test"), "program name: {text}");
        assert!(
            text.contains("Timestamp Server Signature verification: ok"),
            "{text}"
        );
        assert!(!checksum_mismatch(&text), "{text}");
        // Signed again: the signature is replaced, it still verifies.
        let (code, out) = output(
            signtool_sign(std::slice::from_ref(&host), &token, &nonce)
                .args(["-f", "sha2signcode"])
                .arg(&pe),
        );
        assert_eq!(code, 0, "{out}");
        assert!(osslsigncode_verify(&pe).1);
        let mut tampered = std::fs::read(&pe).unwrap();
        tampered[0x600] ^= 1;
        std::fs::write(&pe, &tampered).unwrap();
        assert!(!osslsigncode_verify(&pe).1, "a modified PE verified");
    }
    let got = received(&s, "sha2signcode");
    assert!(
        got > 0.0 && got < 4.0 * 64.0 * 1024.0,
        "received {got} bytes for four signings"
    );
    assert!(tsa.count() >= 4, "the timestamps came from the TSA");
}

/// `sha2signcode`: Authenticode with the RSA test key, timestamped by the
/// TSA at `tsa_url`, `digest_signing = yes`.
fn authenticode_server(tsa_url: &str) -> Server {
    let c = certs().join("authenticode");
    let formats = format!(
        "[format:sha2signcode]\ntype = authenticode\nkey = {}\ncert = {}\n\
         program_name = digest test\ntimestamp_urls = {tsa_url}\ndigest_signing = yes\n",
        c.join("rsa.key").display(),
        c.join("rsa-chain.pem").display(),
    );
    Server::start(&ServerOpts {
        formats,
        ..ServerOpts::default()
    })
}

/// Where `needle` first occurs in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{needle:?} not found"))
}

#[test]
fn signtool_signs_msis_by_digest_and_osslsigncode_verifies_them() {
    use signing_tests::authenticode::{osslsigncode_verify, Tsa, TsaMode};
    use signing_tests::windows::{
        build_msi, osslsigncode_sign, require_osslsigncode_2_9, signature_count,
    };
    require_osslsigncode_2_9();
    let tsa = Tsa::start(TsaMode::Good);
    let s = authenticode_server(&tsa.url);
    let h = s.health();
    let d = &h["format_details"]["sha2signcode"];
    assert_eq!(d["digest"], "authenticode:sha256", "{h}");
    assert_eq!(
        d["digest_containers"],
        serde_json::json!(["pe", "msi", "cab"]),
        "{h}"
    );

    let dir = tempfile::tempdir().unwrap();
    let (token, nonce) = token_file(&s, dir.path());
    let host = host_of("sha2signcode", &s.url);
    let sign = |file: &Path| {
        output(
            signtool_sign(std::slice::from_ref(&host), &token, &nonce)
                .args(["-f", "sha2signcode"])
                .arg(file),
        )
    };
    // Hex of random bytes: the payload cabinet stays about 100 KB.
    let msi = build_msi(dir.path(), "product", &hex::encode(data(100_000, 16)));
    let size = std::fs::metadata(&msi).unwrap().len();
    let (code, out) = sign(&msi);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("signed by digest"), "{out}");
    let (text, ok) = osslsigncode_verify(&msi);
    assert!(ok && signature_count(&text) == Some(1), "{text}");
    assert!(text.contains("digest test"), "program name: {text}");
    assert!(
        text.contains("Timestamp Server Signature verification: ok"),
        "{text}"
    );
    let got = received(&s, "sha2signcode");
    assert!(
        size > 100_000 && got > 0.0 && got < 16.0 * 1024.0,
        "received {got} bytes for a {size}-byte MSI"
    );

    // Signed again: the signature is replaced, exactly one, still valid.
    let (code, out) = sign(&msi);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("signed by digest"), "{out}");
    let (text, ok) = osslsigncode_verify(&msi);
    assert!(ok && signature_count(&text) == Some(1), "{text}");

    // Signed by the reference with the MsiDigitalSignatureEx pre-hash:
    // both of its streams go, ours is the one signature.
    let theirs = dir.path().join("theirs.msi");
    let (ok, text) = osslsigncode_sign(&msi, &theirs, &["-add-msi-dse"]);
    assert!(ok, "osslsigncode sign: {text}");
    let (text, _) = osslsigncode_verify(&theirs);
    assert!(text.contains("Current MsiDigitalSignatureEx"), "{text}");
    let (code, out) = sign(&theirs);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("signed by digest"), "{out}");
    let (text, ok) = osslsigncode_verify(&theirs);
    assert!(ok && signature_count(&text) == Some(1), "{text}");
    assert!(!text.contains("Current MsiDigitalSignatureEx"), "{text}");
    assert!(text.contains("digest test"), "ours, not theirs: {text}");

    // A flipped byte of the payload cabinet (a stream of the MSI) fails.
    let mut tampered = std::fs::read(&msi).unwrap();
    let at = find(&tampered, b"MSCF") + 10;
    tampered[at] ^= 1;
    std::fs::write(&msi, &tampered).unwrap();
    assert!(!osslsigncode_verify(&msi).1, "a modified MSI verified");

    assert!(tsa.count() >= 3, "the timestamps came from the TSA");
}

#[test]
fn signtool_signs_cabinets_by_digest_and_uploads_scripts() {
    use signing_tests::authenticode::{osslsigncode_verify, Tsa, TsaMode};
    use signing_tests::windows::{
        build_cab, osslsigncode_sign, ps1_text, require_osslsigncode_2_9, signature_count,
        TextEncoding,
    };
    require_osslsigncode_2_9();
    let tsa = Tsa::start(TsaMode::Good);
    let s = authenticode_server(&tsa.url);
    let dir = tempfile::tempdir().unwrap();
    let (token, nonce) = token_file(&s, dir.path());
    let host = host_of("sha2signcode", &s.url);
    let sign = |file: &Path| {
        output(
            signtool_sign(std::slice::from_ref(&host), &token, &nonce)
                .args(["-f", "sha2signcode"])
                .arg(file),
        )
    };
    for compress in [false, true] {
        let cab = build_cab(dir.path(), &format!("files-{compress}"), compress);
        let size = std::fs::metadata(&cab).unwrap().len() as f64;
        let before = received(&s, "sha2signcode");
        let (code, out) = sign(&cab);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("signed by digest"), "{out}");
        let (text, ok) = osslsigncode_verify(&cab);
        assert!(ok && signature_count(&text) == Some(1), "{text}");
        assert!(
            text.contains("Timestamp Server Signature verification: ok"),
            "{text}"
        );
        let sent = received(&s, "sha2signcode") - before;
        assert!(
            sent < 16.0 * 1024.0 && sent < size / 2.0,
            "received {sent} bytes for {size}"
        );

        // Signed by the reference, then by us: one signature, ours.
        let theirs = dir.path().join(format!("theirs-{compress}.cab"));
        let (ok, text) = osslsigncode_sign(&cab, &theirs, &[]);
        assert!(ok, "osslsigncode sign: {text}");
        let (code, out) = sign(&theirs);
        assert_eq!(code, 0, "{out}");
        let (text, ok) = osslsigncode_verify(&theirs);
        assert!(ok && signature_count(&text) == Some(1), "{text}");
        assert!(text.contains("digest test"), "ours, not theirs: {text}");

        // A flipped byte of the data fails.
        let mut tampered = std::fs::read(&cab).unwrap();
        let at = tampered.len() / 3;
        tampered[at] ^= 1;
        std::fs::write(&cab, &tampered).unwrap();
        assert!(!osslsigncode_verify(&cab).1, "a modified cabinet verified");
    }

    // A script is not signed by digest: it is uploaded, and verifies.
    let ps1 = dir.path().join("hello.ps1");
    let text = ps1_text(true, TextEncoding::Utf8Bom);
    std::fs::write(&ps1, &text).unwrap();
    let before = received(&s, "sha2signcode");
    let (code, out) = sign(&ps1);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("OK (signed by digest"), "{out}");
    assert!(out.contains("uploading"), "{out}");
    let (verified, ok) = osslsigncode_verify(&ps1);
    assert!(ok, "{verified}");
    assert!(received(&s, "sha2signcode") - before >= text.len() as f64);
}

#[test]
fn a_digest_request_for_an_msi_is_checked_before_signing() {
    let s = authenticode_server("http://127.0.0.1:9/");
    let token = s.mint("127.0.0.1", 60);
    let ask = |fields: &[(&str, &str)]| {
        let mut form = vec![("token", token.as_str()), ("filename", "p.msi")];
        form.extend_from_slice(fields);
        let r = s
            .client()
            .post(format!("{}/digest/sha2signcode", s.url))
            .form(&form)
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    let sha256 = "ab".repeat(32);
    // An MSI hash of SHA-1's length for a SHA-256 format.
    let (status, body) = ask(&[("container", "msi"), ("digest", &"ab".repeat(20))]);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("must be 32 bytes"), "{body}");
    // A container this server does not sign by digest.
    let (status, body) = ask(&[("container", "appx"), ("digest", &sha256)]);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("only pe, msi, cab"), "{body}");
    let signed =
        s.metric("signing_digest_signatures_total{format=\"sha2signcode\",outcome=\"ok\"}");
    assert_eq!(signed.unwrap_or(0.0), 0.0, "nothing was signed");
}

/// `concurrency` bounds digest signings as it bounds jobs (issue 26): 48
/// RSA-4096 digest signings sent 8 at a time never run more than
/// `concurrency` at once (`signing_concurrent_peak`), each one answered and
/// counted. Before they went through the queue, they ran beside it.
#[test]
fn concurrency_bounds_digest_signings() {
    for concurrency in [1, 2] {
        let mut o = opts();
        o.server_extra
            .push_str(&format!("concurrency = {concurrency}\n"));
        let s = Server::start(&o);
        let token = s.mint("127.0.0.1", 120);
        let c = s.client();
        std::thread::scope(|scope| {
            for t in 0..8u32 {
                let (c, token, url) = (c.clone(), &token, &s.url);
                scope.spawn(move || {
                    for i in 0..6u32 {
                        let digest = format!("{:0>96x}", t * 100 + i + 1);
                        let r = c
                            .post(format!("{url}/digest/mar_sha384"))
                            .form(&[
                                ("token", token.as_str()),
                                ("filename", "x.mar"),
                                ("digest", &digest),
                            ])
                            .send()
                            .unwrap();
                        assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
                    }
                });
            }
        });
        let peak = s.metric("signing_concurrent_peak").unwrap();
        assert!(
            (1.0..=concurrency as f64).contains(&peak),
            "concurrency = {concurrency}, yet {peak} signings ran at once"
        );
        let ok = "signing_digest_signatures_total{format=\"mar_sha384\",outcome=\"ok\"}";
        assert_eq!(s.metric(ok), Some(48.0));
        assert_eq!(s.audit().lines().count(), 48, "one audit line per signing");
    }
}
