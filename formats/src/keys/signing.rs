//! The one key interface every X.509 signer uses: a [`SigningKey`] is either a PEM
//! file unlocked with its passphrase (openssl) or a key in a PKCS#11 token
//! ([`crate::pkcs11`]); signers hash in-process and ask the key to sign the digest.
//!
//! Signatures: RSA PKCS#1 v1.5 over a DigestInfo, ECDSA as DER `Ecdsa-Sig-Value` (a
//! token's raw `r ‖ s` is converted). Every key is checked once when opened: it signs a
//! test message and the signature verifies with its public key.

use std::path::PathBuf;

use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private, Public};
use secrecy::SecretString;

use crate::pkcs11::uri::{is_pkcs11_uri, Pkcs11Uri};
use crate::pkcs11::{KeyStatus, TokenKey, TokenKeyType};
use crate::{FormatConfig, SignError};

/// The digests signers hash with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    /// SHA-1 (MAR's legacy signature only).
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl Hash {
    /// openssl's digest.
    pub fn md(self) -> MessageDigest {
        match self {
            Hash::Sha1 => MessageDigest::sha1(),
            Hash::Sha256 => MessageDigest::sha256(),
            Hash::Sha384 => MessageDigest::sha384(),
            Hash::Sha512 => MessageDigest::sha512(),
        }
    }

    fn evp(self) -> &'static openssl::md::MdRef {
        match self {
            Hash::Sha1 => openssl::md::Md::sha1(),
            Hash::Sha256 => openssl::md::Md::sha256(),
            Hash::Sha384 => openssl::md::Md::sha384(),
            Hash::Sha512 => openssl::md::Md::sha512(),
        }
    }

    /// The DER DigestInfo header that precedes a digest of this kind (RFC 8017 §9.2).
    fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            Hash::Sha1 => &[
                0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
                0x14,
            ],
            Hash::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            Hash::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            Hash::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }

    /// The digest of `data`.
    pub fn digest(self, data: &[u8]) -> Result<Vec<u8>, SignError> {
        openssl::hash::hash(self.md(), data)
            .map(|d| d.to_vec())
            .map_err(|e| SignError::Internal(anyhow::anyhow!("hashing: {e}")))
    }
}

/// Where a format's key is: `key =` a PEM file, or a `pkcs11:` URI with its module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A PEM private key file, maybe passphrase-protected.
    File(PathBuf),
    /// A key in a PKCS#11 token.
    Token {
        /// The module: the URI's `module-path`, else `[pkcs11] module`.
        module: PathBuf,
        /// The URI.
        uri: Pkcs11Uri,
    },
}

impl KeySource {
    /// The key source of a format. A bad URI or a URI without a module is a
    /// [`SignError::Config`] (the config reader reports these with `file:line:` first).
    pub fn of(cfg: &FormatConfig) -> Result<Self, SignError> {
        let Some(text) = cfg.key.to_str().filter(|t| is_pkcs11_uri(t)) else {
            return Ok(KeySource::File(cfg.key.clone()));
        };
        let cfg_err = |m: String| SignError::Config(format!("format {}: key: {m}", cfg.name));
        let uri = Pkcs11Uri::parse(text).map_err(cfg_err)?;
        let module = uri
            .module_path
            .clone()
            .or_else(|| cfg.pkcs11_module.clone())
            .ok_or_else(|| {
                cfg_err("no PKCS#11 module: add ?module-path=… or [pkcs11] module = PATH".into())
            })?;
        Ok(KeySource::Token { module, uri })
    }

    /// Whether opening the key needs a secret: a token's PIN, or an encrypted file's
    /// passphrase.
    pub fn needs_secret(&self, what: &str) -> Result<bool, SignError> {
        match self {
            KeySource::Token { .. } => Ok(true),
            KeySource::File(path) => super::needs_passphrase(path, what),
        }
    }
}

/// Whether the key of `cfg` needs a secret (PIN or passphrase) to open.
pub fn needs_secret(cfg: &FormatConfig, what: &str) -> Result<bool, SignError> {
    KeySource::of(cfg)?.needs_secret(what)
}

