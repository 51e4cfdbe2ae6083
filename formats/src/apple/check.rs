//! Checks of Apple code signatures, run on every output before it is
//! returned (and by [`super::AppleSigner::verify`] and the start-up probe).
//!
//! A signature passes only if, for each Mach-O (each slice of a universal
//! binary, each Mach-O file of a bundle) or DMG:
//! - it has a code directory that is not flagged ad-hoc, and a non-empty CMS
//!   signature (apple-codesign falls back to ad-hoc without a usable key);
//! - the CMS has exactly one signer, whose certificate (found by issuer and
//!   serial among the embedded certificates) is byte for byte OUR leaf;
//! - the CMS signature verifies with that certificate and its message digest
//!   is the digest of the code directory blob as stored;
//! - the code directory's page hashes and special-slot hashes match the bytes
//!   (apple-codesign's `verify_macho` for Mach-O; recomputed here for DMGs:
//!   the content digest and the `koly` trailer digest);
//! - for bundles: `_CodeSignature/CodeResources` exists and its digest is
//!   the one the executable's code directory records;
//! - with `hardened_runtime`, the code directory carries the runtime flag;
//!   with `timestamp_urls`, the signer carries a verifying time-stamp token.
//!
//! Not checked: the chain up to a root (our leaf is compared instead), and
//! the per-file hashes listed inside `CodeResources`.

use std::fs::File;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use anyhow::{anyhow, bail, ensure, Context};
use apple_codesign::dmg::{DmgReader, KolyTrailer};
use apple_codesign::{CodeSignatureFlags, CodeSigningSlot, EmbeddedSignature, MachFile};
use cryptographic_message_syntax::SignedData;
use x509_certificate::CapturedX509Certificate;

use crate::SignError;

/// What our signatures must look like.
pub struct Expect<'a> {
    /// Our leaf certificate.
    pub cert: &'a CapturedX509Certificate,
    /// Whether the hardened runtime flag must be set.
    pub hardened_runtime: bool,
    /// Whether a time-stamp token must be present.
    pub timestamped: bool,
}

/// Runs `f`, turning a panic inside apple-codesign or its parsers into an error.
pub(crate) fn guard<T>(what: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => Err(anyhow!("{what}: the parser panicked")),
    }
}

/// Whether `head` starts like a thin or universal Mach-O.
pub fn is_macho_magic(head: &[u8]) -> bool {
    matches!(
        head.get(..4),
        Some(
            [0xfe, 0xed, 0xfa, 0xce | 0xcf]
                | [0xce | 0xcf, 0xfa, 0xed, 0xfe]
                | [0xca, 0xfe, 0xba, 0xbe | 0xbf]
        )
    )
}

/// Refuses (422) a Mach-O apple-codesign cannot parse or cannot sign.
pub fn precheck_macho(data: &[u8]) -> Result<(), SignError> {
    guard("Mach-O", || {
        let mach = MachFile::parse(data).map_err(|e| anyhow!("not a valid Mach-O: {e}"))?;
        let mut n = 0;
        for macho in mach.iter_macho() {
            macho
                .check_signing_capability()
                .map_err(|e| anyhow!("cannot sign this Mach-O: {e}"))?;
            n += 1;
        }
        ensure!(n > 0, "a universal binary without Mach-O slices");
        Ok(())
    })
    .map_err(|e| SignError::Rejected(format!("{e:#}")))
}

/// Refuses (422) a file whose `koly` trailer does not parse or points
/// outside the file (apple-codesign would write its signature at the
/// offset the trailer names, growing the file without bound).
pub fn precheck_dmg(path: &Path) -> Result<(), SignError> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    guard("DMG", || {
        let koly = KolyTrailer::read_from(&mut f).map_err(|e| anyhow!("not a valid .dmg: {e}"))?;
        let content_end = len
            .checked_sub(512)
            .ok_or_else(|| anyhow!("not a valid .dmg: too short"))?;
        let within = |off: u64, n: u64| off.checked_add(n).is_some_and(|end| end <= content_end);
        ensure!(
            within(koly.plist_offset, koly.plist_length),
            "not a valid .dmg: plist outside the file"
        );
        ensure!(
            within(koly.data_fork_offset, koly.data_fork_length),
            "not a valid .dmg: data fork outside the file"
        );
        ensure!(koly.plist_length > 0, "not a valid .dmg: no resource plist");
        if koly.code_signature_offset != 0 {
            ensure!(
                within(koly.code_signature_offset, koly.code_signature_size),
                "not a valid .dmg: signature outside the file"
            );
        }
        Ok(())
    })
    .map_err(|e| SignError::Rejected(format!("{e:#}")))
}

