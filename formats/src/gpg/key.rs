//! The key a gpg format signs with: reading the key file, one abstraction
//! over rpgp's two secret packet types (primary key and subkey), unlocking
//! it once, and the two ways of signing (streamed data, SHA-256 state).

use std::io::Read;
use std::path::Path;

use pgp::composed::{Deserializable, DetachedSignature, SignedSecretKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{
    SecretKey, SecretSubkey, Signature, SignatureConfig, SignatureType, SignatureVersionSpecific,
    Subpacket, SubpacketData,
};
use pgp::types::{KeyVersion, Password, SecretParams, SigningKey, Timestamp};
use secrecy::{ExposeSecret, SecretString};

use crate::SignError;

/// Largest key file we read (a key with many certifications is still far below).
const MAX_KEY_FILE: u64 = 16 << 20;

/// Reads and parses the transferable secret key at `path` (armoured or binary).
pub(super) fn load_key(path: &Path) -> Result<SignedSecretKey, SignError> {
    let bytes = crate::keys::read_bounded(path, "GPG key", MAX_KEY_FILE).map_err(SignError::Key)?;
    parse_key(&bytes, path)
}

/// Parses the bytes of a key file (armoured or binary); `path` is for messages.
pub(super) fn parse_key(bytes: &[u8], path: &Path) -> Result<SignedSecretKey, SignError> {
    let bad = |what: String| SignError::Key(format!("GPG key {}: {what}", path.display()));
    let armored = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'-');
    let parsed = if armored {
        SignedSecretKey::from_armor_single(bytes).map(|(k, _)| k)
    } else {
        SignedSecretKey::from_bytes(bytes)
    };
    parsed.map_err(|e| {
        bad(format!(
            "not an OpenPGP secret key (expected `gpg --export-secret-keys --armor`): {e}"
        ))
    })
}

/// What signing needs of a secret key packet, whether it is the primary key
/// ([`SecretKey`]) or a subkey ([`SecretSubkey`]): rpgp's [`SigningKey`] plus
/// the secret parameters, unlocking, and the public half to verify with.
pub(crate) trait SecretPacket: SigningKey + Send + Sync {
    /// The secret key material (plain, encrypted, or a gpg stub).
    fn secret_params(&self) -> &SecretParams;

    /// Decrypts the secret key material in place.
    fn remove_password(&mut self, pw: &Password) -> pgp::errors::Result<()>;

    /// Checks `sig` over everything `data` yields with this packet's public
    /// half, hashed as it is read.
    fn verify(&self, sig: &Signature, data: &mut dyn Read) -> pgp::errors::Result<()>;
}

impl SecretPacket for SecretKey {
    fn secret_params(&self) -> &SecretParams {
        SecretKey::secret_params(self)
    }

    fn remove_password(&mut self, pw: &Password) -> pgp::errors::Result<()> {
        SecretKey::remove_password(self, pw)
    }

    fn verify(&self, sig: &Signature, data: &mut dyn Read) -> pgp::errors::Result<()> {
        sig.verify(self.public_key(), data)
    }
}

impl SecretPacket for SecretSubkey {
    fn secret_params(&self) -> &SecretParams {
        SecretSubkey::secret_params(self)
    }

    fn remove_password(&mut self, pw: &Password) -> pgp::errors::Result<()> {
        SecretSubkey::remove_password(self, pw)
    }

    fn verify(&self, sig: &Signature, data: &mut dyn Read) -> pgp::errors::Result<()> {
        sig.verify(self.public_key(), data)
    }
}

/// The key a [`super::GpgSigner`] (or an rpm signer) signs with: an unlocked key packet
/// (rpgp zeroizes its secret material on drop), or a key in a PKCS#11 token.
pub(crate) enum UnlockedKey {
    /// From the key file.
    Packet(Box<dyn SecretPacket>),
    /// In a token, with its packet from `public_key`.
    Token(Box<super::token::TokenPgpKey>),
}

