//! Routes → handlers. The wire contract is docs/PROTOCOL.md.
//!
//! **API boundary:** the handlers here are the only code that reads requests
//! and writes answers (`server.rs` configures hyper and the connections).
//! Every refusal is a [`Refusal`]: a status, a reason label and a one-line,
//! secret-free message for the client; the door logs it and counts it.

mod approve;
pub mod digest;
mod events;
mod fetch;
mod ingest;
mod log;
mod mint;
mod refusal;
mod upload;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use rand::RngCore;
use tracing::Instrument as _;

use crate::auth;
use crate::clean::clean;
pub use crate::state::{AppState, Dynamic, FormatEntry, Peer};
pub use refusal::{Refusal, Refused};

type ApiResult = Result<Response, Refusal>;

/// The application: routes and door checks.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/token", post(mint::mint_token))
        .route("/token/approve", post(approve::approve))
        .route("/sign/{format}", post(upload::upload))
        .route("/sign/{format}/{hash}", get(fetch::fetch))
        .route("/digest/{format}", post(digest::sign_digest))
        .route("/health", get(health))
        .route("/log/checkpoint", get(log::checkpoint))
        .route("/log/tile/{*path}", get(log::tile))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            Refusal::new(StatusCode::NOT_FOUND, "no_endpoint", "no such endpoint")
        })
        // Limits are enforced while streaming, per format; see `upload`.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(state.clone(), door))
        .with_state(state)
}

/// Every request: a request id (in every log line of the request, and in the
/// `X-Request-Id` response header), the peer IP against `allowed_ips`, then
/// one log line, with the reason of a refusal.
async fn door(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<Peer>()
        .map(|p| auth::canonical(p.0.ip()));
    let (method, path) = (req.method().clone(), clean(req.uri().path()));
    let mut id = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut id);
    let id = hex::encode(id);
    let span = tracing::info_span!("request", id = %id, peer = %peer.map(|p| p.to_string()).unwrap_or_default());
    let started = Instant::now();
    let allowed =
        peer.is_some_and(|ip| auth::ip_allowed(&state.dynamic().security.allowed_ips, ip));
    let mut response = if allowed {
        next.run(req).instrument(span.clone()).await
    } else {
        Refusal::new(
            StatusCode::FORBIDDEN,
            "ip_not_allowed",
            "your IP address is not allowed",
        )
        .into_response()
    };
    let status = response.status().as_u16();
    let ms = started.elapsed().as_millis() as u64;
    match response.extensions().get::<Refused>() {
        Some(r) => {
            if let Some(reason) = r.reason {
                state
                    .metrics
                    .inc("signing_refused_requests_total", &[("reason", reason)]);
            }
            span.in_scope(|| {
                tracing::info!(%method, %path, status, ms, reason = r.reason.unwrap_or(""), message = %r.message, "request")
            });
        }
        None => span.in_scope(|| tracing::info!(%method, %path, status, ms, "request")),
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert(header::HeaderName::from_static("x-request-id"), v);
    }
    response
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let draining = state.draining.load(Ordering::Relaxed);
    let dynamic = state.dynamic();
    // Each format's upload limit, so that a client can refuse a file far too
    // large before sending it (the server refuses such an upload from its
    // Content-Length and closes, which a client still sending may only see
    // as a reset).
    let limits: serde_json::Map<String, serde_json::Value> = dynamic
        .formats
        .iter()
        .map(|(name, f)| (name.clone(), f.max_filesize.into()))
        .collect();
    // Each format's type and what its result is, so that a client need not
    // infer either from the format's name.
    let details: serde_json::Map<String, serde_json::Value> = dynamic
        .formats
        .iter()
        .map(|(name, f)| {
            let mut detail = serde_json::json!({
                "type": f.config.kind,
                "output": f.signer.output().as_str(),
                "digest_signing": digest::spec(f).is_some(),
            });
            if let Some(rate) = f.rate {
                detail["max_rate"] = rate.per_second.into();
                detail["burst"] = rate.burst.into();
            }
            if let Some(spec) = digest::spec(f) {
                detail["digest"] = spec.to_text().into();
                if let Some(containers) = spec.containers() {
                    detail["digest_containers"] = containers.names().into();
                }
            }
            (name.clone(), detail)
        })
        .collect();
    let audit = state.queue.audit();
    let log = state.queue.log();
    // Signing fails closed while either log cannot be written.
    let status = if draining {
        "draining"
    } else if log.is_some_and(|l| !l.available()) {
        "log_unavailable"
    } else if audit.failing() {
        "audit_unavailable"
    } else {
        "ok"
    };
    let mut body = serde_json::json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "formats": dynamic.format_names,
        "max_filesize": limits,
        "format_details": details,
        // An upload may give its sha256 after filedata (clients hash while sending).
        "trailing_sha256": true,
        "queue_depth": state.queue.depth(),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "keys": crate::token_keys::health(key_states(&dynamic)),
        "certificate_warnings": crate::expiry::warnings(&dynamic, now(), state.cert_expiry_warning),
        "audit": {
            "state": if audit.failing() { "unavailable" } else { "ok" },
            "write_failures": audit.failures(),
        },
    });
    if let Some(log) = log {
        body["log"] = log.health();
    }
    let status = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, axum::Json(body)).into_response()
}

/// Each format's key state, for /health and /metrics.
fn key_states(d: &Dynamic) -> impl Iterator<Item = (&String, formats::KeyStatus)> {
    d.formats.iter().map(|(n, f)| (n, f.signer.key_status()))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let dynamic = state.dynamic();
    let tsa = crate::metrics::tsa_failures(dynamic.formats.values().map(|f| &f.signer));
    let mut text = state
        .metrics
        .render(state.queue.depth(), state.started.elapsed(), &tsa);
    text.push_str(&format!(
        "# TYPE signing_concurrent_peak gauge\nsigning_concurrent_peak {}\n",
        state.queue.signing_peak()
    ));
    text.push_str(&crate::token_keys::metrics(key_states(&dynamic)));
    text.push_str(&crate::expiry::metrics(&dynamic));
    let audit_failures = state.queue.audit().failures();
    text.push_str(&format!(
        "# TYPE signing_audit_write_failures_total counter\nsigning_audit_write_failures_total {audit_failures}\n"
    ));
    if let Some(log) = state.queue.log() {
        text.push_str(&log.metrics());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
