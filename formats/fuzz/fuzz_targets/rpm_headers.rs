//! RPM lead, signature header and main header (formats::rpm::read_headers), and the
//! signature header the signer writes back; asserts the entries stay inside their headers.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = formats::fuzzing::rpm_headers(data) {
        // Hostile bytes are the client's fault: 422, never a 5xx.
        assert!(matches!(e, formats::SignError::Rejected(_)), "not a rejection: {e:?}");
    }
});
