//! Routes → handlers. The wire contract is docs/PROTOCOL.md.
//!
//! **API boundary:** this is the only module that knows HTTP. Every refusal
//! is an [`ApiError`]: a status and a one-line, secret-free message for the
//! client; details go to the log.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::multipart::{Field, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Multipart, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use formats::Signer;
use rand::RngCore;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use tracing::Instrument as _;

use crate::auth;
use crate::config::SecurityConfig;
use crate::metrics::Metrics;
use crate::queue::{Job, Lookup, Queue, ResultInfo, Slot, Submit, Upload};
use crate::store::{is_hex_digest, Store, TempPath};

/// The TCP peer of the connection a request came on (set per connection).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// One servable format.
pub struct FormatEntry {
    /// Its unlocked signer.
    pub signer: Arc<dyn Signer>,
    /// Largest accepted upload.
    pub max_filesize: u64,
    /// The settings the signer was opened with (to tell, on reload, whether it still fits).
    pub config: formats::FormatConfig,
    /// sha256 of the key file when it was unlocked.
    pub key_digest: String,
}

/// The part of the configuration that SIGHUP replaces, swapped as a whole.
pub struct Dynamic {
    /// `[security]`.
    pub security: SecurityConfig,
    /// Formats by name.
    pub formats: HashMap<String, Arc<FormatEntry>>,
    /// Format names in config order (for /health).
    pub format_names: Vec<String>,
    /// GET long-poll duration.
    pub long_poll: Duration,
    /// Unused results are removed after this long.
    pub max_file_age: Duration,
    /// How often cleanup runs.
    pub cleanup_interval: Duration,
}

/// Everything handlers share.
pub struct AppState {
    /// The reloadable configuration.
    pub dynamic: RwLock<Arc<Dynamic>>,
    /// The job queue.
    pub queue: Arc<Queue>,
    /// File storage.
    pub store: Store,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Longest silence between two pieces of an upload.
    pub idle_timeout: Duration,
    /// Start time.
    pub started: Instant,
    /// Set on SIGTERM: new uploads are refused, /health says `draining`.
    pub draining: AtomicBool,
}

impl AppState {
    /// The configuration in force now (a snapshot: a reload does not change it under a request).
    pub fn dynamic(&self) -> Arc<Dynamic> {
        self.dynamic
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts a new configuration in force.
    pub fn replace_dynamic(&self, d: Dynamic) {
        *self.dynamic.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(d);
    }
}

/// A refusal: status + one-line message (+ extra headers).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    headers: Vec<(header::HeaderName, HeaderValue)>,
    /// Refused on the form fields, before the file was read: the rest of the
    /// upload may be drained (see [`linger`]) so the client reads this answer.
    refused_before_reading: bool,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            headers: Vec::new(),
            refused_before_reading: false,
        }
    }

    fn before_reading(mut self) -> ApiError {
        self.refused_before_reading = true;
        self
    }

    fn with(mut self, name: header::HeaderName, value: &'static str) -> ApiError {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }

    fn busy(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).with(header::RETRY_AFTER, "5")
    }
}

impl IntoResponse for ApiError {
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
        r
    }
}

type ApiResult = Result<Response, ApiError>;

/// The application: routes and door checks.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/token", post(mint_token))
        .route("/sign/{format}", post(upload))
        .route("/sign/{format}/{hash}", get(fetch))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        // Limits are enforced while streaming, per format; see `upload`.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(state.clone(), door))
        .with_state(state)
}

/// Every request: a request id (in every log line of the request, and in the
/// `X-Request-Id` response header), the peer IP against `allowed_ips`, then one log line.
async fn door(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<Peer>()
        .map(|p| auth::canonical(p.0.ip()));
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
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
        state.metrics.inc(
            "signing_refused_requests_total",
            "reason=\"ip_not_allowed\"".into(),
        );
        ApiError::new(StatusCode::FORBIDDEN, "your IP address is not allowed").into_response()
    };
    span.in_scope(|| {
        tracing::info!(%method, %path, status = response.status().as_u16(), ms = started.elapsed().as_millis() as u64, "request")
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert(header::HeaderName::from_static("x-request-id"), v);
    }
    response
}

