//! A bounded, streaming reader of `multipart/form-data` bodies (RFC 7578).
//!
//! Ours rather than multer's because every byte an unauthenticated client
//! sends must be bounded while it streams: multer buffers a part header until
//! it ends, however long that is. Here a part header (and the preamble) may
//! be at most [`Limits::head`] bytes; a part's body is handed on in pieces as
//! it arrives, keeping back only what could be the start of the next
//! boundary, so the buffer never holds more than one head or one network
//! chunk plus a boundary. How large each text field may be is the caller's
//! business (it sees the pieces).
//!
//! [`Parser`] is the synchronous core (fed bytes, asked for events), which
//! the fuzz target drives directly; [`Form`] runs it over a body stream.

use std::fmt;

use bytes::{Buf as _, Bytes, BytesMut};
use futures_util::{Stream, StreamExt as _};

/// How much a client may make the reader buffer.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest part header block (and preamble before the first boundary).
    pub head: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { head: 8 * 1024 }
    }
}

/// Why a body is not an acceptable form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormError {
    /// A part header block (or the preamble) is longer than the limit.
    HeadTooLong(usize),
    /// Not multipart/form-data as RFC 7578 says; the text says how.
    Malformed(&'static str),
    /// The body stream failed (the client went away, or bad chunked framing).
    Stream(String),
}

impl fmt::Display for FormError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormError::HeadTooLong(n) => {
                write!(f, "a multipart part header is longer than {n} bytes")
            }
            FormError::Malformed(what) => write!(f, "malformed multipart body: {what}"),
            FormError::Stream(e) => write!(f, "upload interrupted: {e}"),
        }
    }
}

impl std::error::Error for FormError {}

/// The header of one part: its field name and, for a file, the file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartHead {
    /// `name` of `Content-Disposition: form-data`.
    pub name: String,
    /// `filename`, when given.
    pub filename: Option<String>,
}

/// What the reader found next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new part begins (the previous one, if any, is complete).
    Part(PartHead),
    /// More bytes of the current part's body.
    Data(Bytes),
    /// The current part's body is complete (its closing boundary was seen).
    PartEnd,
    /// The closing boundary: the form is complete.
    End,
    /// Nothing can be said before more bytes arrive ([`Parser`] only).
    NeedMore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first boundary.
    Preamble,
    /// Just after a boundary: `--` (the end) or a line break (a part) follows.
    AfterBoundary,
    /// Reading a part's header block.
    Head,
    /// Reading a part's body.
    Body,
    /// After the closing boundary: the rest is ignored.
    Done,
}

/// The push parser: [`Parser::push`] bytes, then call [`Parser::next`] until
/// it answers [`Event::NeedMore`].
#[derive(Debug)]
pub struct Parser {
    /// `\r\n--BOUNDARY`: what ends a part's body.
    delimiter: Vec<u8>,
    finder: memchr::memmem::Finder<'static>,
    buf: BytesMut,
    state: State,
    limits: Limits,
    /// Bytes of the body parsed so far (handed out or skipped).
    consumed: u64,
}

/// Longest boundary RFC 2046 allows.
const MAX_BOUNDARY: usize = 70;

impl Parser {
    /// A parser for parts separated by `boundary` (from the Content-Type).
    pub fn new(boundary: &str, limits: Limits) -> Result<Parser, FormError> {
        if boundary.is_empty() || boundary.len() > MAX_BOUNDARY {
            return Err(FormError::Malformed(
                "the boundary must be 1 to 70 characters",
            ));
        }
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        let finder = memchr::memmem::Finder::new(&delimiter).into_owned();
        // The first boundary has no line break before it: pretend it has one,
        // so one delimiter serves every boundary.
        let mut buf = BytesMut::with_capacity(16 * 1024);
        buf.extend_from_slice(b"\r\n");
        Ok(Parser {
            delimiter,
            finder,
            buf,
            state: State::Preamble,
            limits,
            consumed: 0,
        })
    }

