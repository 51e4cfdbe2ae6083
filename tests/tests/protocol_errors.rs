//! Every refusal docs/PROTOCOL.md promises, as one table: how to provoke
//! it, the status, a piece of the body, the headers that must (and must not)
//! come with it. Most rows run against one server; the rows that need a
//! server in a special state (draining, a full queue, a full disk, a
//! failing store) get a small server of their own.
//!
//! `every_documented_row_has_a_case` reads PROTOCOL.md's error tables and
//! fails when a row has no case here (or a case names no row), so the
//! document and this test cannot drift apart.
//!
//! Rows where the server answers before it reads the body (413, 507) are sent
//! with curl: reqwest's blocking client reports its own send error there.

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use signing_tests::*;

/// The `POST /digest/FORMAT` rows.
#[path = "protocol_errors/digest.rs"]
mod digest_rows;

/// The rows of issue 28: one-time codes, approval, rates.
#[path = "protocol_errors/policy.rs"]
mod policy_rows;

/// Every case: this file's, the digest rows' and the policy rows'.
fn all_cases() -> impl Iterator<Item = &'static Case> {
    CASES
        .iter()
        .chain(digest_rows::CASES)
        .chain(policy_rows::CASES)
}

/// What came back.
#[derive(Debug, Default)]
struct Answer {
    /// HTTP status; 0 when the connection closed without an answer.
    status: u16,
    /// Header names lower-cased.
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn from_reqwest(r: reqwest::blocking::Response) -> Answer {
        let status = r.status().as_u16();
        let headers = r
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        Answer {
            status,
            headers,
            body: r.text().unwrap_or_default(),
        }
    }
}

/// The server state a row needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// The shared server (see [`main_opts`]).
    Main,
    /// SIGTERM received, draining.
    Draining,
    /// `max_queue = 1`, its one place held by a stalled upload.
    QueueFull,
    /// work_dir on a 3 MiB tmpfs (needs root).
    DiskFull,
    /// `results/broken` is a file, so storing a result of format `broken` fails.
    StoreFails,
    /// Format `gpg` signs with a key in a SoftHSM2 token whose directory is moved away
    /// after start-up: the token fails.
    TokenGone,
}

/// A server in its state, and what the rows share.
struct Ctx {
    s: Server,
    /// A token for 127.0.0.1.
    token: String,
    dir: tempfile::TempDir,
    /// The SoftHSM2 store of [`Setup::TokenGone`], kept until the server stops.
    _hsm: Option<signing_tests::pkcs11::SoftHsm>,
}

/// One documented refusal.
struct Case {
    name: &'static str,
    /// A phrase of the PROTOCOL.md row (or Transport bullet) this covers.
    doc: &'static str,
    setup: Setup,
    request: fn(&Ctx) -> Answer,
    status: u16,
    /// A piece of the body.
    body: &'static str,
    /// Headers that must come (name, a piece of the value).
    headers: &'static [(&'static str, &'static str)],
    /// Headers that must not.
    absent: &'static [&'static str],
}

const RETRY: &[(&str, &str)] = &[("retry-after", "")];
const CLOSE: &[(&str, &str)] = &[("connection", "close")];
const NONE: &[(&str, &str)] = &[];

