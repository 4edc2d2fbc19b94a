//! Scheduler throughput: placements per second of the pure
//! `schedule(&snapshot, &request)` over synthetic fleets, on one core.
//!
//! A fleet of N hypervisors (90% private, 10% public), each already running
//! a few control planes (their ports and requests in the snapshot). Each
//! placement asks for a 3-replica cluster with the Default profile's
//! requests; its allocation is then added to the snapshot's usage, so the
//! fleet fills as it goes and no two placements see the same state. Also
//! measured: building the snapshot from placed components
//! (`Snapshot::from_placements`), which the coordinator does per placement.

use anyhow::Result;
use oi_coordinator::cluster::model::{Allocation, ReplicaPorts};
use oi_coordinator::cluster::render::{ingress_resources, replica_resources, Profile};
use oi_coordinator::cluster::schedule::{self, HypervisorInfo, Request, Snapshot};
use oi_proto::model::{Component, Container, HostPort, Placement, PortRange, Protocol, Role};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct ScheduleArgs {
    /// Fleet sizes (hypervisors).
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    pub fleets: Vec<usize>,
    /// Seconds of placements per fleet size.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Control planes already running on each private hypervisor.
    #[arg(long, default_value_t = 4)]
    pub prefill: usize,
}

const GIB: u64 = 1 << 30;

fn fleet(n: usize, prefill: usize) -> (Vec<HypervisorInfo>, Vec<(String, Placement)>) {
    let mut hvs = Vec::with_capacity(n);
    let mut placements = Vec::with_capacity(n);
    let replica = replica_resources(Profile::Default);
    for i in 0..n {
        let public = i % 10 == 9;
        let name = format!("hv-{i:05}");
        hvs.push(HypervisorInfo {
            name: name.clone(),
            role: if public { Role::Public } else { Role::Private },
            address: format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
            host_ports: PortRange::new(30000, 32767).expect("range"),
            cpu_millis: 64_000,
            memory_bytes: 256 * GIB,
            cordoned: false,
            connected: true,
        });
        let mut p = Placement::new("bench", 1);
        if !public {
            for k in 0..prefill {
                let first = 30000 + (k * ReplicaPorts::COUNT) as u16;
                let c = Component {
                    incarnation: String::new(),
                    id: format!("pre-{i}-{k}/etcd-0"),
                    cluster: format!("pre-{i}-{k}"),
                    pod: oi_proto::model::PodSpec {
                        containers: vec![Container {
                            name: "all".into(),
                            image: "x".into(),
                            resources: replica,
                            ports: (0..ReplicaPorts::COUNT as u16)
                                .map(|o| HostPort {
                                    name: format!("p{o}"),
                                    port: first + o,
                                    protocol: Protocol::Tcp,
                                })
                                .collect(),
                            ..Default::default()
                        }],
                        files: vec![],
                    },
                };
                p.components.insert(c.id.clone(), c);
            }
        }
        placements.push((name, p));
    }
    (hvs, placements)
}

/// Adds a placed cluster to the snapshot's usage (what the next
/// `from_placements` would find).
fn occupy(snapshot: &mut Snapshot, cluster: &str, a: &Allocation, req: &Request) {
    for s in &a.replicas {
        let u = snapshot.usage.entry(s.hypervisor.clone()).or_default();
        u.cpu_millis += req.replica.cpu_millis;
        u.memory_bytes += req.replica.memory_bytes;
        u.ports.extend(s.ports.all());
        u.clusters.insert(cluster.to_string());
    }
    let u = snapshot
        .usage
        .entry(a.ingress.hypervisor.clone())
        .or_default();
    u.cpu_millis += req.ingress.cpu_millis;
    u.memory_bytes += req.ingress.memory_bytes;
    u.ports.insert(a.ingress.port);
    u.clusters.insert(cluster.to_string());
}

pub struct Figures {
    pub hypervisors: usize,
    pub placements_per_sec: f64,
    pub p99_us: f64,
    pub snapshot_build_ms: f64,
}

pub fn measure(n: usize, seconds: f64, prefill: usize) -> Result<Figures> {
    let (hvs, placements) = fleet(n, prefill);
    let refs: Vec<(String, &Placement)> = placements.iter().map(|(h, p)| (h.clone(), p)).collect();
    let t = Instant::now();
    let initial = Snapshot::from_placements(hvs.clone(), &refs, "");
    let snapshot_build_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut snapshot = initial.clone();
    let req = Request {
        replicas: 3,
        replica: replica_resources(Profile::Default),
        ingress: ingress_resources(Profile::Default),
        current: None,
        exclude: Default::default(),
    };
    let mut lat = Vec::new();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut i = 0u64;
    while Instant::now() < deadline {
        let t = Instant::now();
        match schedule::schedule(&snapshot, &req) {
            Ok(a) => {
                lat.push(t.elapsed());
                occupy(&mut snapshot, &format!("c{i}"), &a, &req);
                i += 1;
            }
            // The fleet is full: start over from the prefilled state.
            Err(_) => snapshot = initial.clone(),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    if lat.is_empty() {
        anyhow::bail!("a fleet of {n} has no room for one cluster: lower --prefill");
    }
    lat.sort();
    let p99 = lat[(lat.len() * 99 / 100).min(lat.len() - 1)];
    Ok(Figures {
        hypervisors: n,
        placements_per_sec: i as f64 / elapsed,
        p99_us: p99.as_secs_f64() * 1e6,
        snapshot_build_ms,
    })
}

pub fn main(args: ScheduleArgs) -> Result<()> {
    println!("| hypervisors | placements/s (one core) | p99 per placement | snapshot build |");
    println!("|---|---|---|---|");
    for &n in &args.fleets {
        let f = measure(n, args.seconds, args.prefill)?;
        println!(
            "| {} | {:.0} | {:.0} µs | {:.1} ms |",
            f.hypervisors, f.placements_per_sec, f.p99_us, f.snapshot_build_ms
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_small_fleet_places() {
        let f = super::measure(20, 0.05, 1).unwrap();
        assert!(f.placements_per_sec > 0.0);
    }
}