/// The algorithm family of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA of this many bits.
    Rsa {
        /// Modulus size.
        bits: u32,
    },
    /// ECDSA on this named curve.
    Ec {
        /// The curve (P-256, P-384, P-521).
        curve: Option<Nid>,
    },
}

enum Inner {
    File(PKey<Private>),
    Token(Box<TokenKey>),
}

/// A private key that signs digests: in memory (openssl frees it, wiped, on drop) or
/// in a token (it never leaves the token).
pub struct SigningKey {
    inner: Inner,
    kind: KeyKind,
    public: PKey<Public>,
    /// DER SubjectPublicKeyInfo of `public`.
    public_der: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.inner {
            Inner::File(_) => "file".to_string(),
            Inner::Token(t) => t.name(),
        };
        f.debug_struct("SigningKey")
            .field("kind", &self.kind)
            .field("source", &source)
            .finish_non_exhaustive()
    }
}

/// The SHA-256 hex of a SubjectPublicKeyInfo DER: how the transparency log
/// names an X.509 signer's key ([`crate::Signer::log_key_id`]).
pub fn spki_sha256(der: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(der))
}

fn key_err(what: &str) -> impl Fn(openssl::error::ErrorStack) -> SignError + '_ {
    move |e| SignError::Key(format!("{what}: {e}"))
}

impl SigningKey {
    /// Opens the key of `cfg`: a file unlocked with `secret` as its passphrase, or a
    /// token key with `secret` as the token's PIN. `what` names the key in messages
    /// ("MAR key"). The key signs a test message before it is returned.
    pub fn open(
        cfg: &FormatConfig,
        secret: Option<&SecretString>,
        what: &str,
    ) -> Result<Self, SignError> {
        let key = match KeySource::of(cfg)? {
            KeySource::File(path) => {
                Self::from_private(super::load_private_key(&path, what, secret)?)?
            }
            KeySource::Token { module, uri } => {
                let pin = secret.cloned().ok_or_else(|| {
                    SignError::Key(format!(
                        "{what} {}: no PIN given for token {}",
                        uri.key_name(),
                        uri.token_name()
                    ))
                })?;
                Self::from_token(TokenKey::open(&module, &uri, pin)?)?
            }
        };
        key.self_check()?;
        Ok(key)
    }

    /// A key in memory.
    pub fn from_private(pkey: PKey<Private>) -> Result<Self, SignError> {
        let public_der = pkey.public_key_to_der().map_err(key_err("public key"))?;
        let public = PKey::public_key_from_der(&public_der).map_err(key_err("public key"))?;
        let kind = kind_of(&public)?;
        Ok(SigningKey {
            inner: Inner::File(pkey),
            kind,
            public,
            public_der,
        })
    }

    /// A key in a token.
    pub fn from_token(token: TokenKey) -> Result<Self, SignError> {
        let public = token.public_key().clone();
        let public_der = public.public_key_to_der().map_err(key_err("public key"))?;
        let kind = kind_of(&public)?;
        let expected = match kind {
            KeyKind::Rsa { .. } => TokenKeyType::Rsa,
            KeyKind::Ec { .. } => TokenKeyType::Ec,
        };
        if token.key_type() != expected {
            return Err(SignError::Key(format!(
                "{}: the key type does not match its public key",
                token.name()
            )));
        }
        Ok(SigningKey {
            inner: Inner::Token(Box::new(token)),
            kind,
            public,
            public_der,
        })
    }

    /// RSA (and its size) or EC (and its curve).
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The public key.
    pub fn public_key(&self) -> &PKey<Public> {
        &self.public
    }

    /// The public key as a DER SubjectPublicKeyInfo (compare with a certificate's).
    pub fn public_key_der(&self) -> &[u8] {
        &self.public_der
    }

    /// Whether the key is in a token (then [`SigningKey::private_pkey`] is `None`).
    pub fn is_token(&self) -> bool {
        matches!(self.inner, Inner::Token(_))
    }

