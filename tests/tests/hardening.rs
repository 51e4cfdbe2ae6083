//! Faults, overload and slow clients against the real server (issue 8, server side).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use signing_tests::*;

fn health(s: &Server) -> serde_json::Value {
    serde_json::from_str(
        &s.client()
            .get(format!("{}/health", s.url))
            .send()
            .unwrap()
            .text()
            .unwrap(),
    )
    .unwrap()
}

/// Starts an upload of `body` whose client stalls after 64 KiB; returns the
/// thread (yielding the status, or 0 if the client saw a transport error) and its gate.
fn stalled_upload(s: &Server, token: &str, body: Vec<u8>) -> (std::thread::JoinHandle<u16>, Gate) {
    use reqwest::blocking::multipart::{Form, Part};
    let sha = sha256_hex(&body);
    let (reader, gate) = GatedReader::new(body, 64 * 1024);
    let form = Form::new()
        .text("token", token.to_string())
        .text("filename", "slow.bin")
        .text("sha256", sha)
        .part("filedata", Part::reader(reader).file_name("slow.bin"));
    let (client, url) = (s.client(), format!("{}/sign/gpg", s.url));
    let handle = std::thread::spawn(move || {
        client
            .post(url)
            .multipart(form)
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    });
    (handle, gate)
}

#[test]
fn uploads_beyond_max_queue_get_503_and_service_resumes_after_the_burst() {
    let mut opts = ServerOpts::default();
    // Both places for one address, held by stalled uploads for as long as it takes.
    opts.server_extra
        .push_str("max_queue = 2\nmax_queue_per_peer = 2\nmin_upload_rate = 0\n");
    let s = Server::start(&opts);
    let token = s.mint("127.0.0.1", 300);
    let (a, gate_a) = stalled_upload(&s, &token, data(1 << 20, 50));
    let (b, gate_b) = stalled_upload(&s, &token, data(1 << 20, 51));
    assert!(
        wait_until(Duration::from_secs(20), || health(&s)["queue_depth"] == 2),
        "{}",
        health(&s)
    );

    let r = {
        use reqwest::blocking::multipart::{Form, Part};
        let body = data(1000, 52);
        let form = Form::new()
            .text("token", token.clone())
            .text("filename", "third.bin")
            .text("sha256", sha256_hex(&body))
            .part("filedata", Part::bytes(body));
        s.client()
            .post(format!("{}/sign/gpg", s.url))
            .multipart(form)
            .send()
            .unwrap()
    };
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        s.metric("signing_refused_requests_total{reason=\"queue_full\"}"),
        Some(1.0)
    );

    gate_a.open();
    gate_b.open();
    assert_eq!(a.join().unwrap(), 202);
    assert_eq!(b.join().unwrap(), 202);
    // Normal service right after the burst.
    let body = data(3000, 53);
    let (status, text) = Upload::new(&token, "after.bin", &body).send(&s.client(), &s.url, "gpg");
    assert_eq!(status, 202, "{text} {}", health(&s));
    assert_eq!(fetch(&s.client(), &s.url, "gpg", &sha256_hex(&body)).0, 200);
    assert!(wait_until(Duration::from_secs(20), || health(&s)
        ["queue_depth"]
        == 0));
}

#[test]
fn one_peer_holds_at_most_its_share_of_the_queue() {
    let mut opts = ServerOpts::default();
    opts.server_extra
        .push_str("max_queue = 4\nmax_queue_per_peer = 2\nmin_upload_rate = 0\n");
    let s = Server::start(&opts);
    let token = s.mint("127.0.0.1", 300);
    let (a, gate_a) = stalled_upload(&s, &token, data(1 << 20, 60));
    let (b, gate_b) = stalled_upload(&s, &token, data(1 << 20, 61));
    assert!(
        wait_until(Duration::from_secs(20), || health(&s)["queue_depth"] == 2),
        "{}",
        health(&s)
    );
    // A third upload from the same address: its share is taken.
    let (status, text) =
        Upload::new(&token, "third.bin", &data(1000, 62)).send(&s.client(), &s.url, "gpg");
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("max_queue_per_peer"), "{text}");
    assert_eq!(health(&s)["queue_depth"], 2);
    // Another build machine still gets a place, and its signature.
    let other = s.mint("127.0.0.2", 300);
    let body = data(1000, 63);
    let client = client_from("127.0.0.2");
    let (status, text) = Upload::new(&other, "other.bin", &body).send(&client, &s.url, "gpg");
    assert_eq!(status, 202, "{text}");
    assert_eq!(fetch(&client, &s.url, "gpg", &sha256_hex(&body)).0, 200);
    assert_eq!(
        s.metric("signing_refused_requests_total{reason=\"peer_queue_share\"}"),
        Some(1.0)
    );
    gate_a.open();
    gate_b.open();
    assert_eq!(a.join().unwrap(), 202);
    assert_eq!(b.join().unwrap(), 202);
    assert!(wait_until(Duration::from_secs(20), || health(&s)
        ["queue_depth"]
        == 0));
}

