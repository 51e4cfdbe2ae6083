//! Fixtures for the Windows containers beyond PE, made with the real tools:
//! MSI packages with `wixl` (msitools), cabinets with `gcab`, catalogs with
//! `openssl asn1parse -genconf` (a PKCS#7 around a certificate trust list, as
//! `makecat` writes them), PowerShell text in several encodings and MSIX
//! packages and bundles (`make_msix.py`: Python's zipfile, a real block map); plus
//! `osslsigncode sign` as the reference signer.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{certs, passphrase, repo, run};

/// Builds an MSI installing one file `hello.txt` (holding `text`) with
/// `wixl`; the file goes into an embedded cabinet (a stream of the MSI).
pub fn build_msi(dir: &Path, name: &str, text: &str) -> PathBuf {
    let work = dir.join(format!("{name}.d"));
    std::fs::create_dir_all(&work).expect("mkdir");
    std::fs::write(work.join("hello.txt"), text).expect("write payload");
    let wxs = work.join("product.wxs");
    std::fs::write(
        &wxs,
        r#"<?xml version="1.0" encoding="utf-8"?>
<Wix xmlns="http://schemas.microsoft.com/wix/2006/wi">
  <Product Id="*" Name="signing-server test" Language="1033" Version="1.0.0"
           Manufacturer="signing-server tests" UpgradeCode="6f8b0e52-3a8e-4d7c-9f4a-1c2b3d4e5f60">
    <Package InstallerVersion="200" Compressed="yes" InstallScope="perMachine"/>
    <Media Id="1" Cabinet="payload.cab" EmbedCab="yes"/>
    <Directory Id="TARGETDIR" Name="SourceDir">
      <Directory Id="ProgramFilesFolder">
        <Directory Id="INSTALLDIR" Name="SigningServerTest">
          <Component Id="Hello" Guid="0b6a3c1e-2f4d-4e8a-9b7c-5d6e7f8a9b0c">
            <File Id="HelloTxt" Source="hello.txt"/>
          </Component>
        </Directory>
      </Directory>
    </Directory>
    <Feature Id="Main" Level="1"><ComponentRef Id="Hello"/></Feature>
  </Product>
</Wix>
"#,
    )
    .expect("write wxs");
    let out = dir.join(format!("{name}.msi"));
    let (ok, text) = run(Command::new("wixl")
        .current_dir(&work)
        .arg("-o")
        .arg(&out)
        .arg(&wxs));
    assert!(ok, "wixl failed (apt-get install wixl msitools): {text}");
    out
}

/// Builds a cabinet of two files with `gcab`; `compress`: MSZIP (`-z`).
pub fn build_cab(dir: &Path, name: &str, compress: bool) -> PathBuf {
    let work = dir.join(format!("{name}.d"));
    std::fs::create_dir_all(&work).expect("mkdir");
    std::fs::write(work.join("a.txt"), "first file of the cabinet\n".repeat(50)).expect("a");
    std::fs::write(work.join("b.bin"), crate::data(70_000, 7)).expect("b");
    let out = dir.join(format!("{name}.cab"));
    let mut cmd = Command::new("gcab");
    cmd.current_dir(&work).arg("-c");
    if compress {
        cmd.arg("-z");
    }
    let (ok, text) = run(cmd.arg(&out).arg("a.txt").arg("b.bin"));
    assert!(ok, "gcab failed (apt-get install gcab): {text}");
    out
}

