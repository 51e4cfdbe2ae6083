//! The Authenticode PKCS#7 `SignedData` (version 1) over an
//! `SpcIndirectDataContent`, built from `cms`/`der`/`x509-cert` types, and
//! its verification.
//!
//! Structure (Microsoft's "Windows Authenticode Portable Executable Signature
//! Format"): the encapsulated content is an `SpcIndirectDataContent` holding
//! the PE image hash; the one `SignerInfo` signs the attributes contentType,
//! messageDigest (over the content's value octets, without the outer SEQUENCE
//! tag and length), SpcStatementType (individual code signing) and
//! SpcSpOpusInfo (program name and URL); an RFC 3161 token, when present, is
//! the unsigned attribute 1.3.6.1.4.1.311.3.3.1.
//!
//! Only the raw signature comes from the key (openssl); everything else is
//! encoded here. Deliberately NOT done: legacy (Authenticode-countersignature)
//! timestamps, nested signatures, page hashes, catalog files.

use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use const_oid::db::rfc5911::{ID_CONTENT_TYPE, ID_MESSAGE_DIGEST, ID_SIGNED_DATA};
use const_oid::db::rfc5912::{
    ECDSA_WITH_SHA_256, ECDSA_WITH_SHA_384, ECDSA_WITH_SHA_512, RSA_ENCRYPTION,
};
use const_oid::ObjectIdentifier;
use der::asn1::{Any, OctetString, SetOfVec};
use der::{Decode, Encode, SliceReader};
use spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;

use crate::signed_data::{
    alg_with_null, attribute, decode_signed_data, der_err, oid_der, tlv, value_octets, DigestAlg,
    Result,
};

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// SPC_INDIRECT_DATA_OBJID.
pub(crate) const SPC_INDIRECT_DATA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.4");
/// SPC_PE_IMAGE_DATAOBJ.
const SPC_PE_IMAGE_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.15");
/// SPC_SP_OPUS_INFO_OBJID.
const SPC_SP_OPUS_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.12");
/// SPC_STATEMENT_TYPE_OBJID.
const SPC_STATEMENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.11");
/// SPC_INDIVIDUAL_SP_KEY_PURPOSE_OBJID.
const SPC_INDIVIDUAL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.21");
/// szOID_RFC3161_counterSign: the unsigned attribute holding an RFC 3161 token.
pub(crate) const SPC_RFC3161: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.3.3.1");

/// SPC_SIPINFO_OBJID: the data type of MSI and script signatures.
pub(crate) const SPC_SIPINFO: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.30");
/// SPC_CAB_DATA_OBJID: the data type of cabinet signatures.
pub(crate) const SPC_CAB_DATA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.25");
/// szOID_CTL: a catalog's content (a certificate trust list).
pub(crate) const MS_CTL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.10.1");

/// `SpcLink ::= file [2] EXPLICIT SpcString (unicode [0] IMPLICIT "<<<Obsolete>>>")`.
pub(crate) fn spc_link_obsolete() -> Vec<u8> {
    let obsolete: Vec<u8> = "<<<Obsolete>>>"
        .encode_utf16()
        .flat_map(u16::to_be_bytes)
        .collect();
    tlv(0xa2, &tlv(0x80, &obsolete))
}

/// `SpcSipInfo ::= SEQUENCE { version INTEGER, uuid OCTET STRING, 5 reserved INTEGERs (0) }`:
/// which Subject Interface Package hashes the file (MSI: version 1; scripts: 65536).
pub(crate) fn spc_sip_info(version: u32, uuid: &[u8; 16]) -> Vec<u8> {
    let mut v = version.to_be_bytes().to_vec();
    // Minimal two's-complement INTEGER: no redundant leading zero bytes.
    while v.len() > 1 && v.first() == Some(&0) && v.get(1).is_some_and(|b| b & 0x80 == 0) {
        v.remove(0);
    }
    let zero = [0x02, 0x01, 0x00];
    tlv(
        0x30,
        &cat(&[
            &tlv(0x02, &v),
            &tlv(0x04, uuid),
            &zero,
            &zero,
            &zero,
            &zero,
            &zero,
        ]),
    )
}

