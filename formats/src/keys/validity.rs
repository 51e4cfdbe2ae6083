//! When a format's certificates expire: the server exports it in /metrics,
//! warns ahead of time and refuses to start with an expired signing
//! certificate (a release blocked by an expired certificate is a classic
//! outage). Reads the PEM chain file the format's `cert =` names.

use std::path::Path;

use x509_cert::Certificate;

use super::{read_bounded, MAX_SMALL_FILE};
use crate::SignError;

/// One certificate's validity, in Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validity {
    /// The subject, as RFC 4514 text (for logs and warnings).
    pub subject: String,
    /// `notBefore`.
    pub not_before: u64,
    /// `notAfter`.
    pub not_after: u64,
}

/// The validity of every certificate of the PEM chain at `path`, the signing
/// (leaf) certificate first, as the file lists them.
pub fn chain_validity(path: &Path) -> Result<Vec<Validity>, SignError> {
    let pem = read_bounded(path, "certificate", MAX_SMALL_FILE).map_err(SignError::Config)?;
    let chain = Certificate::load_pem_chain(&pem).map_err(|e| {
        SignError::Config(format!(
            "certificate {}: not a PEM chain: {e}",
            path.display()
        ))
    })?;
    if chain.is_empty() {
        return Err(SignError::Config(format!(
            "certificate {}: no certificate in the file",
            path.display()
        )));
    }
    Ok(chain
        .iter()
        .map(|c| {
            let v = &c.tbs_certificate.validity;
            Validity {
                subject: c.tbs_certificate.subject.to_string(),
                not_before: v.not_before.to_unix_duration().as_secs(),
                not_after: v.not_after.to_unix_duration().as_secs(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_chain_in_file_order_with_openssls_dates() {
        let path = crate::test_support::certs().join("authenticode/rsa-chain.pem");
        let got = chain_validity(&path).unwrap();
        assert!(got.len() >= 2, "{got:?}");
        // openssl's reading of the leaf's notAfter, as Unix seconds.
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-enddate", "-dateopt", "iso_8601", "-in"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let date = text.trim().trim_start_matches("notAfter=");
        let unix = std::process::Command::new("date")
            .args(["-u", "-d", date, "+%s"])
            .output()
            .unwrap();
        let want: u64 = String::from_utf8(unix.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(got[0].not_after, want);
        assert!(got.iter().all(|v| v.not_before < v.not_after));
        let bad = std::env::temp_dir().join(format!("not-a-cert-{}", std::process::id()));
        std::fs::write(&bad, "hello").unwrap();
        assert!(matches!(chain_validity(&bad), Err(SignError::Config(_))));
        std::fs::remove_file(&bad).unwrap();
    }
}
