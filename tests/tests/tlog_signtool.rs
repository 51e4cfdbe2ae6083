//! signtool and the transparency log (issue 27): `--log-key` refuses a
//! result the host's log does not show (a wrong key, a host without a log),
//! accepts one it does, by upload and by digest; `signtool log verify` checks
//! a whole log and saves its checkpoint, `signtool log watch` prints what a
//! signing key made since.

use std::process::Command;

use signing_tests::signtool::{host_of, output, signtool_sign};
use signing_tests::tlog::*;
use signing_tests::*;

/// `signtool log SUB -c ca.pem ARGS…` (ARGS may end with a flag whose value the caller adds).
fn log_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(bin("signtool"));
    c.arg("log")
        .arg(args[0])
        .arg("-c")
        .arg(certs().join("ca.pem"))
        .args(&args[1..]);
    c
}

#[test]
fn signtool_refuses_what_the_log_does_not_show_and_checks_whole_logs() {
    let dir = tempfile::tempdir().unwrap();
    let key = log_key(dir.path(), false);
    let o = opts(&key, &dir.path().join("log"), false);
    let config = write_config(dir.path(), &o);
    let (status, text) = run_server_to_end(&["--check".as_ref(), config.as_os_str()], &o.stdin);
    assert!(status.success(), "{text}");
    let vkey = text
        .lines()
        .find_map(|l| l.strip_prefix("log verifier key: "))
        .unwrap()
        .to_string();
    let s = Server::start_in(dir, &o);
    let work = tempfile::tempdir().unwrap();
    let (token, nonce) = (work.path().join("token"), work.path().join("nonce"));
    std::fs::write(&token, s.mint("127.0.0.1", 300)).unwrap();
    let host = host_of("gpg", &s.url);
    let url = format!("{}/log", s.url);
    let state = work.path().join("checkpoint");

    // Verified, saved: an empty log.
    let (code, out) =
        output(log_cmd(&["verify", "--url", &url, "--log-key", &vkey, "--save"]).arg(&state));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 entries"), "{out}");

    // By digest and by upload, each result checked against the log.
    for (i, extra) in [(1u64, None), (2, Some("--whole-file"))] {
        let file = work.path().join(format!("f{i}.bin"));
        std::fs::write(&file, data(5000, i)).unwrap();
        let mut cmd = signtool_sign(std::slice::from_ref(&host), &token, &nonce);
        cmd.args(["-f", "gpg", "--log-key", &vkey, "-v"])
            .args(extra)
            .arg(&file);
        let (code, out) = output(&mut cmd);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("transparency log"), "{out}");
        let asc = work.path().join(format!("f{i}.bin.asc"));
        assert!(gpgv(&asc, &file).0);
    }
    // Another log key: the result is refused, nothing is written.
    let other = tempfile::tempdir().unwrap();
    let other_key = log_key(other.path(), false);
    let oo = opts(&other_key, &other.path().join("log"), false);
    let other_config = write_config(other.path(), &oo);
    let (_, text) = run_server_to_end(&["--check".as_ref(), other_config.as_os_str()], &oo.stdin);
    let other_vkey = text
        .lines()
        .find_map(|l| l.strip_prefix("log verifier key: "))
        .unwrap()
        .to_string();
    let file = work.path().join("f3.bin");
    std::fs::write(&file, data(5000, 3)).unwrap();
    let mut cmd = signtool_sign(std::slice::from_ref(&host), &token, &nonce);
    cmd.args(["-f", "gpg", "--max-errors", "2", "--log-key", &other_vkey])
        .arg(&file);
    let (code, out) = output(&mut cmd);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("not shown to be in the host's transparency log"),
        "{out}"
    );
    assert!(!work.path().join("f3.bin.asc").exists());

    // The whole log, consistent with the saved checkpoint; watch shows the
    // entries the gpg key made since (all: the refused ones were logged too).
    let (code, out) =
        output(log_cmd(&["verify", "--url", &url, "--log-key", &vkey, "--since"]).arg(&state));
    assert_eq!(code, 0, "{out}");
    let health = s.health();
    let size = health["log"]["size"].as_u64().unwrap();
    // Two results accepted, the refused one signed (and logged) once per try.
    assert!(size >= 3, "{health}");
    let entries = go_check_url(&s, &vkey, None).unwrap();
    let signing_key = entries.entries[0]["key"].as_str().unwrap().to_string();
    let (code, out) = output(
        log_cmd(&[
            "watch",
            "--url",
            &url,
            "--log-key",
            &vkey,
            "--signing-key",
            &signing_key,
            "--since",
        ])
        .arg(&state),
    );
    assert_eq!(code, 0, "{out}");
    let listed: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("\"output_sha256\""))
        .collect();
    assert_eq!(listed.len() as u64, size, "{out}");
    let (code, out) = output(
        log_cmd(&[
            "watch",
            "--url",
            &url,
            "--log-key",
            &vkey,
            "--signing-key",
            "00",
            "--since",
        ])
        .arg(&state),
    );
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("output_sha256"), "{out}");
    // A log that does not extend the saved checkpoint is refused: a checkpoint of another log.
    let (code, out) = output(&mut log_cmd(&[
        "verify",
        "--url",
        &url,
        "--log-key",
        &other_vkey,
    ]));
    assert_eq!(code, 1, "{out}");
}
