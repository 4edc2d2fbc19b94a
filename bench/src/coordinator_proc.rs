//! `oi-bench coordinator`: the real coordinator (`Coordinator::start`, the
//! same runtime setup as `oi-coordinator serve`) in its own process, plus
//! the localhost control endpoint of [`crate::control`].

use crate::control::{agent_name, bench_component, Stats, WriteReply};
use crate::sys::mono_ns;
use anyhow::{bail, Context, Result};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use oi_coordinator::config::RawConfig;
use oi_coordinator::coordinator::Coordinator;
use oi_coordinator::store::PlacementChange;
use serde::Deserialize;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct CoordinatorArgs {
    /// Data directory (store, link CA).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// UDP address of the agent link.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// TCP address of the control endpoint.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub control: SocketAddr,
    /// Join/accept rate limit (connections per second). The coordinator has
    /// none yet: this is the hook to compare once it exists.
    #[arg(long)]
    pub accept_rate: Option<u32>,
    /// Experiment: receive/send buffer (bytes) to set on the link's UDP
    /// socket after start (the coordinator leaves the kernel default).
    #[arg(long)]
    pub link_sockbuf: Option<usize>,
}

pub fn main(args: CoordinatorArgs) -> Result<()> {
    // As `oi-coordinator serve`: the default multi-threaded runtime.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start async runtime")?
        .block_on(serve(args))
}

async fn serve(args: CoordinatorArgs) -> Result<()> {
    let raw = RawConfig {
        data_dir: Some(args.data_dir.clone()),
        listen: Some(args.listen.to_string()),
        metrics_listen: Some("127.0.0.1:0".into()),
        ..RawConfig::default()
    };
    let config = raw.validate().context("build coordinator configuration")?;
    if let Some(rate) = args.accept_rate {
        // HOOK: once the coordinator limits joins/accepts, set its config
        // field from `rate` here and drop this refusal.
        bail!(
            "--accept-rate {rate}: this coordinator has no join/accept rate limit yet; \
             wire it in bench/src/coordinator_proc.rs once it exists"
        );
    }
    let running = Coordinator::start(config)
        .await
        .context("start coordinator")?;
    if let Some(bytes) = args.link_sockbuf {
        let fd = crate::sys::udp_fd_bound_to(running.link_addr.port())
            .context("find the link's UDP socket")?;
        let (r, s) = crate::sys::set_fd_buffers(fd, bytes);
        tracing::warn!(
            rcvbuf = r,
            sndbuf = s,
            "experiment: link socket buffers set"
        );
    }
    let app = Router::new()
        .route("/stats", get(stats))
        .route("/upsert", post(upsert))
        .route("/fanout", post(fanout))
        .route("/balloon", post(balloon))
        .with_state(running.coordinator.clone());
    let listener = tokio::net::TcpListener::bind(args.control)
        .await
        .with_context(|| format!("bind control endpoint {}", args.control))?;
    let control = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        let metrics = running
            .metrics_addr
            .map_or_else(|| "-".to_string(), |a| a.to_string());
        writeln!(
            out,
            "READY link={} control={control} metrics={metrics}",
            running.link_addr
        )?;
        out.flush()?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install SIGTERM handler")?;
    tokio::select! {
        r = axum::serve(listener, app) => r.context("serve control endpoint")?,
        _ = term.recv() => {}
    }
    running.shutdown().await;
    Ok(())
}

type Reply<T> = Result<Json<T>, (StatusCode, String)>;

fn internal(e: impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// Cheap on purpose: copying every hypervisor's view would leave freed
/// memory in the allocator that the next RSS reading would count.
async fn stats(State(c): State<Coordinator>) -> Reply<Stats> {
    let (heap_live_bytes, heap_allocs) = crate::sys::heap();
    Ok(Json(Stats {
        epoch: c.epoch().to_string(),
        connected: c.metrics().connected_agents.get().max(0) as usize,
        heap_live_bytes,
        heap_allocs,
    }))
}

#[derive(Deserialize)]
struct UpsertQuery {
    hv: String,
    tag: String,
}

async fn upsert(State(c): State<Coordinator>, Query(q): Query<UpsertQuery>) -> Reply<WriteReply> {
    let start = mono_ns();
    let generations = c
        .upsert_component(&q.hv, bench_component(&q.hv, &q.tag))
        .await
        .map_err(internal)?;
    let done_ns = mono_ns();
    Ok(Json(WriteReply {
        done_ns,
        write_ns: done_ns - start,
        generations,
    }))
}

#[derive(Deserialize)]
struct FanoutQuery {
    tag: String,
    /// The fleet's size: hypervisors are `agent_name(0..n)`.
    n: usize,
}

/// One write that changes every hypervisor's placement.
async fn fanout(State(c): State<Coordinator>, Query(q): Query<FanoutQuery>) -> Reply<WriteReply> {
    let changes: Vec<PlacementChange> = (0..q.n)
        .map(|i| {
            let name = agent_name(i);
            PlacementChange::Upsert {
                component: bench_component(&name, &q.tag),
                hypervisor: name,
            }
        })
        .collect();
    let start = mono_ns();
    let generations = c.write_placement(changes).await.map_err(internal)?;
    let done_ns = mono_ns();
    Ok(Json(WriteReply {
        done_ns,
        write_ns: done_ns - start,
        generations,
    }))
}

#[derive(Deserialize)]
struct BalloonQuery {
    mib: usize,
}

/// Allocates, touches and frees `mib` MiB at once. Under a heap profiler
/// this makes "now" the peak, so the profile's peak attributes the memory
/// live at this moment (plus this balloon, easy to subtract).
async fn balloon(Query(q): Query<BalloonQuery>) -> Reply<Stats> {
    let v = vec![1u8; q.mib << 20];
    std::hint::black_box(&v);
    drop(v);
    let (heap_live_bytes, heap_allocs) = crate::sys::heap();
    Ok(Json(Stats {
        epoch: String::new(),
        connected: 0,
        heap_live_bytes,
        heap_allocs,
    }))
}
