//! `signing.ini` → a typed, validated [`Config`].
//!
//! Every problem is reported as `file:line: what is wrong` (exit code 2 at
//! start-up). The INI reader is ours, not rust-ini's, because rust-ini does
//! not say on which line a key stood, and "bad CIDR on line 12" is what an
//! operator needs. It knows `[section]`, `key = value`, `#`/`;` comments and
//! indented continuation lines (as Python's configparser, which the old
//! Mozilla configs were written for).
//!
//! This module does not read key files or ask passphrases: see
//! [`crate::passphrase`].

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use formats::FormatConfig;
use ipnet::IpNet;
use regex::Regex;
use secrecy::SecretString;

use crate::auth::Credential;

mod format;
mod ini;
mod log;
mod policy;
use format::{read_format, unpacked_size};
pub use ini::parse_size;
use ini::{numbered, parse_ini, split_list, Entry, Reader, Section};
pub use log::{LogConfig, DEFAULT_CHECKPOINT_INTERVAL};
pub use policy::RateLimit;

/// A configuration error: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line, when the problem has one.
    pub line: Option<usize>,
    /// What is wrong, in one line.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The whole server configuration.
#[derive(Debug)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[security]`.
    pub security: SecurityConfig,
    /// `[logging]`.
    pub logging: LoggingConfig,
    /// `[format:NAME]` sections, in file order.
    pub formats: Vec<Format>,
    /// `[log]`: the transparency log, when there is one.
    pub log: Option<LogConfig>,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to bind.
    pub listen: IpAddr,
    /// TCP port (0 = any free port, printed at start-up).
    pub port: u16,
    /// PEM certificate chain served to clients.
    pub tls_cert: PathBuf,
    /// PEM private key of `tls_cert` (unencrypted: it is not a signing key).
    pub tls_key: PathBuf,
    /// Scratch and result storage; the server owns its `tmp/`, `inputs/`
    /// and `results/` subdirectories.
    pub work_dir: PathBuf,
    /// Inputs and results unused for this long are removed.
    pub max_file_age: Duration,
    /// How often cleanup runs.
    pub cleanup_interval: Duration,
    /// How long a GET for a pending result is held before answering 404.
    pub long_poll: Duration,
    /// Signings running at once.
    pub concurrency: usize,
    /// Jobs queued or running before uploads get 503.
    pub max_queue: usize,
    /// Of those, most held by one peer address (default: half of
    /// `max_queue`, at least 1).
    pub max_queue_per_peer: usize,
    /// An upload's file slower than this (bytes per second, averaged from
    /// its start, after [`UPLOAD_RATE_GRACE`]) is cut off with 408; 0: never.
    pub min_upload_rate: u64,
    /// A client silent this long (while sending headers, or between two
    /// pieces of an upload) is cut off: slow clients cannot hold connections.
    pub idle_timeout: Duration,
    /// The form fields before `filedata` must all arrive within this.
    pub form_timeout: Duration,
    /// Scratch disk space all signing jobs together may use beyond their
    /// inputs (an `.app` tarball unpacked and copied).
    pub max_scratch: u64,
    /// Most connections held at once, from all peers.
    pub max_connections: usize,
    /// Most connections one peer address may hold at once.
    pub max_connections_per_ip: usize,
    /// L4 load balancers whose connections start with a PROXY protocol
    /// header (v1 or v2) naming the client, who then is the peer.
    pub proxy_protocol_from: Vec<IpNet>,
    /// Certificates expiring within this are warned about (log, /health).
    pub cert_expiry_warning: Duration,
    /// On SIGTERM: longest wait for pending jobs.
    pub drain_timeout: Duration,
    /// On SIGTERM: how long GETs are still answered once the jobs are done,
    /// so clients can fetch what was signed for them.
    pub drain_grace: Duration,
}

