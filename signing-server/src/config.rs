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

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use formats::FormatConfig;
use ipnet::IpNet;
use regex::Regex;
use secrecy::SecretString;

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
    /// A client silent this long (while sending headers, or between two
    /// pieces of an upload) is cut off: slow clients cannot hold connections.
    pub idle_timeout: Duration,
    /// On SIGTERM: longest wait for pending jobs.
    pub drain_timeout: Duration,
    /// On SIGTERM: how long GETs are still answered once the jobs are done,
    /// so clients can fetch what was signed for them.
    pub drain_grace: Duration,
}

/// `[security]`.
#[derive(Debug)]
pub struct SecurityConfig {
    /// Peers allowed to talk to the server at all.
    pub allowed_ips: Vec<IpNet>,
    /// Peers allowed to mint tokens.
    pub new_token_allowed_ips: Vec<IpNet>,
    /// `user:password` pairs for minting.
    pub new_token_auth: Vec<Credential>,
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
}

/// One `new_token_auth*` entry.
#[derive(Debug)]
pub struct Credential {
    /// User name.
    pub user: String,
    /// Password.
    pub password: SecretString,
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
    /// Line of the section header, for error messages.
    pub line: usize,
}

/// Default port: the one Mozilla's signing servers used.
pub const DEFAULT_PORT: u16 = 9110;
/// Default largest upload: 2 GiB.
pub const DEFAULT_MAX_FILESIZE: u64 = 2 << 30;

struct Entry {
    key: String,
    value: String,
    line: usize,
}

struct Section {
    name: String,
    line: usize,
    entries: Vec<Entry>,
}

/// Reads the INI structure; no meaning yet.
fn parse_ini(
    text: &str,
    err: &dyn Fn(usize, String) -> ConfigError,
) -> Result<Vec<Section>, ConfigError> {
    let mut sections: Vec<Section> = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        let indented = raw.starts_with(' ') || raw.starts_with('\t');
        if indented {
            // Continuation of the previous value.
            let Some(entry) = sections.last_mut().and_then(|s| s.entries.last_mut()) else {
                return Err(err(
                    line,
                    "indented line continues nothing (remove the indentation)".into(),
                ));
            };
            if !entry.value.is_empty() {
                entry.value.push('\n');
            }
            entry.value.push_str(trimmed);
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(err(
                    line,
                    format!("section header {trimmed:?} has no closing ']'"),
                ));
            };
            let name = name.trim().to_string();
            if let Some(prev) = sections.iter().find(|s| s.name == name) {
                return Err(err(
                    line,
                    format!("section [{name}] already defined on line {}", prev.line),
                ));
            }
            sections.push(Section {
                name,
                line,
                entries: Vec::new(),
            });
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            return Err(err(
                line,
                format!("expected `key = value`, `[section]` or a comment, found {trimmed:?}"),
            ));
        };
        let key = key.trim().to_string();
        let Some(section) = sections.last_mut() else {
            return Err(err(line, format!("`{key}` stands before any [section]")));
        };
        if key.is_empty() {
            return Err(err(line, "empty key name".into()));
        }
        if let Some(prev) = section.entries.iter().find(|e| e.key == key) {
            return Err(err(
                line,
                format!("`{key}` already set on line {}", prev.line),
            ));
        }
        section.entries.push(Entry {
            key,
            value: value.trim().to_string(),
            line,
        });
    }
    Ok(sections)
}

