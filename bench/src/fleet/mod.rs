//! `oi-bench fleet --agents N`: N simulated agents against a real
//! coordinator process over QUIC with mutual TLS. See bench/README.md for
//! what each figure means and how it is taken.

pub mod agent;
pub mod coord;

use crate::control::{agent_name, call_json, Stats, WriteReply};
use crate::procfs;
use crate::stats::{summarize, Summary};
use crate::sys::{mono_ns, raise_nofile, set_udp_buffers};
use agent::{Shared, SimAgent};
use anyhow::{bail, Context, Result};
use coord::CoordProc;
use oi_coordinator::link_pki::LinkCa;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(clap::Args, Debug, Clone)]
pub struct FleetArgs {
    /// Number of simulated agents.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// UDP sockets (quinn endpoints) the simulated agents share; 0: one per
    /// 250 agents (at least 4). A real agent has a socket of its own: with
    /// too few, the driver's sockets drop packets the fleet would not.
    #[arg(long, default_value_t = 0)]
    pub endpoints: usize,
    /// Single-agent placement changes to time.
    #[arg(long, default_value_t = 200)]
    pub single_writes: usize,
    /// Whole-fleet placement changes to time.
    #[arg(long, default_value_t = 5)]
    pub fanouts: usize,
    /// Length of the idle CPU window, seconds.
    #[arg(long, default_value_t = 30)]
    pub idle_secs: u64,
    /// Skip the kill -9 / restart reconnect storm.
    #[arg(long)]
    pub no_storm: bool,
    /// Link handshakes the coordinator accepts per second
    /// (`link_accept_rate`); the excess is refused at once and retries.
    #[arg(long)]
    pub accept_rate: Option<u32>,
    /// Experiment: set the coordinator link socket's buffers to this many
    /// bytes (capped by net.core.rmem_max / wmem_max).
    #[arg(long)]
    pub link_sockbuf: Option<usize>,
    /// Bound on every wait (connect, converge), seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    /// Where the coordinator's data and log go (default: a new dir in /tmp,
    /// removed at the end).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Also write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Default, Serialize, Clone, Copy)]
pub struct MemPoint {
    pub rss_kib: u64,
    pub pss_kib: u64,
    pub heap_kib: u64,
    pub threads: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Latency {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub missed: usize,
}

impl Latency {
    fn from(samples: &[Duration], missed: usize) -> Self {
        let s: Summary = summarize(samples);
        Self {
            count: s.count,
            p50_ms: s.p50.as_secs_f64() * 1e3,
            p99_ms: s.p99.as_secs_f64() * 1e3,
            max_ms: s.max.as_secs_f64() * 1e3,
            missed,
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Storm {
    /// Kill to each agent noticing the link is gone (s): p50 and max.
    pub detect_p50_s: f64,
    pub detect_max_s: f64,
    /// Kill to the restarted coordinator answering.
    pub restart_ready_s: f64,
    /// Kill to all N connected again / connected and holding the right
    /// generation. `None`: not within the timeout.
    pub all_connected_s: Option<f64>,
    pub all_converged_s: Option<f64>,
    /// The same, counted from the restarted coordinator being ready.
    pub converged_after_ready_s: Option<f64>,
    pub converged: usize,
    pub failures: BTreeMap<String, u64>,
    pub coordinator_udp_drops: Option<u64>,
    /// Durable store writes (count, seconds) by the restarted coordinator.
    pub store_writes: Option<(u64, f64)>,
    /// Every 5 s: agents back, CPU of each process, machine busy.
    pub timeline: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct FleetReport {
    pub agents: usize,
    pub endpoints: usize,
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub cert_issue_s: f64,
    pub connect_all_s: Option<f64>,
    pub connect_p50_ms: f64,
    pub connect_p99_ms: f64,
    pub connect_failures: BTreeMap<String, u64>,
    /// Durable store writes (count, seconds) while the fleet connected.
    pub connect_store_writes: Option<(u64, f64)>,
    pub baseline: MemPoint,
    pub steady: MemPoint,
    pub after_writes: MemPoint,
    pub after_storm: Option<MemPoint>,
    pub rss_per_agent_kib: f64,
    pub pss_per_agent_kib: f64,
    pub heap_per_agent_kib: f64,
    pub rss_per_agent_after_storm_kib: Option<f64>,
    pub idle_window_s: f64,
    pub idle_mcpu: f64,
    pub driver_idle_mcpu: f64,
    pub single: Latency,
    pub single_write_p50_ms: f64,
    pub fanout_first_last_ms: f64,
    pub fanout_last: Latency,
    pub fanout_each: Latency,
    pub fanout_write_p50_ms: f64,
    /// CPU seconds (coordinator, driver) from each fleet-wide write's reply
    /// to its last agent.
    pub fanout_cpu_s: Vec<(f64, f64)>,
    pub storm: Option<Storm>,
    pub coordinator_udp_drops: Option<u64>,
    /// Drops on the simulated agents' sockets over the whole run.
    pub agent_udp_drops: u64,
}

pub fn main(args: FleetArgs) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start async runtime")?
        .block_on(run(args))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

async fn mem_point(c: &CoordProc) -> Result<MemPoint> {
    let s = procfs::sample(c.pid)?;
    let stats: Stats = call_json(c.control, "GET", "/stats").await?;
    Ok(MemPoint {
        rss_kib: s.rss_kib,
        pss_kib: s.pss_kib,
        heap_kib: stats.heap_live_bytes / 1024,
        threads: s.threads,
    })
}

/// Polls `cond` every 5 ms until it holds or `limit` passes.
async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn ns_to(d: u64) -> Duration {
    Duration::from_nanos(d)
}

async fn run(args: FleetArgs) -> Result<()> {
    if args.agents == 0 {
        bail!("--agents must be at least 1");
    }
    let n = args.agents;
    let sockets = endpoint_count(args.endpoints, n);
    let limit = Duration::from_secs(args.timeout_secs);
    let nofile = raise_nofile(4096 + 2 * n as u64)?;
    let mut report = FleetReport {
        agents: n,
        endpoints: sockets,
        loadavg_start: loadavg(),
        ..Default::default()
    };
    let (work, _guard) = match &args.work_dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile_dir()?;
            (t.0.clone(), Some(t))
        }
    };
    let data_dir = work.join("coordinator");
    let log = work.join("coordinator.log");
    eprintln!(
        "fleet: {n} agents, {sockets} agent sockets, nofile {nofile}, work dir {}",
        work.display()
    );

    // Agent identities, from the coordinator's own CA, before it starts.
    oi_proto::fsutil::create_private_dir(&data_dir)?;
    let t = Instant::now();
    let ca = LinkCa::load_or_create(&data_dir).context("create the link CA")?;
    let ca_der = oi_proto::tls::parse_certs(ca.cert_pem().as_bytes())?;
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let issued = ca.issue_agent(&agent_name(i))?;
        let id = oi_proto::tls::Identity::from_pem(
            issued.cert_pem.as_bytes(),
            issued.key_pem.as_bytes(),
        )?;
        clients.push(oi_proto::tls::client_config(Some(&id), &ca_der)?);
    }
    report.cert_issue_s = t.elapsed().as_secs_f64();
    eprintln!(
        "fleet: issued {n} certificates in {:.1} s",
        report.cert_issue_s
    );

    let any: SocketAddr = "127.0.0.1:0".parse()?;
    let coord = CoordProc::spawn(&data_dir, any, args.accept_rate, args.link_sockbuf, &log).await?;
    let link = coord.link;
    tokio::time::sleep(Duration::from_secs(3)).await;
    report.baseline = mem_point(&coord).await?;
    eprintln!(
        "fleet: coordinator pid {} on {link}; baseline {:?}",
        coord.pid, report.baseline
    );

    // Shared sockets for the simulated agents, with the largest buffers the
    // kernel allows (a real agent has a socket of its own).
    let mut endpoints = Vec::new();
    for _ in 0..sockets {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").context("bind agent socket")?;
        let (r, s) = set_udp_buffers(&sock, 8 << 20);
        if endpoints.is_empty() {
            eprintln!("fleet: agent socket buffers rcv {r} snd {s} bytes");
        }
        endpoints.push(quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            sock,
            Arc::new(quinn::TokioRuntime),
        )?);
    }

