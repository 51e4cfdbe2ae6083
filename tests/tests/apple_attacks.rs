//! Hostile `.app` tarballs (issue 25, items 2-4), through the real server.
//! Each test measures what the attacker got the server to hold (disk in the
//! work directory, the server's peak memory) and asserts a bound, besides
//! the precise 422.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use signing_tests::apple::*;
use signing_tests::*;

const MIB: u64 = 1 << 20;

/// Uploads `body` as `name` and fetches the answer: (status, body as text).
fn sign(s: &Server, name: &str, body: &[u8]) -> (u16, String) {
    let token = s.mint("127.0.0.1", 300);
    let (status, text) = Upload::new(&token, name, body).send(&s.client(), &s.url, "macapp");
    assert_eq!(status, 202, "{text}");
    let (status, _, out) = fetch(&s.client(), &s.url, "macapp", &sha256_hex(body));
    (status, String::from_utf8_lossy(&out).into_owned())
}

/// `dir/src/A.app`: an Info.plist naming the main executable `a`, a real
/// Mach-O. Returns `dir/src`.
fn bundle(dir: &Path) -> PathBuf {
    let root = dir.join("src");
    let contents = root.join("A.app/Contents");
    std::fs::create_dir_all(contents.join("MacOS")).unwrap();
    std::fs::create_dir_all(contents.join("Resources")).unwrap();
    std::fs::write(
        contents.join("Info.plist"),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict>\
         <key>CFBundleExecutable</key><string>a</string>\
         <key>CFBundleIdentifier</key><string>org.example.a</string>\
         <key>CFBundlePackageType</key><string>APPL</string></dict></plist>\n",
    )
    .unwrap();
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(build_macho(&bin, "x86_64", "exe"), contents.join("MacOS/a")).unwrap();
    root
}

/// GNU tar's `.tar.gz` of `root/A.app` (hard links and symlinks as such).
fn tgz(root: &Path) -> Vec<u8> {
    let out = root.with_extension("tar.gz");
    let (ok, text) = run(Command::new("tar")
        .arg("-C")
        .arg(root)
        .arg("-czf")
        .arg(&out)
        .arg("A.app"));
    assert!(ok, "{text}");
    std::fs::read(out).unwrap()
}

/// Bytes on disk below `dir`, each inode once (`du`).
fn disk_usage(dir: &Path) -> u64 {
    let (mut total, mut seen) = (0, HashSet::new());
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.is_dir() {
                stack.push(e.path());
            } else if seen.insert(m.ino()) {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

/// Samples the disk usage of `dir` until the returned flag is set; the
/// largest sample is in the returned counter.
fn watch_disk(dir: PathBuf) -> (Arc<AtomicBool>, Arc<AtomicU64>, std::thread::JoinHandle<()>) {
    let (stop, peak) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let (s, p) = (stop.clone(), peak.clone());
    let t = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            p.fetch_max(disk_usage(&dir), Ordering::Relaxed);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    });
    (stop, peak, t)
}

/// The server's peak resident memory (`VmHWM`), in bytes.
fn peak_rss(s: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmHWM value");
    kb * 1024
}

#[test]
fn hard_links_cost_their_target_in_the_unpacked_budget() {
    // 40 links to one 2 MiB file: 82 MiB once signing copies each link.
    let s = Server::start(&apple_opts("max_unpacked_size = 32M"));
    let dir = tempfile::tempdir().unwrap();
    let root = bundle(dir.path());
    let res = root.join("A.app/Contents/Resources");
    std::fs::write(res.join("big"), vec![0u8; 2 * MIB as usize]).unwrap();
    for i in 0..40 {
        std::fs::hard_link(res.join("big"), res.join(format!("l{i}"))).unwrap();
    }
    let body = tgz(&root);
    assert!(body.len() < 64 * 1024, "{} bytes", body.len());
    let (stop, peak, t) = watch_disk(s.work_dir());
    let (status, text) = sign(&s, "links.tar.gz", &body);
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("max_unpacked_size"), "{text}");
    assert!(text.contains("hard link"), "{text}");
    let peak = peak.load(Ordering::Relaxed);
    assert!(peak < 32 * MIB, "the work directory reached {peak} bytes");
    // Within the budget, the links are signed (and come back as files).
    let ok = Server::start(&apple_opts("max_unpacked_size = 128M"));
    let (status, text) = sign(&ok, "links.tar.gz", &body);
    assert_eq!(status, 200, "{text}");
}

