//! `POST /sign/FORMAT`: the door checks on the form fields, then the file
//! (`ingest.rs`), then the job.
//!
//! An unauthenticated client holds as little as possible for as short as
//! possible: the form is read by our bounded reader (`crate::form`), the
//! fields before `filedata` must all arrive within `form_timeout`, the token
//! is checked the moment its field is complete, and a queue slot is taken
//! only once the token is valid.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use futures_util::{Stream, StreamExt as _};
use rand::RngCore;
use sha2::Digest;

use super::events::{form_refusal, next_event};
use super::ingest::{receive, storage_error, too_large};
use super::{now, ApiResult, Refusal};
use crate::auth;
use crate::form::{self, Event, Form};
use crate::queue::{Busy, Job, Slot, Submit, Upload};
use crate::state::{AppState, Peer};
use crate::store::is_hex_digest;

/// Longest value of a text field in the upload form.
const FIELD_LIMIT: usize = 4096;
/// Longest part header block.
const PART_HEAD_LIMIT: usize = 8 * 1024;
/// Most bytes of form before `filedata` (every byte: boundaries, padding,
/// part headers, values, parts not kept); also the slack for multipart
/// framing when checking Content-Length up front. The same after the file.
const FORM_LIMIT: u64 = 64 * 1024;
/// Most parts before `filedata` (our clients send at most six), and after it.
const MAX_PARTS: usize = 32;
/// Longest a refused upload is drained, and how much of it at most.
const LINGER_TIME: Duration = Duration::from_secs(5);
const LINGER_BYTES: u64 = 64 << 20;

/// The fields before `filedata`, checked as they complete.
#[derive(Default)]
struct Fields {
    token: Option<auth::Token>,
    slot: Option<Slot>,
    filename: Option<String>,
    sha1: Option<String>,
    sha256: Option<String>,
}

pub(super) async fn upload(
    State(state): State<Arc<AppState>>,
    Path(format): Path<String>,
    ext: axum::Extension<Peer>,
    req: Request,
) -> ApiResult {
    let peer = auth::canonical(ext.0 .0.ip());
    let dynamic = state.dynamic();
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let boundary = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(form::boundary);
    let body = req.into_body().into_data_stream();
    let Some(fmt) = dynamic.formats.get(&format) else {
        linger(body);
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "unknown_format",
            format!("unknown format {format:?}"),
        ));
    };
    let received = crate::metrics::BodyBytes::new(&state.metrics, &format);
    let body = received.count(body);
    if state.draining.load(Ordering::Relaxed) {
        linger(body);
        return Err(Refusal::busy(
            "draining",
            "server is shutting down; use another host",
        ));
    }
    let limit = fmt.max_filesize;
    if declared.is_some_and(|n| n > limit.saturating_add(FORM_LIMIT)) {
        return Err(too_large(limit, &format));
    }
    let Some(boundary) = boundary else {
        linger(body);
        return Err(Refusal::bad(
            "not_multipart",
            "expected a multipart/form-data upload (with a boundary)",
        ));
    };
    let limits = form::Limits {
        head: PART_HEAD_LIMIT,
    };
    let mut form = match Form::new(body, &boundary, limits) {
        Ok(f) => f,
        Err(e) => return Err(form_refusal(e)),
    };
    let result = async {
        let (fields, file_name) =
            read_fields(&state, &dynamic.security, peer, &format, &mut form).await?;
        check_fields(&dynamic.security, fields, file_name, peer)
    }
    .await;
    let (fields, token, slot, filename) = match result {
        Ok(checked) => checked,
        Err(refusal) => {
            if refusal.drain {
                linger(form.into_inner());
            }
            return Err(refusal);
        }
    };
    let got = receive(
        &state,
        &mut form,
        fmt,
        &format,
        fields.sha1.is_some(),
        declared,
    )
    .await?;
    let mut fields = fields;
    if fields.sha1.is_none() && fields.sha256.is_none() {
        fields.sha256 = Some(read_trailer(&state, &mut form).await?);
    }
    let upload = match got.file {
        Some(temp) => Upload::File(temp),
        None => Upload::Sha256State(Box::new(got.sha256.clone())),
    };
    let sec = &dynamic.security;
    if got.size < sec.min_filesize {
        return Err(Refusal::bad(
            "too_small",
            format!(
                "file too small: {} bytes, the minimum is {}",
                got.size, sec.min_filesize
            ),
        ));
    }
    let (sha1, sha256) = (
        got.sha1.map(|h| hex::encode(h.finalize())),
        hex::encode(got.sha256.finalize()),
    );
    for (name, given, got) in [
        ("sha1", &fields.sha1, sha1.as_ref()),
        ("sha256", &fields.sha256, Some(&sha256)),
    ] {
        if let (Some(given), Some(got)) = (given, got) {
            if given != got {
                return Err(Refusal::bad(
                    "hash_mismatch",
                    format!("{name} mismatch: the request says {given}, the bytes received hash to {got}"),
                ));
            }
        }
    }
    let job = Job {
        signer: fmt.signer.clone(),
        upload,
        sha1,
        request: crate::outcome::Signing {
            format: format.clone(),
            kind: fmt.config.kind.clone(),
            key_id: fmt.signer.log_key_id(),
            filename,
            peer,
            token_scope: token.scope(),
            token_id: token.chaff,
            input_sha256: sha256.clone(),
            digest: None,
            minted_by: token.minted_by,
        },
        rate: state.rates.turn(fmt.rate),
    };
    match state
        .queue
        .submit(job, slot)
        .map_err(|e| storage_error(&e))?
    {
        Submit::Queued => {}
        // Audited by the queue.
        Submit::Duplicate => {}
    }
    let mut nonce = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut nonce);
    Ok((
        StatusCode::ACCEPTED,
        [("X-Nonce", hex::encode(nonce))],
        format!("accepted {sha256}\n"),
    )
        .into_response())
}

