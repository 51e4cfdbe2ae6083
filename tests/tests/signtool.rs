//! The `signtool` client end to end against real signing-server processes:
//! gpg signatures verified with gpgv, failover across servers (one stopped,
//! one killed with SIGKILL mid-run), the cache, and `signtool token`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use signing_tests::signtool::*;
use signing_tests::*;

/// Servers that long-poll briefly, so `--read-timeout 4` is always longer.
fn opts() -> ServerOpts {
    ServerOpts {
        server_extra: "long_poll = 2\n".into(),
        ..ServerOpts::default()
    }
}

fn token_file(dir: &Path, s: &Server) -> std::path::PathBuf {
    let p = dir.join("token");
    std::fs::write(&p, s.mint("127.0.0.1", 300)).unwrap();
    p
}

#[test]
fn signs_a_directory_with_include_exclude_and_writes_asc_beside_each_file() {
    let s = Server::start(&opts());
    let dir = tempfile::tempdir().unwrap();
    let tok = token_file(dir.path(), &s);
    let build = dir.path().join("build");
    std::fs::create_dir_all(build.join("sub")).unwrap();
    let files = [
        build.join("a.bin"),
        build.join("sub/b.bin"),
        build.join("c.txt"),
        build.join("skip-me.bin"),
    ];
    for (k, f) in files.iter().enumerate() {
        std::fs::write(f, data(100_000 + k * 1000, k as u64 + 10)).unwrap();
    }
    // Bare `signtool ARGS` is `signtool sign ARGS`.
    let (code, log) = output(
        signtool_sign(&[host_of("gpg", &s.url)], &tok, &dir.path().join("nonce"))
            .args(["-f", "gpg", "-i", "*.bin", "-x", "skip-*", "--jobs", "2"])
            .arg(&build),
    );
    assert_eq!(code, 0, "{log}\nserver:\n{}", s.stderr());
    for f in &files[..2] {
        let asc = Path::new(&format!("{}.asc", f.display())).to_path_buf();
        let (ok, out) = gpgv(&asc, f);
        assert!(ok, "gpgv {}: {out}", asc.display());
        let h = sha256_hex(&std::fs::read(f).unwrap());
        assert!(
            log.contains(&format!("processing {}", f.display())),
            "{log}"
        );
        // Not hashed first: the server takes the digest after the file, so
        // the file is hashed while it is sent, then fetched by that hash.
        assert!(
            log.contains(&format!("uploading {} to", f.display()))
                && log.contains("(hashed on the way)"),
            "{log}"
        );
        assert!(
            log.contains(&format!("{h}: uploaded {}", f.display())),
            "{log}"
        );
        assert!(log.contains(&format!("{h}: OK")), "{log}");
    }
    for f in &files[2..] {
        assert!(
            !Path::new(&format!("{}.asc", f.display())).exists(),
            "{} should have been skipped",
            f.display()
        );
    }
    // The inputs are untouched (gpg writes FILE.asc, never over FILE).
    assert_eq!(std::fs::read(&files[0]).unwrap(), data(100_000, 10));
    assert!(temp_files(&build).is_empty());
    assert!(
        !std::fs::read_to_string(dir.path().join("nonce"))
            .unwrap()
            .is_empty(),
        "X-Nonce stored"
    );

    // Tampering with a signed file makes gpgv refuse it.
    let mut t = std::fs::read(&files[0]).unwrap();
    t[500] ^= 1;
    std::fs::write(&files[0], &t).unwrap();
    let (ok, _) = gpgv(Path::new(&format!("{}.asc", files[0].display())), &files[0]);
    assert!(!ok, "gpgv accepted a modified file");
}

