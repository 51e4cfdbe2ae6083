//! apple-codesign's log messages: which are routine progress.
//!
//! apple-codesign logs through the `log` crate and reports routine progress
//! at WARN, as its command-line tool shows it; as a library in a server
//! those lines are noise at WARN (about five per signing). The server logs
//! the messages this module calls progress at DEBUG; apple-codesign's other
//! warnings ("hardened runtime version required but unable to derive
//! suitable version…", "signing without an Apple signed certificate but…")
//! stay WARN. The list is of apple-codesign 0.29's messages; a message it
//! does not know stays WARN (visible), never the other way round.

/// The `log` target (module path) prefix of apple-codesign's records.
pub const LOG_TARGET: &str = "apple_codesign";

/// Starts of apple-codesign's progress messages on the signing paths we use
/// (Mach-O, DMG, bundle).
const PROGRESS_PREFIXES: &[&str] = &[
    "signing bundle at ",
    "signing main executable ",
    "signing Mach-O file ",
    "signing DMG",
    "setting binary identifier to ",
    "parsing Mach-O",
    "writing Mach-O to ",
    "writing ",
    "removing existing ",
    "renaming ",
    "entering nested bundle ",
    "leaving nested bundle ",
    "creating cryptographic signature with certificate ",
    "using code signature flags: ",
    "using identifier ",
    "Using time-stamp server ",
];

/// Whether `message`, logged by apple-codesign, is routine progress (to be
/// logged at DEBUG) rather than a warning.
pub fn is_progress_message(message: &str) -> bool {
    if PROGRESS_PREFIXES.iter().any(|p| message.starts_with(p)) {
        return true;
    }
    if let Some(rest) = message.strip_prefix("signing ") {
        // "signing PATH as a Mach-O binary", "signing PATH as a DMG",
        // "signing N nested bundles in the following order:"
        return rest.ends_with(" as a Mach-O binary")
            || rest.ends_with(" as a DMG")
            || rest.ends_with(" nested bundles in the following order:");
    }
    // The nested bundles' names, one per line, after that list's heading.
    !message.is_empty() && !message.contains(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::is_progress_message;

    #[test]
    fn progress_and_warnings_told_apart() {
        for m in [
            "signing /w/x/ls as a Mach-O binary",
            "signing /w/x/img.dmg as a DMG",
            "setting binary identifier to ls",
            "parsing Mach-O",
            "writing Mach-O to /w/out",
            "signing bundle at /w/in/Tiny.app",
            "signing 2 nested bundles in the following order:",
            "Contents/Frameworks/A.framework",
            "entering nested bundle Contents/Frameworks/A.framework",
            "signing Mach-O file Contents/MacOS/tiny",
            "creating cryptographic signature with certificate Test Developer",
        ] {
            assert!(is_progress_message(m), "{m}");
        }
        for m in [
            "hardened runtime version required but unable to derive suitable version; signature will likely fail Apple checks",
            "signing without an Apple signed certificate but signing settings contain a team name; signature varies from Apple's tooling",
            "bundle has no main executable to sign specially",
            "could not find main executable of presumed nested bundle: X",
            "",
        ] {
            assert!(!is_progress_message(m), "{m}");
        }
    }
}
