//! Helpers for the Apple signer's tests: Mach-O inputs built with clang +
//! ld64.lld (Darwin targets, no SDK), universal binaries with llvm-lipo,
//! `.app` tarballs, DMGs (apple-dmg), and the third-party checks: `rcodesign`
//! and `openssl cms -verify` on the CMS blob cut out of the code signature.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{certs, run, ServerOpts};

/// A server config with formats `macapp` and `dmg` (type apple, one key:
/// one passphrase) plus `extra` lines in both sections.
pub fn apple_opts(extra: &str) -> ServerOpts {
    let c = certs().join("apple");
    let section = |name: &str| {
        format!(
            "[format:{name}]\ntype = apple\nkey = {}\ncert = {}\n{extra}\n",
            c.join("developer-id.key").display(),
            c.join("chain.pem").display()
        )
    };
    ServerOpts {
        formats: format!("{}{}", section("macapp"), section("dmg")),
        ..ServerOpts::default()
    }
}

/// The first of `names` found on PATH.
fn tool(names: &[&str]) -> String {
    for n in names {
        if Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {n}"))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
        {
            return n.to_string();
        }
    }
    panic!("none of {names:?} on PATH: run scripts/setup.sh (apt: clang lld llvm)");
}

/// A Darwin Mach-O made by clang + ld64.lld without an SDK: `kind` is
/// `exe` (exits through a raw syscall) or `dylib`; `arch` x86_64 or arm64.
pub fn build_macho(dir: &Path, arch: &str, kind: &str) -> PathBuf {
    let src = dir.join("m.c");
    std::fs::write(
        &src,
        "int answer(void) { return 42; }\n\
         int main(void) {\n\
         #if defined(__x86_64__)\n  __asm__ volatile(\"mov $0x2000001, %eax\\n xor %edi, %edi\\n syscall\");\n\
         #else\n  __asm__ volatile(\"mov x0, #0\\n mov x16, #1\\n svc #0x80\");\n#endif\n  return 0;\n}\n",
    )
    .unwrap();
    let out = dir.join(format!("{kind}-{arch}"));
    let clang = tool(&["clang", "clang-14", "clang-16"]);
    let mut cmd = Command::new(clang);
    cmd.args([
        "-target",
        &format!("{arch}-apple-macos11"),
        "-fuse-ld=lld",
        "-nostdlib",
        "-O1",
    ]);
    match kind {
        "exe" => cmd.args(["-Wl,-e,_main"]),
        "dylib" => cmd.args(["-dynamiclib"]),
        _ => panic!("kind {kind}"),
    };
    let (ok, text) = run(cmd.arg("-o").arg(&out).arg(&src));
    assert!(ok, "clang could not link a Darwin Mach-O: {text}");
    out
}

/// `llvm-lipo -create` of `parts`.
pub fn lipo(parts: &[&Path], out: &Path) {
    let lipo = tool(&["llvm-lipo", "llvm-lipo-14", "llvm-lipo-16"]);
    let (ok, text) = run(Command::new(lipo)
        .arg("-create")
        .args(parts)
        .arg("-output")
        .arg(out));
    assert!(ok, "llvm-lipo: {text}");
}

/// The `rcodesign` binary of scripts/setup.sh, if it was built.
pub fn rcodesign() -> Option<PathBuf> {
    let root = std::env::var_os("SIGNING_RCODESIGN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/signing-server/rcodesign/bin/rcodesign")
        });
    root.is_file().then_some(root)
}

/// `rcodesign verify FILE`: (whether it printed `no problems detected!`, output).
pub fn rcodesign_verify(file: &Path) -> (bool, String) {
    let exe = rcodesign().expect("rcodesign missing: run scripts/setup.sh");
    let (ok, out) = run(Command::new(exe).arg("verify").arg(file));
    (ok && out.contains("no problems detected!"), out)
}

fn be32(d: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(d[at..at + 4].try_into().unwrap())
}
fn le32(d: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(d[at..at + 4].try_into().unwrap())
}

/// One embedded signature: the code directory blob (slot 0) and the CMS
/// payload (slot 0x10000), as bytes.
#[derive(Debug, Clone)]
pub struct Blobs {
    /// The code directory, magic and length included (the CMS content).
    pub code_directory: Vec<u8>,
    /// The CMS SignedData (DER), empty if ad-hoc.
    pub cms: Vec<u8>,
}

/// Parses a code-signing superblob (magic 0xfade0cc0).
pub fn superblob(sb: &[u8]) -> Blobs {
    assert_eq!(
        be32(sb, 0),
        0xfade_0cc0,
        "not an embedded signature superblob"
    );
    let count = be32(sb, 8) as usize;
    let (mut cd, mut cms) = (None, None);
    for i in 0..count {
        let (ty, off) = (be32(sb, 12 + 8 * i), be32(sb, 16 + 8 * i) as usize);
        let len = be32(sb, off + 4) as usize;
        let blob = &sb[off..off + len];
        match ty {
            0 => cd = Some(blob.to_vec()),
            0x10000 => {
                assert_eq!(be32(blob, 0), 0xfade_0b01, "CMS wrapper magic");
                cms = Some(blob[8..].to_vec());
            }
            _ => {}
        }
    }
    Blobs {
        code_directory: cd.expect("no code directory"),
        cms: cms.unwrap_or_default(),
    }
}

