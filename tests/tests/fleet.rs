//! Running a fleet (issue 20): servers behind an L4 balancer speaking the
//! PROXY protocol, tokens scoped to formats, certificate expiry in /metrics
//! and at start-up.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use signing_tests::balancer::{connect_from, v1_header, v2_header, Balancer, Version, BALANCER_IP};
use signing_tests::signtool::{output, signtool_sign};
use signing_tests::*;

/// Servers that take PROXY headers from the balancer address; the clients
/// allowed are `allowed` (the harness itself checks /health from 127.0.0.1).
fn behind_balancer(allowed: &str) -> ServerOpts {
    let mut o = ServerOpts::default();
    o.server_extra += &format!("proxy_protocol_from = {BALANCER_IP}\n");
    o.security = o.security.replace(
        "allowed_ips = 127.0.0.0/8",
        &format!("allowed_ips = 127.0.0.1, {allowed}"),
    );
    o
}

fn addr(s: &Server) -> SocketAddr {
    s.url.trim_start_matches("https://").parse().unwrap()
}

/// `GET /health` over a connection from the balancer address that starts
/// with `header`: the status line, or None when the server closed it unanswered.
fn health_via(s: &Server, from: &str, header: &[u8]) -> Option<String> {
    let mut tcp = connect_from(addr(s), from);
    tcp.write_all(header).unwrap();
    let mut tls = tls_on(tcp);
    if tls
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return None;
    }
    let mut answer = String::new();
    let _ = tls.read_to_string(&mut answer);
    answer.lines().next().map(str::to_string)
}

#[test]
fn proxy_v1_and_v2_from_a_listed_balancer_are_judged_on_the_source_they_carry() {
    let s = Server::start(&behind_balancer("127.0.0.77"));
    let dst = addr(&s);
    let client: SocketAddr = "127.0.0.77:40000".parse().unwrap();
    let stranger: SocketAddr = "127.0.0.78:40000".parse().unwrap();
    for header in [v1_header(client, dst), v2_header(client, dst)] {
        let status = health_via(&s, BALANCER_IP, &header);
        assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"), "{}", s.stderr());
    }
    // 127.0.0.78 is in no allow-list: closed before TLS, whichever version.
    for header in [v1_header(stranger, dst), v2_header(stranger, dst)] {
        assert_eq!(health_via(&s, BALANCER_IP, &header), None);
    }
    // The log line is written as the connection is closed: wait for it (the
    // server's stderr reaches the test through a reader thread).
    assert!(
        s.wait_log(
            "client 127.0.0.78 (via balancer 127.0.0.10) is in no allow-list",
            std::time::Duration::from_secs(10)
        ),
        "{}",
        s.stderr()
    );
}

#[test]
fn a_proxy_header_from_an_unlisted_address_is_refused() {
    // 127.0.0.1 may talk to the server, but not speak for others.
    let s = Server::start(&behind_balancer("127.0.0.77"));
    let header = v2_header("127.0.0.77:1".parse().unwrap(), addr(&s));
    assert_eq!(health_via(&s, "127.0.0.1", &header), None);
    let header = v1_header("127.0.0.77:1".parse().unwrap(), addr(&s));
    assert_eq!(health_via(&s, "127.0.0.1", &header), None);
    assert_eq!(
        s.metric("signing_closed_connections_total{reason=\"proxy_not_allowed\"}"),
        Some(2.0)
    );
    assert!(s
        .stderr()
        .contains("PROXY protocol header from an address not in proxy_protocol_from"));
}

#[test]
fn a_listed_balancer_connection_without_a_header_is_refused() {
    let s = Server::start(&behind_balancer("127.0.0.77, 127.0.0.10"));
    // Even though 127.0.0.10 is in allowed_ips too: a balancer must say whom it carries.
    assert_eq!(health_via(&s, BALANCER_IP, b""), None);
    assert_eq!(
        s.metric("signing_closed_connections_total{reason=\"proxy_header\"}"),
        Some(1.0)
    );
    assert!(s
        .stderr()
        .contains("must start with a PROXY protocol header"));
    // A header cut short and then silence: closed after the header deadline,
    // and the server still serves others.
    let mut tcp = connect_from(addr(&s), BALANCER_IP);
    tcp.write_all(b"PROXY TCP4 127.0.0.77").unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(
        tcp.read(&mut buf).unwrap_or(0),
        0,
        "closed without an answer"
    );
    let header = v1_header("127.0.0.77:1".parse().unwrap(), addr(&s));
    assert_eq!(
        health_via(&s, BALANCER_IP, &header).as_deref(),
        Some("HTTP/1.1 200 OK")
    );
}

