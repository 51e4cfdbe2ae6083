//! signtool against bursts of real `HTTP/1.1 503` + `Retry-After`: each of
//! two real servers sits behind a fault proxy that answers a burst of
//! connections itself (over TLS, with the test server certificate) and
//! passes the rest through. Every file ends signed and verified with gpgv;
//! when every host answers 503, signtool exits 1 naming each host and leaves
//! no output file.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use signing_tests::busy_peer::BODY_503;
use signing_tests::proxy::{NetFault, Proxy};
use signing_tests::signtool::{output, temp_files};
use signing_tests::*;

/// A proxy to `s` answering its first `burst` connections with a 503; the
/// counter says how many it answered so.
fn burst_proxy(s: &Server, burst: u64) -> (Proxy, Arc<AtomicU64>) {
    let answered = Arc::new(AtomicU64::new(0));
    let count = answered.clone();
    let upstream = s.url.trim_start_matches("https://").parse().unwrap();
    let proxy = Proxy::start(upstream, move || {
        if count.load(Ordering::Relaxed) < burst {
            count.fetch_add(1, Ordering::Relaxed);
            NetFault::Unavailable
        } else {
            NetFault::Pass
        }
    });
    (proxy, answered)
}

fn signtool(
    hosts: &[&Proxy],
    token: &std::path::Path,
    dir: &std::path::Path,
    max_errors: &str,
) -> Command {
    let mut cmd = Command::new(bin("signtool"));
    cmd.args([
        "sign",
        "--jobs",
        "4",
        "--connect-timeout",
        "2",
        "--read-timeout",
        "10",
        "--max-errors",
        max_errors,
    ]);
    cmd.args([
        "--backoff-base-ms",
        "20",
        "--backoff-max-ms",
        "200",
        "--timeout",
        "120",
    ]);
    for p in hosts {
        cmd.arg("-H").arg(format!("gpg:{}", p.addr));
    }
    cmd.arg("-c")
        .arg(certs().join("ca.pem"))
        .arg("-t")
        .arg(token)
        .arg("-n")
        .arg(dir.join("nonce"));
    cmd.args(["-f", "gpg"]);
    cmd
}

#[test]
fn a_503_burst_on_both_hosts_ends_with_every_file_signed_and_verified() {
    let servers: Vec<Server> = (0..2)
        .map(|_| Server::start(&ServerOpts::default()))
        .collect();
    let (p0, n0) = burst_proxy(&servers[0], 8);
    let (p1, n1) = burst_proxy(&servers[1], 5);
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let n = 12;
    for i in 0..n {
        std::fs::write(files.join(format!("f{i:02}.bin")), data(64 << 10, 700 + i)).unwrap();
    }
    let token = dir.path().join("token");
    std::fs::write(&token, servers[0].mint("127.0.0.1", 600)).unwrap();
    let (code, log) = output(signtool(&[&p0, &p1], &token, dir.path(), "30").arg(&files));
    assert_eq!(code, 0, "{log}");
    // The bursts really happened, and signtool saw them as 503s from the proxies.
    let (a0, a1) = (n0.load(Ordering::Relaxed), n1.load(Ordering::Relaxed));
    assert!(a0 >= 1 && a1 >= 1, "503s answered: {a0} and {a1}:\n{log}");
    for p in [&p0, &p1] {
        assert!(
            log.contains(&format!("https://{} failed (503 {BODY_503}", p.addr)),
            "no 503 from {}:\n{log}",
            p.addr
        );
    }
    let mut signed = 0;
    for entry in std::fs::read_dir(&files).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        assert!(
            name.ends_with(".bin") || name.ends_with(".bin.asc"),
            "stray file {name}:\n{log}"
        );
        if let Some(base) = name.strip_suffix(".asc") {
            let (ok, out) = gpgv(&entry.path(), &files.join(base));
            assert!(ok, "{name} does not verify: {out}");
            signed += 1;
        }
    }
    assert_eq!(signed, n, "{log}");
    // A tampered file no longer verifies against its signature.
    let f = files.join("f00.bin");
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&f, bytes).unwrap();
    assert!(!gpgv(&files.join("f00.bin.asc"), &f).0);
}

#[test]
fn when_every_host_answers_503_signtool_exits_1_naming_them_and_writes_nothing() {
    let servers: Vec<Server> = (0..2)
        .map(|_| Server::start(&ServerOpts::default()))
        .collect();
    let (p0, n0) = burst_proxy(&servers[0], u64::MAX);
    let (p1, n1) = burst_proxy(&servers[1], u64::MAX);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f.bin");
    std::fs::write(&f, data(64 << 10, 800)).unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, servers[0].mint("127.0.0.1", 600)).unwrap();
    let (code, log) = output(signtool(&[&p0, &p1], &token, dir.path(), "4").arg(&f));
    assert_eq!(code, 1, "{log}");
    let failed = log
        .split_once("FAILED")
        .unwrap_or_else(|| panic!("no FAILED message:\n{log}"))
        .1;
    for p in [&p0, &p1] {
        assert!(
            failed.contains(&format!("https://{}", p.addr)) && failed.contains("503"),
            "{} not named:\n{failed}",
            p.addr
        );
    }
    assert!(failed.contains("gave up after 4 errors"), "{failed}");
    assert!(
        n0.load(Ordering::Relaxed) >= 1 && n1.load(Ordering::Relaxed) >= 1,
        "both hosts were tried:\n{log}"
    );
    assert!(
        !dir.path().join("f.bin.asc").exists(),
        "an output file was written"
    );
    assert!(temp_files(dir.path()).is_empty());
    assert_eq!(std::fs::read(&f).unwrap(), data(64 << 10, 800));
    // Nothing reached the real servers.
    for s in &servers {
        assert!(!s.stderr().contains("/sign/gpg"), "{}", s.stderr());
    }
}
