//! Mozilla's own Python client (`signtool` 4.x, from PyPI) against our server, unchanged.
//! The venv is made by scripts/setup.sh (SIGNING_TEST_VENV, default ~/.cache/signing-server/venv).

use std::process::Command;

use signing_tests::*;

#[test]
fn mozilla_signtool_4_signs_with_gpg() {
    let exe = mozilla_signtool();
    let (ok, version) = run(Command::new(exe.parent().unwrap().join("pip")).args(["show", "signtool"]));
    assert!(ok && version.contains("Version: 4."), "expected signtool 4.x: {version}");

    let s = Server::start(&ServerOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let (token, nonce, file, asc) =
        (dir.path().join("token"), dir.path().join("nonce"), dir.path().join("build.tar.bz2"), dir.path().join("build.tar.bz2.asc"));
    std::fs::write(&token, s.mint("127.0.0.1", 300)).unwrap();
    std::fs::write(&file, data(250_000, 42)).unwrap();
    let host = format!("gpg:{}", s.url.trim_start_matches("https://"));
    let (ok, out) = run(Command::new(&exe)
        .args(["-H", &host, "-c"])
        .arg(certs().join("ca.pem"))
        .arg("-t")
        .arg(&token)
        .arg("-n")
        .arg(&nonce)
        .args(["-f", "gpg", "-o"])
        .arg(&asc)
        .arg(&file));
    assert!(ok, "Mozilla's signtool failed:\n{out}\nserver log:\n{}", s.stderr());
    let (ok, out) = gpgv(&asc, &file);
    assert!(ok, "gpgv: {out}");
    // It stored the nonce the server sent.
    assert!(!std::fs::read(&nonce).unwrap().is_empty());
}