fn peer_ip(headers_ext: &axum::http::Extensions) -> Result<IpAddr, ApiError> {
    headers_ext
        .get::<Peer>()
        .map(|p| auth::canonical(p.0.ip()))
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "peer address unknown"))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Largest form body accepted by POST /token.
const TOKEN_FORM_LIMIT: usize = 4096;

async fn mint_token(State(state): State<Arc<AppState>>, req: Request) -> ApiResult {
    let dynamic = state.dynamic();
    let sec = &dynamic.security;
    let peer = peer_ip(req.extensions())?;
    if !auth::ip_allowed(&sec.new_token_allowed_ips, peer) {
        state
            .metrics
            .inc("signing_token_mint_refused_total", "reason=\"ip\"".into());
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "minting tokens is not allowed from your IP address",
        ));
    }
    let authz = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(user) = auth::check_basic(authz, &sec.new_token_auth) else {
        state.metrics.inc(
            "signing_token_mint_refused_total",
            "reason=\"credentials\"".into(),
        );
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad or missing credentials (HTTP Basic user:password)",
        )
        .with(header::WWW_AUTHENTICATE, "Basic realm=\"signing-server\""));
    };
    let body = axum::body::to_bytes(req.into_body(), TOKEN_FORM_LIMIT)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("form body missing or larger than {TOKEN_FORM_LIMIT} bytes"),
            )
        })?;
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "body is not application/x-www-form-urlencoded",
        )
    })?;
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim());
    let ip: IpAddr = field("slave_ip")
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "slave_ip missing (the build machine's IP address)",
            )
        })?
        .parse()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "slave_ip is not an IP address"))?;
    let duration: u64 = field("duration")
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "duration missing (seconds)"))?
        .parse()
        .map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "duration is not a whole number of seconds",
            )
        })?;
    if duration < 1 || duration > sec.max_token_age {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "duration must be between 1 and {} seconds",
                sec.max_token_age
            ),
        ));
    }
    let from = now();
    let token = auth::mint(&sec.token_secrets[0], ip, from, from + duration);
    state
        .metrics
        .inc("signing_tokens_minted_total", String::new());
    tracing::info!(%user, slave_ip = %ip, duration, "token minted");
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain")],
        token,
    )
        .into_response())
}

/// Longest value of a text field in the upload form.
const FIELD_LIMIT: usize = 4096;
/// Slack for multipart framing when checking Content-Length up front.
const MULTIPART_OVERHEAD: u64 = 64 * 1024;

/// Awaits one read of an upload, cutting off a client silent for `idle_timeout`.
async fn idle<T>(
    state: &AppState,
    read: impl std::future::Future<Output = T>,
) -> Result<T, ApiError> {
    tokio::time::timeout(state.idle_timeout, read)
        .await
        .map_err(|_| {
            state.metrics.inc(
                "signing_refused_requests_total",
                "reason=\"idle_timeout\"".into(),
            );
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "upload stalled: nothing received for {} s",
                    state.idle_timeout.as_secs()
                ),
            )
            .with(header::CONNECTION, "close")
        })
}

async fn read_text(
    state: &AppState,
    field: &mut Field<'_>,
    name: &str,
) -> Result<String, ApiError> {
    let mut buf = Vec::new();
    while let Some(chunk) = idle(state, field.chunk())
        .await?
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("malformed upload: {e}")))?
    {
        if buf.len() + chunk.len() > FIELD_LIMIT {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("field {name} is longer than {FIELD_LIMIT} bytes"),
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    String::from_utf8(buf).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("field {name} is not UTF-8"),
        )
    })
}

#[derive(Default)]
struct UploadForm {
    token: Option<String>,
    filename: Option<String>,
    sha1: Option<String>,
    sha256: Option<String>,
    /// The request's Content-Length, when it gave one.
    declared: Option<u64>,
}