/// Builds an unsigned catalog listing one member, the file whose SHA-256
/// is `member_sha256` (hex), with `openssl asn1parse -genconf`.
pub fn build_cat(dir: &Path, name: &str, member_sha256: &str) -> PathBuf {
    let hash = member_sha256.to_ascii_uppercase();
    // The member's tag: its hash in hex, as UTF-16LE (what makecat writes).
    let tag: String = hash
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .map(|b| format!("{b:02X}"))
        .collect();
    let cnf = dir.join(format!("{name}.cnf"));
    std::fs::write(
        &cnf,
        format!(
            "asn1 = SEQUENCE:ci\n\
             [ci]\ntype = OID:1.2.840.113549.1.7.2\nsd = EXPLICIT:0,SEQUENCE:sd\n\
             [sd]\nversion = INTEGER:1\nalgs = SET:empty\ncontent = SEQUENCE:encap\nsigners = SET:empty\n\
             [empty]\n\
             [encap]\ntype = OID:1.3.6.1.4.1.311.10.1\nctl = EXPLICIT:0,SEQUENCE:ctl\n\
             [ctl]\nusage = SEQUENCE:usage\nid = FORMAT:HEX,OCTETSTRING:0123456789ABCDEF0123456789ABCDEF\n\
             time = UTCTIME:261126000000Z\nalg = SEQUENCE:memberalg\nsubjects = SEQUENCE:subjects\n\
             [usage]\no = OID:1.3.6.1.4.1.311.12.1.1\n\
             [memberalg]\no = OID:1.3.6.1.4.1.311.12.1.2\nn = NULL\n\
             [subjects]\ns1 = SEQUENCE:subject1\n\
             [subject1]\ntag = FORMAT:HEX,OCTETSTRING:{tag}\nattrs = SET:attrs1\n\
             [attrs1]\na1 = SEQUENCE:memberinfo\na2 = SEQUENCE:indirect\n\
             [memberinfo]\ntype = OID:1.3.6.1.4.1.311.12.2.2\nv = SET:memberinfo_v\n\
             [memberinfo_v]\nv = SEQUENCE:memberinfo_seq\n\
             [memberinfo_seq]\nguid = BMPSTRING:{{C689AAB8-8E78-11D0-8C47-00C04FC295EE}}\nver = INTEGER:512\n\
             [indirect]\ntype = OID:1.3.6.1.4.1.311.2.1.4\nv = SET:indirect_v\n\
             [indirect_v]\nv = SEQUENCE:idc\n\
             [idc]\ndata = SEQUENCE:idc_data\ndigest = SEQUENCE:idc_digest\n\
             [idc_data]\ntype = OID:1.3.6.1.4.1.311.2.1.25\n\
             [idc_digest]\nalg = SEQUENCE:sha256\nd = FORMAT:HEX,OCTETSTRING:{hash}\n\
             [sha256]\no = OID:sha256\nn = NULL\n"
        ),
    )
    .expect("write cnf");
    let out = dir.join(format!("{name}.cat"));
    let (ok, text) = run(Command::new("openssl")
        .args(["asn1parse", "-noout", "-genconf"])
        .arg(&cnf)
        .arg("-out")
        .arg(&out));
    assert!(ok, "openssl asn1parse -genconf failed: {text}");
    out
}

/// A PowerShell script: `crlf` line ends (LF otherwise), a UTF-8 BOM, or
/// UTF-16LE with its BOM.
pub fn ps1_text(crlf: bool, encoding: TextEncoding) -> Vec<u8> {
    let eol = if crlf { "\r\n" } else { "\n" };
    let text = [
        "param([string]$Name = 'wörld')",
        "# A comment: ünïcödé ✓",
        "Write-Output \"Hello, $Name\"",
        "",
    ]
    .join(eol);
    match encoding {
        TextEncoding::Utf8 => text.into_bytes(),
        TextEncoding::Utf8Bom => [&[0xef, 0xbb, 0xbf][..], text.as_bytes()].concat(),
        TextEncoding::Utf16Le => [0xff, 0xfe]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
            .collect(),
    }
}

/// How [`ps1_text`] encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEncoding {
    /// UTF-8 without a BOM.
    Utf8,
    /// UTF-8 with EF BB BF.
    Utf8Bom,
    /// UTF-16LE with FF FE.
    Utf16Le,
}

/// Builds an MSIX package `dir/name` with `tests/src/make_msix.py`, which
/// takes `args` (`--bundle`, `--stream` for data descriptors, `--hash sha384`,
/// `--no-block-map`, `--payload N`).
pub fn build_msix(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let (ok, text) = run(Command::new("python3")
        .arg(repo().join("tests/src/make_msix.py"))
        .arg(&out)
        .args(args));
    assert!(ok, "make_msix.py {args:?}: {text}");
    out
}

/// Whether Python's zipfile reads every entry of `zip` back with a good CRC.
pub fn zip_entries_intact(zip: &Path) -> (bool, String) {
    run(Command::new("python3")
        .arg("-c")
        .arg("import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); bad = z.testzip(); print(bad or 'ok', len(z.namelist())); sys.exit(bad is not None)")
        .arg(zip))
}

/// Signs `input` into `output` with osslsigncode and the RSA test key,
/// extra arguments `extra`: (success, output).
pub fn osslsigncode_sign(input: &Path, output: &Path, extra: &[&str]) -> (bool, String) {
    let c = certs().join("authenticode");
    run(Command::new("osslsigncode")
        .arg("sign")
        .args(extra)
        .arg("-certs")
        .arg(c.join("rsa-chain.pem"))
        .arg("-key")
        .arg(c.join("rsa.key"))
        .arg("-pass")
        .arg(passphrase().trim_end())
        .arg("-in")
        .arg(input)
        .arg("-out")
        .arg(output))
}

/// How many signatures osslsigncode counted in its verify output.
pub fn signature_count(verify_output: &str) -> Option<usize> {
    verify_output
        .lines()
        .find_map(|l| l.strip_prefix("Number of verified signatures: "))
        .and_then(|n| n.trim().parse().ok())
}

/// Panics, saying why, unless osslsigncode is 2.9 or later: 2.5 (Debian
/// bookworm's package) knows neither catalogs nor scripts, so its verdict on
/// them would say nothing about our signatures.
pub fn require_osslsigncode_2_9() {
    let (_, text) = run(Command::new("osslsigncode").arg("--version"));
    let version = text
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .trim_end_matches(',')
        .to_string();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    assert!(
        (major, minor) >= (2, 9),
        "these tests need osslsigncode 2.9 or later (catalogs, scripts); found {version:?}: {text}"
    );
}