/// `SpcAttributeTypeAndOptionalValue ::= SEQUENCE { type, value }`: the
/// `data` of an `SpcIndirectDataContent`, which says what kind of file the
/// digest is of (a PE image, an MSI, a cabinet, a script).
pub(crate) fn spc_data(data_type: ObjectIdentifier, data_value: &[u8]) -> Result<Vec<u8>> {
    Ok(tlv(0x30, &cat(&[&oid_der(&data_type)?, data_value])))
}

/// `SpcIndirectDataContent` whose data is `{ data_type, data_value }` (a DER value)
/// and whose messageDigest is `digest`: the form of every Authenticode container.
pub(crate) fn spc_indirect_data_for(
    data_type: ObjectIdentifier,
    data_value: &[u8],
    alg: DigestAlg,
    digest: &[u8],
) -> Result<Vec<u8>> {
    let data = spc_data(data_type, data_value)?;
    let alg_id = tlv(0x30, &cat(&[&oid_der(&alg.oid())?, &[0x05, 0x00]]));
    let digest_info = tlv(0x30, &cat(&[&alg_id, &tlv(0x04, digest)]));
    Ok(tlv(0x30, &cat(&[&data, &digest_info])))
}

/// The `data` of PE signatures: `SPC_PE_IMAGE_DATAOBJ` with
/// `SpcPeImageData ::= SEQUENCE { flags BIT STRING (empty),
/// file [0] EXPLICIT SpcLink }` whose link is `<<<Obsolete>>>`.
pub(crate) fn spc_pe_image_data() -> (ObjectIdentifier, Vec<u8>) {
    let value = tlv(
        0x30,
        &cat(&[&[0x03, 0x01, 0x00], &tlv(0xa0, &spc_link_obsolete())]),
    );
    (SPC_PE_IMAGE_DATA, value)
}

/// `SpcIndirectDataContent` for a PE image hash `digest`.
pub(crate) fn spc_indirect_data(alg: DigestAlg, digest: &[u8]) -> Result<Vec<u8>> {
    let (data_type, value) = spc_pe_image_data();
    spc_indirect_data_for(data_type, &value, alg, digest)
}

/// `SpcSpOpusInfo ::= SEQUENCE { programName [0] EXPLICIT SpcString OPTIONAL,
/// moreInfo [1] EXPLICIT SpcLink OPTIONAL }`.
fn opus_info(program_name: Option<&str>, program_url: Option<&str>) -> Vec<u8> {
    let mut inner = Vec::new();
    if let Some(name) = program_name {
        let bmp: Vec<u8> = name.encode_utf16().flat_map(u16::to_be_bytes).collect();
        inner.extend(tlv(0xa0, &tlv(0x80, &bmp)));
    }
    if let Some(url) = program_url {
        inner.extend(tlv(0xa1, &tlv(0x80, url.as_bytes())));
    }
    tlv(0x30, &inner)
}

/// The kind of signing key, which fixes the signatureAlgorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa,
    Ecdsa,
}

fn signature_algorithm(kind: KeyKind, alg: DigestAlg) -> AlgorithmIdentifierOwned {
    match kind {
        KeyKind::Rsa => alg_with_null(RSA_ENCRYPTION),
        KeyKind::Ecdsa => AlgorithmIdentifierOwned {
            oid: match alg {
                DigestAlg::Sha256 => ECDSA_WITH_SHA_256,
                DigestAlg::Sha384 => ECDSA_WITH_SHA_384,
                DigestAlg::Sha512 => ECDSA_WITH_SHA_512,
            },
            parameters: None,
        },
    }
}

/// What goes into one signature besides the image hash.
pub(crate) struct SignParams<'a> {
    pub(crate) alg: DigestAlg,
    pub(crate) kind: KeyKind,
    /// The signing certificate.
    pub(crate) leaf: &'a Certificate,
    /// Every certificate to embed (the leaf included).
    pub(crate) chain: &'a [Certificate],
    pub(crate) program_name: Option<&'a str>,
    pub(crate) program_url: Option<&'a str>,
}

