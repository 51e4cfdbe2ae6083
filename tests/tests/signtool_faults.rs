//! `signtool` against misbehaving peers (fault injectors from
//! signing_tests::signtool) and refusing servers: it moves on within its
//! timeouts, never writes an unverified result, fails fast where another host
//! would say the same, and leaves nothing behind when interrupted. Every
//! signature checked comes from a real signing-server and is verified with gpgv.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use signing_tests::signtool::*;
use signing_tests::*;

fn opts() -> ServerOpts {
    ServerOpts {
        server_extra: "long_poll = 2\n".into(),
        ..ServerOpts::default()
    }
}

fn asc(f: &Path) -> PathBuf {
    PathBuf::from(format!("{}.asc", f.display()))
}

#[test]
fn silent_busy_reset_and_lying_peers_are_passed_over_and_a_real_server_signs() {
    let silent = FakePeer::start(PeerFault::Silent);
    let busy = FakePeer::start(PeerFault::Busy);
    let reset = FakePeer::start(PeerFault::ResetMidBody);
    let liar = FakePeer::start(PeerFault::WrongDigest);
    let s = Server::start(&opts());
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("token");
    std::fs::write(&tok, s.mint("127.0.0.1", 300)).unwrap();
    let files: Vec<_> = (0..2)
        .map(|k| dir.path().join(format!("f{k}.bin")))
        .collect();
    for (k, f) in files.iter().enumerate() {
        std::fs::write(f, data(40_000, 50 + k as u64)).unwrap();
    }
    let hosts = [
        silent.host("gpg"),
        busy.host("gpg"),
        reset.host("gpg"),
        liar.host("gpg"),
        host_of("gpg", &s.url),
    ];
    let started = Instant::now();
    let (code, log) = output(
        signtool_sign(&hosts, &tok, &dir.path().join("n"))
            .args([
                "-f",
                "gpg",
                "--jobs",
                "1",
                "--connect-timeout",
                "1",
                "--read-timeout",
                "3",
            ])
            .args(&files),
    );
    assert_eq!(code, 0, "{log}");
    for f in &files {
        let (ok, v) = gpgv(&asc(f), f);
        assert!(ok, "{v}\n{log}");
        assert!(
            !std::fs::read(asc(f))
                .unwrap()
                .windows(20)
                .any(|w| w == &BOGUS[30..50]),
            "the bogus body was written"
        );
    }
    for (peer, what) in [
        (&silent, "timed out"),
        (&busy, "503"),
        (&reset, "connection broke"),
        (&liar, "digest mismatch"),
    ] {
        assert!(
            peer.connections.load(std::sync::atomic::Ordering::Relaxed) > 0,
            "{} never contacted",
            peer.url()
        );
        assert!(
            log.contains(&format!("{} failed ({what}", peer.url())),
            "no {what:?} for {}:\n{log}",
            peer.url()
        );
    }
    // The second file started where the first succeeded: one pass over the bad hosts only.
    assert_eq!(
        log.matches(&format!("{} failed", silent.url())).count(),
        1,
        "{log}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert!(temp_files(dir.path()).is_empty());
}

#[test]
fn only_bad_peers_fail_the_file_naming_every_host_and_writing_nothing() {
    let liar = FakePeer::start(PeerFault::WrongDigest);
    let busy = FakePeer::start(PeerFault::Busy);
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("token");
    std::fs::write(&tok, "127.0.0.1:0:0:x!y").unwrap();
    let f = dir.path().join("f.bin");
    std::fs::write(&f, data(1000, 1)).unwrap();
    let (code, log) = output(
        signtool_sign(
            &[liar.host("gpg"), busy.host("gpg")],
            &tok,
            &dir.path().join("n"),
        )
        .args(["-f", "gpg", "--max-errors", "4"])
        .arg(&f),
    );
    assert_eq!(code, 1, "{log}");
    let failed = log
        .split_once("FAILED")
        .unwrap_or_else(|| panic!("no FAILED message:\n{log}"))
        .1;
    assert!(
        failed.contains(&liar.url()) && failed.contains("digest mismatch"),
        "{failed}"
    );
    assert!(
        failed.contains(&busy.url()) && failed.contains("503"),
        "{failed}"
    );
    assert!(failed.contains("gave up after 4 errors"), "{failed}");
    assert!(!asc(&f).exists(), "an unverified result was written");
    assert!(temp_files(dir.path()).is_empty());
    assert_eq!(std::fs::read(&f).unwrap(), data(1000, 1));
}

#[test]
fn a_403_fails_fast_on_the_first_host_without_failover() {
    let mut o = opts();
    o.security = o
        .security
        .replace("allowed_filenames = .+", r"allowed_filenames = .+\.zip");
    let (first, second) = (Server::start(&o), Server::start(&o));
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("token");
    std::fs::write(&tok, first.mint("127.0.0.1", 300)).unwrap();
    let f = dir.path().join("setup.exe");
    std::fs::write(&f, data(5000, 2)).unwrap();
    let (code, log) = output(
        signtool_sign(
            &[host_of("gpg", &first.url), host_of("gpg", &second.url)],
            &tok,
            &dir.path().join("n"),
        )
        .args(["-f", "gpg"])
        .arg(&f),
    );
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains(&format!(
            "{} answered 403 filename \"setup.exe\" is not allowed",
            first.url
        )),
        "{log}"
    );
    // The server's log is collected by a reader thread: wait (bounded) for the line.
    assert!(
        first.wait_log("/sign/gpg", Duration::from_secs(10)),
        "the first host was asked"
    );
    assert!(
        !second.stderr().contains("/sign/gpg"),
        "no failover after a 403:\n{}",
        second.stderr()
    );
    assert!(!log.contains(&second.url), "{log}");
    assert!(!asc(&f).exists());

    // Same for an expired token (400): the message is the server's.
    let f = dir.path().join("ok.zip");
    std::fs::write(&f, data(5000, 3)).unwrap();
    std::fs::write(
        &tok,
        token_with(SECRET, "127.0.0.1", now() - 100, now() - 50),
    )
    .unwrap();
    let (code, log) = output(
        signtool_sign(
            &[host_of("gpg", &first.url), host_of("gpg", &second.url)],
            &tok,
            &dir.path().join("n"),
        )
        .args(["-f", "gpg"])
        .arg(&f),
    );
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains(&format!("{} answered 400", first.url)),
        "{log}"
    );
    assert!(!second.stderr().contains("/sign/gpg"));
}