/// The signature blobs of each slice of a thin or universal Mach-O.
pub fn macho_blobs(data: &[u8]) -> Vec<Blobs> {
    if be32(data, 0) == 0xcafe_babe {
        let n = be32(data, 4) as usize;
        return (0..n)
            .flat_map(|i| {
                let (off, size) = (
                    be32(data, 8 + 20 * i + 8) as usize,
                    be32(data, 8 + 20 * i + 12) as usize,
                );
                macho_blobs(&data[off..off + size])
            })
            .collect();
    }
    assert_eq!(
        le32(data, 0),
        0xfeed_facf,
        "64-bit little-endian Mach-O expected"
    );
    let ncmds = le32(data, 16) as usize;
    let mut at = 32;
    for _ in 0..ncmds {
        let (cmd, size) = (le32(data, at), le32(data, at + 4) as usize);
        if cmd == 0x1d {
            let (off, len) = (le32(data, at + 8) as usize, le32(data, at + 12) as usize);
            return vec![superblob(&data[off..off + len])];
        }
        at += size;
    }
    panic!("no LC_CODE_SIGNATURE");
}

/// The signature blobs of a DMG (from its `koly` trailer).
pub fn dmg_blobs(data: &[u8]) -> Blobs {
    let koly = &data[data.len() - 512..];
    assert_eq!(&koly[..4], b"koly");
    let be64 = |at: usize| u64::from_be_bytes(koly[at..at + 8].try_into().unwrap()) as usize;
    // code_signature_offset / size follow plist_offset, plist_length and reserved1[8].
    let (off, len) = (be64(0x128), be64(0x130));
    assert!(off != 0 && len != 0, "DMG not signed");
    superblob(&data[off..off + len])
}

/// `openssl cms -verify -purpose any -ignore_critical -CAfile <test Apple CA>`
/// of `blobs.cms` over its detached content, the code directory. Returns
/// (success, output, the signer certificate as PEM).
pub fn openssl_cms_verify(blobs: &Blobs) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (cms, cd, signer) = (
        dir.path().join("cms.der"),
        dir.path().join("cd.bin"),
        dir.path().join("signer.pem"),
    );
    std::fs::write(&cms, &blobs.cms).unwrap();
    std::fs::write(&cd, &blobs.code_directory).unwrap();
    let (ok, out) = run(Command::new("openssl")
        .args([
            "cms",
            "-verify",
            "-purpose",
            "any",
            "-ignore_critical",
            "-binary",
            "-inform",
            "DER",
            "-CAfile",
        ])
        .arg(certs().join("apple/ca.pem"))
        .arg("-in")
        .arg(&cms)
        .arg("-content")
        .arg(&cd)
        .arg("-signer")
        .arg(&signer)
        .args(["-out", "/dev/null"]));
    let pem = std::fs::read_to_string(&signer).unwrap_or_default();
    (ok, out, pem)
}

/// The PEM certificate at `path`, normalised through openssl (for comparisons).
pub fn cert_pem(path: &Path) -> String {
    let (ok, out) = run(Command::new("openssl").args(["x509", "-in"]).arg(path));
    assert!(ok, "{out}");
    out
}

/// Asserts `blobs` carries a CMS signature by our Developer ID test leaf
/// that openssl verifies against the test CA, and that a changed code
/// directory does not verify.
pub fn assert_cms_ok(blobs: &Blobs) {
    assert!(!blobs.cms.is_empty(), "ad-hoc signature: no CMS blob");
    let (ok, out, signer) = openssl_cms_verify(blobs);
    assert!(ok, "openssl cms -verify refused our signature: {out}");
    assert!(out.contains("Verification successful"), "{out}");
    let ours = cert_pem(&certs().join("apple/developer-id.pem"));
    let signer_path = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(signer_path.path(), &signer).unwrap();
    assert_eq!(
        cert_pem(signer_path.path()),
        ours,
        "signed by another certificate"
    );
    let mut bad = blobs.clone();
    let last = bad.code_directory.len() - 1;
    bad.code_directory[last] ^= 1;
    let (ok, out, _) = openssl_cms_verify(&bad);
    assert!(!ok, "openssl accepted a changed code directory: {out}");
}

