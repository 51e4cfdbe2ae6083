//! The PROXY protocol header reader (signing-server/src/proxy.rs): whatever a
//! balancer sends, the reader asks for bytes only up to the header's end and
//! within its bounds, and the header ends in a source or an error, never a
//! panic.
//! The body is `signing_server::fuzzing::proxy_header`, where `cargo test` replays the seeds too.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| signing_server::fuzzing::proxy_header(data));
