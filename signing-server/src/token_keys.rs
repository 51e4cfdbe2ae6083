//! The server's side of keys in PKCS#11 tokens: checking a `key = pkcs11:…` value for
//! the config reader, and telling which secret a format's key needs (a token's PIN is
//! asked once per token, a file's passphrase once per key file).
//!
//! The tokens themselves (module loading, sessions, signing) are in
//! `formats::pkcs11`; the PIN is asked by [`crate::passphrase`] exactly like a
//! passphrase, and lives only in a `SecretString` handed to the token key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use formats::pkcs11::Pkcs11Uri;
use formats::{FormatConfig, KeySource, KeyStatus, SignError};

/// Checks a `key =` value that is a PKCS#11 URI: it parses, holds no PIN, and has a
/// module (its `module-path`, an absolute path to a file, or the `[pkcs11] module`).
/// The message follows the config's `file:line: key: `.
pub fn check_key_uri(value: &str, default_module: Option<&PathBuf>) -> Result<(), String> {
    let uri = Pkcs11Uri::parse(value)?;
    match (&uri.module_path, default_module) {
        (Some(m), _) if !m.is_absolute() => Err(format!(
            "module-path {} must be an absolute path",
            m.display()
        )),
        (Some(m), _) if !m.is_file() => Err(format!("module-path {}: file not found", m.display())),
        (Some(_), _) | (None, Some(_)) => Ok(()),
        (None, None) => {
            Err("the PKCS#11 URI has no module-path and there is no [pkcs11] module = PATH".into())
        }
    }
}

/// What a secret is asked for: one passphrase per key file, one PIN per token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AskedFor {
    /// A key file, by canonical path.
    File(PathBuf),
    /// A token: its module and the URI's token attributes.
    Token(PathBuf, Vec<Option<String>>),
}

/// Which secret the key of `cfg` needs, and for a token, its label for the prompt.
pub fn asked_for(cfg: &FormatConfig) -> Result<(AskedFor, Option<String>), SignError> {
    Ok(match KeySource::of(cfg)? {
        KeySource::File(path) => {
            let canon = path.canonicalize().unwrap_or_else(|_| path.clone());
            (AskedFor::File(canon), None)
        }
        KeySource::Token { module, uri } => {
            let canon = module.canonicalize().unwrap_or_else(|_| module.clone());
            let label = uri.token_name().to_string();
            (AskedFor::Token(canon, uri.token_identity().1), Some(label))
        }
    })
}

/// `/health`'s `keys`: each format's key source and state, in name order. Errors are
/// described by the token library (no secret in them).
pub fn health<'a>(formats: impl IntoIterator<Item = (&'a String, KeyStatus)>) -> serde_json::Value {
    let sorted: BTreeMap<_, _> = formats.into_iter().collect();
    let map = sorted
        .into_iter()
        .map(|(name, s)| {
            let mut v = serde_json::json!({
                "source": s.source,
                "state": if s.available { "ok" } else { "unavailable" },
            });
            if let Some(e) = s.last_error {
                v["error"] = e.into();
            }
            (name.clone(), v)
        })
        .collect::<serde_json::Map<_, _>>();
    serde_json::Value::Object(map)
}

/// `/metrics` lines: `signing_token_errors_total{format}` and `signing_key_available{format}`
/// for the formats whose key is in a token.
pub fn metrics<'a>(formats: impl IntoIterator<Item = (&'a String, KeyStatus)>) -> String {
    use std::fmt::Write as _;
    let tokens: BTreeMap<_, _> = formats
        .into_iter()
        .filter(|(_, s)| s.source == "pkcs11")
        .collect();
    let mut out = String::new();
    if tokens.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "# HELP signing_token_errors_total PKCS#11 token errors while signing, per format."
    );
    let _ = writeln!(out, "# TYPE signing_token_errors_total counter");
    for (name, s) in &tokens {
        let _ = writeln!(
            out,
            "signing_token_errors_total{{format=\"{name}\"}} {}",
            s.errors
        );
    }
    let _ = writeln!(
        out,
        "# HELP signing_key_available Whether the format's token key signed on its last use."
    );
    let _ = writeln!(out, "# TYPE signing_key_available gauge");
    for (name, s) in &tokens {
        let _ = writeln!(
            out,
            "signing_key_available{{format=\"{name}\"}} {}",
            u8::from(s.available)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_need_a_module_and_no_pin() {
        let so = std::env::current_exe().unwrap();
        let with = format!("pkcs11:token=t;object=k?module-path={}", so.display());
        assert_eq!(check_key_uri(&with, None), Ok(()));
        assert!(check_key_uri("pkcs11:token=t;object=k", Some(&so)).is_ok());
        let e = check_key_uri("pkcs11:token=t;object=k", None).unwrap_err();
        assert!(e.contains("[pkcs11] module"), "{e}");
        let e = check_key_uri("pkcs11:object=k?module-path=rel/m.so", None).unwrap_err();
        assert!(e.contains("absolute"), "{e}");
        let e = check_key_uri("pkcs11:object=k?module-path=/nonexistent/m.so", None).unwrap_err();
        assert!(e.contains("not found"), "{e}");
        let e = check_key_uri("pkcs11:object=k;pin-value=4321", Some(&so)).unwrap_err();
        assert!(e.contains("PIN") && !e.contains("4321"), "{e}");
    }

    #[test]
    fn one_pin_per_token() {
        let cfg = |key: &str| FormatConfig {
            name: "f".into(),
            key: key.into(),
            pkcs11_module: Some("/m.so".into()),
            ..Default::default()
        };
        let (a, la) = asked_for(&cfg("pkcs11:token=rel;object=a")).unwrap();
        let (b, _) = asked_for(&cfg("pkcs11:token=rel;object=b")).unwrap();
        let (c, _) = asked_for(&cfg("pkcs11:token=other;object=a")).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(la.as_deref(), Some("rel"));
        let (f, none) = asked_for(&cfg("keys/a.pem")).unwrap();
        assert!(matches!(f, AskedFor::File(_)) && none.is_none());
    }

    #[test]
    fn health_and_metrics_show_token_keys() {
        let ok = KeyStatus {
            source: "file",
            available: true,
            errors: 0,
            last_error: None,
        };
        let down = KeyStatus {
            source: "pkcs11",
            available: false,
            errors: 3,
            last_error: Some("token=t;object=k: no token t".into()),
        };
        let (a, b) = ("apk".to_string(), "sha2signcode".to_string());
        let h = health([(&a, ok.clone()), (&b, down.clone())]);
        assert_eq!(h["apk"]["source"], "file");
        assert_eq!(h["apk"]["state"], "ok");
        assert_eq!(h["sha2signcode"]["state"], "unavailable");
        assert_eq!(h["sha2signcode"]["error"], "token=t;object=k: no token t");
        let m = metrics([(&a, ok.clone()), (&b, down.clone())]);
        assert!(
            m.contains("signing_token_errors_total{format=\"sha2signcode\"} 3"),
            "{m}"
        );
        assert!(
            m.contains("signing_key_available{format=\"sha2signcode\"} 0"),
            "{m}"
        );
        assert!(!m.contains("apk"), "file keys have no token metrics: {m}");
        assert_eq!(metrics([(&a, ok)]), "");
    }
}
