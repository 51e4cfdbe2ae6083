//! Start-up sequence, TLS, the accept loop, cleanup and graceful shutdown.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::audit::Audit;
use crate::auth;
use crate::config::Config;
use crate::conn::{Admission, Closed, Door};
use crate::http;
use crate::metrics::Metrics;
use crate::passphrase::{self, Console, PassphraseSource as _, Signers};
use crate::queue::Queue;
use crate::reload;
use crate::stall::{WriteWatch, SEND_BUFFER};
use crate::state::{AppState, Peer};
use crate::store::Store;
use crate::throttle::Throttle;

/// A TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most header lines a request may carry; more is answered `431` and the
/// connection closed. Our clients send fewer than 15.
const MAX_HEADERS: usize = 100;
/// Most bytes hyper buffers per connection (request line + headers must fit;
/// bodies are streamed through it in pieces). A larger head is answered
/// `431` and the connection closed, so a connection costs at most this much
/// however much a client sends. These two are hyper's defaults, made
/// explicit so an upgrade cannot change them silently
/// (tests/tests/protocol_errors.rs holds them to it).
const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;

/// Command-line options.
#[derive(Debug, clap::Parser)]
#[command(
    name = "signing-server",
    version,
    about = "Multi-format code-signing server (GPG today; Authenticode, MAR, APK, Apple to come).",
    long_about = "Multi-format code-signing server.\n\n\
        Reads CONFIG (see signing.ini.example), asks each encrypted key's passphrase \
        (without echo on a terminal; one line per key, in [format:…] order, when stdin \
        is not a terminal), unlocks every key, signs and verifies a probe with it, and \
        only then serves HTTPS.\n\n\
        Exit codes: 0 clean shutdown (or --check passed); 1 a key could not be unlocked \
        or probed, or the server could not start; 2 usage or configuration error."
)]
pub struct Cli {
    /// The configuration file (INI).
    #[arg(required_unless_present = "hash_password")]
    pub config: Option<PathBuf>,
    /// Print an argon2 hash of a minting password, for `new_token_auth = USER:HASH`
    /// (the password is read without echo on a terminal, else one line from stdin).
    #[arg(long, conflicts_with_all = ["check", "systemd_ask_password"])]
    pub hash_password: bool,
    /// Check the config and the keys (asking passphrases, running probes), then exit.
    #[arg(long)]
    pub check: bool,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long)]
    pub log_json: bool,
    /// Ask passphrases with `systemd-ask-password` (for a systemd service; answer
    /// with `systemd-tty-ask-password-agent`) instead of the terminal or stdin.
    #[arg(long)]
    pub systemd_ask_password: bool,
}

fn init_logging(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let installed = if json {
        tracing::subscriber::set_global_default(b.json().finish())
    } else {
        tracing::subscriber::set_global_default(b.finish())
    };
    // Not `init()`: its `log` bridge would pass apple-codesign's progress on as WARN.
    if installed.is_err() || crate::logbridge::Bridge::install().is_err() {
        eprintln!("signing-server: logging was already set up");
    }
}

