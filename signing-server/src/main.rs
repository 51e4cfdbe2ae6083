//! `signing-server CONFIG`: see `signing-server --help`.
use clap::Parser as _;

fn main() -> std::process::ExitCode {
    signing_server::server::main(signing_server::server::Cli::parse())
}
