//! Mozilla's own Python client (`signtool` 4.x) signs a PE with `-f sha2signcode`
//! against our server; osslsigncode checks the result.

use std::process::Command;

use signing_tests::authenticode::{build_pe, osslsigncode_verify};
use signing_tests::*;

#[test]
fn mozilla_signtool_4_signs_a_pe_with_sha2signcode() {
    let exe = mozilla_signtool();
    let c = certs().join("authenticode");
    let formats = format!(
        "[format:sha2signcode]\ntype = authenticode\nkey = {}\ncert = {}\n",
        c.join("rsa.key").display(),
        c.join("rsa-chain.pem").display()
    );
    let s = Server::start(&ServerOpts { formats, ..ServerOpts::default() });
    let dir = tempfile::tempdir().unwrap();
    let (token, nonce, signed) = (dir.path().join("token"), dir.path().join("nonce"), dir.path().join("signed.exe"));
    std::fs::write(&token, s.mint("127.0.0.1", 300)).unwrap();
    let pe = build_pe(dir.path(), "x86_64", false);
    let host = format!("sha2signcode:{}", s.url.trim_start_matches("https://"));
    let signtool = |input: &std::path::Path, output: &std::path::Path| {
        run(Command::new(&exe)
            .args(["-H", &host, "-c"])
            .arg(certs().join("ca.pem"))
            .arg("-t")
            .arg(&token)
            .arg("-n")
            .arg(&nonce)
            .args(["-f", "sha2signcode", "-o"])
            .arg(output)
            .arg(input))
    };
    let (ok, out) = signtool(&pe, &signed);
    assert!(ok, "Mozilla's signtool failed:\n{out}\nserver log:\n{}", s.stderr());
    let (text, ok) = osslsigncode_verify(&signed);
    assert!(ok, "{text}");

    // The client itself recognises our signature and does not sign again.
    let again = dir.path().join("again.exe");
    let (ok, out) = signtool(&signed, &again);
    assert!(ok, "{out}");
    assert!(out.contains("already signed"), "{out}");
    assert!(!again.exists());
}
