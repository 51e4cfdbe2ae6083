//! signtool: the client build machines run (issue 3; not written yet).

fn main() -> std::process::ExitCode {
    eprintln!("signtool: not implemented yet; use Mozilla's signtool 4.x against signing-server for now");
    std::process::ExitCode::from(2)
}