/// `[security]`.
#[derive(Debug, Clone)]
pub struct SecurityConfig {
    /// Peers allowed to talk to the server at all.
    pub allowed_ips: Vec<IpNet>,
    /// Peers allowed to mint tokens.
    pub new_token_allowed_ips: Vec<IpNet>,
    /// `user:password` pairs for minting.
    pub new_token_auth: Vec<Credential>,
    /// `new_token_formats.USER = a, b`: the formats a minting user's tokens
    /// are limited to (a user not listed mints for any format).
    pub new_token_formats: std::collections::HashMap<String, Vec<String>>,
    /// Token secrets: the first (the plain `token_secret`) mints, all verify.
    pub token_secrets: Vec<SecretString>,
    /// Longest token lifetime, in seconds.
    pub max_token_age: u64,
    /// Whole-match regexes for upload file names.
    pub allowed_filenames: Vec<Regex>,
    /// Smallest accepted upload, in bytes.
    pub min_filesize: u64,
    /// Largest accepted upload, in bytes (a format may set a lower one).
    pub max_filesize: u64,
    /// Failed minting attempts one address may make per minute (a burst of
    /// that many, then one every `60 / N` seconds); beyond, `429`.
    pub mint_failures_per_minute: u32,
    /// `new_token_totp.USER = FILE`: the TOTP secret of a minting user who
    /// must give a one-time code (`otp`) to mint or approve.
    pub new_token_totp: std::collections::HashMap<String, secrecy::SecretSlice<u8>>,
    /// Formats with `approvals = 2`, each with its `new_token_approvers.FORMAT`:
    /// tokens for them are approved by a second person (`POST /token/approve`).
    pub approvers: std::collections::HashMap<String, Vec<String>>,
}

/// `[logging]`.
#[derive(Debug, Clone)]
pub struct LoggingConfig {
    /// tracing filter (`info`, `debug`, `signing_server=debug`…).
    pub level: String,
    /// JSON-lines audit log, one line per signing.
    pub audit_log: Option<PathBuf>,
}

/// One `[format:NAME]` section.
#[derive(Debug, Clone)]
pub struct Format {
    /// What the signer needs.
    pub signer: FormatConfig,
    /// Largest accepted upload for this format.
    pub max_filesize: u64,
    /// `allow_expired = yes`: start even if the signing certificate has expired.
    pub allow_expired: bool,
    /// `digest_signing = yes`: clients may send a digest instead of the file.
    pub digest_signing: bool,
    /// `approvals`: 1, or 2 for a two-person rule on minting its tokens.
    pub approvals: u8,
    /// `max_rate` / `burst`: how fast this server signs with the key.
    pub rate: Option<RateLimit>,
    /// Line of the section header, for error messages.
    pub line: usize,
}

/// Default port: the one Mozilla's signing servers used.
pub const DEFAULT_PORT: u16 = 9110;
/// Default largest upload: 2 GiB.
pub const DEFAULT_MAX_FILESIZE: u64 = 2 << 30;
/// Default scratch space budget of all jobs together: 16 GiB.
pub const DEFAULT_MAX_SCRATCH: u64 = 16 << 30;
/// The default `min_upload_rate`: 16 KiB/s (a build machine on a 1 Mbit/s
/// link sends 8 times that).
pub const DEFAULT_MIN_UPLOAD_RATE: u64 = 16 << 10;
/// `min_upload_rate` applies from this long after a file's first byte.
pub const UPLOAD_RATE_GRACE: Duration = Duration::from_secs(10);

/// An `.app` tarball may unpack to this many times its format's `max_filesize`
/// unless the format sets `max_unpacked_size`.
pub const UNPACKED_PER_UPLOAD: u64 = 4;

/// Reads and validates the configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: None,
        message: format!("cannot read: {e}"),
    })?;
    parse(path, &text)
}

