//! The v1 signature block (`META-INF/CERT.RSA` / `CERT.EC`): a detached
//! PKCS#7 `SignedData` over the `.SF` file, without signed attributes,
//! encoded with `cms`/`der` the way apksigner encodes it, so that each
//! Android version that knows the algorithm pair accepts it:
//!
//! - digestAlgorithm SHA-1 or SHA-256 (with NULL parameters);
//! - signatureAlgorithm `rsaEncryption` for RSA keys, `id-ecPublicKey` for EC
//!   keys (both with NULL parameters). Android accepts SHA-256 with
//!   `id-ecPublicKey` from API 18, whereas `ecdsa-with-SHA256` (what
//!   OpenSSL's PKCS#7 code writes) only from API 21;
//! - our certificate, identified by issuer and serial number.
//!
//! Only the raw signature comes from the format's key (a file or a token).

use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use const_oid::db::rfc5911::{ID_DATA, ID_SIGNED_DATA};
use const_oid::db::rfc5912::{ID_EC_PUBLIC_KEY, ID_SHA_1, ID_SHA_256, RSA_ENCRYPTION};
use const_oid::ObjectIdentifier;
use der::asn1::{Any, OctetString, SetOfVec};
use der::{Decode, Encode};
use spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;

use super::block::Key;
use crate::SignError;

fn internal(what: &str) -> impl Fn(der::Error) -> SignError + '_ {
    move |e| SignError::Internal(anyhow::anyhow!("APK v1 PKCS#7 {what}: {e}"))
}

fn with_null(oid: ObjectIdentifier) -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid,
        parameters: Some(Any::null()),
    }
}

/// The signature block over `sf`, signed by `key` with `hash` (the v1
/// digest's: SHA-1 or SHA-256).
pub(crate) fn sign(sf: &[u8], hash: crate::Hash, key: &Key) -> Result<Vec<u8>, SignError> {
    let digest_alg = with_null(match hash {
        crate::Hash::Sha1 => ID_SHA_1,
        crate::Hash::Sha256 => ID_SHA_256,
        other => {
            return Err(SignError::Internal(anyhow::anyhow!(
                "a v1 signature block is SHA-1 or SHA-256, not {other:?}"
            )))
        }
    });
    let cert = Certificate::from_der(&key.cert_der).map_err(internal("certificate"))?;
    let signature = key.sign_with(hash, sf)?;
    let signature_algorithm = with_null(if key.is_ec() {
        ID_EC_PUBLIC_KEY
    } else {
        RSA_ENCRYPTION
    });
    let signer_info = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: cert.tbs_certificate.issuer.clone(),
            serial_number: cert.tbs_certificate.serial_number.clone(),
        }),
        digest_alg: digest_alg.clone(),
        signed_attrs: None,
        signature_algorithm,
        signature: OctetString::new(signature).map_err(internal("signature"))?,
        unsigned_attrs: None,
    };
    let signed_data = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::try_from(vec![digest_alg])
            .map_err(internal("digest algorithms"))?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: ID_DATA,
            econtent: None,
        },
        certificates: Some(CertificateSet(
            SetOfVec::try_from(vec![CertificateChoices::Certificate(cert)])
                .map_err(internal("certificates"))?,
        )),
        crls: None,
        signer_infos: SignerInfos(
            SetOfVec::try_from(vec![signer_info]).map_err(internal("signer infos"))?,
        ),
    };
    let content = Any::encode_from(&signed_data).map_err(internal("SignedData"))?;
    ContentInfo {
        content_type: ID_SIGNED_DATA,
        content,
    }
    .to_der()
    .map_err(internal("ContentInfo"))
}
