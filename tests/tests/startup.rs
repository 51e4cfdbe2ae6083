//! Start-up: config errors (exit 2, file:line), passphrases (exit 1, naming the format).

use signing_tests::*;

#[test]
fn wrong_passphrase_exits_1_naming_the_format() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ServerOpts::default();
    opts.formats = opts.formats.replace("[format:gpg]", "[format:release-gpg]");
    let cfg = write_config(dir.path(), &opts);
    let (status, out) = run_server_to_end(&[cfg.as_os_str()], "not-the-passphrase\n");
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("format release-gpg"), "{out}");
    assert!(out.contains("wrong passphrase"), "{out}");
    assert!(
        !out.contains("not-the-passphrase"),
        "the passphrase was echoed: {out}"
    );
    assert!(
        !out.contains("listening on"),
        "it must not bind before the keys are unlocked: {out}"
    );
}

#[test]
fn missing_passphrase_line_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &ServerOpts::default());
    let (status, out) = run_server_to_end(&[cfg.as_os_str()], "");
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains("format gpg") && out.contains("no passphrase"),
        "{out}"
    );
}

#[test]
fn a_key_shared_by_two_formats_is_asked_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ServerOpts::default();
    let second = opts.formats.replace("[format:gpg]", "[format:gpg-nightly]");
    opts.formats.push('\n');
    opts.formats.push_str(&second);
    let cfg = write_config(dir.path(), &opts);
    let (status, out) = run_server_to_end(&["--check".as_ref(), cfg.as_os_str()], &opts.stdin);
    assert!(
        status.success(),
        "one passphrase line must do for both formats: {out}"
    );
    assert!(out.contains("2 key(s) OK"), "{out}");
}

#[test]
fn config_errors_exit_2_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &str); 4] = [
        (
            "allowed_ips = 127.0.0.0/8",
            "allowed_ips = 127.0.0.0/99",
            "not an IP address or CIDR",
        ),
        (
            "allowed_filenames = .+",
            "allowed_filenames = (unclosed",
            "bad regex",
        ),
        (
            "max_token_age = 600",
            "max_token_age = 600\nfavourite_colour = blue",
            "unknown key `favourite_colour`",
        ),
        ("secret.asc", "no-such-key.asc", "not found"),
    ];
    for (from, to, expect) in cases {
        let opts = ServerOpts::default();
        let cfg = write_config(dir.path(), &opts);
        let text = std::fs::read_to_string(&cfg).unwrap().replacen(from, to, 1);
        std::fs::write(&cfg, &text).unwrap();
        let line = text
            .lines()
            .position(|l| l.contains(to.lines().last().unwrap()))
            .unwrap()
            + 1;
        let (status, out) = run_server_to_end(&[cfg.as_os_str()], &opts.stdin);
        assert_eq!(status.code(), Some(2), "{expect}: {out}");
        let loc = format!("{}:{line}: ", cfg.display());
        assert!(out.contains(&loc), "{expect}: expected {loc:?} in {out}");
        assert!(out.contains(expect), "{expect}: {out}");
    }
}

/// A `[logging]` level the fuzzer found (formats/fuzz/seeds/config/level-non-ascii.ini):
/// tracing-subscriber's filter parser panicked on it ("end byte index 4 is not a char
/// boundary") and `--check` exited 101 with a backtrace. Now: exit 2 with `file:line:`.
#[test]
fn a_log_level_that_crashed_the_filter_parser_exits_2_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ServerOpts::default();
    let cfg = write_config(dir.path(), &opts);
    let bad = "level = info, :w\u{38d}=;";
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replacen("level = debug", bad, 1);
    std::fs::write(&cfg, &text).unwrap();
    let line = text.lines().position(|l| l == bad).expect("the level line") + 1;
    let (status, out) = run_server_to_end(&["--check".as_ref(), cfg.as_os_str()], &opts.stdin);
    assert_eq!(status.code(), Some(2), "{out}");
    let loc = format!("{}:{line}: ", cfg.display());
    assert!(out.contains(&loc), "expected {loc:?} in {out}");
    assert!(out.contains("is not a log level"), "{out}");
    assert!(!out.contains("panicked"), "{out}");
}

#[test]
fn settings_a_signer_type_refuses_exit_2_naming_the_format() {
    // Parsed fine, but refused by the signer when it opens: still a config error (exit 2),
    // told apart from a bad key or passphrase (exit 1).
    let dir = tempfile::tempdir().unwrap();
    let cert = format!("cert = {}\n", certs().join("server-chain.pem").display());
    for (extra, expect) in [
        (cert.as_str(), "cert"),
        ("digest = md5\n", "md5"),
        ("timestamp_urls = http://127.0.0.1:9/\n", "timestamp_urls"),
    ] {
        let mut opts = ServerOpts::default();
        opts.formats.push_str(extra);
        let cfg = write_config(dir.path(), &opts);
        let (status, out) = run_server_to_end(&[cfg.as_os_str()], &opts.stdin);
        assert_eq!(status.code(), Some(2), "{extra}: {out}");
        assert!(
            out.contains("format gpg") && out.contains(expect),
            "{extra}: {out}"
        );
        assert!(!out.contains("listening on"), "{out}");
    }
}

#[test]
fn check_mode_validates_without_serving() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &ServerOpts::default());
    let (status, out) = run_server_to_end(
        &["--check".as_ref(), cfg.as_os_str()],
        &format!("{}\n", passphrase()),
    );
    assert!(status.success(), "{out}");
    assert!(!out.contains("listening on"), "{out}");
}

