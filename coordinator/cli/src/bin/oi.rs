//! `oi`: the oneinfra command line. Everything lives in
//! this crate (`oi_cli`) (exit codes are documented there and in
//! `oi --help`).

fn main() -> std::process::ExitCode {
    oi_cli::main()
}
