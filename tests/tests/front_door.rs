//! The front door against peers without credentials (issue 14): each attack
//! that once held the server open, as a test that failed on the old code.

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use signing_tests::*;

/// A config where only 127.0.0.1 and 127.0.0.2 are build machines and only
/// 127.0.0.1 and 127.0.0.3 may mint; 127.0.0.9 is in no list.
fn door_opts(server_extra: &str, security_extra: &str) -> ServerOpts {
    let mut opts = ServerOpts::default();
    opts.server_extra.push_str(server_extra);
    opts.security = format!(
        "allowed_ips = 127.0.0.1, 127.0.0.2, 127.0.0.3\nnew_token_allowed_ips = 127.0.0.1, 127.0.0.3\n\
         new_token_auth = {MINT_USER}:{MINT_PASSWORD}\ntoken_secret = {SECRET}\nmax_token_age = 600\n\
         allowed_filenames = .+\nmax_filesize = 64M\n{security_extra}"
    );
    opts
}

/// Reads until the peer closes (or 30 s pass); returns what came and how long it took.
fn read_until_closed(r: &mut impl Read) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut buf = Vec::new();
    let mut piece = [0u8; 4096];
    loop {
        match r.read(&mut piece) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&piece[..n]),
        }
    }
    (buf, started.elapsed())
}

/// Peak and current resident memory of a process, in KiB.
fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} not in /proc/{pid}/status"))
}

#[test]
fn a_peer_in_no_allow_list_is_closed_before_tls() {
    let s = Server::start(&door_opts("", ""));
    let mut tcp = tcp_from(&s, "127.0.0.9");
    // A TLS ClientHello would get an answer from a server that handshakes;
    // this one closes without a byte.
    let _ = tcp.write_all(b"\x16\x03\x01\x00\x05hello");
    let (got, took) = read_until_closed(&mut tcp);
    assert!(
        got.is_empty(),
        "the server answered a peer in no list: {got:?}"
    );
    assert!(
        took < Duration::from_secs(20),
        "closed only by our read timeout"
    );
    assert!(
        s.metric("signing_closed_connections_total{reason=\"ip_not_allowed\"}")
            .unwrap_or(0.0)
            >= 1.0
    );
}

#[test]
fn an_idle_tls_connection_is_closed_within_idle_timeout() {
    let s = Server::start(&door_opts("idle_timeout = 2\n", ""));
    // Handshake done (a first write forces it), then silence.
    let mut tls = raw_tls_from(&s, "127.0.0.2");
    tls.flush().unwrap();
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).expect("TLS handshake");
    }
    let (got, took) = read_until_closed(&mut tls);
    assert!(
        took < Duration::from_secs(15),
        "an idle connection stayed open {took:?} (idle_timeout = 2)"
    );
    assert!(!String::from_utf8_lossy(&got).contains("200"));
    // Between two requests of a kept-alive connection, the same.
    let mut tls = raw_tls_from(&s, "127.0.0.2");
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (got, took) = read_until_closed(&mut tls);
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    assert!(took < Duration::from_secs(15), "kept alive {took:?}");
}

#[test]
fn an_http2_preface_is_not_served() {
    let s = Server::start(&door_opts("", ""));
    for alpn in [None, Some("http/1.1")] {
        let mut tls = match alpn {
            None => raw_tls_from(&s, "127.0.0.1"),
            Some(p) => raw_tls_alpn(&s, p),
        };
        // The client preface, then an empty SETTINGS frame.
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .unwrap();
        let (got, _) = read_until_closed(&mut tls);
        // An HTTP/2 server answers with a SETTINGS frame: 3 bytes of length,
        // type 4, flags, stream 0.
        let h2_settings = got.len() >= 9 && got[3] == 4 && got[5..9] == [0, 0, 0, 0];
        assert!(
            !h2_settings,
            "HTTP/2 served (ALPN {alpn:?}): {:?}",
            &got[..got.len().min(32)]
        );
        assert!(
            got.is_empty() || got.starts_with(b"HTTP/1.1 "),
            "not an HTTP/1.1 answer: {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    assert!(wait_until(Duration::from_secs(5), || s
        .stderr()
        .contains("HTTP/2 preface")));
}