/// Sends SIGINT to `child` once `ready` holds; returns (exit code, log).
fn interrupt_when(
    mut child: std::process::Child,
    ready: impl Fn() -> bool,
) -> (Option<i32>, String) {
    if !wait_until(Duration::from_secs(30), &ready) {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!("never ready: {}", String::from_utf8_lossy(&out.stderr));
    }
    Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn ctrl_c_during_a_large_upload_leaves_the_original_untouched() {
    let sink = FakePeer::start(PeerFault::SlowSink);
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("token");
    std::fs::write(&tok, "t").unwrap();
    let f = dir.path().join("big.bin");
    let body = data(32 << 20, 77);
    std::fs::write(&f, &body).unwrap();
    // A slow upload (about 3 MB/s) that keeps moving for longer than --read-timeout is not a
    // stalled one (progress comes in bursts as the socket buffers drain).
    let child = signtool_sign(&[sink.host("gpg")], &tok, &dir.path().join("n"))
        .args(["-f", "gpg", "--read-timeout", "4"])
        .arg(&f)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (code, log) = interrupt_when(child, || {
        sink.bytes.load(std::sync::atomic::Ordering::Relaxed) > 16 << 20
    });
    assert_eq!(code, Some(130), "{log}");
    assert!(
        !log.contains("failed ("),
        "a moving upload was given up: {log}"
    );
    assert!(log.contains("interrupted"), "{log}");
    assert!(std::fs::read(&f).unwrap() == body, "the original changed");
    assert!(!asc(&f).exists());
    assert!(
        temp_files(dir.path()).is_empty(),
        "{:?}",
        temp_files(dir.path())
    );
}

/// Format `mar` replaces the file in place: its result is downloaded into a temp file
/// beside the original, which must survive the interrupt unchanged.
#[test]
fn ctrl_c_during_a_large_download_removes_the_temp_file_and_keeps_the_original() {
    let source = FakePeer::start(PeerFault::SlowSource);
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("token");
    std::fs::write(&tok, "t").unwrap();
    let f = dir.path().join("big.bin");
    std::fs::write(&f, data(10_000, 78)).unwrap();
    let child = signtool_sign(&[source.host("mar")], &tok, &dir.path().join("n"))
        .args(["-f", "mar"])
        .arg(&f)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The download is under way into a temp file beside the destination...
    let d = dir.path().to_path_buf();
    let (code, log) = interrupt_when(child, || {
        source.bytes.load(std::sync::atomic::Ordering::Relaxed) > 1 << 20
            && !temp_files(&d).is_empty()
    });
    // ...and gone after the interrupt.
    assert_eq!(code, Some(130), "{log}");
    assert!(
        temp_files(dir.path()).is_empty(),
        "{:?}",
        temp_files(dir.path())
    );
    assert!(!asc(&f).exists());
    assert_eq!(std::fs::read(&f).unwrap(), data(10_000, 78));
}

#[test]
fn a_file_over_the_limit_fails_fast_without_failover() {
    let mut o = opts();
    o.security = o
        .security
        .replace("max_filesize = 64M", "max_filesize = 1M");
    let (a, b) = (Server::start(&o), Server::start(&o));
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("token");
    std::fs::write(&tok, a.mint("127.0.0.1", 300)).unwrap();
    // Just over the limit, and far over it. The server refuses the latter from its
    // Content-Length before reading the body, and its close may reach a client still sending
    // as a reset; so signtool reads each host's limits from /health and refuses such a file
    // itself, on the first host, like a 413.
    for (name, size) in [("over.bin", (1 << 20) + 1000), ("huge.bin", 24 << 20)] {
        let f = dir.path().join(name);
        std::fs::write(&f, data(size, 4)).unwrap();
        let (code, log) = output(
            signtool_sign(
                &[host_of("gpg", &a.url), host_of("gpg", &b.url)],
                &tok,
                &dir.path().join("n"),
            )
            .args(["-f", "gpg"])
            .arg(&f),
        );
        assert_eq!(code, 1, "{log}");
        let (hit, other) = if log.contains(&format!("{} answered 413", a.url)) {
            (&a, &b)
        } else {
            (&b, &a)
        };
        assert!(
            log.contains(&format!("{} answered 413 file too large: {size} bytes, the limit for format gpg is 1048576 bytes", hit.url)),
            "{log}"
        );
        assert!(
            !log.contains("failing over"),
            "no failover after a 413:\n{log}"
        );
        assert!(
            !other.stderr().contains("/sign/gpg"),
            "the other host was not tried:\n{}",
            other.stderr()
        );
        assert!(!asc(&f).exists());
    }
    // Nothing was uploaded: neither server stored or refused a body.
    for s in [&a, &b] {
        assert!(!s.stderr().contains("path=/sign/gpg "), "{}", s.stderr());
    }
}

#[test]
fn a_stalled_upload_is_abandoned_after_read_timeout_and_a_real_server_signs() {
    let stall = FakePeer::start(PeerFault::Stall);
    let s = Server::start(&opts());
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("token");
    std::fs::write(&tok, s.mint("127.0.0.1", 300)).unwrap();
    let f = dir.path().join("big.bin");
    std::fs::write(&f, data(32 << 20, 79)).unwrap();
    let (code, log) = output(
        signtool_sign(
            &[stall.host("gpg"), host_of("gpg", &s.url)],
            &tok,
            &dir.path().join("n"),
        )
        .args(["-f", "gpg", "--read-timeout", "2"])
        .arg(&f),
    );
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains(&format!(
            "{} failed (timed out: upload stalled",
            stall.url()
        )),
        "{log}"
    );
    assert!(gpgv(&asc(&f), &f).0);
}