impl UnlockedKey {
    /// Decrypts `packet` with `passphrase` if it is encrypted, then proves
    /// the unlocked key matches its public half (sign + verify in memory):
    /// with the legacy 16-bit checksum a wrong passphrase may "unlock" into
    /// garbage. `path` is for messages only.
    pub(super) fn unlock(
        mut packet: Box<dyn SecretPacket>,
        passphrase: Option<&SecretString>,
        hash: HashAlgorithm,
        path: &Path,
    ) -> Result<Self, SignError> {
        let path = path.display();
        if packet.secret_params().is_encrypted() {
            let Some(passphrase) = passphrase else {
                return Err(SignError::Key(format!(
                    "the GPG key {path} is passphrase-protected but no passphrase was given"
                )));
            };
            // Zeroized on drop.
            let pw = Password::from(passphrase.expose_secret().as_bytes());
            packet.remove_password(&pw).map_err(|e| {
                // rpgp's error never contains the passphrase.
                SignError::Key(format!(
                    "wrong passphrase for {path} (or unsupported key protection: {e})"
                ))
            })?;
        }
        let key = UnlockedKey::Packet(packet);
        let check = b"signing-server gpg key self-check";
        let sig = key
            .sign_detached(hash, check.as_slice())
            .map_err(|e| SignError::Key(format!("the GPG key {path} cannot sign: {e}")))?;
        key.verify(&sig.signature, check.as_slice()).map_err(|_| {
            SignError::Key(format!(
                "wrong passphrase for {path} (the unlocked key does not match its public key)"
            ))
        })?;
        Ok(key)
    }

    /// The packet as rpgp's signing functions take it: they want a sized
    /// `impl SigningKey`, and rpgp implements the trait for `Box<&dyn SigningKey>`
    /// (not for `&dyn SigningKey`), hence the box around a reference.
    #[allow(clippy::redundant_allocation)]
    fn signing_key(&self) -> Box<&dyn SigningKey> {
        match self {
            UnlockedKey::Packet(p) => Box::new(&**p),
            UnlockedKey::Token(t) => Box::new(&**t),
        }
    }

    /// The key packet's version (v4, v6).
    pub(crate) fn version(&self) -> KeyVersion {
        self.signing_key().version()
    }

    /// The key packet's public-key algorithm.
    pub(crate) fn algorithm(&self) -> pgp::crypto::public_key::PublicKeyAlgorithm {
        self.signing_key().algorithm()
    }

    /// The state of the key for /health (a token may be gone).
    pub(crate) fn status(&self) -> Option<crate::KeyStatus> {
        match self {
            UnlockedKey::Packet(_) => None,
            UnlockedKey::Token(t) => Some(t.key.status()),
        }
    }

    /// A detached binary signature of everything `data` yields, hashed as
    /// it is read (rpgp's `SignatureConfig::sign` copies the reader into a
    /// `SignatureHasher`).
    pub(super) fn sign_detached(
        &self,
        hash: HashAlgorithm,
        data: impl Read,
    ) -> pgp::errors::Result<DetachedSignature> {
        // The key is unlocked: the empty password is never used.
        DetachedSignature::sign_binary_data(
            rand::thread_rng(),
            &self.signing_key(),
            &Password::empty(),
            hash,
            data,
        )
    }

    /// The same signature as [`UnlockedKey::sign_detached`] with SHA-256,
    /// made from `state`: SHA-256 after every byte of the data, not finalized
    /// (a `sha2::Sha256`, or a client's [`crate::digest_signing::Sha256State`]).
    pub(super) fn sign_sha256_state(
        &self,
        state: Box<dyn digest::DynDigest + Send>,
    ) -> pgp::errors::Result<DetachedSignature> {
        sign_state(&self.signing_key(), state)
    }