    let agent_ports: Vec<u16> = endpoints
        .iter()
        .filter_map(|e| e.local_addr().ok().map(|a| a.port()))
        .collect();

    // Connect all N at once, as a fleet that comes up together.
    let shared = Shared::new(n);
    let (stop_tx, stop_rx) = watch::channel(false);
    let start_ns = mono_ns();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, client) in clients.into_iter().enumerate() {
        let a = SimAgent {
            index: i,
            name: agent_name(i),
            client,
            endpoint: endpoints[i % endpoints.len()].clone(),
            server: link,
            shared: shared.clone(),
        };
        tasks.spawn(a.run(stop_rx.clone()));
    }
    let slots = &shared.slots;
    let all_synced = || {
        slots
            .iter()
            .all(|s| s.synced_session.load(Ordering::Acquire) >= 1)
    };
    if wait_until(limit, all_synced).await {
        let times: Vec<Duration> = slots
            .iter()
            .map(|s| ns_to(s.connected_ns.load(Ordering::Acquire) - start_ns))
            .collect();
        let sum = summarize(&times);
        report.connect_all_s = Some(sum.max.as_secs_f64());
        report.connect_p50_ms = sum.p50.as_secs_f64() * 1e3;
        report.connect_p99_ms = sum.p99.as_secs_f64() * 1e3;
    }
    report.connect_failures = shared
        .failures
        .lock()
        .map(|f| f.clone())
        .unwrap_or_default();
    report.connect_store_writes = coord.store_writes().await;
    let connected = slots
        .iter()
        .filter(|s| s.connected.load(Ordering::Acquire))
        .count();
    eprintln!(
        "fleet: connect all: {:?} s ({connected}/{n} connected), failures {:?}",
        report.connect_all_s, report.connect_failures
    );
    if connected < n {
        bail!("only {connected} of {n} agents connected within {limit:?}");
    }

