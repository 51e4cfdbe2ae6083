//! [`Refusal`]: every answer that is not a success, with its status, the
//! reason label it is counted under in `signing_refused_requests_total`, and
//! a one-line message for the client. The door (`super::door`) logs the
//! message and counts the reason; the message is cleaned of control
//! characters and cut, so client-supplied bytes never reach a client or a
//! log line raw.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::clean::clean;

/// A refusal: status + reason label + one-line message (+ extra headers).
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    reason: Option<&'static str>,
    message: String,
    headers: Vec<(header::HeaderName, HeaderValue)>,
    /// Refused on the form fields, before the file was read: the rest of the
    /// upload is drained (see `upload::linger`) so the client reads this answer.
    pub(super) drain: bool,
}

/// What the door learns of a refusal, through the response's extensions.
#[derive(Debug, Clone)]
pub struct Refused {
    /// Metric label (`None`: an ordinary answer such as "pending", not counted).
    pub reason: Option<&'static str>,
    /// The message, as sent.
    pub message: String,
}

impl Refusal {
    /// A refusal counted under `reason`.
    pub fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            reason: Some(reason),
            message: clean(&message.into()),
            headers: Vec::new(),
            drain: false,
        }
    }

    /// A non-success answer that is part of the protocol's normal flow
    /// (a GET for a result not there yet): logged, not counted.
    pub fn answer(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal {
            reason: None,
            ..Refusal::new(status, "", message)
        }
    }

    /// `503` + `Retry-After: 5`: try another host.
    pub fn busy(reason: &'static str, message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::SERVICE_UNAVAILABLE, reason, message)
            .with(header::RETRY_AFTER, "5")
    }

    /// `400` on the form or its fields.
    pub fn bad(reason: &'static str, message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, reason, message)
    }

    /// Marks a refusal made before the file was read: the rest is drained.
    pub fn drained(mut self) -> Refusal {
        self.drain = true;
        self
    }

    /// Adds a header.
    pub fn with(mut self, name: header::HeaderName, value: &'static str) -> Refusal {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }

    /// Adds a header with a computed value.
    pub fn with_value(mut self, name: header::HeaderName, value: HeaderValue) -> Refusal {
        self.headers.push((name, value));
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", self.message),
        )
            .into_response();
        for (k, v) in self.headers {
            r.headers_mut().insert(k, v);
        }
        r.extensions_mut().insert(Refused {
            reason: self.reason,
            message: self.message,
        });
        r
    }
}