/// Checks every slice of the Mach-O `data`.
pub fn check_macho(data: &[u8], expect: &Expect<'_>) -> anyhow::Result<()> {
    check_macho_with_resources(data, expect, None).map(|_| ())
}

/// As [`check_macho`]; with `resources` (the bundle's `CodeResources`), a
/// slice that seals resources must seal exactly these. Returns whether every
/// slice sealed them.
fn check_macho_with_resources(
    data: &[u8],
    expect: &Expect<'_>,
    resources: Option<&[u8]>,
) -> anyhow::Result<bool> {
    guard("Mach-O", || {
        let mach = MachFile::parse(data).map_err(|e| anyhow!("not a valid Mach-O: {e}"))?;
        let (mut n, mut sealed) = (0, 0);
        for macho in mach.iter_macho() {
            let slice = macho
                .index
                .map(|i| format!("slice {i}"))
                .unwrap_or_else(|| "Mach-O".into());
            let sig = macho
                .code_signature()
                .map_err(|e| anyhow!("{slice}: {e}"))?
                .ok_or_else(|| anyhow!("{slice}: not signed"))?;
            check_embedded(&sig, expect, true).with_context(|| slice.clone())?;
            let problems = apple_codesign::verify_macho(macho);
            if !problems.is_empty() {
                let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
                bail!("{slice}: {}", list.join("; "));
            }
            if let Some(res) = resources {
                if check_resources(&sig, res).with_context(|| slice.clone())? {
                    sealed += 1;
                }
            }
            n += 1;
        }
        ensure!(n > 0, "no Mach-O slices");
        Ok(sealed == n)
    })
}

/// The checks common to Mach-O and DMG signatures; `code` is whether the
/// signed thing is code (the hardened runtime flag applies).
fn check_embedded(
    sig: &EmbeddedSignature<'_>,
    expect: &Expect<'_>,
    code: bool,
) -> anyhow::Result<()> {
    let cd = sig
        .code_directory()
        .map_err(|e| anyhow!("code directory: {e}"))?
        .ok_or_else(|| anyhow!("no code directory"))?;
    ensure!(
        !cd.flags.contains(CodeSignatureFlags::ADHOC),
        "ad-hoc signature (no key was used)"
    );
    if code && expect.hardened_runtime {
        ensure!(
            cd.flags.contains(CodeSignatureFlags::RUNTIME),
            "hardened runtime flag missing"
        );
    }
    let cd_blob = sig
        .find_slot(CodeSigningSlot::CodeDirectory)
        .ok_or_else(|| anyhow!("no code directory slot"))?;
    let cms = sig
        .signature_data()
        .map_err(|e| anyhow!("signature slot: {e}"))?
        .filter(|d| !d.is_empty())
        .ok_or_else(|| anyhow!("ad-hoc signature (no CMS signature)"))?;
    let signed = SignedData::parse_ber(cms).map_err(|e| anyhow!("CMS: {e}"))?;
    let signers: Vec<_> = signed.signers().collect();
    let [signer] = signers.as_slice() else {
        bail!("CMS has {} signers, expected 1", signers.len());
    };
    let (issuer, serial) = signer
        .certificate_issuer_and_serial()
        .ok_or_else(|| anyhow!("CMS signer is not identified by issuer and serial"))?;
    let cert = signed
        .certificates()
        .find(|c| c.issuer_name() == issuer && c.serial_number_asn1() == serial)
        .ok_or_else(|| anyhow!("CMS does not embed its signer's certificate"))?;
    // The bytes as found (re-encoding a BER-captured certificate can panic).
    ensure!(
        expect.cert.constructed_data() == cert.constructed_data(),
        "signed with the wrong certificate ({:?}, expected {:?})",
        cert.subject_common_name(),
        expect.cert.subject_common_name()
    );
    signer
        .verify_signature_with_signed_data(&signed)
        .map_err(|e| anyhow!("CMS signature does not verify: {e}"))?;
    signer
        .verify_message_digest_with_content(cd_blob.data)
        .map_err(|e| anyhow!("CMS message digest is not the code directory's: {e}"))?;
    if expect.timestamped {
        let token = signer
            .verify_time_stamp_token()
            .map_err(|e| anyhow!("time-stamp token does not verify: {e}"))?;
        ensure!(token.is_some(), "no time-stamp token");
    }
    Ok(())
}

