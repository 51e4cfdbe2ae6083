//! The transparency log of every signature (issue 27), end to end: the real
//! server with `[log]`, signing by upload and by digest, and the log checked
//! by Go's own `golang.org/x/mod/sumdb/{note,tlog}` (tests/go/tlogcheck):
//! the checkpoint's signature, the inclusion of every entry, consistency
//! between checkpoints, a changed byte rejected. Then the failures: a full
//! disk (503 `log_unavailable`, nothing released, recovery), an audit log
//! that cannot be written, `kill -9` during a burst, and a directory that
//! does not match its checkpoint.

use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use signing_tests::tlog::*;
use signing_tests::*;

/// Unmounts a tmpfs when dropped.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(at: &std::path::Path, size: &str) -> Mount {
    std::fs::create_dir_all(at).unwrap();
    let (ok, out) = run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(at));
    assert!(ok, "cannot mount a tmpfs at {}: {out}", at.display());
    Mount(at.to_path_buf())
}

/// Fills the filesystem of `dir` with a file until it is full.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write as _;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).and_then(|_| f.sync_all()).is_ok() {}
    path
}

fn checkpoint(s: &Server) -> String {
    let r = s
        .client()
        .get(format!("{}/log/checkpoint", s.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().unwrap()
}

fn check_config(dir: &std::path::Path, o: &ServerOpts) -> String {
    let config = write_config(dir, o);
    let (status, out) = run_server_to_end(&["--check".as_ref(), config.as_os_str()], &o.stdin);
    assert!(status.success(), "{out}");
    out.lines()
        .find_map(|l| l.strip_prefix("log verifier key: "))
        .unwrap_or_else(|| panic!("--check printed no verifier key: {out}"))
        .to_string()
}

#[test]
fn every_signature_is_logged_and_gos_sumdb_packages_verify_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let key = log_key(dir.path(), true);
    let log_dir = dir.path().join("log");
    let o = opts(&key, &log_dir, true);
    let vkey = check_config(dir.path(), &o);
    assert!(vkey.starts_with(&format!("{ORIGIN}+")), "{vkey}");
    let s = Server::start_in(dir, &o);
    let h = health_log(&s);
    assert_eq!(h["verifier_key"], vkey.as_str(), "{h}");
    assert_eq!(
        (
            h["origin"].as_str(),
            h["size"].as_u64(),
            h["state"].as_str()
        ),
        (Some(ORIGIN), Some(0), Some("ok"))
    );

    let token = s.mint("127.0.0.1", 300);
    let mut released = Vec::new();
    for i in 0..4u64 {
        let (status, text, out) = sign_upload(&s, &token, &data(3000 + i as usize, i));
        assert_eq!(status, 200, "{text}");
        released.push(out.unwrap());
    }
    let old = s.dir.path().join("old-checkpoint");
    std::fs::write(&old, checkpoint(&s)).unwrap();
    for i in 0..3u64 {
        let (status, text, out) =
            sign_digest(&s.client(), &s.url, &token, &data(70_001, 10 + i)).unwrap();
        assert_eq!(status, 200, "{text}");
        released.push(out.unwrap());
    }
    assert_eq!(health_log(&s)["size"], 7);

    let checked = go_check_url(&s, &vkey, Some(&old)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(checked.size, 7);
    let logged = outputs(&checked);
    for r in &released {
        assert!(logged.contains(r), "released {r} is not in the log");
    }
    let modes: Vec<_> = checked
        .entries
        .iter()
        .map(|e| e["mode"].as_str().unwrap())
        .collect();
    assert_eq!(
        modes,
        ["upload", "upload", "upload", "upload", "digest", "digest", "digest"]
    );
    for e in &checked.entries {
        assert_eq!(
            (e["v"].as_u64(), e["format"].as_str(), e["type"].as_str()),
            (Some(1), Some("gpg"), Some("gpg")),
            "{e}"
        );
        // Public by design: no peer, no file name.
        for k in ["peer", "filename"] {
            assert!(e.get(k).is_none(), "{e}");
        }
        assert!(e["time"].as_str().unwrap().ends_with('Z'), "{e}");
        assert_eq!(
            e["key"].as_str().unwrap().len(),
            40,
            "an OpenPGP v4 fingerprint: {e}"
        );
    }
    // The same log from its directory, as a static mirror would serve it.
    let from_dir = go_check_dir(&log_dir, &vkey, Some(&old)).unwrap();
    assert_eq!(from_dir.size, 7);
    // A checkpoint signed by another key is refused by Go's note package.
    let other = tempfile::tempdir().unwrap();
    let other_key = log_key(other.path(), false);
    let other_vkey = check_config(
        other.path(),
        &opts(&other_key, &other.path().join("log"), false),
    );
    let e = go_check_url(&s, &other_vkey, None)
        .err()
        .expect("another key's checkpoint accepted");
    assert!(e.contains("checkpoint"), "{e}");

    // Read only, and nothing outside the tree.
    let c = s.client();
    for path in [
        "/log/tile/../../signing.ini",
        "/log/tile/0/000.p/8",
        "/log/tile/0/000",
        "/log/tile/0/x000/000.p/7",
        "/log/tile/entries/000.p/07",
        "/log/tile/1/000.p/1",
    ] {
        let r = c.get(format!("{}{path}", s.url)).send().unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    let r = c
        .get(format!("{}/log/tile/0/000.p/7", s.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().len(), 7 * 32);
    let r = c.post(format!("{}/log/checkpoint", s.url)).send().unwrap();
    assert_eq!(r.status(), 405);
    assert!(s.metric("signing_log_size").is_some_and(|v| v == 7.0));
}

#[test]
fn a_full_disk_withholds_every_signature_until_the_log_can_be_written() {
    require_root("mounts a small tmpfs as the log's directory");
    let dir = tempfile::tempdir().unwrap();
    let key = log_key(dir.path(), false);
    let log_dir = dir.path().join("log");
    let _mount = mount_tmpfs(&log_dir, "256k");
    let o = opts(&key, &log_dir, false);
    let vkey = check_config(dir.path(), &o);
    let s = Server::start_in(dir, &o);
    let token = s.mint("127.0.0.1", 300);
    let (status, text, _) = sign_upload(&s, &token, &data(1000, 1));
    assert_eq!(status, 200, "{text}");

    let filler = fill(&log_dir);
    // An upload is signed but its GET answers 503 log_unavailable; a digest request too.
    let body = data(1000, 2);
    let (status, text, out) = sign_upload(&s, &token, &body);
    assert_eq!((status, out), (503, None), "{text}");
    let (status, text, out) = sign_digest(&s.client(), &s.url, &token, &data(1000, 3)).unwrap();
    assert_eq!((status, out), (503, None), "{text}");
    assert!(text.contains("transparency log"), "{text}");
    let r = s
        .client()
        .get(format!("{}/sign/gpg/{}", s.url, sha256_hex(&body)))
        .send()
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let h = health_log(&s);
    assert_eq!(h["state"], "unavailable", "{h}");
    assert!(s.metric("signing_log_write_failures_total").unwrap() >= 1.0);
    assert!(
        s.metric("signing_refused_requests_total{reason=\"log_unavailable\"}")
            .unwrap()
            >= 1.0
    );
    let stuck = checkpoint(&s);

    std::fs::remove_file(filler).unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || health_log(&s)["state"] == "ok"),
        "the log did not recover: {}",
        s.stderr()
    );
    // Uploaded again, the withheld input is signed and released.
    let (status, text, released) = sign_upload(&s, &token, &body);
    assert_eq!(status, 200, "{text}");
    let old = s.dir.path().join("stuck-checkpoint");
    std::fs::write(&old, stuck).unwrap();
    let checked = go_check_url(&s, &vkey, Some(&old)).unwrap_or_else(|e| panic!("{e}"));
    assert!(outputs(&checked).contains(&released.unwrap()));
}

#[test]
fn an_audit_record_that_cannot_be_written_withholds_the_signature() {
    require_root("mounts a small tmpfs for the audit log");
    let dir = tempfile::tempdir().unwrap();
    let audit_dir = dir.path().join("audit-fs");
    let _mount = mount_tmpfs(&audit_dir, "64k");
    // The test config's audit_log is DIR/audit.log: on the tmpfs.
    std::os::unix::fs::symlink(audit_dir.join("audit.log"), dir.path().join("audit.log")).unwrap();
    let s = Server::start_in(
        dir,
        &ServerOpts {
            formats: ServerOpts::default().formats + "digest_signing = yes\n",
            ..ServerOpts::default()
        },
    );
    let token = s.mint("127.0.0.1", 300);
    let filler = fill(&audit_dir);
    let (status, text, out) = sign_upload(&s, &token, &data(1000, 4));
    assert_eq!((status, out), (503, None), "{text}");
    assert!(text.contains("audit log"), "{text}");
    let (status, _, out) = sign_digest(&s.client(), &s.url, &token, &data(1000, 5)).unwrap();
    assert_eq!((status, out), (503, None));
    let h = s.health();
    assert_eq!(h["audit"]["state"], "unavailable", "{h}");
    assert!(s.metric("signing_audit_write_failures_total").unwrap() >= 2.0);
    std::fs::remove_file(filler).unwrap();
    let (status, text, _) = sign_upload(&s, &token, &data(1000, 4));
    assert_eq!(status, 200, "{text}");
    let h = s.health();
    assert_eq!(h["audit"]["state"], "ok", "{h}");
    // A line cut short by the full disk was removed: every line is whole.
    let audit = s.audit();
    assert!(audit.lines().count() >= 1);
    for line in audit.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    }
}

#[test]
fn kill_9_during_a_burst_leaves_a_consistent_log_with_every_released_signature() {
    let dir = tempfile::tempdir().unwrap();
    let key = log_key(dir.path(), false);
    let log_dir = dir.path().join("log");
    let o = opts(&key, &log_dir, false);
    let vkey = check_config(dir.path(), &o);
    let s = Server::start_in(dir, &o);
    let token = s.mint("127.0.0.1", 300);
    let released = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            let (url, token, released, stop) =
                (s.url.clone(), token.clone(), released.clone(), stop.clone());
            std::thread::spawn(move || {
                let client = client_from("127.0.0.1");
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match sign_digest(&client, &url, &token, &data(200, w * 1_000_000 + i)) {
                        Ok((200, _, Some(out))) => released.lock().unwrap().push(out),
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    // A checkpoint published during the burst, then the crash.
    assert!(wait_until(Duration::from_secs(60), || released
        .lock()
        .unwrap()
        .len()
        >= 40));
    let before = checkpoint(&s);
    assert!(wait_until(Duration::from_secs(60), || released
        .lock()
        .unwrap()
        .len()
        >= 80));
    let dir = s.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let released: HashSet<String> = released.lock().unwrap().iter().cloned().collect();

    let s = Server::start_in(dir, &o);
    let old = s.dir.path().join("before-crash");
    std::fs::write(&old, before).unwrap();
    let checked = go_check_url(&s, &vkey, Some(&old)).unwrap_or_else(|e| panic!("{e}"));
    let logged = outputs(&checked);
    let missing: Vec<_> = released.difference(&logged).collect();
    assert!(missing.is_empty(), "released but not logged: {missing:?}");
    // And it keeps growing from there.
    let (status, text, out) = sign_digest(&s.client(), &s.url, &token, &data(200, 7)).unwrap();
    assert_eq!(status, 200, "{text}");
    let after = go_check_dir(&log_dir, &vkey, Some(&old)).unwrap();
    assert!(outputs(&after).contains(&out.unwrap()));
}

#[test]
fn a_directory_that_does_not_match_its_checkpoint_stops_the_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let key = log_key(dir.path(), false);
    let log_dir = dir.path().join("log");
    let o = opts(&key, &log_dir, false);
    let s = Server::start_in(dir, &o);
    let token = s.mint("127.0.0.1", 300);
    for i in 0..3 {
        assert_eq!(sign_upload(&s, &token, &data(500, 20 + i)).0, 200);
    }
    let dir = s.kill9();
    let config = dir.path().join("signing.ini");
    let bundle = log_dir.join("tile/entries/000.p/3");
    let mut bytes = std::fs::read(&bundle).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&bundle, &bytes).unwrap();
    let (status, out) = run_server_to_end(&[config.as_os_str()], &o.stdin);
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(out.contains("tile/entries/000.p/3"), "{out}");
    // Another key's log is refused too, naming the checkpoint.
    bytes[10] ^= 1;
    std::fs::write(&bundle, &bytes).unwrap();
    std::fs::remove_file(&key).unwrap();
    log_key(dir.path(), false);
    let (status, out) = run_server_to_end(&[config.as_os_str()], &o.stdin);
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(out.contains("checkpoint"), "{out}");
}

#[test]
fn a_partial_tile_removed_once_its_full_tile_is_written_is_cut_from_the_full_one() {
    let dir = tempfile::tempdir().unwrap();
    let key = log_key(dir.path(), false);
    let log_dir = dir.path().join("log");
    let o = opts(&key, &log_dir, false);
    let vkey = check_config(dir.path(), &o);
    let s = Server::start_in(dir, &o);
    let token = s.mint("127.0.0.1", 300);
    let (status, _, _) = sign_digest(&s.client(), &s.url, &token, &data(100, 0)).unwrap();
    assert_eq!(status, 200);
    let early = checkpoint(&s);
    let early_size: usize = early.lines().nth(1).unwrap().parse().unwrap();
    // Past one full tile of 256 entries, from 4 clients at once.
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            let (url, token) = (s.url.clone(), token.clone());
            std::thread::spawn(move || {
                let client = client_from("127.0.0.1");
                for i in 0..70 {
                    let r = sign_digest(&client, &url, &token, &data(100, 1000 * (w + 1) + i));
                    assert_eq!(r.unwrap().0, 200);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert!(health_log(&s)["size"].as_u64().unwrap() > 256);
    assert!(log_dir.join("tile/0/000").is_file());
    let partial = format!("tile/0/000.p/{early_size}");
    assert!(
        !log_dir.join(&partial).exists(),
        "superseded partial tiles are removed"
    );
    // Still served, cut from the full tile, for a client of the early checkpoint.
    let r = s
        .client()
        .get(format!("{}/log/{partial}", s.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let full = std::fs::read(log_dir.join("tile/0/000")).unwrap();
    assert_eq!(r.bytes().unwrap().as_ref(), &full[..early_size * 32]);
    let r = s
        .client()
        .get(format!("{}/log/tile/entries/000.p/{early_size}", s.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let old = s.dir.path().join("early");
    std::fs::write(&old, early).unwrap();
    let checked = go_check_url(&s, &vkey, Some(&old)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(checked.size, 281);
}
