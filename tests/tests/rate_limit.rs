//! Each format's signing rate (issue 28: `max_rate`, `burst`): a token
//! bucket per format. Digest requests beyond it get `429` + `Retry-After`;
//! uploads wait their turn. The tests count signatures (never more than the
//! burst plus the rate times the time taken); they never time how fast.

use std::sync::Arc;
use std::time::{Duration, Instant};

use signing_tests::signtool::{host_of, output, signtool_sign};
use signing_tests::*;

/// A digest request's (status, Retry-After, body, the data it signs).
type Answer = (u16, Option<String>, Vec<u8>, Vec<u8>);

fn server(rate: &str, burst: u32) -> Server {
    let mut o = ServerOpts::default();
    o.formats += &format!("digest_signing = yes\nmax_rate = {rate}\nburst = {burst}\n");
    Server::start(&o)
}

#[test]
fn a_parallel_burst_of_digest_requests_is_held_to_the_rate() {
    let (rate, burst) = (0.2, 2u32);
    let s = server("0.2", burst);
    let health = s.health();
    let gpg = &health["format_details"]["gpg"];
    assert_eq!(
        (gpg["max_rate"].as_f64(), gpg["burst"].as_u64()),
        (Some(rate), Some(2)),
        "{health}"
    );

    let token = Arc::new(s.mint("127.0.0.1", 120));
    let client = s.client();
    let url = s.url.clone();
    let started = Instant::now();
    let answers: Vec<Answer> = (0..16)
        .map(|i| {
            let (client, url, token) = (client.clone(), url.clone(), token.clone());
            std::thread::spawn(move || {
                let body = data(1000 + i, i as u64);
                let (words, length, tail) = digest::sha256_parts(&body);
                let r = client
                    .post(format!("{url}/digest/gpg"))
                    .form(&[
                        ("token", token.as_str()),
                        ("filename", "f.bin"),
                        ("sha256_state", &words),
                        ("length", &length),
                        ("tail", &tail),
                    ])
                    .send()
                    .unwrap();
                let retry = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string());
                (
                    r.status().as_u16(),
                    retry,
                    r.bytes().unwrap().to_vec(),
                    body,
                )
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    let ok: Vec<_> = answers.iter().filter(|a| a.0 == 200).collect();
    let limited: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    assert_eq!(ok.len() + limited.len(), answers.len(), "only 200 and 429");
    assert!(!ok.is_empty() && !limited.is_empty(), "{} ok", ok.len());
    let most = f64::from(burst) + rate * elapsed;
    assert!(
        ok.len() as f64 <= most,
        "{} signatures in {elapsed:.1} s: more than burst {burst} + {rate}/s allow ({most:.1})",
        ok.len()
    );
    for (_, retry, _, _) in &limited {
        let secs: u64 = retry
            .as_deref()
            .expect("Retry-After")
            .parse()
            .expect("whole seconds");
        assert!(secs >= 1, "{secs}");
    }
    // The signatures given are good ones.
    let dir = tempfile::tempdir().unwrap();
    let (_, _, sig, body) = ok[0];
    std::fs::write(dir.path().join("f"), body).unwrap();
    std::fs::write(dir.path().join("f.asc"), sig).unwrap();
    let (good, out) = gpgv(&dir.path().join("f.asc"), &dir.path().join("f"));
    assert!(good, "{out}");
    assert_eq!(
        s.metric("signing_rate_limited_total{format=\"gpg\"}"),
        Some(limited.len() as f64)
    );
}

/// 40 files, 8 at a time, by digest: the 429s are waited out on the same
/// host (not errors: --max-errors 2 would fail a file otherwise), every
/// signature verifies, and the run takes at least what the rate allows.
#[test]
fn signtool_signs_40_files_under_the_rate_and_waits_out_the_429s() {
    let (rate, burst, files) = (10.0, 5u32, 40usize);
    let s = server("10", burst);
    run_signtool(&s, files, &["--max-errors", "2"], rate, burst);
    assert!(
        s.metric("signing_rate_limited_total{format=\"gpg\"}")
            .unwrap_or(0.0)
            >= 1.0
    );
    assert_eq!(s.audit().matches("\"mode\":\"digest\"").count(), files);
}

/// Uploads are never refused for the rate: they wait in the queue.
#[test]
fn uploads_wait_for_their_turn_and_are_not_refused() {
    let (rate, burst, files) = (10.0, 5u32, 20usize);
    let s = server("10", burst);
    run_signtool(
        &s,
        files,
        &["--whole-file", "--max-errors", "1"],
        rate,
        burst,
    );
    assert!(
        s.metric("signing_rate_limited_total{format=\"gpg\"}")
            .unwrap_or(0.0)
            >= 1.0
    );
    assert_eq!(s.audit().matches("\"mode\":\"upload\"").count(), files);
    assert!(!s.stderr().contains("status=429"), "{}", s.stderr());
}

/// Signs `files` files with `--jobs 8` and `extra` flags; checks every
/// signature with gpgv, and that the run was no faster than the rate allows.
fn run_signtool(s: &Server, files: usize, extra: &[&str], rate: f64, burst: u32) {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, s.mint("127.0.0.1", 300)).unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    for i in 0..files {
        std::fs::write(
            inputs.join(format!("f{i:02}.bin")),
            data(2000 + i, 100 + i as u64),
        )
        .unwrap();
    }
    let mut c = signtool_sign(&[host_of("gpg", &s.url)], &token, &dir.path().join("nonce"));
    c.args(["-f", "gpg", "--jobs", "8"])
        .args(extra)
        .arg(&inputs);
    let started = Instant::now();
    let (code, text) = output(&mut c);
    let elapsed = started.elapsed();
    assert_eq!(code, 0, "{text}");
    for i in 0..files {
        let f = inputs.join(format!("f{i:02}.bin"));
        let (ok, out) = gpgv(&f.with_extension("bin.asc"), &f);
        assert!(ok, "{}: {out}", f.display());
    }
    let least = Duration::from_secs_f64((files as f64 - f64::from(burst)) / rate);
    assert!(
        elapsed >= least,
        "{files} signatures in {elapsed:?}: faster than burst {burst} + {rate}/s allow"
    );
}

/// A new rate is put in force by SIGHUP (the key stays unlocked).
#[test]
fn sighup_applies_a_new_rate() {
    let s = server("10", 5);
    let path = s.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text
        .replace("max_rate = 10", "max_rate = 0.01")
        .replace("burst = 5", "burst = 1");
    std::fs::write(&path, text).unwrap();
    s.signal("HUP");
    let rate = || {
        let h = s.health();
        h["format_details"]["gpg"]["max_rate"].as_f64()
    };
    assert!(
        wait_until(Duration::from_secs(20), || rate() == Some(0.01)),
        "{}",
        s.stderr()
    );
    // The bucket keeps at most the new burst: one signature, then 429.
    let token = s.mint("127.0.0.1", 60);
    let status = |seed: u64| {
        let (words, length, tail) = digest::sha256_parts(&data(500, seed));
        s.client()
            .post(format!("{}/digest/gpg", s.url))
            .form(&[
                ("token", token.as_str()),
                ("filename", "f.bin"),
                ("sha256_state", &words),
                ("length", &length),
                ("tail", &tail),
            ])
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!((status(1), status(2)), (200, 429));
}
