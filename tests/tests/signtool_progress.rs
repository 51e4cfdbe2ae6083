//! On a terminal, a long upload shows a progress bar; in a pipe (CI logs), only lines.

use std::process::Command;

use signing_tests::signtool::output;
use signing_tests::*;

/// The signtool command line (shell-quoted) for signing `file` with gpg on `s`.
fn command_line(s: &Server, dir: &std::path::Path, file: &std::path::Path) -> String {
    let token = dir.join("token");
    std::fs::write(&token, s.mint("127.0.0.1", 300)).unwrap();
    format!(
        "'{}' sign -H 'gpg:{}' -c '{}' -t '{}' -n '{}' -f gpg '{}'",
        bin("signtool").display(),
        s.url.trim_start_matches("https://"),
        certs().join("ca.pem").display(),
        token.display(),
        dir.join("nonce").display(),
        file.display()
    )
}

#[test]
fn a_long_upload_shows_a_progress_bar_on_a_terminal_only() {
    let s = Server::start(&ServerOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.tar");
    std::fs::write(&file, data(48 << 20, 70)).unwrap();
    // `script` runs it on a pseudo-terminal and records what the terminal got.
    let typescript = dir.path().join("typescript");
    let (code, log) = output(
        Command::new("script")
            .arg("-qec")
            .arg(command_line(&s, dir.path(), &file))
            .arg(&typescript),
    );
    assert_eq!(code, 0, "{log}");
    let screen = String::from_utf8_lossy(&std::fs::read(&typescript).unwrap()).to_string();
    assert!(
        screen.contains("uploading big.tar ["),
        "no progress bar on the terminal:\n{screen}"
    );
    assert!(screen.contains("MiB"), "{screen}");
    assert!(gpgv(&dir.path().join("big.tar.asc"), &file).0);

    // Through a pipe: plain lines, no bar.
    std::fs::remove_file(dir.path().join("big.tar.asc")).unwrap();
    let (code, log) = output(
        Command::new("sh")
            .arg("-c")
            .arg(command_line(&s, dir.path(), &file)),
    );
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains('['), "a bar in a pipe:\n{log}");
    assert!(log.contains(": OK"), "{log}");
}
