//! APK helpers for the end-to-end tests: a server config with `apk` formats,
//! fixture APKs made with the real Android tools (aapt, zipalign) and
//! `apksigner verify`, the verifier Android developers trust.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{certs, passphrase, run, ServerOpts};

/// The default test server plus `[format:apk]` (RSA 3072, all schemes),
/// `[format:apk_ec]` (EC P-256) and `[format:apk_v2]` (RSA, `schemes = v2`).
pub fn server_opts() -> ServerOpts {
    let mut o = ServerOpts::default();
    let c = certs().join("apk");
    for (name, kind, extra) in [
        ("apk", "rsa", ""),
        ("apk_ec", "ec", ""),
        ("apk_v2", "rsa", "schemes = v2\n"),
    ] {
        o.formats.push_str(&format!(
            "\n[format:{name}]\ntype = apk\nkey = {}\ncert = {}\n{extra}",
            c.join(kind).join("key.pem").display(),
            c.join(kind).join("cert.pem").display()
        ));
    }
    // One passphrase line per distinct key file: gpg, apk rsa, apk ec.
    let p = passphrase();
    o.stdin = format!("{p}\n{p}\n{p}\n");
    o
}

/// The hex SHA-256 of the test certificate `kind` (`rsa` or `ec`).
pub fn cert_sha256(kind: &str) -> String {
    std::fs::read_to_string(certs().join("apk").join(kind).join("CERT_SHA256"))
        .expect("CERT_SHA256")
}

/// A real APK made in `dir`: aapt packages a manifest (minSdkVersion 21, so
/// apksigner checks v1 as well as v2/v3) and assets (a compressed text, a
/// stored `.dat`), `aapt add -0 so` adds a stored `lib/x86_64/libfoo.so`,
/// and zipalign -p aligns it.
pub fn fixture_apk(dir: &Path, seed: u64) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("assets")).expect("mkdir");
    std::fs::create_dir_all(src.join("lib/x86_64")).expect("mkdir");
    std::fs::write(
        src.join("AndroidManifest.xml"),
        r#"<?xml version="1.0" encoding="utf-8"?>
<manifest xmlns:android="http://schemas.android.com/apk/res/android" package="org.example.signing.e2e" android:versionCode="1" android:versionName="1.0">
  <uses-sdk android:minSdkVersion="21" android:targetSdkVersion="33"/>
  <application android:label="e2e"/>
</manifest>
"#,
    )
    .expect("write manifest");
    let numbers: String = (0..20_000).map(|i| format!("{}\n", i * seed)).collect();
    std::fs::write(src.join("assets/numbers.txt"), numbers).expect("write");
    std::fs::write(src.join("assets/raw.dat"), format!("stored {seed}\n")).expect("write");
    std::fs::write(src.join("lib/x86_64/libfoo.so"), crate::data(150_000, seed)).expect("write");
    let base = dir.join("base.apk");
    let (ok, out) = run(Command::new("aapt")
        .current_dir(&src)
        .args([
            "package",
            "-f",
            "-M",
            "AndroidManifest.xml",
            "-I",
            "/usr/share/android-framework-res/framework-res.apk",
        ])
        .args(["-A", "assets", "-0", "dat", "-F"])
        .arg(&base));
    assert!(ok, "aapt package: {out}");
    let (ok, out) = run(Command::new("aapt")
        .current_dir(&src)
        .args(["add", "-0", "so"])
        .arg(&base)
        .arg("lib/x86_64/libfoo.so"));
    assert!(ok, "aapt add: {out}");
    let aligned = dir.join("unsigned.apk");
    let (ok, out) = run(Command::new("zipalign")
        .args(["-p", "-f", "4"])
        .arg(&base)
        .arg(&aligned));
    assert!(ok, "zipalign: {out}");
    aligned
}

/// `apksigner verify --verbose --print-certs APK`: (success, output).
pub fn apksigner_verify(apk: &Path) -> (bool, String) {
    run(Command::new("apksigner")
        .args(["verify", "--verbose", "--print-certs"])
        .arg(apk))
}

/// `zipalign -c -p 4 APK`: whether the alignment is what zipalign makes.
pub fn zipalign_check(apk: &Path) -> (bool, String) {
    run(Command::new("zipalign").args(["-c", "-p", "4"]).arg(apk))
}
