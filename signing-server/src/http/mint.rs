//! `POST /token`: minting, behind `new_token_allowed_ips`, HTTP Basic
//! credentials, a one-time code for users with a TOTP secret and a
//! per-address throttle on failed attempts. A scope with a format under a
//! two-person rule answers `202` and a request text for `approve.rs`.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use base64::Engine as _;
use zeroize::Zeroizing;

use super::{now, ApiResult, Refusal};
use crate::auth;
use crate::clean::clean;
use crate::state::{AppState, Peer};

/// Largest form body accepted by POST /token.
const TOKEN_FORM_LIMIT: usize = 4096;

/// The user name an `Authorization: Basic` header claims (for the log only:
/// nothing is decided on it), cleaned and cut.
fn claimed_user(authz: Option<&str>) -> String {
    let user = authz
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .and_then(|(_, b)| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|raw| {
            let user = raw
                .split(|b| *b == b':')
                .next()
                .unwrap_or_default()
                .to_vec();
            String::from_utf8(user).ok()
        })
        .unwrap_or_default();
    clean(&user.chars().take(64).collect::<String>())
}

/// Whether `ip` can be one build machine's address: not `0.0.0.0` or `::`
/// (no peer ever has them), not multicast or broadcast.
fn one_host(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

/// The formats a new token is limited to: those asked for (`formats=a,b`),
/// within the user's `new_token_formats.USER` limit if there is one (asking
/// for nothing then gives the user's whole list); None: every format.
fn scope(
    dynamic: &crate::state::Dynamic,
    user: &str,
    asked: Option<&str>,
) -> Result<Option<Vec<String>>, Refusal> {
    let asked: Option<Vec<String>> = asked.filter(|a| !a.is_empty()).map(|a| {
        a.split(',')
            .map(|f| f.trim().to_string())
            .filter(|f| !f.is_empty())
            .collect()
    });
    if let Some(list) = &asked {
        let unknown: Vec<&str> = list
            .iter()
            .filter(|f| !dynamic.formats.contains_key(*f))
            .map(|f| f.as_str())
            .collect();
        if !unknown.is_empty() || list.is_empty() {
            return Err(Refusal::bad(
                "mint_form",
                format!(
                    "formats: unknown format(s) {} (this server has {})",
                    clean(&unknown.join(", ")),
                    dynamic.format_names.join(", ")
                ),
            ));
        }
    }
    let limit = dynamic.security.new_token_formats.get(user);
    match (asked, limit) {
        (None, None) => Ok(None),
        (None, Some(limit)) => Ok(Some(limit.clone())),
        (Some(asked), None) => Ok(Some(asked)),
        (Some(asked), Some(limit)) => {
            let beyond: Vec<&str> = asked
                .iter()
                .filter(|f| !limit.contains(*f))
                .map(|f| f.as_str())
                .collect();
            if beyond.is_empty() {
                Ok(Some(asked))
            } else {
                Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    "mint_formats_not_allowed",
                    format!(
                        "user {user} may mint tokens only for {}; not for {}",
                        limit.join(", "),
                        beyond.join(", ")
                    ),
                ))
            }
        }
    }
}

/// A minting user, authenticated: the peer may mint, is not throttled, its
/// Basic credentials match and, for a user with a TOTP secret, so does the
/// one-time code of the form's `otp` field. Shared by `POST /token` and
/// `POST /token/approve`; every failure of the credentials or the code
/// counts against the address's minting throttle.
pub(super) struct Minter {
    /// The authenticated user.
    pub(super) user: String,
    /// Whether a second factor was checked (the user has a TOTP secret).
    pub(super) second_factor: bool,
    /// The urlencoded form.
    pub(super) form: Vec<(String, String)>,
}

impl Minter {
    /// The form field `name`, trimmed.
    pub(super) fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
    }

    /// How the log and the audit name the second factor.
    pub(super) fn factor(&self) -> &'static str {
        if self.second_factor {
            "totp"
        } else {
            "none"
        }
    }
}

