//! The upload form reader (signing-server/src/form.rs): any body, fed in
//! pieces of any size, ends in events or an error, never a panic; the
//! reader never holds more than one part header plus one piece; the data it
//! hands out is never more than it was given.
//! The body is `signing_server::fuzzing::multipart_form`, where `cargo test` replays the seeds too.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| signing_server::fuzzing::multipart_form(data));