const CASES: &[Case] = &[
    // --- Transport ---
    Case {
        name: "peer outside allowed_ips (GET)",
        doc: "Outside the list",
        setup: Setup::Main,
        request: |c| get_from(c, "127.0.0.4", "/health"),
        status: 403,
        body: "your IP address is not allowed",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "peer outside allowed_ips (POST /sign)",
        doc: "Outside the list",
        setup: Setup::Main,
        request: |c| {
            upload_from(
                c,
                "127.0.0.4",
                "gpg",
                &[("token", &c.token), ("filename", "a.bin")],
                Some(&data(100, 1)),
            )
        },
        status: 403,
        body: "your IP address is not allowed",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "one header of 1 MiB",
        doc: "header lines",
        setup: Setup::Main,
        request: |c| raw_head(&c.s, &format!("X-Big: {}\r\n", "a".repeat(1 << 20))),
        status: 431,
        body: "",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "1000 headers",
        doc: "header lines",
        setup: Setup::Main,
        request: |c| {
            raw_head(
                &c.s,
                &(0..1000)
                    .map(|i| format!("X-H{i}: v\r\n"))
                    .collect::<String>(),
            )
        },
        status: 431,
        body: "",
        headers: NONE,
        absent: &[],
    },
    // --- POST /token ---
    Case {
        name: "minting from a peer outside new_token_allowed_ips",
        doc: "peer in `new_token_allowed_ips`",
        setup: Setup::Main,
        request: |c| {
            mint_from(
                c,
                "127.0.0.2",
                Some(MINT_PASSWORD),
                "slave_ip=127.0.0.2&duration=60",
            )
        },
        status: 403,
        body: "minting tokens is not allowed",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "minting for a format the server does not have",
        doc: "names only configured formats",
        setup: Setup::Main,
        request: |c| {
            mint_from(
                c,
                "127.0.0.1",
                Some(MINT_PASSWORD),
                "slave_ip=127.0.0.2&duration=60&formats=gpg,nope",
            )
        },
        status: 400,
        body: "unknown format(s) nope",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "minting beyond the user's formats",
        doc: "within the user's `new_token_formats.USER`",
        setup: Setup::Main,
        request: |c| {
            Answer::from_reqwest(
                client_from("127.0.0.1")
                    .post(format!("{}/token", c.s.url))
                    .basic_auth("limited", Some("limited-password"))
                    .form(&[
                        ("slave_ip", "127.0.0.2"),
                        ("duration", "60"),
                        ("formats", "mar"),
                    ])
                    .send()
                    .unwrap(),
            )
        },
        status: 403,
        body: "may mint tokens only for gpg; not for mar",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "minting without credentials",
        doc: "`Authorization: Basic",
        setup: Setup::Main,
        request: |c| mint_from(c, "127.0.0.1", None, "slave_ip=127.0.0.2&duration=60"),
        status: 401,
        body: "bad or missing credentials",
        headers: &[("www-authenticate", "Basic realm=\"signing-server\"")],
        absent: &[],
    },
    Case {
        name: "minting with a wrong password",
        doc: "`Authorization: Basic",
        setup: Setup::Main,
        request: |c| {
            mint_from(
                c,
                "127.0.0.1",
                Some("wrong-password"),
                "slave_ip=127.0.0.2&duration=60",
            )
        },
        status: 401,
        body: "bad or missing credentials",
        headers: &[("www-authenticate", "Basic realm=\"signing-server\"")],
        absent: &[],
    },
    Case {
        name: "minting without slave_ip",
        doc: "`slave_ip` = an IPv4",
        setup: Setup::Main,
        request: |c| mint_from(c, "127.0.0.1", Some(MINT_PASSWORD), "duration=60"),
        status: 400,
        body: "slave_ip missing",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "minting for a slave_ip that is no IP",
        doc: "`slave_ip` = an IPv4",
        setup: Setup::Main,
        request: |c| {
            mint_from(
                c,
                "127.0.0.1",
                Some(MINT_PASSWORD),
                "slave_ip=build-host&duration=60",
            )
        },
        status: 400,
        body: "slave_ip is not an IP address",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "minting with a form body over 4 KiB",
        doc: "`slave_ip` = an IPv4",
        setup: Setup::Main,
        request: |c| {
            mint_from(
                c,
                "127.0.0.1",
                Some(MINT_PASSWORD),
                &format!("slave_ip=127.0.0.2&duration=60&pad={}", "x".repeat(5000)),
            )
        },
        status: 400,
        body: "larger than 4096 bytes",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "minting for 0 s",
        doc: "`duration` = whole seconds",
        setup: Setup::Main,
        request: |c| {
            mint_from(
                c,
                "127.0.0.1",
                Some(MINT_PASSWORD),
                "slave_ip=127.0.0.2&duration=0",
            )
        },
        status: 400,
        body: "duration must be between 1 and 600",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "minting beyond max_token_age",
        doc: "`duration` = whole seconds",
        setup: Setup::Main,
        request: |c| {
            mint_from(
                c,
                "127.0.0.1",
                Some(MINT_PASSWORD),
                "slave_ip=127.0.0.2&duration=601",
            )
        },
        status: 400,
        body: "duration must be between 1 and 600",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "minting for a duration that is no number",
        doc: "`duration` = whole seconds",
        setup: Setup::Main,
        request: |c| {
            mint_from(
                c,
                "127.0.0.1",
                Some(MINT_PASSWORD),
                "slave_ip=127.0.0.2&duration=1.5",
            )
        },
        status: 400,
        body: "duration is not a whole number",
        headers: NONE,
        absent: &[],
    },
    // --- POST /sign/FORMAT, in the documented order ---
    Case {
        name: "unknown format",
        doc: "is not a configured",
        setup: Setup::Main,
        request: |c| upload(c, "nosuch", &data(100, 2)),
        status: 404,
        body: "unknown format",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "upload while draining",
        doc: "draining (shutting down)",
        setup: Setup::Draining,
        request: |c| upload(c, "gpg", &data(100, 3)),
        status: 503,
        body: "shutting down",
        headers: RETRY,
        absent: &[],
    },
    Case {
        name: "Content-Length over max_filesize",
        doc: "`Content-Length` already exceeds",
        setup: Setup::Main,
        request: |c| curl_upload(c, "gpg-small", 2 << 20, false),
        status: 413,
        body: "file too large",
        headers: CLOSE,
        absent: &[],
    },
    Case {
        name: "max_queue reached",
        doc: "`max_queue` jobs are pending",
        setup: Setup::QueueFull,
        request: |c| upload(c, "gpg", &data(100, 4)),
        status: 503,
        body: "too much work queued",
        headers: RETRY,
        absent: &[],
    },
    Case {
        name: "not multipart",
        doc: "not `multipart/form-data`",
        setup: Setup::Main,
        request: |c| {
            Answer::from_reqwest(
                c.s.client()
                    .post(format!("{}/sign/gpg", c.s.url))
                    .body("hello")
                    .send()
                    .unwrap(),
            )
        },
        status: 400,
        body: "expected a multipart/form-data upload",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "no filedata",
        doc: "not `multipart/form-data`",
        setup: Setup::Main,
        request: |c| {
            upload_from(
                c,
                "127.0.0.1",
                "gpg",
                &[("token", &c.token), ("filename", "a.bin")],
                None,
            )
        },
        status: 400,
        body: "no filedata field",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "a text field over 4 KiB",
        doc: "not `multipart/form-data`",
        setup: Setup::Main,
        request: |c| {
            upload_from(
                c,
                "127.0.0.1",
                "gpg",
                &[("token", &c.token), ("filename", &"a".repeat(5000))],
                Some(&data(100, 5)),
            )
        },
        status: 400,
        body: "field filename is longer than 4096 bytes",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "a part header over 8 KiB",
        doc: "a part header",
        setup: Setup::Main,
        request: |c| {
            let head = format!(
                "--B\r\nContent-Disposition: form-data; name=\"{}\"\r\n\r\n",
                "a".repeat(9000)
            );
            raw_upload(&c.s, head.as_bytes(), 64 << 10)
        },
        status: 431,
        body: "part header is longer than 8192 bytes",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "fields before filedata slower than form_timeout",
        doc: "took longer than `form_timeout`",
        setup: Setup::Main,
        request: |c| {
            raw_upload(
                &c.s,
                b"--B\r\nContent-Disposition: form-data; name=\"nonce\"\r\n\r\n",
                1 << 20,
            )
        },
        status: 408,
        body: "took longer than 3 s",
        headers: CLOSE,
        absent: &[],
    },
    Case {
        name: "token scoped to another format",
        doc: "scoped to some formats",
        setup: Setup::Main,
        request: |c| {
            let now = now();
            let scoped = signing_server::auth::mint(
                &secrecy::SecretString::from(SECRET.to_string()),
                "127.0.0.1".parse().unwrap(),
                now,
                now + 60,
                Some(&["mar".to_string()]),
            );
            upload_with_token(c, "127.0.0.1", &scoped)
        },
        status: 403,
        body: "limited to the formats mar; it may not sign with gpg",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "token missing",
        doc: "token missing, malformed",
        setup: Setup::Main,
        request: |c| upload_with_token(c, "127.0.0.1", ""),
        status: 400,
        body: "token missing",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "token malformed",
        doc: "token missing, malformed",
        setup: Setup::Main,
        request: |c| upload_with_token(c, "127.0.0.1", "not-a-token"),
        status: 400,
        body: "token malformed",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "token under an unknown secret",
        doc: "token missing, malformed",
        setup: Setup::Main,
        request: |c| {
            upload_with_token(
                c,
                "127.0.0.1",
                &token_with(
                    "some-other-secret-0123456789",
                    "127.0.0.1",
                    now(),
                    now() + 60,
                ),
            )
        },
        status: 400,
        body: "token signature invalid",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "token not yet valid",
        doc: "token missing, malformed",
        setup: Setup::Main,
        request: |c| {
            upload_with_token(
                c,
                "127.0.0.1",
                &token_with(SECRET, "127.0.0.1", now() + 100, now() + 200),
            )
        },
        status: 400,
        body: "token not yet valid",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "token expired",
        doc: "token missing, malformed",
        setup: Setup::Main,
        request: |c| {
            upload_with_token(
                c,
                "127.0.0.1",
                &token_with(SECRET, "127.0.0.1", now() - 200, now() - 100),
            )
        },
        status: 400,
        body: "token expired",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "token for another IP",
        doc: "token missing, malformed",
        setup: Setup::Main,
        request: |c| upload_with_token(c, "127.0.0.2", &c.token),
        status: 400,
        body: "issued for another IP",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "filename not allowed",
        doc: "`allowed_filenames`",
        setup: Setup::Main,
        request: |c| {
            upload_from(
                c,
                "127.0.0.1",
                "gpg",
                &[
                    ("token", &c.token),
                    ("filename", "evil.sh"),
                    ("sha256", &"0".repeat(64)),
                ],
                Some(&data(100, 6)),
            )
        },
        status: 403,
        body: "is not allowed on this server",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "no hash",
        doc: "no hash given",
        setup: Setup::Main,
        request: |c| {
            upload_from(
                c,
                "127.0.0.1",
                "gpg",
                &[("token", &c.token), ("filename", "a.bin")],
                Some(&data(100, 7)),
            )
        },
        status: 400,
        body: "sha1 or sha256 of the file is required",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "trailing sha256 not 64 hex digits",
        doc: "no hash given",
        setup: Setup::Main,
        request: |c| upload_trailing(c, &data(100, 11), "abc"),
        status: 400,
        body: "sha256 must be 64 hex digits",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "trailing sha256 differs from the bytes",
        doc: "a given hash differs",
        setup: Setup::Main,
        request: |c| upload_trailing(c, &data(100, 12), &sha256_hex(b"other")),
        status: 400,
        body: "sha256 mismatch",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "trailing sha256 that matches is accepted",
        doc: "accepted; header `X-Nonce`",
        setup: Setup::Main,
        request: |c| {
            let body = data(100, 13);
            upload_trailing(c, &body, &sha256_hex(&body))
        },
        status: 202,
        body: "accepted",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "sha256 not 64 hex digits",
        doc: "no hash given",
        setup: Setup::Main,
        request: |c| {
            upload_from(
                c,
                "127.0.0.1",
                "gpg",
                &[
                    ("token", &c.token),
                    ("filename", "a.bin"),
                    ("sha256", "abc"),
                ],
                Some(&data(100, 8)),
            )
        },
        status: 400,
        body: "sha256 must be 64 hex digits",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "sha1 not 40 hex digits",
        doc: "no hash given",
        setup: Setup::Main,
        request: |c| {
            upload_from(
                c,
                "127.0.0.1",
                "gpg",
                &[
                    ("token", &c.token),
                    ("filename", "a.bin"),
                    ("sha1", &"g".repeat(40)),
                ],
                Some(&data(100, 9)),
            )
        },
        status: 400,
        body: "sha1 must be 40 hex digits",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "file passes max_filesize while streaming",
        doc: "passes `max_filesize` while streaming",
        setup: Setup::Main,
        request: |c| curl_upload(c, "gpg-small", 2 << 20, true),
        status: 413,
        body: "file too large",
        headers: CLOSE,
        absent: &[],
    },
    Case {
        name: "file under min_filesize",
        doc: "smaller than `min_filesize`",
        setup: Setup::Main,
        request: |c| upload(c, "gpg", b"tiny"),
        status: 400,
        body: "file too small",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "sha256 differs from the bytes",
        doc: "a given hash differs",
        setup: Setup::Main,
        request: |c| {
            upload_from(
                c,
                "127.0.0.1",
                "gpg",
                &[
                    ("token", &c.token),
                    ("filename", "a.bin"),
                    ("sha256", &sha256_hex(b"other")),
                ],
                Some(&data(100, 10)),
            )
        },
        status: 400,
        body: "sha256 mismatch",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "sha1 differs from the bytes",
        doc: "a given hash differs",
        setup: Setup::Main,
        request: |c| {
            upload_from(
                c,
                "127.0.0.1",
                "gpg",
                &[
                    ("token", &c.token),
                    ("filename", "a.bin"),
                    ("sha1", &sha1_hex(b"other")),
                ],
                Some(&data(100, 11)),
            )
        },
        status: 400,
        body: "sha1 mismatch",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "disk full",
        doc: "disk is full",
        setup: Setup::DiskFull,
        request: |c| curl_upload(c, "gpg", 5 << 20, false),
        status: 507,
        body: "out of disk space",
        headers: RETRY,
        absent: &[],
    },
    Case {
        name: "accepted",
        doc: "accepted; header `X-Nonce`",
        setup: Setup::Main,
        request: |c| upload(c, "gpg", &data(1000, 12)),
        status: 202,
        body: "accepted ",
        headers: &[("x-nonce", "")],
        absent: &[],
    },
    // --- GET /sign/FORMAT/HASH ---
    Case {
        name: "signed result",
        doc: "body = the signed output",
        setup: Setup::Main,
        request: |c| {
            let body = data(2000, 13);
            assert_eq!(upload(c, "gpg", &body).status, 202);
            let (status, headers, out) = fetch(&c.s.client(), &c.s.url, "gpg", &sha256_hex(&body));
            let headers = headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
            Answer {
                status,
                headers,
                body: String::from_utf8_lossy(&out).into(),
            }
        },
        status: 200,
        body: "-----BEGIN PGP SIGNATURE-----",
        headers: &[
            ("x-sha1-digest", ""),
            ("x-sha256-digest", ""),
            ("content-length", ""),
        ],
        absent: &["x-pending"],
    },
    Case {
        name: "pending",
        doc: "queued or signing",
        setup: Setup::Main,
        request: pending,
        status: 404,
        body: "pending",
        headers: &[("x-pending", "True")],
        absent: &[],
    },
    Case {
        name: "unknown hash",
        doc: "unknown (never uploaded",
        setup: Setup::Main,
        request: |c| get_from(c, "127.0.0.1", &format!("/sign/gpg/{}", "ab".repeat(32))),
        status: 404,
        body: "unknown: upload the file first",
        headers: NONE,
        absent: &["x-pending"],
    },
    Case {
        name: "signer rejected the input",
        doc: "signer rejected the input",
        setup: Setup::Main,
        request: |c| {
            let body = data(5000, 14);
            assert_eq!(upload(c, "mar", &body).status, 202);
            let (status, headers, out) = fetch(&c.s.client(), &c.s.url, "mar", &sha256_hex(&body));
            let headers = headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
            Answer {
                status,
                headers,
                body: String::from_utf8_lossy(&out).into(),
            }
        },
        status: 422,
        body: "MAR",
        headers: NONE,
        absent: &["x-pending"],
    },
    Case {
        name: "signing failed on the server",
        doc: "signing failed on this server",
        setup: Setup::StoreFails,
        request: store_fails,
        status: 500,
        body: "signing failed on this server",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "the key's token failed",
        doc: "the format's key is in a PKCS#11 token that failed",
        setup: Setup::TokenGone,
        request: |c| {
            let body = data(5000, 15);
            assert_eq!(upload(c, "gpg", &body).status, 202);
            get_from(c, "127.0.0.1", &format!("/sign/gpg/{}", sha256_hex(&body)))
        },
        status: 503,
        body: "token is unavailable",
        headers: RETRY,
        absent: &[],
    },
    Case {
        name: "hash not hex",
        doc: "HASH is not 40 or 64 hex digits",
        setup: Setup::Main,
        request: |c| get_from(c, "127.0.0.1", "/sign/gpg/not-a-hash"),
        status: 400,
        body: "hash must be the sha1 (40 hex) or sha256 (64 hex)",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "sha1-length hash with a non-hex digit",
        doc: "HASH is not 40 or 64 hex digits",
        setup: Setup::Main,
        request: |c| get_from(c, "127.0.0.1", &format!("/sign/gpg/{}", "z".repeat(40))),
        status: 400,
        body: "hash must be",
        headers: NONE,
        absent: &[],
    },
];

