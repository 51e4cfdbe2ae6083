//! Linux distribution signing end to end, through the real server: RPMs
//! built with rpmbuild and checked with rpmkeys, and an apt repository whose
//! InRelease is clear-signed by the server and accepted by gpgv and a real
//! `apt-get update`.

use std::path::{Path, PathBuf};
use std::process::Command;

use signing_tests::*;

/// A server with the clear-signing format `inrelease` (ed25519 key) and the
/// rpm formats `rpm` (RSA-4096) and `rpm_ed25519`.
fn server() -> Server {
    let c = certs();
    let opts = ServerOpts {
        formats: format!(
            "[format:inrelease]\ntype = gpg\nkey = {}\nclearsign = yes\n\n\
             [format:rpm]\ntype = rpm\nkey = {}\n\n\
             [format:rpm_ed25519]\ntype = rpm\nkey = {}\n",
            c.join("gpg/secret.asc").display(),
            c.join("gpg-rsa/secret.asc").display(),
            c.join("gpg/secret.asc").display(),
        ),
        stdin: format!("{0}\n{0}\n{0}\n", passphrase()),
        ..ServerOpts::default()
    };
    Server::start(&opts)
}

/// Uploads `body` to `format` and fetches the result: (status, body).
fn sign(s: &Server, format: &str, name: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let token = s.mint("127.0.0.1", 300);
    let (status, text) = Upload::new(&token, name, body).send(&s.client(), &s.url, format);
    assert_eq!(status, 202, "{text}");
    let (status, _, out) = fetch(&s.client(), &s.url, format, &sha256_hex(body));
    (status, out)
}

fn sign_ok(s: &Server, format: &str, name: &str, body: &[u8]) -> Vec<u8> {
    let (status, out) = sign(s, format, name, body);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&out));
    out
}

/// The last 8 hex digits (lower case) of a test key's fingerprint: rpm's key ID.
fn key_id(dir: &str) -> String {
    let fpr = std::fs::read_to_string(certs().join(dir).join("FINGERPRINT")).unwrap();
    fpr.trim()[fpr.trim().len() - 8..].to_ascii_lowercase()
}

/// Builds a small noarch RPM with rpmbuild in `dir`; its path.
fn rpmbuild(dir: &Path) -> PathBuf {
    let spec = dir.join("hello.spec");
    std::fs::write(
        &spec,
        "Name: hello\nVersion: 1.0\nRelease: 1\nSummary: signing-server test package\n\
         License: MIT\nBuildArch: noarch\n\n%description\nA test package.\n\n\
         %install\nmkdir -p %{buildroot}/usr/share/hello\n\
         head -c 200000 /dev/urandom | od -x > %{buildroot}/usr/share/hello/data.txt\n\n\
         %files\n/usr/share/hello/data.txt\n",
    )
    .unwrap();
    let (ok, out) = run(Command::new("rpmbuild")
        .arg("-bb")
        .arg("--define")
        .arg(format!("_topdir {}", dir.join("top").display()))
        .args(["--define", "debug_package %{nil}"])
        .args(["--define", "__os_install_post %{nil}"])
        .args(["--define", "_build_id_links none"])
        .arg("--nodeps")
        .arg(&spec));
    assert!(ok, "rpmbuild (Debian package rpm) failed: {out}");
    let rpm = dir.join("top/RPMS/noarch/hello-1.0-1.noarch.rpm");
    assert!(rpm.is_file(), "rpmbuild made no {}: {out}", rpm.display());
    rpm
}

/// `rpmkeys --checksig -v` in a fresh rpm database holding only the public
/// key of `certs/DIR`: (success, output).
fn checksig(dir: &str, rpm: &Path) -> (bool, String) {
    let db = tempfile::tempdir().unwrap();
    let (ok, out) = run(Command::new("rpmkeys")
        .arg("--dbpath")
        .arg(db.path())
        .arg("--import")
        .arg(certs().join(dir).join("public.asc")));
    assert!(ok, "rpmkeys --import: {out}");
    run(Command::new("rpmkeys")
        .arg("--dbpath")
        .arg(db.path())
        .args(["--checksig", "-v"])
        .arg(rpm))
}