    /// Hands the parser more of the body.
    pub fn push(&mut self, data: &[u8]) {
        if self.state != State::Done {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes held and not yet handed out.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Bytes of the body parsed so far: every byte of boundaries, padding,
    /// part headers and bodies up to the last event, whatever it was worth.
    pub fn consumed(&self) -> u64 {
        // Less the line break we put before the first boundary.
        self.consumed.saturating_sub(2)
    }

    /// Drops the first `n` bytes of the buffer, counting them.
    fn skip(&mut self, n: usize) {
        self.buf.advance(n);
        self.consumed += n as u64;
    }

    /// Takes the first `n` bytes of the buffer, counting them.
    fn take(&mut self, n: usize) -> Bytes {
        self.consumed += n as u64;
        self.buf.split_to(n).freeze()
    }

    /// The next event; `eof` says that no more bytes will come.
    pub fn next(&mut self, eof: bool) -> Result<Event, FormError> {
        loop {
            match self.state {
                State::Done => {
                    self.buf.clear();
                    return Ok(Event::End);
                }
                State::Preamble => match self.finder.find(&self.buf) {
                    // However the preamble arrived: in pieces or with its boundary.
                    Some(i) if i > self.limits.head + 2 => {
                        return Err(FormError::HeadTooLong(self.limits.head));
                    }
                    Some(i) => {
                        self.skip(i + self.delimiter.len());
                        self.state = State::AfterBoundary;
                    }
                    None => {
                        if self.buf.len() > self.limits.head + self.delimiter.len() {
                            return Err(FormError::HeadTooLong(self.limits.head));
                        }
                        return self.more(eof, "no boundary in the body");
                    }
                },
                State::AfterBoundary => {
                    // Transport padding (RFC 2046: spaces and tabs) may follow.
                    let pad = self
                        .buf
                        .iter()
                        .take_while(|b| **b == b' ' || **b == b'\t')
                        .count();
                    if pad > self.limits.head {
                        return Err(FormError::HeadTooLong(self.limits.head));
                    }
                    let rest = self.buf.get(pad..).unwrap_or_default();
                    if rest.len() < 2 {
                        return self.more(eof, "the body ends after a boundary");
                    }
                    if rest.starts_with(b"--") {
                        self.state = State::Done;
                    } else if rest.starts_with(b"\r\n") {
                        self.skip(pad + 2);
                        self.state = State::Head;
                    } else {
                        return Err(FormError::Malformed("a boundary is followed by other text"));
                    }
                }
                State::Head => {
                    // An empty header block is just its closing line break.
                    let end = if self.buf.starts_with(b"\r\n") {
                        Some((0, 2))
                    } else {
                        memchr::memmem::find(&self.buf, b"\r\n\r\n").map(|i| (i, i + 4))
                    };
                    let Some((head_len, consumed)) = end else {
                        if self.buf.len() > self.limits.head {
                            return Err(FormError::HeadTooLong(self.limits.head));
                        }
                        return self.more(eof, "the body ends inside a part header");
                    };
                    if head_len > self.limits.head {
                        return Err(FormError::HeadTooLong(self.limits.head));
                    }
                    let head = parse_head(self.buf.get(..head_len).unwrap_or_default())?;
                    self.skip(consumed);
                    self.state = State::Body;
                    return Ok(Event::Part(head));
                }
                State::Body => {
                    if let Some(i) = self.finder.find(&self.buf) {
                        if i > 0 {
                            return Ok(Event::Data(self.take(i)));
                        }
                        self.skip(self.delimiter.len());
                        self.state = State::AfterBoundary;
                        return Ok(Event::PartEnd);
                    }
                    // Hand out all but what could be the start of a delimiter.
                    let keep = self.partial_delimiter_len();
                    let give = self.buf.len() - keep;
                    if give > 0 {
                        return Ok(Event::Data(self.take(give)));
                    }
                    return self.more(eof, "the body ends inside a part");
                }
            }
        }
    }

    /// How many bytes at the end of the buffer could begin a delimiter.
    fn partial_delimiter_len(&self) -> usize {
        let max = (self.delimiter.len() - 1).min(self.buf.len());
        (1..=max)
            .rev()
            .find(|n| {
                self.buf
                    .get(self.buf.len() - n..)
                    .is_some_and(|tail| self.delimiter.starts_with(tail))
            })
            .unwrap_or(0)
    }

    fn more(&self, eof: bool, truncated: &'static str) -> Result<Event, FormError> {
        if eof {
            Err(FormError::Malformed(truncated))
        } else {
            Ok(Event::NeedMore)
        }
    }
}

/// Reads a part's header block: `Content-Disposition: form-data; name=…`
/// is required; other headers (Content-Type…) are ignored.
fn parse_head(block: &[u8]) -> Result<PartHead, FormError> {
    let text = std::str::from_utf8(block)
        .map_err(|_| FormError::Malformed("a part header is not UTF-8"))?;
    let mut head = None;
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(FormError::Malformed("a part header line has no colon"));
        };
        if name.trim().eq_ignore_ascii_case("content-disposition") {
            if head.is_some() {
                return Err(FormError::Malformed(
                    "a part has two Content-Disposition headers",
                ));
            }
            head = Some(parse_disposition(value)?);
        }
    }
    head.ok_or(FormError::Malformed(
        "a part has no Content-Disposition header",
    ))
}

