//! Cabinet headers and the signed layout (formats::authenticode::cab).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = formats::fuzzing::cab_parse(data) {
        assert!(matches!(e, formats::SignError::Rejected(_)), "not a rejection: {e:?}");
    }
});
