//! Two-person approval (issue 28): a format with `approvals = 2` signs only
//! with a token a second, listed person approved. Refusals: the requester
//! alone, self-approval, a user not listed, a forged and an expired request;
//! a real approval signs, and gpgv checks the result.

use signing_tests::policy::*;
use signing_tests::signtool::{host_of, output, signtool_sign};
use signing_tests::*;

/// `release` (approvals = 2, approvers bob, dave and alice) beside the plain
/// `gpg`, both with the test key; bob has a TOTP secret. (server, bob's secret).
fn server() -> (Server, String) {
    let secret = totp_secret(82);
    let dir = tempfile::tempdir().unwrap();
    let file = totp_file(dir.path(), "bob", &secret);
    let mut o = ServerOpts::default();
    o.security += &format!(
        "new_token_auth1 = alice:alice-pw\nnew_token_auth2 = bob:bob-pw\n\
         new_token_auth3 = carol:carol-pw\nnew_token_auth4 = dave:dave-pw\n\
         new_token_totp.bob = {}\nnew_token_approvers.release = bob, dave, alice\n",
        file.display()
    );
    let key = certs().join("gpg/secret.asc");
    o.formats += &format!(
        "\n[format:release]\ntype = gpg\nkey = {}\napprovals = 2\ndigest_signing = yes\n",
        key.display()
    );
    let s = Server::start(&o);
    drop(dir);
    (s, secret)
}

/// alice asks for a `release` token for 127.0.0.1: the request text.
fn request(s: &Server) -> String {
    let form = [
        ("slave_ip", "127.0.0.1"),
        ("duration", "120"),
        ("formats", "release"),
    ];
    let (status, text) = post_token(s, "/token", "alice", "alice-pw", &form);
    assert_eq!(status, 202, "{text}");
    text
}

fn approve(s: &Server, user: &str, pw: &str, request: &str, otp: Option<&str>) -> (u16, String) {
    let mut form = vec![("request", request)];
    if let Some(code) = otp {
        form.push(("otp", code));
    }
    post_token(s, "/token/approve", user, pw, &form)
}