async fn upload(
    State(state): State<Arc<AppState>>,
    Path(format): Path<String>,
    ext: axum::Extension<Peer>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult {
    let peer = auth::canonical(ext.0 .0.ip());
    let dynamic = state.dynamic();
    let Some(fmt) = dynamic.formats.get(&format) else {
        if let Ok(m) = multipart {
            linger(m);
        }
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("unknown format {format:?}"),
        ));
    };
    if state.draining.load(Ordering::Relaxed) {
        return Err(ApiError::busy("server is shutting down; use another host"));
    }
    let limit = fmt.max_filesize;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit.saturating_add(MULTIPART_OVERHEAD)) {
        return Err(too_large(limit, &format));
    }
    // The place is taken before the body is read, so a burst of uploads
    // costs neither disk nor bandwidth beyond `max_queue` of them.
    let Some(slot) = state.queue.reserve() else {
        state.metrics.inc(
            "signing_refused_requests_total",
            "reason=\"queue_full\"".into(),
        );
        return Err(ApiError::busy(
            "too much work queued; try again later or use another host",
        ));
    };
    let mut multipart = multipart.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("expected a multipart/form-data upload: {e}"),
        )
    })?;

    let mut form = UploadForm {
        declared,
        ..UploadForm::default()
    };
    loop {
        let Some(mut field) = idle(&state, multipart.next_field()).await?.map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, format!("malformed upload: {e}"))
        })?
        else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "no filedata field in the upload",
            ));
        };
        let name = field.name().unwrap_or("").to_string();
        match name.as_str() {
            "token" => form.token = Some(read_text(&state, &mut field, "token").await?),
            "filename" => form.filename = Some(read_text(&state, &mut field, "filename").await?),
            "sha1" => {
                form.sha1 = Some(
                    read_text(&state, &mut field, "sha1")
                        .await?
                        .trim()
                        .to_ascii_lowercase(),
                )
            }
            "sha256" => {
                form.sha256 = Some(
                    read_text(&state, &mut field, "sha256")
                        .await?
                        .trim()
                        .to_ascii_lowercase(),
                )
            }
            "filedata" => {
                let result = receive_file(
                    &state,
                    &dynamic.security,
                    &format,
                    fmt,
                    peer,
                    form,
                    field,
                    slot,
                )
                .await;
                if let Err(e) = &result {
                    if e.refused_before_reading {
                        linger(multipart);
                    }
                }
                return result;
            }
            // `nonce` and anything else: read (bounded) and ignored.
            _ => {
                read_text(&state, &mut field, &name).await?;
            }
        }
    }
}

/// Longest a refused upload is drained, and how much of it at most.
const LINGER_TIME: Duration = Duration::from_secs(5);
const LINGER_BYTES: u64 = 64 << 20;