// --- how requests are made ---

fn get_from(c: &Ctx, ip: &str, path: &str) -> Answer {
    Answer::from_reqwest(
        client_from(ip)
            .get(format!("{}{path}", c.s.url))
            .send()
            .unwrap(),
    )
}

fn mint_from(c: &Ctx, ip: &str, password: Option<&str>, form: &str) -> Answer {
    let mut r = client_from(ip)
        .post(format!("{}/token", c.s.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_string());
    if let Some(p) = password {
        r = r.basic_auth(MINT_USER, Some(p));
    }
    Answer::from_reqwest(r.send().unwrap())
}

/// A multipart upload from `ip` with `fields` in order, then `filedata`.
fn upload_from(
    c: &Ctx,
    ip: &str,
    format: &str,
    fields: &[(&str, &str)],
    file: Option<&[u8]>,
) -> Answer {
    use reqwest::blocking::multipart::{Form, Part};
    let mut form = Form::new();
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    if let Some(bytes) = file {
        form = form.part("filedata", Part::bytes(bytes.to_vec()).file_name("upload"));
    }
    Answer::from_reqwest(
        client_from(ip)
            .post(format!("{}/sign/{format}", c.s.url))
            .multipart(form)
            .send()
            .unwrap(),
    )
}

/// A correct upload of `body` (with its sha256) from 127.0.0.1.
fn upload(c: &Ctx, format: &str, body: &[u8]) -> Answer {
    upload_from(
        c,
        "127.0.0.1",
        format,
        &[
            ("token", &c.token),
            ("nonce", ""),
            ("filename", "a.bin"),
            ("sha256", &sha256_hex(body)),
        ],
        Some(body),
    )
}

/// An upload of `body` whose only hash field, `sha256 = after`, follows
/// `filedata` (a client that hashes while it sends).
fn upload_trailing(c: &Ctx, body: &[u8], after: &str) -> Answer {
    use reqwest::blocking::multipart::{Form, Part};
    let form = Form::new()
        .text("token", c.token.clone())
        .text("filename", "a.bin")
        .part("filedata", Part::bytes(body.to_vec()).file_name("upload"))
        .text("sha256", after.to_string());
    Answer::from_reqwest(
        c.s.client()
            .post(format!("{}/sign/gpg", c.s.url))
            .multipart(form)
            .send()
            .unwrap(),
    )
}

fn upload_with_token(c: &Ctx, ip: &str, token: &str) -> Answer {
    let body = data(100, 20);
    upload_from(
        c,
        ip,
        "gpg",
        &[
            ("token", token),
            ("filename", "a.bin"),
            ("sha256", &sha256_hex(&body)),
        ],
        Some(&body),
    )
}

/// An upload of `size` bytes with curl, which reads an early answer while
/// still sending; `chunked` leaves out the Content-Length. A 413 sent while
/// the client is still sending is followed by a close with unread data, and
/// the kernel's reset can overtake the answer (PROTOCOL.md says a client may
/// see only the reset): "no answer" (curl's 000, or the 100 Continue alone)
/// is tried again, at most three times; any other answer counts.
fn curl_upload(c: &Ctx, format: &str, size: usize, chunked: bool) -> Answer {
    let mut last = Answer::default();
    for attempt in 0..3 {
        last = curl_upload_once(c, format, size, chunked);
        if last.status != 0 && last.status != 100 {
            break;
        }
        eprintln!(
            "curl_upload: attempt {attempt} saw no answer (status {}); again",
            last.status
        );
    }
    last
}

fn curl_upload_once(c: &Ctx, format: &str, size: usize, chunked: bool) -> Answer {
    let body = data(size, 21);
    let file = c.dir.path().join(format!("upload-{size}-{chunked}"));
    std::fs::write(&file, &body).unwrap();
    let (headers, out) = (
        c.dir.path().join("curl-headers"),
        c.dir.path().join("curl-body"),
    );
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
    .arg(&out);
    cmd.arg("--cacert").arg(certs().join("ca.pem"));
    if chunked {
        cmd.args(["-H", "Transfer-Encoding: chunked"]);
    }
    cmd.args([
        "-F",
        &format!("token={}", c.token),
        "-F",
        "filename=big.bin",
        "-F",
        &format!("sha256={}", sha256_hex(&body)),
    ]);
    cmd.arg("-F")
        .arg(format!("filedata=@{}", file.display()))
        .arg(format!("{}/sign/{format}", c.s.url));
    let (_, code) = run(&mut cmd);
    let status = code.trim().parse().unwrap_or(0);
    Answer {
        status,
        headers: parse_head(&std::fs::read_to_string(&headers).unwrap_or_default()),
        body: std::fs::read_to_string(&out).unwrap_or_default(),
    }
}

/// The header lines of the last response head in `text` (after any `100 Continue`).
fn parse_head(text: &str) -> Vec<(String, String)> {
    let last = text.rsplit("HTTP/").next().unwrap_or("");
    last.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

/// `GET /health` with the extra header lines `extra`, written in pieces
/// while reading: the server may answer (and close) before it is all sent.
/// Returns the status (0 = closed without an answer); panics if the server
/// neither answers nor closes within 25 s.
fn raw_head(s: &Server, extra: &str) -> Answer {
    let mut tls = raw_tls(s);
    let request = format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n");
    for piece in request.as_bytes().chunks(16 * 1024) {
        if tls.write_all(piece).and_then(|_| tls.flush()).is_err() {
            break;
        }
    }
    read_answer(tls)
}

/// `POST /sign/gpg` by hand: a head announcing `len` bytes of a form whose
/// boundary is `B`, then `prefix` of it, then silence until the answer.
fn raw_upload(s: &Server, prefix: &[u8], len: usize) -> Answer {
    let mut tls = raw_tls(s);
    let head = format!(
        "POST /sign/gpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {len}\r\n\r\n"
    );
    let _ = tls
        .write_all(head.as_bytes())
        .and_then(|_| tls.write_all(prefix))
        .and_then(|_| tls.flush());
    read_answer(tls)
}

/// Reads what the server answers, until it closes (or 25 s pass).
fn read_answer(
    mut tls: rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
) -> Answer {
    let started = Instant::now();
    // Read through the connection itself, not the stream: after a failed
    // write, the stream would first retry the unsent bytes and report that
    // error instead of what the server said before it closed.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    'socket: while let Ok(n) = tls.conn.read_tls(&mut tls.sock) {
        if n == 0 || tls.conn.process_new_packets().is_err() {
            break;
        }
        loop {
            match tls.conn.reader().read(&mut buf) {
                Ok(0) => break 'socket,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => break 'socket,
            }
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the server held an oversized request open"
    );
    let text = String::from_utf8_lossy(&got).to_string();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    Answer {
        status,
        headers: parse_head(head),
        body: body.to_string(),
    }
}

/// A GET while the job is queued: with `concurrency = 1` and `long_poll = 0`,
/// an 8 MiB upload behind a 24 MiB one (format gpg-slow) is pending while both are signed.
/// Tried up to three times, in case the machine was faster than the GET.
fn pending(c: &Ctx) -> Answer {
    let mut last = Answer::default();
    for attempt in 0..3u64 {
        let big = data(24 << 20, 30 + attempt);
        assert_eq!(upload(c, "gpg-slow", &big).status, 202);
        let second = data(8 << 20, 40 + attempt);
        assert_eq!(upload(c, "gpg-slow", &second).status, 202);
        last = get_from(
            c,
            "127.0.0.1",
            &format!("/sign/gpg-slow/{}", sha256_hex(&second)),
        );
        if last.status != 200 {
            return last;
        }
        eprintln!("pending: attempt {attempt} was signed before the GET; again");
    }
    last
}

/// A GET held (long poll) while the job fails on the server's side: an
/// 8 MiB upload of format `broken`, queued behind a 24 MiB one
/// (`concurrency = 1`), is pending when the GET arrives and fails once
/// signed. Tried up to three times, in case the machine was faster than the GET.
fn store_fails(c: &Ctx) -> Answer {
    let mut last = Answer::default();
    for attempt in 0..3u64 {
        let big = data(24 << 20, 50 + attempt);
        assert_eq!(upload(c, "gpg-slow", &big).status, 202);
        let doomed = data(8 << 20, 60 + attempt);
        assert_eq!(upload(c, "broken", &doomed).status, 202);
        last = get_from(
            c,
            "127.0.0.1",
            &format!("/sign/broken/{}", sha256_hex(&doomed)),
        );
        if last.status == 500 {
            return last;
        }
        eprintln!("store_fails: attempt {attempt} failed before the GET ({last:?}); again");
    }
    last
}

// --- servers ---

/// A gpg format signing with SHA-512: its signer reads the stored upload
/// again (it cannot sign from the server's SHA-256 state), so a large upload
/// keeps the single signing thread busy for a while.
fn slow_gpg(name: &str) -> String {
    ServerOpts::default()
        .formats
        .replace("[format:gpg]", &format!("[format:{name}]"))
        + "digest = sha512\n"
}

/// gpg (64M), gpg-small (the same key, 1M), gpg-slow (the same key,
/// SHA-512), mar; peers 127.0.0.1 and
/// .2 allowed, only .1 may mint; GETs never wait (so `X-Pending` shows).
fn main_opts() -> ServerOpts {
    let mut o = signing_tests::mar::opts("");
    let gpg = ServerOpts::default().formats;
    let mar_only = o
        .formats
        .split("[format:mar_sha384]")
        .next()
        .unwrap()
        .to_string();
    o.formats = format!(
        "{gpg}digest_signing = yes\n\n{}max_filesize = 1M\n\n{}\n{mar_only}",
        gpg.replace("[format:gpg]", "[format:gpg-small]"),
        slow_gpg("gpg-slow")
    );
    o.stdin = format!("{pw}\n{pw}\n", pw = passphrase());
    o.server_extra = "long_poll = 0\nconcurrency = 1\nform_timeout = 3\n".into();
    // 127.0.0.4 may only mint: it passes the door at accept (it is in a
    // list) and meets the 403 of allowed_ips; 127.0.0.3 is in no list.
    o.security = o
        .security
        .replace(
            "new_token_allowed_ips = 127.0.0.1",
            "new_token_allowed_ips = 127.0.0.1, 127.0.0.4",
        )
        .replace(
            "allowed_ips = 127.0.0.0/8",
            "allowed_ips = 127.0.0.1/32, 127.0.0.2/32",
        )
        .replace(
            "allowed_filenames = .+",
            r"allowed_filenames = [A-Za-z0-9._-]+\.bin",
        );
    // A second minting user, limited to gpg tokens.
    o.security += "new_token_auth1 = limited:limited-password\nnew_token_formats.limited = gpg\n";
    policy_rows::add_to(&mut o);
    o
}

/// A stalled upload holding a queue place, and what lets it go on.
type Held = (std::thread::JoinHandle<u16>, Gate);

/// A server in `setup`'s state, with whatever holds it there.
fn start(setup: Setup) -> (Ctx, Option<Held>, Option<Mount>) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ServerOpts::default();
    let mut mount = None;
    match setup {
        Setup::Main => opts = main_opts(),
        Setup::Draining => opts.server_extra.push_str("drain_grace = 8\n"),
        Setup::QueueFull => {
            // Its place held by a stalled upload for as long as the cases take.
            opts.server_extra
                .push_str("max_queue = 1\nmin_upload_rate = 0\n");
            opts.formats.push_str("digest_signing = yes\n");
        }
        // gpg with SHA-256 signs from the hash state and never writes the
        // upload to disk; SHA-512 makes it store the upload, as other types do.
        Setup::DiskFull => opts.formats = slow_gpg("gpg"),
        Setup::StoreFails => {
            opts.formats = format!("{}\n{}", slow_gpg("gpg-slow"), slow_gpg("broken"));
            opts.server_extra = "long_poll = 60\nconcurrency = 1\n".into();
        }
        // The token's format and PIN are set below, with the SoftHSM2 store.
        Setup::TokenGone => {}
    }
    let server_dir = tempfile::tempdir().unwrap();
    if setup == Setup::DiskFull {
        let work = server_dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let (ok, out) = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
            .arg(&work));
        assert!(ok, "mount tmpfs: {out}");
        mount = Some(Mount(work));
    }
    let hsm = (setup == Setup::TokenGone).then(|| {
        use signing_tests::pkcs11::{gpg_rsa_key_as_pem, uri, SoftHsm, PIN};
        let hsm = SoftHsm::new();
        hsm.init_token("release");
        let pem = hsm.dir.path().join("gpg.p8");
        gpg_rsa_key_as_pem(&pem);
        hsm.import_plain("release", &pem, "gpg", "01");
        opts.formats = format!(
            "[format:gpg]\ntype = gpg\nkey = {}\npublic_key = {}\ndigest_signing = yes\n",
            uri("release", "gpg"),
            certs().join("gpg-rsa/public.asc").display()
        );
        opts.stdin = format!("{PIN}\n");
        opts.env = hsm.env();
        hsm
    });
    let s = Server::start_in(server_dir, &opts);
    // Read at start-up: the TOTP secret file of the main server may go.
    let _ = std::fs::remove_file(policy_rows::otp_file());
    let token = s.mint("127.0.0.1", 600);
    if let Some(hsm) = &hsm {
        std::fs::rename(hsm.tokens(), hsm.dir.path().join("unplugged")).unwrap();
    }
    let c = Ctx {
        s,
        token,
        dir,
        _hsm: hsm,
    };
    let mut hold = None;
    match setup {
        Setup::Draining => {
            // A job that just ended: its client may still fetch it, so the
            // server drains for drain_grace instead of stopping at once.
            assert_eq!(upload(&c, "gpg", &data(1000, 90)).status, 202);
            c.s.signal("TERM");
            assert!(
                c.s.wait_log("draining", Duration::from_secs(10)),
                "{}",
                c.s.stderr()
            );
        }
        Setup::QueueFull => {
            use reqwest::blocking::multipart::{Form, Part};
            let body = data(1 << 20, 70);
            let (reader, gate) = GatedReader::new(body.clone(), 64 * 1024);
            let form = Form::new()
                .text("token", c.token.clone())
                .text("filename", "slow.bin")
                .text("sha256", sha256_hex(&body))
                .part("filedata", Part::reader(reader).file_name("slow.bin"));
            let (client, url) = (c.s.client(), format!("{}/sign/gpg", c.s.url));
            let t = std::thread::spawn(move || {
                client
                    .post(url)
                    .multipart(form)
                    .send()
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            });
            assert!(
                wait_until(Duration::from_secs(20), || {
                    c.s.metric("signing_queue_depth") == Some(1.0)
                }),
                "the stalled upload never took its place"
            );
            hold = Some((t, gate));
        }
        Setup::StoreFails => {
            std::fs::write(c.s.work_dir().join("results/broken"), b"not a directory").unwrap()
        }
        _ => {}
    }
    (c, hold, mount)
}

