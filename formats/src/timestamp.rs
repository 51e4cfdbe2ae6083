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
//! [`failover`] is the one loop over TSA URLs: this client uses it, and so
//! does the apple signer (apple-codesign asks the TSA itself). Each failed
//! request is counted in the signer's [`TsaFailures`], which the server
//! reports as `signing_tsa_failures_total{url}`.
//!
//! Deliberately NOT done: the TSA certificate's chain is not validated here
//! (the relying party does that against its own roots; a misconfigured URL is
//! caught by the signature/EKU checks); no https trust store (TSAs speak plain
//! HTTP: the token is signed), no legacy Authenticode (non-RFC 3161)
//! timestamps, no retries of one URL.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use const_oid::db::rfc5912::ID_KP_TIME_STAMPING;
use const_oid::ObjectIdentifier;
use der::asn1::{Any, Int, OctetString};
use der::{Decode, Encode};
use rand::RngCore;
use spki::AlgorithmIdentifierOwned;
use x509_cert::ext::pkix::ExtendedKeyUsage;
use x509_tsp::{MessageImprint, TimeStampReq, TimeStampResp, TspVersion, TstInfo};

use crate::signed_data::{self, DigestAlg};

/// id-ct-TSTInfo.
const ID_CT_TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
/// Largest reply we read from a TSA.
const MAX_REPLY: u64 = 1 << 20;
/// Default per-URL timeout.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// What went wrong while getting or checking a timestamp.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TimestampError {
    /// A configured URL is neither http:// nor https://.
    #[error("timestamp URL {0:?} is not http:// or https://")]
    BadUrl(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
    /// Our own request could not be encoded (a bug).
    #[error("cannot encode the request: {0}")]
    Encode(String),
    /// The request got no answer (connection, timeout, TLS).
    #[error("request failed: {0}")]
    Request(reqwest::Error),
    /// The TSA answered with an HTTP error status.
    #[error("HTTP status {0}")]
    Status(reqwest::StatusCode),
    /// The reply could not be read.
    #[error("reading the reply: {0}")]
    Read(std::io::Error),
    /// The reply is larger than we read.
    #[error("reply larger than {MAX_REPLY} bytes")]
    TooLarge,
    /// The TSA refused (PKIStatus rejection, waiting, revocation...).
    #[error("the TSA refused (PKIStatus {status}) {text}")]
    Refused {
        /// The PKIStatus.
        status: u8,
        /// Its status strings, if any.
        text: String,
    },
    /// The reply or its token failed a check (what, in words).
    #[error("{0}")]
    Invalid(String),
    /// A TSA failure reported by a library that asks the TSA itself
    /// (apple-codesign), in its words.
    #[error("{0}")]
    Library(String),
    /// Every configured authority failed: what each one said.
    #[error("no time-stamping authority gave a valid timestamp: {}", list(.0))]
    AllFailed(Vec<(String, TimestampError)>),
}

fn list(errors: &[(String, TimestampError)]) -> String {
    errors
        .iter()
        .map(|(url, e)| format!("{url}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn invalid(what: impl std::fmt::Display) -> TimestampError {
    TimestampError::Invalid(what.to_string())
}

/// Failed requests per TSA URL since the signer that owns it was opened,
/// for the server's metrics (`signing_tsa_failures_total{url}`).
#[derive(Debug, Default)]
pub struct TsaFailures(Mutex<BTreeMap<String, u64>>);

impl TsaFailures {
    /// Counts one failed request to the TSA at `url`.
    pub(crate) fn record(&self, url: &str) {
        let mut f = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *f.entry(url.to_string()).or_default() += 1;
    }

    /// Failed requests per URL so far.
    pub fn counts(&self) -> Vec<(String, u64)> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(u, n)| (u.clone(), *n))
            .collect()
    }
}

/// The `notAfter` (Unix seconds) of the certificate each TSA signed its last
/// valid reply with, for the server's expiry metrics: a TSA certificate that
/// expires blocks every timestamped signing as surely as our own.
#[derive(Debug, Default)]
pub struct TsaCertificates(Mutex<BTreeMap<String, u64>>);

impl TsaCertificates {
    fn record(&self, url: &str, not_after: u64) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(url.to_string(), not_after);
    }

    /// (URL, notAfter) of every TSA that answered so far.
    pub fn expiry(&self) -> Vec<(String, u64)> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(u, t)| (u.clone(), *t))
            .collect()
    }
}

