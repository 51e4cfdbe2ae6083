//! MAR header blocks and index (formats::mar::parse); asserts the layout invariants.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = formats::fuzzing::mar_parse(data) {
        // Hostile bytes are the client's fault: 422, never a 5xx.
        assert!(matches!(e, formats::SignError::Rejected(_)), "not a rejection: {e:?}");
    }
});
