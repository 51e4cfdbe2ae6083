//! Plain log lines on stderr (`<hash>: processing FILE on URL`, `<hash>: OK`),
//! filtered by -q / -v. No progress bar yet: the lines are what CI logs keep.

use std::sync::atomic::{AtomicU8, Ordering};

/// Only warnings and errors.
pub const QUIET: u8 = 0;
/// Progress lines (the default).
pub const INFO: u8 = 1;
/// Every request.
pub const DEBUG: u8 = 2;

static LEVEL: AtomicU8 = AtomicU8::new(INFO);

/// Sets the level for the rest of the run.
pub fn set_level(level: u8) {
    LEVEL.store(level, Ordering::Relaxed);
}

/// A progress line.
pub fn info(msg: impl AsRef<str>) {
    if LEVEL.load(Ordering::Relaxed) >= INFO {
        eprintln!("{}", msg.as_ref());
    }
}

/// A request-level line (-v).
pub fn debug(msg: impl AsRef<str>) {
    if LEVEL.load(Ordering::Relaxed) >= DEBUG {
        eprintln!("{}", msg.as_ref());
    }
}

/// A warning: always shown.
pub fn warn(msg: impl AsRef<str>) {
    eprintln!("{}", msg.as_ref());
}
