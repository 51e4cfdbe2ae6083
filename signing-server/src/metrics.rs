//! Counters and histograms, rendered in the Prometheus text format.
//! Hand-written: a handful of series does not justify a metrics framework.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use formats::Signer;

const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// `signing_tsa_failures_total{url}`: the failed time-stamping requests each
/// signer counted ([`Signer::tsa_failures`]), summed per URL (a signer
/// serving two formats is counted once).
pub fn tsa_failures<'a>(
    signers: impl IntoIterator<Item = &'a Arc<dyn Signer>>,
) -> BTreeMap<String, u64> {
    let mut seen = BTreeSet::new();
    let mut total = BTreeMap::new();
    for s in signers {
        if seen.insert(Arc::as_ptr(s).cast::<()>()) {
            for (url, n) in s.tsa_failures() {
                *total.entry(url).or_default() += n;
            }
        }
    }
    total
}

/// All the server's metrics.
#[derive(Default)]
pub struct Metrics {
    /// Bytes of file data received in uploads.
    pub upload_bytes: AtomicU64,
    counters: Mutex<BTreeMap<(String, String), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
}

impl Metrics {
    /// Adds one to counter `name{labels}`, e.g. `inc("x_total", &[("reason", "expired")])`;
    /// label values are escaped as the text format requires.
    pub fn inc(&self, name: &str, labels: &[(&str, &str)]) {
        self.add(name, labels, 1);
    }

    /// Adds `n` to counter `name{labels}`.
    pub fn add(&self, name: &str, labels: &[(&str, &str)], n: u64) {
        let labels = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        *c.entry((name.to_string(), labels)).or_default() += n;
    }

    /// Records the end of a signing.
    pub fn signed(&self, format: &str, outcome: &str, took: Duration) {
        self.inc(
            "signing_jobs_total",
            &[("format", format), ("outcome", outcome)],
        );
        let mut h = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let h = h.entry(format.to_string()).or_default();
        let secs = took.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                if let Some(c) = h.counts.get_mut(i) {
                    *c += 1;
                }
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// The Prometheus text exposition; `tsa`: see [`tsa_failures`].
    pub fn render(
        &self,
        queue_depth: usize,
        uptime: Duration,
        tsa: &BTreeMap<String, u64>,
    ) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# TYPE signing_queue_depth gauge\nsigning_queue_depth {queue_depth}"
        );
        let _ = writeln!(
            out,
            "# TYPE signing_uptime_seconds gauge\nsigning_uptime_seconds {}",
            uptime.as_secs()
        );
        let _ = writeln!(
            out,
            "# TYPE signing_upload_bytes_total counter\nsigning_upload_bytes_total {}",
            self.upload_bytes.load(Ordering::Relaxed)
        );
        let counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let mut last = "";
        for ((name, labels), v) in counters.iter() {
            if name != last {
                let _ = writeln!(out, "# TYPE {name} counter");
                last = name;
            }
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {v}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
        if !tsa.is_empty() {
            let _ = writeln!(out, "# TYPE signing_tsa_failures_total counter");
        }
        for (url, n) in tsa {
            let _ = writeln!(
                out,
                "signing_tsa_failures_total{{url=\"{}\"}} {n}",
                escape(url)
            );
        }
        let latency = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        if !latency.is_empty() {
            let _ = writeln!(out, "# TYPE signing_duration_seconds histogram");
        }
        for (format, h) in latency.iter() {
            for (b, c) in BUCKETS.iter().zip(h.counts.iter()) {
                let _ = writeln!(
                    out,
                    "signing_duration_seconds_bucket{{format=\"{format}\",le=\"{b}\"}} {c}"
                );
            }
            let _ = writeln!(
                out,
                "signing_duration_seconds_bucket{{format=\"{format}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "signing_duration_seconds_sum{{format=\"{format}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "signing_duration_seconds_count{{format=\"{format}\"}} {}",
                h.count
            );
        }
        out
    }
}

/// Request body bytes read for one (configured) format: added to
/// `signing_received_bytes_total{format}` when dropped, whatever the outcome.
pub struct BodyBytes {
    metrics: Arc<Metrics>,
    format: String,
    read: Arc<AtomicU64>,
}

impl BodyBytes {
    /// Counts for `format`.
    pub fn new(metrics: &Arc<Metrics>, format: &str) -> BodyBytes {
        BodyBytes {
            metrics: metrics.clone(),
            format: format.to_string(),
            read: Arc::default(),
        }
    }

    /// `body`, counting every byte read from it.
    pub fn count<S, E>(
        &self,
        body: S,
    ) -> impl futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin + Send + 'static
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin + Send + 'static,
    {
        use futures_util::StreamExt as _;
        let read = self.read.clone();
        body.inspect(move |piece| {
            if let Ok(piece) = piece {
                read.fetch_add(piece.len() as u64, Ordering::Relaxed);
            }
        })
    }
}

impl Drop for BodyBytes {
    fn drop(&mut self) {
        let n = self.read.load(Ordering::Relaxed);
        self.metrics.add(
            "signing_received_bytes_total",
            &[("format", &self.format)],
            n,
        );
    }
}

/// A label value as the Prometheus text format wants it.
pub(crate) fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
