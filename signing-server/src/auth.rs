//! Tokens, minting credentials and IP allow-lists: pure functions, no I/O.
//!
//! Token text: `IP:VALID_FROM:VALID_TO:CHAFF!MAC`, MAC = HMAC-SHA256 over
//! everything before `!`, CHAFF 16 random bytes, both standard base64 without
//! `=` padding. A token is valid under ANY configured secret (rotation), in
//! its time window, and only from the IP it names. A token scoped to some
//! formats carries them inside the MAC'd text, after the chaff:
//! `IP:VALID_FROM:VALID_TO:CHAFF;FORMAT,FORMAT!MAC` (format names never hold
//! `;`, `,`, `:` or `!`); a token without a scope is valid for every format.
//! A token minted with a second factor, or approved by a second person
//! (`crate::approval`), names who made it after its scope, each name in
//! base64url, and `+t` when every one of them gave a one-time code:
//! `…[;FORMATS]~USER[.APPROVER][+t]!MAC` (`~`, `.` and `+` never occur in
//! base64url, format names or the chaff's standard base64 before it).
//!
//! Every secret comparison here is constant-time: MACs through
//! `Mac::verify_slice`, passwords through `subtle` on fixed-length digests
//! (so neither content nor length leaks through timing).

use std::net::IpAddr;

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use ipnet::IpNet;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Why a token was refused. The text is safe to show to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// No token field, or empty.
    Missing,
    /// Not of the form `IP:FROM:TO:CHAFF!MAC`.
    Malformed,
    /// The MAC matches none of the configured secrets.
    BadMac,
    /// `now < VALID_FROM`.
    NotYetValid,
    /// `now > VALID_TO`.
    Expired,
    /// The request comes from another IP than the token names.
    WrongIp,
}

impl TokenError {
    /// Short label, used in metrics.
    pub fn label(self) -> &'static str {
        match self {
            TokenError::Missing => "missing",
            TokenError::Malformed => "malformed",
            TokenError::BadMac => "bad_mac",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::Expired => "expired",
            TokenError::WrongIp => "wrong_ip",
        }
    }
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenError::Missing => "token missing",
            TokenError::Malformed => {
                "token malformed (expected IP:VALID_FROM:VALID_TO:CHAFF[;FORMATS]!MAC)"
            }
            TokenError::BadMac => {
                "token signature invalid (bad MAC or a secret no longer configured)"
            }
            TokenError::NotYetValid => "token not yet valid",
            TokenError::Expired => "token expired",
            TokenError::WrongIp => "token was issued for another IP address",
        })
    }
}

/// One `new_token_auth*` entry of the config: who may mint tokens.
#[derive(Debug, Clone)]
pub struct Credential {
    /// User name.
    pub user: String,
    /// Password: plain, or an argon2 PHC string.
    pub password: SecretString,
}

/// A verified token's public parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The build machine the token is bound to.
    pub ip: IpAddr,
    /// Unix seconds.
    pub valid_from: u64,
    /// Unix seconds.
    pub valid_to: u64,
    /// The random part: identifies the token in audit logs without being a secret.
    pub chaff: String,
    /// The formats it may sign with; `None`: all of them.
    pub formats: Option<Vec<String>>,
    /// Who made it, for a token minted with a second factor or approved by
    /// a second person (`None`: a token as Mozilla's protocol has them).
    pub minted_by: Option<MintedBy>,
}

impl Token {
    /// Whether a second person approved it.
    pub fn approved(&self) -> bool {
        self.minted_by
            .as_ref()
            .is_some_and(|m| m.approver.is_some())
    }
}

/// Who made a token (each authenticated when it was made), as its audit
/// records name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintedBy {
    /// Who minted it, or asked for it (`POST /token`).
    pub user: String,
    /// Who approved it (`POST /token/approve`): never `user`.
    pub approver: Option<String>,
    /// Every one of them gave a one-time code (TOTP).
    pub second_factor: bool,
}

