//! Keys in a PKCS#11 token (SoftHSM2): every format signs with a key that never leaves
//! the token, and each output passes the verifier users trust. The TEST keys of `certs/`
//! are imported (so the certificates of `certs/` match); EC keys are also generated on
//! the token. Start-up failures: a wrong PIN exits 1, a key that is not the certificate's
//! exits 2, a PIN in the config exits 2 with `file:line:`; the PIN is never in the log,
//! the command line or the environment.

use std::io::Write;
use std::process::{Command, Stdio};

use signing_tests::apk::{apksigner_verify, fixture_apk};
use signing_tests::authenticode::{build_pe, osslsigncode_verify};
use signing_tests::mar::{make_mar, mar_verify, pubkey};
use signing_tests::pkcs11::{cert_file, uri, SoftHsm, PIN};
use signing_tests::*;

/// A server whose formats all sign with token keys; stdin is the PIN, once.
fn server(hsm: &SoftHsm, formats: String) -> Server {
    Server::start(&ServerOpts {
        formats,
        stdin: format!("{PIN}\n"),
        env: hsm.env(),
        ..ServerOpts::default()
    })
}

/// Uploads `body` to `fmt` and fetches the result: (status, body).
fn sign(s: &Server, fmt: &str, name: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let token = s.mint("127.0.0.1", 300);
    let (status, text) = Upload::new(&token, name, body).send(&s.client(), &s.url, fmt);
    assert_eq!(status, 202, "{text}");
    let (status, _, out) = fetch(&s.client(), &s.url, fmt, &sha256_hex(body));
    (status, out)
}

/// Runs the server on `formats` to its end (a start-up failure): (exit code, output).
fn start_fails(hsm: &SoftHsm, formats: &str, stdin: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &ServerOpts {
            formats: formats.to_string(),
            ..ServerOpts::default()
        },
    );
    let mut child = Command::new(bin("signing-server"))
        .arg(&cfg)
        .envs(hsm.env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).ok();
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("listening on"), "it must not serve: {text}");
    assert!(!text.contains(PIN), "the PIN is in the output: {text}");
    (out.status.code(), text)
}

/// A token `release` holding the TEST Authenticode RSA key as `authenticode-rsa`.
fn token_with_the_rsa_authenticode_key() -> SoftHsm {
    let hsm = SoftHsm::new();
    hsm.init_token("release");
    hsm.import(
        "release",
        &cert_file("authenticode/rsa.key"),
        "authenticode-rsa",
        "01",
    );
    hsm
}

fn authenticode_format(name: &str, object: &str, chain: &str) -> String {
    format!(
        "[format:{name}]\ntype = authenticode\nkey = {}\ncert = {}\n",
        uri("release", object),
        cert_file(&format!("authenticode/{chain}-chain.pem")).display()
    )
}

