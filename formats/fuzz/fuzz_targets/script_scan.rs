//! Script text: encodings, the signature block, the UTF-16 hash (formats::authenticode::script).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = formats::fuzzing::script_scan(data) {
        assert!(matches!(e, formats::SignError::Rejected(_)), "not a rejection: {e:?}");
    }
});
