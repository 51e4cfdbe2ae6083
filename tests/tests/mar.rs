//! MAR signing end to end: fixtures made with Mozilla's `mar -c`, signed by
//! the real server (`mar`: SHA-1/2048, `mar_sha384`: SHA-384/4096), checked
//! with `mar -v SIGNED -k PUBKEY` (always with -k: without it the tool only
//! checks the structure).

use std::path::Path;
use std::process::Command;

use signing_tests::mar::*;
use signing_tests::*;

/// Uploads `file` to `format` and fetches the result: (status, body).
fn sign(s: &Server, token: &str, format: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let (status, text) = Upload::new(token, "update.mar", body).send(&s.client(), &s.url, format);
    assert_eq!(status, 202, "{text}");
    let (status, _, out) = fetch(&s.client(), &s.url, format, &sha256_hex(body));
    (status, out)
}

/// The entries of a MAR as `mar -x` extracts them (decompressed), sorted.
fn extract(file: &Path) -> Vec<(String, Vec<u8>)> {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = run(Command::new(mar_tool())
        .arg("-C")
        .arg(dir.path())
        .arg("-x")
        .arg(file));
    assert!(ok, "mar -x {}: {out}", file.display());
    let mut found = Vec::new();
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(dir.path())
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                found.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    found.sort();
    found
}

#[test]
fn signed_mars_verify_with_mozillas_mar_tool_and_a_flipped_byte_fails() {
    let s = Server::start(&opts(""));
    let token = s.mint("127.0.0.1", 300);
    let dir = tempfile::tempdir().unwrap();
    let big = data(300_000, 7);
    let files: [(&str, &[u8]); 3] = [
        ("update.manifest", b"type \"complete\"\nadd \"firefox\"\n"),
        ("firefox", &big),
        (
            "defaults/pref/channel-prefs.js",
            b"pref(\"app.update.channel\", \"release\");\n",
        ),
    ];
    let fixtures = [
        ("plain.mar", vec![]),
        ("bz2.mar", vec!["-j"]),
        ("xz.mar", vec!["-J"]),
        (
            "product.mar",
            vec!["-V", "140.0", "-H", "firefox-mozilla-release"],
        ),
        (
            "product-xz.mar",
            vec!["-J", "-V", "140.0", "-H", "firefox-mozilla-release"],
        ),
    ];
    for (name, flags) in &fixtures {
        let unsigned = make_mar(dir.path(), name, flags, &files);
        let body = std::fs::read(&unsigned).unwrap();
        let (ok, out) = mar_verify(&unsigned, &pubkey("sha1-2048"));
        assert!(!ok, "an unsigned MAR must not verify: {out}");
        for (format, key, other) in [
            ("mar", "sha1-2048", "sha384-4096"),
            ("mar_sha384", "sha384-4096", "sha1-2048"),
        ] {
            let (status, signed) = sign(&s, &token, format, &body);
            assert_eq!(
                status,
                200,
                "{name} via {format}: {}",
                String::from_utf8_lossy(&signed)
            );
            let path = dir.path().join(format!("{name}.{format}.signed"));
            std::fs::write(&path, &signed).unwrap();
            let (ok, out) = mar_verify(&path, &pubkey(key));
            assert!(
                ok,
                "{name} via {format}: mar -v refused our signature: {out}"
            );
            let (ok, out) = mar_verify(&path, &pubkey(other));
            assert!(
                !ok,
                "{name} via {format} verified with the wrong key: {out}"
            );
            let (_, listing) = run(Command::new(mar_tool()).arg("-T").arg(&path));
            let sig_type = if format == "mar" { "sha1" } else { "sha384" };
            assert!(
                listing.contains(&format!("Signature type: {sig_type}")),
                "{listing}"
            );
            if name.starts_with("product") {
                assert!(
                    listing.contains("firefox-mozilla-release") && listing.contains("140.0"),
                    "product info lost: {listing}"
                );
            }
            // The same entries, byte for byte, as in the unsigned MAR.
            assert_eq!(
                extract(&path),
                extract(&unsigned),
                "{name} via {format}: contents changed"
            );

            for at in [0, 9, 30, signed.len() / 2, signed.len() - 3] {
                let mut t = signed.clone();
                t[at] ^= 0x01;
                let tp = dir.path().join("tampered.mar");
                std::fs::write(&tp, &t).unwrap();
                let (ok, out) = mar_verify(&tp, &pubkey(key));
                assert!(
                    !ok,
                    "{name} via {format}: a byte flipped at {at} still verifies: {out}"
                );
                if at == signed.len() / 2 {
                    // Inside an entry: the structure holds, the signature does not.
                    assert!(out.contains("Verification failed"), "{out}");
                }
            }
        }
    }
}

