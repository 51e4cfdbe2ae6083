//! GPG signing end to end: upload → fetch → gpgv, through the real server.

use signing_tests::*;

#[test]
fn detached_signature_verifies_with_gpgv_and_a_modified_file_fails() {
    let s = Server::start(&ServerOpts::default());
    let token = s.mint("127.0.0.1", 300);
    let body = data(300_000, 1);
    let (status, text) =
        Upload::new(&token, "firefox.tar.bz2", &body).send(&s.client(), &s.url, "gpg");
    assert_eq!(status, 202, "{text}");
    let (status, headers, sig) = fetch(&s.client(), &s.url, "gpg", &sha256_hex(&body));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&sig));
    assert_eq!(
        headers["x-sha256-digest"].to_str().unwrap(),
        sha256_hex(&sig)
    );
    assert_eq!(headers["x-sha1-digest"].to_str().unwrap(), sha1_hex(&sig));
    assert!(
        sig.starts_with(b"-----BEGIN PGP SIGNATURE-----"),
        "armoured detached signature"
    );

    let dir = tempfile::tempdir().unwrap();
    let (file, asc) = (dir.path().join("f"), dir.path().join("f.asc"));
    std::fs::write(&file, &body).unwrap();
    std::fs::write(&asc, &sig).unwrap();
    let (ok, out) = gpgv(&asc, &file);
    assert!(ok, "gpgv refused our signature: {out}");
    assert!(out.contains("Good signature"), "{out}");

    // gpg --verify, with the public key imported into a fresh keyring.
    let home = tempfile::tempdir().unwrap();
    let gpg = |args: &[&std::ffi::OsStr]| {
        run(std::process::Command::new("gpg")
            .arg("--homedir")
            .arg(home.path())
            .arg("--batch")
            .args(args))
    };
    let (ok, out) = gpg(&[
        "--import".as_ref(),
        certs().join("gpg/public.asc").as_os_str(),
    ]);
    assert!(ok, "{out}");
    let (ok, out) = gpg(&["--verify".as_ref(), asc.as_os_str(), file.as_os_str()]);
    assert!(ok, "gpg --verify refused our signature: {out}");

    let mut tampered = body.clone();
    tampered[12345] ^= 1;
    std::fs::write(&file, &tampered).unwrap();
    let (ok, out) = gpgv(&asc, &file);
    assert!(!ok, "gpgv accepted a modified file: {out}");
}

#[test]
fn fetch_by_sha1_and_the_audit_log_names_the_signing_without_secrets() {
    let s = Server::start(&ServerOpts::default());
    let token = s.mint("127.0.0.1", 300);
    let body = data(5000, 2);
    let mut up = Upload::new(&token, "a.zip", &body);
    up.sha1 = Some(sha1_hex(&body));
    up.sha256 = None;
    let (status, text) = up.send(&s.client(), &s.url, "gpg");
    assert_eq!(status, 202, "{text}");
    assert!(!s
        .client()
        .post(format!("{}/sign/gpg", s.url))
        .send()
        .unwrap()
        .headers()
        .contains_key("x-nonce"));
    let (status, _, sig) = fetch(&s.client(), &s.url, "gpg", &sha1_hex(&body));
    assert_eq!(status, 200);
    // The same result by sha256.
    let (status, _, sig2) = fetch(&s.client(), &s.url, "gpg", &sha256_hex(&body));
    assert_eq!((status, &sig2), (200, &sig));

    let audit = s.audit();
    let line: serde_json::Value =
        serde_json::from_str(audit.lines().next().expect("one audit line")).unwrap();
    assert_eq!(line["format"], "gpg");
    assert_eq!(line["filename"], "a.zip");
    assert_eq!(line["outcome"], "ok");
    assert_eq!(line["peer"], "127.0.0.1");
    assert_eq!(line["input_sha256"], sha256_hex(&body));
    assert_eq!(line["output_sha256"], sha256_hex(&sig));
    let chaff = token.split('!').next().unwrap().rsplit(':').next().unwrap();
    assert_eq!(line["token_id"], chaff);
    let mac = token.rsplit('!').next().unwrap();
    assert!(!audit.contains(mac), "the token MAC must not be audited");
    assert!(!audit.contains(&passphrase()));
    assert!(!s.stderr().contains(&passphrase()), "passphrase in the log");
    assert!(!s.stderr().contains(mac), "token MAC in the log");
}

