//! The rows of PROTOCOL.md for who may sign what (issue 28): the one-time
//! code at `POST /token`, the `POST /token/approve` table, the two-person
//! rule at upload and `/digest`, and a format's rate at `/digest`. The shared
//! server has `release` (approvals = 2, approver bob), `gpg-rated` (one
//! signature, then 0.01 a second) and `otpuser`, who has a TOTP secret.

use signing_tests::digest::sha256_parts;
use signing_tests::*;

use super::{Answer, Case, Ctx, Setup, NONE, RETRY};

/// The TOTP secret file of `otpuser` (read at start-up, removed after it).
pub(super) fn otp_file() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("protocol-errors-{}.totp", std::process::id()))
}

/// What [`super::main_opts`] adds: users, approvers, formats.
pub(super) fn add_to(o: &mut ServerOpts) {
    let secret = signing_tests::policy::totp_secret(7);
    let name = format!("protocol-errors-{}", std::process::id());
    let written = signing_tests::policy::totp_file(&std::env::temp_dir(), &name, &secret);
    assert_eq!(written, otp_file());
    o.security += &format!(
        "new_token_auth2 = bob:bob-password\nnew_token_auth3 = otpuser:otp-password\n\
         new_token_totp.otpuser = {}\nnew_token_approvers.release = bob\n",
        otp_file().display()
    );
    let key = certs().join("gpg/secret.asc");
    o.formats += &format!(
        "\n[format:release]\ntype = gpg\nkey = {k}\napprovals = 2\ndigest_signing = yes\n\n\
         [format:gpg-rated]\ntype = gpg\nkey = {k}\ndigest_signing = yes\nmax_rate = 0.01\nburst = 1\n",
        k = key.display()
    );
}

pub(super) const CASES: &[Case] = &[
    Case {
        name: "minting without the one-time code",
        doc: "for a user with a TOTP secret",
        setup: Setup::Main,
        request: |c| {
            post(
                c,
                "/token",
                "otpuser",
                "otp-password",
                "slave_ip=127.0.0.1&duration=60",
            )
        },
        status: 401,
        body: "one-time code",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "approving an altered request",
        doc: "carries a MAC this server's",
        setup: Setup::Main,
        request: |c| {
            let altered = request(c).replace("duration=60", "duration=600");
            approve(c, "bob", "bob-password", &altered)
        },
        status: 400,
        body: "altered",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "approving an expired request",
        doc: "the request has not expired",
        setup: Setup::Main,
        request: |c| {
            let expired = signing_server::approval::issue(
                &secrecy::SecretString::from(SECRET.to_string()),
                &signing_server::approval::Request {
                    ip: "127.0.0.1".parse().unwrap(),
                    duration: 60,
                    formats: vec!["release".into()],
                    requester: MINT_USER.into(),
                    second_factor: false,
                    expires: now() - 1,
                },
            );
            approve(c, "bob", "bob-password", &expired)
        },
        status: 400,
        body: "expired",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "approving one's own request",
        doc: "another user than the requester",
        setup: Setup::Main,
        request: |c| approve(c, MINT_USER, MINT_PASSWORD, &request(c)),
        status: 403,
        body: "another person must approve",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "approving as a user not listed",
        doc: "is listed in `new_token_approvers.FORMAT`",
        setup: Setup::Main,
        request: |c| approve(c, "limited", "limited-password", &request(c)),
        status: 403,
        body: "may not approve",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "upload to a two-person format with an unapproved token",
        doc: "the token was not approved by a second person",
        setup: Setup::Main,
        request: |c| super::upload(c, "release", &data(100, 23)),
        status: 403,
        body: "second person approved",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "digest: a two-person format with an unapproved token",
        doc: "the token is scoped to other formats, or FORMAT has",
        setup: Setup::Main,
        request: |c| digest(c, "release"),
        status: 403,
        body: "second person approved",
        headers: NONE,
        absent: &[],
    },
    Case {
        name: "digest: beyond the format's max_rate",
        doc: "`max_rate` is used up on this server",
        setup: Setup::Main,
        request: |c| {
            // The burst of one, then the rate (one a hundred seconds).
            let first = digest(c, "gpg-rated");
            assert_eq!(first.status, 200, "{first:?}");
            digest(c, "gpg-rated")
        },
        status: 429,
        body: "max_rate",
        headers: RETRY,
        absent: &[],
    },
];

fn post(c: &Ctx, path: &str, user: &str, password: &str, form: &str) -> Answer {
    Answer::from_reqwest(
        c.s.client()
            .post(format!("{}{path}", c.s.url))
            .basic_auth(user, Some(password))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_string())
            .send()
            .unwrap(),
    )
}

/// The request text of a `release` token asked for by the minting user.
fn request(c: &Ctx) -> String {
    let a = post(
        c,
        "/token",
        MINT_USER,
        MINT_PASSWORD,
        "slave_ip=127.0.0.1&duration=60&formats=release",
    );
    assert_eq!(a.status, 202, "{a:?}");
    a.body
}

fn approve(c: &Ctx, user: &str, password: &str, request: &str) -> Answer {
    Answer::from_reqwest(
        c.s.client()
            .post(format!("{}/token/approve", c.s.url))
            .basic_auth(user, Some(password))
            .form(&[("request", request)])
            .send()
            .unwrap(),
    )
}

/// A well-formed gpg digest request with the shared token.
fn digest(c: &Ctx, format: &str) -> Answer {
    let (words, length, tail) = sha256_parts(&data(100, 24));
    Answer::from_reqwest(
        c.s.client()
            .post(format!("{}/digest/{format}", c.s.url))
            .form(&[
                ("token", c.token.as_str()),
                ("filename", "a.bin"),
                ("sha256_state", &words),
                ("length", &length),
                ("tail", &tail),
            ])
            .send()
            .unwrap(),
    )
}