/// Whether the code directory seals resources; if it does, the digest it
/// records must be that of `resources` (the bundle's `CodeResources`).
fn check_resources(sig: &EmbeddedSignature<'_>, resources: &[u8]) -> anyhow::Result<bool> {
    let cd = sig
        .code_directory()
        .map_err(|e| anyhow!("code directory: {e}"))?
        .ok_or_else(|| anyhow!("no code directory"))?;
    let Some(recorded) = cd.special_digests.get(&CodeSigningSlot::ResourceDir) else {
        return Ok(false);
    };
    let actual = cd
        .digest_type
        .digest_data(resources)
        .map_err(|e| anyhow!("{e}"))?;
    ensure!(
        recorded.data.as_ref() == actual.as_slice(),
        "CodeResources digest mismatch"
    );
    Ok(true)
}

/// Checks the signature of the DMG at `path`, recomputing its digests.
pub fn check_dmg(path: &Path, expect: &Expect<'_>) -> anyhow::Result<()> {
    guard("DMG", || {
        let mut f = File::open(path)?;
        let reader = DmgReader::new(&mut f).map_err(|e| anyhow!("not a valid .dmg: {e}"))?;
        let sig = reader
            .embedded_signature()
            .map_err(|e| anyhow!("signature: {e}"))?
            .ok_or_else(|| anyhow!("the DMG is not signed"))?;
        check_embedded(&sig, expect, false)?;
        let cd = sig
            .code_directory()
            .map_err(|e| anyhow!("code directory: {e}"))?
            .ok_or_else(|| anyhow!("no code directory"))?;
        let content = reader
            .digest_content_with(cd.digest_type, &mut f)
            .map_err(|e| anyhow!("hashing the image: {e}"))?;
        let [recorded] = cd.code_digests.as_slice() else {
            bail!("{} code digests, a DMG has 1", cd.code_digests.len());
        };
        ensure!(
            recorded.data.as_ref() == content.data.as_ref(),
            "image content digest mismatch"
        );
        let koly = reader
            .koly()
            .digest_for_code_directory(cd.digest_type)
            .map_err(|e| anyhow!("hashing the trailer: {e}"))?;
        let slot = cd
            .special_digests
            .get(&CodeSigningSlot::RepSpecific)
            .ok_or_else(|| anyhow!("no trailer digest"))?;
        ensure!(
            slot.data.as_ref() == koly.as_slice(),
            "trailer digest mismatch"
        );
        Ok(())
    })
}

/// Checks every Mach-O file of the signed bundle at `app` (symlinks are not
/// followed) and that the bundle's main executable seals its resources.
pub fn check_bundle(app: &Path, expect: &Expect<'_>) -> anyhow::Result<()> {
    if !app.join("Contents/_CodeSignature/CodeResources").is_file() {
        bail!("the bundle has no Contents/_CodeSignature/CodeResources");
    }
    let main_dir = app.join("Contents/MacOS");
    let mut stack = vec![app.to_path_buf()];
    let mut machos = 0usize;
    let mut sealed_main = false;
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = entry.path();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let mut file = super::paths::open_regular(&path)?;
                let mut head = [0u8; 4];
                let n = file.read(&mut head)?;
                if n != 4 || !is_macho_magic(&head) {
                    continue;
                }
                let rel = path
                    .strip_prefix(app)
                    .unwrap_or(&path)
                    .display()
                    .to_string();
                let mut data = head.to_vec();
                file.read_to_end(&mut data)?;
                // Code in some bundle's Contents/MacOS: that bundle's CodeResources.
                let contents = path
                    .parent()
                    .filter(|d| d.ends_with("Contents/MacOS"))
                    .and_then(Path::parent);
                let resources = match contents.map(|c| c.join("_CodeSignature/CodeResources")) {
                    Some(p) if p.is_file() => Some(std::fs::read(p)?),
                    _ => None,
                };
                let sealed = check_macho_with_resources(&data, expect, resources.as_deref())
                    .with_context(|| rel)?;
                sealed_main |= sealed && path.parent() == Some(main_dir.as_path());
                machos += 1;
            }
        }
    }
    ensure!(machos > 0, "no Mach-O code in the bundle");
    ensure!(
        sealed_main,
        "no executable in Contents/MacOS seals the bundle's resources"
    );
    Ok(())
}