/// Two servers sharing their token secrets behind one balancer: tokens and
/// allow-lists are judged on the build machine's address, and a token minted
/// by one server signs on the other.
#[test]
fn two_servers_behind_a_balancer_judge_tokens_and_allow_lists_on_the_original_source() {
    for version in [Version::V2, Version::V1] {
        let a = Server::start(&behind_balancer("127.0.0.2"));
        let b = Server::start(&behind_balancer("127.0.0.2"));
        // Source affinity: 127.0.0.2 → backend 0 (a), 127.0.0.1 and .3 → backend 1 (b).
        let lb = Balancer::start(&[&a.url, &b.url], version);

        // The token host (127.0.0.1, through the balancer: server b) mints
        // for the build machine 127.0.0.2, which signs through it on server a.
        let token = {
            let r = client_from("127.0.0.1")
                .post(format!("{}/token", lb.url))
                .basic_auth(MINT_USER, Some(MINT_PASSWORD))
                .form(&[("slave_ip", "127.0.0.2"), ("duration", "300")])
                .send()
                .unwrap();
            assert_eq!(r.status(), 200, "{}", b.stderr());
            r.text().unwrap()
        };
        let body = data(50_000, 7);
        let builder = client_from("127.0.0.2");
        let (status, text) = Upload::new(&token, "a.bin", &body).send(&builder, &lb.url, "gpg");
        assert_eq!(status, 202, "{text}\n{}", a.stderr());
        let (status, _, sig) = fetch(&builder, &lb.url, "gpg", &sha256_hex(&body));
        assert_eq!(status, 200);
        let dir = tempfile::tempdir().unwrap();
        let (file, asc) = (dir.path().join("a.bin"), dir.path().join("a.bin.asc"));
        std::fs::write(&file, &body).unwrap();
        std::fs::write(&asc, &sig).unwrap();
        let (ok, out) = gpgv(&asc, &file);
        assert!(ok, "{out}");
        assert!(
            a.audit().contains("\"peer\":\"127.0.0.2\""),
            "{}",
            a.audit()
        );
        assert!(b.stderr().contains("token minted"), "{}", b.stderr());

        // The same token from another machine (127.0.0.1, allowed) is refused:
        // the servers see 127.0.0.1, not the balancer.
        let other = client_from("127.0.0.1");
        let (status, text) = Upload::new(&token, "a.bin", &body).send(&other, &lb.url, "gpg");
        assert_eq!(status, 400, "{text}");
        assert!(text.contains("another IP address"), "{text}");

        // Our signtool, through the balancer with a token for 127.0.0.1 (server b).
        let own = dir.path().join("token");
        let (nonce, file) = (dir.path().join("nonce"), dir.path().join("b.bin"));
        std::fs::write(&own, b.mint("127.0.0.1", 300)).unwrap();
        std::fs::write(&file, data(30_000, 8)).unwrap();
        let host = format!("gpg:{}", lb.url.trim_start_matches("https://"));
        let (code, out) = output(
            signtool_sign(&[host], &own, &nonce)
                .args(["-f", "gpg"])
                .arg(&file),
        );
        assert_eq!(code, 0, "{out}");
        let (ok, out) = gpgv(&dir.path().join("b.bin.asc"), &file);
        assert!(ok, "{out}");
        assert!(
            b.audit().contains("\"peer\":\"127.0.0.1\""),
            "{}",
            b.audit()
        );

        // 127.0.0.3 is in no allow-list: the balancer's connection for it is closed.
        let stranger = client_from("127.0.0.3");
        assert!(stranger.get(format!("{}/health", lb.url)).send().is_err());
        assert!(
            wait_until(Duration::from_secs(10), || b.stderr().contains(
                "client 127.0.0.3 (via balancer 127.0.0.10) is in no allow-list"
            )),
            "{}",
            b.stderr()
        );
    }
}

