//! `oi-coordinator`: the coordinator service.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use oi_coordinator::config::RawConfig;
use oi_coordinator::coordinator::Coordinator;
use oi_coordinator::link_pki::LinkCa;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "oi-coordinator", version, about = "oneinfra coordinator")]
struct Cli {
    /// Configuration file (TOML). Without it, defaults apply.
    #[arg(long, short, env = "OI_COORDINATOR_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Override `data_dir`.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Override `listen` (UDP address of the agent link).
    #[arg(long, global = true)]
    listen: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the coordinator (the default).
    Serve,
    /// Issue a client certificate for a hypervisor and write ca.pem,
    /// agent.pem and agent.key (0600) into DIR, for the agent's `pki_dir`.
    IssueAgentCert {
        #[arg(long)]
        name: String,
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_json);
    let mut raw = match &cli.config {
        Some(p) => RawConfig::load(p)?,
        None => RawConfig::default(),
    };
    if cli.data_dir.is_some() {
        raw.data_dir = cli.data_dir.clone();
    }
    if cli.listen.is_some() {
        raw.listen = cli.listen.clone();
    }
    let config = raw.validate().context("invalid configuration")?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::IssueAgentCert { name, out } => {
            oi_proto::fsutil::create_private_dir(&config.data_dir)?;
            let ca = LinkCa::load_or_create(&config.data_dir)?;
            let issued = ca.issue_agent(&name)?;
            let w = oi_proto::fsutil::write_atomic;
            w(&out.join("ca.pem"), ca.cert_pem().as_bytes(), 0o644)?;
            w(&out.join("agent.pem"), issued.cert_pem.as_bytes(), 0o644)?;
            w(&out.join("agent.key"), issued.key_pem.as_bytes(), 0o600)?;
            println!(
                "wrote {}/{{ca.pem,agent.pem,agent.key}} for hypervisor {name:?}",
                out.display()
            );
            Ok(())
        }
        Command::Serve => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("start async runtime")?
            .block_on(serve(config)),
    }
}

async fn serve(config: oi_coordinator::config::Config) -> Result<()> {
    let mut running = Coordinator::start(config).await?;
    // Before READY: a SIGTERM right after it must find the handler.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install SIGTERM handler")?;
    // Ready: the store is open and every listener is bound.
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "notify systemd of readiness");
    }
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = running.wait() => anyhow::bail!("agent link stopped unexpectedly"),
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    running.shutdown().await;
    Ok(())
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
