//! Plain log lines on stderr (`<hash>: processing FILE on URL`, `<hash>: OK`),
//! filtered by -q / -v. On a terminal, long uploads also get a progress bar
//! each; lines are then printed above the bars so neither garbles the other.
//! Off a terminal (CI logs) there are only lines.

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// Only warnings and errors.
pub const QUIET: u8 = 0;
/// Progress lines (the default).
pub const INFO: u8 = 1;
/// Every request.
pub const DEBUG: u8 = 2;

static LEVEL: AtomicU8 = AtomicU8::new(INFO);

/// The bars' area, when stderr is a terminal.
fn bars() -> Option<&'static indicatif::MultiProgress> {
    static BARS: OnceLock<Option<indicatif::MultiProgress>> = OnceLock::new();
    BARS.get_or_init(|| {
        std::io::stderr().is_terminal().then(|| {
            indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr())
        })
    })
    .as_ref()
}

/// A progress bar for an upload of `size` bytes, when stderr is a terminal and
/// progress lines are wanted; `None` otherwise.
pub fn upload_bar(label: &str, size: u64) -> Option<indicatif::ProgressBar> {
    if LEVEL.load(Ordering::Relaxed) < INFO {
        return None;
    }
    let bar = bars()?.add(indicatif::ProgressBar::new(size));
    let style = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(format!("uploading {label}"));
    Some(bar)
}

fn line(msg: &str) {
    match bars() {
        Some(b) => {
            let _ = b.println(msg);
        }
        None => eprintln!("{msg}"),
    }
}

/// Sets the level for the rest of the run.
pub fn set_level(level: u8) {
    LEVEL.store(level, Ordering::Relaxed);
}

/// A progress line.
pub fn info(msg: impl AsRef<str>) {
    if LEVEL.load(Ordering::Relaxed) >= INFO {
        line(msg.as_ref());
    }
}

/// A request-level line (-v).
pub fn debug(msg: impl AsRef<str>) {
    if LEVEL.load(Ordering::Relaxed) >= DEBUG {
        line(msg.as_ref());
    }
}

/// A warning: always shown.
pub fn warn(msg: impl AsRef<str>) {
    line(msg.as_ref());
}

/// What a failed request looked like, shortest useful form.
pub fn describe(e: &reqwest::Error) -> String {
    let mut inner: &dyn std::error::Error = e;
    while let Some(s) = inner.source() {
        inner = s;
    }
    let kind = if e.is_timeout() && e.is_connect() {
        "timed out connecting"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "connection broke in the body"
    } else {
        "request failed"
    };
    let mut detail = inner.to_string();
    // rustls appends a link to its manual: noise in a build log.
    if let Some(cut) = detail.find(": https://docs.rs/") {
        detail.truncate(cut);
    }
    if detail == e.to_string() || e.is_timeout() && detail.contains("timed out") {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}
