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