/// Two formats with the same key, so a token scope can tell them apart.
fn two_formats(extra_security: &str) -> ServerOpts {
    let mut o = ServerOpts::default();
    let key = certs().join("gpg/secret.asc");
    o.formats = format!(
        "[format:gpg]\ntype = gpg\nkey = {k}\n\n[format:gpg-nightly]\ntype = gpg\nkey = {k}\n",
        k = key.display()
    );
    o.stdin = format!("{p}\n{p}\n", p = passphrase());
    o.security += extra_security;
    o
}

fn mint_scoped(s: &Server, formats: Option<&str>) -> (u16, String) {
    let mut form = vec![("slave_ip", "127.0.0.1"), ("duration", "300")];
    if let Some(f) = formats {
        form.push(("formats", f));
    }
    let r = s
        .client()
        .post(format!("{}/token", s.url))
        .basic_auth(MINT_USER, Some(MINT_PASSWORD))
        .form(&form)
        .send()
        .unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

#[test]
fn a_token_scoped_to_gpg_signs_gpg_and_is_refused_for_another_format() {
    let s = Server::start(&two_formats(""));
    let (status, token) = mint_scoped(&s, Some("gpg"));
    assert_eq!(status, 200, "{token}");
    let body = data(20_000, 3);
    let (status, text) = Upload::new(&token, "x.bin", &body).send(&s.client(), &s.url, "gpg");
    assert_eq!(status, 202, "{text}");
    let (status, text) =
        Upload::new(&token, "x.bin", &body).send(&s.client(), &s.url, "gpg-nightly");
    assert_eq!(status, 403, "{text}");
    assert!(
        text.contains("limited to the formats gpg; it may not sign with gpg-nightly"),
        "{text}"
    );
    assert_eq!(
        s.metric("signing_token_rejections_total{reason=\"scope\"}"),
        Some(1.0)
    );
    let (status, _, _) = fetch(&s.client(), &s.url, "gpg", &sha256_hex(&body));
    assert_eq!(status, 200);
    assert!(
        s.audit().contains("\"token_scope\":\"gpg\""),
        "{}",
        s.audit()
    );
    // Unscoped tokens keep today's meaning (Mozilla's get_token mints those).
    let (status, any) = mint_scoped(&s, None);
    assert_eq!(status, 200);
    let (status, text) = Upload::new(&any, "x.bin", &body).send(&s.client(), &s.url, "gpg-nightly");
    assert_eq!(status, 202, "{text}");
    // A format that does not exist is a clear 400.
    let (status, text) = mint_scoped(&s, Some("gpg,nope"));
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("unknown format(s) nope"), "{text}");
}

#[test]
fn a_minting_user_limited_by_config_mints_only_within_the_limit() {
    let s = Server::start(&two_formats(&format!(
        "new_token_formats.{MINT_USER} = gpg\n"
    )));
    let (status, text) = mint_scoped(&s, Some("gpg-nightly"));
    assert_eq!(status, 403, "{text}");
    assert!(
        text.contains("may mint tokens only for gpg; not for gpg-nightly"),
        "{text}"
    );
    // Asking for nothing gives the user's whole limit.
    let (status, token) = mint_scoped(&s, None);
    assert_eq!(status, 200);
    let body = data(20_000, 4);
    let (status, _) = Upload::new(&token, "x.bin", &body).send(&s.client(), &s.url, "gpg-nightly");
    assert_eq!(status, 403);
    let (status, _) = Upload::new(&token, "x.bin", &body).send(&s.client(), &s.url, "gpg");
    assert_eq!(status, 202);
}

