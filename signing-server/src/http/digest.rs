//! `POST /digest/FORMAT`: digest signing (issue 16). The client sends what
//! the format's signature covers (a SHA-256 state for gpg, a digest for mar,
//! the hash of a PE, an MSI or a cabinet for authenticode), never the file, and gets the signature
//! material back at once.
//!
//! Authorised exactly as an upload: the door's `allowed_ips`, the same token
//! check (`upload::verify_token`), the same filename rule
//! (`upload::check_filename`), and a queue place while it signs; signed by
//! the queue ([`crate::queue::Queue::sign_digest`]), within `concurrency`,
//! like every job. Only for a
//! format whose config says `digest_signing = yes` and whose signer can
//! (`Signer::digest_spec`). The body is a small urlencoded form, bounded in
//! size ([`BODY_LIMIT`], enforced while it is read) and time (`form_timeout`).
//! Every signing is logged in the transparency log (with `[log]`), audited
//! (format, digest, filename label, token id) and counted in
//! `signing_digest_signatures_total{format,outcome}` before the 200
//! ([`crate::outcome::settle`]); a signature whose entry or record cannot be
//! written is not sent (503).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use futures_util::StreamExt as _;

use super::upload::{check_filename, verify_token};
use super::{ApiResult, Refusal};
use crate::auth;
use crate::outcome::{Ended, Signing};
use crate::queue::SignedDigest;
use crate::state::{AppState, FormatEntry, Peer};
use formats::digest_signing::{DigestInput, DigestSpec, Sha256State};

/// Largest request body: a token, a label and a digest fit many times over.
pub const BODY_LIMIT: usize = 16 * 1024;

/// Whether `fmt` may be signed by digest now, and how: `digest_signing = yes`
/// and a signer that can. For /health and the handler.
pub fn spec(fmt: &FormatEntry) -> Option<DigestSpec> {
    if fmt.digest_signing {
        fmt.signer.digest_spec()
    } else {
        None
    }
}

pub(super) async fn sign_digest(
    State(state): State<Arc<AppState>>,
    Path(format): Path<String>,
    ext: axum::Extension<Peer>,
    req: Request,
) -> ApiResult {
    let peer = auth::canonical(ext.0 .0.ip());
    let dynamic = state.dynamic();
    let Some(fmt) = dynamic.formats.get(&format) else {
        super::upload::linger(req.into_body().into_data_stream());
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "unknown_format",
            format!("unknown format {format:?}"),
        ));
    };
    if state.draining.load(Ordering::Relaxed) {
        super::upload::linger(req.into_body().into_data_stream());
        return Err(Refusal::busy(
            "draining",
            "server is shutting down; use another host",
        ));
    }
    let Some(spec) = spec(fmt) else {
        super::upload::linger(req.into_body().into_data_stream());
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "digest_not_allowed",
            format!("format {format} does not allow digest signing here: upload the file"),
        ));
    };
    let fields = read_form(&state, &format, req).await?;
    let field = |name: &str| field(&fields, name);
    let sec = &dynamic.security;
    let token = verify_token(&state, sec, peer, &format, field("token").unwrap_or(""))?;
    let slot = state
        .queue
        .reserve(peer)
        .map_err(super::upload::queue_busy)?;
    let filename = field("filename").unwrap_or("").to_string();
    check_filename(sec, &filename)?;
    let input = parse_input(spec, &fields).map_err(|m| Refusal::bad("bad_digest", m))?;
    let digest_hex = input.audit_digest();
    if let Some(limit) = fmt.rate {
        state.rates.try_take(&format, limit).map_err(|wait| {
            Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "format {format} is at its max_rate here; ask again in {} s",
                    wait.as_secs()
                ),
            )
            .with_value(header::RETRY_AFTER, wait.as_secs().into())
        })?;
    }
    let request = Signing {
        format: format.clone(),
        kind: fmt.config.kind.clone(),
        key_id: fmt.signer.log_key_id(),
        // gpg's SHA-256 state is the file's; the others' digests are not.
        input_sha256: match spec {
            DigestSpec::Sha256State => digest_hex.clone(),
            DigestSpec::Mar { .. } | DigestSpec::Authenticode { .. } => String::new(),
        },
        digest: Some(digest_hex),
        filename: filename.clone(),
        peer,
        token_scope: token.scope(),
        token_id: token.chaff,
        minted_by: token.minted_by,
    };
    let public_key = fmt.signer.public_key_der();
    let ctx = formats::SignContext {
        filename,
        scratch: None,
    };
    let result = state
        .queue
        .sign_digest(fmt.signer.clone(), input, ctx, &request, slot)
        .await;
    answer(result, public_key)
}

