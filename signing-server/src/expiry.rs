//! Certificates that never expire unnoticed: each format's signing
//! certificate chain (its `cert =` file) is read at start-up; an expired
//! signing certificate stops the start (exit 2) unless the format says
//! `allow_expired = yes`; one expiring within `cert_expiry_warning` days is
//! logged at start-up and listed in /health (`certificate_warnings`, computed
//! at each request, so a server that runs for weeks starts warning by itself);
//! /metrics exports every date as
//! `signing_certificate_expiry_timestamp_seconds{format,cert="leaf"|"chain"}`
//! (`chain`: the earliest `notAfter` in the file, leaf included), and the
//! certificate of each TSA's last valid reply as `{format,cert="tsa",url}`.

use std::fmt::Write as _;
use std::time::Duration;

use formats::keys::validity::{chain_validity, Validity};

use crate::config::Config;
use crate::state::Dynamic;

const DAY: u64 = 86_400;

/// The certificates of every format that has some, read from their files:
/// `Err` (for exit 2) names the format whose file cannot be read or whose
/// signing certificate has expired without `allow_expired`. Logs a warning
/// for each certificate expiring within the warning period.
pub fn check_at_startup(cfg: &Config, now: u64) -> Result<(), String> {
    for f in &cfg.formats {
        let Some(path) = &f.signer.cert else { continue };
        let chain = chain_validity(path).map_err(|e| format!("format {}: {e}", f.signer.name))?;
        if let Some(leaf) = chain.first() {
            if leaf.not_after < now && !f.allow_expired {
                return Err(format!(
                    "format {}: its signing certificate ({}) expired on {}: renew it, or set \
                     allow_expired = yes in [format:{}] to start anyway",
                    f.signer.name,
                    leaf.subject,
                    date(leaf.not_after),
                    f.signer.name
                ));
            }
        }
        for w in warnings_for(&f.signer.name, &chain, now, cfg.server.cert_expiry_warning) {
            tracing::warn!(format = %f.signer.name, "{w}");
        }
    }
    Ok(())
}

/// The certificate chain of a format (empty for the types without one), for
/// its [`crate::state::FormatEntry`]; a file unreadable now was readable at
/// start-up, so an error here only loses the figures.
pub fn read(cert: Option<&std::path::Path>) -> Vec<Validity> {
    cert.and_then(|p| chain_validity(p).ok())
        .unwrap_or_default()
}

fn warnings_for(format: &str, chain: &[Validity], now: u64, warn: Duration) -> Vec<String> {
    chain
        .iter()
        .enumerate()
        .filter(|(_, c)| c.not_after < now.saturating_add(warn.as_secs()))
        .map(|(i, c)| {
            let which = if i == 0 {
                "signing certificate"
            } else {
                "chain certificate"
            };
            if c.not_after < now {
                format!(
                    "format {format}: {which} {} EXPIRED on {}",
                    c.subject,
                    date(c.not_after)
                )
            } else {
                format!(
                    "format {format}: {which} {} expires on {} (in {} days)",
                    c.subject,
                    date(c.not_after),
                    (c.not_after - now) / DAY
                )
            }
        })
        .collect()
}

/// The warnings /health lists now, formats in config order.
pub fn warnings(d: &Dynamic, now: u64, warn: Duration) -> Vec<String> {
    d.format_names
        .iter()
        .filter_map(|n| d.formats.get(n).map(|f| (n, f)))
        .flat_map(|(n, f)| warnings_for(n, &f.certs, now, warn))
        .collect()
}

/// The /metrics lines.
pub fn metrics(d: &Dynamic) -> String {
    let mut out = String::new();
    let mut names: Vec<&String> = d.formats.keys().collect();
    names.sort();
    let rows: Vec<(&String, u64, u64)> = names
        .into_iter()
        .filter_map(|n| {
            let certs = &d.formats.get(n)?.certs;
            let leaf = certs.first()?.not_after;
            let chain = certs.iter().map(|c| c.not_after).min()?;
            Some((n, leaf, chain))
        })
        .collect();
    let mut tsa: Vec<(&String, String, u64)> = Vec::new();
    for (n, f) in &d.formats {
        for (url, not_after) in f.signer.tsa_certificate_expiry() {
            tsa.push((n, url, not_after));
        }
    }
    tsa.sort();
    if rows.is_empty() && tsa.is_empty() {
        return out;
    }
    let name = "signing_certificate_expiry_timestamp_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} notAfter of each format's signing certificate (leaf), of the earliest in its chain file (chain), and of the certificate of each TSA's last reply (tsa)."
    );
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (format, leaf, chain) in rows {
        let _ = writeln!(out, "{name}{{format=\"{format}\",cert=\"leaf\"}} {leaf}");
        let _ = writeln!(out, "{name}{{format=\"{format}\",cert=\"chain\"}} {chain}");
    }
    for (format, url, not_after) in tsa {
        let url = crate::metrics::escape(&url);
        let _ = writeln!(
            out,
            "{name}{{format=\"{format}\",cert=\"tsa\",url=\"{url}\"}} {not_after}"
        );
    }
    out
}

/// `2026-12-06` (UTC).
fn date(unix: u64) -> String {
    let days = (unix / DAY) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_calendar_days() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(date(1_796_083_200), "2026-12-01");
    }

    #[test]
    fn warnings_name_the_format_and_the_days_left() {
        let c = |not_after| Validity {
            subject: "CN=x".into(),
            not_before: 0,
            not_after,
        };
        let now = 1_000 * DAY;
        let w = warnings_for(
            "f",
            &[c(now + 10 * DAY), c(now + 400 * DAY), c(now - DAY)],
            now,
            Duration::from_secs(30 * DAY),
        );
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("signing certificate CN=x expires") && w[0].contains("in 10 days"));
        assert!(w[1].contains("chain certificate CN=x EXPIRED"));
    }
}