#[test]
fn signtool_token_formats_mints_a_scoped_token() {
    let s = Server::start(&two_formats(""));
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, MINT_PASSWORD).unwrap();
    let out = std::process::Command::new(bin("signtool"))
        .args(["token", "-H", s.url.trim_start_matches("https://"), "-c"])
        .arg(certs().join("ca.pem"))
        .args(["-u", MINT_USER, "--password-file"])
        .arg(&pw)
        .args(["-i", "127.0.0.1", "-d", "60", "--formats", "gpg-nightly"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let body = data(20_000, 5);
    let (status, _) = Upload::new(token.trim(), "x.bin", &body).send(&s.client(), &s.url, "gpg");
    assert_eq!(status, 403);
    let (status, _) =
        Upload::new(token.trim(), "x.bin", &body).send(&s.client(), &s.url, "gpg-nightly");
    assert_eq!(status, 202);
}

/// An RSA key and a self-signed code-signing certificate valid from
/// `not_before` to `not_after` (Unix seconds), as PEM files in `dir`.
fn key_and_cert(
    dir: &Path,
    not_before: i64,
    not_after: i64,
) -> (std::path::PathBuf, std::path::PathBuf) {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::extension::ExtendedKeyUsage;
    use openssl::x509::{X509Builder, X509NameBuilder};
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "TEST-ONLY expiring signer")
        .unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(7).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::from_unix(not_before).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(not_after).unwrap())
        .unwrap();
    b.append_extension(ExtendedKeyUsage::new().code_signing().build().unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    let (k, c) = (dir.join("expiring.key"), dir.join("expiring.pem"));
    std::fs::write(&k, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    std::fs::write(&c, b.build().to_pem().unwrap()).unwrap();
    (k, c)
}

/// An APK format (APK certificates are self-signed as a rule) with `key` and `cert`.
fn apk_format(name: &str, key: &Path, cert: &Path, extra: &str) -> String {
    format!(
        "[format:{name}]\ntype = apk\nkey = {}\ncert = {}\n{extra}",
        key.display(),
        cert.display()
    )
}

#[test]
fn metrics_show_each_formats_certificate_expiry_and_start_up_warns_within_the_period() {
    let dir = tempfile::tempdir().unwrap();
    let now = now() as i64;
    let in_ten_days = now + 10 * 86_400;
    let (key, cert) = key_and_cert(dir.path(), now - 86_400, in_ten_days);
    let mut o = ServerOpts::default();
    o.formats += "\n";
    o.formats += &apk_format("apk-soon", &key, &cert, "");
    let s = Server::start(&o);
    let leaf =
        s.metric("signing_certificate_expiry_timestamp_seconds{format=\"apk-soon\",cert=\"leaf\"}");
    assert_eq!(leaf, Some(in_ten_days as f64));
    let chain = s
        .metric("signing_certificate_expiry_timestamp_seconds{format=\"apk-soon\",cert=\"chain\"}");
    assert_eq!(chain, Some(in_ten_days as f64));
    assert!(
        s.stderr().contains("format apk-soon: signing certificate")
            && (s.stderr().contains("(in 9 days)") || s.stderr().contains("(in 10 days)")),
        "{}",
        s.stderr()
    );
    let h = s.health();
    let warnings = h["certificate_warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{h}");
    assert!(warnings[0].as_str().unwrap().contains("apk-soon"), "{h}");
    // With a warning period shorter than the 10 days left, no warning.
    drop(s);
    let mut o = ServerOpts::default();
    o.server_extra += "cert_expiry_warning = 5\n";
    o.formats += "\n";
    o.formats += &apk_format("apk-soon", &key, &cert, "");
    let s = Server::start(&o);
    assert!(!s.stderr().contains("expires on"), "{}", s.stderr());
}

#[test]
fn an_expired_signing_certificate_refuses_to_start_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let now = now() as i64;
    let (key, cert) = key_and_cert(dir.path(), now - 400 * 86_400, now - 86_400);
    let mut o = ServerOpts::default();
    o.formats += "\n";
    o.formats += &apk_format("apk-old", &key, &cert, "");
    let config = write_config(dir.path(), &o);
    let (status, text) = run_server_to_end(&[config.as_os_str()], &o.stdin);
    assert_eq!(status.code(), Some(2), "{text}");
    assert!(
        text.contains("format apk-old: its signing certificate")
            && text.contains("allow_expired = yes"),
        "{text}"
    );
    // allow_expired = yes: it starts, and says so loudly.
    o.formats = o.formats.replace(
        &apk_format("apk-old", &key, &cert, ""),
        &apk_format("apk-old", &key, &cert, "allow_expired = yes\n"),
    );
    let s = Server::start(&o);
    assert!(s.stderr().contains("EXPIRED"), "{}", s.stderr());
}
