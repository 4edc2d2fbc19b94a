//! Wires one agent together: the persisted placement, the supervisor that
//! runs pods through a [`Runtime`], and the link to the coordinator.
//!
//! Stopping an agent stops these tasks and nothing else: containers keep
//! running, to be adopted by the next agent process.

use crate::link::{Link, LinkConfig, LinkStatus};
use crate::runtime::Runtime;
use crate::state_file;
use crate::supervisor::Supervisor;
use anyhow::{Context, Result};
use oi_proto::model::{ComponentStatus, Placement};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct AgentOptions {
    pub link: LinkConfig,
    /// Full resync period of the supervisor.
    pub resync: Duration,
}

/// A running agent.
pub struct AgentHandle {
    pub placement: watch::Receiver<Arc<Placement>>,
    /// What runs; `None` until the supervisor's first pass has listed the
    /// runtime.
    pub status: watch::Receiver<Option<Vec<ComponentStatus>>>,
    pub link: watch::Receiver<LinkStatus>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl AgentHandle {
    /// Stops the link and the supervisor, not the containers. Time-boxed.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                tracing::warn!("agent task did not stop within 5s");
            }
        }
    }

    /// Ends the tasks abruptly, as a crash would (for tests).
    pub fn abort(self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

pub async fn start<R: Runtime>(opts: AgentOptions, runtime: Arc<R>) -> Result<AgentHandle> {
    let held = state_file::load(&opts.link.state_path)
        .with_context(|| format!("load placement from {}", opts.link.state_path.display()))?;
    let (held, released) = crate::release::apply_pending(&opts.link.state_path, held)
        .context("apply the release request of `oi-agent release-held`")?;
    for id in &released {
        tracing::warn!(component = %id, "released by the operator: it will be removed (its directory moved aside)");
    }
    if let Some(p) = &held {
        tracing::info!(
            cursor = %p.cursor,
            components = p.components.len(),
            held = p.held.len(),
            "resuming persisted placement"
        );
    }
    let runtime_info = runtime.info().await.context("query container runtime")?;
    let (desired_tx, desired_rx) = watch::channel(Arc::new(held.unwrap_or_default()));
    let (status_tx, status_rx) = watch::channel(None);
    let (link_tx, link_rx) = watch::channel(LinkStatus::Connecting {
        attempt: 0,
        last_error: None,
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let supervisor = Supervisor::new(runtime, desired_rx.clone(), status_tx, opts.resync);
    let sup_task = tokio::spawn(supervisor.run(shutdown_rx.clone()));
    let link = Link::new(
        opts.link,
        runtime_info,
        desired_tx,
        status_rx.clone(),
        link_tx,
    )?;
    let link_task = tokio::spawn(link.run(shutdown_rx));
    Ok(AgentHandle {
        placement: desired_rx,
        status: status_rx,
        link: link_rx,
        shutdown: shutdown_tx,
        tasks: vec![link_task, sup_task],
    })
}