#[test]
fn a_422_from_the_signer_fails_fast_on_the_first_host() {
    // A real signer refusing the input: a file that is not a MAR, sent to a mar format.
    let o = signing_tests::mar::opts("");
    let (first, second) = (Server::start(&o), Server::start(&o));
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("token");
    std::fs::write(&tok, first.mint("127.0.0.1", 300)).unwrap();
    let f = dir.path().join("update.mar");
    let original = data(5000, 9);
    std::fs::write(&f, &original).unwrap();
    let (code, log) = output(
        signtool_sign(
            &[host_of("mar", &first.url), host_of("mar", &second.url)],
            &tok,
            &dir.path().join("n"),
        )
        .args(["-f", "mar"])
        .arg(&f),
    );
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains(&format!("{} answered 422", first.url)),
        "{log}"
    );
    assert!(log.contains("MAR"), "the signer's reason is shown: {log}");
    assert!(!log.contains(&second.url), "no failover after a 422: {log}");
    assert!(
        !second.wait_log("/sign/mar", Duration::from_millis(500)),
        "the second host was asked"
    );
    assert_eq!(
        std::fs::read(&f).unwrap(),
        original,
        "the input is untouched"
    );
    assert!(temp_files(dir.path()).is_empty());
}

/// Issue 25 item 11: a 500 on the result ("signing failed on this server;
/// upload again") made signtool poll a hash the server had forgotten. Now it
/// uploads again, on the same host too, within `--max-errors`: here every
/// signing fails (the format's only TSA is down), so each of the 3 tries is a
/// real upload and a real signing, audited, and signtool names the 500.
#[test]
fn a_500_on_the_result_is_uploaded_again_within_max_errors() {
    let c = certs().join("authenticode");
    let o = ServerOpts {
        formats: format!(
            "[format:sha2signcode]\ntype = authenticode\nkey = {}\ncert = {}\ntimestamp_urls = {}\n",
            c.join("rsa.key").display(),
            c.join("rsa-chain.pem").display(),
            signing_tests::authenticode::dead_url(),
        ),
        ..opts()
    };
    let s = Server::start(&o);
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("token");
    std::fs::write(&tok, s.mint("127.0.0.1", 300)).unwrap();
    let pe = signing_tests::authenticode::build_pe(dir.path(), "x86_64", false);
    let original = std::fs::read(&pe).unwrap();
    let (code, log) = output(
        signtool_sign(
            &[host_of("sha2signcode", &s.url)],
            &tok,
            &dir.path().join("n"),
        )
        .args(["-f", "sha2signcode", "--max-errors", "3", "--whole-file"])
        .arg(&pe),
    );
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("answered 500") || log.contains("failed (500"),
        "{log}"
    );
    assert!(!log.contains("forgot the file"), "{log}");
    let audit = s.audit();
    assert_eq!(
        audit.lines().filter(|l| l.contains("\"error\"")).count(),
        3,
        "one signing per try:\n{audit}\n{log}"
    );
    assert_eq!(
        std::fs::read(&pe).unwrap(),
        original,
        "the input is untouched"
    );
    assert!(temp_files(dir.path()).is_empty());
}