pub(super) async fn authenticate(
    state: &AppState,
    dynamic: &crate::state::Dynamic,
    req: Request,
) -> Result<Minter, Refusal> {
    let sec = &dynamic.security;
    let peer = req
        .extensions()
        .get::<Peer>()
        .map(|p| auth::canonical(p.0.ip()))
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "peer address unknown",
            )
        })?;
    if !auth::ip_allowed(&sec.new_token_allowed_ips, peer) {
        state
            .metrics
            .inc("signing_token_mint_refused_total", &[("reason", "ip")]);
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "mint_ip_not_allowed",
            "minting tokens is not allowed from your IP address",
        ));
    }
    let per_minute = sec.mint_failures_per_minute;
    // One attempt taken now, given back if it succeeds.
    if let Err(wait) = state.mint_throttle.take(peer, per_minute) {
        state.metrics.inc(
            "signing_token_mint_refused_total",
            &[("reason", "throttled")],
        );
        return Err(Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "mint_throttled",
            format!(
                "too many failed minting attempts from your address; try again in {} s",
                wait.as_secs()
            ),
        )
        .with_value(header::RETRY_AFTER, HeaderValue::from(wait.as_secs())));
    }
    let authz = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    // argon2 takes tens of milliseconds of CPU: on a blocking thread, so a
    // burst of wrong passwords never stalls the async workers.
    let checked = {
        // The snapshot this request reads, owned by the blocking thread.
        let (dynamic, header) = (
            state.dynamic(),
            authz.map(|a| Zeroizing::new(a.to_string())),
        );
        tokio::task::spawn_blocking(move || {
            auth::check_basic(
                header.as_deref().map(|h| h.as_str()),
                &dynamic.security.new_token_auth,
            )
        })
        .await
        .map_err(|e| {
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("password check failed: {e}"),
            )
        })?
    };
    let Some(user) = checked else {
        state.metrics.inc(
            "signing_token_mint_refused_total",
            &[("reason", "credentials")],
        );
        tracing::warn!(user = %claimed_user(authz), "minting refused: bad or missing credentials");
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "mint_credentials",
            "bad or missing credentials (HTTP Basic user:password)",
        )
        .with(header::WWW_AUTHENTICATE, "Basic realm=\"signing-server\""));
    };
    let body = axum::body::to_bytes(req.into_body(), TOKEN_FORM_LIMIT)
        .await
        .map_err(|_| {
            Refusal::bad(
                "mint_form",
                format!("form body missing or larger than {TOKEN_FORM_LIMIT} bytes"),
            )
        })?;
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
        .map_err(|_| Refusal::bad("mint_form", "body is not application/x-www-form-urlencoded"))?;
    let mut minter = Minter {
        user,
        second_factor: false,
        form,
    };
    if let Some(secret) = sec.new_token_totp.get(&minter.user) {
        let checked = state
            .otp_replays
            .check(&minter.user, secret, minter.field("otp"), now());
        if let Err(e) = checked {
            // The attempt taken above stays taken.
            state
                .metrics
                .inc("signing_token_mint_refused_total", &[("reason", e.label())]);
            tracing::warn!(user = %minter.user, reason = e.label(), "minting refused: second factor");
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                e.label(),
                e.to_string(),
            ));
        }
        minter.second_factor = true;
    }
    // Password (and second factor) right: the attempt is given back.
    state.mint_throttle.succeeded(peer, per_minute);
    Ok(minter)
}

/// `slave_ip` and `duration` of a minting form.
fn ip_and_duration(m: &Minter, max_token_age: u64) -> Result<(IpAddr, u64), Refusal> {
    let ip: IpAddr = m
        .field("slave_ip")
        .ok_or_else(|| {
            Refusal::bad(
                "mint_form",
                "slave_ip missing (the build machine's IP address)",
            )
        })?
        .parse()
        .map(auth::canonical)
        .map_err(|_| Refusal::bad("mint_form", "slave_ip is not an IP address"))?;
    if !one_host(ip) {
        return Err(Refusal::bad(
            "mint_form",
            format!(
                "slave_ip {ip} is not one machine's address (unspecified, multicast or broadcast)"
            ),
        ));
    }
    let duration: u64 = m
        .field("duration")
        .ok_or_else(|| Refusal::bad("mint_form", "duration missing (seconds)"))?
        .parse()
        .map_err(|_| Refusal::bad("mint_form", "duration is not a whole number of seconds"))?;
    check_duration(duration, max_token_age)?;
    Ok((ip, duration))
}