fn rpm_signed_checked_flipped_and_resigned(s: &Server, format: &str, dir: &str, algo: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let built = rpmbuild(tmp.path());
    let body = std::fs::read(&built).unwrap();
    let (_, before) = checksig(dir, &built);
    assert!(!before.contains("Signature"), "unsigned yet: {before}");

    let signed = sign_ok(s, format, "hello-1.0-1.noarch.rpm", &body);
    let p = tmp.path().join("signed.rpm");
    std::fs::write(&p, &signed).unwrap();
    let (ok, out) = checksig(dir, &p);
    let good = format!(
        "Header V4 {algo}/SHA256 Signature, key ID {}: OK",
        key_id(dir)
    );
    assert!(
        ok && out.contains(&good),
        "rpmkeys: expected {good:?}:\n{out}"
    );
    assert!(out.contains("Payload SHA256 digest: OK"), "{out}");
    // Another key's database does not accept it.
    let other = if dir == "gpg" { "gpg-rsa" } else { "gpg" };
    let (ok, out) = checksig(other, &p);
    assert!(
        !ok && out.contains("NOKEY"),
        "signed with {dir}, checked with {other}: {out}"
    );

    // A flipped payload byte fails.
    let mut flipped = signed.clone();
    let at = flipped.len() - 1000;
    flipped[at] ^= 0x01;
    let f = tmp.path().join("flipped.rpm");
    std::fs::write(&f, &flipped).unwrap();
    let (ok, out) = checksig(dir, &f);
    assert!(!ok, "rpmkeys accepted a modified payload: {out}");
    assert!(out.contains("BAD"), "{out}");

    // Re-signing replaces the signature: one signature, still OK, same size.
    let again = sign_ok(s, format, "hello-1.0-1.noarch.rpm", &signed);
    assert_eq!(again.len(), signed.len());
    let a = tmp.path().join("again.rpm");
    std::fs::write(&a, &again).unwrap();
    let (ok, out) = checksig(dir, &a);
    assert!(ok && out.contains(&good), "{out}");
    assert_eq!(out.matches("Signature").count(), 1, "{out}");
}

#[test]
fn rpm_rsa_signature_is_ok_for_rpmkeys_and_a_flipped_payload_byte_is_bad() {
    let s = server();
    rpm_signed_checked_flipped_and_resigned(&s, "rpm", "gpg-rsa", "RSA");
}

#[test]
fn rpm_ed25519_signature_is_ok_for_rpmkeys() {
    let s = server();
    rpm_signed_checked_flipped_and_resigned(&s, "rpm_ed25519", "gpg", "EdDSA");
}