#[test]
fn output_file_output_dir_and_a_pinned_server_certificate() {
    let s = Server::start(&opts());
    let dir = tempfile::tempdir().unwrap();
    let tok = token_file(dir.path(), &s);
    let f = dir.path().join("firefox.tar.bz2");
    std::fs::write(&f, data(50_000, 3)).unwrap();
    // `-o` names the signature (Mozilla's `-f gpg -o FILE.asc`); `-c` the server's own cert;
    // `localhost` is one of its names, checked.
    let port = s.url.rsplit(':').next().unwrap();
    let out = dir.path().join("sig.asc");
    let (code, log) = output(
        Command::new(bin("signtool"))
            .args(["sign", "-H", &format!("gpg:localhost:{port}"), "-c"])
            .arg(certs().join("server.pem"))
            .arg("-t")
            .arg(&tok)
            .args(["-f", "gpg", "-o"])
            .arg(&out)
            .arg(&f),
    );
    assert_eq!(code, 0, "{log}");
    assert!(gpgv(&out, &f).0);
    assert!(!dir.path().join("firefox.tar.bz2.asc").exists());

    let outdir = dir.path().join("signed");
    let (code, log) = output(
        signtool_sign(&[host_of("gpg", &s.url)], &tok, &dir.path().join("n"))
            .args(["-f", "gpg", "-d"])
            .arg(&outdir)
            .arg(&f),
    );
    assert_eq!(code, 0, "{log}");
    assert!(gpgv(&outdir.join("firefox.tar.bz2.asc"), &f).0);

    // A -c file without a certificate is a local error.
    let not_a_cert = dir.path().join("not-a-cert.pem");
    std::fs::copy(certs().join("gpg/public.asc"), &not_a_cert).unwrap();
    let with_cert = |cert: &Path| {
        output(
            Command::new(bin("signtool"))
                .args(["-H", &host_of("gpg", &s.url), "-c"])
                .arg(cert)
                .arg("-t")
                .arg(&tok)
                .args(["-f", "gpg", "--max-errors", "1"])
                .arg(&f),
        )
    };
    let (code, log) = with_cert(&not_a_cert);
    assert_eq!(code, 2, "{log}");
    // A CA that did not issue the server's certificate: the TLS handshake fails, exit 1,
    // the host and the reason are named, nothing is written.
    let other_ca = dir.path().join("other-ca.pem");
    let (ok, out) = run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=Other CA",
        ])
        .arg("-keyout")
        .arg(dir.path().join("other-ca.key"))
        .arg("-out")
        .arg(&other_ca));
    assert!(ok, "{out}");
    std::fs::remove_file(out_asc_of(&f)).ok();
    let (code, log) = with_cert(&other_ca);
    assert_eq!(code, 1, "{log}");
    assert!(log.contains(&s.url) && log.contains("certificate"), "{log}");
    assert!(!out_asc_of(&f).exists());
}

fn out_asc_of(f: &Path) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("{}.asc", f.display()))
}

#[test]
fn usage_errors_exit_2() {
    let (code, log) = output(Command::new(bin("signtool")).args(["-f", "gpg", "x"]));
    assert_eq!(code, 2, "{log}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t"), "tok").unwrap();
    let (code, log) = output(
        signtool_sign(
            &["mar:127.0.0.1:1".into()],
            &dir.path().join("t"),
            &dir.path().join("n"),
        )
        .args(["-f", "gpg"])
        .arg(dir.path()),
    );
    assert_eq!(code, 2, "{log}");
    assert!(log.contains("no host serves format gpg"), "{log}");
    let (code, log) = output(Command::new(bin("signtool")).arg("--help"));
    assert_eq!(code, 0);
    assert!(log.contains("Exit codes"), "{log}");
}

#[test]
fn three_servers_one_stopped_one_killed_mid_run_every_file_signed() {
    let a = Server::start(&opts());
    let a_url = a.url.clone();
    assert!(a.terminate().success());
    let b = Server::start(&opts());
    let c = Server::start(&opts());
    let dir = tempfile::tempdir().unwrap();
    let tok = token_file(dir.path(), &c);
    let files: Vec<_> = (0..10)
        .map(|k| dir.path().join(format!("f{k}.bin")))
        .collect();
    for (k, f) in files.iter().enumerate() {
        std::fs::write(f, data(3_000_000, 100 + k as u64)).unwrap();
    }
    let mut cmd = signtool_sign(
        &[
            host_of("gpg", &a_url),
            host_of("gpg", &b.url),
            host_of("gpg", &c.url),
        ],
        &tok,
        &dir.path().join("n"),
    );
    cmd.args(["-f", "gpg", "--jobs", "1"])
        .args(&files)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    // Kill B (SIGKILL) as soon as an upload reaches it.
    assert!(
        wait_until(Duration::from_secs(30), || {
            b.metric("signing_upload_bytes_total").unwrap_or(0.0) > 0.0
        }),
        "signtool never uploaded to B"
    );
    Command::new("kill")
        .arg("-KILL")
        .arg(b.pid().to_string())
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{log}");
    for f in &files {
        let (ok, v) = gpgv(Path::new(&format!("{}.asc", f.display())), f);
        assert!(ok, "{}: {v}\n{log}", f.display());
    }
    assert!(
        log.contains(&format!("{a_url} failed (cannot connect")),
        "A's failure not logged:\n{log}"
    );
    assert!(
        log.contains(&format!("{} failed (", b.url)),
        "B's failure not logged:\n{log}"
    );
    assert!(log.contains(&format!("failing over to {}", c.url)), "{log}");
    assert!(c.audit().lines().count() >= 1, "C signed the rest");
}

