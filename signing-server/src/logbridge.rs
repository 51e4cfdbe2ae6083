//! Records of the libraries that log through the `log` crate (apple-codesign,
//! reqwest, ...) go to tracing, at the level they deserve.
//!
//! apple-codesign reports its routine progress at WARN ("signing … as a
//! Mach-O binary", "writing Mach-O to …": its command-line tool shows
//! progress that way), about five lines per signing. Those lines, and its
//! INFO lines, are logged here at DEBUG
//! ([`formats::apple::is_progress_message`]); its other warnings stay WARN,
//! so WARN in the server's log means something to look at. Everything else
//! passes through `tracing-log` unchanged.

use log::{Level, Log, Metadata, Record};
use tracing_log::LogTracer;

/// A `log` logger that forwards to tracing, demoting library progress.
pub(crate) struct Bridge(LogTracer);

impl Bridge {
    /// Installs the bridge as the `log` crate's logger, passing on what the
    /// tracing subscriber already installed enables (call it after).
    pub(crate) fn install() -> Result<(), log::SetLoggerError> {
        log::set_boxed_logger(Box::new(Bridge(LogTracer::new())))?;
        log::set_max_level(tracing_log::AsLog::as_log(
            &tracing::level_filters::LevelFilter::current(),
        ));
        Ok(())
    }
}

/// The level `record` is logged at.
fn level_of(record: &Record<'_>) -> Level {
    let level = record.level();
    if !record.target().starts_with(formats::apple::LOG_TARGET) {
        return level;
    }
    match level {
        Level::Info => Level::Debug,
        Level::Warn if formats::apple::is_progress_message(&record.args().to_string()) => {
            Level::Debug
        }
        other => other,
    }
}

impl Log for Bridge {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // Records are only ever demoted: what is off at its own level stays off.
        self.0.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        let level = level_of(record);
        if level == record.level() {
            return self.0.log(record);
        }
        self.0.log(
            &Record::builder()
                .args(*record.args())
                .level(level)
                .target(record.target())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        self.0.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(target: &str, level: Level, message: std::fmt::Arguments<'_>) -> Level {
        level_of(
            &Record::builder()
                .target(target)
                .level(level)
                .args(message)
                .build(),
        )
    }

    #[test]
    fn apple_codesign_progress_is_debug_and_its_warnings_stay_warn() {
        let t = "apple_codesign::signing";
        let p = "/tmp/x/in";
        assert_eq!(
            level(
                t,
                Level::Warn,
                format_args!("signing {p} as a Mach-O binary")
            ),
            Level::Debug
        );
        assert_eq!(
            level(t, Level::Warn, format_args!("writing Mach-O to {p}")),
            Level::Debug
        );
        assert_eq!(
            level(t, Level::Info, format_args!("Using time-stamp server x")),
            Level::Debug
        );
        let real = "hardened runtime version required but unable to derive suitable version; \
                    signature will likely fail Apple checks";
        assert_eq!(level(t, Level::Warn, format_args!("{real}")), Level::Warn);
        assert_eq!(
            level(t, Level::Error, format_args!("signing {p} as a DMG")),
            Level::Error
        );
        // Other libraries' records keep their level.
        assert_eq!(
            level(
                "reqwest::connect",
                Level::Warn,
                format_args!("signing x as a DMG")
            ),
            Level::Warn
        );
    }
}
