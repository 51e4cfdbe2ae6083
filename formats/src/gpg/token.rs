//! gpg with its key in a PKCS#11 token: `key = pkcs11:…` and `public_key = FILE` (the
//! OpenPGP public key as `gpg --export` writes it). The token key must be the primary key
//! or a signing subkey of that certificate, so signatures carry the published fingerprint.
//!
//! rpgp builds the signature packet and hands the digest to our [`TokenPgpKey`]
//! (rpgp's `SigningKey`), which has the token sign it: RSA PKCS#1 v1.5 over the
//! DigestInfo, or ECDSA (r, s as MPIs). The OpenPGP key packet (fingerprint, creation
//! time, algorithm) comes from the public key file.
//!
//! Deliberately NOT done: EdDSA keys (PKCS#11 3.0 `CKM_EDDSA`; few HSMs have them).

use std::path::Path;

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::crypto::public_key::PublicKeyAlgorithm;
use pgp::packet::{PublicKey, PublicSubkey, Signature, SignatureType};
use pgp::types::{
    Fingerprint, KeyDetails, KeyId, KeyVersion, Mpi, Password, PublicParams, SignatureBytes,
    SigningKey as PgpSigningKey, Timestamp,
};

use crate::keys::signing::KeyKind;
use crate::{FormatConfig, Hash, SignError, SigningKey};

/// Largest public key file we read.
const MAX_PUBLIC_FILE: u64 = 16 << 20;

/// The public half of the packet the token key stands for.
#[derive(Debug)]
enum Packet {
    Primary(PublicKey),
    Subkey(PublicSubkey),
}

/// A token key as rpgp's `SigningKey`: the key packet from the public key file, the
/// signature from the token.
pub(crate) struct TokenPgpKey {
    pub(super) key: SigningKey,
    packet: Packet,
}

impl std::fmt::Debug for TokenPgpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPgpKey")
            .field("packet", &self.packet)
            .finish_non_exhaustive()
    }
}

macro_rules! delegate {
    ($self:ident, $m:ident) => {
        match &$self.packet {
            Packet::Primary(p) => p.$m(),
            Packet::Subkey(p) => p.$m(),
        }
    };
}

impl KeyDetails for TokenPgpKey {
    fn version(&self) -> KeyVersion {
        delegate!(self, version)
    }
    fn legacy_key_id(&self) -> KeyId {
        delegate!(self, legacy_key_id)
    }
    fn fingerprint(&self) -> Fingerprint {
        delegate!(self, fingerprint)
    }
    fn algorithm(&self) -> PublicKeyAlgorithm {
        delegate!(self, algorithm)
    }
    fn created_at(&self) -> Timestamp {
        delegate!(self, created_at)
    }
    fn legacy_v3_expiration_days(&self) -> Option<u16> {
        delegate!(self, legacy_v3_expiration_days)
    }
    fn public_params(&self) -> &PublicParams {
        delegate!(self, public_params)
    }
}

impl PgpSigningKey for TokenPgpKey {
    fn sign(
        &self,
        _key_pw: &Password,
        hash: HashAlgorithm,
        digest: &[u8],
    ) -> pgp::errors::Result<SignatureBytes> {
        let h = match hash {
            HashAlgorithm::Sha256 => Hash::Sha256,
            HashAlgorithm::Sha384 => Hash::Sha384,
            HashAlgorithm::Sha512 => Hash::Sha512,
            other => return Err(format!("digest {other:?} is not used with token keys").into()),
        };
        let sig = self
            .key
            .sign_digest(h, digest)
            .map_err(|e| pgp::errors::Error::from(e.to_string()))?;
        Ok(match self.key.kind() {
            KeyKind::Rsa { .. } => SignatureBytes::Mpis(vec![Mpi::from_slice(&sig)]),
            KeyKind::Ec { .. } => {
                let ecdsa = openssl::ecdsa::EcdsaSig::from_der(&sig)
                    .map_err(|e| pgp::errors::Error::from(format!("ECDSA signature: {e}")))?;
                SignatureBytes::Mpis(vec![
                    Mpi::from_slice(&ecdsa.r().to_vec()),
                    Mpi::from_slice(&ecdsa.s().to_vec()),
                ])
            }
        })
    }

