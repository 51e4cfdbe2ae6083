//! Token parsing and checking (signing_server::auth::verify) and the Basic
//! authorization header (auth::check_basic).
#![no_main]
use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use signing_server::auth;
use signing_server::auth::Credential;

const NOW: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let secrets = [SecretString::from("fuzz-secret-1"), SecretString::from("fuzz-secret-2")];
    let peer = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
    if let Ok(t) = auth::verify(text, &secrets, peer, NOW) {
        // Only the seed tokens minted with these secrets get here.
        assert!(t.valid_from <= NOW && NOW <= t.valid_to);
        assert_eq!(auth::canonical(t.ip), auth::canonical(peer));
        assert!(!t.chaff.is_empty());
    }
    // Round trip: a freshly minted token verifies, and flipping its MAC breaks it.
    let token = auth::mint(&secrets[1], peer, NOW - 10, NOW + 10, None);
    assert!(auth::verify(&token, &secrets, peer, NOW).is_ok());
    // A scoped token keeps its scope through the round trip.
    let scope = ["gpg".to_string()];
    let scoped = auth::mint(&secrets[1], peer, NOW - 10, NOW + 10, Some(&scope));
    let t = auth::verify(&scoped, &secrets, peer, NOW).expect("a minted scoped token verifies");
    assert!(t.allows("gpg") && !t.allows("mar"));
    let mut forged = token.clone();
    forged.push('A');
    assert!(auth::verify(&forged, &secrets, peer, NOW).is_err());

    let creds = [Credential { user: "user".into(), password: SecretString::from("pass") }];
    if let Some(u) = auth::check_basic(Some(text), &creds) {
        assert_eq!(u, "user");
    }
});
