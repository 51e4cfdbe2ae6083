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

/// An aapt-built, zipaligned APK in `dir/name.apk` whose manifest declares
/// `<uses-sdk>` with `min` and `max` (each `None`: the attribute is absent;
/// both `None`: no `<uses-sdk>` at all): a compressed and a stored asset.
pub fn sdk_fixture(dir: &Path, name: &str, min: Option<u32>, max: Option<u32>) -> PathBuf {
    let src = dir.join(format!("{name}-src"));
    std::fs::create_dir_all(src.join("assets")).expect("mkdir");
    let mut uses_sdk = String::new();
    if min.is_some() || max.is_some() {
        uses_sdk.push_str("<uses-sdk");
        if let Some(m) = min {
            uses_sdk.push_str(&format!(" android:minSdkVersion=\"{m}\""));
        }
        if let Some(m) = max {
            uses_sdk.push_str(&format!(" android:maxSdkVersion=\"{m}\""));
        }
        uses_sdk.push_str("/>");
    }
    std::fs::write(
        src.join("AndroidManifest.xml"),
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?>
<manifest xmlns:android="http://schemas.android.com/apk/res/android" package="org.example.sdk.{name}">
  {uses_sdk}
  <application android:label="{name}"/>
</manifest>
"#
        ),
    )
    .expect("write manifest");
    let text: String = (0..3000).map(|i| format!("{name} line {i}\n")).collect();
    std::fs::write(src.join("assets/a.txt"), text).expect("write");
    std::fs::write(src.join("assets/b.dat"), crate::data(5000, 3)).expect("write");
    let base = dir.join(format!("{name}-base.apk"));
    let (ok, out) = run(Command::new("aapt")
        .current_dir(&src)
        .args(["package", "-f", "-M", "AndroidManifest.xml", "-I"])
        .arg("/usr/share/android-framework-res/framework-res.apk")
        .args(["-A", "assets", "-0", "dat", "-F"])
        .arg(&base));
    assert!(ok, "aapt package: {out}");
    let apk = dir.join(format!("{name}.apk"));
    let (ok, out) = run(Command::new("zipalign")
        .args(["-p", "-f", "4"])
        .arg(&base)
        .arg(&apk));
    assert!(ok, "zipalign: {out}");
    apk
}

/// The test key `kind` (`rsa`, `ec`) as apksigner takes it: an unencrypted
/// PKCS#8 DER key in `dir`, and the certificate: (key, cert).
pub fn apksigner_key(dir: &Path, kind: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{kind}.pk8"));
    let (ok, out) = run(Command::new("openssl")
        .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
        .arg(certs().join("apk").join(kind).join("key.pem"))
        .args(["-passin", &format!("pass:{}", passphrase())])
        .arg("-out")
        .arg(&key));
    assert!(ok, "openssl pkcs8: {out}");
    (key, certs().join("apk").join(kind).join("cert.pem"))
}

/// A throwaway self-signed RSA key and certificate named `name` in `dir`,
/// as apksigner takes them: (PKCS#8 DER key, PEM certificate).
pub fn other_key(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (pem, key, cert) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pk8")),
        dir.join(format!("{name}.pem")),
    );
    let (ok, out) = run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", &format!("/CN={name}")])
        .arg("-keyout")
        .arg(&pem)
        .arg("-out")
        .arg(&cert));
    assert!(ok, "openssl req: {out}");
    let (ok, out) = run(Command::new("openssl")
        .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
        .arg(&pem)
        .arg("-out")
        .arg(&key));
    assert!(ok, "openssl pkcs8: {out}");
    (key, cert)
}

/// `apksigner sign --key KEY --cert CERT [extra] --out OUT IN`: (success, output).
pub fn apksigner_sign(
    key: &Path,
    cert: &Path,
    extra: &[&str],
    input: &Path,
    out: &Path,
) -> (bool, String) {
    run(Command::new("apksigner")
        .args(["sign", "--key"])
        .arg(key)
        .arg("--cert")
        .arg(cert)
        .args(extra)
        .arg("--out")
        .arg(out)
        .arg(input))
}

/// `apksigner verify --verbose --print-certs --min-sdk-version MIN
/// [--max-sdk-version MAX] APK`: (success, output). apksigner checks that
/// every Android version in [MIN, MAX] (MAX: the newest) accepts the APK.
pub fn apksigner_verify_range(apk: &Path, min: u32, max: Option<u32>) -> (bool, String) {
    let mut cmd = Command::new("apksigner");
    cmd.args(["verify", "--verbose", "--print-certs"])
        .args(["--min-sdk-version", &min.to_string()]);
    if let Some(m) = max {
        cmd.args(["--max-sdk-version", &m.to_string()]);
    }
    run(cmd.arg(apk))
}

