//! Reading a multipart form's next event under the server's clocks
//! (`idle_timeout` between pieces, `form_timeout` for the fields), and the
//! refusal a form error becomes: shared by `upload.rs` (the fields) and
//! `ingest.rs` (the file part).

use axum::http::{header, StatusCode};
use futures_util::Stream;

use super::Refusal;
use crate::form::{Event, Form, FormError};
use crate::state::AppState;

/// The next form event, within `idle_timeout` of the last piece and, while
/// reading the fields, before `deadline` (with where they are: `before
/// filedata`, `after filedata`, for its 408).
pub(super) async fn next_event<S, E>(
    state: &AppState,
    form: &mut Form<S>,
    deadline: Option<(tokio::time::Instant, &str)>,
) -> Result<Event, Refusal>
where
    S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let idle_end = tokio::time::Instant::now() + state.idle_timeout;
    let (end, fields) = match deadline {
        Some((d, fields)) if d < idle_end => (d, Some(fields)),
        _ => (idle_end, None),
    };
    match (tokio::time::timeout_at(end, form.next()).await, fields) {
        (Ok(Ok(event)), _) => Ok(event),
        (Ok(Err(e)), _) => Err(form_refusal(e)),
        (Err(_), Some(fields)) => Err(Refusal::new(
            StatusCode::REQUEST_TIMEOUT,
            "form_timeout",
            format!(
                "the form fields {fields} took longer than {} s",
                state.form_timeout.as_secs()
            ),
        )
        .with(header::CONNECTION, "close")),
        (Err(_), None) => Err(Refusal::new(
            StatusCode::REQUEST_TIMEOUT,
            "idle_timeout",
            format!(
                "upload stalled: nothing received for {} s",
                state.idle_timeout.as_secs()
            ),
        )
        .with(header::CONNECTION, "close")),
    }
}

pub(super) fn form_refusal(e: FormError) -> Refusal {
    match e {
        FormError::HeadTooLong(_) => Refusal::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "part_header_too_long",
            e.to_string(),
        )
        .drained(),
        FormError::Malformed(_) => Refusal::bad("malformed_form", e.to_string()).drained(),
        FormError::Stream(_) => Refusal::bad(
            "upload_interrupted",
            format!("upload interrupted or malformed: {e}"),
        ),
    }
}
