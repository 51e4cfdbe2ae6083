//! Command line: the flags of Mozilla's `signtool` 4.x client (so build
//! scripts keep working), plus the knobs of failover and a `token` command.
//!
//! This module only parses and validates the shape of arguments; it does
//! not touch the network or the files named (see `sign.rs` / `token.rs`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes:
  0    every file was signed (or taken from the cache) and its result verified
  1    some file could not be signed; each is named with every host tried and
       what that host answered (or, for `token`, the server refused)
  2    usage error or local error (unreadable input, unwritable output, bad -c file)
  3    `token`: the formats asked for need a second person's approval; the request
       text is on stdout (hand it to an approver: signtool token --approve FILE)
  130  interrupted (SIGINT) / 143 terminated (SIGTERM): no partial file is left
";

const SIGN_AFTER: &str = "\
Outputs:
  no -o/-d     a signed file replaces the input in place (atomic rename; the file
               mode is kept); a detached signature goes to FILE.asc beside FILE, the
               file itself is left untouched. Which formats give detached signatures,
               each host's /health says (format_details.output); for an older host
               that does not, formats named gpg* do
  -o FILE      the one input's result goes to FILE (with gpg alone: the signature)
  -d DIR       results go to DIR/NAME (detached signatures to DIR/NAME.asc)
  Several formats on one file are applied in order, each signing the previous
  result; detached formats always come last and sign the final content.

Digest signing:
  Where a host's /health says a format allows it (digest_signing, set per format by
  `digest_signing = yes`), the file is not uploaded: signtool computes what the
  signature covers (gpg: the SHA-256 state of the file; mar: the digest of the MAR
  with its signature block in place; authenticode: the PE image hash), sends that,
  checks the signature that comes back (its digest, and for mar and authenticode
  the signature itself) and builds the output locally, then renames it into place
  as always. --whole-file uploads instead.
  Every result is checked against the server's X-SHA256-Digest (or X-SHA1-Digest)
  before it is written, through a temp file beside the destination, fsync, rename.

Failover:
  The hosts of each format are shuffled once per run. A connection error, timeout,
  TLS error or 5xx answer moves the file to the next host, after an exponential
  backoff with jitter (--backoff-base-ms, doubling up to --backoff-max-ms). A file
  fails after --max-errors such errors or when --timeout runs out. Answers that
  another host would repeat (400 bad token, 403, 404 unknown format, 413, 422
  signer rejected the file) fail the file at once with the server's message.
  While a result is pending the same host is long-polled; a file is uploaded only
  when a host answers a plain 404 (does not know it).

An `.app` directory given as an argument is a bundle: it is packed as .tar.gz
(symlinks kept), signed as one file (use an apple format: macapp, dmg), and the
signed bundle replaces the original in place (the original stays if anything fails).

Examples:
  signtool token -H sign1.example.net:9110 -c ca.pem -u tokenhost \\
      --password-file pw.txt -i 10.0.3.7 -d 7200 -o token
  signtool -H gpg:sign1.example.net:9110 -H gpg:sign2.example.net:9110 \\
      -c ca.pem -t token -n nonce -f gpg build/firefox.tar.bz2
  gpgv --keyring release.gpg build/firefox.tar.bz2.asc build/firefox.tar.bz2
  signtool -H gpg:mar:sign1:9110 -c ca.pem -t token -n nonce -f mar,gpg \\
      --cachedir ~/.cache/signtool --jobs 8 -i '*.mar' -d signed/ dist/
";

const TOKEN_AFTER: &str = "\
The server checks the peer address against new_token_allowed_ips and the user and
password against new_token_auth*; a 401 is reported as bad credentials (exit 1).
The token is written to -o FILE (mode 0600, atomically) or printed on stdout.
With --formats the token signs only with those formats (least privilege: a build
job that makes MARs needs no Authenticode token); a server that limits the user
with new_token_formats.USER refuses wider requests (403 naming the formats).

A user with a TOTP secret on the server gives the authenticator's current code with
--otp CODE (or types it when asked, on a terminal).

Formats under a two-person rule (approvals = 2 on the server): the server answers
202 with a request text instead of a token. signtool prints it on stdout and exits 3;
another user listed in the server's new_token_approvers.FORMAT turns it into the
token with --approve FILE (their own -u, password and --otp).

Examples:
  signtool token -H sign1.example.net:9110 -c ca.pem -u tokenhost \\
      --password-file pw.txt -i 10.0.3.7 -d 7200 --formats gpg,mar -o token
  signtool token -H sign1.example.net:9110 -c ca.pem -u alice --otp 123456 \\
      -i 10.0.3.7 -d 3600 --formats release-gpg > request.txt
  signtool token -H sign1.example.net:9110 -c ca.pem -u bob --otp 654321 \\
      --approve request.txt -o token