/// A signed `SignerInfo` and the rest of the `SignedData`, before an
/// optional timestamp is added and it is encoded.
pub(crate) struct Unfinished {
    signed_data: SignedData,
    signer_info: SignerInfo,
}

impl Unfinished {
    /// The SignerInfo's signature value: what an RFC 3161 token stamps.
    pub(crate) fn signature(&self) -> &[u8] {
        self.signer_info.signature.as_bytes()
    }

    /// Adds an RFC 3161 `TimeStampToken` (a DER ContentInfo) as unsigned attribute.
    pub(crate) fn add_timestamp(&mut self, token_der: &[u8]) -> Result<()> {
        let attr = attribute(SPC_RFC3161, token_der)?;
        let attrs = SetOfVec::try_from(vec![attr]).map_err(der_err("unsigned attributes"))?;
        self.signer_info.unsigned_attrs = Some(attrs);
        Ok(())
    }

    /// The DER `ContentInfo` that goes into the WIN_CERTIFICATE.
    pub(crate) fn finish(mut self) -> Result<Vec<u8>> {
        self.signed_data.signer_infos = SignerInfos(
            SetOfVec::try_from(vec![self.signer_info]).map_err(der_err("signer infos"))?,
        );
        let content = Any::encode_from(&self.signed_data).map_err(der_err("SignedData"))?;
        ContentInfo {
            content_type: ID_SIGNED_DATA,
            content,
        }
        .to_der()
        .map_err(der_err("ContentInfo"))
    }
}

/// Builds the SignedData over the encapsulated `content` (a DER value) of
/// type `content_type`: an `SpcIndirectDataContent` (PE, MSI, CAB, scripts), or a
/// catalog's CTL; `sign` makes the raw signature (RSA PKCS#1 v1.5 or DER ECDSA) of
/// the bytes it is given.
pub(crate) fn build_for(
    p: &SignParams<'_>,
    content_type: ObjectIdentifier,
    content: &[u8],
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>>,
) -> Result<Unfinished> {
    let message_digest = p.alg.hash(value_octets(content)?);
    let attrs = vec![
        attribute(ID_CONTENT_TYPE, &oid_der(&content_type)?)?,
        attribute(ID_MESSAGE_DIGEST, &tlv(0x04, &message_digest))?,
        attribute(SPC_STATEMENT_TYPE, &tlv(0x30, &oid_der(&SPC_INDIVIDUAL)?))?,
        attribute(SPC_SP_OPUS_INFO, &opus_info(p.program_name, p.program_url))?,
    ];
    let signed_attrs = SetOfVec::try_from(attrs).map_err(der_err("signed attributes"))?;
    let to_sign = signed_attrs
        .to_der()
        .map_err(der_err("signed attributes"))?;
    let signature = sign(&to_sign)?;

    let tbs = &p.leaf.tbs_certificate;
    let signer_info = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: tbs.issuer.clone(),
            serial_number: tbs.serial_number.clone(),
        }),
        digest_alg: alg_with_null(p.alg.oid()),
        signed_attrs: Some(signed_attrs),
        signature_algorithm: signature_algorithm(p.kind, p.alg),
        signature: OctetString::new(signature).map_err(der_err("signature"))?,
        unsigned_attrs: None,
    };
    let certs = p
        .chain
        .iter()
        .cloned()
        .map(CertificateChoices::Certificate)
        .collect::<Vec<_>>();
    let signed_data = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::try_from(vec![alg_with_null(p.alg.oid())])
            .map_err(der_err("digest algorithms"))?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: content_type,
            econtent: Some(Any::from_der(content).map_err(der_err("content"))?),
        },
        certificates: Some(CertificateSet(
            SetOfVec::try_from(certs).map_err(der_err("certificates"))?,
        )),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::new()),
    };
    Ok(Unfinished {
        signed_data,
        signer_info,
    })
}