#[test]
fn an_upload_slower_than_min_upload_rate_is_cut_with_408_and_frees_its_place() {
    let mut opts = ServerOpts::default();
    opts.server_extra
        .push_str("max_queue = 1\nmin_upload_rate = 1K\n");
    let s = Server::start(&opts);
    let token = s.mint("127.0.0.1", 300);
    let fields = format!(
        "--B\r\nContent-Disposition: form-data; name=\"token\"\r\n\r\n{token}\r\n\
         --B\r\nContent-Disposition: form-data; name=\"filename\"\r\n\r\nt.bin\r\n\
         --B\r\nContent-Disposition: form-data; name=\"sha256\"\r\n\r\n{}\r\n\
         --B\r\nContent-Disposition: form-data; name=\"filedata\"; filename=\"t.bin\"\r\n\r\n",
        sha256_hex(b"t")
    );
    let mut tls = raw_tls(&s);
    let head = format!(
        "POST /sign/gpg HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\n\
         Content-Length: {}\r\n\r\n{fields}",
        fields.len() + (1 << 20)
    );
    tls.write_all(head.as_bytes()).unwrap();
    // Two bytes a second, one at a time, for at most 40 s: the place is held
    // (never silent for idle_timeout) until the rate floor cuts it off.
    tls.sock
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let (mut got, mut buf) = (Vec::new(), [0u8; 4096]);
    let started = Instant::now();
    let mut held = false;
    while started.elapsed() < Duration::from_secs(40) && got.is_empty() {
        if tls.write_all(b"x").and_then(|_| tls.flush()).is_err() {
            break;
        }
        held |= health(&s)["queue_depth"] == 1;
        std::thread::sleep(Duration::from_millis(450));
        if let Ok(n) = tls.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
    }
    tls.sock
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    while let Ok(n) = tls.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&got);
    assert!(held, "the trickle never held a place");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("min_upload_rate"), "{answer}");
    assert_eq!(
        s.metric("signing_refused_requests_total{reason=\"too_slow\"}"),
        Some(1.0)
    );
    // The place is free again.
    assert!(wait_until(Duration::from_secs(20), || health(&s)
        ["queue_depth"]
        == 0));
    let body = data(3000, 64);
    let (status, text) = Upload::new(&token, "next.bin", &body).send(&s.client(), &s.url, "gpg");
    assert_eq!(status, 202, "{text}");
}

#[test]
fn a_stalled_upload_is_cut_off_and_frees_its_place() {
    let mut opts = ServerOpts::default();
    opts.server_extra
        .push_str("idle_timeout = 2\nmax_queue = 1\n");
    let s = Server::start(&opts);
    let token = s.mint("127.0.0.1", 300);
    let (stalled, gate) = stalled_upload(&s, &token, data(1 << 20, 54));
    // The server gives up on the silent client (a bounded wait, not a timing assertion)…
    let metric = "signing_refused_requests_total{reason=\"idle_timeout\"}";
    assert!(
        wait_until(Duration::from_secs(30), || s.metric(metric) == Some(1.0)),
        "the stalled upload was never cut off"
    );
    // …and the client, let go, sees a 408 or the closed connection, never a 202.
    gate.open();
    let status = stalled.join().unwrap();
    assert!(status == 408 || status == 0, "{status}");
    // Its place in the queue (max_queue = 1) is free again, nothing is kept.
    let body = data(3000, 55);
    assert_eq!(
        Upload::new(&token, "next.bin", &body)
            .send(&s.client(), &s.url, "gpg")
            .0,
        202
    );
    assert_eq!(fetch(&s.client(), &s.url, "gpg", &sha256_hex(&body)).0, 200);
    assert_eq!(
        files_under(&s.work_dir().join("tmp")),
        Vec::<std::path::PathBuf>::new()
    );
}