#[test]
fn an_already_signed_mar_is_re_signed_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let unsigned = make_mar(
        dir.path(),
        "u.mar",
        &["-V", "1.0", "-H", "nightly"],
        &[("a.txt", b"hello world\n")],
    );
    let body = std::fs::read(&unsigned).unwrap();
    let signed_once = {
        let s = Server::start(&opts(""));
        let token = s.mint("127.0.0.1", 300);
        let (status, signed) = sign(&s, &token, "mar", &body);
        assert_eq!(status, 200);
        // Default (resign = replace): the SHA-1 signature is replaced by a SHA-384 one.
        let (status, again) = sign(&s, &token, "mar_sha384", &signed);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&again));
        let p = dir.path().join("again.mar");
        std::fs::write(&p, &again).unwrap();
        let (ok, out) = mar_verify(&p, &pubkey("sha384-4096"));
        assert!(ok, "{out}");
        let (_, listing) = run(Command::new(mar_tool()).arg("-T").arg(&p));
        assert!(
            listing.contains("Signature block found with 1 signature"),
            "{listing}"
        );
        signed
    };
    let s = Server::start(&opts("resign = refuse"));
    let token = s.mint("127.0.0.1", 300);
    let (status, reason) = sign(&s, &token, "mar_sha384", &signed_once);
    assert_eq!(status, 422);
    let reason = String::from_utf8_lossy(&reason);
    assert!(reason.contains("already signed"), "{reason}");
    // Unsigned input is still fine there.
    let (status, _) = sign(&s, &token, "mar_sha384", &body);
    assert_eq!(status, 200);
}

#[test]
fn malformed_mars_are_422_with_a_reason() {
    let s = Server::start(&opts(""));
    let token = s.mint("127.0.0.1", 300);
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(make_mar(
        dir.path(),
        "g.mar",
        &["-V", "1.0", "-H", "c"],
        &[("a", b"aaaaaaaaaa"), ("b", b"bbbbbbbbbb")],
    ))
    .unwrap();
    let index = u32::from_be_bytes(good[4..8].try_into().unwrap()) as usize;
    let set = |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_be_bytes());

    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    let mut m = good.clone();
    m[..4].copy_from_slice(b"ZIP!");
    cases.push(("bad magic", m, "bad magic"));
    let mut m = good.clone();
    set(&mut m, 4, 0x7fff_0000);
    cases.push(("index offset past the end", m, "past the end"));
    let mut m = good.clone();
    set(&mut m, 16, 1_000_000);
    cases.push(("absurd signature count", m, "signatures (at most"));
    let mut m = good.clone();
    set(&mut m, 20, 0x4000_0000);
    cases.push(("absurd section count", m, "additional sections"));
    // Entry b (the second) made to start inside entry a.
    let mut m = good.clone();
    let a_offset = u32::from_be_bytes(m[index + 4..index + 8].try_into().unwrap());
    set(&mut m, index + 4 + 14, a_offset + 3);
    cases.push(("overlapping entries", m, "overlap"));
    let mut m = good.clone();
    set(&mut m, index + 4 + 4, 0x00ff_ffff);
    cases.push(("entry past the end", m, "runs past"));
    cases.push(("truncated", good[..good.len() - 5].to_vec(), "index"));

    for (what, body, expect) in cases {
        let (status, text) = sign(&s, &token, "mar_sha384", &body);
        let text = String::from_utf8_lossy(&text);
        assert_eq!(status, 422, "{what}: {text}");
        assert!(
            text.contains(expect),
            "{what}: expected {expect:?} in {text:?}"
        );
    }
    // The good one still signs: the server kept going.
    let (status, _) = sign(&s, &token, "mar_sha384", &good);
    assert_eq!(status, 200);
}