    /// The openssl key of a file key, for code that still needs one.
    pub fn private_pkey(&self) -> Option<&PKey<Private>> {
        match &self.inner {
            Inner::File(k) => Some(k),
            Inner::Token(_) => None,
        }
    }

    /// Signs the `digest` (made with `hash`): RSA PKCS#1 v1.5 over its DigestInfo, or a
    /// DER ECDSA signature. A token fault is [`SignError::Unavailable`].
    pub fn sign_digest(&self, hash: Hash, digest: &[u8]) -> Result<Vec<u8>, SignError> {
        let internal =
            |e: openssl::error::ErrorStack| SignError::Internal(anyhow::anyhow!("signing: {e}"));
        match &self.inner {
            Inner::File(pkey) => {
                let mut ctx = openssl::pkey_ctx::PkeyCtx::new(pkey).map_err(internal)?;
                ctx.sign_init().map_err(internal)?;
                if let KeyKind::Rsa { .. } = self.kind {
                    ctx.set_rsa_padding(openssl::rsa::Padding::PKCS1)
                        .map_err(internal)?;
                }
                ctx.set_signature_md(hash.evp()).map_err(internal)?;
                let mut out = Vec::new();
                ctx.sign_to_vec(digest, &mut out).map_err(internal)?;
                Ok(out)
            }
            Inner::Token(token) => match self.kind {
                KeyKind::Rsa { .. } => {
                    let mut info = hash.digest_info_prefix().to_vec();
                    info.extend_from_slice(digest);
                    token.sign_raw(&cryptoki::mechanism::Mechanism::RsaPkcs, &info)
                }
                KeyKind::Ec { .. } => {
                    let raw = token.sign_raw(&cryptoki::mechanism::Mechanism::Ecdsa, digest)?;
                    ecdsa_raw_to_der(&raw)
                }
            },
        }
    }

    /// Hashes `data` with `hash` and signs the digest.
    pub fn sign(&self, hash: Hash, data: &[u8]) -> Result<Vec<u8>, SignError> {
        self.sign_digest(hash, &hash.digest(data)?)
    }

    /// Whether `signature` is this key's signature of `data`.
    pub fn verify(&self, hash: Hash, data: &[u8], signature: &[u8]) -> bool {
        openssl::sign::Verifier::new(hash.md(), &self.public)
            .and_then(|mut v| {
                v.update(data)?;
                v.verify(signature)
            })
            .unwrap_or(false)
    }

    /// Signs a test message and checks the signature with the public key: the key works
    /// and its public half is the one we believe (a token's public key object could
    /// belong to another key).
    pub fn self_check(&self) -> Result<(), SignError> {
        let msg = b"signing-server key self-check";
        let sig = self.sign(Hash::Sha256, msg).map_err(|e| match e {
            SignError::Unavailable(m) => SignError::Key(m),
            other => other,
        })?;
        if self.verify(Hash::Sha256, msg, &sig) {
            Ok(())
        } else {
            Err(SignError::Key(
                "the key's signature does not verify with its public key".into(),
            ))
        }
    }

    /// The key's state for /health and /metrics.
    pub fn status(&self) -> KeyStatus {
        match &self.inner {
            Inner::File(_) => KeyStatus {
                source: "file",
                available: true,
                errors: 0,
                last_error: None,
            },
            Inner::Token(t) => t.status(),
        }
    }
}

fn kind_of(public: &PKey<Public>) -> Result<KeyKind, SignError> {
    match public.id() {
        Id::RSA => Ok(KeyKind::Rsa {
            bits: public.bits(),
        }),
        Id::EC => Ok(KeyKind::Ec {
            curve: public.ec_key().ok().and_then(|k| k.group().curve_name()),
        }),
        other => Err(SignError::Key(format!(
            "unsupported key type {other:?} (RSA or ECDSA)"
        ))),
    }
}