";

/// `signtool`: the signing service's client.
#[derive(Debug, Parser)]
#[command(
    name = "signtool",
    version,
    about = "Signs files on signing-server hosts, failing over between them; mints tokens",
    long_about = "Signs files on signing-server hosts, failing over between them, and mints tokens.\n\n\
                  `signtool ARGS` without a command is `signtool sign ARGS` (Mozilla's signtool flags).",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sign files (the default command).
    #[command(after_help = format!("{SIGN_AFTER}\n{EXIT_CODES}"), args_override_self = true)]
    Sign(SignArgs),
    /// Mint a token for a build machine (the token-issuing host's job).
    #[command(after_help = format!("{TOKEN_AFTER}\n{EXIT_CODES}"), args_override_self = true)]
    Token(TokenArgs),
    /// Check a host's transparency log of signatures.
    #[command(subcommand)]
    Log(LogCommand),
}

/// `signtool log …`.
#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Check a whole log: the checkpoint's signature, every entry's inclusion,
    /// and (with --since) consistency with a checkpoint saved earlier.
    Verify(LogArgs),
    /// Print the entries one signing key made since a saved checkpoint (after
    /// the checks of `verify`), so its owner can notice what they did not expect.
    Watch(WatchArgs),
}

/// `signtool log verify`.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// The log's URL prefix: `https://HOST:PORT/log` (its checkpoint is PREFIX/checkpoint).
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// The log's verifier key (`origin+ID+KEY`, as the server's /health and
    /// `signing-server --check` print it).
    #[arg(long, value_name = "VKEY")]
    pub log_key: String,
    /// A checkpoint saved by an earlier run (--save): the log must extend it.
    #[arg(long, value_name = "FILE")]
    pub since: Option<PathBuf>,
    /// Save the checked checkpoint here (for the next --since).
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
    /// TLS and timeouts.
    #[command(flatten)]
    pub net: Net,
}

/// `signtool log watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The checks of `log verify` (here --since is required).
    #[command(flatten)]
    pub log: LogArgs,
    /// The signing key to watch: the `key` of its entries (SHA-256 hex of its
    /// SubjectPublicKeyInfo, or an OpenPGP v4 fingerprint).
    #[arg(long, value_name = "KEYID")]
    pub signing_key: String,
}

/// TLS and timeouts shared by both commands.
#[derive(Debug, Args, Clone)]
pub struct Net {
    /// PEM file with the certificate(s) to trust: the CA that issued the servers'
    /// certificates, or a server's own certificate. Nothing else is trusted;
    /// host names are checked against the certificate's names.
    #[arg(short = 'c', long = "server-cert", value_name = "CERT")]
    pub cert: PathBuf,
    /// Seconds to wait for a TCP connection and TLS handshake.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Seconds of silence before giving up on a server: waiting for an answer,
    /// between chunks of a result, or an upload making no progress (a slow
    /// upload that keeps moving may take as long as it needs). Must be longer
    /// than the servers' long_poll (60 s by default).
    #[arg(long, value_name = "SECS", default_value_t = 120.0)]
    pub read_timeout: f64,
}