/// One token, two imported Authenticode keys (RSA 3072, EC P-256): one PIN line opens
/// both; osslsigncode accepts both signatures and refuses a flipped byte; the key is
/// sensitive (the token will not export it); the PIN is nowhere the OS shows.
#[test]
fn authenticode_rsa_and_ec_sign_in_the_token() {
    let hsm = token_with_the_rsa_authenticode_key();
    hsm.import(
        "release",
        &cert_file("authenticode/ec.key"),
        "authenticode-ec",
        "02",
    );
    let objects = hsm.objects("release");
    assert!(objects.contains("sensitive"), "{objects}");
    assert!(
        !objects.contains(" extractable"),
        "the private keys must not be extractable: {objects}"
    );
    let s = server(
        &hsm,
        authenticode_format("sha2signcode", "authenticode-rsa", "rsa")
            + &authenticode_format("sha2signcode-ec", "authenticode-ec", "ec"),
    );
    let dir = tempfile::tempdir().unwrap();
    let pe = build_pe(dir.path(), "x86_64", false);
    let body = std::fs::read(&pe).unwrap();
    for fmt in ["sha2signcode", "sha2signcode-ec"] {
        let (status, signed) = sign(&s, fmt, "test.exe", &body);
        assert_eq!(
            status,
            200,
            "{fmt}: {}\n{}",
            String::from_utf8_lossy(&signed),
            s.stderr()
        );
        let out = dir.path().join(format!("{fmt}.exe"));
        std::fs::write(&out, &signed).unwrap();
        let (text, ok) = osslsigncode_verify(&out);
        assert!(ok, "{fmt}: {text}");
        let mut tampered = signed.clone();
        tampered[0x600] ^= 0x01;
        std::fs::write(&out, &tampered).unwrap();
        let (text, ok) = osslsigncode_verify(&out);
        assert!(!ok, "{fmt}: a modified file verified: {text}");
    }
    // /health shows where each key is and that it works.
    let h = s.health();
    assert_eq!(h["keys"]["sha2signcode"]["source"], "pkcs11", "{h}");
    assert_eq!(h["keys"]["sha2signcode-ec"]["state"], "ok", "{h}");
    // The PIN: not in the log, the command line or the environment of the server.
    assert!(!s.stderr().contains(PIN), "PIN in the log");
    for what in ["cmdline", "environ"] {
        let bytes = std::fs::read(format!("/proc/{}/{what}", s.pid())).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(PIN),
            "PIN in /proc/PID/{what}"
        );
    }
}