/// Runs `f` over `items` on a few threads (apksigner is a JVM: each run
/// costs a second of CPU, and runs are independent).
pub fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 4);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<R>>> =
        items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                *results[i].lock().expect("lock") = Some(r);
            });
        }
    });
    results
        .into_iter()
        .map(|m| m.into_inner().expect("lock").expect("every item ran"))
        .collect()
}

/// One entry of a ZIP as stored: name, central-directory method, CRC,
/// sizes and the compressed bytes.
#[derive(Clone, Debug)]
pub struct RawEntry {
    /// Entry name.
    pub name: String,
    /// Compression method written to the central directory.
    pub method: u16,
    /// Compression method written to the local header.
    pub local_method: u16,
    /// CRC-32 of the content.
    pub crc: u32,
    /// Uncompressed size.
    pub usize: u32,
    /// The data as stored (compressed or not).
    pub data: Vec<u8>,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The entries of a plain ZIP (no ZIP64, no comment), from its central directory.
pub fn raw_entries(zip: &[u8]) -> Vec<RawEntry> {
    let eocd = zip.len() - 22;
    assert_eq!(le32(zip, eocd), 0x0605_4b50, "EOCD");
    let count = le16(zip, eocd + 10) as usize;
    let mut at = le32(zip, eocd + 16) as usize;
    (0..count)
        .map(|_| {
            assert_eq!(le32(zip, at), 0x0201_4b50, "central record");
            let method = le16(zip, at + 10);
            let (crc, csize, usize) = (le32(zip, at + 16), le32(zip, at + 20), le32(zip, at + 24));
            let (n, x, c) = (
                le16(zip, at + 28) as usize,
                le16(zip, at + 30) as usize,
                le16(zip, at + 32) as usize,
            );
            let lfh = le32(zip, at + 42) as usize;
            let name = String::from_utf8(zip[at + 46..at + 46 + n].to_vec()).expect("name");
            at += 46 + n + x + c;
            let data_at = lfh + 30 + le16(zip, lfh + 26) as usize + le16(zip, lfh + 28) as usize;
            RawEntry {
                name,
                method,
                local_method: method,
                crc,
                usize,
                data: zip[data_at..data_at + csize as usize].to_vec(),
            }
        })
        .collect()
}

/// A stored entry.
pub fn stored(name: &str, content: &[u8]) -> RawEntry {
    RawEntry {
        name: name.into(),
        method: 0,
        local_method: 0,
        crc: crc32(content),
        usize: content.len() as u32,
        data: content.to_vec(),
    }
}

/// CRC-32 (IEEE), bit by bit: fixtures are small.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Writes `entries` as a ZIP, byte by byte. `zip64`: add the ZIP64 end
/// records (and 0xffff counts in the EOCD) as zip tools do past 65,535
/// entries; otherwise the EOCD's 16-bit count is the real one modulo 65,536.
pub fn write_zip(entries: &[RawEntry], zip64: bool) -> Vec<u8> {
    let mut z = Vec::new();
    let mut cd = Vec::new();
    for e in entries {
        let offset = z.len() as u32;
        let head = |method: u16| {
            let mut h = Vec::with_capacity(16);
            h.extend_from_slice(&20u16.to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes());
            h.extend_from_slice(&method.to_le_bytes());
            h.extend_from_slice(&[0, 0, 0x21, 0x3a]);
            h.extend_from_slice(&e.crc.to_le_bytes());
            h.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
            h.extend_from_slice(&e.usize.to_le_bytes());
            h.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            h
        };
        z.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        z.extend(head(e.local_method));
        z.extend_from_slice(&0u16.to_le_bytes());
        z.extend_from_slice(e.name.as_bytes());
        z.extend_from_slice(&e.data);
        cd.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        cd.extend_from_slice(&20u16.to_le_bytes());
        cd.extend(head(e.method));
        cd.extend_from_slice(&[0u8; 12]);
        cd.extend_from_slice(&offset.to_le_bytes());
        cd.extend_from_slice(e.name.as_bytes());
    }
    let cd_offset = z.len() as u64;
    z.extend_from_slice(&cd);
    let n = entries.len() as u64;
    if zip64 {
        let end64 = z.len() as u64;
        z.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
        z.extend_from_slice(&44u64.to_le_bytes());
        z.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        for v in [n, n, cd.len() as u64, cd_offset] {
            z.extend_from_slice(&v.to_le_bytes());
        }
        z.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
        z.extend_from_slice(&0u32.to_le_bytes());
        z.extend_from_slice(&end64.to_le_bytes());
        z.extend_from_slice(&1u32.to_le_bytes());
    }
    let count = if zip64 { 0xffff } else { (n % 65_536) as u16 };
    z.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    z.extend_from_slice(&[0u8; 4]);
    z.extend_from_slice(&count.to_le_bytes());
    z.extend_from_slice(&count.to_le_bytes());
    z.extend_from_slice(&(cd.len() as u32).to_le_bytes());
    z.extend_from_slice(&(cd_offset as u32).to_le_bytes());
    z.extend_from_slice(&0u16.to_le_bytes());
    z
}