#[test]
fn the_server_is_not_dumpable() {
    let s = Server::start(&ServerOpts::default());
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).unwrap();
    // A non-dumpable process's /proc files belong to root and core dumps are off.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", s.pid())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert!(core.split_whitespace().nth(4) == Some("0"), "{core}");
    assert!(status.contains("State:"));
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", s.pid())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(&passphrase()));
    let environ = std::fs::read(format!("/proc/{}/environ", s.pid())).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&environ).contains(&passphrase()));
}

#[test]
fn systemd_ask_password_supplies_the_passphrases() {
    // A stand-in for systemd's prompt agent (no systemd runs here): it answers
    // with the passphrase and records how it was asked.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("asked");
    let script = dir.path().join("systemd-ask-password");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\ncat {}\n",
            log.display(),
            certs().join("PASSPHRASE").display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    let cfg = write_config(dir.path(), &ServerOpts::default());
    let out = std::process::Command::new(bin("signing-server"))
        .args(["--check", "--systemd-ask-password"])
        .arg(&cfg)
        .env(
            "PATH",
            format!(
                "{}:{}",
                dir.path().display(),
                std::env::var("PATH").unwrap()
            ),
        )
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let asked = std::fs::read_to_string(&log).unwrap();
    assert!(
        asked.contains("--id=signing-server:gpg") && asked.contains("gpg passphrase:"),
        "{asked}"
    );
    assert!(
        !asked.contains(&passphrase()),
        "the passphrase must not be passed to the helper"
    );
}

/// Every entry (file or directory) under `dir`, recursively.
fn entries_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        out.push(e.path());
        if e.path().is_dir() {
            out.extend(entries_under(&e.path()));
        }
    }
    out
}

#[test]
fn a_wrong_passphrase_leaves_nothing_behind_for_every_key_type() {
    let c = certs();
    let kinds = [
        (
            "gpg",
            format!("type = gpg\nkey = {}\n", c.join("gpg/secret.asc").display()),
        ),
        (
            "mar",
            format!(
                "type = mar\nkey = {}\ndigest = sha1\n",
                c.join("mar/sha1-2048.key").display()
            ),
        ),
        (
            "apk",
            format!(
                "type = apk\nkey = {}\ncert = {}\n",
                c.join("apk/rsa/key.pem").display(),
                c.join("apk/rsa/cert.pem").display()
            ),
        ),
        (
            "authenticode",
            format!(
                "type = authenticode\nkey = {}\ncert = {}\n",
                c.join("authenticode/rsa.key").display(),
                c.join("authenticode/rsa-chain.pem").display()
            ),
        ),
        (
            "apple",
            format!(
                "type = apple\nkey = {}\ncert = {}\n",
                c.join("apple/developer-id.key").display(),
                c.join("apple/chain.pem").display()
            ),
        ),
    ];
    for (kind, section) in kinds {
        let dir = tempfile::tempdir().unwrap();
        // A private TMPDIR and working directory (where a core file would land).
        let (tmp, cwd) = (dir.path().join("tmpdir"), dir.path().join("cwd"));
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::create_dir_all(&cwd).unwrap();
        let opts = ServerOpts {
            formats: format!("[format:release-{kind}]\n{section}"),
            ..ServerOpts::default()
        };
        let cfg = write_config(dir.path(), &opts);
        let wrong = format!("wrong-{kind}-passphrase-{}", std::process::id());
        let mut child = std::process::Command::new(bin("signing-server"))
            .arg(&cfg)
            .current_dir(&cwd)
            .env("TMPDIR", &tmp)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(format!("{wrong}\n").as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{kind}: {text}");
        assert!(
            text.contains(&format!("format release-{kind}")),
            "{kind}: the format is not named: {text}"
        );
        assert!(
            text.contains("wrong passphrase"),
            "{kind}: the message does not say what is wrong: {text}"
        );
        let key = section
            .lines()
            .find_map(|l| l.strip_prefix("key = "))
            .unwrap();
        assert!(
            text.contains(key),
            "{kind}: the key file is not named: {text}"
        );
        assert!(
            !text.contains(&wrong),
            "{kind}: the passphrase was echoed: {text}"
        );
        assert!(!text.contains("listening on"), "{kind}: {text}");
        // No input, result, probe or temp file in work_dir, nothing in TMPDIR, no core file.
        let work = dir.path().join("work");
        for sub in ["tmp", "inputs", "results"] {
            assert_eq!(
                entries_under(&work.join(sub)),
                Vec::<std::path::PathBuf>::new(),
                "{kind}: work_dir/{sub} not empty"
            );
        }
        assert_eq!(
            entries_under(&tmp),
            Vec::<std::path::PathBuf>::new(),
            "{kind}: left files in TMPDIR"
        );
        assert_eq!(
            entries_under(&cwd),
            Vec::<std::path::PathBuf>::new(),
            "{kind}: left files (a core?) in its working directory"
        );
        // And nothing in its own directory but what the test wrote and the empty store.
        for p in entries_under(dir.path()) {
            let rel = p
                .strip_prefix(dir.path())
                .unwrap()
                .to_string_lossy()
                .to_string();
            assert!(
                [
                    "signing.ini",
                    "tmpdir",
                    "cwd",
                    "work",
                    "work/tmp",
                    "work/inputs",
                    "work/results"
                ]
                .contains(&rel.as_str()),
                "{kind}: unexpected {rel}"
            );
        }
    }
}