/// MAR with token keys: SHA-1/2048 and SHA-384/4096, checked by Mozilla's `mar -v -k`.
#[test]
fn mar_sha1_and_sha384_sign_in_the_token() {
    let hsm = SoftHsm::new();
    hsm.init_token("release");
    hsm.import("release", &cert_file("mar/sha1-2048.key"), "mar-sha1", "11");
    hsm.import(
        "release",
        &cert_file("mar/sha384-4096.key"),
        "mar-sha384",
        "12",
    );
    let s = server(
        &hsm,
        format!(
            "[format:mar]\ntype = mar\nkey = {}\ndigest = sha1\n\
             [format:mar_sha384]\ntype = mar\nkey = {}\ndigest = sha384\n",
            uri("release", "mar-sha1"),
            uri("release", "mar-sha384"),
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let unsigned = make_mar(
        dir.path(),
        "u.mar",
        &[],
        &[("a.txt", b"hello"), ("b/c.bin", &data(70_000, 3))],
    );
    let body = std::fs::read(&unsigned).unwrap();
    for (fmt, key) in [("mar", "sha1-2048"), ("mar_sha384", "sha384-4096")] {
        let (status, signed) = sign(&s, fmt, "u.mar", &body);
        assert_eq!(status, 200, "{fmt}: {}", String::from_utf8_lossy(&signed));
        let path = dir.path().join(format!("{fmt}.mar"));
        std::fs::write(&path, &signed).unwrap();
        let (ok, out) = mar_verify(&path, &pubkey(key));
        assert!(ok, "{fmt}: mar -v refused: {out}");
        let mut t = signed.clone();
        let at = t.len() / 2;
        t[at] ^= 1;
        std::fs::write(&path, &t).unwrap();
        let (ok, out) = mar_verify(&path, &pubkey(key));
        assert!(!ok, "{fmt}: a flipped byte verified: {out}");
    }
}

/// APK with token keys (imported RSA, imported EC P-256): v1 + v2 + v3, apksigner verifies.
#[test]
fn apk_rsa_and_ec_sign_in_the_token() {
    let hsm = SoftHsm::new();
    hsm.init_token("release");
    hsm.import("release", &cert_file("apk/rsa/key.pem"), "apk-rsa", "21");
    hsm.import("release", &cert_file("apk/ec/key.pem"), "apk-ec", "22");
    let mut formats = String::new();
    for (name, object, kind) in [("apk", "apk-rsa", "rsa"), ("apk_ec", "apk-ec", "ec")] {
        formats.push_str(&format!(
            "[format:{name}]\ntype = apk\nkey = {}\ncert = {}\n",
            uri("release", object),
            cert_file(&format!("apk/{kind}/cert.pem")).display()
        ));
    }
    let s = server(&hsm, formats);
    let dir = tempfile::tempdir().unwrap();
    let apk = fixture_apk(dir.path(), 5);
    let body = std::fs::read(&apk).unwrap();
    for fmt in ["apk", "apk_ec"] {
        let (status, signed) = sign(&s, fmt, "app.apk", &body);
        assert_eq!(status, 200, "{fmt}: {}", String::from_utf8_lossy(&signed));
        let path = dir.path().join(format!("{fmt}.apk"));
        std::fs::write(&path, &signed).unwrap();
        let (ok, out) = apksigner_verify(&path);
        assert!(ok, "{fmt}: {out}");
        for scheme in ["v1", "v2", "v3"] {
            assert!(
                out.contains(&format!("Verified using {scheme} scheme (")) && out.contains("true"),
                "{fmt} {scheme}: {out}"
            );
        }
    }
}

/// A key generated on the token (it never existed outside): its certificate is made
/// from the public key the token shows, and Authenticode signs with it.
#[test]
fn a_key_generated_on_the_token_signs() {
    let hsm = SoftHsm::new();
    hsm.init_token("gen");
    hsm.generate("gen", "EC:prime256v1", "born-here", "31");
    let dir = tempfile::tempdir().unwrap();
    let public = dir.path().join("pub.pem");
    std::fs::write(&public, hsm.public_pem("gen", "31")).unwrap();
    // A leaf for that public key, issued by the test code-signing CA.
    let ca = cert_file("authenticode/ca.pem");
    let ca_key = cert_file("authenticode/ca.key");
    let ext = dir.path().join("ext.cnf");
    std::fs::write(
        &ext,
        "extendedKeyUsage = codeSigning\nkeyUsage = digitalSignature\n",
    )
    .unwrap();
    let leaf = dir.path().join("leaf.pem");
    // OpenSSL 3's `x509 -new`: a certificate for a public key whose private half is
    // out of reach (in the token), signed by the CA.
    let (ok, text) = run(Command::new("openssl")
        .args([
            "x509",
            "-new",
            "-subj",
            "/CN=signing-server token test",
            "-force_pubkey",
        ])
        .arg(&public)
        .arg("-CA")
        .arg(&ca)
        .arg("-CAkey")
        .arg(&ca_key)
        .arg("-passin")
        .arg(format!("pass:{}", passphrase()))
        .args(["-days", "30", "-extfile"])
        .arg(&ext)
        .arg("-out")
        .arg(&leaf));
    assert!(ok, "openssl x509 -force_pubkey: {text}");
    let chain = dir.path().join("chain.pem");
    std::fs::write(
        &chain,
        std::fs::read_to_string(&leaf).unwrap() + &std::fs::read_to_string(&ca).unwrap(),
    )
    .unwrap();
    let s = Server::start(&ServerOpts {
        formats: format!(
            "[pkcs11]\nmodule = {}\n[format:gen]\ntype = authenticode\nkey = pkcs11:token=gen;id=%31\ncert = {}\n",
            signing_tests::pkcs11::MODULE,
            chain.display()
        ),
        stdin: format!("{PIN}\n"),
        env: hsm.env(),
        ..ServerOpts::default()
    });
    let pe = build_pe(dir.path(), "i686", true);
    let body = std::fs::read(&pe).unwrap();
    let (status, signed) = sign(&s, "gen", "lib.dll", &body);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&signed));
    let out = dir.path().join("signed.dll");
    std::fs::write(&out, &signed).unwrap();
    let (text, ok) = osslsigncode_verify(&out);
    assert!(ok, "{text}");
}