/// After a refusal on the form fields (bad token, filename, unknown format),
/// reads and discards the rest of the upload in the background, bounded in
/// time and bytes: closing a connection with unread data resets it, and the
/// client (still sending) would see a broken connection instead of our answer
/// and fail over instead of failing fast. Nothing read here is kept. A 413 is
/// never drained: there the server stops reading at once.
fn linger(mut multipart: Multipart) {
    tokio::spawn(async move {
        let drain = async {
            let mut seen = 0u64;
            while let Ok(Some(mut field)) = multipart.next_field().await {
                while let Ok(Some(chunk)) = field.chunk().await {
                    seen += chunk.len() as u64;
                    if seen > LINGER_BYTES {
                        return;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIME, drain).await;
    });
}

fn too_large(limit: u64, format: &str) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("file too large: the limit for format {format} is {limit} bytes"),
    )
    .with(header::CONNECTION, "close")
}

/// The door checks that need the text fields, then the file itself.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
async fn receive_file(
    state: &AppState,
    sec: &SecurityConfig,
    format: &str,
    fmt: &FormatEntry,
    peer: IpAddr,
    form: UploadForm,
    mut field: Field<'_>,
    slot: Slot,
) -> ApiResult {
    let token = auth::verify(
        form.token.as_deref().unwrap_or(""),
        &sec.token_secrets,
        peer,
        now(),
    )
    .map_err(|e| {
        state.metrics.inc(
            "signing_token_rejections_total",
            format!("reason=\"{}\"", e.label()),
        );
        ApiError::new(StatusCode::BAD_REQUEST, e.to_string()).before_reading()
    })?;
    let filename = form
        .filename
        .or_else(|| field.file_name().map(str::to_string))
        .unwrap_or_default();
    if filename.is_empty()
        || !sec
            .allowed_filenames
            .iter()
            .any(|re| re.is_match(&filename))
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("filename {filename:?} is not allowed on this server"),
        )
        .before_reading());
    }
    if let Some(h) = &form.sha1 {
        if !is_hex_digest(h, 40) {
            return Err(
                ApiError::new(StatusCode::BAD_REQUEST, "sha1 must be 40 hex digits")
                    .before_reading(),
            );
        }
    }
    if let Some(h) = &form.sha256 {
        if !is_hex_digest(h, 64) {
            return Err(
                ApiError::new(StatusCode::BAD_REQUEST, "sha256 must be 64 hex digits")
                    .before_reading(),
            );
        }
    }
    if form.sha1.is_none() && form.sha256.is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "sha1 or sha256 of the file is required",
        )
        .before_reading());
    }

    // The async task reads, decrypts and parses; a blocking thread hashes and
    // writes what it receives through a short bounded channel (at most
    // SINK_DEPTH chunks in flight), so hashing runs beside the TLS work
    // instead of after it. The size limit is checked per chunk, before the
    // chunk is handed over. A signer that signs from the SHA-256 state (gpg)
    // needs no file: the upload is hashed once and nothing of it is written.
    // SHA-1 is computed only when the client gave one (old clients then ask
    // for the result by it).
    let temp = (!fmt.signer.signs_sha256_state()).then(|| state.store.temp_path("upload"));
    let sink = Sink::new(form.sha1.is_some(), temp);
    // A small upload (by its Content-Length) is hashed and written in this
    // task: a thread hand-off per chunk would cost more than the work.
    let mut feed = if form.declared.is_some_and(|n| n <= INLINE_UPLOAD) {
        Feed::Inline(Box::new(sink.map_err(|e| storage_error(&e))?))
    } else {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<axum::body::Bytes>(SINK_DEPTH);
        let worker = tokio::task::spawn_blocking(move || {
            let mut sink = sink?;
            while let Some(chunk) = rx.blocking_recv() {
                sink.feed(&chunk)?;
            }
            sink.finish()
        });
        Feed::Worker(tx, worker)
    };
    let received = async {
        let mut size: u64 = 0;
        loop {
            let chunk = match idle(state, field.chunk()).await? {
                Ok(Some(c)) => c,
                Ok(None) => return Ok(size),
                Err(e) => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("upload interrupted or malformed: {e}"),
                    ))
                }
            };
            size += chunk.len() as u64;
            state
                .metrics
                .upload_bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            if size > fmt.max_filesize {
                return Err(too_large(fmt.max_filesize, format));
            }
            match &mut feed {
                Feed::Inline(sink) => sink.feed(&chunk).map_err(|e| storage_error(&e))?,
                Feed::Worker(tx, _) => {
                    if tx.send(chunk).await.is_err() {
                        // The writer stopped on an error: it is reported below.
                        return Ok(size);
                    }
                }
            }
        }
    }
    .await;
    // Always finish the writer (wait for the thread), so a refused upload's
    // temp file is gone before the answer leaves.
    let sunk = match feed {
        Feed::Inline(sink) => sink.finish().map_err(|e| storage_error(&e)),
        Feed::Worker(tx, worker) => {
            drop(tx);
            match worker.await {
                Ok(done) => done.map_err(|e| storage_error(&e)),
                Err(e) => Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("upload writer failed: {e}"),
                )),
            }
        }
    };
    let size = received?;
    let (h1, h256, temp) = sunk?;
    let upload = match temp {
        Some(temp) => Upload::File(temp),
        None => Upload::Sha256State(Box::new(h256.clone())),
    };
    if size < sec.min_filesize {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "file too small: {size} bytes, the minimum is {}",
                sec.min_filesize
            ),
        ));
    }
    let (sha1, sha256) = (
        h1.map(|h| hex::encode(h.finalize())),
        hex::encode(h256.finalize()),
    );
    for (name, given, got) in [
        ("sha1", &form.sha1, sha1.as_ref()),
        ("sha256", &form.sha256, Some(&sha256)),
    ] {
        if let (Some(given), Some(got)) = (given, got) {
            if given != got {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("{name} mismatch: the request says {given}, the bytes received hash to {got}"),
                ));
            }
        }
    }
    let job = Job {
        format: format.to_string(),
        signer: fmt.signer.clone(),
        upload,
        sha1,
        sha256: sha256.clone(),
        filename,
        peer,
        token_id: token.chaff,
    };
    match state
        .queue
        .submit(job, slot)
        .map_err(|e| storage_error(&e))?
    {
        Submit::Queued => {}
        Submit::Duplicate => {
            tracing::debug!(input_sha256 = %sha256, "already signed or pending: not signed again")
        }
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

/// Chunks of an upload in flight between the reading task and its writer.
const SINK_DEPTH: usize = 8;
/// Uploads up to this size (declared) are hashed and written inline.
const INLINE_UPLOAD: u64 = 1 << 20;

/// What [`Sink::finish`] hands back: the hashes (not finalized) and the
/// complete temp file, if any.
type Sunk = (Option<Sha1>, Sha256, Option<TempPath>);

/// Where the receiving loop hands each chunk of an upload.
enum Feed {
    /// Hashed and written in the receiving task (small uploads).
    Inline(Box<Sink>),
    /// Sent to a blocking thread that hashes and writes (large uploads).
    Worker(
        tokio::sync::mpsc::Sender<axum::body::Bytes>,
        tokio::task::JoinHandle<std::io::Result<Sunk>>,
    ),
}

/// Where an upload's bytes go: the hashes, and the temp file when the
/// signer needs one.
struct Sink {
    h1: Option<Sha1>,
    h256: Sha256,
    file: Option<(TempPath, std::io::BufWriter<std::fs::File>)>,
}

impl Sink {
    fn new(sha1: bool, temp: Option<TempPath>) -> std::io::Result<Sink> {
        let file = match temp {
            Some(t) => {
                let f = std::fs::File::create(t.path())?;
                Some((t, std::io::BufWriter::with_capacity(256 * 1024, f)))
            }
            None => None,
        };
        Ok(Sink {
            h1: sha1.then(Sha1::new),
            h256: Sha256::new(),
            file,
        })
    }

    fn feed(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        if let Some(h1) = &mut self.h1 {
            h1.update(chunk);
        }
        self.h256.update(chunk);
        match &mut self.file {
            Some((_, w)) => std::io::Write::write_all(w, chunk),
            None => Ok(()),
        }
    }

    /// The hashes (not finalized) and the complete temp file, if any.
    fn finish(self) -> std::io::Result<Sunk> {
        let temp = match self.file {
            Some((t, mut w)) => {
                std::io::Write::flush(&mut w)?;
                Some(t)
            }
            None => None,
        };
        Ok((self.h1, self.h256, temp))
    }
}

fn storage_error(e: &std::io::Error) -> ApiError {
    tracing::error!("storage error: {e}");
    if e.raw_os_error() == Some(28) {
        // ENOSPC
        return ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "server out of disk space; use another host",
        )
        .with(header::RETRY_AFTER, "30");
    }
    ApiError::busy("server storage error; use another host")
}