#[test]
fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let mut opts = ServerOpts::default();
    opts.server_extra.push_str("idle_timeout = 2\n");
    let s = Server::start(&opts);
    // Real TLS, then half a request line, then silence.
    let mut tls = raw_tls(&s);
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = tls.read_to_end(&mut buf);
    // Closed by the server (not by our 30 s read timeout), without a 200.
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "server kept the connection open"
    );
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    // And it still serves others.
    assert_eq!(health(&s)["status"], "ok");
}

#[test]
fn after_kill_9_a_restarted_server_serves_nothing_half_written() {
    let s = Server::start(&ServerOpts::default());
    let token = s.mint("127.0.0.1", 300);
    let body = data(16 << 20, 56);
    assert_eq!(
        Upload::new(&token, "big.bin", &body)
            .send(&s.client(), &s.url, "gpg")
            .0,
        202
    );
    let dir = s.kill9();
    // What a crash may leave: a half-written temp file and a truncated result.
    let work = dir.path().join("work");
    std::fs::write(work.join("tmp/result-deadbeef"), b"half").unwrap();
    let fake = work.join(format!("results/gpg/aa/bb/{}", "ab".repeat(32)));
    std::fs::create_dir_all(fake.parent().unwrap()).unwrap();
    std::fs::write(&fake, b"-----BEGIN PGP SIG").unwrap();

    let s = Server::start_in(dir, &ServerOpts::default());
    for sub in ["tmp", "inputs", "results"] {
        assert_eq!(
            files_under(&s.work_dir().join(sub)),
            Vec::<std::path::PathBuf>::new(),
            "{sub} not emptied at start-up"
        );
    }
    for hash in [sha256_hex(&body), "ab".repeat(32)] {
        let r = s
            .client()
            .get(format!("{}/sign/gpg/{hash}", s.url))
            .send()
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    // Signing works again, and the result verifies.
    let (ok, out) = gpg_sign_and_verify(&s, "gpg", &data(5000, 57));
    assert!(ok, "{out}");
}

#[test]
fn no_secret_reaches_a_file_log_or_the_process_environment() {
    let s = Server::start(&ServerOpts::default());
    let token = s.mint("127.0.0.1", 300);
    let mac = token.rsplit('!').next().unwrap().to_string();
    for i in 0..3 {
        let body = data(20_000 + i, 58 + i as u64);
        assert_eq!(
            Upload::new(&token, "s.bin", &body)
                .send(&s.client(), &s.url, "gpg")
                .0,
            202
        );
        assert_eq!(fetch(&s.client(), &s.url, "gpg", &sha256_hex(&body)).0, 200);
    }
    assert_eq!(
        Upload::new("127.0.0.1:1:2:x!bad", "s.bin", &data(100, 1))
            .send(&s.client(), &s.url, "gpg")
            .0,
        400
    );
    let secrets = [
        passphrase(),
        mac,
        SECRET.to_string(),
        OLD_SECRET.to_string(),
        MINT_PASSWORD.to_string(),
    ];
    let mut places: Vec<(String, Vec<u8>)> = files_under(s.dir.path())
        .into_iter()
        .filter(|p| !p.ends_with("signing.ini"))
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read(&p).unwrap_or_default(),
            )
        })
        .collect();
    places.push(("log".into(), s.stderr().into_bytes()));
    for f in ["cmdline", "environ"] {
        places.push((
            f.into(),
            std::fs::read(format!("/proc/{}/{f}", s.pid())).unwrap_or_default(),
        ));
    }
    for (place, bytes) in &places {
        let text = String::from_utf8_lossy(bytes);
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a secret ({}…) is in {place}",
                &secret[..4]
            );
        }
    }
}

