//! `[format:NAME]` sections: the signer type, its key and certificate,
//! the common settings and the type's own keys.

use std::collections::BTreeMap;
use std::path::PathBuf;

use formats::FormatConfig;

use super::ini::{split_list, Reader, Section};
use super::policy::{FormatPolicy, FORMAT_KEYS};
use super::{parse_size, unknown, ConfigError, Format, DEFAULT_MAX_FILESIZE, UNPACKED_PER_UPLOAD};

const COMMON_FORMAT_KEYS: &[&str] = &[
    "type",
    "key",
    "cert",
    "digest",
    "timestamp_urls",
    "max_filesize",
    "allow_expired",
    "digest_signing",
];

/// The signer types that can sign a digest a client computed (issue 16).
const DIGEST_SIGNING_TYPES: &[&str] = &["gpg", "mar", "authenticode"];

/// `[pkcs11]`: `module = PATH`, the default module of `pkcs11:` keys.
pub(super) fn read_pkcs11(r: &Reader<'_>, s: &Section) -> Result<Option<PathBuf>, ConfigError> {
    let mut module = None;
    for e in &s.entries {
        match e.key.as_str() {
            "module" => module = Some(r.file(e, true)?),
            _ => return Err(unknown(r, s, e, &["module"])),
        }
    }
    Ok(module)
}

pub(super) fn read_format(
    r: &Reader<'_>,
    s: &Section,
    name: &str,
    earlier: &[Format],
    pkcs11_module: Option<&PathBuf>,
) -> Result<Format, ConfigError> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(r.err(
            s.line,
            format!(
                "format name {name:?} must be letters, digits, `_`, `.` or `-` (it goes in URLs)"
            ),
        ));
    }
    if earlier.iter().any(|f| f.signer.name == name) {
        return Err(r.err(s.line, format!("format {name} defined twice")));
    }
    let Some(type_entry) = s.entries.iter().find(|e| e.key == "type") else {
        return Err(r.err(
            s.line,
            format!(
                "[format:{name}] needs `type` ({})",
                formats::registry::known_types().join(", ")
            ),
        ));
    };
    let Some(kind) = formats::registry::find(&type_entry.value) else {
        return Err(r.err(
            type_entry.line,
            format!(
                "type: unknown signer type {:?} (this build knows: {})",
                type_entry.value,
                formats::registry::known_types().join(", ")
            ),
        ));
    };
    let mut cfg = FormatConfig {
        name: name.to_string(),
        kind: kind.name.to_string(),
        ..Default::default()
    };
    let mut key = None;
    let mut max_filesize = DEFAULT_MAX_FILESIZE;
    let mut allow_expired = false;
    let mut digest_signing = false;
    let mut policy = FormatPolicy::default();
    let mut extra = BTreeMap::new();
    for e in &s.entries {
        match e.key.as_str() {
            "type" => {}
            "key" if formats::pkcs11::uri::is_pkcs11_uri(&e.value) => {
                crate::token_keys::check_key_uri(&e.value, pkcs11_module)
                    .map_err(|m| r.err(e.line, format!("key: {m}")))?;
                key = Some(PathBuf::from(&e.value));
                cfg.pkcs11_module = pkcs11_module.cloned();
            }
            "key" => key = Some(r.file(e, true)?),
            "cert" => cfg.cert = Some(r.file(e, true)?),
            "digest" => cfg.digest = Some(e.value.to_ascii_lowercase()),
            "timestamp_urls" => {
                let urls = split_list(&e.value);
                for u in &urls {
                    if !(u.starts_with("http://") || u.starts_with("https://")) {
                        return Err(r.err(
                            e.line,
                            format!("timestamp_urls: {u:?} is not an http(s) URL"),
                        ));
                    }
                }
                cfg.timestamp_urls = urls;
            }
            "max_filesize" => max_filesize = r.size(e)?,
            "allow_expired" => allow_expired = r.yes_no(e)?,
            k if FORMAT_KEYS.contains(&k) => policy.read(r, e)?,
            "digest_signing" => {
                digest_signing = r.yes_no(e)?;
                if digest_signing && !DIGEST_SIGNING_TYPES.contains(&kind.name) {
                    return Err(r.err(
                        e.line,
                        format!(
                            "digest_signing: type {} signs whole files only (digest signing: {})",
                            kind.name,
                            DIGEST_SIGNING_TYPES.join(", ")
                        ),
                    ));
                }
            }
            k if kind.extra_keys.contains(&k) => {
                extra.insert(k.to_string(), e.value.clone());
            }
            _ => {
                let mut known: Vec<&str> = COMMON_FORMAT_KEYS.to_vec();
                known.extend(FORMAT_KEYS);
                known.extend(kind.extra_keys);
                return Err(unknown(r, s, e, &known));
            }
        }
    }
    cfg.key = key.ok_or_else(|| {
        r.err(
            s.line,
            format!("[format:{name}] needs `key` (the private key file or a pkcs11: URI)"),
        )
    })?;
    cfg.extra = extra;
    if digest_signing && cfg.kind == "gpg" && cfg.digest.as_deref().is_some_and(|d| d != "sha256") {
        return Err(r.err(
            s.line,
            format!("[format:{name}] digest_signing needs digest = sha256 for gpg (the client sends a SHA-256 state)"),
        ));
    }
    let (approvals, rate) = policy.finish(r)?;
    Ok(Format {
        signer: cfg,
        max_filesize,
        allow_expired,
        digest_signing,
        approvals,
        rate,
        line: s.line,
    })
}

/// `max_unpacked_size` (for the types that unpack: apple) as bytes, by
/// default [`UNPACKED_PER_UPLOAD`] × the format's `max_filesize`; and
/// `max_code_file_size` as bytes if it is set.
pub(super) fn unpacked_size(r: &Reader<'_>, f: &mut Format) -> Result<(), ConfigError> {
    let takes_it = formats::registry::find(&f.signer.kind)
        .is_some_and(|k| k.extra_keys.contains(&"max_unpacked_size"));
    if !takes_it {
        return Ok(());
    }
    let bytes = match f.signer.extra.get("max_unpacked_size") {
        Some(v) => size_of(r, f, "max_unpacked_size", v)?,
        None => f.max_filesize.saturating_mul(UNPACKED_PER_UPLOAD),
    };
    f.signer
        .extra
        .insert("max_unpacked_size".into(), bytes.to_string());
    // `max_code_file_size` has its default in the formats crate.
    if let Some(v) = f.signer.extra.get("max_code_file_size") {
        let bytes = size_of(r, f, "max_code_file_size", v)?;
        f.signer
            .extra
            .insert("max_code_file_size".into(), bytes.to_string());
    }
    Ok(())
}

/// The format's size setting `key` = `v` as bytes.
fn size_of(r: &Reader<'_>, f: &Format, key: &str, v: &str) -> Result<u64, ConfigError> {
    parse_size(v).ok_or_else(|| {
        r.err(
            f.line,
            format!(
                "[format:{}] {key}: {v:?} is not a size (bytes, or with K, M or G)",
                f.signer.name
            ),
        )
    })
}