/// A token's raw ECDSA signature (`r ‖ s`, each half the length) as DER.
fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>, SignError> {
    let bad = || {
        SignError::Unavailable(format!(
            "the token gave a {}-byte ECDSA signature",
            raw.len()
        ))
    };
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return Err(bad());
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let (r, s) = BigNum::from_slice(r)
        .and_then(|r| Ok((r, BigNum::from_slice(s)?)))
        .map_err(|_| bad())?;
    EcdsaSig::from_private_components(r, s)
        .and_then(|sig| sig.to_der())
        .map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_keys_sign_digests_like_openssl_signs_data() {
        let rsa = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let group = openssl::ec::EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let ec = PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap();
        for pkey in [rsa, ec] {
            let k = SigningKey::from_private(pkey.clone()).unwrap();
            k.self_check().unwrap();
            for hash in [Hash::Sha1, Hash::Sha256, Hash::Sha384, Hash::Sha512] {
                let sig = k.sign(hash, b"data").unwrap();
                assert!(k.verify(hash, b"data", &sig));
                assert!(!k.verify(hash, b"other data", &sig));
            }
        }
    }

    #[test]
    fn rsa_digest_info_is_what_openssl_pads() {
        // PKCS#1 v1.5 is deterministic: the DigestInfo we give a token must make the same
        // signature openssl makes for the data.
        let pkey = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        for hash in [Hash::Sha1, Hash::Sha256, Hash::Sha384, Hash::Sha512] {
            let mut info = hash.digest_info_prefix().to_vec();
            info.extend(hash.digest(b"abc").unwrap());
            let rsa = pkey.rsa().unwrap();
            let mut raw = vec![0; rsa.size() as usize];
            let n = rsa
                .private_encrypt(&info, &mut raw, openssl::rsa::Padding::PKCS1)
                .unwrap();
            raw.truncate(n);
            let mut s = openssl::sign::Signer::new(hash.md(), &pkey).unwrap();
            s.update(b"abc").unwrap();
            assert_eq!(raw, s.sign_to_vec().unwrap(), "{hash:?}");
        }
    }

    #[test]
    fn raw_ecdsa_becomes_der() {
        let group = openssl::ec::EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let ec = openssl::ec::EcKey::generate(&group).unwrap();
        let digest = Hash::Sha256.digest(b"m").unwrap();
        let sig = EcdsaSig::sign(&digest, &ec).unwrap();
        let mut raw = sig.r().to_vec_padded(32).unwrap();
        raw.extend(sig.s().to_vec_padded(32).unwrap());
        let der = ecdsa_raw_to_der(&raw).unwrap();
        let back = EcdsaSig::from_der(&der).unwrap();
        assert!(back.verify(&digest, &ec).unwrap());
        assert!(ecdsa_raw_to_der(&raw[..63]).is_err());
        assert!(ecdsa_raw_to_der(&[]).is_err());
    }

    #[test]
    fn key_sources() {
        let mut cfg = FormatConfig {
            name: "f".into(),
            key: "keys/a.pem".into(),
            ..Default::default()
        };
        assert_eq!(
            KeySource::of(&cfg).unwrap(),
            KeySource::File("keys/a.pem".into())
        );
        cfg.key = "pkcs11:token=t;object=k".into();
        let e = KeySource::of(&cfg).unwrap_err().to_string();
        assert!(e.contains("no PKCS#11 module"), "{e}");
        cfg.pkcs11_module = Some("/m.so".into());
        let KeySource::Token { module, uri } = KeySource::of(&cfg).unwrap() else {
            panic!("not a token")
        };
        assert_eq!(module, PathBuf::from("/m.so"));
        assert_eq!(uri.object.as_deref(), Some("k"));
        assert!(KeySource::of(&cfg).unwrap().needs_secret("k").unwrap());
        cfg.key = "pkcs11:token=t;object=k?module-path=/n.so".into();
        let KeySource::Token { module, .. } = KeySource::of(&cfg).unwrap() else {
            panic!("not a token")
        };
        assert_eq!(module, PathBuf::from("/n.so"), "the URI's module wins");
    }
}