#[test]
fn key_size_and_digest_mismatch_is_refused_at_startup() {
    let m = certs().join("mar");
    for (key, digest, expect) in [
        ("sha384-4096.key", "sha1", "needs a 2048-bit"),
        ("sha1-2048.key", "sha384", "needs a 4096-bit"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let o = ServerOpts {
            formats: format!(
                "[format:mar_bad]\ntype = mar\nkey = {}\ndigest = {digest}\n",
                m.join(key).display()
            ),
            stdin: format!("{}\n", passphrase()),
            ..ServerOpts::default()
        };
        let cfg = write_config(dir.path(), &o);
        let (status, out) = run_server_to_end(&[cfg.as_os_str()], &o.stdin);
        // The `digest` setting does not suit the key: a config error (exit 2), not a key failure.
        assert_eq!(status.code(), Some(2), "{out}");
        assert!(
            out.contains("format mar_bad") && out.contains(expect),
            "{out}"
        );
        assert!(!out.contains("listening on"), "{out}");
    }
}

#[test]
fn mozilla_signtool_signs_a_mar_with_mar_sha384() {
    let s = Server::start(&opts(""));
    let dir = tempfile::tempdir().unwrap();
    let unsigned = make_mar(
        dir.path(),
        "update.mar",
        &["-J", "-V", "140.0", "-H", "release"],
        &[("firefox", &data(100_000, 3))],
    );
    let out = dir.path().join("signed.mar");
    let (ok, text) = mozilla_sign(&s, dir.path(), "mar_sha384", &unsigned, &out);
    assert!(
        ok,
        "Mozilla's signtool failed:\n{text}\nserver log:\n{}",
        s.stderr()
    );
    let (ok, text) = mar_verify(&out, &pubkey("sha384-4096"));
    assert!(ok, "mar -v: {text}");
    let (ok, _) = mar_verify(&unsigned, &pubkey("sha384-4096"));
    assert!(!ok, "the input must be left unsigned (-o)");
}

#[test]
fn a_large_mar_is_signed_in_a_stream() {
    let s = Server::start(&opts(""));
    let token = s.mint("127.0.0.1", 300);
    let dir = tempfile::tempdir().unwrap();
    let big = data(60 << 20, 11);
    let unsigned = make_mar(
        dir.path(),
        "big.mar",
        &["-V", "140.0", "-H", "release"],
        &[("big.bin", &big), ("small", b"x")],
    );
    drop(big);
    let body = std::fs::read(&unsigned).unwrap();
    let (status, signed) = sign(&s, &token, "mar_sha384", &body);
    assert_eq!(status, 200);
    let path = dir.path().join("big.signed.mar");
    std::fs::write(&path, &signed).unwrap();
    let (ok, out) = mar_verify(&path, &pubkey("sha384-4096"));
    assert!(ok, "{out}");
    // Neither the 60 MiB input nor the output was ever held in memory.
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).unwrap();
    let hwm_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    eprintln!("server VmHWM: {hwm_kib} KiB");
    assert!(
        hwm_kib < 48 << 10,
        "server peak RSS {hwm_kib} KiB while signing a 60 MiB MAR"
    );
}
