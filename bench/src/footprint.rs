//! `oi-bench agent-footprint`: memory and idle CPU of the real `oi-agent`
//! binary against a real containerd (from the test bed; `bench/run.sh`
//! starts one) and a real coordinator (in this process), with 0 and with
//! N components placed. Half of the components serve HTTP with busybox
//! httpd and carry a probe, so probing is part of the cost.

use crate::procfs;
use anyhow::{bail, Context, Result};
use oi_coordinator::config::Config;
use oi_coordinator::coordinator::{Coordinator, Running};
use oi_coordinator::index::LinkState;
use oi_coordinator::store::PlacementChange;
use oi_proto::model::{Component, Container, File, Mount, Phase, PodSpec, Probe, Scheme};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct FootprintArgs {
    /// containerd CRI socket (tests/bed/containerd.sh start prints it).
    #[arg(long)]
    pub cri_socket: PathBuf,
    /// Image with busybox (tests/bed/image.sh build), imported into containerd.
    #[arg(long, default_value = "docker.io/oi-test/busybox:1")]
    pub image: String,
    /// The oi-agent binary to measure (a release build).
    #[arg(long, default_value = "target/release/oi-agent")]
    pub agent_bin: PathBuf,
    /// Components placed in the second phase.
    #[arg(long, default_value_t = 50)]
    pub components: usize,
    /// Probe period of the probed half, ms (kubelet's default is 10 s).
    #[arg(long, default_value_t = 10_000)]
    pub probe_period_ms: u32,
    /// Length of each measuring window, seconds.
    #[arg(long, default_value_t = 60)]
    pub window_secs: u64,
    /// Wait after convergence before measuring, seconds.
    #[arg(long, default_value_t = 15)]
    pub settle_secs: u64,
    /// First host port of the probed components.
    #[arg(long, default_value_t = 31500)]
    pub first_port: u16,
    /// Also write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Default, Serialize, Clone, Copy)]
pub struct Phase0 {
    pub components: usize,
    pub rss_kib: u64,
    pub max_rss_kib: u64,
    pub pss_kib: u64,
    pub threads: u64,
    pub mcpu: f64,
    /// CPU ticks in the window (1 tick = 10 ms at 100 Hz).
    pub ticks: u64,
    pub window_s: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct FootprintReport {
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub converge_s: f64,
    pub phases: Vec<Phase0>,
}

const NAME: &str = "bench-agent";

pub fn main(args: FootprintArgs) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start async runtime")?
        .block_on(run(args))
}

/// busybox `sleep`, or busybox httpd serving `www/` with an HTTP probe.
pub fn footprint_component(i: usize, image: &str, probe: Option<(u16, u32)>) -> Component {
    let mut k = Container {
        name: "main".into(),
        image: image.into(),
        command: vec!["/bin/busybox".into(), "sleep".into(), "2147483647".into()],
        ..Default::default()
    };
    let mut files = vec![];
    if let Some((port, period_ms)) = probe {
        k.command = [
            "/bin/busybox",
            "httpd",
            "-f",
            "-p",
            &format!("127.0.0.1:{port}"),
            "-h",
            "/www",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        k.mounts = vec![Mount {
            source: "www".into(),
            container_path: "/www".into(),
            read_only: true,
        }];
        k.probe = Some(Probe {
            scheme: Scheme::Http,
            port,
            path: "/readyz".into(),
            period_ms,
            timeout_ms: 1000,
            failure_threshold: 3,
            initial_delay_ms: 0,
        });
        files.push(File {
            path: "www/readyz".into(),
            mode: 0o644,
            content: b"ok\n".to_vec(),
        });
    }
    Component {
        incarnation: String::new(),
        id: format!("bench-{i:02}"),
        cluster: "bench".into(),
        pod: PodSpec {
            containers: vec![k],
            files,
        },
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Whether the agent reports every placed component running, and ready
/// where it has a probe.
fn converged(c: &Coordinator, want: usize) -> bool {
    let Some(v) = c.hypervisor(NAME) else {
        return false;
    };
    let Some(obs) = &v.observed else { return false };
    obs.components.len() == want
        && obs.components.iter().all(|s| {
            let probed = v
                .placement
                .components
                .get(&s.id)
                .is_some_and(|c| c.pod.containers.iter().any(|k| k.probe.is_some()));
            s.phase == Phase::Running && (!probed || s.ready)
        })
}

async fn wait(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Result<Duration> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            bail!("{what}: not reached within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(start.elapsed())
}

async fn measure(pid: u32, components: usize, args: &FootprintArgs) -> Result<Phase0> {
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let w = procfs::watch(pid, Duration::from_secs(args.window_secs)).await?;
    let p = Phase0 {
        components,
        rss_kib: w.end.rss_kib,
        max_rss_kib: w.max_rss_kib,
        pss_kib: w.end.pss_kib,
        threads: w.end.threads,
        mcpu: w.mcpu,
        ticks: w.ticks,
        window_s: w.elapsed.as_secs_f64(),
    };
    eprintln!("footprint: {p:?}");
    Ok(p)
}

fn write_agent_files(dir: &Path, c: &Running, cri: &Path) -> Result<PathBuf> {
    let pki = dir.join("pki");
    oi_proto::fsutil::create_private_dir(&pki)?;
    let issued = c.coordinator.issue_agent_identity(NAME)?;
    let w = oi_proto::fsutil::write_atomic;
    w(
        &pki.join("ca.pem"),
        c.coordinator.ca_pem().as_bytes(),
        0o644,
    )?;
    w(&pki.join("agent.pem"), issued.cert_pem.as_bytes(), 0o644)?;
    w(&pki.join("agent.key"), issued.key_pem.as_bytes(), 0o600)?;
    let config = format!(
        "name = {NAME:?}\nrole = \"private\"\ncoordinator = \"{}\"\nserver_name = \"localhost\"\n\
         address = \"127.0.0.1\"\nport_range = \"31000-31999\"\npki_dir = {:?}\n\
         state_dir = {:?}\ncri_socket = {:?}\n",
        c.link_addr,
        pki.display().to_string(),
        dir.join("state").display().to_string(),
        cri.display().to_string(),
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, config).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

async fn run(args: FootprintArgs) -> Result<()> {
    let mut report = FootprintReport {
        loadavg_start: loadavg(),
        ..Default::default()
    };
    let work = std::env::temp_dir().join(format!("oi-bench-agent-{}", std::process::id()));
    oi_proto::fsutil::create_private_dir(&work)?;
    let mut config = Config::for_tests(&work.join("coordinator"));
    config.metrics_listen = None;
    let running = Coordinator::start(config).await?;
    let c = running.coordinator.clone();
    let agent_config = write_agent_files(&work, &running, &args.cri_socket)?;
    let log_path = work.join("agent.log");
    let log = std::fs::File::create(&log_path)?;
    let mut agent = tokio::process::Command::new(&args.agent_bin)
        .arg("--config")
        .arg(&agent_config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {}", args.agent_bin.display()))?;
    let pid = agent.id().context("agent exited at once")?;
    eprintln!("footprint: oi-agent pid {pid}, log {}", log_path.display());

    let result = async {
        wait("agent connected", Duration::from_secs(60), || {
            c.hypervisor(NAME).is_some_and(|v| {
                matches!(v.link, LinkState::Connected { .. }) && v.observed.is_some()
            })
        })
        .await?;
        report.phases.push(measure(pid, 0, &args).await?);

        let changes: Vec<PlacementChange> = (0..args.components)
            .map(|i| {
                let probe =
                    (i % 2 == 0).then(|| (args.first_port + i as u16, args.probe_period_ms));
                PlacementChange::Upsert {
                    hypervisor: NAME.into(),
                    component: footprint_component(i, &args.image, probe),
                }
            })
            .collect();
        c.write_placement(changes).await?;
        let took = wait(
            "all components running (and ready where probed)",
            Duration::from_secs(600),
            || converged(&c, args.components),
        )
        .await?;
        report.converge_s = took.as_secs_f64();
        eprintln!(
            "footprint: {} components converged in {took:?}",
            args.components
        );
        report
            .phases
            .push(measure(pid, args.components, &args).await?);
        Ok::<_, anyhow::Error>(())
    }
    .await;

    // Clean up whatever happened: remove the pods, stop the agent.
    let ids: Vec<PlacementChange> = c
        .hypervisor(NAME)
        .map(|v| {
            v.placement
                .components
                .keys()
                .map(|id| PlacementChange::Remove {
                    component_id: id.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    if !ids.is_empty() {
        c.write_placement(ids).await?;
        let gone = wait("pods removed", Duration::from_secs(300), || {
            c.hypervisor(NAME)
                .and_then(|v| v.observed)
                .is_some_and(|o| o.components.is_empty())
        })
        .await;
        if let Err(e) = gone {
            eprintln!("footprint: {e}; the bed teardown removes what is left");
        }
    }
    // SAFETY: kill(2) on the agent we started.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let _ = tokio::time::timeout(Duration::from_secs(15), agent.wait()).await;
    running.shutdown().await;
    result?;
    report.loadavg_end = loadavg();
    print_report(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

pub fn print_report(r: &FootprintReport) {
    println!();
    println!(
        "## agent footprint (load {} -> {}; converged in {:.1} s)",
        r.loadavg_start, r.loadavg_end, r.converge_s
    );
    println!();
    println!("| components | metric | target | measured | verdict |");
    println!("|---|---|---|---|---|");
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    for p in &r.phases {
        let rss_mib = p.rss_kib as f64 / 1024.0;
        println!(
            "| {} | VmRSS (max in window) | <= 16 MiB | {:.1} MiB ({:.1} MiB) | {} |",
            p.components,
            rss_mib,
            p.max_rss_kib as f64 / 1024.0,
            verdict(p.max_rss_kib <= 16 * 1024)
        );
        println!(
            "| {} | PSS | - | {:.1} MiB | - |",
            p.components,
            p.pss_kib as f64 / 1024.0
        );
        println!(
            "| {} | CPU at idle over {:.0} s | <= 2 mCPU | {:.2} mCPU ({} ticks of 10 ms; {} threads) | {} |",
            p.components,
            p.window_s,
            p.mcpu,
            p.ticks,
            p.threads,
            verdict(p.mcpu <= 2.0)
        );
    }
}
