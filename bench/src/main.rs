//! `oi-bench`: see bench/README.md.

use anyhow::Result;
use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOC: oi_bench::sys::CountingAlloc = oi_bench::sys::CountingAlloc;

#[derive(Parser)]
#[command(name = "oi-bench", about = "oneinfra benchmarks (see bench/README.md)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// N simulated agents against a real coordinator process.
    Fleet(oi_bench::fleet::FleetArgs),
    /// The coordinator under test, with a localhost control endpoint (run
    /// by `fleet`).
    Coordinator(oi_bench::coordinator_proc::CoordinatorArgs),
    /// RSS and idle CPU of the real oi-agent against a real containerd.
    AgentFootprint(oi_bench::footprint::FootprintArgs),
    /// Placements per second of the pure scheduler over synthetic fleets.
    Schedule(oi_bench::schedule::ScheduleArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Fleet(a) => oi_bench::fleet::main(a),
        Command::Coordinator(a) => oi_bench::coordinator_proc::main(a),
        Command::AgentFootprint(a) => oi_bench::footprint::main(a),
        Command::Schedule(a) => oi_bench::schedule::main(a),
    }
}
