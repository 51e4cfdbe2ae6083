//! Mozilla's own Python client (`signtool` 4.x, from PyPI) against our server, unchanged.
//! The venv is made by scripts/setup.sh (SIGNING_TEST_VENV, default ~/.cache/signing-server/venv).

use std::process::Command;

use signing_tests::*;

#[test]
fn mozilla_signtool_4_signs_with_gpg() {
    let exe = mozilla_signtool();
    let (ok, version) =
        run(Command::new(exe.parent().unwrap().join("pip")).args(["show", "signtool"]));
    assert!(
        ok && version.contains("Version: 4."),
        "expected signtool 4.x: {version}"
    );

    let s = Server::start(&ServerOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let (file, asc) = (
        dir.path().join("build.tar.bz2"),
        dir.path().join("build.tar.bz2.asc"),
    );
    std::fs::write(&file, data(250_000, 42)).unwrap();
    let (ok, out) = mozilla_sign(&s, dir.path(), "gpg", &file, &asc);
    assert!(
        ok,
        "Mozilla's signtool failed:\n{out}\nserver log:\n{}",
        s.stderr()
    );
    let (ok, out) = gpgv(&asc, &file);
    assert!(ok, "gpgv: {out}");
    // It stored the nonce the server sent.
    assert!(!std::fs::read(dir.path().join("nonce")).unwrap().is_empty());
}
