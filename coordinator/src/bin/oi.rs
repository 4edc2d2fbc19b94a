//! `oi`: the oneinfra command line.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "oi", version, about = "oneinfra command line")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print version information.
    Version,
}

fn main() {
    match Cli::parse().command {
        Command::Version => {
            println!(
                "oi {} (link protocol {})",
                env!("CARGO_PKG_VERSION"),
                oi_proto::PROTOCOL_VERSION
            );
        }
    }
}
