//! MAR's half of digest signing (see [`crate::digest_signing`]).
//!
//! The client writes the signed MAR itself, with a placeholder of zeros
//! where the signature goes ([`prepare`]: the same one-pass writer the server
//! uses, hashing what the signature covers), sends the digest, and writes the
//! server's signature over the placeholder ([`finish`]) once it verifies with
//! the public key the server sent ([`verify`]).

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use openssl::hash::Hasher;

use super::{internal, parse, sign, Algorithm, MarSigner, READ_BUF};
use crate::digest_signing::{DigestInput, DigestSpec};
use crate::SignError;

/// A signed MAR waiting for its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// What the signature must cover (SHA-1 or SHA-384), to send.
    pub digest: Vec<u8>,
    algorithm: Algorithm,
    signature_offset: u64,
    signature_len: u32,
}

fn algorithm(spec: DigestSpec) -> Result<(Algorithm, u32), SignError> {
    match spec {
        DigestSpec::Mar {
            algorithm: 1,
            signature_len,
        } => Ok((Algorithm::Sha1, signature_len)),
        DigestSpec::Mar {
            algorithm: 2,
            signature_len,
        } => Ok((Algorithm::Sha384, signature_len)),
        other => Err(internal(format!(
            "not a MAR digest-signing spec: {}",
            other.to_text()
        ))),
    }
}

/// Writes `input` signed, with zeros for the signature, to the new file
/// `output`, and returns the digest to sign. Any signatures `input` has are
/// dropped, as the server does.
pub fn prepare(input: &Path, output: &Path, spec: DigestSpec) -> Result<Prepared, SignError> {
    let (algorithm, signature_len) = algorithm(spec)?;
    if signature_len == 0 || signature_len > 1024 {
        return Err(internal(format!(
            "a MAR signature of {signature_len} bytes makes no sense"
        )));
    }
    let mut reader = BufReader::with_capacity(
        READ_BUF,
        File::open(input).map_err(|e| internal(format!("cannot open {}: {e}", input.display())))?,
    );
    let layout = parse::parse(&mut reader)?;
    let plan = sign::plan(&layout, algorithm.id(), signature_len)?;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(output)
        .map_err(|e| internal(format!("cannot create {}: {e}", output.display())))?;
    let mut out = BufWriter::with_capacity(READ_BUF, file);
    let mut hasher =
        Hasher::new(algorithm.message_digest()).map_err(|e| internal(format!("digest: {e}")))?;
    let mut update = |b: &[u8]| {
        hasher
            .update(b)
            .map_err(|e| internal(format!("digest: {e}")))
    };
    sign::write_signed(&mut reader, &layout, &plan, &mut out, &mut update)?;
    sign::written_file(out, &plan)?;
    let digest = hasher
        .finish()
        .map_err(|e| internal(format!("digest: {e}")))?
        .to_vec();
    Ok(Prepared {
        digest,
        algorithm,
        signature_offset: plan.signature_offset,
        signature_len,
    })
}

/// Checks the server's `signature` over `prepared`'s digest with the public
/// key it sent (SubjectPublicKeyInfo DER).
pub fn verify(
    prepared: &Prepared,
    signature: &[u8],
    public_key_der: &[u8],
) -> Result<(), SignError> {
    let bad = |m: String| SignError::Rejected(format!("the server's MAR signature {m}"));
    if signature.len() != prepared.signature_len as usize {
        return Err(bad(format!(
            "is {} bytes, expected {}",
            signature.len(),
            prepared.signature_len
        )));
    }
    let key = openssl::pkey::PKey::public_key_from_der(public_key_der)
        .map_err(|e| bad(format!("comes with an unreadable public key: {e}")))?;
    let run = || -> Result<bool, openssl::error::ErrorStack> {
        let mut ctx = openssl::pkey_ctx::PkeyCtx::new(&key)?;
        ctx.verify_init()?;
        ctx.set_rsa_padding(openssl::rsa::Padding::PKCS1)?;
        ctx.set_signature_md(prepared.algorithm.md())?;
        ctx.verify(&prepared.digest, signature)
    };
    if run().unwrap_or(false) {
        Ok(())
    } else {
        Err(bad("does not verify over this file's digest".into()))
    }
}

/// Writes `signature` over the placeholder of the prepared `output`.
pub fn finish(output: &Path, prepared: &Prepared, signature: &[u8]) -> Result<(), SignError> {
    if signature.len() != prepared.signature_len as usize {
        return Err(SignError::Rejected(format!(
            "the MAR signature is {} bytes, expected {}",
            signature.len(),
            prepared.signature_len
        )));
    }
    let mut file = OpenOptions::new()
        .write(true)
        .open(output)
        .map_err(|e| internal(format!("cannot open {}: {e}", output.display())))?;
    file.seek(SeekFrom::Start(prepared.signature_offset))?;
    file.write_all(signature)?;
    file.sync_all()?;
    Ok(())
}

/// The server's half: the spec clients prepare for.
pub(super) fn spec(signer: &MarSigner) -> DigestSpec {
    DigestSpec::Mar {
        algorithm: signer.algorithm.id(),
        signature_len: signer.signature_len,
    }
}

/// The server's half: the signature over the client's digest, checked
/// against the public key before it leaves.
pub(super) fn sign_digest(signer: &MarSigner, input: &DigestInput) -> Result<Vec<u8>, SignError> {
    let DigestInput::Digest(digest) = input else {
        return Err(SignError::Rejected(
            "mar signs a digest, not a SHA-256 state".into(),
        ));
    };
    let signature = signer.sign_digest(digest)?;
    if signature.len() != signer.signature_len as usize || !signer.verify_digest(digest, &signature)
    {
        return Err(internal(
            "the RSA signature just made does not verify".into(),
        ));
    }
    Ok(signature)
}
