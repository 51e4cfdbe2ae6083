//! The second factor at minting (issue 28, CA/B Forum CS BR 6.2.7.3): a user
//! with `new_token_totp.USER` needs the one-time code of their authenticator.
//! Every code here comes from Debian's `oathtool`, never from the server's code.

use signing_tests::policy::*;
use signing_tests::signtool::output;
use signing_tests::*;

const ALICE_PW: &str = "alice-password";

/// The default test server plus `alice`, who has a TOTP secret; (server, secret).
fn server(extra: &str) -> (Server, String) {
    let secret = totp_secret(28);
    let dir = tempfile::tempdir().unwrap();
    let file = totp_file(dir.path(), "alice", &secret);
    let mut o = ServerOpts::default();
    o.security += &format!(
        "new_token_auth1 = alice:{ALICE_PW}\nnew_token_totp.alice = {}\n{extra}",
        file.display()
    );
    let s = Server::start(&o);
    // The server read the secret at start-up: the file may go now.
    drop(dir);
    (s, secret)
}

fn mint(s: &Server, otp: Option<&str>) -> (u16, String) {
    let mut form = vec![("slave_ip", "127.0.0.1"), ("duration", "60")];
    if let Some(code) = otp {
        form.push(("otp", code));
    }
    post_token(s, "/token", "alice", ALICE_PW, &form)
}

#[test]
fn codes_from_oathtool_missing_wrong_replayed_previous_and_fresh() {
    let (s, secret) = server("");
    let (status, body) = mint(&s, None);
    assert_eq!(status, 401, "no code: {body}");
    assert!(body.contains("one-time code"), "{body}");
    let t = early_in_a_step();
    let (status, body) = mint(&s, Some(&wrong_code(&secret, t)));
    assert_eq!(status, 401, "wrong code: {body}");
    assert!(body.contains("wrong one-time code"), "{body}");

    // The previous step's code is within the window (clock skew) while unused.
    let previous = oathtool(&secret, t - 30);
    let (status, token) = mint(&s, Some(&previous));
    assert_eq!(status, 200, "previous step, first use: {token}");
    assert_eq!(
        Upload::new(&token, "f.bin", &data(100, 1))
            .send(&s.client(), &s.url, "gpg")
            .0,
        202
    );
    let (status, _, _) = fetch(&s.client(), &s.url, "gpg", &sha256_hex(&data(100, 1)));
    assert_eq!(status, 200, "signed, and audited");
    let fresh = oathtool(&secret, t);
    let (status, token) = mint(&s, Some(&fresh));
    assert_eq!(status, 200, "fresh code: {token}");

    // Used: the same code, and any code of an earlier step, are replays.
    let (status, body) = mint(&s, Some(&fresh));
    assert_eq!(status, 401, "replayed code: {body}");
    assert!(body.contains("already used"), "{body}");
    let (status, body) = mint(&s, Some(&previous));
    assert_eq!(status, 401, "an earlier step's code: {body}");
    assert!(body.contains("already used"), "{body}");

    // The log line and the audit say the second factor was used.
    let log = s.stderr();
    let minted = log.lines().filter(|l| l.contains("token minted"));
    assert_eq!(
        minted
            .filter(|l| l.contains("second_factor=\"totp\""))
            .count(),
        2,
        "{log}"
    );
    // Every signing under a token minted with the code says so, and who minted it.
    let signed: Vec<serde_json::Value> = s
        .audit()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(signed.len(), 1, "{}", s.audit());
    assert_eq!(signed[0]["minted_by"], "alice", "{}", signed[0]);
    assert_eq!(signed[0]["second_factor"], "totp", "{}", signed[0]);
    assert!(signed[0]["approved_by"].is_null(), "{}", signed[0]);
    assert_eq!(
        s.metric("signing_token_mint_refused_total{reason=\"otp_replayed\"}"),
        Some(2.0)
    );
    // The secret is in neither the log nor the audit log.
    assert!(!s.stderr().contains(&secret) && !s.audit().contains(&secret));
    // A user without a secret mints as before (Mozilla's get_token sends no
    // otp), and nothing names who minted their tokens.
    let token = s.mint("127.0.0.1", 60);
    assert!(!token.contains('~'), "{token}");
    let (status, _) = Upload::new(&token, "g.bin", &data(100, 3)).send(&s.client(), &s.url, "gpg");
    assert_eq!(status, 202);
    let (status, _, _) = fetch(&s.client(), &s.url, "gpg", &sha256_hex(&data(100, 3)));
    assert_eq!(status, 200);
    assert!(wait_until(std::time::Duration::from_secs(10), || s
        .audit()
        .lines()
        .count()
        == 2));
    let last: serde_json::Value = serde_json::from_str(s.audit().lines().last().unwrap()).unwrap();
    assert!(
        last["minted_by"].is_null() && last["second_factor"].is_null(),
        "{last}"
    );
}

#[test]
fn a_missing_or_wrong_code_counts_against_the_minting_throttle() {
    let (s, secret) = server("mint_failures_per_minute = 3\n");
    let t = early_in_a_step();
    let wrong = wrong_code(&secret, t);
    assert_eq!(mint(&s, None).0, 401);
    assert_eq!(mint(&s, Some(&wrong)).0, 401);
    assert_eq!(mint(&s, Some(&wrong)).0, 401);
    // Three failures: even the right code now waits.
    let (status, body) = mint(&s, Some(&oathtool(&secret, t)));
    assert_eq!(status, 429, "{body}");
}

#[test]
fn signtool_token_sends_the_code_given_with_otp() {
    let (s, secret) = server("");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("token");
    let t = early_in_a_step();
    let base = |c: &mut std::process::Command| {
        c.args(["-i", "127.0.0.1", "-d", "60", "-o"]).arg(&out);
    };
    // No code, no terminal to ask on: a clear failure.
    let mut c = signtool_token(&s, dir.path(), "alice", ALICE_PW);
    base(&mut c);
    let (code, text) = output(c.stdin(std::process::Stdio::null()));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("--otp"), "{text}");
    assert!(!out.exists());

    let mut c = signtool_token(&s, dir.path(), "alice", ALICE_PW);
    base(&mut c);
    c.args(["--otp", &oathtool(&secret, t)]);
    let (code, text) = output(&mut c);
    assert_eq!(code, 0, "{text}");
    let token = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        Upload::new(&token, "f.bin", &data(100, 2))
            .send(&s.client(), &s.url, "gpg")
            .0,
        202
    );
}

#[test]
fn a_totp_file_open_to_others_or_missing_stops_the_start_with_file_and_line() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = totp_file(dir.path(), "alice", &totp_secret(3));
    let missing = dir.path().join("nowhere.totp");
    for (mode, path, expect) in [
        (0o640, &file, "open to group or others"),
        (0o604, &file, "open to group or others"),
        (0o600, &missing, "not found"),
    ] {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        let mut o = ServerOpts::default();
        o.security += &format!(
            "new_token_auth1 = alice:{ALICE_PW}\nnew_token_totp.alice = {}\n",
            path.display()
        );
        let cfg = write_config(dir.path(), &o);
        let text = std::fs::read_to_string(&cfg).unwrap();
        let line = text
            .lines()
            .position(|l| l.starts_with("new_token_totp."))
            .unwrap()
            + 1;
        let (status, out) = run_server_to_end(&[cfg.as_os_str()], &o.stdin);
        assert_eq!(status.code(), Some(2), "{expect}: {out}");
        let loc = format!("{}:{line}: ", cfg.display());
        assert!(
            out.contains(&loc) && out.contains(expect),
            "{loc} {expect}: {out}"
        );
    }
}
