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
pub mod sign;
pub mod tls;
pub mod token;
pub mod transfer;
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
    }
}
