//! Token parsing and checking (signing_server::auth::verify) and the Basic
//! authorization header (auth::check_basic).
//! The body is `signing_server::fuzzing::token`, where `cargo test` replays the seeds too.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| signing_server::fuzzing::token(data));