/// Validates configuration text read from `path` (paths in it are relative
/// to `path`'s directory).
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    };
    let r = Reader { path, base };
    let sections = parse_ini(text, &|line, message| r.err(line, message))?;
    let whole = |message: String| ConfigError {
        file: path.to_path_buf(),
        line: None,
        message,
    };

    let mut server = None;
    let mut security = None;
    let mut policy = policy::Pending::default();
    let mut logging = LoggingConfig {
        level: "info".into(),
        audit_log: None,
    };
    let mut formats = Vec::new();
    let mut log = None;
    // Read first: the formats before it in the file use its default module too.
    let pkcs11_module = match sections.iter().find(|s| s.name == "pkcs11") {
        Some(s) => format::read_pkcs11(&r, s)?,
        None => None,
    };
    for s in &sections {
        match s.name.as_str() {
            "pkcs11" => {}
            "server" => server = Some(read_server(&r, s)?),
            "security" => security = Some(read_security(&r, s, &mut policy)?),
            "logging" => logging = read_logging(&r, s)?,
            "log" => log = Some(log::read_log(&r, s)?),
            name => match name.strip_prefix("format:") {
                Some(fname) => formats.push(read_format(
                    &r,
                    s,
                    fname.trim(),
                    &formats,
                    pkcs11_module.as_ref(),
                )?),
                None => {
                    return Err(r.err(
                        s.line,
                        format!("unknown section [{name}] (known: [server], [security], [logging], [log], [pkcs11], [format:NAME])"),
                    ))
                }
            },
        }
    }
    let server = server.ok_or_else(|| whole("missing [server] section".into()))?;
    let mut security = security.ok_or_else(|| whole("missing [security] section".into()))?;
    if formats.is_empty() {
        return Err(whole(
            "no [format:NAME] section: nothing to sign with".into(),
        ));
    }
    check_token_formats(&security, &formats).map_err(whole)?;
    policy::finish(&r, policy, &mut security, &formats)?;
    // A format may lower the size limit, never raise it above the global one.
    for f in &mut formats {
        f.max_filesize = f.max_filesize.min(security.max_filesize);
        unpacked_size(&r, f)?;
    }
    Ok(Config {
        path: path.to_path_buf(),
        server,
        security,
        logging,
        formats,
        log,
    })
}

fn unknown(r: &Reader<'_>, s: &Section, e: &Entry, known: &[&str]) -> ConfigError {
    r.err(
        e.line,
        format!(
            "unknown key `{}` in [{}] (known: {})",
            e.key,
            s.name,
            known.join(", ")
        ),
    )
}

