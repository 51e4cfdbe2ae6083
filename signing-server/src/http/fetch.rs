//! `GET /sign/FORMAT/HASH`: the result, or why not yet (long poll).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;

use super::{ApiResult, Refusal};
use crate::queue::{Lookup, ResultInfo};
use crate::state::AppState;
use crate::store::is_hex_digest;

pub(super) async fn fetch(
    State(state): State<Arc<AppState>>,
    Path((format, hash)): Path<(String, String)>,
) -> ApiResult {
    let dynamic = state.dynamic();
    if !dynamic.formats.contains_key(&format) {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "unknown_format",
            format!("unknown format {format:?}"),
        ));
    }
    let hash = hash.to_ascii_lowercase();
    if !(is_hex_digest(&hash, 40) || is_hex_digest(&hash, 64)) {
        return Err(Refusal::bad(
            "bad_hash",
            "hash must be the sha1 (40 hex) or sha256 (64 hex) of the unsigned file",
        ));
    }
    let mut waited = false;
    loop {
        match state.queue.lookup(&format, &hash) {
            Lookup::Done(info) => return serve_result(&info).await,
            Lookup::Rejected(reason) => {
                return Err(Refusal::answer(StatusCode::UNPROCESSABLE_ENTITY, reason))
            }
            // A token fault: 503 + Retry-After, so the client goes to another host.
            Lookup::Unavailable(_) => {
                return Err(Refusal::busy(
                    "token_unavailable",
                    "the signing key's token is unavailable on this server; use another host",
                ))
            }
            // Signed, but its log entry or audit record could not be written.
            Lookup::Withheld(w) => return Err(Refusal::busy(w.label(), w.message())),
            Lookup::Unknown if waited => {
                return Err(Refusal::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "signing_failed",
                    "signing failed on this server; upload again or use another host",
                ))
            }
            Lookup::Unknown => {
                return Err(Refusal::answer(
                    StatusCode::NOT_FOUND,
                    "unknown: upload the file first",
                ))
            }
            Lookup::Pending(mut rx) => {
                if waited || dynamic.long_poll.is_zero() {
                    return Err(Refusal::answer(
                        StatusCode::NOT_FOUND,
                        "pending: still being signed",
                    )
                    .with(header::HeaderName::from_static("x-pending"), "True"));
                }
                waited = true;
                let _ = tokio::time::timeout(dynamic.long_poll, rx.wait_for(|done| *done)).await;
            }
        }
    }
}

async fn serve_result(info: &ResultInfo) -> ApiResult {
    let file = tokio::fs::File::open(&info.path).await.map_err(|_| {
        Refusal::answer(
            StatusCode::NOT_FOUND,
            "unknown: the result has expired; upload again",
        )
    })?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        file,
        256 * 1024,
    ));
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(info.size));
    if let Some(i) = info.log_index {
        h.insert(
            header::HeaderName::from_static("x-log-index"),
            HeaderValue::from(i),
        );
    }
    for (name, v) in [
        ("x-sha1-digest", &info.sha1),
        ("x-sha256-digest", &info.sha256),
    ] {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(header::HeaderName::from_static(name), v);
        }
    }
    Ok(r)
}