/// Why one attempt of [`failover`] failed.
#[derive(Debug)]
pub(crate) enum Attempt<E> {
    /// The time-stamping authority failed: counted, then the next URL is tried.
    Tsa(TimestampError),
    /// Anything else (disk, a bug, a refused input): returned at once, not counted.
    Other(E),
}

/// Runs `attempt` with each URL of `urls` in order until one succeeds. A TSA
/// error is counted in `failures`, logged, and the next URL is tried; any
/// other error ends the loop. If every URL fails: [`TimestampError::AllFailed`].
pub(crate) fn failover<T, E>(
    urls: &[String],
    failures: &TsaFailures,
    mut attempt: impl FnMut(&str) -> Result<T, Attempt<E>>,
) -> Result<T, Attempt<E>> {
    let mut errors = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        match attempt(url) {
            Ok(t) => return Ok(t),
            Err(Attempt::Tsa(e)) => {
                failures.record(url);
                if i + 1 < urls.len() {
                    tracing::warn!(%url, error = %e, "time-stamping authority failed, trying the next one");
                }
                errors.push((url.clone(), e));
            }
            Err(other) => return Err(other),
        }
    }
    Err(Attempt::Tsa(TimestampError::AllFailed(errors)))
}

/// Checks that every URL is http:// or https://.
pub(crate) fn check_urls(urls: &[String]) -> Result<(), TimestampError> {
    match urls
        .iter()
        .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
    {
        Some(u) => Err(TimestampError::BadUrl(u.clone())),
        None => Ok(()),
    }
}

/// Asks RFC 3161 authorities for timestamps, trying URLs in order.
pub(crate) struct TimestampClient {
    urls: Vec<String>,
    timeout: Duration,
    /// Built on first use: a blocking reqwest client starts its own runtime
    /// thread, which must not happen inside the server's async context.
    http: OnceLock<reqwest::blocking::Client>,
    failures: TsaFailures,
    certs: TsaCertificates,
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
    pub(crate) fn new(urls: Vec<String>, timeout: Duration) -> Result<Self, TimestampError> {
        check_urls(&urls)?;
        Ok(TimestampClient {
            urls,
            timeout,
            http: OnceLock::new(),
            failures: TsaFailures::default(),
            certs: TsaCertificates::default(),
        })
    }

    /// Failed requests per URL since this client was made.
    pub(crate) fn failures(&self) -> &TsaFailures {
        &self.failures
    }

    /// The TSA certificates of the last valid replies.
    pub(crate) fn certificates(&self) -> &TsaCertificates {
        &self.certs
    }

    fn http(&self) -> Result<&reqwest::blocking::Client, TimestampError> {
        if let Some(c) = self.http.get() {
            return Ok(c);
        }
        let c = reqwest::blocking::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(TimestampError::Client)?;
        Ok(self.http.get_or_init(|| c))
    }

    /// A DER `TimeStampToken` (ContentInfo) over `message` hashed with
    /// `alg`, from the first TSA that gives a valid one; else
    /// [`TimestampError::AllFailed`] with what each TSA said.
    pub(crate) fn stamp(&self, alg: DigestAlg, message: &[u8]) -> Result<Vec<u8>, TimestampError> {
        let imprint = alg.hash(message);
        failover(&self.urls, &self.failures, |url| {
            self.stamp_one(url, alg, &imprint)
                .map_err(Attempt::<std::convert::Infallible>::Tsa)
        })
        .map_err(|e| match e {
            Attempt::Tsa(e) => e,
            Attempt::Other(never) => match never {},
        })
    }

    fn stamp_one(
        &self,
        url: &str,
        alg: DigestAlg,
        imprint: &[u8],
    ) -> Result<Vec<u8>, TimestampError> {
        let (message_imprint, nonce, req) = request(alg, imprint)?;
        let resp = self
            .http()?
            .post(url)
            .header("Content-Type", "application/timestamp-query")
            .header("Accept", "application/timestamp-reply")
            .body(req)
            .send()
            .map_err(TimestampError::Request)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(TimestampError::Status(status));
        }
        let mut body = Vec::new();
        resp.take(MAX_REPLY + 1)
            .read_to_end(&mut body)
            .map_err(TimestampError::Read)?;
        if body.len() as u64 > MAX_REPLY {
            return Err(TimestampError::TooLarge);
        }
        let (token, not_after) = check_reply(&body, &message_imprint, &nonce)?;
        self.certs.record(url, not_after);
        Ok(token)
    }
}