/// Unmounts a tmpfs when dropped.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Runs every case of `setup`; all failures are reported together.
fn run_setup(setup: Setup) {
    let cases: Vec<&Case> = all_cases().filter(|c| c.setup == setup).collect();
    assert!(!cases.is_empty());
    let (ctx, hold, mount) = start(setup);
    let mut failures = Vec::new();
    for case in &cases {
        let a = (case.request)(&ctx);
        let mut why = Vec::new();
        if a.status != case.status {
            why.push(format!("status {} (expected {})", a.status, case.status));
        }
        if !a.body.contains(case.body) {
            why.push(format!("body lacks {:?}", case.body));
        }
        for (name, value) in case.headers {
            match a.header(name) {
                Some(v) if v.contains(value) => {}
                other => why.push(format!(
                    "header {name}: {other:?} (expected one containing {value:?})"
                )),
            }
        }
        for name in case.absent {
            if a.header(name).is_some() {
                why.push(format!("header {name} must not be sent"));
            }
        }
        if !why.is_empty() {
            failures.push(format!("{}: {} — got {a:?}", case.name, why.join("; ")));
        }
    }
    // Whatever was refused, the server still serves.
    if setup == Setup::Main {
        let (ok, out) = gpg_sign_and_verify(&ctx.s, "gpg", &data(3000, 80));
        assert!(ok, "{out}");
    }
    if let Some((t, gate)) = hold {
        gate.open();
        let _ = t.join();
    }
    drop(ctx);
    drop(mount);
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn main_server_rows() {
    run_setup(Setup::Main);
}

#[test]
fn draining_rows() {
    run_setup(Setup::Draining);
}

#[test]
fn queue_full_rows() {
    run_setup(Setup::QueueFull);
}

#[test]
fn store_failure_rows() {
    run_setup(Setup::StoreFails);
}

#[test]
fn token_failure_rows() {
    run_setup(Setup::TokenGone);
}

#[test]
fn disk_full_rows() {
    require_root("mounts a small tmpfs as work_dir");
    run_setup(Setup::DiskFull);
}

/// Peak resident memory of a process, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn forty_oversized_heads_at_once_cost_bounded_memory() {
    let s = Server::start(&ServerOpts::default());
    let before = peak_rss_kib(s.pid());
    // 40 clients at once, each sending a 4 MiB header: 160 MiB offered.
    let header = std::sync::Arc::new(format!("X-Big: {}\r\n", "a".repeat(4 << 20)));
    let answers: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..40)
            .map(|_| scope.spawn(|| raw_head(&s, &header).status))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Each is refused (431, or closed before the answer could be read), none is served.
    assert!(
        answers.iter().all(|&st| st == 431 || st == 0),
        "{answers:?}"
    );
    assert!(answers.contains(&431), "{answers:?}");
    // hyper buffers at most 408 KiB per connection (16 MiB for 40); allow for allocator slack.
    let grown = peak_rss_kib(s.pid()).saturating_sub(before);
    eprintln!("peak RSS {before} KiB, +{grown} KiB; answers {answers:?}");
    assert!(
        grown < 48 * 1024,
        "peak RSS grew by {grown} KiB for 160 MiB of headers offered"
    );
    // And the server goes on serving.
    let token = s.mint("127.0.0.1", 60);
    let body = data(3000, 90);
    assert_eq!(
        Upload::new(&token, "after.bin", &body)
            .send(&s.client(), &s.url, "gpg")
            .0,
        202
    );
    assert_eq!(fetch(&s.client(), &s.url, "gpg", &sha256_hex(&body)).0, 200);
}

