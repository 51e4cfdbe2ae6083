//! The start-up probe, one piece for every signer ([`crate::Signer::probe`]):
//! a small input of the signer's own making is signed and verified as a
//! relying party would, then one flipped byte must make verification fail.
//! It proves at start-up that the key was unlocked (or the token logged in),
//! that it signs, and that our verifier is not a rubber stamp: a wrong or
//! locked PIN, a missing key or a failing signature stops the server before it
//! serves anyone. Each signer says only what differs: its input, how it signs
//! (authenticode and apple without a timestamp, so a TSA outage cannot stop a
//! start) and where the byte is flipped.

use std::path::{Path, PathBuf};

use crate::SignError;

/// Where the probe flips a byte.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Tamper {
    /// In the signed output, this many bytes from its start.
    OutputAt(usize),
    /// In the signed output, this many bytes before its end.
    OutputFromEnd(usize),
    /// In the input (a detached signature covers it).
    InputLastByte,
    /// Not checked: the signer's verifier is a third-party library whose own
    /// tests cover it (apple: apple-codesign's code-directory check).
    Skip,
}

/// The probe's files in `scratch`: the input `NAME`, `NAME.signed`,
/// `NAME.tampered`; stale ones from an earlier probe are removed first.
pub(crate) struct Files {
    /// What the signer signs.
    pub(crate) input: PathBuf,
    /// Where its output goes.
    pub(crate) output: PathBuf,
    tampered: PathBuf,
}

fn internal(m: String) -> SignError {
    SignError::Internal(anyhow::anyhow!(m))
}

impl Files {
    /// Writes `input` as `scratch/name`.
    pub(crate) fn new(scratch: &Path, name: &str, input: &[u8]) -> Result<Files, SignError> {
        let files = Files {
            input: scratch.join(name),
            output: scratch.join(format!("{name}.signed")),
            tampered: scratch.join(format!("{name}.tampered")),
        };
        for p in [&files.output, &files.tampered] {
            match std::fs::remove_file(p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(internal(format!(
                        "probe: cannot remove {}: {e}",
                        p.display()
                    )))
                }
                _ => {}
            }
        }
        std::fs::write(&files.input, input).map_err(|e| {
            internal(format!(
                "probe: cannot write {}: {e}",
                files.input.display()
            ))
        })?;
        Ok(files)
    }
}

/// Signs `files.input` with `sign`, checks the output with `verify` (input,
/// signed), then checks that `verify` refuses it once `tamper` flipped a byte.
/// `what` names the signature in messages ("MAR", "APK", …).
pub(crate) fn run(
    what: &str,
    files: &Files,
    tamper: Tamper,
    sign: impl FnOnce(&Path, &Path) -> Result<(), SignError>,
    verify: impl Fn(&Path, &Path) -> Result<(), SignError>,
) -> Result<(), SignError> {
    sign(&files.input, &files.output)?;
    verify(&files.input, &files.output).map_err(|e| {
        internal(format!(
            "probe: our own {what} signature does not verify: {e}"
        ))
    })?;
    let flip = |from: &Path, at: &dyn Fn(usize) -> usize| -> Result<(), SignError> {
        let mut data = std::fs::read(from)?;
        let i = at(data.len());
        match data.get_mut(i) {
            Some(b) => *b ^= 0x01,
            None => {
                return Err(internal(format!(
                    "probe: the {what} probe file is too short to tamper with"
                )))
            }
        }
        std::fs::write(&files.tampered, &data).map_err(|e| {
            internal(format!(
                "probe: cannot write {}: {e}",
                files.tampered.display()
            ))
        })
    };
    let still_verifies = match tamper {
        Tamper::Skip => return Ok(()),
        Tamper::OutputAt(offset) => {
            flip(&files.output, &|_| offset)?;
            verify(&files.input, &files.tampered).is_ok()
        }
        Tamper::OutputFromEnd(back) => {
            flip(&files.output, &|len| len.saturating_sub(back))?;
            verify(&files.input, &files.tampered).is_ok()
        }
        Tamper::InputLastByte => {
            flip(&files.input, &|len| len.saturating_sub(1))?;
            verify(&files.tampered, &files.output).is_ok()
        }
    };
    if still_verifies {
        return Err(internal(format!(
            "probe: a {what} signature verified over a modified file"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "Signs" by appending the input's SHA-256; "verifies" by recomputing it.
    fn sign(i: &Path, o: &Path) -> Result<(), SignError> {
        use sha2::Digest as _;
        let mut data = std::fs::read(i)?;
        let digest = sha2::Sha256::digest(&data);
        data.extend_from_slice(&digest);
        std::fs::write(o, data)?;
        Ok(())
    }

    fn verify(i: &Path, o: &Path) -> Result<(), SignError> {
        use sha2::Digest as _;
        let (input, signed) = (std::fs::read(i)?, std::fs::read(o)?);
        let (body, digest) = signed.split_at(signed.len().saturating_sub(32));
        if body == input.as_slice() && digest == sha2::Sha256::digest(&input).as_slice() {
            Ok(())
        } else {
            Err(SignError::Rejected("does not verify".into()))
        }
    }

    #[test]
    fn a_good_verifier_passes_and_a_rubber_stamp_or_a_failing_key_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        for tamper in [
            Tamper::OutputAt(3),
            Tamper::OutputFromEnd(5),
            Tamper::InputLastByte,
        ] {
            let files = Files::new(dir.path(), "p.bin", b"probe input").unwrap();
            run("T", &files, tamper, sign, verify).unwrap();
            // Run again over the files of the first run: stale outputs are removed.
            let files = Files::new(dir.path(), "p.bin", b"probe input").unwrap();
            let e = run("T", &files, tamper, sign, |_, _| Ok(())).unwrap_err();
            assert!(
                e.to_string()
                    .contains("a T signature verified over a modified file"),
                "{e}"
            );
        }
        let files = Files::new(dir.path(), "q.bin", b"x").unwrap();
        let e = run(
            "T",
            &files,
            Tamper::Skip,
            |_, _| Err(SignError::Key("the token is locked".into())),
            verify,
        )
        .unwrap_err();
        assert!(e.to_string().contains("the token is locked"), "{e}");
        let e = run("T", &files, Tamper::Skip, sign, |_, _| {
            Err(SignError::Rejected("bad".into()))
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("our own T signature does not verify"),
            "{e}"
        );
        let e = run("T", &files, Tamper::OutputAt(1000), sign, verify).unwrap_err();
        assert!(e.to_string().contains("too short"), "{e}");
    }
}
