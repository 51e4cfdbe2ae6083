//! The second factor at minting (and approving): TOTP as RFC 6238 and
//! authenticator apps do it, HMAC-SHA-1 over the 30-second step since the
//! Unix epoch, 6 digits, one step of clock skew either way.
//!
//! A code is good once: [`Replays`] remembers, per user, the last step a
//! code of theirs was accepted for, and refuses that step and every earlier
//! one. That memory is this process's own (a fleet's servers each keep
//! theirs: docs/SECURITY.md says what that leaves open).
//!
//! The code is compared in constant time (`subtle`), for every step of the
//! window, whatever matched first.

use std::collections::HashMap;
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// Seconds per step (RFC 6238's default, and every authenticator app's).
pub const STEP: u64 = 30;
/// Digits of a code.
pub const DIGITS: usize = 6;
/// Shortest secret accepted: RFC 4226 (R6) asks for at least 128 bits.
pub const MIN_SECRET_BYTES: usize = 16;

/// Decodes a base32 secret (RFC 4648, as `oathtool -b` and `otpauth://`
/// URIs carry it): case, spaces and `=` padding do not matter.
pub fn decode_secret(text: &str) -> Result<SecretSlice<u8>, String> {
    let cleaned = zeroize::Zeroizing::new(
        text.chars()
            // Once, at start-up, on the file's text: nothing a peer sends.
            .filter(|c| !(c.is_whitespace() || matches!(c, '=')))
            .collect::<String>(),
    );
    let bytes = data_encoding::BASE32_NOPAD_NOCASE
        .decode(cleaned.as_bytes())
        .map_err(|_| "not a base32 secret (letters A-Z and digits 2-7)".to_string())?;
    if bytes.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "the secret is {} bytes; at least {MIN_SECRET_BYTES} (RFC 4226: 128 bits) are needed",
            bytes.len()
        ));
    }
    Ok(SecretSlice::from(bytes))
}

/// The code for `step` (RFC 4226's HOTP with the step as counter).
fn code(secret: &SecretSlice<u8>, step: u64) -> [u8; DIGITS] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.expose_secret()).expect("HMAC takes any key length");
    mac.update(&step.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    // Dynamic truncation (RFC 4226, 5.3).
    let offset = usize::from(digest[19] & 0x0f);
    let word = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    let mut n = word % 1_000_000;
    let mut out = [b'0'; DIGITS];
    for d in out.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out
}

/// The step `given` is the code of, among the steps of `now` and one either
/// side; `None` when it is none of them. Every step is compared, in
/// constant time.
pub fn matching_step(secret: &SecretSlice<u8>, given: &str, now: u64) -> Option<u64> {
    let given = given.trim().as_bytes();
    let current = now / STEP;
    let mut found = None;
    for step in [current.saturating_sub(1), current, current + 1] {
        let expected = code(secret, step);
        // Lengths are public (always six digits); the digits are not.
        let same = given.len() == DIGITS && bool::from(expected[..].ct_eq(given));
        if same && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// Why a second factor was refused (the text is safe to show to the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtpError {
    /// No `otp` field.
    Missing,
    /// Not the code of any step of the window.
    Wrong,
    /// The code of a step this user already used, or of an earlier one.
    Replayed,
}

impl OtpError {
    /// Short label, for metrics and the log.
    pub fn label(self) -> &'static str {
        match self {
            OtpError::Missing => "otp_missing",
            OtpError::Wrong => "otp_wrong",
            OtpError::Replayed => "otp_replayed",
        }
    }
}

impl std::fmt::Display for OtpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OtpError::Missing => "this user needs a one-time code: form field otp",
            OtpError::Wrong => "wrong one-time code",
            OtpError::Replayed => "this one-time code (or a later one) was already used",
        })
    }
}

/// Per user, the last step a code was accepted for (in this process only).
#[derive(Debug, Default)]
pub struct Replays {
    last: Mutex<HashMap<String, u64>>,
}

impl Replays {
    /// Checks `given` for `user` at `now` and, if good, marks its step used.
    pub fn check(
        &self,
        user: &str,
        secret: &SecretSlice<u8>,
        given: Option<&str>,
        now: u64,
    ) -> Result<(), OtpError> {
        let given = given
            .filter(|g| !g.trim().is_empty())
            .ok_or(OtpError::Missing)?;
        let step = matching_step(secret, given, now).ok_or(OtpError::Wrong)?;
        // Bounded: one entry per configured TOTP user (callers only get here
        // for a user with a secret).
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match last.get(user) {
            Some(&used) if step <= used => Err(OtpError::Replayed),
            _ => {
                last.insert(user.to_string(), step);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238, appendix B: the SHA-1 secret "12345678901234567890", 8
    /// digits there; our 6 digits are their last six.
    #[test]
    fn rfc_6238_test_vectors() {
        let secret = SecretSlice::from(b"12345678901234567890".to_vec());
        for (time, eight) in [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(
                &code(&secret, time / STEP),
                &eight.as_bytes()[2..],
                "{time}"
            );
        }
    }

    #[test]
    fn window_replay_and_secret_checks() {
        let secret = decode_secret("GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ").expect("base32");
        let now = 1_111_111_111;
        let c = |t: u64| String::from_utf8(code(&secret, t / STEP).to_vec()).unwrap();
        assert_eq!(
            matching_step(&secret, &c(now - 30), now),
            Some(now / STEP - 1)
        );
        assert_eq!(
            matching_step(&secret, &c(now + 30), now),
            Some(now / STEP + 1)
        );
        assert_eq!(matching_step(&secret, &c(now - 60), now), None);
        assert_eq!(matching_step(&secret, "12345", now), None);
        let r = Replays::default();
        assert_eq!(r.check("a", &secret, None, now), Err(OtpError::Missing));
        assert_eq!(r.check("a", &secret, Some(&c(now)), now), Ok(()));
        assert_eq!(
            r.check("a", &secret, Some(&c(now)), now),
            Err(OtpError::Replayed)
        );
        assert_eq!(
            r.check("a", &secret, Some(&c(now - 30)), now),
            Err(OtpError::Replayed)
        );
        assert_eq!(
            r.check("b", &secret, Some(&c(now)), now),
            Ok(()),
            "per user"
        );
        assert!(
            decode_secret("JBSWY3DPEHPK3PXP").is_err(),
            "80 bits is too short"
        );
        assert!(decode_secret("not base32!").is_err());
    }
}