/// Start-up refusals: wrong PIN (1), no such key (1), key of another certificate (2),
/// a PIN in the config (2, `file:line:`), no module (2).
#[test]
fn startup_failures_name_the_format() {
    let hsm = token_with_the_rsa_authenticode_key();
    let good = authenticode_format("sha2signcode", "authenticode-rsa", "rsa");

    let (code, out) = start_fails(&hsm, &good, "not-the-pin\n");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("format sha2signcode") && out.contains("wrong PIN"),
        "{out}"
    );
    assert!(
        !out.contains("not-the-pin"),
        "the wrong PIN is echoed: {out}"
    );

    let (code, out) = start_fails(&hsm, &good, "");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("format sha2signcode") && out.contains("no PIN"),
        "{out}"
    );

    let missing = authenticode_format("sha2signcode", "no-such-key", "rsa");
    let (code, out) = start_fails(&hsm, &missing, &format!("{PIN}\n"));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("format sha2signcode") && out.contains("no such private key"),
        "{out}"
    );

    let mismatch = authenticode_format("sha2signcode", "authenticode-rsa", "ec");
    let (code, out) = start_fails(&hsm, &mismatch, &format!("{PIN}\n"));
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("sha2signcode") && out.contains("matches the key"),
        "{out}"
    );

    let with_pin = good.replace(
        "object=authenticode-rsa",
        "object=authenticode-rsa;pin-value=1234",
    );
    let (code, out) = start_fails(&hsm, &with_pin, "");
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("signing.ini:") && out.contains("PIN does not belong"),
        "{out}"
    );
    assert!(!out.contains("1234"), "{out}");

    let no_module = format!(
        "[format:f]\ntype = authenticode\nkey = pkcs11:token=release;object=authenticode-rsa\ncert = {}\n",
        cert_file("authenticode/rsa-chain.pem").display()
    );
    let (code, out) = start_fails(&hsm, &no_module, "");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("[pkcs11] module"), "{out}");
}

