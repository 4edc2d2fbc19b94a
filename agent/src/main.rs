//! `oi-agent`: the hypervisor agent, run as a systemd service.

use anyhow::{Context, Result};
use clap::Parser;
use oi_agent::agent::{self, AgentOptions};
use oi_agent::config::RawConfig;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "oi-agent", version, about = "oneinfra hypervisor agent")]
struct Cli {
    /// Configuration file (TOML).
    #[arg(
        long,
        short,
        env = "OI_AGENT_CONFIG",
        default_value = "/etc/oneinfra/agent/config.toml"
    )]
    config: PathBuf,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// List the components held from an earlier coordinator store (not
    /// adopted by the current one), or release them so that they are
    /// removed: their pods stop and their directories (etcd data included)
    /// are moved aside, not deleted. Takes effect when the agent next
    /// starts (`systemctl restart oi-agent`; no container restarts).
    ReleaseHeld {
        /// Release every held component.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Component ids to release, e.g. prod/etcd-0.
        ids: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if cli.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    let config = RawConfig::load(&cli.config)?
        .validate()
        .with_context(|| format!("invalid configuration in {}", cli.config.display()))?;
    if let Some(Command::ReleaseHeld { all, ids }) = cli.command {
        return release_held(&config, all, ids);
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start async runtime")?
        .block_on(run(config))
}

fn release_held(config: &oi_agent::config::Config, all: bool, ids: Vec<String>) -> Result<()> {
    use oi_agent::release::{request, Release};
    let state = config.placement_path();
    let held = oi_agent::state_file::load(&state)?
        .map(|p| p.held)
        .unwrap_or_default();
    if !all && ids.is_empty() {
        if held.is_empty() {
            println!("no component is held: every running component is in the current placement");
        } else {
            println!("held from an earlier coordinator store (running, not adopted):");
            for id in held.keys() {
                println!("  {id}");
            }
            println!("release with: oi-agent release-held --all, or oi-agent release-held ID...");
        }
        return Ok(());
    }
    if let Some(unknown) = ids.iter().find(|i| !held.contains_key(*i)) {
        anyhow::bail!(
            "{unknown} is not held here; `oi-agent release-held` lists the held components"
        );
    }
    let n = if all { held.len() } else { ids.len() };
    let release = if all { Release::All } else { Release::Ids(ids) };
    request(&state, &release)?;
    println!(
        "release of {n} component(s) recorded; it takes effect when the agent starts: \
         systemctl restart oi-agent (no container restarts; released pods stop and their \
         directories are moved aside under {})",
        config.state_dir.join("retired").display()
    );
    Ok(())
}

async fn run(config: oi_agent::config::Config) -> Result<()> {
    let link = oi_agent::link::link_config(&config)?;
    let runtime = Arc::new(oi_agent::runtime::connect(&config).await?);
    let handle = agent::start(
        AgentOptions {
            link,
            resync: config.resync,
        },
        runtime,
    )
    .await?;
    // Before READY: a SIGTERM right after it must find the handler.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install SIGTERM handler")?;
    // Ready once the persisted placement is loaded and supervised: a
    // coordinator outage must not hold up boot.
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "notify systemd of readiness");
    }
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping the agent; containers keep running"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping the agent; containers keep running"),
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    handle.shutdown().await;
    Ok(())
}
