//! The door checks of POST /sign/FORMAT (docs/PROTOCOL.md, "Signing a file").

use signing_tests::*;

fn stored_files(s: &Server) -> Vec<std::path::PathBuf> {
    ["inputs", "results", "tmp"]
        .iter()
        .flat_map(|d| files_under(&s.work_dir().join(d)))
        .collect()
}

#[test]
fn hash_mismatch_is_400_and_nothing_is_kept() {
    let s = Server::start(&ServerOpts::default());
    let token = s.mint("127.0.0.1", 60);
    let body = data(4096, 11);
    let mut up = Upload::new(&token, "x.bin", &body);
    up.sha256 = Some(sha256_hex(b"something else"));
    let (status, text) = up.send(&s.client(), &s.url, "gpg");
    assert_eq!(status, 400);
    assert!(text.contains("sha256 mismatch"), "{text}");
    let mut up = Upload::new(&token, "x.bin", &body);
    up.sha256 = None;
    up.sha1 = Some(sha1_hex(b"something else"));
    assert_eq!(up.send(&s.client(), &s.url, "gpg").0, 400);
    let mut up = Upload::new(&token, "x.bin", &body);
    up.sha256 = None;
    let (status, text) = up.send(&s.client(), &s.url, "gpg");
    assert_eq!(status, 400, "a hash is required: {text}");
    assert_eq!(stored_files(&s), Vec::<std::path::PathBuf>::new());
    let (status, _, _) = fetch(&s.client(), &s.url, "gpg", &sha256_hex(&body));
    assert_eq!(status, 404);
}

#[test]
fn too_small_is_400() {
    let s = Server::start(&ServerOpts::default());
    let token = s.mint("127.0.0.1", 60);
    let (status, text) = Upload::new(&token, "x.bin", b"tiny").send(&s.client(), &s.url, "gpg");
    assert_eq!(status, 400);
    assert!(text.contains("too small"), "{text}");
}

/// POSTs `file` with curl (which reads an early answer while still
/// sending, as most clients do); returns the HTTP status.
fn curl_upload(
    s: &Server,
    token: &str,
    file: &std::path::Path,
    sha256: &str,
    chunked: bool,
) -> String {
    let mut cmd = std::process::Command::new("curl");
    cmd.args([
        "-s",
        "--http1.1",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--cacert",
    ])
    .arg(certs().join("ca.pem"));
    if chunked {
        cmd.args(["-H", "Transfer-Encoding: chunked"]);
    }
    cmd.args([
        "-F",
        &format!("token={token}"),
        "-F",
        "filename=big.bin",
        "-F",
        &format!("sha256={sha256}"),
    ])
    .arg("-F")
    .arg(format!("filedata=@{}", file.display()))
    .arg(format!("{}/sign/gpg", s.url));
    let (_, out) = run(&mut cmd);
    out.trim().to_string()
}

#[test]
fn too_large_is_413_and_reading_stops_early() {
    let mut opts = ServerOpts::default();
    opts.formats.push_str("max_filesize = 1M\n");
    let s = Server::start(&opts);
    let token = s.mint("127.0.0.1", 60);
    let dir = tempfile::tempdir().unwrap();
    let big = data(16 << 20, 12);
    let file = dir.path().join("big.bin");
    std::fs::write(&file, &big).unwrap();

    // With a Content-Length: refused before the body is read.
    assert_eq!(
        curl_upload(&s, &token, &file, &sha256_hex(&big), false),
        "413"
    );
    assert_eq!(s.metric("signing_upload_bytes_total"), Some(0.0));
    // Chunked, no Content-Length: refused as soon as the limit is passed. The server closes
    // at once, and the close can reach curl (still sending) as a reset before the 413 is read
    // (curl then reports 000 or 100): such a try is repeated, at most three times. Each try
    // must stop the server's reading just past the limit.
    let mut status = String::new();
    for _ in 0..3 {
        let before = s.metric("signing_upload_bytes_total").expect("metric");
        status = curl_upload(&s, &token, &file, &sha256_hex(&big), true);
        let read = s.metric("signing_upload_bytes_total").expect("metric") - before;
        assert!(
            read > (1 << 20) as f64 && read < (2 << 20) as f64,
            "server read {read} bytes of a 16 MiB upload with a 1 MiB limit"
        );
        if status != "000" && status != "100" {
            break;
        }
    }
    assert_eq!(status, "413");
    assert!(stored_files(&s).is_empty(), "{:?}", stored_files(&s));
    // Exactly at the limit is fine, and the server kept serving.
    let ok = data(1 << 20, 13);
    assert_eq!(
        Upload::new(&token, "ok.bin", &ok)
            .send(&s.client(), &s.url, "gpg")
            .0,
        202
    );
}