    /// A signature of type `typ` over data the caller hashes piece by piece
    /// ([`PendingSignature::update`]), exactly as given: no line-ending
    /// normalisation (clear-signed text is canonicalised by its caller, RPM
    /// headers are binary). Subpackets as rpgp's `sign_binary_data` writes them.
    pub(crate) fn start(
        &self,
        typ: SignatureType,
        hash: HashAlgorithm,
    ) -> pgp::errors::Result<PendingSignature> {
        let key = self.signing_key();
        let mut config = match key.version() {
            KeyVersion::V4 => SignatureConfig::v4(typ, key.algorithm(), hash),
            KeyVersion::V6 => SignatureConfig::v6(rand::thread_rng(), typ, key.algorithm(), hash)?,
            v => return Err(format!("unsupported key version {v:?}").into()),
        };
        config.hashed_subpackets = vec![
            Subpacket::regular(SubpacketData::IssuerFingerprint(key.fingerprint()))?,
            Subpacket::regular(SubpacketData::SignatureCreationTime(Timestamp::now()))?,
        ];
        if key.version() == KeyVersion::V4 {
            config.unhashed_subpackets = vec![Subpacket::regular(SubpacketData::IssuerKeyId(
                key.legacy_key_id(),
            ))?];
        }
        let mut hasher = hash.new_hasher()?;
        if let SignatureVersionSpecific::V6 { salt } = &config.version_specific {
            hasher.update(salt);
        }
        Ok(PendingSignature { config, hasher })
    }

    /// Signs what was fed to `pending` (the steps of rpgp's `SignatureHasher::sign`).
    pub(crate) fn finish(&self, pending: PendingSignature) -> pgp::errors::Result<Signature> {
        let PendingSignature { config, mut hasher } = pending;
        let len = config.hash_signature_data(&mut hasher)?;
        hasher.update(&config.trailer(len)?);
        let hash = hasher.finalize();
        let signed_hash_value = [
            hash.first().copied().unwrap_or_default(),
            hash.get(1).copied().unwrap_or_default(),
        ];
        // The key is unlocked: the empty password is never used.
        let signature = self
            .signing_key()
            .sign(&Password::empty(), config.hash_alg, &hash)?;
        Signature::from_config(config, signed_hash_value, signature)
    }

    /// Checks `sig` over everything `data` yields, hashed as it is read.
    pub(crate) fn verify(&self, sig: &Signature, mut data: impl Read) -> pgp::errors::Result<()> {
        match self {
            UnlockedKey::Packet(p) => p.verify(sig, &mut data),
            UnlockedKey::Token(t) => t.verify(sig, &mut data),
        }
    }
}

/// A signature being made: its fields and the hash of the data so far
/// (see [`UnlockedKey::start`]).
pub(crate) struct PendingSignature {
    config: SignatureConfig,
    hasher: Box<dyn digest::DynDigest + Send>,
}

impl PendingSignature {
    /// Hashes the next piece of the signed data.
    pub(crate) fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
    }
}

/// A v4 binary detached signature (SHA-256) over the data whose SHA-256
/// state is `state`, with the subpackets rpgp's `sign_binary_data` writes
/// (issuer fingerprint and creation time hashed, issuer key id unhashed).
/// The steps are rpgp's `SignatureHasher::sign` (hash the signature fields
/// and the trailer after the data, sign the digest), started from our state.
fn sign_state(
    key: &impl SigningKey,
    mut hasher: Box<dyn digest::DynDigest + Send>,
) -> pgp::errors::Result<DetachedSignature> {
    let mut config = SignatureConfig::v4(
        SignatureType::Binary,
        key.algorithm(),
        HashAlgorithm::Sha256,
    );
    config.hashed_subpackets = vec![
        Subpacket::regular(SubpacketData::IssuerFingerprint(key.fingerprint()))?,
        Subpacket::regular(SubpacketData::SignatureCreationTime(Timestamp::now()))?,
    ];
    config.unhashed_subpackets = vec![Subpacket::regular(SubpacketData::IssuerKeyId(
        key.legacy_key_id(),
    ))?];
    let len = config.hash_signature_data(&mut hasher)?;
    hasher.update(&config.trailer(len)?);
    let hash = hasher.finalize();
    let signed_hash_value = [
        hash.first().copied().unwrap_or_default(),
        hash.get(1).copied().unwrap_or_default(),
    ];
    // The key is unlocked: the empty password is never used.
    let signature = key.sign(&Password::empty(), HashAlgorithm::Sha256, &hash)?;
    Ok(DetachedSignature::new(Signature::from_config(
        config,
        signed_hash_value,
        signature,
    )?))
}
