//! Mozilla's own Python client (`signtool` 4.x) signs a PE with `-f sha2signcode`
//! against our server; osslsigncode checks the result.

use signing_tests::authenticode::{build_pe, osslsigncode_verify};
use signing_tests::*;

#[test]
fn mozilla_signtool_4_signs_a_pe_with_sha2signcode() {
    let c = certs().join("authenticode");
    let formats = format!(
        "[format:sha2signcode]\ntype = authenticode\nkey = {}\ncert = {}\n",
        c.join("rsa.key").display(),
        c.join("rsa-chain.pem").display()
    );
    let s = Server::start(&ServerOpts {
        formats,
        ..ServerOpts::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let signed = dir.path().join("signed.exe");
    let pe = build_pe(dir.path(), "x86_64", false);
    let signtool = |input: &std::path::Path, output: &std::path::Path| {
        mozilla_sign(&s, dir.path(), "sha2signcode", input, output)
    };
    let (ok, out) = signtool(&pe, &signed);
    assert!(
        ok,
        "Mozilla's signtool failed:\n{out}\nserver log:\n{}",
        s.stderr()
    );
    let (text, ok) = osslsigncode_verify(&signed);
    assert!(ok, "{text}");

    // The client itself recognises our signature and does not sign again.
    let again = dir.path().join("again.exe");
    let (ok, out) = signtool(&signed, &again);
    assert!(ok, "{out}");
    assert!(out.contains("already signed"), "{out}");
    assert!(!again.exists());
}