/// `signtool sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// A signing host: `FORMAT[:FORMAT…]:HOST[:PORT]` (port 443 if omitted; an IPv6
    /// address in brackets). Without formats the host serves every format. Repeat
    /// for each host.
    #[arg(
        short = 'H',
        long = "host",
        value_name = "FORMATS:HOST:PORT",
        required = true
    )]
    pub hosts: Vec<String>,
    /// TLS and timeouts.
    #[command(flatten)]
    pub net: Net,
    /// File holding the token (from `signtool token` or the token-issuing host).
    #[arg(short = 't', long = "token-file", value_name = "FILE")]
    pub token_file: PathBuf,
    /// File holding the nonce: sent with uploads, replaced by the server's X-Nonce.
    /// Kept for compatibility; the server does not check it.
    #[arg(short = 'n', long = "nonce-file", value_name = "FILE")]
    pub nonce_file: Option<PathBuf>,
    /// Formats to apply, in order (comma-separated and/or repeated); gpg* last.
    #[arg(
        short = 'f',
        long = "formats",
        value_name = "FORMAT[,FORMAT…]",
        required = true
    )]
    pub formats: Vec<String>,
    /// Output file (one input only).
    #[arg(
        short = 'o',
        long = "output-file",
        value_name = "FILE",
        conflicts_with = "output_dir"
    )]
    pub output_file: Option<PathBuf>,
    /// Output directory (created if missing).
    #[arg(short = 'd', long = "output-dir", value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// In directory arguments, sign only file names matching PATTERN (shell glob
    /// on the base name: `*.exe`, `firefox-??.dmg`). Repeatable; default `*`.
    #[arg(short = 'i', long = "include", value_name = "PATTERN")]
    pub includes: Vec<String>,
    /// In directory arguments, skip file names matching PATTERN. Repeatable.
    #[arg(short = 'x', long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<String>,
    /// Cache of results, keyed by FORMAT and the input's sha256: a hit needs no
    /// network at all, a verified result is stored.
    #[arg(long, value_name = "DIR")]
    pub cachedir: Option<PathBuf>,
    /// Files handled at once (uploads stream from disk; memory stays flat).
    #[arg(short = 'j', long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// Overall time limit for the whole run, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 1800.0)]
    pub timeout: f64,
    /// Errors (connection, timeout, 5xx, bad digest) tolerated per file and
    /// format before the file fails.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub max_errors: u32,
    /// First backoff delay after an error; doubles per error, with jitter.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub backoff_base_ms: u64,
    /// Largest backoff delay.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub backoff_max_ms: u64,
    /// Upload every file whole, even to hosts that sign its format by digest
    /// (by default a format whose host's /health says `digest_signing` is signed
    /// by sending only what its signature covers: the file never leaves).
    #[arg(long)]
    pub whole_file: bool,
    /// Refuse any result that is not in the host's transparency log: after each
    /// signing, fetch the log's checkpoint (signed by VKEY, the log's verifier
    /// key) and the proof that the result's entry is in it, from the log's tiles.
    #[arg(long, value_name = "VKEY")]
    pub log_key: Option<String>,
    /// Try hosts in the order given instead of shuffling them (debugging, tests).
    #[arg(long)]
    pub no_shuffle: bool,
    /// Only warnings and errors.
    #[arg(short = 'q', long, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Also log each request (GET, POST) and each pending answer.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Files, or directories to search (with -i/-x).
    #[arg(value_name = "FILE_OR_DIR", required = true)]
    pub paths: Vec<PathBuf>,
}

/// `signtool token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The token-issuing server, `HOST[:PORT]` (repeat to fail over).
    #[arg(short = 'H', long = "host", value_name = "HOST:PORT", required = true)]
    pub hosts: Vec<String>,
    /// TLS and timeouts.
    #[command(flatten)]
    pub net: Net,
    /// User name of a `new_token_auth` entry.
    #[arg(short = 'u', long = "user", value_name = "USER")]
    pub user: String,
    /// File whose first line is the password; without it, the password is asked
    /// on the terminal (not echoed).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// IP address of the build machine that will use the token.
    #[arg(
        short = 'i',
        long = "slave-ip",
        value_name = "IP",
        required_unless_present = "approve"
    )]
    pub slave_ip: Option<std::net::IpAddr>,
    /// Lifetime of the token in seconds (at most the server's max_token_age).
    #[arg(
        short = 'd',
        long = "duration",
        value_name = "SECONDS",
        required_unless_present = "approve"
    )]
    pub duration: Option<u64>,
    /// The one-time code of the user's authenticator (for a user with a TOTP
    /// secret on the server). Without it, it is asked on the terminal when
    /// the server says it needs one.
    #[arg(long, value_name = "CODE")]
    pub otp: Option<String>,
    /// Approve someone else's request (the text `signtool token` printed when
    /// the server answered 202) read from FILE (`-`: stdin), as user -u: the
    /// token is written to -o or printed.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["slave_ip", "duration", "formats"])]
    pub approve: Option<PathBuf>,
    /// Write the token here instead of stdout.
    #[arg(short = 'o', long = "output-file", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Limit the token to these formats (comma-separated, e.g. `gpg,mar_sha384`):
    /// it is refused (403) for any other. Without it the token serves every
    /// format, unless the server limits the user (`new_token_formats.USER`).
    #[arg(long = "formats", value_name = "FORMAT,...")]
    pub formats: Option<String>,
}

/// argv with `sign` inserted when no command is named (Mozilla's flags).
pub fn with_default_command(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let first = args.get(1).and_then(|a| a.to_str()).unwrap_or("");
    let known = [
        "sign",
        "token",
        "log",
        "help",
        "-h",
        "--help",
        "-V",
        "--version",
    ];
    if args.len() > 1 && !known.contains(&first) {
        args.insert(1, "sign".into());
    }
    args
}