impl Token {
    /// Whether the token may sign with `format`.
    pub fn allows(&self, format: &str) -> bool {
        self.formats
            .as_ref()
            .is_none_or(|list| list.iter().any(|scoped| scoped == format))
    }

    /// The scope as the audit log and messages show it: `gpg,mar` ("" when unscoped).
    pub fn scope(&self) -> String {
        self.formats
            .as_ref()
            .map(|l| l.join(","))
            .unwrap_or_default()
    }
}

fn mac(secret: &SecretString) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    HmacSha256::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC takes any key length")
}

/// Mints a token for `ip`, valid from `valid_from` to `valid_to` (Unix
/// seconds), for the `formats` given (None: all). Format names are checked by
/// the caller (config names: letters, digits, `_`, `.`, `-`).
pub fn mint(
    secret: &SecretString,
    ip: IpAddr,
    valid_from: u64,
    valid_to: u64,
    formats: Option<&[String]>,
) -> String {
    mint_with(secret, ip, (valid_from, valid_to), formats, None)
}

/// Mints a token that names who made it (`minted_by`): one minted with a
/// second factor, or a two-person token (then scoped to `formats`).
pub fn mint_by(
    secret: &SecretString,
    ip: IpAddr,
    valid_from: u64,
    valid_to: u64,
    formats: Option<&[String]>,
    minted_by: &MintedBy,
) -> String {
    mint_with(secret, ip, (valid_from, valid_to), formats, Some(minted_by))
}

fn mint_with(
    secret: &SecretString,
    ip: IpAddr,
    (valid_from, valid_to): (u64, u64),
    formats: Option<&[String]>,
    minted_by: Option<&MintedBy>,
) -> String {
    let mut chaff = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut chaff);
    let mut payload = format!(
        "{}:{}:{}:{}",
        canonical(ip),
        valid_from,
        valid_to,
        STANDARD_NO_PAD.encode(chaff)
    );
    if let Some(list) = formats {
        payload.push(';');
        payload.push_str(&list.join(","));
    }
    if let Some(m) = minted_by {
        payload.push('~');
        payload.push_str(&URL_SAFE_NO_PAD.encode(&m.user));
        if let Some(approver) = &m.approver {
            payload.push('.');
            payload.push_str(&URL_SAFE_NO_PAD.encode(approver));
        }
        if m.second_factor {
            payload.push_str("+t");
        }
    }
    let mut m = mac(secret);
    m.update(payload.as_bytes());
    format!(
        "{payload}!{}",
        STANDARD_NO_PAD.encode(m.finalize().into_bytes())
    )
}

/// `USER[.APPROVER][+t]`, each name base64url.
fn parse_minted_by(text: &str) -> Option<MintedBy> {
    let (names, second_factor) = match text.strip_suffix("+t") {
        Some(names) => (names, true),
        None => (text, false),
    };
    let name = |b64: &str| {
        URL_SAFE_NO_PAD
            .decode(b64)
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
    };
    let (user, approver) = match names.split_once('.') {
        Some((user, approver)) => (user, Some(name(approver)?)),
        None => (names, None),
    };
    Some(MintedBy {
        user: name(user)?,
        approver,
        second_factor,
    })
}