/// Splits a list value on commas and newlines, but not on commas inside
/// `()`, `[]` or `{}` (so `a{1,3}` stays one regex) or after a backslash.
fn split_list(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut depth: i32 = 0;
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' => {
                cur.push(c);
                escaped = true;
            }
            '(' | '[' | '{' => {
                depth += 1;
                cur.push(c);
            }
            ')' | ']' | '}' => {
                depth -= 1;
                cur.push(c);
            }
            ',' if depth <= 0 => items.push(std::mem::take(&mut cur)),
            '\n' => items.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    items.push(cur);
    items
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Parses `10`, `10K`, `5M`, `2G` (binary multiples) into bytes.
pub fn parse_size(value: &str) -> Option<u64> {
    let v = value.trim();
    let (num, mult) = match v.chars().last()? {
        'k' | 'K' => (&v[..v.len() - 1], 1u64 << 10),
        'm' | 'M' => (&v[..v.len() - 1], 1 << 20),
        'g' | 'G' => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

fn parse_cidr(item: &str) -> Option<IpNet> {
    if let Ok(net) = item.parse::<IpNet>() {
        return Some(net);
    }
    item.parse::<IpAddr>().ok().map(IpNet::from)
}

struct Reader<'a> {
    path: &'a Path,
    base: PathBuf,
}

impl Reader<'_> {
    fn err(&self, line: usize, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.path.to_path_buf(),
            line: Some(line),
            message: message.into(),
        }
    }

    fn number<T: std::str::FromStr>(&self, e: &Entry, what: &str) -> Result<T, ConfigError> {
        e.value
            .parse::<T>()
            .map_err(|_| self.err(e.line, format!("{}: {:?} is not {what}", e.key, e.value)))
    }

    fn seconds(&self, e: &Entry) -> Result<Duration, ConfigError> {
        let n: u64 = self.number(e, "a whole number of seconds")?;
        Ok(Duration::from_secs(n))
    }

    fn size(&self, e: &Entry) -> Result<u64, ConfigError> {
        parse_size(&e.value).ok_or_else(|| {
            self.err(
                e.line,
                format!(
                    "{}: {:?} is not a size (bytes, or with K, M or G)",
                    e.key, e.value
                ),
            )
        })
    }

    /// A path relative to the config file's directory; `must_exist` checks it.
    fn file(&self, e: &Entry, must_exist: bool) -> Result<PathBuf, ConfigError> {
        if e.value.is_empty() {
            return Err(self.err(e.line, format!("{}: empty path", e.key)));
        }
        let p = self.base.join(&e.value);
        if must_exist && !p.is_file() {
            return Err(self.err(e.line, format!("{}: file {} not found", e.key, p.display())));
        }
        Ok(p)
    }

    fn cidrs(&self, e: &Entry) -> Result<Vec<IpNet>, ConfigError> {
        split_list(&e.value)
            .iter()
            .map(|item| {
                parse_cidr(item).ok_or_else(|| {
                    self.err(
                        e.line,
                        format!("{}: {item:?} is not an IP address or CIDR network", e.key),
                    )
                })
            })
            .collect()
    }
}

/// Keys allowed in `key` or `keyN` form (`token_secret1`, `new_token_auth2`).
fn numbered(key: &str, base: &str) -> bool {
    key.strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.bytes().all(|b| b.is_ascii_digit()))
}

const COMMON_FORMAT_KEYS: &[&str] = &[
    "type",
    "key",
    "cert",
    "digest",
    "timestamp_urls",
    "max_filesize",
];

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
    let mut logging = LoggingConfig {
        level: "info".into(),
        audit_log: None,
    };
    let mut formats = Vec::new();
    // Read first: the formats before it in the file use its default module too.
    let pkcs11_module = match sections.iter().find(|s| s.name == "pkcs11") {
        Some(s) => read_pkcs11(&r, s)?,
        None => None,
    };
    for s in &sections {
        match s.name.as_str() {
            "pkcs11" => {}
            "server" => server = Some(read_server(&r, s)?),
            "security" => security = Some(read_security(&r, s)?),
            "logging" => logging = read_logging(&r, s)?,
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
                        format!("unknown section [{name}] (known: [server], [security], [logging], [pkcs11], [format:NAME])"),
                    ))
                }
            },
        }
    }
    let server = server.ok_or_else(|| whole("missing [server] section".into()))?;
    let security = security.ok_or_else(|| whole("missing [security] section".into()))?;
    if formats.is_empty() {
        return Err(whole(
            "no [format:NAME] section: nothing to sign with".into(),
        ));
    }
    // A format may lower the size limit, never raise it above the global one.
    for f in &mut formats {
        f.max_filesize = f.max_filesize.min(security.max_filesize);
    }
    Ok(Config {
        path: path.to_path_buf(),
        server,
        security,
        logging,
        formats,
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
        "idle_timeout",
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
    let mut idle_timeout = Duration::from_secs(60);
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
            "idle_timeout" => {
                idle_timeout = r.seconds(e)?;
                if idle_timeout.is_zero() {
                    return Err(r.err(e.line, "idle_timeout: must be at least 1 second"));
                }
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
        idle_timeout,
        drain_timeout,
        drain_grace,
    })
}

/// Shortest accepted token secret: HMAC-SHA256 keys shorter than this are guessable.
const MIN_SECRET_LEN: usize = 16;