/// [`raw_tls_from`] 127.0.0.1 offering the ALPN protocol `proto`.
fn raw_tls_alpn(
    s: &Server,
    proto: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    use rustls_pki_types::pem::PemObject as _;
    let ca = std::fs::read(certs().join("ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![proto.as_bytes().to_vec()];
    let conn =
        rustls::ClientConnection::new(std::sync::Arc::new(cfg), "127.0.0.1".try_into().unwrap())
            .unwrap();
    rustls::StreamOwned::new(conn, tcp_from(s, "127.0.0.1"))
}

#[test]
fn connections_are_capped_per_peer_and_health_still_answers_others() {
    let s = Server::start(&door_opts(
        "max_connections_per_ip = 8\nmax_connections = 100\n",
        "",
    ));
    // 8 idle TLS connections from .2 hold its share...
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut t = raw_tls_from(&s, "127.0.0.2");
        t.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap(); // half a head: held
        held.push(t);
    }
    // ...so a 9th is closed at once, without TLS.
    let mut ninth = tcp_from(&s, "127.0.0.2");
    let (got, took) = read_until_closed(&mut ninth);
    assert!(got.is_empty() && took < Duration::from_secs(20));
    // Another allowed peer is served meanwhile.
    let r = client_from("127.0.0.3")
        .get(format!("{}/health", s.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        s.metric("signing_closed_connections_total{reason=\"peer_connection_limit\"}")
            .unwrap_or(0.0)
            >= 1.0
    );
    drop(held);
}

/// Starts `POST /sign/gpg` with a body of `len` bytes: the request head and
/// the first `prefix` bytes of the form.
fn start_upload(
    s: &Server,
    local_ip: &str,
    len: usize,
    prefix: &[u8],
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    let mut tls = raw_tls_from(s, local_ip);
    let head = format!(
        "POST /sign/gpg HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=BOUNDARY\r\n\
         Content-Length: {len}\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).unwrap();
    tls.write_all(prefix).unwrap();
    tls
}

#[test]
fn endless_part_headers_are_refused_with_bounded_memory() {
    let s = Server::start(&door_opts("", ""));
    let pid = s.pid();
    let before = rss_kib(pid, "VmRSS:");
    const EACH: usize = 48 << 20;
    let prefix: &[u8] = b"--BOUNDARY\r\nContent-Disposition: form-data; name=\"";
    // 8 connections each push 48 MiB of one part header that never ends.
    let answers: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    let mut tls = start_upload(&s, "127.0.0.2", EACH + prefix.len(), prefix);
                    let chunk = vec![b'A'; 64 * 1024];
                    let mut sent = 0;
                    while sent < EACH {
                        if tls.write_all(&chunk).is_err() {
                            break; // refused and closed: what we want
                        }
                        sent += chunk.len();
                    }
                    let (got, _) = read_until_closed(&mut tls);
                    String::from_utf8_lossy(&got).to_string()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let peak = rss_kib(pid, "VmHWM:");
    for a in &answers {
        assert!(a.is_empty() || a.starts_with("HTTP/1.1 431"), "{a}");
    }
    assert!(
        answers.iter().any(|a| a.starts_with("HTTP/1.1 431")),
        "no client read the refusal: {answers:?}"
    );
    assert!(
        peak < before + 32 * 1024,
        "the server grew from {before} KiB to a peak of {peak} KiB"
    );
    assert!(gpg_sign_and_verify(&s, "gpg", &data(5000, 3)).0);
}

#[test]
fn uploads_without_a_valid_token_hold_no_queue_slot() {
    let s = Server::start(&door_opts("max_queue = 2\nform_timeout = 4\n", ""));
    // 32 uploads with no token trickle their nonce, and 8 with a garbage token.
    let mut trickling: Vec<_> = (0..32)
        .map(|_| {
            start_upload(
                &s,
                "127.0.0.2",
                1 << 20,
                b"--BOUNDARY\r\nContent-Disposition: form-data; name=\"nonce\"\r\n\r\n",
            )
        })
        .collect();
    let mut garbage: Vec<_> = (0..8)
        .map(|_| {
            start_upload(
                &s,
                "127.0.0.2",
                1 << 20,
                b"--BOUNDARY\r\nContent-Disposition: form-data; name=\"token\"\r\n\r\nnot-a-token\r\n--BOUNDARY\r\n",
            )
        })
        .collect();
    for t in trickling.iter_mut().take(4) {
        t.write_all(b"1").unwrap();
    }
    // A real upload still gets a slot while they trickle.
    let token = s.mint("127.0.0.1", 60);
    let body = data(3000, 9);
    let (status, text) = Upload::new(&token, "real.bin", &body).send(&s.client(), &s.url, "gpg");
    assert_eq!(status, 202, "{text}");
    // The garbage tokens were refused as soon as their field ended.
    for g in &mut garbage {
        let (got, _) = read_until_closed(g);
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    }
    // The trickling ones are cut off by form_timeout (4 s), not held for ever.
    let started = Instant::now();
    for t in &mut trickling {
        let (got, _) = read_until_closed(t);
        let got = String::from_utf8_lossy(&got);
        assert!(got.is_empty() || got.starts_with("HTTP/1.1 408"), "{got}");
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(wait_until(Duration::from_secs(5), || s
        .stderr()
        .contains("form_timeout")));
}

#[test]
fn failed_minting_is_throttled_per_address_and_logged_with_the_user() {
    let s = Server::start(&door_opts("", "mint_failures_per_minute = 10\n"));
    let mint = |ip: &str, password: &str| {
        client_from(ip)
            .post(format!("{}/token", s.url))
            .basic_auth("mallory", Some(password))
            .form(&[("slave_ip", "127.0.0.1"), ("duration", "60")])
            .send()
            .unwrap()
    };
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..60 {
        let r = mint("127.0.0.3", "wrong");
        if r.status() == 429 {
            retry_after = r.headers().get("retry-after").cloned();
        }
        statuses.push(r.status().as_u16());
    }
    assert!(statuses[..10].iter().all(|c| *c == 401), "{statuses:?}");
    assert!(statuses[10..].iter().all(|c| *c == 429), "{statuses:?}");
    assert!(retry_after.is_some(), "429 without Retry-After");
    // Another allowed address mints at once with the right password.
    let r = client_from("127.0.0.1")
        .post(format!("{}/token", s.url))
        .basic_auth(MINT_USER, Some(MINT_PASSWORD))
        .form(&[("slave_ip", "127.0.0.1"), ("duration", "60")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        s.stderr().contains("mallory"),
        "the log does not name the user"
    );
}

#[test]
fn a_field_too_long_is_drained_so_the_client_reads_the_400() {
    let s = Server::start(&door_opts("", ""));
    for _ in 0..3 {
        let form = reqwest::blocking::multipart::Form::new()
            .text("nonce", "n".repeat(10 << 20))
            .part(
                "filedata",
                reqwest::blocking::multipart::Part::bytes(vec![1u8; 100]).file_name("f"),
            );
        let r = s
            .client()
            .post(format!("{}/sign/gpg", s.url))
            .multipart(form)
            .send()
            .expect("a broken pipe instead of the answer");
        assert_eq!(r.status(), 400);
        assert!(r.text().unwrap().contains("nonce"));
    }
}

#[test]
fn refusals_are_logged_with_their_reason_and_cleaned() {
    let s = Server::start(&door_opts("", ""));
    let body = data(100, 1);
    let mut up = Upload::new("not\x1b[31m-a-token", "x.bin", &body);
    up.sha256 = Some(sha256_hex(&body));
    let (status, text) = up.send(&s.client(), &s.url, "gpg");
    assert_eq!(status, 400, "{text}");
    assert!(!text.contains('\x1b'), "raw control bytes echoed: {text:?}");
    assert!(wait_until(Duration::from_secs(5), || s
        .stderr()
        .contains("reason=\"token\"")
        || s.stderr().contains("reason=token")));
    // A 431 from hyper itself is logged too.
    let mut tls = raw_tls(&s);
    let big = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let _ = tls.write_all(big.as_bytes());
    let (got, _) = read_until_closed(&mut tls);
    // hyper answers and closes with most of the header unread, so the kernel
    // resets the connection and may drop the answer before we read it (a
    // race CI hit): what was read, if anything, is the 431; the log says it
    // either way.
    let got = String::from_utf8_lossy(&got);
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 431"), "{got}");
    assert!(wait_until(Duration::from_secs(5), || s
        .stderr()
        .contains("431")));
}

#[test]
fn cleanup_removes_empty_store_directories() {
    let s = Server::start(&door_opts("max_file_age = 1\ncleanup_interval = 1\n", ""));
    for i in 0..20 {
        assert!(gpg_sign_and_verify(&s, "gpg", &data(1000, 100 + i)).0);
    }
    let results = s.work_dir().join("results/gpg");
    let dirs = || walk_dirs(&s.work_dir().join("inputs")) + walk_dirs(&results);
    assert!(dirs() > 0, "nothing was stored");
    assert!(
        wait_until(Duration::from_secs(15), || dirs() == 0),
        "{} empty directories left under the store",
        dirs()
    );
}

/// Directories below `root` (not counting it).
fn walk_dirs(root: &std::path::Path) -> usize {
    let Ok(rd) = std::fs::read_dir(root) else {
        return 0;
    };
    rd.flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| 1 + walk_dirs(&e.path()))
        .sum()
}

#[test]
fn sigterm_with_nothing_pending_exits_at_once() {
    // A grace of 60 s would hold a shutdown for a minute if it applied.
    let mut s = Server::start(&door_opts("drain_grace = 60\n", ""));
    s.signal("TERM");
    let status = s.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some(),
        "still running 20 s after SIGTERM with nothing pending"
    );
}

#[test]
fn an_app_tarball_bomb_is_422_and_never_fills_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    // A 2 GiB file of zeros inside a bundle: about 2 MiB gzipped.
    let app = dir.path().join("src/Bomb.app/Contents/MacOS");
    std::fs::create_dir_all(&app).unwrap();
    let f = std::fs::File::create(app.join("Bomb")).unwrap();
    f.set_len(2 << 30).unwrap();
    let bomb = dir.path().join("bomb.tar.gz");
    let (ok, out) = run(Command::new("sh").arg("-c").arg(format!(
        "tar -C {} -cf - Bomb.app | gzip -1 > {}",
        dir.path().join("src").display(),
        bomb.display()
    )));
    assert!(ok, "{out}");
    let body = std::fs::read(&bomb).unwrap();
    assert!(body.len() < 16 << 20, "bomb is {} bytes", body.len());
    let s = Server::start(&apple::apple_opts("max_filesize = 16M"));
    let token = s.mint("127.0.0.1", 60);
    // Watch the work dir while the server unpacks.
    let work = s.work_dir();
    let watch = std::thread::spawn(move || {
        let mut peak = 0u64;
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end {
            let (_, du) = run(Command::new("du").arg("-sb").arg(&work));
            let n: u64 = du
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            peak = peak.max(n);
            if peak > 0 && n < 1 << 20 {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        peak
    });
    let (status, text) =
        Upload::new(&token, "Bomb.tar.gz", &body).send(&s.client(), &s.url, "macapp");
    assert_eq!(status, 202, "{text}");
    let (status, _, reason) = fetch(&s.client(), &s.url, "macapp", &sha256_hex(&body));
    let reason = String::from_utf8_lossy(&reason);
    assert_eq!(status, 422, "{reason}");
    assert!(reason.contains("max_unpacked_size"), "{reason}");
    let peak = watch.join().unwrap();
    assert!(peak < 300 << 20, "the work dir reached {peak} bytes");
    assert!(
        s.audit().contains("max_unpacked_size"),
        "no reason in the audit record"
    );
}

#[test]
fn a_bundle_whose_executable_is_not_mach_o_is_422_with_its_reason_audited() {
    let dir = tempfile::tempdir().unwrap();
    let good = apple::app_tarball(dir.path(), "Zeros");
    let unpacked = dir.path().join("re");
    std::fs::create_dir_all(&unpacked).unwrap();
    apple::untar(&good, &unpacked);
    std::fs::write(
        unpacked.join("Zeros.app/Contents/MacOS/firefox"),
        vec![0u8; 4096],
    )
    .unwrap();
    let bad = dir.path().join("bad.tar.gz");
    let (ok, out) = run(Command::new("tar")
        .arg("-C")
        .arg(&unpacked)
        .arg("-czf")
        .arg(&bad)
        .arg("Zeros.app"));
    assert!(ok, "{out}");
    let body = std::fs::read(&bad).unwrap();
    let s = Server::start(&apple::apple_opts(""));
    let token = s.mint("127.0.0.1", 60);
    let (status, text) =
        Upload::new(&token, "Zeros.tar.gz", &body).send(&s.client(), &s.url, "macapp");
    assert_eq!(status, 202, "{text}");
    let (status, _, reason) = fetch(&s.client(), &s.url, "macapp", &sha256_hex(&body));
    let reason = String::from_utf8_lossy(&reason);
    assert_eq!(status, 422, "{reason}");
    assert!(reason.contains("not a Mach-O"), "{reason}");
    assert!(s.audit().contains("not a Mach-O"), "{}", s.audit());
}

/// The server's own established sockets (local port = its port), from
/// /proc/net/tcp: how many, and the largest send queue (bytes the kernel holds
/// for a client that does not read).
fn server_sockets(s: &Server) -> (usize, u64) {
    let port: u16 = s.url.rsplit(':').next().unwrap().parse().unwrap();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let (mut n, mut most) = (0, 0);
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let local = f[1]
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok());
        if local == Some(port) && f[3] == "01" {
            n += 1;
            let tx = f[4].split(':').next().unwrap();
            most = most.max(u64::from_str_radix(tx, 16).unwrap());
        }
    }
    (n, most)
}

/// A TLS connection from 127.0.0.2 whose receive buffer is as small as the
/// kernel allows (set before connecting), so it stops taking answers soon.
fn tls_small_window(
    s: &Server,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    let addr: std::net::SocketAddr = s.url.trim_start_matches("https://").parse().unwrap();
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4 << 10).unwrap();
    let local: std::net::SocketAddr = "127.0.0.2:0".parse().unwrap();
    sock.bind(&local.into()).unwrap();
    sock.connect(&addr.into()).unwrap();
    let tcp: std::net::TcpStream = sock.into();
    tcp.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    tls_on(tcp)
}

#[test]
fn answers_nobody_reads_do_not_hold_connections_or_memory() {
    let s = Server::start(&door_opts("idle_timeout = 3\n", ""));
    let pid = s.pid();
    let before = rss_kib(pid, "VmRSS:");
    let requests = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(256);
    // 64 connections pipeline GET /metrics and never read: each writes
    // until the server stops taking requests (at most 8 MiB of them).
    let conns: Vec<_> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..64)
            .map(|_| {
                scope.spawn(|| {
                    let mut tls = tls_small_window(&s);
                    let mut sent = 0;
                    while sent < 8 << 20 && tls.write_all(&requests).is_ok() {
                        sent += requests.len();
                    }
                    tls
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let (open, most_queued) = server_sockets(&s);
    let rss = rss_kib(pid, "VmRSS:");

    // Kernel: SO_SNDBUF 256 KiB, which Linux doubles (autotuning would go to 4 MiB).
    assert!(
        most_queued <= 512 << 10,
        "one connection has {most_queued} bytes queued in the kernel ({open} open)"
    );
    assert!(
        rss < before + 64 * 1024,
        "the server grew from {before} KiB to {rss} KiB"
    );
    // Every one is closed once its writes made no progress for idle_timeout
    // (or, if hyper was waiting for the rest of a request head then, by its
    // header timer: the same idle_timeout).
    let closed = wait_until(Duration::from_secs(60), || server_sockets(&s).0 == 0);
    assert!(closed, "{} connections still open", server_sockets(&s).0);
    assert!(
        s.metric("signing_closed_connections_total{reason=\"answers_not_read\"}")
            .unwrap_or(0.0)
            >= 1.0,
        "{}",
        s.stderr()
    );
    assert!(s.stderr().contains("answers not read within idle_timeout"));
    drop(conns);
    assert!(gpg_sign_and_verify(&s, "gpg", &data(5000, 4)).0);
}