/// `1 ≤ duration ≤ max_token_age`.
pub(super) fn check_duration(duration: u64, max_token_age: u64) -> Result<(), Refusal> {
    if duration < 1 || duration > max_token_age {
        return Err(Refusal::bad(
            "mint_form",
            format!("duration must be between 1 and {max_token_age} seconds"),
        ));
    }
    Ok(())
}

pub(super) async fn mint_token(State(state): State<Arc<AppState>>, req: Request) -> ApiResult {
    let dynamic = state.dynamic();
    let sec = &dynamic.security;
    let m = authenticate(&state, &dynamic, req).await?;
    let (ip, duration) = ip_and_duration(&m, sec.max_token_age)?;
    let scope = scope(&dynamic, &m.user, m.field("formats"))?;
    let from = now();
    // A scope with a format under the two-person rule: a request, not a token.
    let two_person = |list: &&Vec<String>| list.iter().any(|f| sec.approvers.contains_key(f));
    if let Some(scope) = scope.as_ref().filter(two_person) {
        let request = crate::approval::Request {
            ip,
            duration,
            formats: scope.clone(),
            requester: m.user.clone(),
            second_factor: m.second_factor,
            expires: from + crate::approval::REQUEST_LIFETIME,
        };
        let text = crate::approval::issue(&sec.token_secrets[0], &request);
        let formats = scope.join(",");
        state.metrics.inc("signing_approval_requests_total", &[]);
        tracing::info!(user = %m.user, second_factor = m.factor(), slave_ip = %ip, duration, %formats, "token approval requested");
        return Ok((
            StatusCode::ACCEPTED,
            [(header::CONTENT_TYPE, "text/plain")],
            text,
        )
            .into_response());
    }
    // A token minted with a second factor says so (and who minted it) in
    // every audit record of its signings; other tokens stay as they were.
    let token = if m.second_factor {
        let by = auth::MintedBy {
            user: m.user.clone(),
            approver: None,
            second_factor: true,
        };
        auth::mint_by(
            &sec.token_secrets[0],
            ip,
            from,
            from + duration,
            scope.as_deref(),
            &by,
        )
    } else {
        auth::mint(
            &sec.token_secrets[0],
            ip,
            from,
            from + duration,
            scope.as_deref(),
        )
    };
    state.metrics.inc("signing_tokens_minted_total", &[]);
    let scope = scope.map(|l| l.join(",")).unwrap_or_else(|| "*".into());
    let token_id = auth::public_id(&token);
    tracing::info!(user = %m.user, second_factor = m.factor(), slave_ip = %ip, duration, formats = %scope, %token_id, "token minted");
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain")],
        token,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lower_case_basic_scheme_is_logged_with_its_user() {
        for scheme in ["Basic", "basic", "BASIC"] {
            let header = format!(
                "{scheme} {}",
                base64::engine::general_purpose::STANDARD.encode("alice:pw")
            );
            assert_eq!(claimed_user(Some(&header)), "alice", "{scheme}");
        }
        assert_eq!(claimed_user(Some("Bearer abc")), "");
    }

    #[test]
    fn tokens_are_minted_only_for_one_machine() {
        for bad in [
            "0.0.0.0",
            "::",
            "::ffff:0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "ff02::1",
        ] {
            let ip: IpAddr = bad.parse().unwrap();
            assert!(!one_host(auth::canonical(ip)), "{bad}");
        }
        for good in ["10.0.0.5", "127.0.0.1", "2001:db8::1", "::1"] {
            assert!(one_host(good.parse().unwrap()), "{good}");
        }
    }
}