    // A component on every hypervisor: the steady state measured below.
    let mut expected = vec![0u64; n];
    report.fanout_first_last_ms = fanout(&coord, slots, &mut expected, "init", limit)
        .await?
        .last
        .as_secs_f64()
        * 1e3;
    tokio::time::sleep(Duration::from_secs(5)).await;
    report.steady = mem_point(&coord).await?;
    if std::env::var_os("OI_BENCH_COORD_WRAP").is_some() {
        // Profiling: make the steady state the heap profile's peak.
        let _: Stats = call_json(coord.control, "POST", "/balloon?mib=256").await?;
    }
    let per = |a: u64, b: u64| (a as f64 - b as f64) / n as f64;
    report.rss_per_agent_kib = per(report.steady.rss_kib, report.baseline.rss_kib);
    report.pss_per_agent_kib = per(report.steady.pss_kib, report.baseline.pss_kib);
    report.heap_per_agent_kib = per(report.steady.heap_kib, report.baseline.heap_kib);
    eprintln!(
        "fleet: steady {:?}: {:.1} KiB RSS, {:.1} KiB PSS, {:.1} KiB heap per agent",
        report.steady,
        report.rss_per_agent_kib,
        report.pss_per_agent_kib,
        report.heap_per_agent_kib
    );

    // Idle: N connected, heartbeats flowing, nothing changing.
    let me = std::process::id();
    let driver_before = procfs::sample(me)?;
    let w = procfs::watch(coord.pid, Duration::from_secs(args.idle_secs)).await?;
    let driver_after = procfs::sample(me)?;
    report.idle_window_s = w.elapsed.as_secs_f64();
    report.idle_mcpu = w.mcpu;
    report.driver_idle_mcpu = procfs::mcpu(
        driver_after.cpu_ticks - driver_before.cpu_ticks,
        w.elapsed,
        procfs::ticks_per_sec(),
    );
    eprintln!(
        "fleet: idle {:.0} s: coordinator {:.1} mCPU (driver {:.1} mCPU)",
        report.idle_window_s, report.idle_mcpu, report.driver_idle_mcpu
    );