/// The reference signer, rpmsign (with gpg in a throw-away home), signs a
/// package with the RSA key; the server re-signs it with the ed25519 key:
/// rpmsign's signature is replaced, not kept beside ours.
#[test]
fn a_package_signed_by_rpmsign_gets_its_signature_replaced() {
    let s = server();
    let tmp = tempfile::tempdir().unwrap();
    let built = rpmbuild(tmp.path());
    let home = tmp.path().join("gnupg");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let pass = certs().join("PASSPHRASE");
    let (ok, out) = run(Command::new("gpg")
        .arg("--homedir")
        .arg(&home)
        .args([
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase-file",
        ])
        .arg(&pass)
        .arg("--import")
        .arg(certs().join("gpg-rsa/secret.asc")));
    assert!(ok, "gpg --import: {out}");
    let fpr = std::fs::read_to_string(certs().join("gpg-rsa/FINGERPRINT")).unwrap();
    let (ok, out) = run(Command::new("rpmsign")
        .arg("--addsign")
        .arg("--define")
        .arg(format!("_gpg_name {}", fpr.trim()))
        .args(["--define", "__gpg /usr/bin/gpg"])
        .arg("--define")
        .arg(format!("_gpg_path {}", home.display()))
        .arg("--define")
        .arg(format!(
            "_gpg_sign_cmd_extra_args --pinentry-mode loopback --passphrase-file {}",
            pass.display()
        ))
        .arg(&built));
    let _ = Command::new("gpgconf")
        .arg("--homedir")
        .arg(&home)
        .args(["--kill", "all"])
        .output();
    assert!(ok, "rpmsign --addsign: {out}");
    let (ok, out) = checksig("gpg-rsa", &built);
    assert!(
        ok && out.contains(&format!("Signature, key ID {}: OK", key_id("gpg-rsa"))),
        "rpmsign's own signature: {out}"
    );

    let ours = sign_ok(
        &s,
        "rpm_ed25519",
        "hello.rpm",
        &std::fs::read(&built).unwrap(),
    );
    let p = tmp.path().join("ours.rpm");
    std::fs::write(&p, &ours).unwrap();
    let (ok, out) = checksig("gpg", &p);
    let good = format!(
        "Header V4 EdDSA/SHA256 Signature, key ID {}: OK",
        key_id("gpg")
    );
    assert!(ok && out.contains(&good), "expected {good:?}:\n{out}");
    assert_eq!(out.matches("Signature").count(), 1, "{out}");
    let (ok, out) = checksig("gpg-rsa", &p);
    assert!(
        !ok && out.contains("NOKEY"),
        "rpmsign's signature is still there: {out}"
    );
}

/// `type = rpm` with the RSA test OpenPGP key in a PKCS#11 token (SoftHSM2) and
/// `public_key` naming its certificate, as `type = gpg` takes it: rpmkeys accepts.
#[test]
fn rpm_signed_with_a_token_key_is_ok_for_rpmkeys() {
    use signing_tests::pkcs11::{cert_file, gpg_rsa_key_as_pem, uri, SoftHsm, PIN};
    let hsm = SoftHsm::new();
    hsm.init_token("release");
    let pem = hsm.dir.path().join("gpg-rsa.p8");
    gpg_rsa_key_as_pem(&pem);
    hsm.import_plain("release", &pem, "rpm-release", "52");
    std::fs::remove_file(&pem).unwrap();
    let s = Server::start(&ServerOpts {
        formats: format!(
            "[format:rpm]\ntype = rpm\nkey = {}\npublic_key = {}\n",
            uri("release", "rpm-release"),
            cert_file("gpg-rsa/public.asc").display()
        ),
        stdin: format!("{PIN}\n"),
        env: hsm.env(),
        ..ServerOpts::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let built = rpmbuild(tmp.path());
    let signed = sign_ok(&s, "rpm", "hello.rpm", &std::fs::read(&built).unwrap());
    let p = tmp.path().join("signed.rpm");
    std::fs::write(&p, &signed).unwrap();
    let (ok, out) = checksig("gpg-rsa", &p);
    let good = format!(
        "Header V4 RSA/SHA256 Signature, key ID {}: OK",
        key_id("gpg-rsa")
    );
    assert!(ok && out.contains(&good), "expected {good:?}:\n{out}");
}

#[test]
fn malformed_rpms_are_422_with_a_reason() {
    let s = server();
    let tmp = tempfile::tempdir().unwrap();
    let good = std::fs::read(rpmbuild(tmp.path())).unwrap();
    let mut payload = good.clone();
    let at = payload.len() - 500;
    payload[at] ^= 0x40;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "not an rpm",
            b"just some text, not a package".to_vec(),
            "lead",
        ),
        ("truncated lead", good[..60].to_vec(), "lead"),
        ("truncated header", good[..1000].to_vec(), "header"),
        (
            "truncated payload",
            good[..good.len() - 100].to_vec(),
            "payload",
        ),
        ("modified payload", payload, "payload does not match"),
    ];
    for (what, body, expect) in cases {
        let (status, text) = sign(&s, "rpm", "bad.rpm", &body);
        let text = String::from_utf8_lossy(&text);
        assert_eq!(status, 422, "{what}: {text}");
        assert!(
            text.contains(expect),
            "{what}: expected {expect:?} in {text:?}"
        );
    }
    sign_ok(&s, "rpm", "good.rpm", &good);
}