fn load_tls(cfg: &Config) -> Result<rustls::ServerConfig, String> {
    let s = &cfg.server;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&s.tls_cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("tls_cert {}: {e}", s.tls_cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "tls_cert {}: no certificate in it",
            s.tls_cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&s.tls_key)
        .map_err(|e| format!("tls_key {}: {e}", s.tls_key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls_cert/tls_key: {e}"))?;
    // HTTP/1.1 only: on HTTP/2, refusing an upload early (413) resets the
    // stream before the client reads the answer; HTTP/2 buys nothing for
    // a few large uploads per connection.
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// `--hash-password`: reads a password, prints its argon2 hash.
fn hash_password() -> ExitCode {
    use secrecy::ExposeSecret as _;
    let password = match passphrase::Console.ask("minting password") {
        Ok(Some(p)) if !p.expose_secret().is_empty() => p,
        Ok(_) => {
            eprintln!("signing-server: no password given");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("signing-server: cannot read the password: {e}");
            return ExitCode::from(2);
        }
    };
    match crate::auth::hash_password(password.expose_secret()) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("signing-server: cannot hash the password: {e}");
            ExitCode::from(1)
        }
    }
}

/// Runs the server; the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    // Before any secret exists in this process.
    let hardening = crate::hardening::apply();
    if cli.hash_password {
        return hash_password();
    }
    let Some(config_path) = cli.config.as_deref() else {
        eprintln!("signing-server: a configuration file is required");
        return ExitCode::from(2);
    };
    let cfg = match crate::config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("signing-server: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&cfg.logging.level, cli.log_json);
    // Before any passphrase is asked: an expired signing certificate stops here.
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if let Err(e) = crate::expiry::check_at_startup(&cfg, unix_now) {
        eprintln!("signing-server: {}: {e}", cfg.path.display());
        return ExitCode::from(2);
    }
    tracing::info!(
        not_dumpable = hardening.not_dumpable,
        no_core_dumps = hardening.no_core,
        memory_locked = hardening.memory_locked,
        open_files = hardening.open_files,
        "process hardening"
    );
    let tls = match load_tls(&cfg) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("signing-server: {}: {e}", cfg.path.display());
            return ExitCode::from(2);
        }
    };
    // --check must not touch the live store: probe in a private temp dir.
    let check_dir;
    let (store, scratch): (Option<Store>, PathBuf) = if cli.check {
        check_dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => {
                eprintln!("signing-server: cannot create a scratch directory: {e}");
                return ExitCode::from(1);
            }
        };
        (None, check_dir.path().to_path_buf())
    } else {
        match Store::open(&cfg.server.work_dir) {
            Ok(s) => {
                let t = s.tmp_dir();
                (Some(s), t)
            }
            Err(e) => {
                eprintln!(
                    "signing-server: work_dir {}: {e}",
                    cfg.server.work_dir.display()
                );
                return ExitCode::from(1);
            }
        }
    };
    let mut source: Box<dyn passphrase::PassphraseSource> = if cli.systemd_ask_password {
        Box::new(passphrase::SystemdAskPassword)
    } else {
        Box::new(Console)
    };
    let signers = match passphrase::unlock_all(&cfg, source.as_mut(), &scratch) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("signing-server: {e}");
            return ExitCode::from(if e.config { 2 } else { 1 });
        }
    };
    for (name, s) in &signers {
        tracing::info!(format = %name, key = %s.key_id(), "key unlocked and probed");
    }
    let log_key = match cfg
        .log
        .as_ref()
        .map(|l| crate::tlog::unlock_key(l, source.as_mut()))
    {
        None => None,
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => {
            eprintln!("signing-server: [log] {e}");
            return ExitCode::from(1);
        }
    };
    let Some(store) = store else {
        println!(
            "{}: configuration and {} key(s) OK",
            cfg.path.display(),
            signers.len()
        );
        if let Some(k) = &log_key {
            println!("log verifier key: {}", k.verifier());
        }
        return ExitCode::SUCCESS;
    };
    // Before the port is bound: a log directory that does not match its
    // checkpoint stops the start-up (exit 2).
    let log = match (cfg.log.as_ref(), log_key) {
        (Some(lc), Some(key)) => match crate::tlog::Log::open(lc, key) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("signing-server: {e}");
                return ExitCode::from(if e.mismatch { 2 } else { 1 });
            }
        },
        _ => None,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("signing-server: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(cfg, tls, store, signers, log)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("signing-server: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn serve(
    cfg: Config,
    tls: rustls::ServerConfig,
    store: Store,
    signers: Signers,
    log: Option<(crate::tlog::Log, crate::tlog::LogWriter)>,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let audit = Arc::new(Audit::open(cfg.logging.audit_log.as_deref()).map_err(|e| {
        anyhow::anyhow!(
            "audit_log {}: {e}",
            cfg.logging
                .audit_log
                .as_deref()
                .unwrap_or(Path::new(""))
                .display()
        )
    })?);
    let queue = Queue::new(
        store.clone(),
        cfg.server.concurrency,
        (cfg.server.max_queue, cfg.server.max_queue_per_peer),
        audit,
        log.map(|(log, writer)| {
            tokio::spawn(writer.run());
            log
        }),
        metrics.clone(),
        formats::scratch::ScratchBudget::new(cfg.server.max_scratch),
    );
    let state = Arc::new(AppState {
        dynamic: RwLock::new(Arc::new(reload::initial(&cfg, signers))),
        queue: queue.clone(),
        store,
        metrics: metrics.clone(),
        idle_timeout: cfg.server.idle_timeout,
        form_timeout: cfg.server.form_timeout,
        min_upload_rate: cfg.server.min_upload_rate,
        cert_expiry_warning: cfg.server.cert_expiry_warning,
        mint_throttle: Throttle::default(),
        otp_replays: Default::default(),
        rates: crate::rate::Rates::new(metrics.clone()),
        started: Instant::now(),
        draining: AtomicBool::new(false),
    });
    let tls = Arc::new(RwLock::new(Arc::new(tls)));
    let addr = std::net::SocketAddr::new(cfg.server.listen, cfg.server.port);
    let listener = bind(addr).map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    tracing::info!(%local, "serving HTTPS");
    // A plain line on stdout, for scripts and tests that started us on port 0.
    println!("listening on https://{local}");

    // Cleanup of unused inputs and results, with the timings in force.
    {
        let state = state.clone();
        tokio::spawn(async move {
            loop {
                let d = state.dynamic();
                tokio::time::sleep(d.cleanup_interval).await;
                let n = state.queue.cleanup(d.max_file_age);
                if n > 0 {
                    tracing::info!(removed = n, "cleanup");
                }
            }
        });
    }
    // SIGHUP: reload.
    {
        let (state, tls, path, server_cfg) = (
            state.clone(),
            tls.clone(),
            cfg.path.clone(),
            cfg.server.clone(),
        );
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                tracing::error!("cannot watch SIGHUP: reload disabled");
                return;
            };
            while hup.recv().await.is_some() {
                reload_now(&state, &tls, &path, &server_cfg);
            }
        });
    }

    let app = http::router(state.clone());
    let graceful = GracefulShutdown::new();
    // HTTP/1.1 only, whatever the client offers: hyper's HTTP/1 connection
    // refuses an HTTP/2 preface. The header timer runs from the moment a
    // request head is awaited: on a new connection before its first byte,
    // and between the requests of a kept-alive one.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.server.idle_timeout)
        .keep_alive(true)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEAD_BYTES);
    let builder = Arc::new(builder);
    let admission = Arc::new(Admission::default());
    let door = Arc::new(Door {
        max_total: cfg.server.max_connections,
        max_per_ip: cfg.server.max_connections_per_ip,
        balancers: cfg.server.proxy_protocol_from.clone(),
    });
    let mut shutdown = std::pin::pin!(shutdown_signal());
    // Set once the drain is over: stop accepting.
    let mut drained: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
        Box::pin(std::future::pending());
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown, if !state.draining.load(Ordering::Relaxed) => {
                // Draining: refuse uploads, /health says so, but keep answering GETs
                // so clients fetch what is being signed for them.
                state.draining.store(true, Ordering::Relaxed);
                tracing::info!(pending = queue.depth(), "draining: waiting for pending jobs");
                let (queue, limit, grace) = (queue.clone(), cfg.server.drain_timeout, cfg.server.drain_grace);
                // Nothing pending and nothing finished within the grace: nobody
                // can be waiting for a result, stop now.
                let idle = queue.quiet_for(grace);
                drained = Box::pin(async move {
                    if idle {
                        return;
                    }
                    if !queue.wait_idle(limit).await {
                        tracing::warn!(pending = queue.depth(), "jobs still pending after {limit:?}; stopping anyway");
                    }
                    tokio::time::sleep(grace).await;
                });
                continue;
            }
            _ = &mut drained => break,
        };
        // Before TLS: a peer in no allow-list, or over its share of
        // connections, is closed at once and costs nothing more.
        let ip = auth::canonical(peer.ip());
        let place = door.admit(&admission, &state.dynamic().security, ip);
        let place = match place {
            Ok(p) => p,
            Err(why) => {
                closed(&state, peer, why, "");
                drop(tcp);
                continue;
            }
        };
        // No Nagle: an answer's last TLS record would otherwise wait for the
        // client's delayed ACK (tens of ms per request with small files).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, "cannot set TCP_NODELAY: {e}");
        }
        // What the kernel holds for a client that does not read (stall.rs).
        if let Err(e) = socket2::SockRef::from(&tcp).set_send_buffer_size(SEND_BUFFER) {
            tracing::debug!(%peer, "cannot set SO_SNDBUF: {e}");
        }
        let acceptor = TlsAcceptor::from(tls.read().unwrap_or_else(|p| p.into_inner()).clone());
        let (app, builder) = (app.clone(), builder.clone());
        let watcher = graceful.watcher();
        let (door, admission, state) = (door.clone(), admission.clone(), state.clone());
        tokio::spawn(async move {
            let mut tcp = tcp;
            let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
            // From a listed balancer, the PROXY header names the peer.
            let arrived = door
                .arrive(
                    &admission,
                    || state.dynamic(),
                    &mut tcp,
                    peer,
                    place,
                    deadline,
                )
                .await;
            let (peer, place) = match arrived {
                Ok(p) => p,
                Err((why, detail)) => {
                    closed(&state, peer, why, &detail);
                    return;
                }
            };
            // Answers nobody reads: closed after idle_timeout without progress.
            let tcp = WriteWatch::new(tcp, state.idle_timeout);
            let stalled = tcp.stalled();
            let tls = match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let svc = app.map_request(
                move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(Peer(peer));
                    req
                },
            );
            let conn = builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(svc));
            let ended = watcher.watch(conn).await;
            if stalled.load(Ordering::Relaxed) {
                state.metrics.inc(
                    "signing_closed_connections_total",
                    &[("reason", "answers_not_read")],
                );
                tracing::info!(%peer, "answers not read within idle_timeout: connection closed");
            } else if let Err(e) = ended {
                log_connection_error(peer, &e);
            }
            drop(place);
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 5s; closing them");
    }
    tracing::info!("stopped");
    Ok(())
}

