//! `GET /log/checkpoint` and `GET /log/tile/…`: the transparency log, read
//! only, behind the same door as `/health` (`allowed_ips`, no token).
//!
//! The checkpoint served is the last one whose batch was fully durable (kept
//! in memory). A tile path is parsed strictly (`formats::tlog::tile::Tile::parse`:
//! only the canonical spelling of a tile) and served only when the published
//! tree has that tile, so client text never becomes any other path, and
//! tiles written beyond the checkpoint are never served.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{ApiResult, Refusal};
use crate::state::AppState;

fn no_log() -> Refusal {
    Refusal::new(
        StatusCode::NOT_FOUND,
        "no_log",
        "this server keeps no transparency log",
    )
}

pub(super) async fn checkpoint(State(state): State<Arc<AppState>>) -> ApiResult {
    let log = state.queue.log().ok_or_else(no_log)?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            // Mutable: a few seconds at most in a cache.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        log.checkpoint().to_string(),
    )
        .into_response())
}

pub(super) async fn tile(
    State(state): State<Arc<AppState>>,
    Path(path): Path<String>,
) -> ApiResult {
    let log = state.queue.log().ok_or_else(no_log)?;
    let Some(bytes) = log.tile(&format!("tile/{path}")).await else {
        return Err(Refusal::answer(
            StatusCode::NOT_FOUND,
            "no such tile in the published log",
        ));
    };
    let r: Response = (
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            // Immutable: a published tile never changes.
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        bytes,
    )
        .into_response();
    Ok(r)
}