/// A digest request for `release` with `token`: its status.
fn digest_status(s: &Server, token: &str) -> u16 {
    let (words, length, tail) = digest::sha256_parts(&data(300, 5));
    s.client()
        .post(format!("{}/digest/release", s.url))
        .form(&[
            ("token", token),
            ("filename", "f.bin"),
            ("sha256_state", &words),
            ("length", &length),
            ("tail", &tail),
        ])
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn only_a_second_listed_person_turns_a_request_into_a_token() {
    let (s, bob_secret) = server();
    let body = data(5000, 9);
    // The requester alone: no token, and no other token covers the format.
    let req = request(&s);
    assert!(
        req.contains("requester=alice") && req.contains("formats=release"),
        "{req}"
    );
    let unscoped = s.mint("127.0.0.1", 60);
    let (status, text) =
        Upload::new(&unscoped, "f.bin", &body).send(&s.client(), &s.url, "release");
    assert_eq!(status, 403, "an unscoped token: {text}");
    assert!(text.contains("second person approved"), "{text}");
    assert_eq!(
        digest_status(&s, &unscoped),
        403,
        "an unscoped token at /digest"
    );
    assert_eq!(
        Upload::new(&unscoped, "f.bin", &body)
            .send(&s.client(), &s.url, "gpg")
            .0,
        202
    );

    // Self-approval, and a user who is not an approver.
    let (status, text) = approve(&s, "alice", "alice-pw", &req, None);
    assert_eq!(status, 403, "self-approval: {text}");
    let (status, text) = approve(&s, "carol", "carol-pw", &req, None);
    assert_eq!(status, 403, "not an approver: {text}");
    assert!(text.contains("may not approve"), "{text}");
    // bob must give his one-time code too.
    let (status, text) = approve(&s, "bob", "bob-pw", &req, None);
    assert_eq!(status, 401, "{text}");

    // A forged request (a longer duration, another machine, another
    // requester) and an expired one, before dave (no TOTP secret).
    for forged in [
        req.replace("duration=120", "duration=600"),
        req.replace("ip=127.0.0.1", "ip=127.0.0.2"),
        req.replace("requester=alice", "requester=carol"),
        "v=1&ip=127.0.0.1&duration=60&formats=release&requester=carol&expires=9999999999!AAAA"
            .to_string(),
    ] {
        let (status, text) = approve(&s, "dave", "dave-pw", &forged, None);
        assert_eq!(status, 400, "forged: {text}");
        assert!(text.contains("altered"), "{text}");
    }
    let expired = signing_server::approval::issue(
        &secrecy::SecretString::from(SECRET.to_string()),
        &signing_server::approval::Request {
            ip: "127.0.0.1".parse().unwrap(),
            duration: 60,
            formats: vec!["release".into()],
            requester: "alice".into(),
            second_factor: false,
            expires: now() - 1,
        },
    );
    let (status, text) = approve(&s, "dave", "dave-pw", &expired, None);
    assert_eq!(status, 400, "expired: {text}");
    assert!(text.contains("expired"), "{text}");

    // bob approves, with his one-time code.
    let t = early_in_a_step();
    let (status, token) = approve(&s, "bob", "bob-pw", &req, Some(&oathtool(&bob_secret, t)));
    assert_eq!(status, 200, "{token}");
    let (status, text) = Upload::new(&token, "f.bin", &body).send(&s.client(), &s.url, "release");
    assert_eq!(status, 202, "{text}");
    let (status, _, sig) = fetch(&s.client(), &s.url, "release", &sha256_hex(&body));
    assert_eq!(status, 200);
    let dir = tempfile::tempdir().unwrap();
    let (f, asc) = (dir.path().join("f"), dir.path().join("f.asc"));
    std::fs::write(&f, &body).unwrap();
    std::fs::write(&asc, &sig).unwrap();
    let (ok, out) = gpgv(&asc, &f);
    assert!(ok, "{out}");
    assert_eq!(
        digest_status(&s, &token),
        200,
        "the approved token at /digest"
    );
    // Its scope is the request's: not the plain gpg format.
    assert_eq!(
        Upload::new(&token, "g.bin", &body)
            .send(&s.client(), &s.url, "gpg")
            .0,
        403
    );

    // Every signing under it names both people.
    let audited: Vec<serde_json::Value> = s
        .audit()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["format"] == "release" && v["outcome"] == "ok")
        .collect();
    assert_eq!(audited.len(), 2, "{}", s.audit());
    for v in &audited {
        assert_eq!(
            (&v["minted_by"], &v["approved_by"]),
            (&"alice".into(), &"bob".into()),
            "{v}"
        );
        // alice asked without a one-time code (she has no secret here).
        assert_eq!(v["second_factor"], "none", "{v}");
    }
    assert!(
        s.stderr().contains("token approved and minted"),
        "{}",
        s.stderr()
    );
}

#[test]
fn signtool_prints_the_request_and_approve_turns_it_into_a_token() {
    let (s, bob_secret) = server();
    let dir = tempfile::tempdir().unwrap();
    let mut ask = signtool_token(&s, dir.path(), "alice", "alice-pw");
    ask.args(["-i", "127.0.0.1", "-d", "300", "--formats", "release"]);
    let out = ask.output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let request = String::from_utf8(out.stdout).unwrap();
    assert!(request.trim().starts_with("v=1&"), "{request}");
    let request_file = dir.path().join("request.txt");
    std::fs::write(&request_file, &request).unwrap();

    let token = dir.path().join("token");
    let t = early_in_a_step();
    let mut approve = signtool_token(&s, dir.path(), "bob", "bob-pw");
    approve
        .arg("--approve")
        .arg(&request_file)
        .args(["--otp", &oathtool(&bob_secret, t), "-o"])
        .arg(&token);
    let (code, text) = output(&mut approve);
    assert_eq!(code, 0, "{text}");

    // The build machine signs with it (by digest: /health says release allows it).
    let file = dir.path().join("app.bin");
    let body = data(40_000, 3);
    std::fs::write(&file, &body).unwrap();
    let mut sign = signtool_sign(
        &[host_of("release", &s.url)],
        &token,
        &dir.path().join("nonce"),
    );
    sign.args(["-f", "release"]).arg(&file);
    let (code, text) = output(&mut sign);
    assert_eq!(code, 0, "{text}");
    let (ok, out) = gpgv(&dir.path().join("app.bin.asc"), &file);
    assert!(ok, "{out}");
}
