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
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start async runtime")?
        .block_on(run(config))
}

async fn run(config: oi_agent::config::Config) -> Result<()> {
    let link = config.link_config()?;
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