/// Reads the fields up to `filedata`, acting on each as it completes;
/// returns them and the file part's own file name.
async fn read_fields<S, E>(
    state: &AppState,
    sec: &crate::config::SecurityConfig,
    peer: IpAddr,
    format: &str,
    form: &mut Form<S>,
) -> Result<(Fields, Option<String>), Refusal>
where
    S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let deadline = tokio::time::Instant::now() + state.form_timeout;
    let mut fields = Fields::default();
    let mut current: Option<(String, Vec<u8>)> = None;
    let mut parts = 0;
    loop {
        match next_event(state, form, Some((deadline, "before filedata"))).await? {
            Event::PartEnd => {
                if let Some((name, value)) = current.take() {
                    complete(state, sec, peer, format, &mut fields, &name, value)?;
                }
            }
            Event::Part(head) => {
                if head.name == "filedata" {
                    return Ok((fields, head.filename));
                }
                parts += 1;
                current = Some((head.name, Vec::new()));
            }
            Event::Data(piece) => append(&mut current, &piece).map_err(Refusal::drained)?,
            Event::End | Event::NeedMore => {
                if let Some((name, value)) = current.take() {
                    complete(state, sec, peer, format, &mut fields, &name, value)?;
                }
                return Err(
                    Refusal::bad("no_filedata", "no filedata field in the upload").drained(),
                );
            }
        }
        form_bounds(form.consumed(), parts, "before").map_err(Refusal::drained)?;
    }
}

/// Refuses a form whose part of `consumed` bytes and `parts` parts before
/// (or after) the file passes [`FORM_LIMIT`] or [`MAX_PARTS`].
fn form_bounds(consumed: u64, parts: usize, side: &str) -> Result<(), Refusal> {
    if consumed > FORM_LIMIT {
        return Err(Refusal::bad(
            "form_too_long",
            format!("the form {side} filedata passes {FORM_LIMIT} bytes"),
        ));
    }
    if parts > MAX_PARTS {
        return Err(Refusal::bad(
            "form_too_long",
            format!("the form has more than {MAX_PARTS} parts {side} filedata"),
        ));
    }
    Ok(())
}