#[test]
fn a_cache_hit_needs_no_network() {
    let s = Server::start(&opts());
    let dir = tempfile::tempdir().unwrap();
    let tok = token_file(dir.path(), &s);
    let (f, asc, cache) = (
        dir.path().join("app.zip"),
        dir.path().join("app.zip.asc"),
        dir.path().join("cache"),
    );
    std::fs::write(&f, data(70_000, 9)).unwrap();
    let host = host_of("gpg", &s.url);
    let run = |hosts: &[String]| {
        output(
            signtool_sign(hosts, &tok, &dir.path().join("n"))
                .args(["-f", "gpg", "--max-errors", "1", "--cachedir"])
                .arg(&cache)
                .arg(&f),
        )
    };
    let (code, log) = run(std::slice::from_ref(&host));
    assert_eq!(code, 0, "{log}");
    assert!(gpgv(&asc, &f).0);
    std::fs::remove_file(&asc).unwrap();
    drop(s); // the only host is gone: any request would fail (--max-errors 1)
    let (code, log) = run(&[host]);
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("from the cache"), "{log}");
    let (ok, v) = gpgv(&asc, &f);
    assert!(ok, "{v}");
    // A damaged cache entry is not handed out: with the host gone the file fails.
    std::fs::remove_file(&asc).unwrap();
    let entry = cache
        .join("gpg")
        .join(sha256_hex(&std::fs::read(&f).unwrap()));
    let mut sig = std::fs::read(&entry).unwrap();
    sig[40] ^= 1;
    std::fs::write(&entry, &sig).unwrap();
    let (code, log) = run(&[host_of("gpg", "https://127.0.0.1:1")]);
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("does not match its recorded digest"), "{log}");
    assert!(!asc.exists());
    // A different file is not in the cache: with the host gone it fails, naming the host.
    std::fs::write(&f, data(70_000, 10)).unwrap();
    let (code, log) = run(&[host_of("gpg", "https://127.0.0.1:1")]);
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("https://127.0.0.1:1: cannot connect"), "{log}");
}

#[test]
fn token_command_mints_a_token_the_server_accepts_and_refuses_bad_credentials() {
    let s = Server::start(&opts());
    let dir = tempfile::tempdir().unwrap();
    let (pw, tok) = (dir.path().join("pw"), dir.path().join("token"));
    std::fs::write(&pw, format!("{MINT_PASSWORD}\n")).unwrap();
    let hostport = s.url.trim_start_matches("https://").to_string();
    let token_cmd = |pwfile: &Path| {
        let mut c = Command::new(bin("signtool"));
        c.args(["token", "-H", &hostport, "-c"])
            .arg(certs().join("ca.pem"));
        c.args(["-u", MINT_USER, "--password-file"])
            .arg(pwfile)
            .args(["-i", "127.0.0.1", "-d", "300", "-o"])
            .arg(&tok);
        c
    };
    let (code, log) = output(&mut token_cmd(&pw));
    assert_eq!(code, 0, "{log}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&tok).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let f = dir.path().join("x.bin");
    std::fs::write(&f, data(10_000, 5)).unwrap();
    let (code, log) = output(
        signtool_sign(&[host_of("gpg", &s.url)], &tok, &dir.path().join("n"))
            .args(["-f", "gpg"])
            .arg(&f),
    );
    assert_eq!(code, 0, "the minted token was refused: {log}");
    assert!(gpgv(&dir.path().join("x.bin.asc"), &f).0);

    std::fs::remove_file(&tok).unwrap();
    std::fs::write(&pw, "wrong-password\n").unwrap();
    let (code, log) = output(&mut token_cmd(&pw));
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("bad credentials") && log.contains("401"),
        "{log}"
    );
    assert!(
        !log.contains("wrong-password"),
        "the password must not be echoed: {log}"
    );
    assert!(!tok.exists());
}