#[test]
fn filename_must_be_allowed() {
    let mut opts = ServerOpts::default();
    opts.security = opts.security.replace(
        "allowed_filenames = .+",
        r"allowed_filenames = .*\.exe, .*\.mar",
    );
    let s = Server::start(&opts);
    let token = s.mint("127.0.0.1", 60);
    let body = data(100, 14);
    let (status, text) = Upload::new(&token, "evil.sh", &body).send(&s.client(), &s.url, "gpg");
    assert_eq!(status, 403, "{text}");
    assert_eq!(
        Upload::new(&token, "setup.exe", &body)
            .send(&s.client(), &s.url, "gpg")
            .0,
        202
    );
    // Whole match only.
    assert_eq!(
        Upload::new(&token, "setup.exe.sh", &body)
            .send(&s.client(), &s.url, "gpg")
            .0,
        403
    );
}

#[test]
fn a_path_as_filename_is_only_a_label() {
    let s = Server::start(&ServerOpts::default());
    let token = s.mint("127.0.0.1", 60);
    let body = data(2000, 15);
    let before = std::fs::read("/etc/passwd").unwrap();
    let (status, text) =
        Upload::new(&token, "../../../../etc/passwd", &body).send(&s.client(), &s.url, "gpg");
    assert_eq!(status, 202, "{text}");
    let (status, _, sig) = fetch(&s.client(), &s.url, "gpg", &sha256_hex(&body));
    assert_eq!(status, 200);
    assert!(sig.starts_with(b"-----BEGIN PGP SIGNATURE-----"));
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), before);
    for f in files_under(s.dir.path()) {
        assert!(
            !f.to_string_lossy().contains("passwd"),
            "{} made from the client's name",
            f.display()
        );
    }
}

#[test]
fn unknown_format_is_404() {
    let s = Server::start(&ServerOpts::default());
    let token = s.mint("127.0.0.1", 60);
    let (status, text) =
        Upload::new(&token, "x.bin", &data(100, 16)).send(&s.client(), &s.url, "nosuch");
    assert_eq!(status, 404, "{text}");
}

#[test]
fn not_multipart_is_400_and_the_server_keeps_serving() {
    let s = Server::start(&ServerOpts::default());
    let r = s
        .client()
        .post(format!("{}/sign/gpg", s.url))
        .body("hello")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let token = s.mint("127.0.0.1", 60);
    assert_eq!(
        Upload::new(&token, "x.bin", &data(100, 17))
            .send(&s.client(), &s.url, "gpg")
            .0,
        202
    );
}

#[test]
fn a_large_upload_refused_on_its_form_fields_still_gets_the_answer() {
    // The file is far larger than socket buffers: without draining, the
    // client would see a reset connection instead of the 400/403.
    let mut opts = ServerOpts::default();
    opts.security = opts
        .security
        .replace("allowed_filenames = .+", r"allowed_filenames = .*\.bin");
    let s = Server::start(&opts);
    let dir = tempfile::tempdir().unwrap();
    let big = data(24 << 20, 19);
    let file = dir.path().join("big.bin");
    std::fs::write(&file, &big).unwrap();
    assert_eq!(
        curl_upload(&s, "not-a-token", &file, &sha256_hex(&big), false),
        "400"
    );
    let token = s.mint("127.0.0.1", 60);
    // The same through reqwest, which reads the answer only once it has sent everything.
    let (status, text) = Upload::new(&token, "big.exe", &big).send(&s.client(), &s.url, "gpg");
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("not allowed"), "{text}");
    assert!(stored_files(&s).is_empty());
    assert_eq!(
        s.metric("signing_upload_bytes_total"),
        Some(0.0),
        "a drained upload is not received"
    );
}

/// `n` parts (after the first boundary) with empty names and nothing in
/// them, each padded with `pad` bytes of transport padding after its
/// boundary and `pad` bytes of an extra header line: bytes the server must
/// parse that carry no name and no value.
fn padded_parts(n: usize, pad: usize) -> Vec<u8> {
    let mut out = b"--B".to_vec();
    for _ in 0..n {
        out.extend(std::iter::repeat_n(b' ', pad));
        out.extend_from_slice(b"\r\nContent-Disposition: form-data; name=\"\"\r\nX-Pad: ");
        out.extend(std::iter::repeat_n(b'p', pad));
        out.extend_from_slice(b"\r\n\r\n\r\n--B");
    }
    out
}

