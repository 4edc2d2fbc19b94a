//! `oi`: the oneinfra command line. Everything lives in
//! `oi_coordinator::cli` (exit codes are documented there and in
//! `oi --help`).

fn main() -> std::process::ExitCode {
    oi_coordinator::cli::main()
}
