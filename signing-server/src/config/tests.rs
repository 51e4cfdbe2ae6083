use super::*;

fn certs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs")
}

/// A valid config whose paths point at the test certs, with `extra`
/// appended to the [security] section.
fn config_text(extra_security: &str) -> String {
    let c = certs();
    format!(
        "[server]\nport = 0\ntls_cert = {c}/server-chain.pem\ntls_key = {c}/server.key\nwork_dir = /tmp/x\n\n\
         [security]\nallowed_ips = 127.0.0.1/32, ::1\ntoken_secret = 0123456789abcdef0123\n{extra_security}\n\n\
         [format:gpg]\ntype = gpg\nkey = {c}/gpg/secret.asc\n",
        c = c.display()
    )
}

fn check_err(text: &str, line: usize, needle: &str) {
    let err = parse(Path::new("t.ini"), text).expect_err("config should be refused");
    assert_eq!(err.line, Some(line), "{err}");
    assert!(
        err.to_string().starts_with(&format!("t.ini:{line}: ")),
        "{err}"
    );
    assert!(
        err.message.contains(needle),
        "{err} should mention {needle}"
    );
}

#[test]
fn valid_config_parses_with_defaults() {
    let cfg = parse(Path::new("t.ini"), &config_text("")).expect("valid");
    assert_eq!(cfg.server.max_file_age, Duration::from_secs(300));
    assert_eq!(cfg.server.max_queue, 64);
    assert_eq!(cfg.security.max_token_age, 3600);
    assert_eq!(cfg.security.min_filesize, 10);
    assert_eq!(cfg.security.allowed_ips.len(), 2);
    assert_eq!(cfg.formats.len(), 1);
    assert_eq!(cfg.formats[0].signer.name, "gpg");
}

#[test]
fn errors_name_file_and_line() {
    // [security] starts on line 7 of config_text; its extra lines follow line 9.
    check_err(&config_text("allowed_filenames = ("), 10, "bad regex");
    check_err(
        &config_text("new_token_allowed_ips = 10.0.0.0/33"),
        10,
        "not an IP address or CIDR",
    );
    check_err(&config_text("colour = blue"), 10, "unknown key `colour`");
    check_err(&config_text("token_secret1 = short"), 10, "too short");
    check_err(&config_text("max_filesize = lots"), 10, "not a size");
}

#[test]
fn a_log_level_the_filter_parser_would_panic_on_is_refused() {
    // formats/fuzz/seeds/config/level-non-ascii.ini
    for level in ["info, :w\u{38d}=;", "d\u{e9}bug", "info,[span{x}]=debug"] {
        let text = format!("{}\n[logging]\nlevel = {level}\n", config_text(""));
        let line = text.lines().count();
        check_err(&text, line, "is not a log level");
    }
    let text = format!(
        "{}\n[logging]\nlevel = info,signing_server=debug,h2::codec=warn\n",
        config_text("")
    );
    let cfg = parse(Path::new("t.ini"), &text).expect("valid");
    assert_eq!(
        cfg.logging.level,
        "info,signing_server=debug,h2::codec=warn"
    );
}

#[test]
fn missing_key_file_is_reported_on_its_line() {
    let text = config_text("").replace("gpg/secret.asc", "gpg/nope.asc");
    let err = parse(Path::new("t.ini"), &text).expect_err("missing file");
    assert!(err.message.contains("not found"), "{err}");
    assert_eq!(err.line, Some(14));
}

#[test]
fn lists_keep_commas_inside_braces() {
    assert_eq!(
        split_list(r"a{1,3}\.exe, b.*,c"),
        vec![r"a{1,3}\.exe", "b.*", "c"]
    );
    assert_eq!(split_list("x\ny, z"), vec!["x", "y", "z"]);
}

#[test]
fn sizes() {
    assert_eq!(parse_size("10"), Some(10));
    assert_eq!(parse_size("2K"), Some(2048));
    assert_eq!(parse_size("5M"), Some(5 << 20));
    assert_eq!(parse_size("1G"), Some(1 << 30));
    assert_eq!(parse_size("x"), None);
    assert_eq!(parse_size("99999999999G"), None);
}

#[test]
fn filename_regexes_match_whole_names() {
    let cfg = parse(
        Path::new("t.ini"),
        &config_text(r"allowed_filenames = .*\.exe, (setup){1,2}\.zip"),
    )
    .expect("valid");
    let ok = |n: &str| {
        cfg.security
            .allowed_filenames
            .iter()
            .any(|re| re.is_match(n))
    };
    assert!(ok("a.exe"));
    assert!(ok("setupsetup.zip"));
    assert!(!ok("a.exe.txt"));
    assert!(!ok("setup.zip.exe.x"));
}

