//! Operating the server: SIGHUP reload, SIGTERM drain, /health states,
//! /metrics names, request ids.

use std::time::Duration;

use signing_tests::*;

/// Rewrites the running server's config with `edit` and sends SIGHUP; waits
/// until the server has counted the reload as applied or rejected
/// (`signing_reloads_total{outcome}`).
fn reload(s: &Server, edit: impl Fn(String) -> String) {
    let path = s.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(text)).unwrap();
    let reloads = || {
        ["applied", "rejected"]
            .iter()
            .map(|o| {
                s.metric(&format!("signing_reloads_total{{outcome=\"{o}\"}}"))
                    .unwrap_or(0.0)
            })
            .sum::<f64>()
    };
    let before = reloads();
    s.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(20), || reloads() > before),
        "reload never finished: {}",
        s.stderr()
    );
}

#[test]
fn reload_applies_a_new_allow_list_and_keeps_the_unlocked_keys() {
    let mut opts = ServerOpts::default();
    opts.security = opts
        .security
        .replace("allowed_ips = 127.0.0.0/8", "allowed_ips = 127.0.0.1/32");
    let s = Server::start(&opts);
    let other = client_from("127.0.0.2");
    // In no list: closed at accept, before TLS (no answer at all).
    let refused = other.get(format!("{}/health", s.url)).send();
    assert!(refused.is_err(), "answered: {refused:?}");

    reload(&s, |t| {
        t.replace("allowed_ips = 127.0.0.1/32", "allowed_ips = 127.0.0.0/8")
    });
    assert!(
        s.stderr().contains("configuration reloaded"),
        "{}",
        s.stderr()
    );
    assert_eq!(
        other
            .get(format!("{}/health", s.url))
            .send()
            .unwrap()
            .status(),
        200
    );
    // The key was kept: stdin is closed, no passphrase could be asked again.
    let (ok, out) = gpg_sign_and_verify(&s, "gpg", &data(3000, 30));
    assert!(ok, "{out}");
}

#[test]
fn a_bad_config_on_reload_is_rejected_and_the_old_one_keeps_serving() {
    let s = Server::start(&ServerOpts::default());
    reload(&s, |t| {
        t.replace(
            "max_token_age = 600",
            "max_token_age = 600\nallowed_ips2 = nonsense",
        )
    });
    let log = s.stderr();
    let loc = format!("{}:", s.config_path().display());
    assert!(
        log.contains("reload rejected")
            && log.contains(&loc)
            && log.contains("unknown key `allowed_ips2`"),
        "{log}"
    );
    let (ok, out) = gpg_sign_and_verify(&s, "gpg", &data(3000, 31));
    assert!(ok, "{out}");
}

#[test]
fn a_changed_key_needs_a_restart_and_the_old_key_keeps_signing() {
    let s = Server::start(&ServerOpts::default());
    reload(&s, |t| t.replace("gpg/secret.asc", "gpg-rsa/secret.asc"));
    assert!(
        s.stderr().contains("format gpg: its key changed"),
        "{}",
        s.stderr()
    );
    let (ok, out) = gpg_sign_and_verify(&s, "gpg", &data(3000, 32));
    assert!(ok, "still signed with the key unlocked at start-up: {out}");
}

#[test]
fn rotating_the_token_secret_by_reload() {
    let mut opts = ServerOpts::default();
    opts.security = opts
        .security
        .replace(&format!("token_secret1 = {OLD_SECRET}\n"), "");
    let s = Server::start(&opts);
    let old_token = s.mint("127.0.0.1", 300);
    let body = data(500, 33);
    // Step 1: a new minting secret, the old one still accepted.
    let new_secret = "rotated-token-secret-0123456789";
    reload(&s, |t| {
        t.replace(
            &format!("token_secret = {SECRET}"),
            &format!("token_secret = {new_secret}\ntoken_secret1 = {SECRET}"),
        )
    });
    assert_eq!(
        Upload::new(&old_token, "a.bin", &body)
            .send(&s.client(), &s.url, "gpg")
            .0,
        202
    );
    let new_token = s.mint("127.0.0.1", 300);
    assert!(signing_server::auth::verify(
        &new_token,
        &[secrecy::SecretString::from(new_secret.to_string())],
        "127.0.0.1".parse().unwrap(),
        now()
    )
    .is_ok());
    // Step 2: the old secret dropped: its tokens are refused, new ones pass.
    reload(&s, |t| {
        t.replace(&format!("token_secret1 = {SECRET}\n"), "")
    });
    let (status, text) =
        Upload::new(&old_token, "b.bin", &data(501, 34)).send(&s.client(), &s.url, "gpg");
    assert_eq!(status, 400, "{text}");
    assert_eq!(
        Upload::new(&new_token, "c.bin", &data(502, 35))
            .send(&s.client(), &s.url, "gpg")
            .0,
        202
    );
}