#[test]
fn duplicate_upload_is_signed_once() {
    let s = Server::start(&ServerOpts::default());
    let token = s.mint("127.0.0.1", 300);
    let body = data(20_000, 3);
    for _ in 0..3 {
        let (status, text) = Upload::new(&token, "dup.bin", &body).send(&s.client(), &s.url, "gpg");
        assert_eq!(status, 202, "{text}");
    }
    let (status, _, _) = fetch(&s.client(), &s.url, "gpg", &sha256_hex(&body));
    assert_eq!(status, 200);
    let (status, _, _) = fetch(&s.client(), &s.url, "gpg", &sha256_hex(&body));
    assert_eq!(status, 200);
    assert_eq!(
        s.metric("signing_jobs_total{format=\"gpg\",outcome=\"ok\"}"),
        Some(1.0)
    );
    // Signed once; each re-upload audited as such.
    let audit = s.audit();
    assert_eq!(audit.matches("\"outcome\":\"ok\"").count(), 1, "{audit}");
    assert_eq!(
        audit.matches("\"outcome\":\"duplicate\"").count(),
        2,
        "{audit}"
    );
    assert_eq!(audit.lines().count(), 3, "{audit}");
}

#[test]
fn unknown_hash_is_404_without_pending_and_bad_hash_is_400() {
    let s = Server::start(&ServerOpts::default());
    let r = s
        .client()
        .get(format!("{}/sign/gpg/{}", s.url, "0".repeat(64)))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(!r.headers().contains_key("x-pending"));
    let r = s
        .client()
        .get(format!("{}/sign/gpg/not-a-hash", s.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = s
        .client()
        .get(format!("{}/sign/nope/{}", s.url, "0".repeat(64)))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[test]
fn health_and_metrics() {
    let s = Server::start(&ServerOpts::default());
    let h: serde_json::Value = serde_json::from_str(
        &s.client()
            .get(format!("{}/health", s.url))
            .send()
            .unwrap()
            .text()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["formats"], serde_json::json!(["gpg"]));
    assert_eq!(
        h["format_details"]["gpg"],
        serde_json::json!({"type": "gpg", "output": "detached", "digest_signing": false})
    );
    assert_eq!(h["queue_depth"], 0);
    let m = s
        .client()
        .get(format!("{}/metrics", s.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for name in [
        "signing_queue_depth ",
        "signing_upload_bytes_total ",
        "signing_uptime_seconds ",
    ] {
        assert!(m.contains(name), "{name} missing from /metrics:\n{m}");
    }
}

#[test]
fn sigterm_stops_cleanly_with_exit_0() {
    let s = Server::start(&ServerOpts::default());
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn concurrent_identical_uploads_are_signed_once() {
    let s = Server::start(&ServerOpts::default());
    let token = s.mint("127.0.0.1", 300);
    let body = data(2 << 20, 4);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                scope.spawn(|| {
                    Upload::new(&token, "same.bin", &body)
                        .send(&s.client(), &s.url, "gpg")
                        .0
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), 202);
        }
    });
    let (status, _, _) = fetch(&s.client(), &s.url, "gpg", &sha256_hex(&body));
    assert_eq!(status, 200);
    assert_eq!(
        s.metric("signing_jobs_total{format=\"gpg\",outcome=\"ok\"}"),
        Some(1.0)
    );
}

#[test]
fn unused_results_are_cleaned_up_after_max_file_age() {
    let mut opts = ServerOpts::default();
    opts.server_extra
        .push_str("max_file_age = 1\ncleanup_interval = 1\n");
    let s = Server::start(&opts);
    let token = s.mint("127.0.0.1", 300);
    let body = data(10_000, 5);
    assert_eq!(
        Upload::new(&token, "old.bin", &body)
            .send(&s.client(), &s.url, "gpg")
            .0,
        202
    );
    let (status, _, _) = fetch(&s.client(), &s.url, "gpg", &sha256_hex(&body));
    assert_eq!(status, 200);
    let results = s.work_dir().join("results");
    let count = |dir: &std::path::Path| files_under(dir).len();
    assert_eq!(count(&results), 1);
    assert_eq!(
        count(&s.work_dir().join("inputs")),
        0,
        "inputs are removed once signed"
    );
    // Wait (bounded) for the cleanup task: a wait, not a timing assertion.
    wait_until(std::time::Duration::from_secs(20), || count(&results) == 0);
    assert_eq!(count(&results), 0, "result not cleaned up");
    let r = s
        .client()
        .get(format!("{}/sign/gpg/{}", s.url, sha256_hex(&body)))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(!r.headers().contains_key("x-pending"));
}