/// Unmounts a tmpfs when dropped.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_work_dir_gives_507_keeps_nothing_and_recovers() {
    require_root("mounts a small tmpfs as work_dir");
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let (ok, out) = run(std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(&work));
    assert!(ok, "mount tmpfs: {out}");
    let _mount = Mount(work.clone());
    // `gpg` with SHA-512 stores its uploads; `gpg-sha256` signs from the upload's hash state
    // and stores nothing of it, so a full disk does not stop it.
    let mut opts = ServerOpts::default();
    let sha256_format = opts.formats.replace("[format:gpg]", "[format:gpg-sha256]");
    opts.formats = format!("{}digest = sha512\n\n{sha256_format}", opts.formats);
    let s = Server::start_in(dir, &opts);
    let token = s.mint("127.0.0.1", 300);

    let big = data(5 << 20, 60);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &big).unwrap();
    // curl reads the answer even while it is still sending (reqwest's blocking
    // client reports its own send error instead when the server answers early).
    let headers = tempfile::NamedTempFile::new().unwrap();
    let (_, out) = run(std::process::Command::new("curl")
        .args(["-s", "--http1.1", "-w", "%{http_code}", "-D"])
        .arg(headers.path())
        .arg("--cacert")
        .arg(certs().join("ca.pem"))
        .args([
            "-F",
            &format!("token={token}"),
            "-F",
            "filename=big.bin",
            "-F",
            &format!("sha256={}", sha256_hex(&big)),
        ])
        .arg("-F")
        .arg(format!("filedata=@{}", file.path().display()))
        .arg(format!("{}/sign/gpg", s.url)));
    assert!(out.trim_end().ends_with("507"), "{out}");
    assert!(out.contains("out of disk space"), "{out}");
    assert!(std::fs::read_to_string(headers.path())
        .unwrap()
        .to_ascii_lowercase()
        .contains("retry-after"));
    // Nothing half-written is kept or served, and the space came back.
    assert_eq!(files_under(&s.work_dir()), Vec::<std::path::PathBuf>::new());
    assert_eq!(
        s.client()
            .get(format!("{}/sign/gpg/{}", s.url, sha256_hex(&big)))
            .send()
            .unwrap()
            .status(),
        404
    );
    let (ok, out) = gpg_sign_and_verify(&s, "gpg", &data(100_000, 61));
    assert!(ok, "{out}");
    // The same big file signed from its hash state: nothing of it touches the full disk.
    let (ok, out) = gpg_sign_and_verify(&s, "gpg-sha256", &big);
    assert!(ok, "{out}");
    drop(s);
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn ten_thousand_idle_connections_do_not_stop_service() {
    // This test process holds the 10 000 client ends: raise its own limit as the server does.
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    assert!(
        hard > 10_100,
        "the hard open-files limit ({hard}) is below 10 100: raise it to run this test"
    );
    // Room for them all: this test is about the accept queue and the
    // handshake timeout (the per-peer cap has its own test in front_door.rs).
    let mut opts = ServerOpts::default();
    opts.server_extra
        .push_str("max_connections = 20000\nmax_connections_per_ip = 20000\n");
    let s = Server::start(&opts);
    let base = open_fds(s.pid());
    let addr: std::net::SocketAddr = s.url.trim_start_matches("https://").parse().unwrap();
    // Plain TCP that never starts TLS: each is held until the handshake timeout.
    let mut held = Vec::with_capacity(10_000);
    let started = Instant::now();
    for i in 0..10_000 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(c) => held.push(c),
            Err(e) => panic!("connection {i} refused: {e} (test process fd limit?)"),
        }
    }
    eprintln!(
        "10000 connects in {:?}; server fds {} (base {base})",
        started.elapsed(),
        open_fds(s.pid())
    );
    // A real client is still served while they are all open.
    assert!(
        wait_until(Duration::from_secs(30), || open_fds(s.pid()) > base + 5_000),
        "the server did not accept them"
    );
    assert_eq!(health(&s)["status"], "ok");
    let token = s.mint("127.0.0.1", 60);
    let body = data(4000, 62);
    assert_eq!(
        Upload::new(&token, "busy.bin", &body)
            .send(&s.client(), &s.url, "gpg")
            .0,
        202
    );
    assert_eq!(fetch(&s.client(), &s.url, "gpg", &sha256_hex(&body)).0, 200);
    // The idle ones are dropped by the server (TLS handshake timeout), and its descriptors come back.
    assert!(
        wait_until(Duration::from_secs(40), || open_fds(s.pid()) < base + 50),
        "still {} fds open (base {base})",
        open_fds(s.pid())
    );
    drop(held);
}