fn read_security(r: &Reader<'_>, s: &Section) -> Result<SecurityConfig, ConfigError> {
    const KNOWN: &[&str] = &[
        "allowed_ips",
        "new_token_allowed_ips",
        "new_token_auth[N]",
        "token_secret[N]",
        "max_token_age",
        "allowed_filenames",
        "min_filesize",
        "max_filesize",
    ];
    let mut allowed_ips = None;
    let mut new_token_allowed_ips = Vec::new();
    let mut new_token_auth = Vec::new();
    let mut plain_secret = None;
    let mut other_secrets = Vec::new();
    let mut max_token_age = 3600;
    let mut allowed_filenames = None;
    let mut min_filesize = 10;
    let mut max_filesize = DEFAULT_MAX_FILESIZE;
    for e in &s.entries {
        match e.key.as_str() {
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
        token_secrets,
        max_token_age,
        // No list: any name that is a plain label (no path separators).
        allowed_filenames: allowed_filenames
            .unwrap_or_else(|| vec![Regex::new(r"^[^/\\]+$").expect("static regex")]),
        min_filesize,
        max_filesize,
    })
}

fn first_line(s: &str) -> String {
    s.lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

fn read_logging(r: &Reader<'_>, s: &Section) -> Result<LoggingConfig, ConfigError> {
    let mut cfg = LoggingConfig {
        level: "info".into(),
        audit_log: None,
    };
    for e in &s.entries {
        match e.key.as_str() {
            "level" => {
                if tracing_subscriber::EnvFilter::try_new(&e.value).is_err() {
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

/// `[pkcs11]`: `module = PATH`, the default module of `pkcs11:` keys.
fn read_pkcs11(r: &Reader<'_>, s: &Section) -> Result<Option<PathBuf>, ConfigError> {
    let mut module = None;
    for e in &s.entries {
        match e.key.as_str() {
            "module" => module = Some(r.file(e, true)?),
            _ => return Err(unknown(r, s, e, &["module"])),
        }
    }
    Ok(module)
}

fn read_format(
    r: &Reader<'_>,
    s: &Section,
    name: &str,
    earlier: &[Format],
    pkcs11_module: Option<&PathBuf>,
) -> Result<Format, ConfigError> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(r.err(
            s.line,
            format!(
                "format name {name:?} must be letters, digits, `_`, `.` or `-` (it goes in URLs)"
            ),
        ));
    }
    if earlier.iter().any(|f| f.signer.name == name) {
        return Err(r.err(s.line, format!("format {name} defined twice")));
    }
    let Some(type_entry) = s.entries.iter().find(|e| e.key == "type") else {
        return Err(r.err(
            s.line,
            format!(
                "[format:{name}] needs `type` ({})",
                formats::registry::known_types().join(", ")
            ),
        ));
    };
    let Some(kind) = formats::registry::find(&type_entry.value) else {
        return Err(r.err(
            type_entry.line,
            format!(
                "type: unknown signer type {:?} (this build knows: {})",
                type_entry.value,
                formats::registry::known_types().join(", ")
            ),
        ));
    };
    let mut cfg = FormatConfig {
        name: name.to_string(),
        kind: kind.name.to_string(),
        ..Default::default()
    };
    let mut key = None;
    let mut max_filesize = DEFAULT_MAX_FILESIZE;
    let mut extra = BTreeMap::new();
    for e in &s.entries {
        match e.key.as_str() {
            "type" => {}
            "key" if formats::pkcs11::uri::is_pkcs11_uri(&e.value) => {
                crate::token_keys::check_key_uri(&e.value, pkcs11_module)
                    .map_err(|m| r.err(e.line, format!("key: {m}")))?;
                key = Some(PathBuf::from(&e.value));
                cfg.pkcs11_module = pkcs11_module.cloned();
            }
            "key" => key = Some(r.file(e, true)?),
            "cert" => cfg.cert = Some(r.file(e, true)?),
            "digest" => cfg.digest = Some(e.value.to_ascii_lowercase()),
            "timestamp_urls" => {
                let urls = split_list(&e.value);
                for u in &urls {
                    if !(u.starts_with("http://") || u.starts_with("https://")) {
                        return Err(r.err(
                            e.line,
                            format!("timestamp_urls: {u:?} is not an http(s) URL"),
                        ));
                    }
                }
                cfg.timestamp_urls = urls;
            }
            "max_filesize" => max_filesize = r.size(e)?,
            k if kind.extra_keys.contains(&k) => {
                extra.insert(k.to_string(), e.value.clone());
            }
            _ => {
                let mut known: Vec<&str> = COMMON_FORMAT_KEYS.to_vec();
                known.extend(kind.extra_keys);
                return Err(unknown(r, s, e, &known));
            }
        }
    }
    cfg.key = key.ok_or_else(|| {
        r.err(
            s.line,
            format!("[format:{name}] needs `key` (the private key file or a pkcs11: URI)"),
        )
    })?;
    cfg.extra = extra;
    Ok(Format {
        signer: cfg,
        max_filesize,
        line: s.line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certs() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs")
    }

    /// A valid config whose paths point at the test certs, with `extra`
    /// appended to the [security] section.
    fn config_text(extra_security: &str) -> String {
        let c = certs();
        format!(
            "[server]\nport = 0\ntls_cert = {c}/server-chain.pem\ntls_key = {c}/server.key\nwork_dir = /tmp/x\n\n\
             [security]\nallowed_ips = 127.0.0.1/32, ::1\ntoken_secret = 0123456789abcdef0123\n{extra_security}\n\n\
             [format:gpg]\ntype = gpg\nkey = {c}/gpg/secret.asc\n",
            c = c.display()
        )
    }

    fn check_err(text: &str, line: usize, needle: &str) {
        let err = parse(Path::new("t.ini"), text).expect_err("config should be refused");
        assert_eq!(err.line, Some(line), "{err}");
        assert!(
            err.to_string().starts_with(&format!("t.ini:{line}: ")),
            "{err}"
        );
        assert!(
            err.message.contains(needle),
            "{err} should mention {needle}"
        );
    }

    #[test]
    fn valid_config_parses_with_defaults() {
        let cfg = parse(Path::new("t.ini"), &config_text("")).expect("valid");
        assert_eq!(cfg.server.max_file_age, Duration::from_secs(300));
        assert_eq!(cfg.server.max_queue, 64);
        assert_eq!(cfg.security.max_token_age, 3600);
        assert_eq!(cfg.security.min_filesize, 10);
        assert_eq!(cfg.security.allowed_ips.len(), 2);
        assert_eq!(cfg.formats.len(), 1);
        assert_eq!(cfg.formats[0].signer.name, "gpg");
    }

    #[test]
    fn errors_name_file_and_line() {
        // [security] starts on line 7 of config_text; its extra lines follow line 9.
        check_err(&config_text("allowed_filenames = ("), 10, "bad regex");
        check_err(
            &config_text("new_token_allowed_ips = 10.0.0.0/33"),
            10,
            "not an IP address or CIDR",
        );
        check_err(&config_text("colour = blue"), 10, "unknown key `colour`");
        check_err(&config_text("token_secret1 = short"), 10, "too short");
        check_err(&config_text("max_filesize = lots"), 10, "not a size");
    }

    #[test]
    fn missing_key_file_is_reported_on_its_line() {
        let text = config_text("").replace("gpg/secret.asc", "gpg/nope.asc");
        let err = parse(Path::new("t.ini"), &text).expect_err("missing file");
        assert!(err.message.contains("not found"), "{err}");
        assert_eq!(err.line, Some(14));
    }

    #[test]
    fn lists_keep_commas_inside_braces() {
        assert_eq!(
            split_list(r"a{1,3}\.exe, b.*,c"),
            vec![r"a{1,3}\.exe", "b.*", "c"]
        );
        assert_eq!(split_list("x\ny, z"), vec!["x", "y", "z"]);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10"), Some(10));
        assert_eq!(parse_size("2K"), Some(2048));
        assert_eq!(parse_size("5M"), Some(5 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("99999999999G"), None);
    }

    #[test]
    fn filename_regexes_match_whole_names() {
        let cfg = parse(
            Path::new("t.ini"),
            &config_text(r"allowed_filenames = .*\.exe, (setup){1,2}\.zip"),
        )
        .expect("valid");
        let ok = |n: &str| {
            cfg.security
                .allowed_filenames
                .iter()
                .any(|re| re.is_match(n))
        };
        assert!(ok("a.exe"));
        assert!(ok("setupsetup.zip"));
        assert!(!ok("a.exe.txt"));
        assert!(!ok("setup.zip.exe.x"));
    }
}