// --- the document ---

/// One documented refusal: its status and the whole line it is on.
#[derive(Debug)]
struct DocRow {
    status: u16,
    line: String,
}

/// The rows of PROTOCOL.md's error tables (POST /token, POST /sign/FORMAT,
/// GET /sign/FORMAT/HASH) and the statuses promised in its Transport bullets.
fn documented_rows(text: &str) -> Vec<DocRow> {
    // Logical lines: a bullet's indented continuation lines belong to it.
    let mut lines: Vec<String> = Vec::new();
    for line in text.lines() {
        match lines.last_mut() {
            Some(last) if line.starts_with("  ") && last.starts_with("- ") => {
                last.push(' ');
                last.push_str(line.trim());
            }
            _ => lines.push(line.to_string()),
        }
    }
    let mut rows = Vec::new();
    let mut heading = String::new();
    for line in lines {
        if line.starts_with('#') {
            heading = line;
            continue;
        }
        let in_table = [
            "`POST /token`",
            "`POST /token/approve`",
            "`POST /sign/FORMAT`",
            "`GET /sign/FORMAT/HASH`",
            "`POST /digest/FORMAT`",
        ]
        .iter()
        .any(|h| heading.contains(h))
            && line.starts_with('|');
        let in_transport = heading == "## Transport" && line.starts_with("- ");
        if !(in_table || in_transport) {
            continue;
        }
        // The first `NNN` on the line is the status it documents.
        let status = line.split('`').skip(1).step_by(2).find_map(|code| {
            if code.len() == 3 {
                code.parse::<u16>().ok()
            } else {
                None
            }
        });
        if let Some(status) = status {
            rows.push(DocRow { status, line });
        }
    }
    rows
}