/// A DER `TimeStampReq` for `imprint` with a fresh random nonce, asking
/// for the TSA's certificate; also returns the imprint and nonce to check.
fn request(
    alg: DigestAlg,
    imprint: &[u8],
) -> Result<(MessageImprint, Int, Vec<u8>), TimestampError> {
    let encode = |what: &str, e: der::Error| TimestampError::Encode(format!("{what}: {e}"));
    let mut nonce = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut nonce);
    // Positive and minimally encoded.
    nonce[0] = (nonce[0] & 0x7f) | 0x01;
    let nonce = Int::new(&nonce).map_err(|e| encode("nonce", e))?;
    let message_imprint = MessageImprint {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: alg.oid(),
            parameters: Some(Any::null()),
        },
        hashed_message: OctetString::new(imprint).map_err(|e| encode("imprint", e))?,
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
    .map_err(|e| encode("TimeStampReq", e))?;
    Ok((message_imprint, nonce, req))
}

/// Checks a `TimeStampResp` and returns its token's DER and the TSA
/// certificate's `notAfter`.
fn check_reply(
    body: &[u8],
    imprint: &MessageImprint,
    nonce: &Int,
) -> Result<(Vec<u8>, u64), TimestampError> {
    let resp =
        TimeStampResp::from_der(body).map_err(|e| invalid(format!("not a TimeStampResp: {e}")))?;
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
        return Err(TimestampError::Refused { status, text });
    }
    let token = resp
        .time_stamp_token
        .ok_or_else(|| invalid("granted but no token"))?;
    let token_der = token.to_der().map_err(|e| invalid(format!("token: {e}")))?;
    let not_after = check_token(&token_der, imprint, Some(nonce))?;
    Ok((token_der, not_after))
}

/// Checks a DER `TimeStampToken`: a SignedData over a TSTInfo for
/// `imprint` (and `nonce`, if given), signed by the certificate it carries,
/// which has the critical extendedKeyUsage timeStamping. Returns that
/// certificate's `notAfter` (Unix seconds).
pub(crate) fn check_token(
    token_der: &[u8],
    imprint: &MessageImprint,
    nonce: Option<&Int>,
) -> Result<u64, TimestampError> {
    let sd =
        signed_data::decode_signed_data(token_der).map_err(|e| invalid(format!("token: {e}")))?;
    if sd.encap_content_info.econtent_type != ID_CT_TST_INFO {
        return Err(invalid("the token does not hold a TSTInfo"));
    }
    let econtent = sd
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or_else(|| invalid("the token has no TSTInfo"))?;
    let tst_der = econtent
        .decode_as::<OctetString>()
        .map_err(|e| invalid(format!("TSTInfo: {e}")))?;
    let tst =
        TstInfo::from_der(tst_der.as_bytes()).map_err(|e| invalid(format!("TSTInfo: {e}")))?;
    if tst.message_imprint.hash_algorithm.oid != imprint.hash_algorithm.oid
        || tst.message_imprint.hashed_message != imprint.hashed_message
    {
        return Err(invalid(
            "the timestamp is for another message (imprint mismatch)",
        ));
    }
    if nonce.is_some() && tst.nonce.as_ref() != nonce {
        return Err(invalid("the nonce in the reply is not ours"));
    }
    let si = sd
        .signer_infos
        .0
        .iter()
        .next()
        .ok_or_else(|| invalid("the token has no signer"))?;
    let cert = signed_data::signer_cert(&sd, si)
        .ok_or_else(|| invalid("the token does not carry the TSA certificate"))?;
    let eku_ok = cert.tbs_certificate.extensions.iter().flatten().any(|e| {
        e.critical
            && ExtendedKeyUsage::from_der(e.extn_value.as_bytes())
                .is_ok_and(|eku| eku.0 == vec![ID_KP_TIME_STAMPING])
    });
    if !eku_ok {
        return Err(invalid(
            "the TSA certificate lacks the critical extendedKeyUsage timeStamping",
        ));
    }
    signed_data::verify_signer_info(si, tst_der.as_bytes(), cert)
        .map_err(|e| invalid(format!("the token's signature: {e}")))?;
    Ok(cert
        .tbs_certificate
        .validity
        .not_after
        .to_unix_duration()
        .as_secs())
}