/// A connection closed before TLS: counted, and logged with its reason (a
/// PROXY header refused is worth a warning: someone tried to speak for
/// another address, or a balancer is misconfigured).
fn closed(state: &AppState, peer: std::net::SocketAddr, why: Closed, detail: &str) {
    state.metrics.inc(
        "signing_closed_connections_total",
        &[("reason", why.label())],
    );
    match why {
        Closed::ProxyHeader | Closed::ProxyNotAllowed => {
            tracing::warn!(%peer, reason = why.label(), "connection closed before TLS: {detail}")
        }
        _ if !detail.is_empty() => {
            tracing::info!(%peer, reason = why.label(), "connection closed before TLS: {detail}")
        }
        _ => tracing::debug!(%peer, reason = why.label(), "connection closed at accept"),
    }
}

/// A connection that ended on an error: the ones hyper answers itself
/// (`431` for a head too large, `400` for a bad request line, a header
/// timeout, an HTTP/2 preface) are logged with their reason, since no
/// request reached the door to log them.
fn log_connection_error(peer: std::net::SocketAddr, e: &hyper::Error) {
    if e.is_parse_too_large() {
        tracing::info!(%peer, status = 431, "request head too large: answered 431 and closed");
    } else if e.is_parse() || e.is_parse_version_h2() {
        tracing::info!(%peer, "malformed request or HTTP/2 preface: connection closed: {e}");
    } else if e.is_timeout() {
        tracing::info!(%peer, "no request head within idle_timeout: connection closed");
    } else {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}

/// Listens with a deep accept queue: a burst of build machines connecting
/// at once must wait in the queue, not have their SYNs dropped (and retried
/// a second later). The kernel caps it at net.core.somaxconn.
fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Re-reads the config; on success puts the reloadable parts in force.
fn reload_now(
    state: &AppState,
    tls: &RwLock<Arc<rustls::ServerConfig>>,
    path: &Path,
    server_cfg: &crate::config::ServerConfig,
) {
    tracing::info!(config = %path.display(), "SIGHUP: reloading the configuration");
    let cfg = match crate::config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("reload rejected, the previous configuration stays in force: {e}");
            state
                .metrics
                .inc("signing_reloads_total", &[("outcome", "rejected")]);
            return;
        }
    };
    let new_tls = match load_tls(&cfg) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("reload rejected, the previous configuration stays in force: {e}");
            state
                .metrics
                .inc("signing_reloads_total", &[("outcome", "rejected")]);
            return;
        }
    };
    let mut outcome = reload::apply(&state.dynamic(), server_cfg, &cfg);
    if cfg.log.as_ref() != state.queue.log().map(|l| l.config()) {
        outcome
            .needs_restart
            .push("[log] changed: restart to apply (the running log is unchanged)".into());
    }
    for line in &outcome.needs_restart {
        tracing::warn!("{line}");
    }
    for name in &outcome.removed {
        tracing::info!(format = %name, "format removed: no longer served");
    }
    state.replace_dynamic(outcome.dynamic);
    *tls.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new_tls);
    state
        .metrics
        .inc("signing_reloads_total", &[("outcome", "applied")]);
    tracing::info!("configuration reloaded");
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot watch SIGTERM: {e}");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