fn read_server(r: &Reader<'_>, s: &Section) -> Result<ServerConfig, ConfigError> {
    const KNOWN: &[&str] = &[
        "listen",
        "port",
        "tls_cert",
        "tls_key",
        "work_dir",
        "max_file_age",
        "cleanup_interval",
        "long_poll",
        "concurrency",
        "max_queue",
        "max_queue_per_peer",
        "min_upload_rate",
        "idle_timeout",
        "form_timeout",
        "max_scratch",
        "max_connections",
        "max_connections_per_ip",
        "proxy_protocol_from",
        "cert_expiry_warning",
        "drain_timeout",
        "drain_grace",
    ];
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let mut listen: IpAddr = IpAddr::from([127, 0, 0, 1]);
    let mut port = DEFAULT_PORT;
    let (mut tls_cert, mut tls_key, mut work_dir) = (None, None, None);
    let mut max_file_age = Duration::from_secs(300);
    let mut cleanup_interval = Duration::from_secs(60);
    let mut long_poll = Duration::from_secs(60);
    let mut concurrency = cores;
    let mut max_queue = 64;
    let mut max_queue_per_peer = None;
    let mut min_upload_rate = DEFAULT_MIN_UPLOAD_RATE;
    let mut idle_timeout = Duration::from_secs(60);
    let mut form_timeout = Duration::from_secs(20);
    let mut max_scratch = DEFAULT_MAX_SCRATCH;
    let mut max_connections = 4096;
    let mut max_connections_per_ip = 256;
    let mut proxy_protocol_from = Vec::new();
    let mut cert_expiry_warning = Duration::from_secs(30 * 86_400);
    let mut drain_timeout = Duration::from_secs(30);
    let mut drain_grace = Duration::from_secs(5);
    for e in &s.entries {
        match e.key.as_str() {
            "listen" => listen = r.number(e, "an IP address")?,
            "port" => port = r.number(e, "a port number (0-65535)")?,
            "tls_cert" => tls_cert = Some(r.file(e, true)?),
            "tls_key" => tls_key = Some(r.file(e, true)?),
            "work_dir" => work_dir = Some(r.file(e, false)?),
            "max_file_age" => max_file_age = r.seconds(e)?,
            "cleanup_interval" => {
                cleanup_interval = r.seconds(e)?;
                if cleanup_interval.is_zero() {
                    return Err(r.err(e.line, "cleanup_interval: must be at least 1 second"));
                }
            }
            "long_poll" => long_poll = r.seconds(e)?,
            "concurrency" => {
                concurrency = r.number(e, "a whole number")?;
                if concurrency == 0 {
                    return Err(r.err(e.line, "concurrency: must be at least 1"));
                }
            }
            "max_queue" => {
                max_queue = r.number(e, "a whole number")?;
                if max_queue == 0 {
                    return Err(r.err(e.line, "max_queue: must be at least 1"));
                }
            }
            "max_queue_per_peer" => {
                let n: usize = r.number(e, "a whole number")?;
                if n == 0 {
                    return Err(r.err(e.line, "max_queue_per_peer: must be at least 1"));
                }
                max_queue_per_peer = Some(n);
            }
            "min_upload_rate" => min_upload_rate = r.size(e)?,
            "idle_timeout" => {
                idle_timeout = r.seconds(e)?;
                if idle_timeout.is_zero() {
                    return Err(r.err(e.line, "idle_timeout: must be at least 1 second"));
                }
            }
            "form_timeout" => {
                form_timeout = r.seconds(e)?;
                if form_timeout.is_zero() {
                    return Err(r.err(e.line, "form_timeout: must be at least 1 second"));
                }
            }
            "max_scratch" => max_scratch = r.size(e)?,
            "max_connections" | "max_connections_per_ip" => {
                let n: usize = r.number(e, "a whole number")?;
                if n == 0 {
                    return Err(r.err(e.line, format!("{}: must be at least 1", e.key)));
                }
                if e.key == "max_connections" {
                    max_connections = n;
                } else {
                    max_connections_per_ip = n;
                }
            }
            "proxy_protocol_from" => proxy_protocol_from = r.cidrs(e)?,
            "cert_expiry_warning" => {
                let days: u64 = r.number(e, "a whole number of days")?;
                cert_expiry_warning = Duration::from_secs(days * 86_400);
            }
            "drain_timeout" => drain_timeout = r.seconds(e)?,
            "drain_grace" => drain_grace = r.seconds(e)?,
            _ => return Err(unknown(r, s, e, KNOWN)),
        }
    }
    let need = |v: Option<PathBuf>, key: &str| {
        v.ok_or_else(|| r.err(s.line, format!("[server] needs `{key}`")))
    };
    Ok(ServerConfig {
        listen,
        port,
        tls_cert: need(tls_cert, "tls_cert")?,
        tls_key: need(tls_key, "tls_key")?,
        work_dir: need(work_dir, "work_dir")?,
        max_file_age,
        cleanup_interval,
        long_poll,
        concurrency,
        max_queue,
        max_queue_per_peer: max_queue_per_peer
            .unwrap_or(max_queue.div_ceil(2))
            .min(max_queue),
        min_upload_rate,
        idle_timeout,
        form_timeout,
        max_scratch,
        max_connections,
        max_connections_per_ip,
        proxy_protocol_from,
        cert_expiry_warning,
        drain_timeout,
        drain_grace,
    })
}

