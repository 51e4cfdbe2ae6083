//! gpg's key-selection rules: which key packet of a transferable secret key
//! gpg itself would sign with (the newest valid, unrevoked, unexpired,
//! cross-certified signing subkey, else the primary key if it may sign).

use std::path::Path;

use pgp::composed::{SignedSecretKey, SignedSecretSubKey};
use pgp::packet::{KeyFlags, Signature, SignatureType, SubpacketData};
use pgp::types::{Duration, KeyDetails, S2kParams, SecretParams, StringToKey, Tag, Timestamp};

use super::key::SecretPacket;
use crate::SignError;

/// A GnuPG "stub" (secret part offline or on a card): S2K type 101+.
fn is_stub(params: &SecretParams) -> bool {
    match params {
        SecretParams::Plain(_) => false,
        SecretParams::Encrypted(e) => match e.string_to_key_params() {
            S2kParams::Cfb { s2k, .. }
            | S2kParams::MalleableCfb { s2k, .. }
            | S2kParams::Aead { s2k, .. } => matches!(s2k, StringToKey::Private { .. }),
            S2kParams::Unprotected | S2kParams::LegacyCfb { .. } => false,
        },
    }
}

/// The key flags subpacket of a signature, if it has one.
fn explicit_flags(sig: &Signature) -> Option<KeyFlags> {
    sig.config()?
        .hashed_subpackets()
        .find_map(|p| match &p.data {
            SubpacketData::KeyFlags(f) => Some(f.clone()),
            _ => None,
        })
}

fn created_secs(sig: &Signature) -> u32 {
    sig.created().map(Timestamp::as_secs).unwrap_or(0)
}

fn expired(created: Timestamp, validity: Option<Duration>, now: u32) -> bool {
    match validity.map(Duration::as_secs) {
        Some(secs) if secs != 0 => u64::from(created.as_secs()) + u64::from(secs) <= u64::from(now),
        _ => false,
    }
}

/// Whether `sub` is a usable signing subkey of `key`: bound, cross-certified,
/// flagged for signing, not revoked, not expired, and its secret part here.
fn usable_signing_subkey(key: &SignedSecretKey, sub: &SignedSecretSubKey, now: u32) -> bool {
    let primary = key.primary_key.public_key();
    let subkey = sub.key.public_key();
    if !sub.key.algorithm().can_sign() || is_stub(sub.key.secret_params()) {
        return false;
    }
    let verifies = |s: &&Signature| s.verify_subkey_binding(primary, subkey).is_ok();
    let revoked = sub
        .signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::SubkeyRevocation))
        .any(|s| verifies(&s));
    if revoked {
        return false;
    }
    let binding = sub
        .signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding))
        .filter(verifies)
        .max_by_key(|s| created_secs(s));
    let Some(binding) = binding else {
        return false;
    };
    // Signing subkeys must be cross-certified ("back signature"), or gpg
    // refuses their signatures.
    let back_signed = binding
        .embedded_signature()
        .is_some_and(|b| b.verify_primary_key_binding(subkey, primary).is_ok());
    binding.key_flags().sign()
        && back_signed
        && !expired(sub.key.created_at(), binding.key_expiration_time(), now)
}

/// Picks the key gpg would sign with: the newest usable signing subkey,
/// else the primary key.
pub(super) fn select_signing_key(
    key: &SignedSecretKey,
    path: &Path,
) -> Result<Box<dyn SecretPacket>, SignError> {
    let bad = |what: &str| SignError::Key(format!("GPG key {}: {what}", path.display()));
    let now = Timestamp::now().as_secs();
    let primary = &key.primary_key;
    let primary_pub = primary.public_key();

    let revoked = key
        .details
        .revocation_signatures
        .iter()
        .any(|s| s.verify_key(primary_pub).is_ok());
    if revoked {
        return Err(bad("the key is revoked"));
    }

    // The newest valid self-signature carries the primary key's flags and
    // expiry.
    let user_sigs = key.details.users.iter().flat_map(|u| {
        u.signatures.iter().filter(|s| {
            s.verify_certification(primary_pub, Tag::UserId, &u.id)
                .is_ok()
        })
    });
    let direct_sigs = key
        .details
        .direct_signatures
        .iter()
        .filter(|s| s.verify_key(primary_pub).is_ok());
    let self_sig = user_sigs.chain(direct_sigs).max_by_key(|s| created_secs(s));
    let Some(self_sig) = self_sig else {
        return Err(bad("no valid self-signature (damaged key?)"));
    };
    if expired(primary.created_at(), self_sig.key_expiration_time(), now) {
        return Err(bad("the key has expired"));
    }

    let sub = key
        .secret_subkeys
        .iter()
        .filter(|s| usable_signing_subkey(key, s, now))
        .max_by_key(|s| s.key.created_at().as_secs());
    if let Some(sub) = sub {
        return Ok(Box::new(sub.key.clone()));
    }

    let primary_may_sign =
        primary.algorithm().can_sign() && explicit_flags(self_sig).is_none_or(|f| f.sign());
    if !primary_may_sign {
        return Err(bad("neither the primary key nor any subkey may sign"));
    }
    if is_stub(primary.secret_params()) {
        return Err(bad(
            "the primary key's secret part is not in this file (gpg stub) and no signing subkey is",
        ));
    }
    Ok(Box::new(primary.clone()))
}
