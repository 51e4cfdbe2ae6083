//! Which Windows container an input is, and signing and checking the ones
//! beyond PE ([`super::msi`], [`super::cab`], [`super::cat`],
//! [`super::script`], [`super::appx`]) with the signer's key, chain, digest and TSAs.
//!
//! The container is told by the content (magic numbers), never by the
//! client's file name, except for scripts, which have no magic: their name's
//! extension (a label, never a path) chooses the comment syntax, as
//! osslsigncode and signtool do. Each container's signature replaces any
//! signature the input had: the output carries exactly one, ours.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use cms::signed_data::SignedData;
use const_oid::ObjectIdentifier;

use super::script::Syntax;
use super::{appx, cab, cat, internal, msi, pkcs7, script, AuthenticodeSigner, Resign};
use crate::signed_data;
use crate::SignError;

/// What an input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Container {
    Pe,
    Msi,
    Cab,
    Cat,
    Script(Syntax),
    /// An MSIX/APPX package or bundle (a ZIP archive).
    Appx,
}

impl Container {
    fn name(self) -> &'static str {
        match self {
            Container::Pe => "PE file",
            Container::Msi => "MSI",
            Container::Cab => "cabinet",
            Container::Cat => "catalog",
            Container::Script(_) => "script",
            Container::Appx => "MSIX/APPX package",
        }
    }
}

/// Tells the container of `file` from its first bytes; text that is none of
/// them is a script if `script` (from the client's file name `label`, or
/// from a signature block) gives its syntax.
pub(crate) fn detect(
    file: &mut File,
    script: Option<Syntax>,
    label: &str,
) -> Result<Container, SignError> {
    let mut head = Vec::with_capacity(32);
    (&mut *file).take(32).read_to_end(&mut head)?;
    file.seek(SeekFrom::Start(0))?;
    if head.starts_with(b"MZ") {
        return Ok(Container::Pe);
    }
    if head.starts_with(&msi::MAGIC) {
        return Ok(Container::Msi);
    }
    if head.starts_with(b"MSCF") {
        return Ok(Container::Cab);
    }
    if head.starts_with(b"PK\x03\x04") {
        return Ok(Container::Appx);
    }
    if cat::looks_like(&head) {
        return Ok(Container::Cat);
    }
    if let Some(s) = script {
        return Ok(Container::Script(s));
    }
    Err(SignError::Rejected(format!(
        "not a valid PE file: no MZ signature at offset 0; nor is it, by its content, an MSI, \
         a cabinet, a catalog or an MSIX/APPX package, nor by its name ({}) a script ({})",
        script::label(label),
        script::EXTENSIONS.join(", ")
    )))
}

/// Creates the output file, which must not exist yet.
pub(super) fn create(output: &Path) -> Result<File, SignError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(output)
        .map_err(|e| internal(format!("cannot create {}: {e}", output.display())))
}

impl AuthenticodeSigner {
    /// The DER `ContentInfo` of our SignedData over `content` (a DER value
    /// of type `content_type`), with an RFC 3161 timestamp if `timestamp`: the
    /// one signing step of every container, PE included.
    pub(super) fn signed_data_der(
        &self,
        content_type: ObjectIdentifier,
        content: &[u8],
        timestamp: bool,
    ) -> Result<Vec<u8>, SignError> {
        let params = pkcs7::SignParams {
            alg: self.alg,
            kind: self.kind,
            leaf: &self.leaf,
            chain: &self.chain,
            program_name: self.program_name.as_deref(),
            program_url: self.program_url.as_deref(),
        };
        // A token fault must stay a SignError::Unavailable (503), not become a 500.
        let mut key_error = None;
        let built = pkcs7::build_for(&params, content_type, content, |data| {
            self.key.sign(self.alg.key_hash(), data).map_err(|e| {
                let shown = e.to_string();
                key_error = Some(e);
                shown
            })
        });
        let mut unfinished = match built {
            Ok(u) => u,
            Err(m) => return Err(key_error.unwrap_or_else(|| internal(m))),
        };
        if let Some(tsa) = self.timestamps.as_ref().filter(|_| timestamp) {
            let token = tsa
                .stamp(self.alg, unfinished.signature())
                .map_err(internal)?;
            unfinished.add_timestamp(&token).map_err(internal)?;
        }
        unfinished.finish().map_err(internal)
    }

