//! The INI configuration parser and validator (signing_server::config::parse).
//! The body is `signing_server::fuzzing::config`, where `cargo test` replays the seeds too.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| signing_server::fuzzing::config(data));
