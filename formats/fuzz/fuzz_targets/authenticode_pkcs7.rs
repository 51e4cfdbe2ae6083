//! The Authenticode SignedData (DER) parser used to verify signed PE files.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = formats::fuzzing::authenticode_pkcs7(data);
});
