//! Soak: thousands of signings through signtool at concurrency 32 against a
//! real server, zero errors, every signature verified, and the server's
//! memory flat between a warm-up round and a round four times larger.

use std::path::Path;
use std::process::Command;

use signing_tests::signtool::output;
use signing_tests::*;

/// The server's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Signs `n` distinct 16 KiB files in a new directory under `root` with
/// `signtool --jobs 32`; returns the directory.
fn round(s: &Server, root: &Path, name: &str, n: usize, seed: u64) -> std::path::PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..n {
        std::fs::write(
            dir.join(format!("f{i:05}.bin")),
            data(16 << 10, seed + i as u64),
        )
        .unwrap();
    }
    let token = root.join("token");
    std::fs::write(&token, s.mint("127.0.0.1", 600)).unwrap();
    let host = format!("gpg:{}", s.url.trim_start_matches("https://"));
    let (code, log) = output(
        Command::new(bin("signtool"))
            .args([
                "sign",
                "-q",
                "--jobs",
                "32",
                "--timeout",
                "600",
                "-H",
                &host,
                "-c",
            ])
            .arg(certs().join("ca.pem"))
            .arg("-t")
            .arg(&token)
            .arg("-n")
            .arg(root.join("nonce"))
            .args(["-f", "gpg"])
            .arg(&dir),
    );
    assert_eq!(code, 0, "signtool failed in round {name}:\n{log}");
    dir
}

#[test]
fn thousands_of_signings_at_concurrency_32_with_zero_errors_and_flat_memory() {
    let mut opts = ServerOpts::default();
    opts.server_extra.push_str("max_queue = 256\n");
    let s = Server::start(&opts);
    let root = tempfile::tempdir().unwrap();

    let warm = round(&s, root.path(), "warm", 500, 1_000_000);
    let rss_warm = rss_kib(s.pid());
    let main = round(&s, root.path(), "main", 2000, 2_000_000);
    let rss_main = rss_kib(s.pid());
    eprintln!("soak: server RSS {rss_warm} KiB after 500 signings, {rss_main} KiB after 2500");

    // Every file has its signature, and a sample of them verifies with gpgv.
    for (dir, n) in [(&warm, 500), (&main, 2000)] {
        for i in 0..n {
            let f = dir.join(format!("f{i:05}.bin"));
            let asc = dir.join(format!("f{i:05}.bin.asc"));
            assert!(asc.is_file(), "{} has no signature", f.display());
            if i % 50 == 0 {
                let (ok, out) = gpgv(&asc, &f);
                assert!(ok, "{}: {out}", f.display());
            }
        }
    }
    assert_eq!(
        s.metric("signing_jobs_total{format=\"gpg\",outcome=\"ok\"}"),
        Some(2500.0)
    );
    assert_eq!(
        s.metric("signing_jobs_total{format=\"gpg\",outcome=\"error\"}"),
        None
    );
    assert_eq!(
        s.audit()
            .lines()
            .filter(|l| l.contains("\"outcome\":\"ok\""))
            .count(),
        2500
    );
    // Flat memory: four times the work may not grow the server by more than 32 MiB.
    assert!(
        rss_main < rss_warm + 32 * 1024,
        "server RSS grew from {rss_warm} KiB to {rss_main} KiB"
    );
}