/// A `.tar.gz` of a Firefox.app-like bundle: main executable, a nested
/// framework dylib (signed first), a helper app, resources, a symlink.
pub fn app_tarball(dir: &Path, name: &str) -> Vec<u8> {
    let root = dir.join("src");
    let app = root.join(format!("{name}.app"));
    let contents = app.join("Contents");
    for d in ["MacOS", "Resources", "Frameworks", "Library/LaunchServices"] {
        std::fs::create_dir_all(contents.join(d)).unwrap();
    }
    let plist = |exe: &str, id: &str| {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \
             \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n<plist version=\"1.0\"><dict>\
             <key>CFBundleExecutable</key><string>{exe}</string>\
             <key>CFBundleIdentifier</key><string>{id}</string>\
             <key>CFBundleName</key><string>{exe}</string>\
             <key>CFBundlePackageType</key><string>APPL</string>\
             <key>CFBundleShortVersionString</key><string>1.0</string>\
             <key>CFBundleVersion</key><string>1.0</string></dict></plist>\n"
        )
    };
    std::fs::write(
        contents.join("Info.plist"),
        plist("firefox", "org.mozilla.firefox.test"),
    )
    .unwrap();
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(
        build_macho(&bin, "x86_64", "exe"),
        contents.join("MacOS/firefox"),
    )
    .unwrap();
    std::fs::copy(
        build_macho(&bin, "x86_64", "dylib"),
        contents.join("MacOS/libxul.dylib"),
    )
    .unwrap();
    std::fs::write(contents.join("Resources/omni.ja"), crate::data(100_000, 7)).unwrap();
    std::fs::write(
        contents.join("Resources/application.ini"),
        "[App]\nName=Firefox\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("../MacOS/firefox", contents.join("Resources/firefox-link"))
        .unwrap();
    // A nested helper app, signed before the outer bundle.
    let helper = contents.join("Library/LaunchServices/helper.app/Contents");
    std::fs::create_dir_all(helper.join("MacOS")).unwrap();
    std::fs::write(
        helper.join("Info.plist"),
        plist("helper", "org.mozilla.firefox.helper"),
    )
    .unwrap();
    std::fs::copy(contents.join("MacOS/firefox"), helper.join("MacOS/helper")).unwrap();
    let out = dir.join(format!("{name}.tar.gz"));
    let (ok, text) = run(Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-czf")
        .arg(&out)
        .arg(format!("{name}.app")));
    assert!(ok, "{text}");
    std::fs::read(out).unwrap()
}

/// Unpacks the `.tar.gz` `data` into `dir` with GNU tar; returns its listing.
pub fn untar(data: &[u8], dir: &Path) -> Vec<String> {
    let f = dir.join("in.tar.gz");
    std::fs::write(&f, data).unwrap();
    let (ok, out) = run(Command::new("tar").arg("-C").arg(dir).arg("-xzvf").arg(&f));
    assert!(ok, "GNU tar cannot read our output: {out}");
    let mut list: Vec<String> = out
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .filter(|l| !l.is_empty())
        .collect();
    list.sort();
    list
}

/// A small DMG (FAT32 volume holding `file`) made by the apple-dmg crate.
pub fn build_dmg(dir: &Path, file: &Path) -> Vec<u8> {
    let src = dir.join("dmg-src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::copy(file, src.join("firefox")).unwrap();
    let out = dir.join("image.dmg");
    apple_dmg::create_dmg(&src, &out, "FIREFOX", 2 * 1024 * 64).expect("apple-dmg");
    std::fs::read(out).unwrap()
}

/// A local RFC 3161 time-stamping authority on loopback: each HTTP POST body
/// (a TimeStampReq) is answered by `openssl ts -reply` with the test TSA
/// (certs/apple/tsa.pem). Returns its URL; the thread lives as long as the test.
pub fn local_tsa() -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/tsa", listener.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap().keep();
    let c = certs().join("apple");
    let cnf = dir.join("tsa.cnf");
    std::fs::write(
        &cnf,
        format!(
            "[tsa]\ndefault_tsa = tsa_config\n[tsa_config]\ndir = {d}\nserial = {d}/serial\nsigner_cert = {cert}\n\
             certs = {ca}\nsigner_key = {key}\nsigner_digest = sha256\ndefault_policy = 1.2.3.4.1\n\
             digests = sha256, sha384, sha512\naccuracy = secs:1\nordering = yes\ness_cert_id_chain = no\n\
             ess_cert_id_alg = sha256\n",
            d = dir.display(),
            cert = c.join("tsa.pem").display(),
            ca = c.join("ca.pem").display(),
            key = c.join("tsa.key").display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("serial"), "01\n").unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let (q, r) = (dir.join("req.tsq"), dir.join("resp.tsr"));
            std::fs::write(&q, &body).unwrap();
            let (ok, out) = run(Command::new("openssl")
                .args(["ts", "-reply", "-config"])
                .arg(&cnf)
                .arg("-queryfile")
                .arg(&q)
                .arg("-out")
                .arg(&r));
            let resp = if ok {
                std::fs::read(&r).unwrap()
            } else {
                eprintln!("openssl ts -reply: {out}");
                Vec::new()
            };
            let status = if ok {
                "200 OK"
            } else {
                "500 Internal Server Error"
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/timestamp-reply\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                resp.len()
            );
            let _ = stream
                .write_all(head.as_bytes())
                .and_then(|_| stream.write_all(&resp));
        }
    });
    url
}