/// config_text("") with `extra` in [security] and `format_extra` after the gpg
/// format's lines (the format's section starts on line 12 when `extra` is one line).
fn policy_text(extra: &str, format_extra: &str) -> String {
    format!("{}{format_extra}\n", config_text(extra))
}

#[test]
fn policy_settings_are_read_and_checked() {
    let users = "new_token_auth = a:pw1\nnew_token_auth1 = b:pw2";
    // Defaults: one person, no rate.
    let cfg = parse(Path::new("t.ini"), &policy_text(users, "")).expect("valid");
    assert_eq!((cfg.formats[0].approvals, cfg.formats[0].rate), (1, None));
    assert!(cfg.security.approvers.is_empty() && cfg.security.new_token_totp.is_empty());
    let both = format!("{users}\nnew_token_approvers.gpg = b");
    let cfg = parse(
        Path::new("t.ini"),
        &policy_text(&both, "approvals = 2\nmax_rate = 2.5"),
    )
    .expect("valid");
    assert_eq!(cfg.security.approvers["gpg"], vec!["b".to_string()]);
    let rate = cfg.formats[0].rate.expect("a rate");
    assert_eq!(
        (rate.per_second, rate.burst),
        (2.5, 3),
        "burst defaults to max_rate"
    );
    // The extra [security] line is line 12; the format section starts on line 14.
    let text = |sec: &str, fmt: &str| {
        let sec = if sec.is_empty() {
            "min_filesize = 10"
        } else {
            sec
        };
        policy_text(&format!("{users}\n{sec}"), fmt)
    };
    check_err(
        &text("", "approvals = 2"),
        14,
        "needs [security] new_token_approvers.gpg",
    );
    check_err(
        &text("new_token_approvers.gpg = b", ""),
        12,
        "does not need approval",
    );
    check_err(&text("new_token_approvers.nope = b", ""), 12, "no format");
    check_err(
        &text("new_token_approvers.gpg = zed", "approvals = 2"),
        12,
        "no new_token_auth entry",
    );
    check_err(&text("", "approvals = 3"), 17, "1 (the default) or 2");
    check_err(&text("", "burst = 4"), 17, "only with max_rate");
    check_err(&text("", "max_rate = 0"), 17, "positive");
    check_err(
        &text("new_token_totp.zed = x", ""),
        12,
        "no new_token_auth entry",
    );
    check_err(
        &text("new_token_totp.a = no-such-file", ""),
        12,
        "not found",
    );
}

#[test]
fn a_totp_secret_file_must_be_private_and_long_enough() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.totp");
    let text = format!(
        "{}\n",
        config_text(&format!(
            "new_token_auth = a:pw\nnew_token_totp.a = {}",
            file.display()
        ))
    );
    let mode =
        |m: u32| std::fs::set_permissions(&file, std::fs::Permissions::from_mode(m)).unwrap();
    std::fs::write(&file, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n").unwrap();
    mode(0o644);
    check_err(&text, 11, "open to group or others (mode 644)");
    mode(0o600);
    let cfg = parse(Path::new("t.ini"), &text).expect("valid");
    assert!(cfg.security.new_token_totp.contains_key("a"));
    std::fs::write(&file, "JBSWY3DPEHPK3PXP\n").unwrap();
    check_err(&text, 11, "at least 16");
    std::fs::write(&file, "not base32!\n").unwrap();
    check_err(&text, 11, "not a base32 secret");
}

#[test]
fn log_section() {
    let c = certs();
    let base = config_text("");
    assert!(parse(Path::new("t.ini"), &base).unwrap().log.is_none());
    // Line numbers: config_text has 14 lines, the blank line and [log] come next.
    let key = c.join("gpg/secret.asc").display().to_string();
    let ok = format!("{base}\n[log]\nkey = {key}\norigin = s.example/log\ndir = /tmp/l\n");
    let log = parse(Path::new("t.ini"), &ok).unwrap().log.unwrap();
    assert_eq!(log.origin, "s.example/log");
    assert_eq!(log.checkpoint_interval, DEFAULT_CHECKPOINT_INTERVAL);
    let n = base.lines().count();
    check_err(
        &format!("{base}\n[log]\nkey = pkcs11:token=t;object=k\n"),
        n + 3,
        "PKCS#11",
    );
    check_err(
        &format!("{base}\n[log]\nkey = {key}\norigin = a b\n"),
        n + 4,
        "without spaces",
    );
    check_err(
        &format!("{base}\n[log]\nkey = {key}\norigin = o\ndir = /tmp/l\ncheckpoint_interval = 0\n"),
        n + 6,
        "between 1 and 60000",
    );
    check_err(
        &format!("{base}\n[log]\nkey = {key}\ndir = /tmp/l\n"),
        n + 2,
        "`origin`",
    );
    check_err(&format!("{base}\n[log]\nsize = 1\n"), n + 3, "unknown key");
}
