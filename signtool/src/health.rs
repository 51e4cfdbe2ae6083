//! What each host's `GET /health` says about its formats, read once per host
//! per run: each format's `max_filesize`, its `output` (`file` or
//! `detached`), whether it signs digests (`digest_signing`, `digest`, and
//! for authenticode `digest_containers`), and whether it takes an upload's
//! digest after the file (`trailing_sha256`).
//!
//! A file over a host's limit fails at once, as a 413 would: the server
//! refuses such an upload from its Content-Length and closes, and a client
//! still sending it may see only a reset, which would look like a host
//! failure and cost a failover per host. A host whose /health lacks a field
//! (an older server, Mozilla's) is simply uploaded to, and a format's output
//! is then guessed from its name ([`crate::cli::is_detached`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use formats::digest_signing::DigestSpec;

/// One format on one host, as its /health describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormatInfo {
    /// Largest upload.
    pub max_filesize: Option<u64>,
    /// Whether the result is a detached signature (`output: detached`).
    pub detached: Option<bool>,
    /// How to sign it by digest, when the host allows it.
    pub digest: Option<DigestSpec>,
    /// Whether the host takes an upload's `sha256` after `filedata`
    /// (`"trailing_sha256": true`): the file is then hashed while it is sent.
    pub trailing_sha256: bool,
}

/// Per host URL, its formats (filled by the first reader).
#[derive(Default)]
pub struct Health {
    hosts: Mutex<HashMap<String, HostInfo>>,
}

type HostInfo = Arc<tokio::sync::OnceCell<HashMap<String, FormatInfo>>>;

impl Health {
    /// What `url` says of `format` (empty when it says nothing or cannot be
    /// reached within `timeout`); asked once per host and run.
    pub async fn get(
        &self,
        client: &reqwest::Client,
        timeout: Duration,
        url: &str,
        format: &str,
    ) -> FormatInfo {
        let Some(cell) = self
            .hosts
            .lock()
            .ok()
            .map(|mut h| h.entry(url.to_string()).or_default().clone())
        else {
            return FormatInfo::default();
        };
        let formats = cell.get_or_init(|| read(client, timeout, url)).await;
        formats.get(format).cloned().unwrap_or_default()
    }

    /// Whether `format`'s result is a detached signature: the first of its
    /// hosts `urls` (in pool order) whose /health says, else the name rule for older
    /// servers. The hosts are asked at once, so dead hosts cost one timeout, not one each.
    pub async fn detached(
        &self,
        client: &reqwest::Client,
        timeout: Duration,
        urls: &[&str],
        format: &str,
    ) -> bool {
        let asks = urls.iter().map(|u| self.get(client, timeout, u, format));
        let said = futures_util::future::join_all(asks).await;
        if let Some(d) = said.iter().find_map(|info| info.detached) {
            return d;
        }
        crate::cli::is_detached(format)
    }
}

async fn read(
    client: &reqwest::Client,
    timeout: Duration,
    url: &str,
) -> HashMap<String, FormatInfo> {
    let send = client.get(format!("{url}/health")).timeout(timeout).send();
    let body = match send.await {
        Ok(r) if r.status().is_success() => r.bytes().await.ok(),
        _ => None,
    };
    let json: Option<serde_json::Value> = body.and_then(|b| serde_json::from_slice(&b).ok());
    let Some(json) = json else {
        return HashMap::new();
    };
    parse(&json)
}

/// The formats of a /health answer.
pub fn parse(json: &serde_json::Value) -> HashMap<String, FormatInfo> {
    let mut out: HashMap<String, FormatInfo> = HashMap::new();
    if let Some(m) = json.get("max_filesize").and_then(|m| m.as_object()) {
        for (k, v) in m {
            out.entry(k.clone()).or_default().max_filesize = v.as_u64();
        }
    }
    if let Some(m) = json.get("format_details").and_then(|m| m.as_object()) {
        for (k, v) in m {
            let info = out.entry(k.clone()).or_default();
            info.detached = match v.get("output").and_then(|o| o.as_str()) {
                Some("detached") => Some(true),
                Some("file") => Some(false),
                _ => None,
            };
            let allowed = v.get("digest_signing").and_then(|d| d.as_bool()) == Some(true);
            // Which Authenticode containers (absent from older servers: PE only).
            let containers: Option<Vec<&str>> = v
                .get("digest_containers")
                .and_then(|c| c.as_array())
                .map(|a| a.iter().filter_map(|c| c.as_str()).collect());
            info.digest = v
                .get("digest")
                .and_then(|d| d.as_str())
                .and_then(DigestSpec::parse)
                .map(|spec| spec.with_containers(containers.as_deref()))
                .filter(|_| allowed);
        }
    }
    if json.get("trailing_sha256").and_then(|t| t.as_bool()) == Some(true) {
        for info in out.values_mut() {
            info.trailing_sha256 = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use formats::digest_signing::Containers;

    #[test]
    fn reads_what_a_server_says_and_tolerates_what_it_does_not() {
        let j = serde_json::json!({
            "trailing_sha256": true,
            "max_filesize": {"gpg": 100, "mar": 200, "old": 5},
            "format_details": {
                "gpg": {"type": "gpg", "output": "detached", "digest_signing": true, "digest": "sha256_state"},
                "mar": {"type": "mar", "output": "file", "digest_signing": false, "digest": "mar:2:512"},
                "pe-only": {"type": "authenticode", "output": "file", "digest_signing": true, "digest": "authenticode:sha256"},
                "both": {"type": "authenticode", "output": "file", "digest_signing": true, "digest": "authenticode:sha384", "digest_containers": ["pe", "msi", "later"]},
                "future": {"type": "authenticode", "output": "file", "digest_signing": true, "digest": "authenticode:sha256:more"},
            }
        });
        let f = parse(&j);
        assert_eq!(f["gpg"].digest, Some(DigestSpec::Sha256State));
        assert_eq!(f["gpg"].detached, Some(true));
        assert_eq!(f["mar"].digest, None, "not allowed: no digest signing");
        assert_eq!(f["mar"].detached, Some(false));
        assert_eq!(f["old"].detached, None);
        assert_eq!(f["old"].max_filesize, Some(5));
        // An older server (no digest_containers) signs PEs only by digest.
        let sha = |hash, names: &[&str]| {
            Some(DigestSpec::Authenticode {
                hash,
                containers: Containers::from_names(names),
            })
        };
        assert_eq!(f["pe-only"].digest, sha(formats::Hash::Sha256, &["pe"]));
        assert_eq!(f["both"].digest, sha(formats::Hash::Sha384, &["msi"]));
        assert_eq!(f["future"].digest, None, "a spec this build does not know");
        assert!(f["gpg"].trailing_sha256 && f["old"].trailing_sha256);
        let older = parse(&serde_json::json!({"max_filesize": {"gpg": 100}}));
        assert!(
            !older["gpg"].trailing_sha256,
            "an older server: the digest goes first"
        );
        assert!(parse(&serde_json::json!({"status": "ok"})).is_empty());
    }
}