#[test]
fn a_huge_code_file_in_a_small_tarball_is_422_and_memory_stays_bounded() {
    let s = Server::start(&apple_opts("max_code_file_size = 8M"));
    let dir = tempfile::tempdir().unwrap();
    let root = bundle(dir.path());
    // A "Mach-O" of 128 MiB, mostly zeros: ~130 KB compressed.
    let mut code = vec![0u8; 128 * MIB as usize];
    code[..4].copy_from_slice(&[0xcf, 0xfa, 0xed, 0xfe]);
    std::fs::write(root.join("A.app/Contents/MacOS/libhuge.dylib"), &code).unwrap();
    drop(code);
    let body = tgz(&root);
    assert!(body.len() < 1 << 20, "{} bytes", body.len());
    let before = peak_rss(&s);
    let (stop, peak, t) = watch_disk(s.work_dir());
    let (status, text) = sign(&s, "huge.tar.gz", &body);
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("max_code_file_size"), "{text}");
    let grew = peak_rss(&s).saturating_sub(before);
    assert!(
        grew < 48 * MIB,
        "the server's peak memory grew by {grew} bytes"
    );
    let peak = peak.load(Ordering::Relaxed);
    assert!(peak < 48 * MIB, "the work directory reached {peak} bytes");
    // The same bound for a Mach-O uploaded alone.
    let mut alone = vec![0u8; 9 * MIB as usize];
    alone[..4].copy_from_slice(&[0xcf, 0xfa, 0xed, 0xfe]);
    let (status, text) = sign(&s, "alone", &alone);
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("max_code_file_size"), "{text}");
}

#[test]
fn symlinks_leaving_the_bundle_through_another_link_are_422() {
    let s = Server::start(&apple_opts(""));
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    assert!(run(Command::new("mkfifo").arg(&fifo)).0, "mkfifo");
    // Lexically inside; really `/` then the target: `sub/up` is `Resources`.
    let mut answers = Vec::new();
    for target in [Path::new("/etc/passwd"), Path::new("/no/such/file"), &fifo] {
        let case = tempfile::tempdir().unwrap();
        let root = bundle(case.path());
        let contents = root.join("A.app/Contents");
        std::fs::create_dir_all(contents.join("Resources/sub")).unwrap();
        std::os::unix::fs::symlink("..", contents.join("Resources/sub/up")).unwrap();
        let way = format!(
            "../Resources/{}{}{}",
            "sub/up/".repeat(15),
            "../".repeat(30),
            target.display().to_string().trim_start_matches('/')
        );
        std::fs::remove_file(contents.join("MacOS/a")).unwrap();
        std::os::unix::fs::symlink(&way, contents.join("MacOS/a")).unwrap();
        let (status, text) = sign(&s, "escape.tar.gz", &tgz(&root));
        assert_eq!(status, 422, "{target:?}: {text}");
        assert!(
            text.contains("symlink A.app/Contents/MacOS/a leads outside the bundle"),
            "{target:?}: {text}"
        );
        answers.push(text);
    }
    // The answer tells nothing of the server's files.
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    // Still signing: nothing blocked on the fifo.
    let dir = tempfile::tempdir().unwrap();
    let (status, text) = sign(&s, "ok.tar.gz", &tgz(&bundle(dir.path())));
    assert_eq!(status, 200, "{text}");
}
