//! The INI configuration parser and validator (signing_server::config::parse).
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = signing_server::config::parse(Path::new("/nonexistent/fuzz/signing.ini"), text);
});