    // One agent at a time.
    let mut lat = Vec::new();
    let mut writes = Vec::new();
    let mut missed = 0;
    for k in 0..args.single_writes {
        let i = rand::random_range(0..n);
        let name = agent_name(i);
        let r: WriteReply = call_json(
            coord.control,
            "POST",
            &format!("/upsert?hv={name}&tag=s{k}"),
        )
        .await?;
        let g = r.generations.get(&name).copied().unwrap_or(0);
        expected[i] = g;
        writes.push(ns_to(r.write_ns));
        let slot = &slots[i];
        if wait_until(Duration::from_secs(10), || {
            slot.generation.load(Ordering::Acquire) >= g
        })
        .await
        {
            let at = slot.applied_ns.load(Ordering::Acquire);
            lat.push(ns_to(at.saturating_sub(r.done_ns)));
        } else {
            missed += 1;
        }
    }
    report.single = Latency::from(&lat, missed);
    report.single_write_p50_ms = summarize(&writes).p50.as_secs_f64() * 1e3;
    eprintln!("fleet: single-agent fan-out {:?}", report.single);

    // The whole fleet at once.
    let mut lasts = Vec::new();
    let mut each = Vec::new();
    let mut fan_writes = Vec::new();
    let mut fan_cpu = Vec::new();
    let mut fan_missed = 0;
    for r in 0..args.fanouts {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let f = fanout(&coord, slots, &mut expected, &format!("f{r}"), limit).await?;
        if f.ok {
            lasts.push(f.last);
        } else {
            fan_missed += 1;
        }
        fan_cpu.push(f.cpu_s);
        fan_writes.push(f.write);
        eprintln!(
            "fleet: fan-out {r}: last agent after {:.1} ms (write took {:.1} ms); \
             CPU from reply to last agent: coordinator {:.2} s, driver {:.2} s",
            f.last.as_secs_f64() * 1e3,
            f.write.as_secs_f64() * 1e3,
            f.cpu_s.0,
            f.cpu_s.1
        );
        each.extend(f.per_agent);
    }
    report.fanout_cpu_s = fan_cpu;
    report.fanout_last = Latency::from(&lasts, fan_missed);
    report.fanout_each = Latency::from(&each, 0);
    report.fanout_write_p50_ms = summarize(&fan_writes).p50.as_secs_f64() * 1e3;
    tokio::time::sleep(Duration::from_secs(3)).await;
    report.after_writes = mem_point(&coord).await?;
    report.coordinator_udp_drops = procfs::udp_drops(link.port());

    // Reconnect storm: kill -9, restart on the same address.
    let coord = if args.no_storm {
        coord
    } else {
        let (storm, coord) = storm(
            coord,
            &Setup {
                args: &args,
                data_dir: &data_dir,
                log: &log,
                link,
                agent_ports: &agent_ports,
            },
            &shared,
            &expected,
        )
        .await?;
        report.storm = Some(storm);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let m = mem_point(&coord).await?;
        report.rss_per_agent_after_storm_kib = Some(per(m.rss_kib, report.baseline.rss_kib));
        report.after_storm = Some(m);
        coord
    };

    report.agent_udp_drops = agent_ports
        .iter()
        .filter_map(|p| procfs::udp_drops(*p))
        .sum();
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    for ep in &endpoints {
        ep.close(0u32.into(), b"bench done");
    }
    coord.stop().await?;
    report.loadavg_end = loadavg();