/// `new_token_formats.USER` names a minting user and formats that exist.
fn check_token_formats(sec: &SecurityConfig, formats: &[Format]) -> Result<(), String> {
    let mut users: Vec<_> = sec.new_token_formats.iter().collect();
    users.sort();
    for (user, list) in users {
        if !sec.new_token_auth.iter().any(|c| &c.user == user) {
            return Err(format!(
                "[security] new_token_formats.{user}: no new_token_auth entry for user {user:?}"
            ));
        }
        if let Some(bad) = list
            .iter()
            .find(|f| !formats.iter().any(|x| &x.signer.name == *f))
        {
            return Err(format!(
                "[security] new_token_formats.{user}: unknown format {bad:?} (formats: {})",
                formats
                    .iter()
                    .map(|f| f.signer.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(())
}

/// Shortest accepted token secret: HMAC-SHA256 keys shorter than this are guessable.
const MIN_SECRET_LEN: usize = 16;

fn read_security(
    r: &Reader<'_>,
    s: &Section,
    policy: &mut policy::Pending,
) -> Result<SecurityConfig, ConfigError> {
    const KNOWN: &[&str] = &[
        "allowed_ips",
        "new_token_allowed_ips",
        "new_token_auth[N]",
        "new_token_formats.USER",
        "token_secret[N]",
        "max_token_age",
        "allowed_filenames",
        "min_filesize",
        "max_filesize",
        "mint_failures_per_minute",
        "new_token_totp.USER",
        "new_token_approvers.FORMAT",
    ];
    let mut allowed_ips = None;
    let mut new_token_allowed_ips = Vec::new();
    let mut new_token_auth = Vec::new();
    let mut new_token_formats = std::collections::HashMap::new();
    let mut plain_secret = None;
    let mut other_secrets = Vec::new();
    let mut max_token_age = 3600;
    let mut allowed_filenames = None;
    let mut min_filesize = 10;
    let mut max_filesize = DEFAULT_MAX_FILESIZE;
    let mut mint_failures_per_minute = 10;
    for e in &s.entries {
        if policy.take(r, e)? {
            continue;
        }
        match e.key.as_str() {
            "mint_failures_per_minute" => {
                mint_failures_per_minute = r.number(e, "a whole number")?;
                if mint_failures_per_minute == 0 {
                    return Err(r.err(e.line, "mint_failures_per_minute: must be at least 1"));
                }
            }
            "allowed_ips" => allowed_ips = Some(r.cidrs(e)?),
            "new_token_allowed_ips" => new_token_allowed_ips = r.cidrs(e)?,
            "max_token_age" => {
                max_token_age = r.number(e, "a whole number of seconds")?;
                if max_token_age == 0 {
                    return Err(r.err(e.line, "max_token_age: must be at least 1 second"));
                }
            }
            "allowed_filenames" => {
                let mut res = Vec::new();
                for item in split_list(&e.value) {
                    let re = Regex::new(&format!("^(?:{item})$")).map_err(|err| {
                        r.err(
                            e.line,
                            format!(
                                "allowed_filenames: bad regex {item:?}: {}",
                                first_line(&err.to_string())
                            ),
                        )
                    })?;
                    res.push(re);
                }
                allowed_filenames = Some(res);
            }
            "min_filesize" => min_filesize = r.size(e)?,
            "max_filesize" => max_filesize = r.size(e)?,
            k if numbered(k, "new_token_auth") => {
                let Some((user, password)) = e.value.split_once(':') else {
                    return Err(r.err(e.line, format!("{k}: expected `user:password`")));
                };
                if user.is_empty() || password.is_empty() {
                    return Err(r.err(
                        e.line,
                        format!("{k}: user and password must both be non-empty"),
                    ));
                }
                if !crate::auth::valid_hash(password) {
                    return Err(r.err(
                        e.line,
                        format!(
                            "{k}: the password looks like an argon2 hash but is not a valid one"
                        ),
                    ));
                }
                new_token_auth.push(Credential {
                    user: user.to_string(),
                    password: SecretString::from(password.to_string()),
                });
            }
            k if k.starts_with("new_token_formats.") => {
                let user = &k["new_token_formats.".len()..];
                let list = split_list(&e.value);
                if user.is_empty() || list.is_empty() {
                    return Err(r.err(
                        e.line,
                        "new_token_formats.USER = FORMAT, …: a user name and at least one format",
                    ));
                }
                new_token_formats.insert(user.to_string(), list);
            }
            k if numbered(k, "token_secret") => {
                if e.value.len() < MIN_SECRET_LEN {
                    return Err(r.err(
                        e.line,
                        format!("{k}: too short, use at least {MIN_SECRET_LEN} characters"),
                    ));
                }
                let secret = SecretString::from(e.value.clone());
                if k == "token_secret" {
                    plain_secret = Some(secret);
                } else {
                    other_secrets.push(secret);
                }
            }
            _ => return Err(unknown(r, s, e, KNOWN)),
        }
    }
    let Some(allowed_ips) = allowed_ips else {
        return Err(r.err(
            s.line,
            "[security] needs `allowed_ips` (the build machines and token hosts, as CIDRs)",
        ));
    };
    let Some(plain_secret) = plain_secret else {
        return Err(r.err(
            s.line,
            "[security] needs `token_secret` (the secret that mints tokens)",
        ));
    };
    if !new_token_allowed_ips.is_empty() && new_token_auth.is_empty() {
        return Err(r.err(
            s.line,
            "[security] has new_token_allowed_ips but no new_token_auth: nobody could mint",
        ));
    }
    if min_filesize > max_filesize {
        return Err(r.err(s.line, "min_filesize is larger than max_filesize"));
    }
    let mut token_secrets = vec![plain_secret];
    token_secrets.extend(other_secrets);
    Ok(SecurityConfig {
        allowed_ips,
        new_token_allowed_ips,
        new_token_auth,
        new_token_formats,
        token_secrets,
        max_token_age,
        // No list: any name that is a plain label (no path separators).
        allowed_filenames: allowed_filenames
            .unwrap_or_else(|| vec![Regex::new(r"^[^/\\]+$").expect("static regex")]),
        min_filesize,
        max_filesize,
        mint_failures_per_minute,
        // Filled by `policy::finish` once the formats are known.
        new_token_totp: std::collections::HashMap::new(),
        approvers: std::collections::HashMap::new(),
    })
}

fn first_line(s: &str) -> String {
    s.lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Whether `level` uses only what a level or a `target=level` list needs
/// (ASCII letters, digits, `_ : , = . -` and spaces). Checked before
/// tracing-subscriber parses it: its filter parser panics on some other
/// input (a non-ASCII character after a comma: "end byte index 4 is not a
/// char boundary", found by the `config` fuzz target; seed `level-non-ascii.ini`).
fn log_filter_chars_ok(level: &str) -> bool {
    level
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | ',' | '=' | '.' | '-' | ' '))
}

fn read_logging(r: &Reader<'_>, s: &Section) -> Result<LoggingConfig, ConfigError> {
    let mut cfg = LoggingConfig {
        level: "info".into(),
        audit_log: None,
    };
    for e in &s.entries {
        match e.key.as_str() {
            "level" => {
                if !log_filter_chars_ok(&e.value)
                    || tracing_subscriber::EnvFilter::try_new(&e.value).is_err()
                {
                    return Err(r.err(
                        e.line,
                        format!(
                            "level: {:?} is not a log level (error, warn, info, debug, trace)",
                            e.value
                        ),
                    ));
                }
                cfg.level = e.value.clone();
            }
            "audit_log" => cfg.audit_log = Some(r.file(e, false)?),
            _ => return Err(unknown(r, s, e, &["level", "audit_log"])),
        }
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests;
