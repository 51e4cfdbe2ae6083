//! GPG key files (formats::gpg: the armoured or binary transferable secret key parser of
//! rpgp, then gpg's key-selection rules, then, for an unprotected key, the unlock
//! self-check that signs and verifies in memory): every failure is a key error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = formats::fuzzing::gpg_key(data);
});
