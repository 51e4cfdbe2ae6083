//! `POST /token/approve`: a second person turns an approval request
//! (`crate::approval`, answered by `POST /token` with `202`) into a token.
//!
//! The approver authenticates as at minting (`mint::authenticate`: allowed
//! address, throttle, Basic credentials, one-time code when they have a TOTP
//! secret). Then, in order: the request's MAC and expiry (`400`), the
//! approver is not the requester and is listed in
//! `new_token_approvers.FORMAT` for every approval format of the scope
//! (`403`). The token is minted from the approval on, for the request's
//! duration, and names both people (its audit records do too).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;

use super::mint::{authenticate, check_duration};
use super::{now, ApiResult, Refusal};
use crate::approval::{self, RequestError};
use crate::auth;
use crate::state::AppState;

pub(super) async fn approve(State(state): State<Arc<AppState>>, req: Request) -> ApiResult {
    let dynamic = state.dynamic();
    let sec = &dynamic.security;
    let m = authenticate(&state, &dynamic, req).await?;
    let refused = |reason: &'static str| {
        state
            .metrics
            .inc("signing_approvals_refused_total", &[("reason", reason)]);
    };
    let text = m
        .field("request")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            refused("form");
            Refusal::bad(
                "approve_form",
                "request missing (the text POST /token answered with 202)",
            )
        })?;
    let now = now();
    let request = approval::open(text, &sec.token_secrets, now).map_err(|e| {
        let label = match e {
            RequestError::Altered => "altered",
            RequestError::Expired => "expired",
        };
        refused(label);
        Refusal::bad("approve_request", e.to_string())
    })?;
    if let Some(gone) = request
        .formats
        .iter()
        .find(|f| !dynamic.formats.contains_key(*f))
    {
        refused("format");
        return Err(Refusal::bad(
            "approve_request",
            format!("the request names format {gone}, which this server no longer has"),
        ));
    }
    check_duration(request.duration, sec.max_token_age)?;
    let forbidden = |reason: &'static str, message: String| {
        refused(reason);
        tracing::warn!(approver = %m.user, requester = %request.requester, reason, "approval refused");
        Refusal::new(StatusCode::FORBIDDEN, "approve_not_allowed", message)
    };
    // Compared as names: both are authenticated users of the config, no secret.
    if m.user == request.requester {
        return Err(forbidden(
            "self",
            format!(
                "{} asked for this token; another person must approve it",
                m.user
            ),
        ));
    }
    let approval_formats = request
        .formats
        .iter()
        .filter_map(|f| sec.approvers.get(f).map(|users| (f, users)));
    for (format, users) in approval_formats {
        if !users.contains(&m.user) {
            return Err(forbidden(
                "not_approver",
                format!(
                    "{} may not approve tokens for {format} (new_token_approvers.{format})",
                    m.user
                ),
            ));
        }
    }
    let people = auth::MintedBy {
        user: request.requester.clone(),
        approver: Some(m.user.clone()),
        second_factor: request.second_factor && m.second_factor,
    };
    let token = auth::mint_by(
        &sec.token_secrets[0],
        request.ip,
        now,
        now + request.duration,
        Some(&request.formats),
        &people,
    );
    let formats = request.formats.join(",");
    state.metrics.inc("signing_tokens_minted_total", &[]);
    state.metrics.inc("signing_approvals_total", &[]);
    let token_id = auth::public_id(&token);
    tracing::info!(
        requester = %request.requester, approver = %m.user, second_factor = m.factor(),
        requester_second_factor = request.second_factor, slave_ip = %request.ip,
        duration = request.duration, %formats, %token_id, "token approved and minted"
    );
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain")],
        token,
    )
        .into_response())
}
