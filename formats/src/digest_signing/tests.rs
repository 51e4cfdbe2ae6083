//! Digest signing round trips in-process, for each format: the client's
//! `prepare`, the server's `sign_digest`, the client's check and `finish`,
//! then the signer's own `verify` (a relying party's check) on the output;
//! and the client's check refusing a signature over anything else.

use std::path::Path;

use super::*;
use crate::test_support::{certs, passphrase};
use crate::{FormatConfig, SignContext, Signer};

fn open(kind: &str, key: &Path, cert: Option<&Path>, digest: Option<&str>) -> Box<dyn Signer> {
    let cfg = FormatConfig {
        name: kind.into(),
        kind: kind.into(),
        key: key.to_path_buf(),
        cert: cert.map(Path::to_path_buf),
        digest: digest.map(str::to_string),
        ..FormatConfig::default()
    };
    (crate::registry::find(kind).unwrap().open)(&cfg, Some(&passphrase())).unwrap()
}

fn ctx() -> SignContext {
    SignContext::default()
}

#[test]
fn gpg_signs_a_clients_state_and_the_client_checks_it() {
    let s = open("gpg", &certs().join("gpg/secret.asc"), None, None);
    assert_eq!(s.digest_spec(), Some(DigestSpec::Sha256State));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.bin");
    let data: Vec<u8> = (0..100_003u32).map(|i| (i * 31) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let state = sha256_state_of(&file).unwrap();
    let input = DigestInput::Sha256State(state.clone());
    input.check(DigestSpec::Sha256State).unwrap();
    let sig = s.sign_digest(&input, &ctx()).unwrap();
    crate::gpg::check_from_state(&sig, &state).unwrap();
    let asc = dir.path().join("f.bin.asc");
    std::fs::write(&asc, &sig).unwrap();
    s.verify(&file, &asc).unwrap();
    // The state of other data: the client's check refuses it, and so does the signer's verify.
    let mut other = Sha256State::default();
    other.absorb(&data[1..]);
    assert!(crate::gpg::check_from_state(&sig, &other).is_err());
    std::fs::write(&file, &data[1..]).unwrap();
    assert!(s.verify(&file, &asc).is_err());
    // A digest where a state is expected is refused before signing.
    assert!(DigestInput::Digest(vec![0; 32])
        .check(DigestSpec::Sha256State)
        .is_err());
}

#[test]
fn mar_signs_a_clients_digest_and_the_output_verifies() {
    let m = certs().join("mar");
    for (key, digest) in [("sha1-2048.key", "sha1"), ("sha384-4096.key", "sha384")] {
        let s = open("mar", &m.join(key), None, Some(digest));
        let spec = s.digest_spec().unwrap();
        assert_eq!(DigestSpec::parse(&spec.to_text()), Some(spec));
        let dir = tempfile::tempdir().unwrap();
        let (input, output) = (dir.path().join("in.mar"), dir.path().join("out.mar"));
        std::fs::write(
            &input,
            crate::mar::parse::build_unsigned(&[("a.txt", b"hello"), ("b", &[7u8; 5000])], None),
        )
        .unwrap();
        let prep = crate::mar::digest::prepare(&input, &output, spec).unwrap();
        let req = DigestInput::Digest(prep.digest.clone());
        req.check(spec).unwrap();
        let sig = s.sign_digest(&req, &ctx()).unwrap();
        let key = s.public_key_der().unwrap();
        crate::mar::digest::verify(&prep, &sig, &key).unwrap();
        // A flipped bit of the signature does not verify.
        let mut bad = sig.clone();
        bad[10] ^= 1;
        assert!(crate::mar::digest::verify(&prep, &bad, &key).is_err());
        crate::mar::digest::finish(&output, &prep, &sig).unwrap();
        s.verify(&input, &output).unwrap();
        // The wrong digest length is refused before signing.
        assert!(DigestInput::Digest(vec![0; 32]).check(spec).is_err());
    }
}

#[test]
fn authenticode_signs_a_clients_image_hash_and_the_output_verifies() {
    let a = certs().join("authenticode");
    let s = open(
        "authenticode",
        &a.join("rsa.key"),
        Some(&a.join("rsa-chain.pem")),
        None,
    );
    let spec = s.digest_spec().unwrap();
    assert_eq!(spec.to_text(), "authenticode:sha256");
    assert_eq!(spec.containers().unwrap().names(), ["pe", "msi", "cab"]);
    // The text form alone (an older server's /health) means PEs only.
    let pe_only = DigestSpec::parse("authenticode:sha256").unwrap();
    assert_eq!(pe_only.containers().unwrap().names(), ["pe"]);
    assert_eq!(pe_only.with_containers(Some(&["pe", "msi", "cab"])), spec);
    // Names this build does not know are left out; PE is always in.
    let listed = pe_only.with_containers(Some(&["msi", "appx"]));
    assert_eq!(listed.containers().unwrap().names(), ["pe", "msi"]);
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.exe"), dir.path().join("out.exe"));
    std::fs::write(
        &input,
        crate::authenticode::pe::minimal_pe32_plus(b"digest test"),
    )
    .unwrap();
    let prep = crate::authenticode::remote::prepare(&input, &output, spec, "in.exe")
        .unwrap()
        .unwrap();
    assert_eq!(prep.input(), DigestInput::Digest(prep.digest.clone()));
    let der = s
        .sign_digest(&DigestInput::Digest(prep.digest.clone()), &ctx())
        .unwrap();
    crate::authenticode::remote::verify(&prep, &der).unwrap();
    // A SignedData over another image hash is refused by the client.
    let mut other = prep.digest.clone();
    other[0] ^= 1;
    let wrong = s.sign_digest(&DigestInput::Digest(other), &ctx()).unwrap();
    assert!(crate::authenticode::remote::verify(&prep, &wrong).is_err());
    crate::authenticode::remote::finish(&output, prep, &der).unwrap();
    s.verify(&input, &output).unwrap();
    // Signed again (the output now carries a signature): replaced, still verifies.
    let again = dir.path().join("again.exe");
    let prep = crate::authenticode::remote::prepare(&output, &again, spec, "again.exe")
        .unwrap()
        .unwrap();
    let der = s
        .sign_digest(&DigestInput::Digest(prep.digest.clone()), &ctx())
        .unwrap();
    crate::authenticode::remote::finish(&again, prep, &der).unwrap();
    s.verify(&output, &again).unwrap();
}

/// A compound file with two streams and a storage (the shape of an MSI).
fn compound_file(path: &Path) {
    use std::io::Write as _;
    let mut cf = cfb::create(path).unwrap();
    cf.create_stream("/Payload")
        .unwrap()
        .write_all(&[9u8; 70_000])
        .unwrap();
    cf.create_stream("/small")
        .unwrap()
        .write_all(b"hi")
        .unwrap();
    cf.create_storage("/S").unwrap();
    cf.create_stream("/S/x").unwrap().write_all(b"x").unwrap();
    cf.flush().unwrap();
}

#[test]
fn authenticode_signs_a_clients_msi_hash_and_the_output_verifies() {
    use crate::authenticode::remote::{finish, prepare, verify};
    let a = certs().join("authenticode");
    let s = open(
        "authenticode",
        &a.join("rsa.key"),
        Some(&a.join("rsa-chain.pem")),
        None,
    );
    let spec = s.digest_spec().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.msi"), dir.path().join("out.msi"));
    compound_file(&input);
    // A host that signs only PEs by digest: the MSI is uploaded, nothing written.
    let pe_only = spec.with_containers(None);
    assert!(prepare(&input, &output, pe_only, "in.msi")
        .unwrap()
        .is_none());
    assert!(!output.exists());

    let prep = prepare(&input, &output, spec, "in.msi").unwrap().unwrap();
    let req = prep.input();
    assert_eq!(
        req,
        DigestInput::Authenticode(Container::Msi, prep.digest.clone())
    );
    assert_eq!(req.container(), Some("msi"));
    req.check(spec).unwrap();
    // A host that signs only PEs refuses an MSI hash before signing.
    assert!(req.check(pe_only).is_err());
    let der = s.sign_digest(&req, &ctx()).unwrap();
    verify(&prep, &der).unwrap();
    // The same hash signed as a PE's (what a server ignoring `container`
    // would do): not over an MSI, refused.
    let as_pe = s
        .sign_digest(&DigestInput::Digest(prep.digest.clone()), &ctx())
        .unwrap();
    let err = verify(&prep, &as_pe).unwrap_err().to_string();
    assert!(err.contains("not over this kind of file"), "{err}");
    // Another hash: refused.
    let mut other = prep.digest.clone();
    other[0] ^= 1;
    let wrong = s
        .sign_digest(&DigestInput::Authenticode(Container::Msi, other), &ctx())
        .unwrap();
    assert!(verify(&prep, &wrong).is_err());
    finish(&output, prep, &der).unwrap();
    s.verify(&input, &output).unwrap();

    // Signed again: the old signature goes, the new one verifies, and the
    // hash is the one of the unsigned file.
    let again = dir.path().join("again.msi");
    let prep2 = prepare(&output, &again, spec, "again.msi")
        .unwrap()
        .unwrap();
    let der2 = s.sign_digest(&prep2.input(), &ctx()).unwrap();
    finish(&again, prep2, &der2).unwrap();
    s.verify(&output, &again).unwrap();
    // The whole-file signing of the same input computes the same hash.
    let whole = dir.path().join("whole.msi");
    s.sign(&input, &whole, &ctx()).unwrap();
    let from_whole = prepare(&whole, &dir.path().join("w2.msi"), spec, "w.msi")
        .unwrap()
        .unwrap();
    assert_eq!(
        from_whole.digest,
        prepare(&input, &dir.path().join("i2.msi"), spec, "i.msi")
            .unwrap()
            .unwrap()
            .digest
    );

    // A script (or a catalog) is uploaded, not prepared.
    let ps1 = dir.path().join("x.ps1");
    std::fs::write(&ps1, "Write-Output 1\n").unwrap();
    assert!(prepare(&ps1, &dir.path().join("x2.ps1"), spec, "x.ps1")
        .unwrap()
        .is_none());
}

#[test]
fn a_container_field_is_checked_against_the_spec() {
    let spec = DigestSpec::Authenticode {
        hash: crate::Hash::Sha256,
        containers: Containers::from_names(&["msi"]),
    };
    let d = || vec![0u8; 32];
    assert_eq!(
        DigestInput::for_container(spec, None, d()),
        Ok(DigestInput::Digest(d()))
    );
    assert_eq!(
        DigestInput::for_container(spec, Some("pe"), d()),
        Ok(DigestInput::Digest(d()))
    );
    assert_eq!(
        DigestInput::for_container(spec, Some("msi"), d()),
        Ok(DigestInput::Authenticode(Container::Msi, d()))
    );
    let e = DigestInput::for_container(spec, Some("cab"), d()).unwrap_err();
    assert!(e.contains("only pe, msi"), "{e}");
    // A cabinet, known to this build, but not listed for this host.
    assert!(DigestInput::for_container(spec, Some("cab"), d()).is_err());
    assert!(DigestInput::Authenticode(Container::Cab, d())
        .check(spec)
        .is_err());
    let mar = DigestSpec::Mar {
        algorithm: 2,
        signature_len: 512,
    };
    assert!(DigestInput::for_container(mar, Some("pe"), d()).is_err());
    // An MSI hash of the wrong length.
    let e = DigestInput::Authenticode(Container::Msi, vec![0; 20])
        .check(spec)
        .unwrap_err();
    assert!(e.contains("must be 32 bytes"), "{e}");
}

#[test]
fn authenticode_signs_a_clients_cabinet_hash_and_the_output_verifies() {
    use crate::authenticode::remote::{finish, prepare, verify};
    let a = certs().join("authenticode");
    let s = open(
        "authenticode",
        &a.join("rsa.key"),
        Some(&a.join("rsa-chain.pem")),
        None,
    );
    let spec = s.digest_spec().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.cab"), dir.path().join("out.cab"));
    std::fs::write(
        &input,
        crate::authenticode::cab::tests::tiny_cab(b"cabinet payload", true),
    )
    .unwrap();
    let msi_only = spec.with_containers(Some(&["pe", "msi"]));
    assert!(prepare(&input, &output, msi_only, "in.cab")
        .unwrap()
        .is_none());
    assert!(!output.exists());

    let prep = prepare(&input, &output, spec, "in.cab").unwrap().unwrap();
    assert_eq!(prep.container(), Container::Cab);
    let req = prep.input();
    assert_eq!(req.container(), Some("cab"));
    req.check(spec).unwrap();
    let der = s.sign_digest(&req, &ctx()).unwrap();
    verify(&prep, &der).unwrap();
    // The hash signed as an MSI's: refused.
    let as_msi = s
        .sign_digest(
            &DigestInput::Authenticode(Container::Msi, prep.digest.clone()),
            &ctx(),
        )
        .unwrap();
    let err = verify(&prep, &as_msi).unwrap_err().to_string();
    assert!(err.contains("not over this kind of file (cab)"), "{err}");
    finish(&output, prep, &der).unwrap();
    s.verify(&input, &output).unwrap();
    // The same bytes as the whole-file signing's, but for the signature.
    let whole = dir.path().join("whole.cab");
    s.sign(&input, &whole, &ctx()).unwrap();
    let (ours, theirs) = (
        std::fs::read(&output).unwrap(),
        std::fs::read(&whole).unwrap(),
    );
    let body = u32::from_le_bytes(ours[44..48].try_into().unwrap()) as usize;
    // (Bytes 48..52 hold the signature's length.)
    assert_eq!(ours[..48], theirs[..48]);
    assert_eq!(ours[52..body], theirs[52..body]);

    // Signed again: one signature, ours, still verifying.
    let again = dir.path().join("again.cab");
    let prep = prepare(&output, &again, spec, "again.cab")
        .unwrap()
        .unwrap();
    let der = s.sign_digest(&prep.input(), &ctx()).unwrap();
    finish(&again, prep, &der).unwrap();
    s.verify(&output, &again).unwrap();
    assert_eq!(
        std::fs::metadata(&again).unwrap().len(),
        std::fs::metadata(&output).unwrap().len(),
        "the old signature is replaced, not kept"
    );
}
