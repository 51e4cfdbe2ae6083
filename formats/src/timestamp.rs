//! RFC 3161 time-stamping client with URL failover (shared by the signers
//! that timestamp).
//!
//! [`TimestampClient::stamp`] sends a `TimeStampReq` (with a random nonce,
//! asking for the TSA's certificate) to each configured URL in turn, by HTTP
//! POST `application/timestamp-query`, with a per-URL timeout, and returns the
//! first `TimeStampToken` that passes the checks: HTTP 200, PKIStatus
//! granted (or granted with modifications), a token that is CMS SignedData
//! over a TSTInfo whose message imprint and nonce are ours, and whose
//! signature verifies with the TSA certificate carried in the token (which
//! must have the critical extendedKeyUsage timeStamping). If every URL fails,
//! the error lists what each one said: a signature is never silently left
//! without its timestamp.
//!
//! Deliberately NOT done: the TSA certificate's chain is not validated here
//! (the relying party does that against its own roots; a misconfigured URL is
//! caught by the signature/EKU checks); no https trust store (TSAs speak plain
//! HTTP: the token is signed), no legacy Authenticode (non-RFC 3161)
//! timestamps, no retries of one URL.

use std::io::Read;
use std::sync::OnceLock;
use std::time::Duration;

use const_oid::db::rfc5912::ID_KP_TIME_STAMPING;
use const_oid::ObjectIdentifier;
use der::asn1::{Any, Int, OctetString};
use der::{Decode, Encode};
use rand::RngCore;
use spki::AlgorithmIdentifierOwned;
use x509_cert::ext::pkix::ExtendedKeyUsage;
use x509_tsp::{MessageImprint, TimeStampReq, TimeStampResp, TspVersion, TstInfo};

use crate::authenticode::digest::DigestAlg;
use crate::authenticode::pkcs7;

/// Failed requests per TSA URL since start-up, for the server's metrics.
static FAILURES: std::sync::Mutex<std::collections::BTreeMap<String, u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Counts one failed request to the TSA at `url` (any signer that timestamps).
pub fn record_failure(url: &str) {
    let mut f = FAILURES.lock().unwrap_or_else(|p| p.into_inner());
    *f.entry(url.to_string()).or_default() += 1;
}

/// Failed requests per TSA URL since start-up.
pub fn failures() -> Vec<(String, u64)> {
    FAILURES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(u, n)| (u.clone(), *n))
        .collect()
}

/// id-ct-TSTInfo.
const ID_CT_TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
/// Largest reply we read from a TSA.
const MAX_REPLY: u64 = 1 << 20;
/// Default per-URL timeout.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// Asks RFC 3161 authorities for timestamps, trying URLs in order.
pub(crate) struct TimestampClient {
    urls: Vec<String>,
    timeout: Duration,
    /// Built on first use: a blocking reqwest client starts its own runtime
    /// thread, which must not happen inside the server's async context.
    http: OnceLock<reqwest::blocking::Client>,
}

impl std::fmt::Debug for TimestampClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimestampClient")
            .field("urls", &self.urls)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl TimestampClient {
    /// A client for `urls` (tried in order), each given `timeout`.
    pub(crate) fn new(urls: Vec<String>, timeout: Duration) -> Result<Self, String> {
        for u in &urls {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(format!("timestamp URL {u:?} is not http:// or https://"));
            }
        }
        Ok(TimestampClient {
            urls,
            timeout,
            http: OnceLock::new(),
        })
    }

    fn http(&self) -> Result<&reqwest::blocking::Client, String> {
        if let Some(c) = self.http.get() {
            return Ok(c);
        }
        let c = reqwest::blocking::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(self.http.get_or_init(|| c))
    }

    /// A DER `TimeStampToken` (ContentInfo) over `message` hashed with
    /// `alg`, from the first TSA that gives a valid one; else the list of
    /// what each TSA said.
    pub(crate) fn stamp(&self, alg: DigestAlg, message: &[u8]) -> Result<Vec<u8>, String> {
        let imprint = alg.hash(message);
        let mut errors = Vec::new();
        for url in &self.urls {
            match self.stamp_one(url, alg, &imprint) {
                Ok(token) => return Ok(token),
                Err(e) => {
                    record_failure(url);
                    errors.push(format!("{url}: {e}"));
                }
            }
        }
        Err(format!(
            "no time-stamping authority gave a valid timestamp: {}",
            errors.join("; ")
        ))
    }

    fn stamp_one(&self, url: &str, alg: DigestAlg, imprint: &[u8]) -> Result<Vec<u8>, String> {
        let (message_imprint, nonce, req) = request(alg, imprint)?;
        let resp = self
            .http()?
            .post(url)
            .header("Content-Type", "application/timestamp-query")
            .header("Accept", "application/timestamp-reply")
            .body(req)
            .send()
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("HTTP status {status}"));
        }
        let mut body = Vec::new();
        resp.take(MAX_REPLY + 1)
            .read_to_end(&mut body)
            .map_err(|e| format!("reading the reply: {e}"))?;
        if body.len() as u64 > MAX_REPLY {
            return Err(format!("reply larger than {MAX_REPLY} bytes"));
        }
        check_reply(&body, &message_imprint, &nonce)
    }
}