#[test]
fn sigterm_drains_finishes_pending_work_and_exits_0() {
    let mut opts = ServerOpts::default();
    opts.server_extra.push_str("drain_grace = 3\n");
    let mut s = Server::start(&opts);
    let token = s.mint("127.0.0.1", 60);
    let body = data(24 << 20, 36);
    assert_eq!(
        Upload::new(&token, "big.bin", &body)
            .send(&s.client(), &s.url, "gpg")
            .0,
        202
    );
    s.signal("TERM");
    assert!(
        s.wait_log("draining", Duration::from_secs(10)),
        "{}",
        s.stderr()
    );
    // New work is refused; /health says draining; the pending result is still served.
    let r = s.client().get(format!("{}/health", s.url)).send().unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().unwrap().contains("\"draining\""));
    let (status, text) =
        Upload::new(&token, "late.bin", &data(1000, 37)).send(&s.client(), &s.url, "gpg");
    assert_eq!(status, 503, "{text}");
    let (status, _, sig) = fetch(&s.client(), &s.url, "gpg", &sha256_hex(&body));
    assert_eq!(status, 200);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), &body).unwrap();
    std::fs::write(dir.path().join("f.asc"), &sig).unwrap();
    let (ok, out) = gpgv(&dir.path().join("f.asc"), &dir.path().join("f"));
    assert!(ok, "{out}");
    let status = s
        .wait_exit(Duration::from_secs(30))
        .expect("the server should exit after the drain");
    assert!(status.success(), "{status:?}");
}

#[test]
fn every_response_carries_a_request_id_that_is_in_the_log() {
    let s = Server::start(&ServerOpts::default());
    let r = s.client().get(format!("{}/health", s.url)).send().unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 16, "{id}");
    assert!(
        s.wait_log(&id, Duration::from_secs(5)),
        "request id {id} not in the log: {}",
        s.stderr()
    );
    let r = client_from("127.0.0.2")
        .get(format!("{}/nope", s.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers().contains_key("x-request-id"));
}

#[test]
fn metrics_have_the_documented_names() {
    let s = Server::start(&ServerOpts::default());
    let token = s.mint("127.0.0.1", 60);
    let body = data(4000, 38);
    assert_eq!(
        Upload::new(&token, "m.bin", &body)
            .send(&s.client(), &s.url, "gpg")
            .0,
        202
    );
    assert_eq!(fetch(&s.client(), &s.url, "gpg", &sha256_hex(&body)).0, 200);
    assert_eq!(
        Upload::new("garbage", "m.bin", &body)
            .send(&s.client(), &s.url, "gpg")
            .0,
        400
    );
    let m = s
        .client()
        .get(format!("{}/metrics", s.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for name in [
        "signing_queue_depth 0",
        "signing_uptime_seconds ",
        "signing_upload_bytes_total 4000",
        "signing_jobs_total{format=\"gpg\",outcome=\"ok\"} 1",
        "signing_duration_seconds_bucket{format=\"gpg\",le=\"+Inf\"} 1",
        "signing_duration_seconds_count{format=\"gpg\"} 1",
        "signing_tokens_minted_total 1",
        "signing_token_rejections_total{reason=\"malformed\"} 1",
    ] {
        assert!(m.contains(name), "{name:?} missing from /metrics:\n{m}");
    }
}
