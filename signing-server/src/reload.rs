//! SIGHUP: re-read the config and put what can change without a restart in force.
//!
//! Reloaded: allow-lists, token secrets and minting credentials (with their
//! TOTP secret files, approvers and each format's approvals and rate), token age,
//! filename rules, size limits, `digest_signing`, long poll, cleanup timings, the TLS
//! certificate, and formats whose key and signer settings are unchanged
//! (their unlocked keys are kept; no passphrase is asked again).
//!
//! Not reloaded (the log says "restart to apply"): a format whose key file or
//! signer settings changed (it keeps signing with the key it has), a new
//! format (its key would need a passphrase), the listen address, port,
//! work_dir, concurrency, max_queue (and its per-peer share, the upload
//! rate floor), the connection limits,
//! proxy_protocol_from, cert_expiry_warning, logging.
//!
//! A config that does not load is rejected as a whole: the old one keeps serving.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::{Config, ServerConfig};
use crate::passphrase::Signers;
use crate::state::{Dynamic, FormatEntry};

/// sha256 of a key file, to tell on reload whether it changed.
pub fn key_digest(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => hex::encode(Sha256::digest(&bytes)),
        Err(_) => String::new(),
    }
}

/// The reloadable state of a freshly started server.
pub fn initial(cfg: &Config, signers: Signers) -> Dynamic {
    let mut formats = HashMap::new();
    for (name, signer) in signers {
        if let Some(f) = cfg.formats.iter().find(|f| f.signer.name == name) {
            let entry = FormatEntry {
                signer,
                max_filesize: f.max_filesize,
                digest_signing: f.digest_signing,
                rate: f.rate,
                config: f.signer.clone(),
                key_digest: key_digest(&f.signer.key),
                certs: crate::expiry::read(f.signer.cert.as_deref()),
            };
            formats.insert(name, Arc::new(entry));
        }
    }
    dynamic(cfg, formats)
}

fn dynamic(cfg: &Config, formats: HashMap<String, Arc<FormatEntry>>) -> Dynamic {
    let format_names = cfg
        .formats
        .iter()
        .map(|f| f.signer.name.clone())
        .filter(|n| formats.contains_key(n))
        .collect();
    Dynamic {
        security: cfg.security.clone(),
        formats,
        format_names,
        long_poll: cfg.server.long_poll,
        max_file_age: cfg.server.max_file_age,
        cleanup_interval: cfg.server.cleanup_interval,
    }
}

/// What a reload did: the new state, and one line per thing that needs a restart.
pub struct Outcome {
    /// The state to put in force.
    pub dynamic: Dynamic,
    /// Changes that were not applied.
    pub needs_restart: Vec<String>,
    /// Formats no longer served.
    pub removed: Vec<String>,
}

/// Builds the state for `new`, reusing the unlocked signers of `old`.
pub fn apply(old: &Dynamic, old_server: &ServerConfig, new: &Config) -> Outcome {
    let mut needs_restart = Vec::new();
    let s = &new.server;
    for (what, changed) in [
        ("listen", s.listen != old_server.listen),
        ("port", s.port != old_server.port),
        ("work_dir", s.work_dir != old_server.work_dir),
        ("concurrency", s.concurrency != old_server.concurrency),
        ("max_queue", s.max_queue != old_server.max_queue),
        (
            "max_queue_per_peer",
            s.max_queue_per_peer != old_server.max_queue_per_peer,
        ),
        (
            "min_upload_rate",
            s.min_upload_rate != old_server.min_upload_rate,
        ),
        ("idle_timeout", s.idle_timeout != old_server.idle_timeout),
        ("form_timeout", s.form_timeout != old_server.form_timeout),
        ("max_scratch", s.max_scratch != old_server.max_scratch),
        (
            "max_connections",
            s.max_connections != old_server.max_connections,
        ),
        (
            "max_connections_per_ip",
            s.max_connections_per_ip != old_server.max_connections_per_ip,
        ),
        (
            "proxy_protocol_from",
            s.proxy_protocol_from != old_server.proxy_protocol_from,
        ),
        (
            "cert_expiry_warning",
            s.cert_expiry_warning != old_server.cert_expiry_warning,
        ),
    ] {
        if changed {
            needs_restart.push(format!("[server] {what} changed: restart to apply"));
        }
    }
    let mut formats = HashMap::new();
    for f in &new.formats {
        let name = &f.signer.name;
        let Some(running) = old.formats.get(name) else {
            needs_restart.push(format!(
                "format {name} is new: restart to unlock its key (not served until then)"
            ));
            continue;
        };
        let same_settings = running.config == f.signer;
        let same_key = key_digest(&f.signer.key) == running.key_digest;
        if same_settings && same_key {
            formats.insert(
                name.clone(),
                Arc::new(FormatEntry {
                    signer: running.signer.clone(),
                    max_filesize: f.max_filesize,
                    digest_signing: f.digest_signing,
                    rate: f.rate,
                    config: running.config.clone(),
                    key_digest: running.key_digest.clone(),
                    certs: running.certs.clone(),
                }),
            );
        } else {
            let what = if same_key {
                "its signer settings changed"
            } else {
                "its key changed"
            };
            needs_restart.push(format!(
                "format {name}: {what}; it keeps signing with the key it has until a restart"
            ));
            formats.insert(name.clone(), running.clone());
        }
    }
    let removed: Vec<String> = old
        .formats
        .keys()
        .filter(|n| !formats.contains_key(*n))
        .cloned()
        .collect();
    let mut d = dynamic(new, formats);
    // Formats kept with their old settings still appear in /health.
    for name in old.format_names.iter() {
        if d.formats.contains_key(name) && !d.format_names.contains(name) {
            d.format_names.push(name.clone());
        }
    }
    Outcome {
        dynamic: d,
        needs_restart,
        removed,
    }
}