/// A DER `TimeStampReq` for `imprint` with a fresh random nonce, asking
/// for the TSA's certificate; also returns the imprint and nonce to check.
fn request(alg: DigestAlg, imprint: &[u8]) -> Result<(MessageImprint, Int, Vec<u8>), String> {
    let mut nonce = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut nonce);
    // Positive and minimally encoded.
    nonce[0] = (nonce[0] & 0x7f) | 0x01;
    let nonce = Int::new(&nonce).map_err(|e| format!("nonce: {e}"))?;
    let message_imprint = MessageImprint {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: alg.oid(),
            parameters: Some(Any::null()),
        },
        hashed_message: OctetString::new(imprint).map_err(|e| format!("imprint: {e}"))?,
    };
    let req = TimeStampReq {
        version: TspVersion::V1,
        message_imprint: message_imprint.clone(),
        req_policy: None,
        nonce: Some(nonce.clone()),
        cert_req: true,
        extensions: None,
    }
    .to_der()
    .map_err(|e| format!("cannot encode the request: {e}"))?;
    Ok((message_imprint, nonce, req))
}

/// Checks a `TimeStampResp` and returns its token's DER.
fn check_reply(body: &[u8], imprint: &MessageImprint, nonce: &Int) -> Result<Vec<u8>, String> {
    let resp = TimeStampResp::from_der(body).map_err(|e| format!("not a TimeStampResp: {e}"))?;
    let status = resp.status.status as u8;
    // 0 granted, 1 granted with modifications.
    if status > 1 {
        let text = resp
            .status
            .status_string
            .as_ref()
            .map(|s| {
                s.iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        return Err(format!("the TSA refused (PKIStatus {status}) {text}"));
    }
    let token = resp.time_stamp_token.ok_or("granted but no token")?;
    let token_der = token.to_der().map_err(|e| format!("token: {e}"))?;
    check_token(&token_der, imprint, Some(nonce))?;
    Ok(token_der)
}

/// Checks a DER `TimeStampToken`: a SignedData over a TSTInfo for
/// `imprint` (and `nonce`, if given), signed by the certificate it carries,
/// which has the critical extendedKeyUsage timeStamping.
pub(crate) fn check_token(
    token_der: &[u8],
    imprint: &MessageImprint,
    nonce: Option<&Int>,
) -> Result<(), String> {
    let sd = pkcs7::decode_signed_data(token_der).map_err(|e| format!("token: {e}"))?;
    if sd.encap_content_info.econtent_type != ID_CT_TST_INFO {
        return Err("the token does not hold a TSTInfo".into());
    }
    let econtent = sd
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or("the token has no TSTInfo")?;
    let tst_der = econtent
        .decode_as::<OctetString>()
        .map_err(|e| format!("TSTInfo: {e}"))?;
    let tst = TstInfo::from_der(tst_der.as_bytes()).map_err(|e| format!("TSTInfo: {e}"))?;
    if tst.message_imprint.hash_algorithm.oid != imprint.hash_algorithm.oid
        || tst.message_imprint.hashed_message != imprint.hashed_message
    {
        return Err("the timestamp is for another message (imprint mismatch)".into());
    }
    if nonce.is_some() && tst.nonce.as_ref() != nonce {
        return Err("the nonce in the reply is not ours".into());
    }
    let si = sd
        .signer_infos
        .0
        .iter()
        .next()
        .ok_or("the token has no signer")?;
    let cert = pkcs7::signer_cert(&sd, si).ok_or("the token does not carry the TSA certificate")?;
    let eku_ok = cert.tbs_certificate.extensions.iter().flatten().any(|e| {
        e.critical
            && ExtendedKeyUsage::from_der(e.extn_value.as_bytes())
                .is_ok_and(|eku| eku.0 == vec![ID_KP_TIME_STAMPING])
    });
    if !eku_ok {
        return Err("the TSA certificate lacks the critical extendedKeyUsage timeStamping".into());
    }
    pkcs7::verify_signer_info(si, tst_der.as_bytes(), cert)
        .map_err(|e| format!("the token's signature: {e}"))?;
    Ok(())
}

/// The message imprint an RFC 3161 token over `message` carries.
pub(crate) fn imprint_of(alg: DigestAlg, message: &[u8]) -> Result<MessageImprint, String> {
    Ok(MessageImprint {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: alg.oid(),
            parameters: Some(Any::null()),
        },
        hashed_message: OctetString::new(alg.hash(message)).map_err(|e| format!("imprint: {e}"))?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    fn certs() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs/authenticode")
    }

    /// `openssl ts -reply` to `req`, accepting only `digests`.
    pub(crate) fn openssl_reply(req: &[u8], digests: &str) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let c = certs();
        std::fs::write(dir.path().join("serial"), "01\n").unwrap();
        let cnf = dir.path().join("tsa.cnf");
        std::fs::write(
            &cnf,
            format!(
                "[tsa]\ndefault_tsa = t\n[t]\nserial = {}/serial\ncrypto_device = builtin\n\
                 signer_cert = {}\nsigner_key = {}\nsigner_digest = sha256\n\
                 default_policy = 1.3.6.1.4.1.55555.1\ndigests = {digests}\n\
                 ess_cert_id_alg = sha256\n",
                dir.path().display(),
                c.join("tsa.pem").display(),
                c.join("tsa.key").display()
            ),
        )
        .unwrap();
        let (q, r) = (dir.path().join("q"), dir.path().join("r"));
        std::fs::write(&q, req).unwrap();
        let st = Command::new("openssl")
            .args(["ts", "-reply", "-config"])
            .arg(&cnf)
            .arg("-queryfile")
            .arg(&q)
            .arg("-out")
            .arg(&r)
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::read(&r).unwrap()
    }

    #[test]
    fn a_real_reply_passes_and_each_mismatch_is_caught() {
        let imprint = DigestAlg::Sha256.hash(b"a signature value");
        let (mi, nonce, req) = request(DigestAlg::Sha256, &imprint).unwrap();
        let reply = openssl_reply(&req, "sha256, sha384");
        let token = check_reply(&reply, &mi, &nonce).unwrap();
        assert!(pkcs7::decode_signed_data(&token).is_ok());

        let (_, other_nonce, _) = request(DigestAlg::Sha256, &imprint).unwrap();
        let e = check_reply(&reply, &mi, &other_nonce).unwrap_err();
        assert!(e.contains("nonce"), "{e}");

        let (other_mi, _, _) = request(DigestAlg::Sha256, &[9u8; 32]).unwrap();
        let e = check_reply(&reply, &other_mi, &nonce).unwrap_err();
        assert!(e.contains("imprint"), "{e}");

        let e = check_reply(b"garbage", &mi, &nonce).unwrap_err();
        assert!(e.contains("not a TimeStampResp"), "{e}");

        // A modified token no longer verifies.
        let mut bad = reply.clone();
        let n = bad.len();
        bad[n - 5] ^= 0x01;
        assert!(check_reply(&bad, &mi, &nonce).is_err());
    }

    #[test]
    fn a_refusal_is_reported_with_its_status() {
        let imprint = DigestAlg::Sha256.hash(b"x");
        let (mi, nonce, req) = request(DigestAlg::Sha256, &imprint).unwrap();
        let reply = openssl_reply(&req, "sha512");
        let e = check_reply(&reply, &mi, &nonce).unwrap_err();
        assert!(e.contains("refused (PKIStatus 2)"), "{e}");
    }

    #[test]
    fn every_failing_url_is_listed() {
        let dead = |_: ()| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/", l.local_addr().unwrap())
        };
        let urls = vec![dead(()), dead(())];
        let c = TimestampClient::new(urls.clone(), Duration::from_secs(2)).unwrap();
        let e = c.stamp(DigestAlg::Sha256, b"sig").unwrap_err();
        for u in &urls {
            assert!(e.contains(u.as_str()), "{e}");
        }
        assert!(TimestampClient::new(vec!["ftp://x/".into()], DEFAULT_TIMEOUT).is_err());
    }

    /// A one-connection-at-a-time HTTP time-stamping authority on loopback
    /// (`openssl ts -reply`), for the signers' tests. Returns its URL.
    pub(crate) fn test_tsa() -> String {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut r = BufReader::new(stream.try_clone().unwrap());
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                if r.read_exact(&mut body).is_err() {
                    continue;
                }
                let reply = openssl_reply(&body, "sha256, sha384, sha512");
                let mut w = stream;
                let _ = write!(
                    w,
                    "HTTP/1.0 200 OK\r\nContent-Type: application/timestamp-reply\r\nContent-Length: {}\r\n\r\n",
                    reply.len()
                );
                let _ = w.write_all(&reply);
            }
        });
        url
    }
}