/// Starts `POST /sign/gpg` with no token, announcing `len` bytes of body,
/// and sends `body`; returns the connection.
fn raw_form(
    s: &Server,
    len: usize,
    body: &[u8],
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    use std::io::Write as _;
    let mut tls = raw_tls(s);
    let head = format!(
        "POST /sign/gpg HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\n\
         Content-Length: {len}\r\n\r\n"
    );
    let _ = tls
        .write_all(head.as_bytes())
        .and_then(|_| tls.write_all(body));
    tls
}

/// The first line of what the server answers on `tls`.
fn status_line(
    tls: &mut rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
) -> String {
    use std::io::Read as _;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = tls.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"\n") {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn the_form_before_filedata_counts_every_byte_and_its_parts() {
    let mut opts = ServerOpts::default();
    opts.server_extra.push_str("form_timeout = 20\n");
    let s = Server::start(&opts);
    // 20 parts of 8 KB whose names are empty: 160 KB, refused at 64 KiB.
    let body = padded_parts(20, 4000);
    let mut tls = raw_form(&s, 1 << 20, &body);
    let answer = status_line(&mut tls);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("the form before filedata passes 65536 bytes"),
        "{answer}"
    );
    // 100 tiny parts: refused at the 33rd.
    let body = padded_parts(100, 0);
    let mut tls = raw_form(&s, 1 << 20, &body);
    let answer = status_line(&mut tls);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("more than 32 parts"), "{answer}");
    // What one token-less client gets the server to read before it is
    // refused: 64 KiB and a piece (what is drained afterwards, unparsed, so
    // it can read its 400, is not counted here).
    let before = s
        .metric("signing_received_bytes_total{format=\"gpg\"}")
        .unwrap_or(0.0);
    let chunk = padded_parts(100, 4000);
    let len = 60 << 20; // within max_filesize (64M)
    let mut tls = raw_form(&s, len, &chunk[..3]);
    let mut sent = 3;
    while sent + chunk.len() - 3 <= len {
        use std::io::Write as _;
        if tls.write_all(&chunk[3..]).is_err() {
            break;
        }
        sent += chunk.len() - 3;
    }
    drop(tls);
    let mut read = 0.0;
    let counted = wait_until(std::time::Duration::from_secs(30), || {
        read = s
            .metric("signing_received_bytes_total{format=\"gpg\"}")
            .unwrap_or(0.0)
            - before;
        read > 0.0
    });
    assert!(counted, "the body's bytes were never counted");
    assert!(
        read <= (1 << 20) as f64,
        "the server read {read} bytes of a form with no filedata ({sent} sent)"
    );
}

#[test]
fn a_slow_trailing_field_is_408_naming_the_fields_after_filedata() {
    let mut opts = ServerOpts::default();
    opts.server_extra.push_str("form_timeout = 2\n");
    let s = Server::start(&opts);
    let token = s.mint("127.0.0.1", 300);
    let file = data(2000, 5);
    let mut body = format!(
        "--B\r\nContent-Disposition: form-data; name=\"token\"\r\n\r\n{token}\r\n\
         --B\r\nContent-Disposition: form-data; name=\"filename\"\r\n\r\nx.bin\r\n\
         --B\r\nContent-Disposition: form-data; name=\"filedata\"; filename=\"x.bin\"\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&file);
    // The trailing sha256 starts, and never ends.
    body.extend_from_slice(b"\r\n--B\r\nContent-Disposition: form-data; name=\"sha256\"\r\n\r\n");
    let mut tls = raw_form(&s, body.len() + 100, &body);
    let answer = status_line(&mut tls);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("the form fields after filedata took longer than 2 s"),
        "{answer}"
    );
}

#[test]
fn a_re_upload_of_a_signed_input_leaves_an_audit_line() {
    let s = Server::start(&ServerOpts::default());
    let token = s.mint("127.0.0.1", 300);
    let body = data(3000, 21);
    let sha = sha256_hex(&body);
    assert_eq!(
        Upload::new(&token, "first.bin", &body)
            .send(&s.client(), &s.url, "gpg")
            .0,
        202
    );
    assert_eq!(fetch(&s.client(), &s.url, "gpg", &sha).0, 200);
    assert_eq!(
        Upload::new(&token, "again.bin", &body)
            .send(&s.client(), &s.url, "gpg")
            .0,
        202
    );
    let lines: Vec<serde_json::Value> = s
        .audit()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["input_sha256"] == sha.as_str())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["outcome"], "ok");
    assert_eq!(lines[1]["outcome"], "duplicate");
    assert_eq!(lines[1]["filename"], "again.bin");
    assert_eq!(lines[1]["output_sha256"], lines[0]["output_sha256"]);
}