    /// The SignedData for an `SpcIndirectDataContent` of data `{data_type, data_value}`.
    pub(super) fn indirect_der(
        &self,
        data_type: ObjectIdentifier,
        data_value: &[u8],
        digest: &[u8],
        timestamp: bool,
    ) -> Result<Vec<u8>, SignError> {
        let content = pkcs7::spc_indirect_data_for(data_type, data_value, self.alg, digest)
            .map_err(internal)?;
        self.signed_data_der(pkcs7::SPC_INDIRECT_DATA, &content, timestamp)
    }

    fn refuse_signed(&self, c: Container, signed: bool) -> Result<(), SignError> {
        if signed && self.resign == Resign::Refuse {
            return Err(SignError::Rejected(format!(
                "the {} is already signed (this format is configured with resign = refuse)",
                c.name()
            )));
        }
        Ok(())
    }

    /// Signs `input`, a container other than PE, into the new file `output`.
    pub(super) fn sign_container(
        &self,
        c: Container,
        input: &mut File,
        output: &Path,
        timestamp: bool,
    ) -> Result<(), SignError> {
        let len = input.metadata()?.len();
        match c {
            Container::Pe => Err(internal("sign_container called for a PE file")),
            Container::Msi => {
                // Check the input before writing anything.
                let probe = msi::open(input.try_clone()?)?;
                self.refuse_signed(c, msi::is_signed(&probe)?)?;
                drop(probe);
                let (cf, digest) = msi::copy_unsigned_and_hash(input, create(output)?, self.alg)?;
                let (data_type, value) = msi::indirect_data();
                let der = self.indirect_der(data_type, &value, &digest, timestamp)?;
                msi::sign_and_check(cf, &der, &digest, self.alg)
            }
            Container::Cab => {
                let l = cab::parse(input, len)?;
                self.refuse_signed(c, l.signature.is_some())?;
                let mut out = create(output)?;
                let (digest, body_len) =
                    cab::copy_unsigned_and_hash(input, &l, &mut out, self.alg)?;
                let (data_type, value) = cab::indirect_data();
                let der = self.indirect_der(data_type, &value, &digest, timestamp)?;
                cab::write_signature(&mut out, body_len, &der)?;
                out.sync_data()?;
                self.check_written(c, output)
            }
            Container::Cat => {
                let parsed = cat::parse(input, len)?;
                self.refuse_signed(c, parsed.signed)?;
                let der = self.signed_data_der(pkcs7::MS_CTL, &parsed.content, timestamp)?;
                let mut out = create(output)?;
                out.write_all(&der)?;
                out.sync_data()?;
                Ok(())
            }
            Container::Script(syntax) => {
                let l = script::scan(input, len, syntax)?;
                self.refuse_signed(c, l.signature_at.is_some())?;
                let mut out = create(output)?;
                let mut w = BufWriter::with_capacity(64 << 10, &mut out);
                let digest = script::copy_and_hash(input, &l, self.alg, Some(&mut w))?;
                let der =
                    self.indirect_der(pkcs7::SPC_SIPINFO, &script::sip_info(), &digest, timestamp)?;
                w.write_all(&script::signature_block(syntax, l.utf16, &der))?;
                w.flush()?;
                drop(w);
                out.sync_data()?;
                Ok(())
            }
            Container::Appx => {
                let p = appx::parse(input, len)?;
                if p.alg != self.alg {
                    return Err(SignError::Rejected(format!(
                        "the package's AppxBlockMap.xml hashes with {}, this format signs \
                         with {}: the two must match (Windows checks it); sign it with a format \
                         configured with `digest = {}`, or repack it with a {} block map",
                        appx::alg_name(p.alg),
                        appx::alg_name(self.alg),
                        appx::alg_name(p.alg).to_ascii_lowercase().replace('-', ""),
                        appx::alg_name(self.alg)
                    )));
                }
                self.refuse_signed(c, p.signed)?;
                let mut out = create(output)?;
                let mut w = BufWriter::with_capacity(64 << 10, &mut out);
                let h = appx::copy_and_hash(input, &p, self.alg, true, Some(&mut w))?;
                let der =
                    self.indirect_der(pkcs7::SPC_SIPINFO, &appx::sip_info(&p), &h.blob, timestamp)?;
                appx::finish(&mut w, &p, h, &der)?;
                w.flush()?;
                drop(w);
                out.sync_data()?;
                self.check_written(c, output)
            }
        }
    }

