//! The INI reader behind [`super::parse`]: `[section]`, `key = value`, `#`/`;`
//! comments, indented continuation lines, each entry with its line; and the
//! value readers (numbers, seconds, sizes, files, CIDR lists) that turn an
//! entry into a typed value or a `file:line:` error.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::ConfigError;

pub(super) struct Entry {
    pub(super) key: String,
    pub(super) value: String,
    pub(super) line: usize,
}

pub(super) struct Section {
    pub(super) name: String,
    pub(super) line: usize,
    pub(super) entries: Vec<Entry>,
}

/// Reads the INI structure; no meaning yet.
pub(super) fn parse_ini(
    text: &str,
    err: &dyn Fn(usize, String) -> ConfigError,
) -> Result<Vec<Section>, ConfigError> {
    let mut sections: Vec<Section> = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        let indented = raw.starts_with(' ') || raw.starts_with('\t');
        if indented {
            // Continuation of the previous value.
            let Some(entry) = sections.last_mut().and_then(|s| s.entries.last_mut()) else {
                return Err(err(
                    line,
                    "indented line continues nothing (remove the indentation)".into(),
                ));
            };
            if !entry.value.is_empty() {
                entry.value.push('\n');
            }
            entry.value.push_str(trimmed);
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(err(
                    line,
                    format!("section header {trimmed:?} has no closing ']'"),
                ));
            };
            let name = name.trim().to_string();
            if let Some(prev) = sections.iter().find(|s| s.name == name) {
                return Err(err(
                    line,
                    format!("section [{name}] already defined on line {}", prev.line),
                ));
            }
            sections.push(Section {
                name,
                line,
                entries: Vec::new(),
            });
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            return Err(err(
                line,
                format!("expected `key = value`, `[section]` or a comment, found {trimmed:?}"),
            ));
        };
        let key = key.trim().to_string();
        let Some(section) = sections.last_mut() else {
            return Err(err(line, format!("`{key}` stands before any [section]")));
        };
        if key.is_empty() {
            return Err(err(line, "empty key name".into()));
        }
        if let Some(prev) = section.entries.iter().find(|e| e.key == key) {
            return Err(err(
                line,
                format!("`{key}` already set on line {}", prev.line),
            ));
        }
        section.entries.push(Entry {
            key,
            value: value.trim().to_string(),
            line,
        });
    }
    Ok(sections)
}

/// Splits a list value on commas and newlines, but not on commas inside
/// `()`, `[]` or `{}` (so `a{1,3}` stays one regex) or after a backslash.
pub(super) fn split_list(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut depth: i32 = 0;
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' => {
                cur.push(c);
                escaped = true;
            }
            '(' | '[' | '{' => {
                depth += 1;
                cur.push(c);
            }
            ')' | ']' | '}' => {
                depth -= 1;
                cur.push(c);
            }
            ',' if depth <= 0 => items.push(std::mem::take(&mut cur)),
            '\n' => items.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    items.push(cur);
    items
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Parses `10`, `10K`, `5M`, `2G` (binary multiples) into bytes.
pub fn parse_size(value: &str) -> Option<u64> {
    let v = value.trim();
    let (num, mult) = match v.chars().last()? {
        'k' | 'K' => (&v[..v.len() - 1], 1u64 << 10),
        'm' | 'M' => (&v[..v.len() - 1], 1 << 20),
        'g' | 'G' => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

fn parse_cidr(item: &str) -> Option<IpNet> {
    if let Ok(net) = item.parse::<IpNet>() {
        return Some(net);
    }
    item.parse::<IpAddr>().ok().map(IpNet::from)
}

pub(super) struct Reader<'a> {
    pub(super) path: &'a Path,
    pub(super) base: PathBuf,
}

impl Reader<'_> {
    pub(super) fn err(&self, line: usize, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.path.to_path_buf(),
            line: Some(line),
            message: message.into(),
        }
    }

    pub(super) fn number<T: std::str::FromStr>(
        &self,
        e: &Entry,
        what: &str,
    ) -> Result<T, ConfigError> {
        e.value
            .parse::<T>()
            .map_err(|_| self.err(e.line, format!("{}: {:?} is not {what}", e.key, e.value)))
    }

    /// `yes`/`no` (also `true`/`false`, `on`/`off`, `1`/`0`).
    pub(super) fn yes_no(&self, e: &Entry) -> Result<bool, ConfigError> {
        match e.value.to_ascii_lowercase().as_str() {
            "yes" | "true" | "on" | "1" => Ok(true),
            "no" | "false" | "off" | "0" => Ok(false),
            _ => Err(self.err(e.line, format!("{}: {:?} is not yes or no", e.key, e.value))),
        }
    }

    pub(super) fn seconds(&self, e: &Entry) -> Result<Duration, ConfigError> {
        let n: u64 = self.number(e, "a whole number of seconds")?;
        Ok(Duration::from_secs(n))
    }

    pub(super) fn size(&self, e: &Entry) -> Result<u64, ConfigError> {
        parse_size(&e.value).ok_or_else(|| {
            self.err(
                e.line,
                format!(
                    "{}: {:?} is not a size (bytes, or with K, M or G)",
                    e.key, e.value
                ),
            )
        })
    }

    /// A path relative to the config file's directory; `must_exist` checks it.
    pub(super) fn file(&self, e: &Entry, must_exist: bool) -> Result<PathBuf, ConfigError> {
        if e.value.is_empty() {
            return Err(self.err(e.line, format!("{}: empty path", e.key)));
        }
        let p = self.base.join(&e.value);
        if must_exist && !p.is_file() {
            return Err(self.err(e.line, format!("{}: file {} not found", e.key, p.display())));
        }
        Ok(p)
    }

    pub(super) fn cidrs(&self, e: &Entry) -> Result<Vec<IpNet>, ConfigError> {
        split_list(&e.value)
            .iter()
            .map(|item| {
                parse_cidr(item).ok_or_else(|| {
                    self.err(
                        e.line,
                        format!("{}: {item:?} is not an IP address or CIDR network", e.key),
                    )
                })
            })
            .collect()
    }
}

/// Keys allowed in `key` or `keyN` form (`token_secret1`, `new_token_auth2`).
pub(super) fn numbered(key: &str, base: &str) -> bool {
    key.strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.bytes().all(|b| b.is_ascii_digit()))
}
