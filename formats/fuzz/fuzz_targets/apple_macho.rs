//! Mach-O / DMG inputs of the Apple signer beyond their names: the kind from magic
//! numbers, then apple-codesign's Mach-O parser and signing-capability check (or the DMG
//! trailer check) as the signer runs them before signing. Every failure is a refusal (422).
#![no_main]
use std::sync::Once;

use libfuzzer_sys::fuzz_target;

static DEFAULT_PANIC_HOOK: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    // In production a panic inside apple-codesign is caught (apple::check::guard) and the
    // input refused; libfuzzer-sys's panic hook would abort before that catch. Back to the
    // default hook: a panic outside the guard still reaches libfuzzer-sys, which aborts.
    DEFAULT_PANIC_HOOK.call_once(|| drop(std::panic::take_hook()));
    if let Err(e) = formats::fuzzing::apple_macho(data) {
        assert!(matches!(e, formats::SignError::Rejected(_)), "not a rejection: {e:?}");
    }
});