/// A token shared by two formats is asked for once, even with other keys between.
#[test]
fn one_pin_per_token_in_format_order() {
    let hsm = SoftHsm::new();
    hsm.init_token("release");
    hsm.init_token("other");
    hsm.import("release", &cert_file("authenticode/rsa.key"), "a", "01");
    hsm.import("other", &cert_file("authenticode/ec.key"), "b", "02");
    hsm.import("release", &cert_file("authenticode/ec384.key"), "c", "03");
    let formats = format!(
        "{}{}{}",
        authenticode_format("one", "a", "rsa"),
        authenticode_format("two", "b", "ec").replace("token=release", "token=other"),
        authenticode_format("three", "c", "ec384"),
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &ServerOpts {
            formats,
            ..ServerOpts::default()
        },
    );
    let out = Command::new(bin("signing-server"))
        .arg("--check")
        .arg(&cfg)
        .envs(hsm.env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            // One PIN per token: `release` (for one and three), then `other`.
            c.stdin
                .take()
                .unwrap()
                .write_all(format!("{PIN}\n{PIN}\n").as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("3 key(s) OK"), "{text}");
}

/// The token fails mid-run (its directory is moved away: SoftHSM2 loses the key's files)
/// and comes back: meanwhile jobs fail with 503 + Retry-After (the client goes to another
/// host), /health shows the key unavailable and /metrics counts the errors; once the
/// token is back, the server signs again without a restart.
#[test]
fn a_token_that_fails_and_comes_back() {
    let hsm = token_with_the_rsa_authenticode_key();
    let s = server(
        &hsm,
        authenticode_format("sha2signcode", "authenticode-rsa", "rsa"),
    );
    let dir = tempfile::tempdir().unwrap();
    let pe = build_pe(dir.path(), "x86_64", false);
    let mut body = std::fs::read(&pe).unwrap();
    let (status, _) = sign(&s, "sha2signcode", "a.exe", &body);
    assert_eq!(status, 200, "{}", s.stderr());

    let away = hsm.dir.path().join("tokens.away");
    std::fs::rename(hsm.tokens(), &away).unwrap();
    // A different input each time (the server caches results by input hash).
    body.push(0);
    let token = s.mint("127.0.0.1", 300);
    let (status, text) =
        Upload::new(&token, "b.exe", &body).send(&s.client(), &s.url, "sha2signcode");
    assert_eq!(status, 202, "{text}");
    let (status, headers, text) = fetch(&s.client(), &s.url, "sha2signcode", &sha256_hex(&body));
    assert_eq!(
        status,
        503,
        "{}\n{}",
        String::from_utf8_lossy(&text),
        s.stderr()
    );
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    let h = s.health();
    assert_eq!(h["keys"]["sha2signcode"]["state"], "unavailable", "{h}");
    let errors = s
        .metric("signing_token_errors_total{format=\"sha2signcode\"}")
        .unwrap();
    assert!(errors >= 1.0, "{errors}");

    std::fs::rename(&away, hsm.tokens()).unwrap();
    body.push(0);
    let (status, signed) = sign(&s, "sha2signcode", "c.exe", &body);
    assert_eq!(
        status,
        200,
        "{}\n{}",
        String::from_utf8_lossy(&signed),
        s.stderr()
    );
    let out = dir.path().join("c.exe");
    std::fs::write(&out, &signed).unwrap();
    let (text, ok) = osslsigncode_verify(&out);
    assert!(ok, "{text}");
    let h = s.health();
    assert_eq!(h["keys"]["sha2signcode"]["state"], "ok", "{h}");
}

/// Apple with the Developer ID test key in the token: apple-codesign signs through our
/// key (an external signer); rcodesign and `openssl cms -verify` accept the Mach-O.
#[test]
fn apple_signs_in_the_token() {
    use signing_tests::apple::{assert_cms_ok, build_macho, macho_blobs, rcodesign_verify};
    let hsm = SoftHsm::new();
    hsm.init_token("release");
    hsm.import(
        "release",
        &cert_file("apple/developer-id.key"),
        "developer-id",
        "41",
    );
    let s = server(
        &hsm,
        format!(
            "[format:macapp]\ntype = apple\nkey = {}\ncert = {}\n",
            uri("release", "developer-id"),
            cert_file("apple/chain.pem").display()
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let exe = build_macho(dir.path(), "x86_64", "exe");
    let body = std::fs::read(&exe).unwrap();
    let (status, signed) = sign(&s, "macapp", "firefox", &body);
    assert_eq!(
        status,
        200,
        "{}\n{}",
        String::from_utf8_lossy(&signed),
        s.stderr()
    );
    for b in &macho_blobs(&signed) {
        assert_cms_ok(b);
    }
    let out = dir.path().join("firefox.signed");
    std::fs::write(&out, &signed).unwrap();
    let (ok, text) = rcodesign_verify(&out);
    assert!(ok, "rcodesign verify: {text}");
}

/// gpg with the RSA test OpenPGP key in the token and `public_key` naming its
/// certificate: gpgv accepts the detached signature with the published key.
#[test]
fn gpg_signs_in_the_token() {
    let hsm = SoftHsm::new();
    hsm.init_token("release");
    let pem = hsm.dir.path().join("gpg-rsa.p8");
    signing_tests::pkcs11::gpg_rsa_key_as_pem(&pem);
    hsm.import_plain("release", &pem, "gpg-release", "51");
    std::fs::remove_file(&pem).unwrap();
    let s = server(
        &hsm,
        format!(
            "[format:gpg]\ntype = gpg\nkey = {}\npublic_key = {}\n",
            uri("release", "gpg-release"),
            cert_file("gpg-rsa/public.asc").display()
        ),
    );
    let body = data(100_000, 7);
    let token = s.mint("127.0.0.1", 60);
    let (status, text) = Upload::new(&token, "f.bin", &body).send(&s.client(), &s.url, "gpg");
    assert_eq!(status, 202, "{text}");
    let (status, _, sig) = fetch(&s.client(), &s.url, "gpg", &sha256_hex(&body));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&sig));
    let dir = tempfile::tempdir().unwrap();
    let (f, asc) = (dir.path().join("f"), dir.path().join("f.asc"));
    std::fs::write(&f, &body).unwrap();
    std::fs::write(&asc, &sig).unwrap();
    let (ok, out) = run(Command::new("gpgv")
        .arg("--keyring")
        .arg(cert_file("gpg-rsa/public.gpg"))
        .arg(&asc)
        .arg(&f));
    assert!(ok, "gpgv: {out}");
    let fpr = std::fs::read_to_string(cert_file("gpg-rsa/FINGERPRINT")).unwrap();
    assert!(
        out.contains(&fpr.trim()[24..]),
        "not signed by the published key: {out}"
    );
    std::fs::write(&f, data(100_000, 8)).unwrap();
    let (ok, out) = run(Command::new("gpgv")
        .arg("--keyring")
        .arg(cert_file("gpg-rsa/public.gpg"))
        .arg(&asc)
        .arg(&f));
    assert!(!ok, "gpgv accepted another file: {out}");
}

/// A token key that is not the key of `public_key` (the Ed25519 test certificate):
/// exit 2 naming the format.
#[test]
fn gpg_token_key_of_another_certificate_exits_2() {
    let hsm = SoftHsm::new();
    hsm.init_token("release");
    let pem = hsm.dir.path().join("gpg-rsa.p8");
    signing_tests::pkcs11::gpg_rsa_key_as_pem(&pem);
    hsm.import_plain("release", &pem, "gpg-release", "51");
    let formats = format!(
        "[format:gpg]\ntype = gpg\nkey = {}\npublic_key = {}\n",
        uri("release", "gpg-release"),
        cert_file("gpg/public.asc").display()
    );
    let (code, out) = start_fails(&hsm, &formats, &format!("{PIN}\n"));
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("format gpg") && out.contains("neither the primary key nor a signing subkey"),
        "{out}"
    );
}