    fn hash_alg(&self) -> HashAlgorithm {
        self.public_params().hash_alg()
    }
}

impl TokenPgpKey {
    /// Checks `sig` over `data` with the public key packet.
    pub(super) fn verify(
        &self,
        sig: &Signature,
        data: &mut dyn std::io::Read,
    ) -> pgp::errors::Result<()> {
        match &self.packet {
            Packet::Primary(p) => sig.verify(p, data),
            Packet::Subkey(p) => sig.verify(p, data),
        }
    }
}

/// Reads `public_key = FILE` of `cfg` and finds the packet the token `key` is: the
/// primary key or a bound signing subkey whose public key verifies a signature the token
/// makes. Returns it with the primary key's fingerprint. Not found: a config error
/// (exit 2), the key is not this certificate's.
pub(super) fn open(
    cfg: &FormatConfig,
    key: SigningKey,
    hash: HashAlgorithm,
) -> Result<(TokenPgpKey, String), SignError> {
    let config = |m: String| SignError::Config(format!("format {}: {m}", cfg.name));
    let path = cfg
        .extra
        .get("public_key")
        .map(|p| Path::new(p.trim()))
        .ok_or_else(|| {
            config(
            "a pkcs11: gpg key needs `public_key = FILE` (its OpenPGP public key, `gpg --export`)"
                .into(),
        )
        })?;
    let shown = path.display();
    let bytes = crate::keys::read_bounded(path, "OpenPGP public key", MAX_PUBLIC_FILE)
        .map_err(SignError::Config)?;
    let armored = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'-');
    let cert = if armored {
        SignedPublicKey::from_armor_single(bytes.as_slice()).map(|(k, _)| k)
    } else {
        SignedPublicKey::from_bytes(bytes.as_slice())
    }
    .map_err(|e| config(format!("{shown}: not an OpenPGP public key: {e}")))?;
    let fingerprint = hex::encode_upper(cert.primary_key.fingerprint().as_bytes());

    let mut candidates = Vec::new();
    if cert.primary_key.algorithm().can_sign() {
        candidates.push(Packet::Primary(cert.primary_key.clone()));
    }
    for sub in &cert.public_subkeys {
        let verifies =
            |s: &&Signature| s.verify_subkey_binding(&cert.primary_key, &sub.key).is_ok();
        let revoked = sub
            .signatures
            .iter()
            .filter(|s| s.typ() == Some(SignatureType::SubkeyRevocation))
            .any(|s| verifies(&s));
        let signs = sub
            .signatures
            .iter()
            .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding))
            .filter(verifies)
            .max_by_key(|s| s.created().map(Timestamp::as_secs).unwrap_or(0))
            .is_some_and(|b| b.key_flags().sign());
        if signs && !revoked && sub.key.algorithm().can_sign() {
            candidates.push(Packet::Subkey(sub.key.clone()));
        }
    }
    let mut key = key;
    for packet in candidates {
        let token = TokenPgpKey { key, packet };
        let check = b"signing-server gpg token key check";
        let sig = DetachedSignature::sign_binary_data(
            rand::thread_rng(),
            &token,
            &Password::empty(),
            hash,
            check.as_slice(),
        )
        .map_err(|e| SignError::Key(format!("the token key cannot sign: {e}")))?;
        if token.verify(&sig.signature, &mut check.as_slice()).is_ok() {
            return Ok((token, fingerprint));
        }
        key = token.key;
    }
    Err(config(format!(
        "the token key is neither the primary key nor a signing subkey of {shown} ({fingerprint})"
    )))
}
