//! signtool: see the library (`signtool::main_with_args`) and `signtool --help`.

fn main() -> std::process::ExitCode {
    signtool::main_with_args(std::env::args_os().collect())
}
