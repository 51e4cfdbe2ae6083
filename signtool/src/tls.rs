//! The HTTPS client: rustls with ring, trusting only the certificates in the
//! `-c` file, with host-name checking, HTTP/1.1 only (the server's protocol).
//!
//! `-c` may hold a CA (the usual case) or a server's own certificate: a
//! certificate presented by the server that is byte-for-byte one of the `-c`
//! certificates is accepted when its names cover the host (pinning); anything
//! else must chain to a `-c` certificate. No system roots, ever.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::cli::Net;

/// Builds the client for `net`.
pub fn client(net: &Net) -> anyhow::Result<reqwest::Client> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&net.cert)
        .with_context(|| format!("cannot read the certificate file {}", net.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate file", net.cert.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", net.cert.display());
    }
    let config = client_config(certs, &net.cert)?;
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .http1_only()
        .connect_timeout(secs(net.connect_timeout, "--connect-timeout")?)
        // No reqwest read_timeout: it runs from the start of a request to its
        // response headers, so it would cut off any upload longer than it.
        // transfer.rs watches for stalls instead (no progress for --read-timeout).
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("signtool/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("cannot build the HTTPS client")
}

/// A positive duration from a `--…-timeout` flag.
pub fn secs(v: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{flag} must be a positive number of seconds"))
}

fn client_config(
    certs: Vec<CertificateDer<'static>>,
    path: &Path,
) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = verifier(certs, path, provider.clone())?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn verifier(
    certs: Vec<CertificateDer<'static>>,
    path: &Path,
    provider: Arc<CryptoProvider>,
) -> anyhow::Result<Arc<TrustCertFile>> {
    let mut roots = RootCertStore::empty();
    for c in &certs {
        roots
            .add(c.clone())
            .with_context(|| format!("{}: unusable certificate", path.display()))?;
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .context("cannot build the certificate verifier")?;
    Ok(Arc::new(TrustCertFile {
        pinned: certs,
        webpki,
        provider,
    }))
}

/// Chain to a `-c` certificate, or be exactly one of them (names checked either way).
#[derive(Debug)]
struct TrustCertFile {
    pinned: Vec<CertificateDer<'static>>,
    webpki: Arc<WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for TrustCertFile {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_name(&parsed, server_name)?;
            return Ok(ServerCertVerified::assertion());
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certs(name: &str) -> Vec<CertificateDer<'static>> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../certs")
            .join(name);
        CertificateDer::pem_file_iter(path)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn check(trust: &str, name: &str) -> Result<ServerCertVerified, rustls::Error> {
        let v = verifier(
            certs(trust),
            Path::new(trust),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .unwrap();
        let chain = certs("server-chain.pem");
        let (ee, rest) = chain.split_first().unwrap();
        v.verify_server_cert(
            ee,
            rest,
            &ServerName::try_from(name.to_string()).unwrap(),
            &[],
            UnixTime::now(),
        )
    }

    #[test]
    fn a_ca_or_the_server_cert_is_trusted_and_names_are_always_checked() {
        assert!(check("ca.pem", "localhost").is_ok());
        assert!(check("ca.pem", "127.0.0.1").is_ok());
        assert!(
            check("ca.pem", "evil.example").is_err(),
            "host name not checked"
        );
        assert!(
            check("server.pem", "localhost").is_ok(),
            "pinned server certificate refused"
        );
        assert!(
            check("server.pem", "evil.example").is_err(),
            "pinned certificate: host name not checked"
        );
    }
}