/// SIGHUP with the same key settings keeps the token key and its logged-in sessions (no
/// PIN is asked again, nothing to restart); a changed URI is left for a restart, the
/// format still signing with the key it has.
#[test]
fn sighup_keeps_the_token_key() {
    let hsm = token_with_the_rsa_authenticode_key();
    let s = server(
        &hsm,
        authenticode_format("sha2signcode", "authenticode-rsa", "rsa"),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut body = std::fs::read(build_pe(dir.path(), "x86_64", false)).unwrap();
    s.signal("HUP");
    assert!(
        s.wait_log("configuration reloaded", std::time::Duration::from_secs(20)),
        "{}",
        s.stderr()
    );
    assert!(!s.stderr().contains("restart"), "{}", s.stderr());
    let (status, _) = sign(&s, "sha2signcode", "a.exe", &body);
    assert_eq!(status, 200, "{}", s.stderr());

    // Another object in the URI: a restart is needed, the running key keeps signing.
    let cfg = std::fs::read_to_string(s.config_path()).unwrap();
    std::fs::write(
        s.config_path(),
        cfg.replace("object=authenticode-rsa", "object=authenticode-2027"),
    )
    .unwrap();
    s.signal("HUP");
    assert!(
        s.wait_log(
            "keeps signing with the key it has",
            std::time::Duration::from_secs(20)
        ),
        "{}",
        s.stderr()
    );
    body.push(1);
    let (status, signed) = sign(&s, "sha2signcode", "b.exe", &body);
    assert_eq!(status, 200, "{}", s.stderr());
    let out = dir.path().join("b.exe");
    std::fs::write(&out, &signed).unwrap();
    let (text, ok) = osslsigncode_verify(&out);
    assert!(ok, "{text}");
}
