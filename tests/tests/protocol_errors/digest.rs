//! The rows of PROTOCOL.md's `POST /digest/FORMAT` table (digest signing,
//! issue 16), as cases of the table in `protocol_errors.rs`. The shared
//! server's `gpg` says `digest_signing = yes`; `gpg-small` does not.

use std::io::Write as _;
use std::process::Command;

use signing_tests::digest::sha256_parts;
use signing_tests::*;

use super::{read_answer, Answer, Case, Ctx, Setup, CLOSE, NONE, RETRY};

pub(super) const CASES: &[Case] = &[
    Case {
        name: "digest: unknown format",
        doc: "no format FORMAT is configured on this server",
        setup: Setup::Main,
        request: |c| digest(c, "nope", &valid(c)),
        status: 404,
        body: "unknown format",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "digest: draining",
        doc: "digest requests stop with the uploads",
        setup: Setup::Draining,
        request: |c| digest(c, "gpg", &valid(c)),
        status: 503,
        body: "shutting down",
        headers: RETRY,
        absent: &[],
    },
    Case {
        name: "digest: format without digest_signing",
        doc: "FORMAT does not allow digest signing here",
        setup: Setup::Main,
        request: |c| digest(c, "gpg-small", &valid(c)),
        status: 403,
        body: "does not allow digest signing",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "digest: body over 16 KiB",
        doc: "the body passes 16 KiB",
        setup: Setup::Main,
        request: |c| curl_digest(c, 20 << 10),
        status: 413,
        body: "at most 16384 bytes",
        headers: CLOSE,
        absent: &[],
    },
    Case {
        name: "digest: body slower than form_timeout",
        doc: "the body did not all arrive within `form_timeout`",
        setup: Setup::Main,
        request: |c| {
            let mut tls = raw_tls(&c.s);
            let head = "POST /digest/gpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ntoken=";
            let _ = tls.write_all(head.as_bytes()).and_then(|_| tls.flush());
            read_answer(tls)
        },
        status: 408,
        body: "longer than",
        headers: CLOSE,
        absent: &[],
    },
    Case {
        name: "digest: not urlencoded",
        doc: "the body is not `application/x-www-form-urlencoded`",
        setup: Setup::Main,
        request: |c| {
            Answer::from_reqwest(
                c.s.client()
                    .post(format!("{}/digest/gpg", c.s.url))
                    .header("content-type", "text/plain")
                    .body(format!("token={}", c.token))
                    .send()
                    .unwrap(),
            )
        },
        status: 400,
        body: "x-www-form-urlencoded",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "digest: bad token",
        doc: "the token is missing or fails a check of the token list above",
        setup: Setup::Main,
        request: |c| {
            let mut f = valid(c);
            f[0].1 = "127.0.0.1:1:2:AAAA!AAAA".into();
            digest(c, "gpg", &f)
        },
        status: 400,
        body: "token signature invalid",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "digest: no token",
        doc: "the token is missing or fails a check of the token list above",
        setup: Setup::Main,
        request: |c| digest(c, "gpg", &valid(c)[1..]),
        status: 400,
        body: "token missing",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "digest: queue full",
        doc: "a digest signing holds one while it signs",
        setup: Setup::QueueFull,
        request: |c| digest(c, "gpg", &valid(c)),
        status: 503,
        body: "too much work queued",
        headers: RETRY,
        absent: &[],
    },
    Case {
        name: "digest: filename not allowed",
        doc: "label is missing, or no regex of allowed_filenames",
        setup: Setup::Main,
        request: |c| {
            let mut f = valid(c);
            f[1].1 = "a.exe".into();
            digest(c, "gpg", &f)
        },
        status: 403,
        body: "is not allowed",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "digest: state of 31 bytes",
        doc: "a digest field is missing or not hex",
        setup: Setup::Main,
        request: |c| {
            let mut f = valid(c);
            f[2].1.truncate(62);
            digest(c, "gpg", &f)
        },
        status: 400,
        body: "must be 32 bytes",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "digest: tail not length % 64",
        doc: "a digest field is missing or not hex",
        setup: Setup::Main,
        request: |c| {
            let mut f = valid(c);
            f[3].1 = "64".into();
            digest(c, "gpg", &f)
        },
        status: 400,
        body: "the tail must be length % 64",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "digest: a digest for a format that signs a state",
        doc: "a digest field is missing or not hex",
        setup: Setup::Main,
        request: |c| {
            let f = valid(c);
            let mut f: Vec<(&str, String)> = f[..2].to_vec();
            f.push(("digest", "00".repeat(48)));
            digest(c, "gpg", &f)
        },
        status: 400,
        body: "sha256_state missing",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "digest: a container for a format that is not authenticode",
        doc: "`container` is sent for a format other than authenticode",
        setup: Setup::Main,
        request: |c| {
            let mut f = valid(c);
            f.push(("container", "msi".into()));
            digest(c, "gpg", &f)
        },
        status: 400,
        body: "container is for authenticode formats only",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "digest: token gone while signing",
        doc: "signing the digest failed because the PKCS#11 token",
        setup: Setup::TokenGone,
        request: |c| digest(c, "gpg", &valid(c)),
        status: 503,
        body: "unavailable",
        headers: RETRY,
        absent: &[],
    },
    Case {
        name: "digest: signed",
        doc: "gpg's armoured detached signature",
        setup: Setup::Main,
        request: |c| digest(c, "gpg", &valid(c)),
        status: 200,
        body: "BEGIN PGP SIGNATURE",
        headers: &[("x-sha256-digest", "")],
        absent: &["x-public-key"],
    },
];

/// A correct gpg request from 127.0.0.1: token, filename, the state of 100 bytes.
fn valid(c: &Ctx) -> Vec<(&'static str, String)> {
    let (words, length, tail) = sha256_parts(&data(100, 22));
    vec![
        ("token", c.token.clone()),
        ("filename", "a.bin".into()),
        ("sha256_state", words),
        ("length", length),
        ("tail", tail),
    ]
}

fn digest(c: &Ctx, format: &str, fields: &[(&str, String)]) -> Answer {
    Answer::from_reqwest(
        c.s.client()
            .post(format!("{}/digest/{format}", c.s.url))
            .form(fields)
            .send()
            .unwrap(),
    )
}

/// A body of `size` bytes with curl, which reads an early answer while
/// still sending (reqwest reports its own send error there).
fn curl_digest(c: &Ctx, size: usize) -> Answer {
    let file = c.dir.path().join(format!("digest-{size}"));
    std::fs::write(&file, format!("token={}&pad={}", c.token, "a".repeat(size))).unwrap();
    let (headers, out) = (
        c.dir.path().join("curl-digest-headers"),
        c.dir.path().join("curl-digest-body"),
    );
    let mut last = Answer::default();
    for _ in 0..3 {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-s",
            "--http1.1",
            "--max-time",
            "60",
            "-w",
            "%{http_code}",
            "-D",
        ])
        .arg(&headers)
        .arg("-o")
        .arg(&out)
        .arg("--cacert")
        .arg(certs().join("ca.pem"))
        .args(["-H", "Content-Type: application/x-www-form-urlencoded"])
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(format!("{}/digest/gpg", c.s.url));
        let (_, code) = run(&mut cmd);
        last = Answer {
            status: code.trim().parse().unwrap_or(0),
            headers: super::parse_head(&std::fs::read_to_string(&headers).unwrap_or_default()),
            body: std::fs::read_to_string(&out).unwrap_or_default(),
        };
        if last.status != 0 && last.status != 100 {
            break;
        }
    }
    last
}
