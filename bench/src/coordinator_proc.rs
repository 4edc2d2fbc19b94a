//! `oi-bench coordinator`: the real coordinator (`Coordinator::start`, the
//! same runtime setup as `oi-coordinator serve`) in its own process, plus
//! the localhost control endpoint of [`crate::control`].

use crate::control::{agent_name, bench_component, Stats, WriteReply};
use crate::sys::mono_ns;
use anyhow::{Context, Result};
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
    /// Agent handshakes accepted per second (`link_accept_rate`); unset:
    /// no limit.
    #[arg(long)]
    pub accept_rate: Option<u32>,
    /// Receive/send buffer of the link's UDP socket in bytes
    /// (`link_socket_buffer_bytes`); unset: the coordinator's default
    /// (8 MiB); 0: the kernel's default.
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
        api_listen: Some(String::new()),
        link_accept_rate: args.accept_rate,
        link_socket_buffer_bytes: args.link_sockbuf,
        ..RawConfig::default()
    };
    let config = raw.validate().context("build coordinator configuration")?;
    let running = Coordinator::start(config)
        .await
        .context("start coordinator")?;
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
