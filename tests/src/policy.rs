//! Helpers for the "who may sign what" tests (issue 28): TOTP secrets and
//! codes, the codes made by Debian's `oathtool` (never by the server's own
//! code), minting and approving over HTTP.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{client_from, now, run, wait_until, Server};

/// A base32 secret of 20 bytes (160 bits, what authenticator apps use).
pub fn totp_secret(seed: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    crate::data(32, seed)
        .iter()
        .map(|b| ALPHABET[usize::from(b % 32)] as char)
        .collect()
}

/// Writes `secret` to `dir/NAME.totp` with mode 0600; its path.
pub fn totp_file(dir: &Path, name: &str, secret: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("{name}.totp"));
    std::fs::write(&path, format!("{secret}\n")).expect("write the TOTP secret");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// The 6-digit TOTP code of `secret` at Unix time `time`, from `oathtool`.
pub fn oathtool(secret: &str, time: u64) -> String {
    let (ok, out) = run(Command::new("oathtool")
        .args(["--totp", "-b", "-N"])
        .arg(format!("@{time}"))
        .arg(secret));
    assert!(ok, "oathtool failed (scripts/setup.sh installs it): {out}");
    let code = out.trim().to_string();
    assert!(
        code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()),
        "{out}"
    );
    code
}

/// Waits (at most one step) until the current 30-second step has at least
/// 12 s left, so that codes computed now stay in the server's window while
/// a test uses them; returns the time then.
pub fn early_in_a_step() -> u64 {
    let settled = wait_until(Duration::from_secs(31), || now() % 30 < 18);
    assert!(settled, "the clock never reached the start of a TOTP step");
    now()
}

/// A six-digit code that is none of the codes of `secret` for the steps
/// around `time` (a wrong code, for sure).
pub fn wrong_code(secret: &str, time: u64) -> String {
    let near: Vec<String> = (0..5)
        .map(|i| oathtool(secret, time + i * 30 - 60))
        .collect();
    (0..10u32)
        .map(|d| format!("{d}{d}{d}{d}{d}{d}"))
        .find(|c| !near.contains(c))
        .expect("a wrong code")
}

/// `POST /token` from 127.0.0.1 as `user`; (status, body, Retry-After).
pub fn post_token(
    s: &Server,
    path: &str,
    user: &str,
    password: &str,
    form: &[(&str, &str)],
) -> (u16, String) {
    let r = client_from("127.0.0.1")
        .post(format!("{}{path}", s.url))
        .basic_auth(user, Some(password))
        .form(form)
        .send()
        .expect("POST");
    let status = r.status().as_u16();
    (status, r.text().unwrap_or_default())
}

/// `signtool token` with the test CA against `s`, as `user` with `password`
/// in a file under `dir`.
pub fn signtool_token(s: &Server, dir: &Path, user: &str, password: &str) -> Command {
    let pw = dir.join(format!("{user}.password"));
    std::fs::write(&pw, format!("{password}\n")).expect("password file");
    let mut c = Command::new(crate::bin("signtool"));
    c.arg("token")
        .arg("-H")
        .arg(s.url.trim_start_matches("https://"))
        .arg("-c")
        .arg(crate::certs().join("ca.pem"))
        .args(["-u", user, "--password-file"])
        .arg(pw);
    c
}