    /// The last check before a cabinet or a package whose records the
    /// writer lays out anew is released: read back from the written file,
    /// its hash must be the one signed (an MSI has its own,
    /// [`msi::sign_and_check`]). A file that fails is never handed out.
    fn check_written(&self, c: Container, output: &Path) -> Result<(), SignError> {
        self.check_container(c, output).map_err(|m| {
            SignError::Rejected(format!(
                "the signed {} does not verify as written ({m}); it was not released",
                c.name()
            ))
        })
    }

    /// Checks the signature of `signed`, a container other than PE, against
    /// our key: the container's hash, the messageDigest, the signature and
    /// any timestamp.
    pub(super) fn check_container(&self, c: Container, signed: &Path) -> Result<(), String> {
        let mut f = File::open(signed).map_err(|e| format!("cannot open: {e}"))?;
        let len = f.metadata().map_err(|e| e.to_string())?.len();
        let e = |e: SignError| e.to_string();
        let (der, hash) = match c {
            Container::Pe => return Err("check_container called for a PE file".into()),
            Container::Msi => {
                let mut cf = msi::open(f).map_err(e)?;
                let der = msi::read_signature(&mut cf)?;
                let p = pkcs7::parse_authenticode(&der)?;
                (der, msi::digest(&mut cf, p.alg).map_err(e)?)
            }
            Container::Cab => {
                let l = cab::parse(&mut f, len).map_err(e)?;
                let der = cab::read_signature(&mut f, &l)?;
                let p = pkcs7::parse_authenticode(&der)?;
                (
                    der,
                    cab::copy_and_hash(&mut f, &l, p.alg, None).map_err(e)?.0,
                )
            }
            Container::Cat => {
                let parsed = cat::parse(&mut f, len).map_err(e)?;
                if !parsed.signed {
                    return Err("the catalog is not signed".into());
                }
                let sd = signed_data::decode_signed_data(&parsed.der)?;
                return self.check_signer(&sd);
            }
            Container::Script(syntax) => {
                let l = script::scan(&mut f, len, syntax).map_err(e)?;
                let der = script::read_signature(&mut f, &l, syntax)?;
                let p = pkcs7::parse_authenticode(&der)?;
                (
                    der,
                    script::copy_and_hash(&mut f, &l, p.alg, None).map_err(e)?,
                )
            }
            Container::Appx => {
                let pkg = appx::parse(&mut f, len).map_err(e)?;
                let der = appx::read_signature(&mut f, &pkg)?;
                let p = pkcs7::parse_authenticode(&der)?;
                let none: Option<&mut std::io::Sink> = None;
                let h = appx::copy_and_hash(&mut f, &pkg, p.alg, false, none).map_err(e)?;
                (der, h.blob)
            }
        };
        let parsed = pkcs7::parse_authenticode(&der)?;
        if parsed.image_hash != hash {
            return Err(format!(
                "the {} hash does not match the file (modified after signing?)",
                c.name()
            ));
        }
        self.check_signer(&parsed.signed_data)
    }

    /// The checks every Authenticode SignedData gets: one signer, ours, whose
    /// signature covers the encapsulated content, and a valid timestamp if any.
    pub(super) fn check_signer(&self, sd: &SignedData) -> Result<(), String> {
        let si = sd.signer_infos.0.iter().next().ok_or("no signer")?;
        if sd.signer_infos.0.len() != 1 {
            return Err(format!("{} signers, not one", sd.signer_infos.0.len()));
        }
        let cert =
            signed_data::signer_cert(sd, si).ok_or("the signer's certificate is not embedded")?;
        if cert != &self.leaf {
            return Err("signed with another certificate".into());
        }
        pkcs7::check_signer(sd, si, cert, self.alg)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
