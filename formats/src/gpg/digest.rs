//! gpg's half of digest signing (see [`crate::digest_signing`]): signing a
//! client's SHA-256 state on the server, and checking the result on the client.

use pgp::composed::{ArmorOptions, Deserializable, DetachedSignature};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{SignatureType, SignatureVersion};

use super::{internal, GpgSigner};
use crate::digest_signing::{DigestInput, Sha256State};
use crate::SignError;

/// Largest armoured signature the client accepts from a server.
const MAX_SIGNATURE: usize = 64 << 10;

/// The armoured signature over the data whose SHA-256 state the client sent.
pub(super) fn sign(signer: &GpgSigner, input: &DigestInput) -> Result<Vec<u8>, SignError> {
    use crate::Signer as _;
    let DigestInput::Sha256State(state) = input else {
        return Err(SignError::Rejected(
            "gpg signs a SHA-256 state, not a digest".into(),
        ));
    };
    if !signer.signs_sha256_state() {
        return Err(internal(
            "this GPG key cannot sign from a SHA-256 state (v4 key and SHA-256 only)".into(),
        ));
    }
    let sig = signer
        .key
        .sign_sha256_state(Box::new(state.clone()))
        .map_err(|e| signer.failed(format!("GPG signing failed: {e}")))?;
    sig.to_armored_bytes(ArmorOptions::default())
        .map_err(|e| internal(format!("cannot armour the GPG signature: {e}")))
}

/// Checks, on the client, an armoured gpg signature made from `state`: one
/// v4 binary signature with SHA-256 whose hashed fields, hashed after
/// `state`, give the digest prefix it carries. Without the public key this
/// does not prove who signed; it proves the signature covers this file.
pub fn check_from_state(armored: &[u8], state: &Sha256State) -> Result<(), SignError> {
    let bad = |m: String| SignError::Rejected(format!("the server's GPG signature {m}"));
    if armored.len() > MAX_SIGNATURE {
        return Err(bad(format!("is over {MAX_SIGNATURE} bytes")));
    }
    let (sig, _) = DetachedSignature::from_armor_single(armored)
        .map_err(|e| bad(format!("is not an armoured OpenPGP signature: {e}")))?;
    let sig = sig.signature;
    if sig.version() != SignatureVersion::V4
        || sig.typ() != Some(SignatureType::Binary)
        || sig.hash_alg() != Some(HashAlgorithm::Sha256)
    {
        return Err(bad(format!(
            "is not a v4 binary SHA-256 signature ({:?}, {:?}, {:?})",
            sig.version(),
            sig.typ(),
            sig.hash_alg()
        )));
    }
    let config = sig
        .config()
        .ok_or_else(|| bad("has no signature fields".into()))?;
    let mut hasher: Box<dyn digest::DynDigest + Send> = Box::new(state.clone());
    let len = config
        .hash_signature_data(&mut hasher)
        .map_err(|e| bad(format!("cannot be hashed: {e}")))?;
    hasher.update(
        &config
            .trailer(len)
            .map_err(|e| bad(format!("has no trailer: {e}")))?,
    );
    let digest = hasher.finalize();
    if sig.signed_hash_value().as_ref().map(|v| v.as_slice()) != digest.get(..2) {
        return Err(bad(
            "does not cover this file (its digest prefix differs)".into()
        ));
    }
    Ok(())
}
