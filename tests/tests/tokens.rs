//! Minting and checking tokens (docs/PROTOCOL.md, "Tokens").

use signing_tests::*;

fn mint_status(
    s: &Server,
    from: &str,
    user: &str,
    password: &str,
    form: &[(&str, &str)],
) -> (u16, String, bool) {
    let r = client_from(from)
        .post(format!("{}/token", s.url))
        .basic_auth(user, Some(password))
        .form(form)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let www = r.headers().contains_key("www-authenticate");
    (status, r.text().unwrap(), www)
}

#[test]
fn minting_checks_ip_credentials_and_duration() {
    let s = Server::start(&ServerOpts::default());
    let good = [("slave_ip", "127.0.0.2"), ("duration", "60")];
    let (status, token, _) = mint_status(&s, "127.0.0.1", MINT_USER, MINT_PASSWORD, &good);
    assert_eq!(status, 200, "{token}");
    assert!(
        token.starts_with("127.0.0.2:") && !token.ends_with('\n'),
        "{token:?}"
    );

    let (status, _, www) = mint_status(&s, "127.0.0.1", MINT_USER, "wrong", &good);
    assert_eq!((status, www), (401, true));
    let (status, _, _) = mint_status(&s, "127.0.0.1", "nobody", MINT_PASSWORD, &good);
    assert_eq!(status, 401);
    // 127.0.0.2 may use the server but not mint.
    let (status, _, _) = mint_status(&s, "127.0.0.2", MINT_USER, MINT_PASSWORD, &good);
    assert_eq!(status, 403);
    for bad in [
        [("slave_ip", "127.0.0.2"), ("duration", "0")],
        [("slave_ip", "127.0.0.2"), ("duration", "601")],
        [("slave_ip", "127.0.0.2"), ("duration", "x")],
        [("slave_ip", "nope"), ("duration", "60")],
    ] {
        let (status, body, _) = mint_status(&s, "127.0.0.1", MINT_USER, MINT_PASSWORD, &bad);
        assert_eq!(status, 400, "{bad:?}: {body}");
    }
}

/// Uploads with `token` from `from`; returns (status, body).
fn sign_with(s: &Server, token: &str, from: &str) -> (u16, String) {
    let body = data(1000, 7);
    Upload::new(token, "t.bin", &body).send(&client_from(from), &s.url, "gpg")
}

#[test]
fn token_checks() {
    let s = Server::start(&ServerOpts::default());
    let t = now();
    let ip = "127.0.0.1";
    // Valid: minted by the server, and minted under the older secret still listed.
    assert_eq!(sign_with(&s, &s.mint(ip, 60), ip).0, 202);
    assert_eq!(
        sign_with(&s, &token_with(OLD_SECRET, ip, t - 5, t + 60), ip).0,
        202
    );
    // Refused, each with its reason.
    let cases = [
        (token_with(SECRET, ip, t - 100, t - 50), ip, "expired"),
        (
            token_with(SECRET, ip, t + 100, t + 200),
            ip,
            "not yet valid",
        ),
        (
            token_with("some-other-secret-000000", ip, t - 5, t + 60),
            ip,
            "signature invalid",
        ),
        // A secret that was rotated out (no longer in the config).
        (
            token_with("retired-secret-0123456789", ip, t - 5, t + 60),
            ip,
            "signature invalid",
        ),
        (s.mint("127.0.0.1", 60), "127.0.0.2", "another IP"),
        (String::new(), ip, "missing"),
        ("garbage".to_string(), ip, "malformed"),
    ];
    for (token, from, why) in cases {
        let (status, body) = sign_with(&s, &token, from);
        assert_eq!(status, 400, "{why}: {body}");
        assert!(body.contains(why), "{why:?} not in {body:?}");
    }
    // A MAC-valid token with a tampered field is refused too.
    let good = s.mint(ip, 60);
    let forged = good.replacen(':', ":9", 2).replacen(":9", ":", 1);
    assert_eq!(sign_with(&s, &forged, ip).0, 400);
    assert!(
        s.metric("signing_token_rejections_total{reason=\"expired\"}")
            .unwrap_or(0.0)
            >= 1.0
    );
}

#[test]
fn a_token_for_127_0_0_2_works_from_there() {
    let s = Server::start(&ServerOpts::default());
    let token = s.mint("127.0.0.2", 60);
    assert_eq!(sign_with(&s, &token, "127.0.0.2").0, 202);
}

#[test]
fn peers_outside_allowed_ips_get_403_everywhere() {
    let mut opts = ServerOpts::default();
    // 127.0.0.3 may only mint: it gets past the check at accept (it is in a
    // list) and meets allowed_ips on every request; 127.0.0.4 is in no list.
    opts.security = opts
        .security
        .replace("allowed_ips = 127.0.0.0/8", "allowed_ips = 127.0.0.1/32")
        .replace(
            "new_token_allowed_ips = 127.0.0.1",
            "new_token_allowed_ips = 127.0.0.1, 127.0.0.3",
        );
    let s = Server::start(&opts);
    let nowhere = client_from("127.0.0.4")
        .get(format!("{}/health", s.url))
        .send();
    assert!(
        nowhere.is_err(),
        "a peer in no list was answered: {nowhere:?}"
    );
    let c = client_from("127.0.0.3");
    for path in [
        "/health",
        "/metrics",
        "/sign/gpg/0000000000000000000000000000000000000000",
    ] {
        assert_eq!(
            c.get(format!("{}{path}", s.url)).send().unwrap().status(),
            403,
            "{path}"
        );
    }
    assert_eq!(
        c.post(format!("{}/token", s.url)).send().unwrap().status(),
        403
    );
    assert_eq!(
        s.client()
            .get(format!("{}/health", s.url))
            .send()
            .unwrap()
            .status(),
        200
    );
}

#[test]
fn a_minting_password_stored_as_an_argon2_hash() {
    // Ops hash the password with the server itself.
    let (status, out) = run_server_to_end(&["--hash-password".as_ref()], "hashed-mint-password\n");
    assert!(status.success(), "{out}");
    let hash = out
        .lines()
        .find(|l| l.starts_with("$argon2id$"))
        .expect("a PHC string")
        .to_string();
    assert!(
        !out.contains("hashed-mint-password"),
        "the password is not echoed"
    );
    let mut opts = ServerOpts::default();
    opts.security = opts.security.replace(
        &format!("new_token_auth = {MINT_USER}:{MINT_PASSWORD}"),
        &format!("new_token_auth = {MINT_USER}:{hash}"),
    );
    let s = Server::start(&opts);
    let good = [("slave_ip", "127.0.0.1"), ("duration", "60")];
    let (status, token, _) = mint_status(&s, "127.0.0.1", MINT_USER, "hashed-mint-password", &good);
    assert_eq!(status, 200, "{token}");
    assert_eq!(sign_with(&s, &token, "127.0.0.1").0, 202);
    assert_eq!(
        mint_status(&s, "127.0.0.1", MINT_USER, "wrong", &good).0,
        401
    );
    assert_eq!(
        mint_status(&s, "127.0.0.1", MINT_USER, &hash, &good).0,
        401,
        "the hash is not the password"
    );
}