fn protocol_md() -> String {
    std::fs::read_to_string(repo().join("docs/PROTOCOL.md")).expect("docs/PROTOCOL.md")
}

#[test]
fn every_documented_row_has_a_case() {
    let rows = documented_rows(&protocol_md());
    // The four tables have 6 + 14 + 7 + 13 rows; the Transport bullets 2 statuses.
    assert!(
        rows.len() >= 37,
        "the parser found too few rows ({}): has PROTOCOL.md's layout changed?\n{rows:#?}",
        rows.len()
    );
    let mut missing = Vec::new();
    for row in &rows {
        if !all_cases().any(|c| c.status == row.status && row.line.contains(c.doc)) {
            missing.push(format!("{} {}", row.status, row.line));
        }
    }
    assert!(
        missing.is_empty(),
        "documented in PROTOCOL.md but not tested here:\n{}",
        missing.join("\n")
    );
    // And no case claims a row the document does not have.
    for c in all_cases() {
        let matching: Vec<&DocRow> = rows.iter().filter(|r| r.line.contains(c.doc)).collect();
        assert_eq!(
            matching.len(),
            1,
            "case {:?}: its phrase {:?} must name exactly one documented row: {matching:#?}",
            c.name,
            c.doc
        );
        assert_eq!(
            matching[0].status, c.status,
            "case {:?}: status differs from the documented row {:?}",
            c.name, matching[0].line
        );
    }
}

#[test]
fn the_doc_parser_notices_a_new_row() {
    let mut text = protocol_md();
    let anchor = "| `400` | HASH is not 40 or 64 hex digits |";
    assert!(
        text.contains(anchor),
        "PROTOCOL.md changed: update this test's anchor"
    );
    text = text.replace(
        anchor,
        &format!("{anchor}\n| `410` | the result was deleted on purpose |"),
    );
    let rows = documented_rows(&text);
    let new = rows
        .iter()
        .find(|r| r.status == 410)
        .expect("the parser missed an added row");
    assert!(
        !CASES
            .iter()
            .any(|c| c.status == new.status && new.line.contains(c.doc)),
        "a made-up row must have no case"
    );
}
