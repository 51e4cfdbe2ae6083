//! Transparency log inputs: tile paths, signed notes, checkpoints, entry bundles (formats::tlog).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    formats::fuzzing::tlog_parse(data).expect("a fixed key always opens");
});