/// Reads the urlencoded body: at most [`BODY_LIMIT`] bytes (by its
/// Content-Length up front, and while reading), all within `form_timeout`.
async fn read_form(
    state: &AppState,
    format: &str,
    req: Request,
) -> Result<Vec<(String, String)>, Refusal> {
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("a digest-signing request is at most {BODY_LIMIT} bytes"),
        )
        .with(header::CONNECTION, "close")
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(too_large());
    }
    let urlencoded = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').next().is_some_and(|t| {
                t.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    let received = crate::metrics::BodyBytes::new(&state.metrics, format);
    let mut body = received.count(req.into_body().into_data_stream());
    let read = async {
        let mut buf = Vec::new();
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(|e| {
                Refusal::bad(
                    "upload_interrupted",
                    format!("request body interrupted: {e}"),
                )
            })?;
            if buf.len() + piece.len() > BODY_LIMIT {
                return Err(too_large());
            }
            buf.extend_from_slice(&piece);
        }
        Ok(buf)
    };
    let bytes = match tokio::time::timeout(state.form_timeout, read).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(Refusal::new(
                StatusCode::REQUEST_TIMEOUT,
                "form_timeout",
                format!(
                    "the request body took longer than {} s",
                    state.form_timeout.as_secs()
                ),
            )
            .with(header::CONNECTION, "close"))
        }
    };
    if !urlencoded {
        return Err(Refusal::bad(
            "malformed_form",
            "expected an application/x-www-form-urlencoded body",
        ));
    }
    serde_urlencoded::from_bytes(&bytes).map_err(|_| {
        Refusal::bad(
            "malformed_form",
            "the body is not application/x-www-form-urlencoded",
        )
    })
}

/// The digest fields for `spec`: `digest` (hex) and for authenticode
/// `container` (`pe`, the default, `msi` or `cab`), or `sha256_state` (hex of
/// the 8 words), `length` (bytes hashed) and `tail` (hex, `length % 64` bytes).
fn parse_input(spec: DigestSpec, fields: &[(String, String)]) -> Result<DigestInput, String> {
    let field = |name: &str| field(fields, name);
    let container = field("container").map(str::trim);
    if container.is_some() && spec.containers().is_none() {
        return Err("container is for authenticode formats only".into());
    }
    let hex_field = |name: &str| -> Result<Vec<u8>, String> {
        let v = field(name).ok_or_else(|| format!("{name} missing"))?;
        hex::decode(v.trim()).map_err(|_| format!("{name} is not hex"))
    };
    let input = match spec {
        DigestSpec::Sha256State => {
            let words = hex_field("sha256_state")?;
            let length: u64 = field("length")
                .ok_or("length missing")?
                .trim()
                .parse()
                .map_err(|_| "length is not a number of bytes".to_string())?;
            let tail = match field("tail") {
                Some(_) => hex_field("tail")?,
                None => Vec::new(),
            };
            DigestInput::Sha256State(Sha256State::from_parts(&words, length, &tail)?)
        }
        DigestSpec::Mar { .. } | DigestSpec::Authenticode { .. } => {
            DigestInput::for_container(spec, container, hex_field("digest")?)?
        }
    };
    input.check(spec)?;
    Ok(input)
}

/// The first value of the form field `name`.
fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The answer to a digest signing, from how it ended (audited and counted
/// by the queue).
fn answer(result: Result<SignedDigest, Ended>, public_key: Option<Vec<u8>>) -> ApiResult {
    match result {
        Ok(SignedDigest {
            signature: sig,
            sha256,
            log_index,
        }) => {
            use base64::Engine as _;
            let mut r = (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                    (header::HeaderName::from_static("x-sha256-digest"), sha256),
                ],
                sig,
            )
                .into_response();
            if let Some(i) = log_index {
                r.headers_mut().insert(
                    header::HeaderName::from_static("x-log-index"),
                    header::HeaderValue::from(i),
                );
            }
            if let Some(der) = public_key {
                let b64 = base64::engine::general_purpose::STANDARD.encode(der);
                if let Ok(v) = header::HeaderValue::from_str(&b64) {
                    r.headers_mut()
                        .insert(header::HeaderName::from_static("x-public-key"), v);
                }
            }
            Ok(r)
        }
        Err(Ended::Rejected(m)) => Err(Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "rejected",
            m,
        )),
        // Signed, but its log entry or audit record could not be written.
        Err(Ended::Withheld(w)) => Err(Refusal::busy(w.label(), w.message())),
        Err(Ended::Unavailable(_)) => Err(Refusal::busy(
            "token_unavailable",
            "the format's key is unavailable here (its token failed); use another host",
        )),
        Err(Ended::Failed(_) | Ended::Signed(_)) => Err(Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "sign_failed",
            "signing failed on this server; use another host",
        )),
    }
}
