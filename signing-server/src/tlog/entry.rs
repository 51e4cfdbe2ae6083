//! One log entry: a one-line JSON object, keys sorted, describing one
//! signature. Public by design: no peer address, no file name (the audit
//! log keeps those).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// What one signature's entry says.
pub struct Entry<'a> {
    /// The format's name (`[format:NAME]`).
    pub format: &'a str,
    /// The format's type (`gpg`, `authenticode`…).
    pub kind: &'a str,
    /// `upload` or `digest`.
    pub mode: &'a str,
    /// The signing key: SHA-256 hex of its SubjectPublicKeyInfo DER, or an
    /// OpenPGP key's v4 fingerprint.
    pub key: &'a str,
    /// SHA-256 of the uploaded file (uploads; gpg digest signing, whose
    /// SHA-256 state is the file's).
    pub input_sha256: Option<&'a str>,
    /// What the key signed, hex, where the server knows it (digest signing).
    pub signed_digest: Option<&'a str>,
    /// SHA-256 of exactly the bytes the client receives.
    pub output_sha256: &'a str,
    /// The token's public id (its chaff).
    pub token_id: &'a str,
    /// The formats the token is limited to (`gpg,mar`), "" when unscoped.
    pub token_scope: &'a str,
}

impl Entry<'_> {
    /// The entry's bytes, stamped `now`.
    pub fn to_bytes(&self, now: SystemTime) -> Vec<u8> {
        let mut m: BTreeMap<&str, Value> = BTreeMap::new();
        m.insert("v", 1.into());
        m.insert("time", rfc3339(now).into());
        m.insert("format", self.format.into());
        m.insert("type", self.kind.into());
        m.insert("mode", self.mode.into());
        m.insert("key", self.key.into());
        if let Some(s) = self.input_sha256.filter(|s| !s.is_empty()) {
            m.insert("input_sha256", s.into());
        }
        if let Some(s) = self.signed_digest.filter(|s| !s.is_empty()) {
            m.insert("signed_digest", s.into());
        }
        m.insert("output_sha256", self.output_sha256.into());
        m.insert("token_id", self.token_id.into());
        m.insert("token_scope", self.token_scope.into());
        // A BTreeMap serialises in key order, whatever serde_json's features.
        serde_json::to_vec(&m).unwrap_or_default()
    }
}

/// `now` as RFC 3339 in UTC with milliseconds (`2026-12-06T06:30:00.123Z`).
pub fn rfc3339(now: SystemTime) -> String {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// (year, month, day) of a count of days since 1970-01-01 (proleptic
/// Gregorian calendar; Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_in_utc() {
        let t = |s: u64, ms: u64| UNIX_EPOCH + Duration::from_millis(s * 1000 + ms);
        assert_eq!(rfc3339(t(0, 0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(t(951_782_400, 5)), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(t(1_796_538_645, 999)), "2026-12-06T06:30:45.999Z");
        assert_eq!(rfc3339(t(4_102_444_799, 0)), "2099-12-31T23:59:59.000Z");
    }

    #[test]
    fn one_line_sorted_keys() {
        let e = Entry {
            format: "gpg",
            kind: "gpg",
            mode: "digest",
            key: "ABCD",
            input_sha256: Some("11"),
            signed_digest: Some("11"),
            output_sha256: "22",
            token_id: "t\"\n",
            token_scope: "",
        };
        let s = String::from_utf8(e.to_bytes(UNIX_EPOCH)).unwrap();
        assert_eq!(
            s,
            r#"{"format":"gpg","input_sha256":"11","key":"ABCD","mode":"digest","output_sha256":"22","signed_digest":"11","time":"1970-01-01T00:00:00.000Z","token_id":"t\"\n","token_scope":"","type":"gpg","v":1}"#
        );
    }
}
