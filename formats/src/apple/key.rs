//! The signing key as apple-codesign takes an external one ([`KeyInfoSigner`]): it
//! hands us the bytes to sign (the CMS signed attributes) and we sign them with our
//! [`SigningKey`] — a file key or a token key, which never leaves the token.
//!
//! apple-codesign never sees private key material: [`Sign::private_key_data`] and
//! [`Sign::rsa_primes`] answer `None`.

use bytes::Bytes;
use openssl::nid::Nid;
use x509_certificate::{
    EcdsaCurve, KeyAlgorithm, KeyInfoSigner, Sign, Signature, SignatureAlgorithm,
    X509CertificateError,
};
use zeroize::Zeroizing;

use crate::keys::signing::KeyKind;
use crate::{Hash, SignError, SigningKey};

/// A [`SigningKey`] for apple-codesign, with what it asks about the key.
pub(crate) struct AppleKey {
    pub(crate) key: SigningKey,
    /// The certificate's subjectPublicKey bits (RSAPublicKey DER, or the EC point).
    public_key_data: Bytes,
    key_algorithm: KeyAlgorithm,
    signature_algorithm: SignatureAlgorithm,
    hash: Hash,
}

impl AppleKey {
    /// Wraps `key`, whose certificate's subjectPublicKey bits are `public_key_data`.
    /// RSA (2048 bits or more), ECDSA P-256 or P-384.
    pub(crate) fn new(key: SigningKey, public_key_data: Bytes) -> Result<Self, String> {
        let (key_algorithm, signature_algorithm, hash) = match key.kind() {
            KeyKind::Rsa { bits } if bits >= 2048 => (
                KeyAlgorithm::Rsa,
                SignatureAlgorithm::RsaSha256,
                Hash::Sha256,
            ),
            KeyKind::Ec {
                curve: Some(Nid::X9_62_PRIME256V1),
            } => (
                KeyAlgorithm::Ecdsa(EcdsaCurve::Secp256r1),
                SignatureAlgorithm::EcdsaSha256,
                Hash::Sha256,
            ),
            KeyKind::Ec {
                curve: Some(Nid::SECP384R1),
            } => (
                KeyAlgorithm::Ecdsa(EcdsaCurve::Secp384r1),
                SignatureAlgorithm::EcdsaSha384,
                Hash::Sha384,
            ),
            other => {
                return Err(format!(
                "apple-codesign cannot use a {other:?} key (RSA 2048+, EC P-256 or P-384 expected)"
            ))
            }
        };
        Ok(AppleKey {
            key,
            public_key_data,
            key_algorithm,
            signature_algorithm,
            hash,
        })
    }
}

impl signature::Signer<Signature> for AppleKey {
    fn try_sign(&self, message: &[u8]) -> Result<Signature, signature::Error> {
        self.key
            .sign(self.hash, message)
            .map(Signature::from)
            .map_err(|e: SignError| signature::Error::from_source(e))
    }
}

impl Sign for AppleKey {
    fn sign(&self, message: &[u8]) -> Result<(Vec<u8>, SignatureAlgorithm), X509CertificateError> {
        let sig = signature::Signer::try_sign(self, message)
            .map_err(|e| X509CertificateError::Other(e.to_string()))?;
        Ok((sig.into(), self.signature_algorithm))
    }

    fn key_algorithm(&self) -> Option<KeyAlgorithm> {
        Some(self.key_algorithm)
    }

    fn public_key_data(&self) -> Bytes {
        self.public_key_data.clone()
    }

    fn signature_algorithm(&self) -> Result<SignatureAlgorithm, X509CertificateError> {
        Ok(self.signature_algorithm)
    }

    fn private_key_data(&self) -> Option<Zeroizing<Vec<u8>>> {
        None
    }

    fn rsa_primes(
        &self,
    ) -> Result<Option<(Zeroizing<Vec<u8>>, Zeroizing<Vec<u8>>)>, X509CertificateError> {
        Ok(None)
    }
}

impl KeyInfoSigner for AppleKey {}
