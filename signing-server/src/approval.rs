//! Two-person approval (`[format:NAME] approvals = 2`): the request a
//! requester gets instead of a token, and what a second person turns into one.
//!
//! The request is stateless: everything the approver's server needs is in
//! its text, under a MAC made with the token secrets (so any server of a
//! fleet sharing them can approve it, and none keeps anything):
//!
//! `v=1&ip=IP&duration=SECONDS&formats=F%2CG&requester=USER&second_factor=totp&expires=UNIX!MAC`
//!
//! (`application/x-www-form-urlencoded` fields, so the text is one line
//! without `!` before the MAC). MAC = HMAC-SHA256, keyed with the first
//! `token_secret`, over [`DOMAIN`] followed by the fields: the domain keeps a
//! request from ever verifying as a token and the other way round. Checked
//! under every configured secret, in constant time, like a token.
//!
//! A request may be approved more than once while it is valid (nothing
//! remembers an approval): each approval is still a second person's decision,
//! audited under both names.

use std::net::IpAddr;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// Longest life of a request: an approver has this long to act.
pub const REQUEST_LIFETIME: u64 = 3600;

/// What the MAC covers before the fields.
const DOMAIN: &[u8] = b"signing-server approval request v1\n";

/// A token someone asked for and a second person must approve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The build machine the token will be bound to.
    pub ip: IpAddr,
    /// The token's lifetime, in seconds, counted from the approval.
    pub duration: u64,
    /// The token's scope.
    pub formats: Vec<String>,
    /// Who asked (authenticated at `POST /token`).
    pub requester: String,
    /// Whether the requester gave a one-time code (`second_factor=totp`, else `none`).
    pub second_factor: bool,
    /// Unix seconds after which the request can no longer be approved.
    pub expires: u64,
}

/// Why a request text was refused (safe to show to the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// Not a request text, or altered (its MAC does not match).
    Altered,
    /// Past its `expires`.
    Expired,
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RequestError::Altered => {
                "the request is not one this server issued, or it was altered (bad MAC)"
            }
            RequestError::Expired => "the request has expired: ask for a new one",
        })
    }
}

fn mac(secret: &SecretString) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC takes any key length");
    m.update(DOMAIN);
    m
}

/// The request's text, MAC'd with `secret`.
pub fn issue(secret: &SecretString, r: &Request) -> String {
    let fields = serde_urlencoded::to_string([
        ("v", "1".to_string()),
        ("ip", crate::auth::canonical(r.ip).to_string()),
        ("duration", r.duration.to_string()),
        ("formats", r.formats.join(",")),
        ("requester", r.requester.clone()),
        (
            "second_factor",
            if r.second_factor { "totp" } else { "none" }.to_string(),
        ),
        ("expires", r.expires.to_string()),
    ])
    .unwrap_or_default();
    let mut m = mac(secret);
    m.update(fields.as_bytes());
    format!(
        "{fields}!{}",
        STANDARD_NO_PAD.encode(m.finalize().into_bytes())
    )
}

/// Checks a request's text (MAC under any of `secrets`, then its expiry at `now`).
pub fn open(text: &str, secrets: &[SecretString], now: u64) -> Result<Request, RequestError> {
    let text = text.trim();
    let (fields, given) = text.rsplit_once('!').ok_or(RequestError::Altered)?;
    let given = STANDARD_NO_PAD
        .decode(given)
        .map_err(|_| RequestError::Altered)?;
    // Every secret is tried, whatever matched first (as for tokens).
    let mut ok = false;
    for secret in secrets {
        let mut m = mac(secret);
        m.update(fields.as_bytes());
        ok |= m.verify_slice(&given).is_ok();
    }
    if !ok {
        return Err(RequestError::Altered);
    }
    // Issued by us: well formed unless a secret was shared with something
    // else. Still parsed strictly.
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(fields).map_err(|_| RequestError::Altered)?;
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or(RequestError::Altered)
    };
    if get("v")? != "1" {
        return Err(RequestError::Altered);
    }
    let number = |name: &str| get(name)?.parse::<u64>().map_err(|_| RequestError::Altered);
    let request = Request {
        ip: get("ip")?.parse().map_err(|_| RequestError::Altered)?,
        duration: number("duration")?,
        formats: get("formats")?.split(',').map(str::to_string).collect(),
        requester: get("requester")?.to_string(),
        second_factor: match get("second_factor")? {
            "totp" => true,
            "none" => false,
            _ => return Err(RequestError::Altered),
        },
        expires: number("expires")?,
    };
    if now > request.expires {
        return Err(RequestError::Expired);
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> SecretString {
        SecretString::from(x.to_string())
    }

    fn request() -> Request {
        Request {
            ip: "10.0.3.7".parse().unwrap(),
            duration: 600,
            formats: vec!["release-gpg".into(), "mar".into()],
            requester: "alice & co!".into(),
            second_factor: true,
            expires: 2000,
        }
    }

    #[test]
    fn a_request_round_trips_under_any_listed_secret() {
        let text = issue(&s("old-secret-old-secret"), &request());
        assert_eq!(text.matches('!').count(), 1, "{text}");
        let secrets = [s("new-secret-new-secret"), s("old-secret-old-secret")];
        assert_eq!(open(&text, &secrets, 1500), Ok(request()));
        assert_eq!(open(&text, &secrets, 2001), Err(RequestError::Expired));
        assert_eq!(
            open(&text, &[s("new-secret-new-secret")], 1500),
            Err(RequestError::Altered)
        );
    }

    #[test]
    fn altered_requests_and_tokens_are_refused() {
        let secret = s("secret-secret-secret");
        let text = issue(&secret, &request());
        for altered in [
            text.replace("duration=600", "duration=6000"),
            text.replace("expires=2000", "expires=9000"),
            text.replace("release-gpg%2C", ""),
            text.replace("ip=10.0.3.7", "ip=10.0.3.8"),
            text.replace("v=1", "v=2"),
            text.replace("second_factor=totp", "second_factor=none"),
            "garbage".to_string(),
            String::new(),
        ] {
            assert_eq!(
                open(&altered, &[s("secret-secret-secret")], 1500),
                Err(RequestError::Altered),
                "{altered}"
            );
        }
        // A token made with the same secret is not a request.
        let token = crate::auth::mint(&secret, "10.0.3.7".parse().unwrap(), 1000, 2000, None);
        assert_eq!(open(&token, &[secret], 1500), Err(RequestError::Altered));
    }
}