/// A one-package apt repository made with dpkg-deb and apt-ftparchive in
/// `root` (suite `stable`, component `main`); the Release file's path.
fn apt_repository(root: &Path, arch: &str) -> PathBuf {
    let pkg = root.join("build/hello");
    std::fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(pkg.join("usr/share/hello")).unwrap();
    std::fs::write(pkg.join("usr/share/hello/hello.txt"), "hello\n").unwrap();
    std::fs::write(
        pkg.join("DEBIAN/control"),
        "Package: hello\nVersion: 1.0\nArchitecture: all\nMaintainer: Test <t@example.invalid>\n\
         Description: signing-server test package\n",
    )
    .unwrap();
    let repo = root.join("repo");
    std::fs::create_dir_all(repo.join("pool/main")).unwrap();
    let (ok, out) = run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&pkg)
        .arg(repo.join("pool/main/hello_1.0_all.deb")));
    assert!(ok, "dpkg-deb: {out}");
    let bin = repo.join(format!("dists/stable/main/binary-{arch}"));
    std::fs::create_dir_all(&bin).unwrap();
    let out = Command::new("apt-ftparchive")
        .args(["packages", "pool"])
        .current_dir(&repo)
        .output()
        .expect("apt-ftparchive (Debian package apt-utils)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Package: hello"));
    std::fs::write(bin.join("Packages"), &out.stdout).unwrap();
    let out = Command::new("apt-ftparchive")
        .args(["-o", "APT::FTPArchive::Release::Suite=stable"])
        .args(["-o", "APT::FTPArchive::Release::Codename=stable"])
        .args(["-o", "APT::FTPArchive::Release::Components=main"])
        .arg("-o")
        .arg(format!("APT::FTPArchive::Release::Architectures={arch}"))
        .args(["release", "dists/stable"])
        .current_dir(&repo)
        .output()
        .expect("apt-ftparchive");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let release = repo.join("dists/stable/Release");
    std::fs::write(&release, &out.stdout).unwrap();
    release
}

/// `apt-get update` on the repository at `repo` alone, trusting only
/// `key` (signed-by), with its own state, lists and cache directories under
/// `home`: nothing of the machine's apt state is read or written.
fn apt_update(home: &Path, repo: &Path, key: &Path, arch: &str) -> (bool, String) {
    let etc = home.join("etc");
    let parts = etc.join("sources.list.d");
    let state = home.join("state");
    std::fs::create_dir_all(&parts).unwrap();
    std::fs::create_dir_all(state.join("lists/partial")).unwrap();
    std::fs::create_dir_all(home.join("cache/archives/partial")).unwrap();
    std::fs::write(state.join("status"), "").unwrap();
    let list = etc.join("sources.list");
    std::fs::write(
        &list,
        format!(
            "deb [signed-by={} arch={arch}] file:{} stable main\n",
            key.display(),
            repo.display()
        ),
    )
    .unwrap();
    let opt = |k: &str, v: &Path| format!("{k}={}", v.display());
    run(Command::new("apt-get")
        .arg("update")
        .arg("-o")
        .arg(opt("Dir::Etc::sourcelist", &list))
        .arg("-o")
        .arg(opt("Dir::Etc::sourceparts", &parts))
        .arg("-o")
        .arg(opt("Dir::Etc::trusted", &etc.join("trusted.gpg")))
        .arg("-o")
        .arg(opt("Dir::Etc::trustedparts", &etc.join("trusted.gpg.d")))
        .arg("-o")
        .arg(opt("Dir::State", &state))
        .arg("-o")
        .arg(opt("Dir::State::status", &state.join("status")))
        .arg("-o")
        .arg(opt("Dir::Cache", &home.join("cache")))
        .args(["-o", "Debug::NoLocking=1"])
        // As root, apt fetches as the `_apt` user, which cannot read our private
        // temporary directories; fetch as ourselves instead.
        .args(["-o", "APT::Sandbox::User=root"])
        .args(["-o", "Acquire::Languages=none"])
        .env("LC_ALL", "C"))
}