/// `-f` values: comma lists flattened, duplicates dropped, gpg* moved last
/// (a detached signature must cover the final content).
pub fn formats(raw: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for f in raw.iter().flat_map(|s| s.split(',')).map(str::trim) {
        if f.is_empty()
            || !f
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!("invalid format name {f:?}"));
        }
        if !out.iter().any(|o| o == f) {
            out.push(f.to_string());
        }
    }
    let (mut content, detached): (Vec<String>, Vec<String>) =
        out.into_iter().partition(|f| !is_detached(f));
    content.extend(detached);
    Ok(content)
}

/// Formats whose result is a detached signature written beside the file,
/// guessed from the name (`gpg` and `gpg…`, e.g. `gpg-nightly`): only for a
/// host whose /health does not say (`format_details.output`; older servers).
pub fn is_detached(format: &str) -> bool {
    format.starts_with("gpg")
}

/// One `-H` value: the formats it serves (empty = all) and `https://HOST:PORT`.
pub fn parse_host(spec: &str) -> Result<(Vec<String>, String), String> {
    let bad = || format!("bad host {spec:?}: expected FORMAT[:FORMAT…]:HOST[:PORT]");
    let (formats_part, host, port) = if let Some(open) = spec.find('[') {
        let close = spec.find(']').ok_or_else(bad)?;
        let host = spec.get(open..=close).ok_or_else(bad)?;
        let rest = spec.get(close + 1..).unwrap_or("");
        let port = match rest.strip_prefix(':') {
            Some(p) => p,
            None if rest.is_empty() => "443",
            None => return Err(bad()),
        };
        (
            spec.get(..open).unwrap_or("").trim_end_matches(':'),
            host,
            port,
        )
    } else {
        let parts: Vec<&str> = spec.split(':').collect();
        let n = parts.len();
        let last = parts.last().copied().unwrap_or("");
        if n >= 2 && !last.is_empty() && last.chars().all(|c| c.is_ascii_digit()) {
            let host = parts.get(n - 2).copied().unwrap_or("");
            let prefix_len = parts.iter().take(n - 2).map(|p| p.len() + 1).sum::<usize>();
            (
                spec.get(..prefix_len).unwrap_or("").trim_end_matches(':'),
                host,
                last,
            )
        } else {
            let prefix_len = parts.iter().take(n - 1).map(|p| p.len() + 1).sum::<usize>();
            (
                spec.get(..prefix_len).unwrap_or("").trim_end_matches(':'),
                last,
                "443",
            )
        }
    };
    if host.is_empty() || host == "[]" || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    let formats = if formats_part.is_empty() {
        Vec::new()
    } else {
        formats_part.split(':').map(str::to_string).collect()
    };
    Ok((formats, format!("https://{host}:{port}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_specs() {
        assert_eq!(
            parse_host("gpg:127.0.0.1:9110").unwrap(),
            (vec!["gpg".into()], "https://127.0.0.1:9110".into())
        );
        assert_eq!(
            parse_host("gpg:mar:sign1.example.net").unwrap(),
            (
                vec!["gpg".into(), "mar".into()],
                "https://sign1.example.net:443".into()
            )
        );
        assert_eq!(
            parse_host("localhost:1").unwrap(),
            (vec![], "https://localhost:1".into())
        );
        assert_eq!(
            parse_host("gpg:[::1]:9110").unwrap(),
            (vec!["gpg".into()], "https://[::1]:9110".into())
        );
        assert!(parse_host("gpg:host:99999").is_err());
        assert!(parse_host("gpg:").is_err());
    }

    #[test]
    fn formats_flatten_dedup_and_gpg_last() {
        let f = formats(&["gpg,mar".into(), "sha2signcode".into(), "mar".into()]).unwrap();
        assert_eq!(f, ["mar", "sha2signcode", "gpg"]);
        assert!(formats(&["../x".into()]).is_err());
    }

    #[test]
    fn bare_invocation_means_sign() {
        let a = with_default_command(vec!["signtool".into(), "-H".into(), "x".into()]);
        assert_eq!(a.get(1).unwrap(), "sign");
        let a = with_default_command(vec!["signtool".into(), "token".into()]);
        assert_eq!(a.get(1).unwrap(), "token");
        let cli = Cli::try_parse_from(with_default_command(
            [
                "signtool",
                "-H",
                "gpg:h:1",
                "-c",
                "ca",
                "-t",
                "t",
                "-f",
                "gpg",
                "--timeout",
                "5",
                "--timeout",
                "6",
                "-H",
                "gpg:i:2",
                "f",
            ]
            .map(Into::into)
            .to_vec(),
        ))
        .unwrap();
        let Command::Sign(a) = cli.command else {
            panic!("not sign")
        };
        assert_eq!(a.hosts.len(), 2, "-H accumulates");
        assert_eq!(a.timeout, 6.0, "the last value of a setting wins");
    }
}