/// Checks a token as carried by a request from `peer` at time `now`.
///
/// The MAC is checked first, so nothing about an unauthenticated token
/// (expired or not, which IP) is revealed to whoever forged it.
pub fn verify(
    token: &str,
    secrets: &[SecretString],
    peer: IpAddr,
    now: u64,
) -> Result<Token, TokenError> {
    // The old clients read the token file raw: tolerate a trailing newline.
    let token = token.trim();
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    let (payload, mac_b64) = token.rsplit_once('!').ok_or(TokenError::Malformed)?;
    let given = STANDARD_NO_PAD
        .decode(mac_b64.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed)?;
    // IPv6 addresses contain ':', so split the three last fields from the right.
    let mut fields = payload.rsplitn(4, ':');
    let (Some(last), Some(to), Some(from), Some(ip)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(TokenError::Malformed);
    };
    let ip: IpAddr = ip
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| TokenError::Malformed)?;
    let valid_from: u64 = from.parse().map_err(|_| TokenError::Malformed)?;
    let valid_to: u64 = to.parse().map_err(|_| TokenError::Malformed)?;
    let (last, minted_by) = match last.split_once('~') {
        Some((rest, who)) => (
            rest,
            Some(parse_minted_by(who).ok_or(TokenError::Malformed)?),
        ),
        None => (last, None),
    };
    let (chaff, formats) = match last.split_once(';') {
        Some((chaff, list)) => {
            let list: Vec<String> = list.split(',').map(str::to_string).collect();
            if list.iter().any(|f| f.is_empty()) {
                return Err(TokenError::Malformed);
            }
            (chaff, Some(list))
        }
        None => (last, None),
    };
    if chaff.is_empty() {
        return Err(TokenError::Malformed);
    }
    // Try every secret, without stopping at the first match, so the time
    // taken does not tell which secret (old or new) matched.
    let mut ok = false;
    for secret in secrets {
        let mut m = mac(secret);
        m.update(payload.as_bytes());
        ok |= m.verify_slice(&given).is_ok();
    }
    if !ok {
        return Err(TokenError::BadMac);
    }
    if now < valid_from {
        return Err(TokenError::NotYetValid);
    }
    if now > valid_to {
        return Err(TokenError::Expired);
    }
    if canonical(ip) != canonical(peer) {
        return Err(TokenError::WrongIp);
    }
    Ok(Token {
        ip,
        valid_from,
        valid_to,
        chaff: chaff.to_string(),
        formats,
        minted_by,
    })
}

/// The public id (the chaff) of a token this server minted, for the audit log.
pub fn public_id(token: &str) -> String {
    let payload = token.rsplit_once('!').map_or(token, |(p, _)| p);
    let last = payload.rsplit(':').next().unwrap_or_default();
    let chaff = last.split('~').next().unwrap_or_default();
    chaff.split(';').next().unwrap_or_default().to_string()
}

/// An IPv4-mapped IPv6 address (`::ffff:1.2.3.4`, what a dual-stack socket
/// reports) is the IPv4 address it maps.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Whether `ip` is in one of the networks.
pub fn ip_allowed(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    nets.iter().any(|n| n.contains(&ip))
}

/// Whether `given` is the password `stored` in the config: an argon2 PHC
/// string (`$argon2id$…`, made by `signing-server --hash-password`; argon2's
/// own check is constant-time) or the plain password (compared as SHA-256
/// digests in constant time, so the length does not leak either).
fn password_matches(stored: &str, given: &str) -> bool {
    use argon2::PasswordVerifier as _;
    if stored.starts_with("$argon2") {
        return match argon2::PasswordHash::new(stored) {
            Ok(hash) => argon2::Argon2::default()
                .verify_password(given.as_bytes(), &hash)
                .is_ok(),
            Err(_) => false,
        };
    }
    bool::from(Sha256::digest(stored.as_bytes()).ct_eq(&Sha256::digest(given.as_bytes())))
}

/// Hashes a minting password for the config (`user:$argon2id$…`).
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher as _, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether a stored password that looks like an argon2 hash is a valid one.
pub fn valid_hash(stored: &str) -> bool {
    !stored.starts_with("$argon2")
        || argon2::PasswordHash::new(stored).is_ok_and(|h| h.salt.is_some() && h.hash.is_some())
}

