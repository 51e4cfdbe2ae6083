//! Who may sign what (issue 28): the second factor of minting users
//! (`[security] new_token_totp.USER = FILE`), two-person approval
//! (`[format:NAME] approvals = 2` with `[security] new_token_approvers.NAME`)
//! and each format's signing rate (`[format:NAME] max_rate`, `burst`).
//!
//! The `[security]` keys are collected with their lines while the section is
//! read ([`Pending`]) and checked once the formats are known ([`finish`]):
//! the users must mint, the formats exist, the TOTP file be private.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;

use super::ini::{split_list, Entry, Reader};
use super::{ConfigError, Format, SecurityConfig};

/// `[format:NAME] max_rate` / `burst`: a token bucket of signatures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Signatures per second this server makes with the format's key, in the long run.
    pub per_second: f64,
    /// Signatures it may make at once after a quiet spell.
    pub burst: u32,
}

/// `[format:NAME]` keys of this module, read by `format.rs`.
pub(super) const FORMAT_KEYS: &[&str] = &["approvals", "max_rate", "burst"];

/// The policy keys of one `[format:NAME]` section.
#[derive(Debug, Default)]
pub(super) struct FormatPolicy {
    approvals: Option<(u8, usize)>,
    max_rate: Option<(f64, usize)>,
    burst: Option<(u32, usize)>,
}

impl FormatPolicy {
    /// Reads one of [`FORMAT_KEYS`].
    pub(super) fn read(&mut self, r: &Reader<'_>, e: &Entry) -> Result<(), ConfigError> {
        match e.key.as_str() {
            "approvals" => {
                let n: u8 = r.number(e, "1 or 2")?;
                if !(1..=2).contains(&n) {
                    return Err(r.err(e.line, "approvals: 1 (the default) or 2 (two people)"));
                }
                self.approvals = Some((n, e.line));
            }
            "max_rate" => {
                let n: f64 = r.number(e, "a number of signatures per second")?;
                if !(n.is_finite() && n > 0.0) {
                    return Err(r.err(e.line, "max_rate: must be a positive number per second"));
                }
                self.max_rate = Some((n, e.line));
            }
            _ => {
                let n: u32 = r.number(e, "a whole number of signatures")?;
                if n == 0 {
                    return Err(r.err(e.line, "burst: must be at least 1"));
                }
                self.burst = Some((n, e.line));
            }
        }
        Ok(())
    }

    /// (approvals, rate) for the format.
    pub(super) fn finish(self, r: &Reader<'_>) -> Result<(u8, Option<RateLimit>), ConfigError> {
        let approvals = self.approvals.map_or(1, |(n, _)| n);
        let rate = match (self.max_rate, self.burst) {
            (None, None) => None,
            (None, Some((_, line))) => {
                return Err(r.err(line, "burst: only with max_rate (the rate it refills at)"))
            }
            (Some((per_second, _)), burst) => Some(RateLimit {
                per_second,
                // Default: one second's worth, at least one.
                burst: burst.map_or_else(|| per_second.ceil().max(1.0) as u32, |(b, _)| b),
            }),
        };
        Ok((approvals, rate))
    }
}

/// The `[security]` keys of this module, with their lines.
#[derive(Default)]
pub(super) struct Pending {
    totp: Vec<(String, Entry)>,
    approvers: Vec<(String, Vec<String>, usize)>,
}

impl Pending {
    /// Takes `new_token_totp.USER` and `new_token_approvers.FORMAT`; false
    /// for any other key.
    pub(super) fn take(&mut self, r: &Reader<'_>, e: &Entry) -> Result<bool, ConfigError> {
        if let Some(user) = e.key.strip_prefix("new_token_totp.") {
            if user.is_empty() || e.value.is_empty() {
                return Err(r.err(e.line, "new_token_totp.USER = FILE: a user name and a file"));
            }
            let entry = Entry {
                key: e.key.clone(),
                value: e.value.clone(),
                line: e.line,
            };
            self.totp.push((user.to_string(), entry));
            return Ok(true);
        }
        if let Some(format) = e.key.strip_prefix("new_token_approvers.") {
            let users = split_list(&e.value);
            if format.is_empty() || users.is_empty() {
                return Err(r.err(
                    e.line,
                    "new_token_approvers.FORMAT = USER, …: a format and at least one user",
                ));
            }
            self.approvers.push((format.to_string(), users, e.line));
            return Ok(true);
        }
        Ok(false)
    }
}

/// Checks the collected keys against the users and formats and puts them in
/// `sec`: the TOTP secrets read (the file private), each approval format
/// with its approvers.
pub(super) fn finish(
    r: &Reader<'_>,
    pending: Pending,
    sec: &mut SecurityConfig,
    formats: &[Format],
) -> Result<(), ConfigError> {
    let mints = |user: &str| sec.new_token_auth.iter().any(|c| c.user == user);
    for (user, e) in &pending.totp {
        if !mints(user) {
            return Err(r.err(
                e.line,
                format!("{}: no new_token_auth entry for user {user:?}", e.key),
            ));
        }
        let path = r.file(e, true)?;
        let meta = std::fs::metadata(&path)
            .map_err(|err| r.err(e.line, format!("{}: {}: {err}", e.key, path.display())))?;
        if meta.mode() & 0o077 != 0 {
            return Err(r.err(
                e.line,
                format!(
                    "{}: {} is open to group or others (mode {:o}): chmod 600 it",
                    e.key,
                    path.display(),
                    meta.mode() & 0o777
                ),
            ));
        }
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(&path).map_err(|err| {
            r.err(
                e.line,
                format!("{}: cannot read {}: {err}", e.key, path.display()),
            )
        })?);
        let first = text.lines().next().unwrap_or("");
        let secret = crate::totp::decode_secret(first)
            .map_err(|m| r.err(e.line, format!("{}: {}: {m}", e.key, path.display())))?;
        sec.new_token_totp.insert(user.clone(), secret);
    }
    let mut approvers: HashMap<String, (Vec<String>, usize)> = HashMap::new();
    for (format, users, line) in pending.approvers {
        let Some(f) = formats.iter().find(|f| f.signer.name == format) else {
            return Err(r.err(
                line,
                format!("new_token_approvers.{format}: no format {format:?}"),
            ));
        };
        if f.approvals < 2 {
            return Err(r.err(
                line,
                format!("new_token_approvers.{format}: format {format} does not need approval (approvals = 2)"),
            ));
        }
        if let Some(u) = users.iter().find(|u| !mints(u)) {
            return Err(r.err(
                line,
                format!("new_token_approvers.{format}: no new_token_auth entry for user {u:?}"),
            ));
        }
        approvers.insert(format, (users, line));
    }
    for f in formats.iter().filter(|f| f.approvals >= 2) {
        let name = &f.signer.name;
        let Some((users, _)) = approvers.remove(name) else {
            return Err(r.err(
                f.line,
                format!("[format:{name}] approvals = 2 needs [security] new_token_approvers.{name} = USER, …"),
            ));
        };
        sec.approvers.insert(name.clone(), users);
    }
    Ok(())
}