/// What an Authenticode signature says about the image.
pub(crate) struct Parsed {
    /// Digest algorithm and image hash from the SpcIndirectDataContent.
    pub(crate) alg: DigestAlg,
    pub(crate) image_hash: Vec<u8>,
    /// The DER `SpcAttributeTypeAndOptionalValue` ([`spc_data`]): what the
    /// hash is of.
    pub(crate) data: Vec<u8>,
    pub(crate) signed_data: SignedData,
}

/// Parses an Authenticode SignedData and returns the image hash it carries.
/// Does not check the signature: see [`verify_signer_info`].
pub(crate) fn parse_authenticode(der: &[u8]) -> Result<Parsed> {
    let sd = decode_signed_data(der)?;
    if sd.encap_content_info.econtent_type != SPC_INDIRECT_DATA {
        return Err(format!(
            "content type {} is not SpcIndirectDataContent",
            sd.encap_content_info.econtent_type
        ));
    }
    let content = sd
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or("no encapsulated content")?
        .to_der()
        .map_err(der_err("content"))?;
    // SEQUENCE { data SEQUENCE, messageDigest DigestInfo }
    let mut r = SliceReader::new(value_octets(&content)?).map_err(der_err("content"))?;
    let data = Any::decode(&mut r).map_err(der_err("SpcAttributeTypeAndOptionalValue"))?;
    let data = data
        .to_der()
        .map_err(der_err("SpcAttributeTypeAndOptionalValue"))?;
    let digest_info = Any::decode(&mut r).map_err(der_err("DigestInfo"))?;
    let mut r = SliceReader::new(digest_info.value()).map_err(der_err("DigestInfo"))?;
    let alg_id = AlgorithmIdentifierOwned::decode(&mut r).map_err(der_err("DigestInfo"))?;
    let hash = OctetString::decode(&mut r).map_err(der_err("DigestInfo"))?;
    let alg = DigestAlg::from_oid(&alg_id.oid)
        .ok_or_else(|| format!("unsupported image digest algorithm {}", alg_id.oid))?;
    Ok(Parsed {
        alg,
        image_hash: hash.as_bytes().to_vec(),
        data,
        signed_data: sd,
    })
}

/// Checks one SignerInfo `si` of `sd` as a relying party would: its signature
/// over the SignedData's content verifies with `cert`, and every RFC 3161
/// timestamp in its unsigned attributes stamps that signature (with `alg`).
/// The one check behind every Authenticode verifier here (PE, the other
/// containers, and the client's check of a digest-signing answer).
pub(crate) fn check_signer(
    sd: &cms::signed_data::SignedData,
    si: &cms::signed_data::SignerInfo,
    cert: &Certificate,
    alg: DigestAlg,
) -> std::result::Result<(), String> {
    let content = sd
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or("no content")?
        .to_der()
        .map_err(|e| e.to_string())?;
    crate::signed_data::verify_signer_info(si, crate::signed_data::value_octets(&content)?, cert)?;
    let tokens = si
        .unsigned_attrs
        .iter()
        .flat_map(|a| a.iter())
        .filter(|a| a.oid == SPC_RFC3161)
        .flat_map(|a| a.values.iter());
    for token in tokens {
        let der = token.to_der().map_err(|e| e.to_string())?;
        let imprint = crate::timestamp::imprint_of(alg, si.signature.as_bytes())
            .map_err(|e| e.to_string())?;
        crate::timestamp::check_token(&der, &imprint, None)
            .map_err(|e| format!("the timestamp: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spc_indirect_data_round_trips() {
        let d = [7u8; 32];
        let der = spc_indirect_data(DigestAlg::Sha256, &d).unwrap();
        let any = Any::from_der(&der).unwrap();
        assert_eq!(any.value(), value_octets(&der).unwrap());
        // The PE image data as osslsigncode and signtool.exe write it.
        let hex = hex::encode(&der);
        assert!(hex.contains("060a2b06010401823702010f"), "{hex}");
        assert!(
            hex.contains(
                "3025030100a020a21e801c003c003c003c004f00620073006f006c006500740065003e003e003e"
            ),
            "{hex}"
        );
    }
}