#[test]
fn formats_chain_in_order_replacing_the_file_in_place_and_gpg_signs_the_result() {
    use signing_tests::mar::{make_mar, mar_verify, pubkey};
    // A real MAR format (its result replaces the file) and gpg (detached, by /health).
    let mut o = signing_tests::mar::opts("");
    o.formats = format!("{}{}", opts().formats, o.formats);
    o.stdin = format!("{pw}\n{pw}\n{pw}\n", pw = passphrase());
    let s = Server::start(&o);
    let dir = tempfile::tempdir().unwrap();
    let tok = token_file(dir.path(), &s);
    let files: [(&str, &[u8]); 1] = [("payload.bin", &data(80_000, 21))];
    let f = make_mar(dir.path(), "update.mar", &[], &files);
    let original = dir.path().join("original");
    std::fs::copy(&f, &original).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o750)).unwrap();
    // gpg given first still runs last.
    let (code, log) = output(
        signtool_sign(
            &[format!("gpg:mar:{}", s.url.trim_start_matches("https://"))],
            &tok,
            &dir.path().join("n"),
        )
        .args(["-f", "gpg", "-f", "mar"])
        .arg(&f),
    );
    assert_eq!(code, 0, "{log}");
    // The file was replaced by `mar`'s result (a signed MAR), mode kept...
    let (ok, v) = mar_verify(&f, &pubkey("sha1-2048"));
    assert!(ok, "the file is not mar's result: {v}");
    assert!(!mar_verify(&original, &pubkey("sha1-2048")).0);
    assert_eq!(
        std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
        0o750
    );
    // ...and gpg signed that result.
    let (ok, v) = gpgv(&out_asc_of(&f), &f);
    assert!(ok, "gpg did not sign the final content: {v}");
    assert!(!gpgv(&out_asc_of(&f), &original).0);
    assert!(temp_files(dir.path()).is_empty());
}

#[test]
fn overall_timeout_ends_the_run_and_says_so() {
    let silent = FakePeer::start(PeerFault::Silent);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t"), "t").unwrap();
    let f = dir.path().join("f.bin");
    std::fs::write(&f, b"x").unwrap();
    let (code, log) = output(
        signtool_sign(
            &[silent.host("gpg")],
            &dir.path().join("t"),
            &dir.path().join("n"),
        )
        .args([
            "-f",
            "gpg",
            "--timeout",
            "1",
            "--connect-timeout",
            "30",
            "--read-timeout",
            "30",
        ])
        .arg(&f),
    );
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("overall --timeout ran out"), "{log}");
}

#[test]
fn a_large_upload_keeps_memory_flat_and_a_pending_result_is_polled_not_reuploaded() {
    // long_poll = 0: the server answers "pending" at once while it signs the big file.
    // digest = sha512: the signer reads the stored upload again after it is received (with
    // SHA-256 it signs from the upload's hash state at once, and nothing stays pending).
    let mut o = ServerOpts {
        server_extra: "long_poll = 0\n".into(),
        ..ServerOpts::default()
    };
    o.formats = format!("{}digest = sha512\n", o.formats);
    o.security = o
        .security
        .replace("max_filesize = 64M", "max_filesize = 1G");
    let s = Server::start(&o);
    let dir = tempfile::tempdir().unwrap();
    let tok = token_file(dir.path(), &s);
    let f = dir.path().join("big.bin");
    {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(std::fs::File::create(&f).unwrap());
        for k in 0..48 {
            w.write_all(&data(4 << 20, 1000 + k)).unwrap();
        }
    }
    // GNU time reports the peak resident set of signtool itself.
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-f").arg("maxrss_kb=%M").arg(bin("signtool"));
    let sign = signtool_sign(&[host_of("gpg", &s.url)], &tok, &dir.path().join("n"));
    cmd.args(sign.get_args())
        .args(["-f", "gpg", "--read-timeout", "60", "-v"])
        .arg(&f);
    let (code, log) = output(&mut cmd);
    assert_eq!(code, 0, "{log}");
    assert!(gpgv(&out_asc_of(&f), &f).0);
    assert!(log.contains(&format!("pending on {}", s.url)), "{log}");
    let posts = s
        .stderr()
        .lines()
        .filter(|l| l.contains("method=POST") && l.contains("path=/sign/gpg"))
        .count();
    assert_eq!(posts, 1, "uploaded again while pending:\n{}", s.stderr());
    let kb: u64 = log
        .split("maxrss_kb=")
        .nth(1)
        .and_then(|v| v.trim().lines().next())
        .and_then(|v| v.parse().ok())
        .expect(&log);
    assert!(
        kb < 80 * 1024,
        "signtool peaked at {kb} KiB for a 192 MiB upload"
    );
}