/// `form-data; name="x"; filename="y"` (quoted strings may escape with `\`).
fn parse_disposition(value: &str) -> Result<PartHead, FormError> {
    let mut params = split_params(value).into_iter();
    let kind = params.next().unwrap_or_default();
    if !kind.trim().eq_ignore_ascii_case("form-data") {
        return Err(FormError::Malformed("a part is not form-data"));
    }
    let (mut name, mut filename) = (None, None);
    for p in params {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        let v = unquote(v.trim());
        match k.trim().to_ascii_lowercase().as_str() {
            "name" => name = Some(v),
            "filename" => filename = Some(v),
            _ => {}
        }
    }
    let name = name.ok_or(FormError::Malformed("a part has no name"))?;
    Ok(PartHead { name, filename })
}

/// Splits on `;` outside quoted strings.
fn split_params(value: &str) -> Vec<String> {
    let (mut out, mut cur) = (Vec::new(), String::new());
    let (mut quoted, mut escaped) = (false, false);
    for c in value.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out
}

fn unquote(v: &str) -> String {
    let Some(inner) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return v.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// The boundary of a `multipart/form-data` Content-Type, if it is one.
pub fn boundary(content_type: &str) -> Option<String> {
    let mut params = split_params(content_type).into_iter();
    let kind = params.next()?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| unquote(v.trim()))
    })
}

/// A [`Parser`] over a body stream.
pub struct Form<S> {
    stream: S,
    parser: Parser,
    eof: bool,
}

impl<S, E> Form<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: fmt::Display,
{
    /// Reads the form in `stream`, whose parts `boundary` separates.
    pub fn new(stream: S, boundary: &str, limits: Limits) -> Result<Form<S>, FormError> {
        Ok(Form {
            stream,
            parser: Parser::new(boundary, limits)?,
            eof: false,
        })
    }

    /// The next event (never [`Event::NeedMore`]).
    pub async fn next(&mut self) -> Result<Event, FormError> {
        loop {
            match self.parser.next(self.eof)? {
                Event::NeedMore => match self.stream.next().await {
                    Some(Ok(chunk)) => self.parser.push(&chunk),
                    Some(Err(e)) => return Err(FormError::Stream(e.to_string())),
                    None => self.eof = true,
                },
                event => return Ok(event),
            }
        }
    }

    /// Bytes of the body parsed so far ([`Parser::consumed`]).
    pub fn consumed(&self) -> u64 {
        self.parser.consumed()
    }

    /// The body stream, for draining what is left unparsed.
    pub fn into_inner(self) -> S {
        self.stream
    }
}

#[cfg(test)]
mod tests;