/// A minimal valid 64-bit x86_64 Mach-O executable (exit(0) by a raw
/// syscall) for the start-up probe: header, __PAGEZERO, __TEXT with one
/// section, __LINKEDIT, LC_MAIN and LC_BUILD_VERSION (macOS 11).
pub fn minimal_macho() -> Vec<u8> {
    fn u32s(out: &mut Vec<u8>, v: &[u32]) {
        for x in v {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    fn u64s(out: &mut Vec<u8>, v: &[u64]) {
        for x in v {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    fn name16(out: &mut Vec<u8>, s: &str) {
        let mut b = [0u8; 16];
        for (d, c) in b.iter_mut().zip(s.bytes()) {
            *d = c;
        }
        out.extend_from_slice(&b);
    }
    const LC_SEGMENT_64: u32 = 0x19;
    const BASE: u64 = 0x1_0000_0000;
    const CODE_OFF: u32 = 0x800;
    let segment = |out: &mut Vec<u8>,
                   name: &str,
                   vmaddr: u64,
                   vmsize: u64,
                   fileoff: u64,
                   filesize: u64,
                   prot: u32,
                   nsects: u32| {
        u32s(out, &[LC_SEGMENT_64, 72 + 80 * nsects]);
        name16(out, name);
        u64s(out, &[vmaddr, vmsize, fileoff, filesize]);
        u32s(out, &[prot, prot, nsects, 0]);
    };
    let code: &[u8] = &[0xb8, 0x01, 0x00, 0x00, 0x02, 0x31, 0xff, 0x0f, 0x05]; // mov eax,0x2000001; xor edi,edi; syscall
    let mut cmds = Vec::new();
    segment(&mut cmds, "__PAGEZERO", 0, BASE, 0, 0, 0, 0);
    segment(&mut cmds, "__TEXT", BASE, 0x1000, 0, 0x1000, 5, 1);
    name16(&mut cmds, "__text");
    name16(&mut cmds, "__TEXT");
    u64s(&mut cmds, &[BASE + u64::from(CODE_OFF), code.len() as u64]);
    u32s(&mut cmds, &[CODE_OFF, 4, 0, 0, 0x8000_0400, 0, 0, 0]);
    segment(
        &mut cmds,
        "__LINKEDIT",
        BASE + 0x1000,
        0x1000,
        0x1000,
        16,
        1,
        0,
    );
    u32s(&mut cmds, &[0x8000_0028, 24]); // LC_MAIN
    u64s(&mut cmds, &[u64::from(CODE_OFF), 0]);
    u32s(&mut cmds, &[0x32, 24, 1, 0x000b_0000, 0x000b_0000, 0]); // LC_BUILD_VERSION macOS 11.0
    let mut out = Vec::with_capacity(0x1010);
    // magic, CPU_TYPE_X86_64, CPU_SUBTYPE_X86_64_ALL, MH_EXECUTE, ncmds, sizeofcmds,
    // MH_NOUNDEFS | MH_DYLDLINK | MH_TWOLEVEL | MH_PIE, reserved.
    u32s(
        &mut out,
        &[
            0xfeed_facf,
            0x0100_0007,
            3,
            2,
            5,
            cmds.len() as u32,
            0x0020_0085,
            0,
        ],
    );
    out.extend_from_slice(&cmds);
    out.resize(CODE_OFF as usize, 0);
    out.extend_from_slice(code);
    out.resize(0x1010, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_macho_parses_and_can_be_signed() {
        let data = minimal_macho();
        precheck_macho(&data).unwrap();
        let mach = MachFile::parse(&data).unwrap();
        assert_eq!(mach.iter_macho().count(), 1);
    }

    #[test]
    fn garbage_is_rejected_without_panicking() {
        let mut data = minimal_macho();
        data.truncate(100);
        assert!(matches!(precheck_macho(&data), Err(SignError::Rejected(_))));
        assert!(matches!(
            precheck_macho(&[0xcf, 0xfa, 0xed, 0xfe, 1, 2]),
            Err(SignError::Rejected(_))
        ));
    }
}