async fn fetch(
    State(state): State<Arc<AppState>>,
    Path((format, hash)): Path<(String, String)>,
) -> ApiResult {
    let dynamic = state.dynamic();
    if !dynamic.formats.contains_key(&format) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("unknown format {format:?}"),
        ));
    }
    let hash = hash.to_ascii_lowercase();
    if !(is_hex_digest(&hash, 40) || is_hex_digest(&hash, 64)) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "hash must be the sha1 (40 hex) or sha256 (64 hex) of the unsigned file",
        ));
    }
    let mut waited = false;
    loop {
        match state.queue.lookup(&format, &hash) {
            Lookup::Done(info) => return serve_result(&info).await,
            Lookup::Rejected(reason) => {
                return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, reason))
            }
            // A token fault: 503 + Retry-After, so the client goes to another host.
            Lookup::Unavailable(_) => {
                return Err(ApiError::busy(
                    "the signing key's token is unavailable on this server; use another host",
                ))
            }
            Lookup::Unknown if waited => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "signing failed on this server; upload again or use another host",
                ));
            }
            Lookup::Unknown => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown: upload the file first",
                ))
            }
            Lookup::Pending(mut rx) => {
                if waited || dynamic.long_poll.is_zero() {
                    return Err(ApiError::new(
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
        ApiError::new(
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
    let body = serde_json::json!({
        "status": if draining { "draining" } else { "ok" },
        "version": env!("CARGO_PKG_VERSION"),
        "formats": dynamic.format_names,
        "max_filesize": limits,
        "queue_depth": state.queue.depth(),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "keys": crate::token_keys::health(key_states(&dynamic)),
    });
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
    let mut text = state
        .metrics
        .render(state.queue.depth(), state.started.elapsed());
    text.push_str(&crate::token_keys::metrics(key_states(&state.dynamic())));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
