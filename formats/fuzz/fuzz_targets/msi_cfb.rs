//! MSI compound files (formats::authenticode::msi): open, hash, replace the signature stream.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = formats::fuzzing::msi_cfb(data) {
        assert!(matches!(e, formats::SignError::Rejected(_)), "not a rejection: {e:?}");
    }
});