    print_report(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// What one fleet-wide write did.
struct Fanout {
    /// Write returned -> the last agent applied it.
    last: Duration,
    /// Write returned -> each agent applied it.
    per_agent: Vec<Duration>,
    /// The write call itself (store transaction, index update).
    write: Duration,
    /// Whether every agent got it within the limit.
    ok: bool,
    /// CPU seconds from the reply to the last agent: coordinator, driver.
    cpu_s: (f64, f64),
}

/// One write that changes every hypervisor; waits until every agent holds
/// its new generation.
async fn fanout(
    coord: &CoordProc,
    slots: &[agent::Slot],
    expected: &mut [u64],
    tag: &str,
    limit: Duration,
) -> Result<Fanout> {
    let path = format!("/fanout?tag={tag}&n={}", slots.len());
    let r: WriteReply = call_json(coord.control, "POST", &path).await?;
    let me = std::process::id();
    let ticks = || {
        (
            procfs::sample(coord.pid).map(|s| s.cpu_ticks).unwrap_or(0),
            procfs::sample(me).map(|s| s.cpu_ticks).unwrap_or(0),
        )
    };
    let before = ticks();
    for (i, e) in expected.iter_mut().enumerate() {
        if let Some(g) = r.generations.get(&agent_name(i)) {
            *e = *g;
        }
    }
    let ok = wait_until(limit, || {
        slots
            .iter()
            .zip(expected.iter())
            .all(|(s, e)| s.generation.load(Ordering::Acquire) >= *e)
    })
    .await;
    let per_agent: Vec<Duration> = slots
        .iter()
        .zip(expected.iter())
        .filter(|(s, e)| s.generation.load(Ordering::Acquire) >= **e)
        .map(|(s, _)| {
            ns_to(
                s.applied_ns
                    .load(Ordering::Acquire)
                    .saturating_sub(r.done_ns),
            )
        })
        .collect();
    let after = ticks();
    let tps = procfs::ticks_per_sec() as f64;
    let last = per_agent.iter().max().copied().unwrap_or_default();
    Ok(Fanout {
        last,
        per_agent,
        write: ns_to(r.write_ns),
        ok,
        cpu_s: (
            after.0.saturating_sub(before.0) as f64 / tps,
            after.1.saturating_sub(before.1) as f64 / tps,
        ),
    })
}

/// Agent sockets to use: `asked`, or one per 250 agents (at least 4).
pub fn endpoint_count(asked: usize, agents: usize) -> usize {
    if asked > 0 {
        asked
    } else {
        agents.div_ceil(250).max(4)
    }
}

/// Where the fleet runs: what a coordinator restart needs.
struct Setup<'a> {
    args: &'a FleetArgs,
    data_dir: &'a std::path::Path,
    log: &'a std::path::Path,
    link: SocketAddr,
    agent_ports: &'a [u16],
}

async fn storm(
    coord: CoordProc,
    setup: &Setup<'_>,
    shared: &Arc<Shared>,
    expected: &[u64],
) -> Result<(Storm, CoordProc)> {
    let Setup {
        args,
        data_dir,
        log,
        link,
        agent_ports,
    } = *setup;
    let slots = &shared.slots;
    let limit = Duration::from_secs(args.timeout_secs);
    let before: Vec<u64> = slots
        .iter()
        .map(|s| s.sessions.load(Ordering::Acquire))
        .collect();
    if let Ok(mut f) = shared.failures.lock() {
        f.clear();
    }
    let mut timeline = Vec::new();
    let kill_ns = mono_ns();
    coord.kill9().await?;
    let coord = CoordProc::spawn(data_dir, link, args.accept_rate, args.link_sockbuf, log).await?;
    let ready_ns = mono_ns();
    eprintln!(
        "fleet: killed and restarted the coordinator (pid {}) in {:.2} s",
        coord.pid,
        (ready_ns - kill_ns) as f64 / 1e9
    );
    let reconnected = |i: usize| slots[i].sessions.load(Ordering::Acquire) > before[i];
    let converged = |i: usize| {
        let s = &slots[i];
        let session = s.sessions.load(Ordering::Acquire);
        session > before[i]
            && s.synced_session.load(Ordering::Acquire) == session
            && s.generation.load(Ordering::Acquire) == expected[i]
    };
    let n = slots.len();
    let mut all_connected_ns = None;
    let start = Instant::now();
    let mut done = false;
    // A timeline every 5 s: who is back, and who had the CPU.
    let me = std::process::id();
    let tps = procfs::ticks_per_sec() as f64;
    let mut tick_at = Instant::now();
    let mut prev = (
        procfs::sample(coord.pid).map(|s| s.cpu_ticks).unwrap_or(0),
        procfs::sample(me).map(|s| s.cpu_ticks).unwrap_or(0),
        procfs::machine_busy().unwrap_or_default(),
    );
    while start.elapsed() < limit {
        if all_connected_ns.is_none() && (0..n).all(reconnected) {
            all_connected_ns = Some(mono_ns());
        }
        if (0..n).all(converged) {
            done = true;
            break;
        }
        if tick_at.elapsed() >= Duration::from_secs(5) {
            let now = (
                procfs::sample(coord.pid).map(|s| s.cpu_ticks).unwrap_or(0),
                procfs::sample(me).map(|s| s.cpu_ticks).unwrap_or(0),
                procfs::machine_busy().unwrap_or_default(),
            );
            let secs = tick_at.elapsed().as_secs_f64();
            let line = format!(
                "t={:5.1}s connected {:5} converged {:5} | cores: coordinator {:.2}, driver {:.2}, machine busy {:.0}% | udp drops: coordinator {:?}, agents {}",
                (mono_ns() - kill_ns) as f64 / 1e9,
                (0..n).filter(|&i| reconnected(i)).count(),
                (0..n).filter(|&i| converged(i)).count(),
                now.0.saturating_sub(prev.0) as f64 / tps / secs,
                now.1.saturating_sub(prev.1) as f64 / tps / secs,
                procfs::busy_pct(prev.2, now.2),
                procfs::udp_drops(link.port()),
                agent_ports.iter().filter_map(|p| procfs::udp_drops(*p)).sum::<u64>(),
            );
            eprintln!("fleet: storm {line}");
            timeline.push(line);
            prev = now;
            tick_at = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = |ns: u64| ns.saturating_sub(kill_ns) as f64 / 1e9;
    let detect: Vec<Duration> = slots
        .iter()
        .map(|s| ns_to(s.lost_ns.load(Ordering::Acquire).saturating_sub(kill_ns)))
        .collect();
    let d = summarize(&detect);
    let converged_at = slots
        .iter()
        .map(|s| s.synced_ns.load(Ordering::Acquire))
        .max()
        .unwrap_or(0);
    let storm = Storm {
        detect_p50_s: d.p50.as_secs_f64(),
        detect_max_s: d.max.as_secs_f64(),
        restart_ready_s: secs(ready_ns),
        all_connected_s: all_connected_ns.map(secs),
        all_converged_s: done.then(|| secs(converged_at)),
        converged_after_ready_s: done.then(|| converged_at.saturating_sub(ready_ns) as f64 / 1e9),
        converged: (0..n).filter(|&i| converged(i)).count(),
        failures: shared
            .failures
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default(),
        coordinator_udp_drops: procfs::udp_drops(link.port()),
        store_writes: coord.store_writes().await,
        timeline,
    };
    eprintln!("fleet: storm {storm:?}");
    Ok((storm, coord))
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> Result<TempDir> {
    let dir = std::env::temp_dir().join(format!(
        "oi-bench-fleet-{}-{}",
        std::process::id(),
        mono_ns()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(TempDir(dir))
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn opt_s(v: Option<f64>) -> String {
    v.map_or("not reached".into(), |s| format!("{s:.2} s"))
}

pub fn print_report(r: &FleetReport) {
    println!();
    println!(
        "## fleet, N = {} ({} agent sockets; load {} -> {})",
        r.agents, r.endpoints, r.loadavg_start, r.loadavg_end
    );
    println!();
    println!("| metric | target | measured | verdict |");
    println!("|---|---|---|---|");
    let row = |m: &str, t: &str, v: String, ok: Option<bool>| {
        println!("| {m} | {t} | {v} | {} |", ok.map_or("-", verdict));
    };
    println!(
        "| agent sockets dropped (driver side; should be 0) | - | {} | - |",
        r.agent_udp_drops
    );
    row(
        "connect all N (at once)",
        "-",
        format!(
            "{} (p50 {:.0} ms, p99 {:.0} ms)",
            opt_s(r.connect_all_s),
            r.connect_p50_ms,
            r.connect_p99_ms
        ),
        None,
    );
    row(
        "coordinator RSS per agent",
        "<= 32 KiB",
        format!(
            "{:.1} KiB ({} -> {} KiB)",
            r.rss_per_agent_kib, r.baseline.rss_kib, r.steady.rss_kib
        ),
        Some(r.rss_per_agent_kib <= 32.0),
    );
    row(
        "coordinator PSS per agent",
        "<= 32 KiB",
        format!("{:.1} KiB", r.pss_per_agent_kib),
        Some(r.pss_per_agent_kib <= 32.0),
    );
    row(
        "coordinator live heap per agent",
        "-",
        format!("{:.1} KiB", r.heap_per_agent_kib),
        None,
    );
    if let Some(v) = r.rss_per_agent_after_storm_kib {
        row(
            "coordinator RSS per agent, fresh process after the storm",
            "<= 32 KiB",
            format!("{v:.1} KiB"),
            Some(v <= 32.0),
        );
    }
    row(
        "coordinator CPU at idle",
        "-",
        format!(
            "{:.1} mCPU over {:.0} s (driver {:.1} mCPU)",
            r.idle_mcpu, r.idle_window_s, r.driver_idle_mcpu
        ),
        None,
    );
    row(
        "fan-out, one agent",
        "p99 <= 50 ms",
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} writes, {} missed)",
            r.single.p50_ms, r.single.p99_ms, r.single.max_ms, r.single.count, r.single.missed
        ),
        Some(r.single.p99_ms <= 50.0 && r.single.missed == 0),
    );
    row(
        "fan-out, all N (to the last agent)",
        "p99 <= 1 s",
        format!(
            "p50 {:.0} ms, p99 {:.0} ms over {} writes (first write {:.0} ms); per agent p50 {:.0} ms",
            r.fanout_last.p50_ms,
            r.fanout_last.p99_ms,
            r.fanout_last.count,
            r.fanout_first_last_ms,
            r.fanout_each.p50_ms
        ),
        Some(r.fanout_last.p99_ms <= 1000.0 && r.fanout_last.missed == 0),
    );
    if let Some(s) = &r.storm {
        row(
            "reconnect storm: kill -9 to all connected and converged",
            "<= 30 s",
            format!(
                "{} (all connected {}; restart ready {:.2} s; agents noticed after p50 {:.1} s, max {:.1} s; {} after ready)",
                opt_s(s.all_converged_s),
                opt_s(s.all_connected_s),
                s.restart_ready_s,
                s.detect_p50_s,
                s.detect_max_s,
                opt_s(s.converged_after_ready_s)
            ),
            Some(s.all_converged_s.is_some_and(|v| v <= 30.0)),
        );
    }
    println!();
    println!(
        "write durations: single p50 {:.1} ms, fleet-wide p50 {:.1} ms; certificates issued in {:.1} s",
        r.single_write_p50_ms, r.fanout_write_p50_ms, r.cert_issue_s
    );
    println!(
        "memory points (KiB): baseline {:?}; steady {:?}; after writes {:?}; after storm {:?}",
        r.baseline, r.steady, r.after_writes, r.after_storm
    );
    println!(
        "CPU seconds (coordinator, driver) from each fleet-wide write to its last agent: {:.2?}",
        r.fanout_cpu_s
    );
    println!(
        "durable store writes (count, seconds): while connecting {:?}; restarted coordinator during the storm {:?}",
        r.connect_store_writes,
        r.storm.as_ref().and_then(|s| s.store_writes)
    );
    println!(
        "connect failures {:?}; storm failures {:?}; coordinator UDP drops {:?}",
        r.connect_failures,
        r.storm.as_ref().map(|s| &s.failures),
        r.coordinator_udp_drops
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_sockets() {
        assert_eq!(endpoint_count(0, 50), 4);
        assert_eq!(endpoint_count(0, 1000), 4);
        assert_eq!(endpoint_count(0, 10_000), 40);
        assert_eq!(endpoint_count(0, 10_001), 41);
        assert_eq!(endpoint_count(7, 10_000), 7);
    }
}