/// Adds `piece` to the text field being read (none: a part not kept), within
/// [`FIELD_LIMIT`].
fn append(current: &mut Option<(String, Vec<u8>)>, piece: &[u8]) -> Result<(), Refusal> {
    let Some((name, value)) = current else {
        return Ok(());
    };
    if value.len() + piece.len() > FIELD_LIMIT {
        return Err(Refusal::bad(
            "field_too_long",
            format!("field {name} is longer than {FIELD_LIMIT} bytes"),
        ));
    }
    value.extend_from_slice(piece);
    Ok(())
}

/// Acts on a complete text field: the token is verified at once and, once
/// valid, takes a queue slot; the others are kept for [`check_fields`].
fn complete(
    state: &AppState,
    sec: &crate::config::SecurityConfig,
    peer: IpAddr,
    format: &str,
    fields: &mut Fields,
    name: &str,
    value: Vec<u8>,
) -> Result<(), Refusal> {
    let text = String::from_utf8(value).map_err(|_| {
        Refusal::bad("field_not_utf8", format!("field {name} is not UTF-8")).drained()
    })?;
    match name {
        "token" => {
            let token = verify_token(state, sec, peer, format, &text)?;
            if fields.slot.is_none() {
                // The place is taken once the token is valid and before the
                // file is read: a burst of uploads costs neither disk nor
                // bandwidth beyond `max_queue` of them, and uploads without
                // a valid token hold none.
                let slot = state
                    .queue
                    .reserve(peer)
                    .map_err(|b| queue_busy(b).drained())?;
                fields.slot = Some(slot);
            }
            fields.token = Some(token);
        }
        "filename" => fields.filename = Some(text),
        "sha1" => fields.sha1 = Some(text.trim().to_ascii_lowercase()),
        "sha256" => fields.sha256 = Some(text.trim().to_ascii_lowercase()),
        // `nonce` and anything else: ignored.
        _ => {}
    }
    Ok(())
}

/// `503` + `Retry-After` for a place [`crate::queue::Queue::reserve`] did not give.
pub(super) fn queue_busy(busy: Busy) -> Refusal {
    match busy {
        Busy::Full => Refusal::busy(
            "queue_full",
            "too much work queued; try again later or use another host",
        ),
        Busy::PeerShare => Refusal::busy(
            "peer_queue_share",
            "this address already holds its share of the queue (max_queue_per_peer); \
             try again once its uploads are done, or use another host",
        ),
    }
}

/// Checks a request's token: valid (MAC, time, bound to `peer`) and, when
/// scoped, allowed to sign with `format`. Every request that signs (upload or
/// digest) goes through here.
pub(super) fn verify_token(
    state: &AppState,
    sec: &crate::config::SecurityConfig,
    peer: IpAddr,
    format: &str,
    text: &str,
) -> Result<auth::Token, Refusal> {
    let token = auth::verify(text, &sec.token_secrets, peer, now()).map_err(|e| {
        state
            .metrics
            .inc("signing_token_rejections_total", &[("reason", e.label())]);
        Refusal::bad("token", e.to_string()).drained()
    })?;
    if !token.allows(format) {
        state
            .metrics
            .inc("signing_token_rejections_total", &[("reason", "scope")]);
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "token_scope",
            format!(
                "this token is limited to the formats {}; it may not sign with {format}",
                token.scope()
            ),
        )
        .drained());
    }
    if sec.approvers.contains_key(format) && !token.approved() {
        state
            .metrics
            .inc("signing_token_rejections_total", &[("reason", "approval")]);
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "token_not_approved",
            format!(
                "format {format} signs only with a token a second person approved \
                 (a scoped token from POST /token/approve); this one was not"
            ),
        )
        .drained());
    }
    Ok(token)
}

