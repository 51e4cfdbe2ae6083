//! signtool: the client build machines run against signing-server hosts.
//!
//! `signtool sign` (or bare `signtool`, with Mozilla's signtool 4.x flags)
//! takes each file through: local cache → `GET /sign/FORMAT/HASH` → upload on
//! a plain 404 → long-poll GET → digest check → temp file beside the
//! destination, fsync, rename. Hosts fail over (`hosts.rs`), transfers stream
//! from and to disk (`transfer.rs`). `signtool token` mints tokens (`token.rs`).
//!
//! Where a host's /health says a format signs digests (issue 16), it sends
//! only what the signature covers and builds the output itself with the
//! `formats` crate's client halves (`digest.rs`); `health.rs` reads each
//! host's /health once (limits, detached or not, digest signing).
//!
//! It deliberately does not sign anything itself (no key ever reaches it), trust
//! any certificate but the `-c` file, or write a result it has not verified
//! against the server's digest header (uploads) or checked against what it
//! sent (digest signing).

mod bundle;
mod cache;
pub mod cli;
mod digest;
pub mod health;
pub mod hosts;
pub mod log;
pub mod session;
pub mod sign;
pub mod tls;
pub mod token;
pub mod transfer;
pub mod transparency;
mod upload;

use std::process::ExitCode;

use clap::Parser;

/// Exit status: every file signed.
pub const EXIT_OK: u8 = 0;
/// Exit status: some file could not be signed (or the server refused a token).
pub const EXIT_FAILED: u8 = 1;
/// Exit status: usage or local error.
pub const EXIT_LOCAL: u8 = 2;
/// Exit status of `token`: a second person must approve; the request is on stdout.
pub const EXIT_APPROVAL: u8 = 3;

/// Parses `args` (argv) and runs; returns the process exit code.
pub fn main_with_args(args: Vec<std::ffi::OsString>) -> ExitCode {
    let cli = match cli::Cli::try_parse_from(cli::with_default_command(args)) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_LOCAL } else { EXIT_OK });
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("signtool: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_LOCAL);
        }
    };
    let code = rt.block_on(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("signtool: cannot install a SIGTERM handler: {e}");
                return EXIT_LOCAL;
            }
        };
        // Dropping the command's future on a signal drops every temp file it
        // holds (they delete themselves), so nothing partial is left behind;
        // destinations are only ever replaced by an atomic rename.
        tokio::select! {
            code = run(cli.command) => code,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("signtool: interrupted (SIGINT); temp files removed, no output left half-written");
                130
            }
            _ = term.recv() => {
                eprintln!("signtool: terminated (SIGTERM); temp files removed, no output left half-written");
                143
            }
        }
    });
    // Hashing threads may still be reading an input: do not wait for them.
    rt.shutdown_background();
    ExitCode::from(code)
}

async fn run(command: cli::Command) -> u8 {
    match command {
        cli::Command::Sign(args) => sign::run(args).await,
        cli::Command::Token(args) => token::run(args).await,
        cli::Command::Log(cmd) => log_command(cmd).await,
    }
}

/// `signtool log verify|watch`: 0 when the log checks, 1 when it does not.
async fn log_command(cmd: cli::LogCommand) -> u8 {
    let (args, signing_key) = match &cmd {
        cli::LogCommand::Verify(a) => (a, None),
        cli::LogCommand::Watch(w) => (&w.log, Some(w.signing_key.as_str())),
    };
    let key = match formats::tlog::NoteVerifier::parse(&args.log_key) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("signtool: --log-key: {e}");
            return EXIT_LOCAL;
        }
    };
    if signing_key.is_some() && args.since.is_none() {
        eprintln!("signtool: log watch needs --since FILE (a checkpoint saved by --save)");
        return EXIT_LOCAL;
    }
    let since = match &args.since {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("signtool: --since {}: {e}", p.display());
                return EXIT_LOCAL;
            }
        },
        None => None,
    };
    let client = match tls::client(&args.net) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("signtool: {e:#}");
            return EXIT_LOCAL;
        }
    };
    let found =
        transparency::verify_log(&client, &args.url, &key, since.as_deref(), signing_key).await;
    let v = match found {
        Ok(v) => v,
        Err(e) => {
            eprintln!("signtool: the log at {} does not check: {e}", args.url);
            return EXIT_FAILED;
        }
    };
    for (index, entry) in &v.entries {
        println!("{index} {entry}");
    }
    eprintln!(
        "signtool: log {} checked: {} entries, every one included; checkpoint signed by {}{}",
        v.checkpoint.origin,
        v.checkpoint.size,
        key,
        if since.is_some() {
            ", consistent with the saved one"
        } else {
            ""
        }
    );
    if let Some(path) = &args.save {
        if let Err(e) = transparency::save(path, &v.note) {
            eprintln!("signtool: --save {}: {e}", path.display());
            return EXIT_LOCAL;
        }
    }
    EXIT_OK
}