#[test]
fn inrelease_clear_signed_by_the_server_passes_gpgv_and_apt_get_update() {
    let s = server();
    let h: serde_json::Value = serde_json::from_str(
        &s.client()
            .get(format!("{}/health", s.url))
            .send()
            .unwrap()
            .text()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        h["format_details"]["inrelease"],
        serde_json::json!({"type": "gpg", "output": "file", "digest_signing": false})
    );
    assert_eq!(
        h["format_details"]["rpm"],
        serde_json::json!({"type": "rpm", "output": "file", "digest_signing": false})
    );

    let root = tempfile::tempdir().unwrap();
    let (_, arch) = run(Command::new("dpkg").arg("--print-architecture"));
    let arch = arch.trim();
    let release = apt_repository(root.path(), arch);
    let text = std::fs::read(&release).unwrap();
    let inrelease = sign_ok(&s, "inrelease", "Release", &text);
    assert!(inrelease.starts_with(b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n"));
    let path = release.with_file_name("InRelease");
    std::fs::write(&path, &inrelease).unwrap();
    let (ok, out) = run(Command::new("gpgv")
        .arg("--keyring")
        .arg(certs().join("gpg/public.gpg"))
        .arg(&path));
    assert!(ok && out.contains("Good signature"), "gpgv: {out}");

    let repo = root.path().join("repo");
    let home = tempfile::tempdir().unwrap();
    let key = certs().join("gpg/public.gpg");
    let (ok, out) = apt_update(home.path(), &repo, &key, arch);
    assert!(ok, "apt-get update refused our InRelease: {out}");
    assert!(
        !out.contains("W:") && !out.contains("E:"),
        "apt-get update warned: {out}"
    );
    let lists = files_under(&home.path().join("state/lists"));
    assert!(
        lists
            .iter()
            .any(|p| p.to_string_lossy().ends_with("_InRelease")),
        "no InRelease in apt's lists: {lists:?}\n{out}"
    );
    assert!(
        lists
            .iter()
            .any(|p| p.to_string_lossy().contains("_Packages")),
        "no Packages in apt's lists: {lists:?}\n{out}"
    );

    // Trusting another key, apt refuses the repository.
    let home = tempfile::tempdir().unwrap();
    let (ok, out) = apt_update(
        home.path(),
        &repo,
        &certs().join("gpg-rsa/public.gpg"),
        arch,
    );
    assert!(
        out.contains("NO_PUBKEY") && (!ok || out.contains("E:")),
        "apt-get update accepted a repository signed with another key: {out}"
    );
    let lists = files_under(&home.path().join("state/lists"));
    assert!(
        !lists
            .iter()
            .any(|p| p.to_string_lossy().contains("_Packages")),
        "apt used the Packages of a badly signed repository: {lists:?}"
    );

    // A modified InRelease is refused too.
    let mut tampered = inrelease.clone();
    let at = tampered.windows(6).position(|w| w == b"stable").unwrap();
    tampered[at] = b'S';
    std::fs::write(&path, &tampered).unwrap();
    let (ok, out) = run(Command::new("gpgv")
        .arg("--keyring")
        .arg(certs().join("gpg/public.gpg"))
        .arg(&path));
    assert!(!ok, "gpgv accepted a modified InRelease: {out}");
}