/// The checks that need every field: the token is there, the file name is
/// allowed, the hashes are well formed.
fn check_fields(
    sec: &crate::config::SecurityConfig,
    mut fields: Fields,
    file_name: Option<String>,
    peer: IpAddr,
) -> Result<(Fields, auth::Token, Slot, String), Refusal> {
    let (Some(token), Some(slot)) = (fields.token.take(), fields.slot.take()) else {
        // No token field: the same refusal as an empty one.
        let e = auth::verify("", &sec.token_secrets, peer, now())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "token missing".into());
        return Err(Refusal::bad("token", e).drained());
    };
    let filename = fields.filename.take().or(file_name).unwrap_or_default();
    check_filename(sec, &filename).map_err(Refusal::drained)?;
    for (name, hash, len) in [("sha1", &fields.sha1, 40), ("sha256", &fields.sha256, 64)] {
        if hash.as_ref().is_some_and(|h| !is_hex_digest(h, len)) {
            return Err(
                Refusal::bad("bad_hash", format!("{name} must be {len} hex digits")).drained(),
            );
        }
    }
    // No hash before the file: a `sha256` must follow it ([`read_trailer`]).
    Ok((fields, token, slot, filename))
}

/// The `sha256` field after `filedata`, for an upload that gave no hash
/// before it (a client that hashes while it sends: docs/PROTOCOL.md). The
/// rest of the form is bounded like the fields before the file (4 KiB a
/// field, 64 KiB in all, within `form_timeout`); other fields are ignored.
async fn read_trailer<S, E>(state: &AppState, form: &mut Form<S>) -> Result<String, Refusal>
where
    S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let no_hash = || Refusal::bad("no_hash", "sha1 or sha256 of the file is required");
    let deadline = tokio::time::Instant::now() + state.form_timeout;
    let mut current: Option<(String, Vec<u8>)> = None;
    let mut sha256: Option<Vec<u8>> = None;
    let start = form.consumed();
    let mut parts = 0;
    loop {
        match next_event(state, form, Some((deadline, "after filedata"))).await? {
            Event::Part(head) => {
                parts += 1;
                current = Some((head.name, Vec::new()));
            }
            Event::Data(piece) => append(&mut current, &piece)?,
            Event::PartEnd => {
                if let Some((name, value)) = current.take() {
                    if name == "sha256" {
                        sha256 = Some(value);
                    }
                }
            }
            Event::End | Event::NeedMore => break,
        }
        form_bounds(form.consumed() - start, parts, "after")?;
    }
    let text = sha256.ok_or_else(no_hash)?;
    let text = String::from_utf8(text)
        .map_err(|_| Refusal::bad("field_not_utf8", "field sha256 is not UTF-8"))?
        .trim()
        .to_ascii_lowercase();
    if !is_hex_digest(&text, 64) {
        return Err(Refusal::bad("bad_hash", "sha256 must be 64 hex digits"));
    }
    Ok(text)
}

/// The filename label wholly matches one of `allowed_filenames` (shared with `digest.rs`).
pub(super) fn check_filename(
    sec: &crate::config::SecurityConfig,
    filename: &str,
) -> Result<(), Refusal> {
    if filename.is_empty() || !sec.allowed_filenames.iter().any(|re| re.is_match(filename)) {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "filename_not_allowed",
            format!("filename {filename:?} is not allowed on this server"),
        ));
    }
    Ok(())
}

/// After a refusal before the body is read (unknown format, draining) or on
/// the form fields (bad token, filename),
/// reads and discards the rest of the body in the background, bounded in
/// time and bytes: closing a connection with unread data resets it, and the
/// client (still sending) would see a broken connection instead of our answer
/// and fail over instead of failing fast. The raw body is drained, not
/// parsed, so nothing of it is kept. A 413 is never drained: there the server
/// stops reading at once.
pub(super) fn linger<S, E>(mut body: S)
where
    S: Stream<Item = Result<bytes::Bytes, E>> + Unpin + Send + 'static,
    E: Send + 'static,
{
    tokio::spawn(async move {
        let drain = async {
            let mut seen = 0u64;
            while let Some(Ok(chunk)) = body.next().await {
                seen += chunk.len() as u64;
                if seen > LINGER_BYTES {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIME, drain).await;
    });
}
