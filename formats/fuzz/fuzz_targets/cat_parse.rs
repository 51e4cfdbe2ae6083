//! Catalog files: the PKCS#7 and its CTL content (formats::authenticode::cat).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = formats::fuzzing::cat_parse(data) {
        assert!(matches!(e, formats::SignError::Rejected(_)), "not a rejection: {e:?}");
    }
});
