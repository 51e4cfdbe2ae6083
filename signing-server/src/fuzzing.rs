//! The bodies of the server's fuzz targets (`formats/fuzz/fuzz_targets/`),
//! here so that every committed seed (`formats/fuzz/seeds/TARGET/`) is also
//! replayed by `cargo test`: a known crash fails the ordinary tests in minutes,
//! not only the timed fuzzing run. Each function panics where its target's
//! assertion would fail.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use secrecy::SecretString;

use crate::auth::{self, Credential};
use crate::form::{Event, Limits, Parser};
use crate::proxy::{next_step, parse, Step, V1_MAX, V2_MAX_PAYLOAD};

/// The INI configuration parser and validator: any text ends in a config or
/// an error, never a panic.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::config::parse(Path::new("/nonexistent/fuzz/signing.ini"), text);
}

/// The upload form reader: the first byte sets the size of the pieces the
/// rest is fed in. It never holds more than one part header plus one piece,
/// and never hands out more data than it was given.
pub fn multipart_form(data: &[u8]) {
    const BOUNDARY: &str = "fuzz-boundary";
    let Some((&step, body)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let limits = Limits { head: 256 };
    let mut p = Parser::new(BOUNDARY, limits).expect("valid boundary");
    let mut pieces = body.chunks(step);
    let (mut eof, mut handed_out) = (false, 0usize);
    loop {
        match p.next(eof) {
            Ok(Event::NeedMore) => match pieces.next() {
                Some(piece) => p.push(piece),
                None => eof = true,
            },
            Ok(Event::Data(d)) => handed_out += d.len(),
            Ok(Event::Part(_) | Event::PartEnd) => {}
            Ok(Event::End) | Err(_) => break,
        }
        assert!(p.buffered() <= limits.head + step + 2 * BOUNDARY.len() + 8);
    }
    assert!(handed_out <= body.len());
}

/// The PROXY protocol header reader: it asks for bytes only up to the
/// header's end and within its bounds, and ends in a source or an error.
pub fn proxy_header(data: &[u8]) {
    let mut read = 0usize;
    loop {
        let got = data.get(..read).unwrap_or(data);
        match next_step(got) {
            Ok(Step::Read(n)) => {
                assert!(n > 0, "a read of nothing would loop");
                read += n;
                assert!(read <= 16 + V2_MAX_PAYLOAD.max(V1_MAX), "past the bounds");
                if read > data.len() {
                    return; // the connection ended inside the header
                }
            }
            Ok(Step::Done) => {
                let _ = parse(got);
                return;
            }
            Err(_) => return,
        }
    }
}

/// Tokens ([`auth::verify`]), approval requests ([`crate::approval::open`]) and the Basic authorization header
/// ([`auth::check_basic`]): only tokens minted with the secrets verify, a
/// minted token round-trips with its scope, and a changed MAC fails.
pub fn token(data: &[u8]) {
    const NOW: u64 = 1_700_000_000;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let secrets = [
        SecretString::from("fuzz-secret-1"),
        SecretString::from("fuzz-secret-2"),
    ];
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

    // Approval requests (issue 28): only ones made with these secrets open,
    // and never past their expiry.
    if let Ok(r) = crate::approval::open(text, &secrets, NOW) {
        assert!(NOW <= r.expires);
    }
    // A token naming who made it keeps them through the round trip.
    let by = auth::MintedBy {
        user: "alice".into(),
        approver: Some("bob".into()),
        second_factor: true,
    };
    let named = auth::mint_by(&secrets[0], peer, NOW - 10, NOW + 10, Some(&scope), &by);
    let t = auth::verify(&named, &secrets, peer, NOW).expect("a named token verifies");
    assert_eq!(t.minted_by.as_ref(), Some(&by));

    let creds = [Credential {
        user: "user".into(),
        password: SecretString::from("pass"),
    }];
    if let Some(u) = auth::check_basic(Some(text), &creds) {
        assert_eq!(u, "user");
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// Every committed seed of `target`, replayed through `run`.
    fn replay(target: &str, run: fn(&[u8])) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../formats/fuzz/seeds")
            .join(target);
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let data = std::fs::read(&p).unwrap();
            let r = std::panic::catch_unwind(|| run(&data));
            assert!(r.is_ok(), "seed {} fails its fuzz target", p.display());
            n += 1;
        }
        assert!(n > 0, "no seeds in {}", dir.display());
    }

    /// The seeds of issue 28 reach the checks past the MAC.
    #[test]
    fn the_token_seeds_of_who_made_it_are_valid() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../formats/fuzz/seeds/token");
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
        let secrets = [secrecy::SecretString::from("fuzz-secret-1")];
        let peer = "192.0.2.7".parse().unwrap();
        let t = crate::auth::verify(&read("approved"), &secrets, peer, 1_700_000_000).unwrap();
        assert!(t.approved());
        let r = crate::approval::open(&read("approval-request"), &secrets, 1_700_000_000);
        assert_eq!(r.map(|r| r.requester), Ok("alice".to_string()));
    }

    #[test]
    fn every_seed_passes_its_fuzz_target() {
        replay("config", super::config);
        replay("multipart_form", super::multipart_form);
        replay("proxy_header", super::proxy_header);
        replay("token", super::token);
    }
}
