//! MSI compound files (formats::authenticode::msi): open, hash, replace the signature stream.
#![no_main]
use std::sync::Once;

use libfuzzer_sys::fuzz_target;

static DEFAULT_PANIC_HOOK: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    // In production a panic inside the cfb crate is caught (msi::guarded) and the input
    // refused; libfuzzer-sys's panic hook would abort before that catch. Back to the
    // default hook: a panic outside the guard still reaches libfuzzer-sys, which aborts.
    DEFAULT_PANIC_HOOK.call_once(|| drop(std::panic::take_hook()));
    if let Err(e) = formats::fuzzing::msi_cfb(data) {
        assert!(matches!(e, formats::SignError::Rejected(_)), "not a rejection: {e:?}");
    }
});