/// Checks an `Authorization: Basic …` header value against the credentials.
/// Returns the matching user name. Every entry is checked, whatever matched.
pub fn check_basic(header: Option<&str>, creds: &[Credential]) -> Option<String> {
    // The scheme is case-insensitive (RFC 9110).
    let (scheme, encoded) = header?.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?,
    );
    let text = std::str::from_utf8(&decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    // Compare digests, so lengths do not leak; visit every entry.
    let user_d = Sha256::digest(user.as_bytes());
    let mut found: Option<String> = None;
    for c in creds {
        let u = bool::from(Sha256::digest(c.user.as_bytes()).ct_eq(&user_d));
        let p = password_matches(c.password.expose_secret(), password);
        if u & p && found.is_none() {
            found = Some(c.user.clone());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> SecretString {
        SecretString::from(x.to_string())
    }

    const IP: &str = "10.1.2.3";

    #[test]
    fn minted_token_verifies() {
        let ip: IpAddr = IP.parse().unwrap();
        let t = mint(&s("secret-secret-secret"), ip, 100, 200, None);
        let ok = verify(&t, &[s("secret-secret-secret")], ip, 150).unwrap();
        assert_eq!(ok.ip, ip);
        assert_eq!((ok.valid_from, ok.valid_to), (100, 200));
        assert!(t.starts_with("10.1.2.3:100:200:"));
        assert!(!t.contains('='), "no base64 padding: {t}");
    }

    #[test]
    fn refusals_say_why() {
        let ip: IpAddr = IP.parse().unwrap();
        let good = [s("secret-secret-secret")];
        let t = mint(&good[0], ip, 100, 200, None);
        assert_eq!(verify(&t, &good, ip, 99), Err(TokenError::NotYetValid));
        assert_eq!(verify(&t, &good, ip, 201), Err(TokenError::Expired));
        assert_eq!(
            verify(&t, &good, "10.1.2.4".parse().unwrap(), 150),
            Err(TokenError::WrongIp)
        );
        assert_eq!(
            verify(&t, &[s("another-secret-xxxx")], ip, 150),
            Err(TokenError::BadMac)
        );
        assert_eq!(verify("", &good, ip, 150), Err(TokenError::Missing));
        assert_eq!(
            verify("nonsense", &good, ip, 150),
            Err(TokenError::Malformed)
        );
        // A changed field breaks the MAC.
        let forged = t.replacen(":200:", ":999:", 1);
        assert_eq!(verify(&forged, &good, ip, 150), Err(TokenError::BadMac));
    }

    #[test]
    fn scoped_tokens_carry_their_formats_under_the_mac() {
        let ip: IpAddr = IP.parse().unwrap();
        let good = [s("secret-secret-secret")];
        let scope = ["gpg".to_string(), "mar_sha384".to_string()];
        let t = mint(&good[0], ip, 100, 200, Some(&scope));
        assert!(t.contains(";gpg,mar_sha384!"), "{t}");
        let ok = verify(&t, &good, ip, 150).unwrap();
        assert!(ok.allows("gpg") && ok.allows("mar_sha384") && !ok.allows("mar"));
        assert_eq!(ok.scope(), "gpg,mar_sha384");
        // Widening or removing the scope breaks the MAC.
        let wider = t.replacen(";gpg,", ";gpg,mar,", 1);
        assert_eq!(verify(&wider, &good, ip, 150), Err(TokenError::BadMac));
        let (head, mac) = t.split_once('!').unwrap();
        let unscoped = format!("{}!{mac}", head.split_once(';').unwrap().0);
        assert_eq!(verify(&unscoped, &good, ip, 150), Err(TokenError::BadMac));
        // Unscoped tokens keep their meaning: every format.
        let all = verify(&mint(&good[0], ip, 100, 200, None), &good, ip, 150).unwrap();
        assert!(all.allows("anything") && all.formats.is_none());
    }

    #[test]
    fn tokens_name_who_made_them_under_the_mac() {
        let ip: IpAddr = IP.parse().unwrap();
        let good = [s("secret-secret-secret")];
        let scope = ["release".to_string()];
        let people = MintedBy {
            user: "alice".into(),
            approver: Some("bob;!~".into()),
            second_factor: true,
        };
        let t = mint_by(&good[0], ip, 100, 200, Some(&scope), &people);
        assert!(t.contains(";release~") && t.contains("+t!"), "{t}");
        assert_eq!(public_id(&t), verify(&t, &good, ip, 150).unwrap().chaff);
        let ok = verify(&t, &good, ip, 150).unwrap();
        assert_eq!(ok.minted_by.as_ref(), Some(&people));
        assert!(ok.approved() && ok.allows("release") && !ok.allows("gpg"));
        // Dropping the names, the second factor or swapping them breaks the MAC.
        let (head, mac) = t.split_once('!').unwrap();
        let (rest, who) = head.split_once('~').unwrap();
        let (a, b) = who.trim_end_matches("+t").split_once('.').unwrap();
        for forged in [
            format!("{rest}!{mac}"),
            format!("{}!{mac}", head.trim_end_matches("+t")),
            format!("{rest}~{b}.{a}+t!{mac}"),
        ] {
            assert_eq!(
                verify(&forged, &good, ip, 150),
                Err(TokenError::BadMac),
                "{forged}"
            );
        }
        // One user with a second factor, unscoped.
        let alone = MintedBy {
            user: "carol".into(),
            approver: None,
            second_factor: true,
        };
        let t = mint_by(&good[0], ip, 100, 200, None, &alone);
        let ok = verify(&t, &good, ip, 150).unwrap();
        assert_eq!((ok.minted_by, ok.formats), (Some(alone), None));
        assert!(verify(&mint(&good[0], ip, 100, 200, None), &good, ip, 150)
            .unwrap()
            .minted_by
            .is_none());
    }

    #[test]
    fn any_listed_secret_verifies() {
        let ip: IpAddr = IP.parse().unwrap();
        let t = mint(&s("old-secret-old-secret"), ip, 100, 200, None);
        let secrets = [s("new-secret-new-secret"), s("old-secret-old-secret")];
        assert!(verify(&t, &secrets, ip, 150).is_ok());
    }

    #[test]
    fn ipv6_and_mapped_addresses() {
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let t = mint(&s("secret-secret-secret"), ip, 100, 200, None);
        assert!(verify(&t, &[s("secret-secret-secret")], ip, 150).is_ok());
        let v4: IpAddr = "127.0.0.2".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        let t = mint(&s("secret-secret-secret"), v4, 100, 200, None);
        assert!(verify(&t, &[s("secret-secret-secret")], mapped, 150).is_ok());
        assert!(ip_allowed(&["127.0.0.0/8".parse().unwrap()], mapped));
    }

    #[test]
    fn trailing_newline_is_tolerated() {
        let ip: IpAddr = IP.parse().unwrap();
        let t = mint(&s("secret-secret-secret"), ip, 100, 200, None) + "\n";
        assert!(verify(&t, &[s("secret-secret-secret")], ip, 150).is_ok());
    }

    #[test]
    fn basic_auth() {
        let creds = vec![
            Credential {
                user: "alice".into(),
                password: s("pw1"),
            },
            Credential {
                user: "bob".into(),
                password: s("pw2"),
            },
        ];
        let h = |u: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(u)
            )
        };
        assert_eq!(
            check_basic(Some(&h("bob:pw2")), &creds).as_deref(),
            Some("bob")
        );
        assert_eq!(check_basic(Some(&h("bob:pw1")), &creds), None);
        assert_eq!(check_basic(Some(&h("carol:pw1")), &creds), None);
        assert_eq!(check_basic(Some("Bearer x"), &creds), None);
        assert_eq!(check_basic(None, &creds), None);
    }

    #[test]
    fn hashed_passwords() {
        let stored = hash_password("s3cret").unwrap();
        assert!(stored.starts_with("$argon2id$") && valid_hash(&stored));
        assert!(!valid_hash("$argon2id$garbage"));
        let creds = vec![Credential {
            user: "tokenhost".into(),
            password: s(&stored),
        }];
        let h = |u: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(u)
            )
        };
        assert_eq!(
            check_basic(Some(&h("tokenhost:s3cret")), &creds).as_deref(),
            Some("tokenhost")
        );
        assert_eq!(check_basic(Some(&h("tokenhost:wrong")), &creds), None);
        // The hash itself is not a password.
        assert_eq!(
            check_basic(Some(&h(&format!("tokenhost:{stored}"))), &creds),
            None
        );
    }
}