/// The message imprint an RFC 3161 token over `message` carries.
pub(crate) fn imprint_of(alg: DigestAlg, message: &[u8]) -> Result<MessageImprint, TimestampError> {
    Ok(MessageImprint {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: alg.oid(),
            parameters: Some(Any::null()),
        },
        hashed_message: OctetString::new(alg.hash(message))
            .map_err(|e| TimestampError::Encode(format!("imprint: {e}")))?,
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
        let (token, not_after) = check_reply(&reply, &mi, &nonce).unwrap();
        assert!(signed_data::decode_signed_data(&token).is_ok());
        // The TSA certificate's notAfter, as openssl reads it from the test TSA's cert.
        let tsa_cert = certs().join("tsa.pem");
        let want = crate::keys::validity::chain_validity(&tsa_cert).unwrap()[0].not_after;
        assert_eq!(not_after, want);

        let (_, other_nonce, _) = request(DigestAlg::Sha256, &imprint).unwrap();
        let e = check_reply(&reply, &mi, &other_nonce)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nonce"), "{e}");

        let (other_mi, _, _) = request(DigestAlg::Sha256, &[9u8; 32]).unwrap();
        let e = check_reply(&reply, &other_mi, &nonce)
            .unwrap_err()
            .to_string();
        assert!(e.contains("imprint"), "{e}");

        let e = check_reply(b"garbage", &mi, &nonce)
            .unwrap_err()
            .to_string();
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
        assert!(
            matches!(e, TimestampError::Refused { status: 2, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("refused (PKIStatus 2)"), "{e}");
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
        let TimestampError::AllFailed(each) = &e else {
            panic!("expected AllFailed, got {e:?}");
        };
        assert_eq!(each.len(), 2, "{e}");
        assert!(each
            .iter()
            .all(|(_, e)| matches!(e, TimestampError::Request(_))));
        let text = e.to_string();
        for u in &urls {
            assert!(text.contains(u.as_str()), "{text}");
        }
        // Each failed request is counted, per URL, by the client that made it.
        let mut want: Vec<(String, u64)> = urls.iter().map(|u| (u.clone(), 1)).collect();
        want.sort();
        assert_eq!(c.failures().counts(), want);
        assert!(matches!(
            TimestampClient::new(vec!["ftp://x/".into()], DEFAULT_TIMEOUT),
            Err(TimestampError::BadUrl(_))
        ));
    }

    #[test]
    fn failover_moves_on_only_after_tsa_errors() {
        let urls: Vec<String> = ["http://a/", "http://b/", "http://c/"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        // A TSA error moves on to the next URL and is counted; success stops.
        let failures = TsaFailures::default();
        let mut tried = Vec::new();
        let r: Result<&str, Attempt<()>> = failover(&urls, &failures, |url| {
            tried.push(url.to_string());
            if url == "http://b/" {
                Ok("token")
            } else {
                Err(Attempt::Tsa(TimestampError::TooLarge))
            }
        });
        assert_eq!(r.unwrap(), "token");
        assert_eq!(tried, ["http://a/", "http://b/"]);
        assert_eq!(failures.counts(), [("http://a/".to_string(), 1)]);
        // Any other error ends the loop at once and is not a TSA failure.
        let failures = TsaFailures::default();
        let mut tried = 0;
        let r: Result<(), Attempt<&str>> = failover(&urls, &failures, |_| {
            tried += 1;
            Err(Attempt::Other("disk full"))
        });
        assert!(matches!(r, Err(Attempt::Other("disk full"))));
        assert_eq!(tried, 1);
        assert!(failures.counts().is_empty());
        // Every URL failing: all of them listed and counted.
        let failures = TsaFailures::default();
        let r: Result<(), Attempt<()>> = failover(&urls, &failures, |_| {
            Err(Attempt::Tsa(TimestampError::TooLarge))
        });
        let Err(Attempt::Tsa(TimestampError::AllFailed(each))) = r else {
            panic!("expected AllFailed");
        };
        assert_eq!(each.len(), 3);
        assert_eq!(failures.counts().len(), 3);
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
