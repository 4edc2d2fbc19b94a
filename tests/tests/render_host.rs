//! Dev check of the rendering (not of the agent): renders a cluster of each
//! version in the matrix whose "hypervisors" are all 127.0.0.1, and runs
//! every rendered container directly as a host process with the real
//! binaries of that version. If a flag, a file or a certificate is wrong, a
//! process refuses to start or the checks below fail. Before anything
//! starts, every rendered flag is looked up in its binary's `--help`: a flag
//! that a release dropped or deprecated fails the test by name.
//!
//! ```sh
//! for v in $(tests/bed/kubernetes.sh versions); do
//!   tests/bed/kubernetes.sh build --version $v
//!   tests/bed/kubernetes.sh etcd --version "$(tests/bed/kubernetes.sh pairing $v | cut -d' ' -f1)"
//! done
//! cargo test -p oi-tests --test render_host -- --ignored --nocapture
//! ```
//!
//! Environment: `OI_K8S_CACHE` (where `tests/bed/kubernetes.sh` caches:
//! `<cache>/<version>/bin` holds kube-apiserver, kube-controller-manager and
//! kube-scheduler, `<cache>/etcd-<etcd version>/bin` etcd; default
//! `/var/cache/oneinfra/kubernetes`), `OI_HAPROXY_BIN` (default
//! `/usr/sbin/haproxy`), `OI_KUBECTL` (default `kubectl`).
//!
//! How a component becomes a process, mirroring what the agent does with
//! CRI: each component gets a directory `<tmp>/<id with / as _>/`; every
//! `File` is written there at its relative path with its mode (parents
//! 0700); every mount source is created as a 0700 directory if missing.
//! Then, in the container's command and arguments, every occurrence of a
//! mount's `container_path` (at a path boundary) is replaced by
//! `<component dir>/<source>`, so `--tls-cert-file=/etc/kubernetes/pki/x`
//! becomes `--tls-cert-file=<dir>/kubernetes/pki/x`. The command's binary
//! (`/usr/local/bin/etcd`, ...) is replaced by the host binary of the same
//! name. The environment is the container's `env` on top of a minimal one
//! (`PATH`). Each process runs in its own process group; a guard kills
//! every group (SIGTERM, then SIGKILL) when the test ends, also on failure.

use anyhow::{bail, Context, Result};
use oi_coordinator::cluster::model::{
    Allocation, ClusterSpec, IngressSlot, ReplicaPorts, ReplicaSlot,
};
use oi_coordinator::cluster::pki::{ClusterPki, KUBELET_API_ADMIN_BINDING};
use oi_coordinator::cluster::render::{render_cluster, Placed, Profile, RenderInput};
use oi_coordinator::cluster::versions::{Release, VersionMatrix};
use oi_proto::model::Component;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(240);

/// One cluster at a time: two cores.
static SERIAL: Mutex<()> = Mutex::new(());

/// Deprecated flags rendered on purpose, with why (the `--help` check
/// fails on any other): (binary, flag, reason).
const DEPRECATED_ON_PURPOSE: &[(&str, &str, &str)] = &[
    // kubeadm renders it too; the replacement is a KubeSchedulerConfiguration
    // file whose clientConnection.kubeconfig says the same.
    (
        "kube-scheduler",
        "kubeconfig",
        "kubeadm's static pod uses it",
    ),
];

fn env_or(name: &str, default: &str) -> PathBuf {
    std::env::var_os(name)
        .map(PathBuf::from)
        .unwrap_or_else(|| default.into())
}

/// The host binaries of one release.
struct Binaries {
    k8s: PathBuf,
    etcd: PathBuf,
    haproxy: PathBuf,
}

impl Binaries {
    fn of(release: &Release) -> Self {
        let cache = env_or("OI_K8S_CACHE", "/var/cache/oneinfra/kubernetes");
        let etcd = release
            .images
            .etcd
            .rsplit(':')
            .next()
            .and_then(|t| t.strip_suffix("-0"))
            .expect("etcd image tag X.Y.Z-0");
        let bins = Self {
            k8s: cache.join(&release.version).join("bin"),
            etcd: cache.join(format!("etcd-{etcd}")).join("bin/etcd"),
            haproxy: env_or("OI_HAPROXY_BIN", "/usr/sbin/haproxy"),
        };
        for b in [
            bins.k8s.join("kube-apiserver"),
            bins.etcd.clone(),
            bins.haproxy.clone(),
        ] {
            assert!(
                b.exists(),
                "{} is missing: build it with tests/bed/kubernetes.sh build --version {} \
                 and tests/bed/kubernetes.sh etcd --version {etcd} (see the module docs)",
                b.display(),
                release.version
            );
        }
        bins
    }

    fn host(&self, container_binary: &str) -> PathBuf {
        match container_binary.rsplit('/').next().unwrap() {
            "etcd" => self.etcd.clone(),
            "haproxy" => self.haproxy.clone(),
            other => self.k8s.join(other),
        }
    }
}

fn kubectl_bin() -> PathBuf {
    env_or("OI_KUBECTL", "kubectl")
}

/// The long flags a binary's `--help` lists, each with whether it is
/// deprecated. Kubernetes (pflag) prints `--name type   Description` on one
/// line; etcd prints `--name 'default'` and the description on the next.
fn help_flags(binary: &Path) -> Result<BTreeMap<String, bool>> {
    let o = Command::new(binary)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {} --help", binary.display()))?;
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = text.lines().collect();
    let mut out = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let Some(rest) = t.strip_prefix("--") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
            .collect();
        if name.is_empty() {
            continue;
        }
        let same_line = rest[name.len()..]
            .split_once("  ")
            .map(|(_, d)| d.trim())
            .filter(|d| !d.is_empty());
        let description = same_line
            .or_else(|| lines.get(i + 1).map(|l| l.trim()))
            .unwrap_or_default()
            .to_ascii_lowercase();
        // About the flag itself, not one of its values ("master-count is
        // deprecated, and will be removed" is --endpoint-reconciler-type's).
        let deprecated = description.starts_with("deprecated")
            || description.contains("(deprecated")
            || description.contains("deprecated in v3.")
            || description.contains("this flag is deprecated")
            || description.contains("this flag will be removed");
        out.entry(name).or_insert(deprecated);
    }
    Ok(out)
}

/// Every `--name=value` of every rendered container exists in its binary's
/// `--help`, and is not deprecated unless listed in DEPRECATED_ON_PURPOSE.
fn check_flags(placed: &[Placed], bins: &Binaries) -> Result<()> {
    let mut helps: BTreeMap<PathBuf, BTreeMap<String, bool>> = BTreeMap::new();
    let mut bad = Vec::new();
    for p in placed {
        let k = &p.component.pod.containers[0];
        let program = k.command.first().context("a container without a command")?;
        let binary = program.rsplit('/').next().unwrap().to_string();
        if binary == "haproxy" {
            continue; // configured by its file, checked by running it
        }
        let host = bins.host(program);
        if !helps.contains_key(&host) {
            helps.insert(host.clone(), help_flags(&host)?);
        }
        let known = &helps[&host];
        for arg in k.command.iter().skip(1).chain(&k.args) {
            let Some(flag) = arg.strip_prefix("--") else {
                continue;
            };
            let name = flag.split('=').next().unwrap();
            match known.get(name) {
                None => bad.push(format!("{binary} has no --{name} ({})", host.display())),
                Some(true)
                    if !DEPRECATED_ON_PURPOSE
                        .iter()
                        .any(|(b, f, _)| *b == binary && *f == name) =>
                {
                    bad.push(format!(
                        "{binary} --{name} is deprecated ({})",
                        host.display()
                    ))
                }
                Some(_) => {}
            }
        }
    }
    bad.sort();
    bad.dedup();
    if !bad.is_empty() {
        bail!(
            "rendered flags the binaries do not take as they are:\n  {}",
            bad.join("\n  ")
        );
    }
    Ok(())
}

/// Distinct free TCP ports on 127.0.0.1 (all held until all are chosen).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn allocation(replicas: u32) -> Allocation {
    let ports = free_ports(replicas as usize * ReplicaPorts::COUNT + 1);
    Allocation {
        replicas: (0..replicas)
            .map(|i| {
                let at = i as usize * ReplicaPorts::COUNT;
                ReplicaSlot {
                    etcd: Default::default(),
                    index: i,
                    hypervisor: format!("hv-{i}"),
                    address: "127.0.0.1".into(),
                    ports: ReplicaPorts::from_slice(&ports[at..at + ReplicaPorts::COUNT]).unwrap(),
                }
            })
            .collect(),
        ingress: IngressSlot {
            hypervisor: "pub-0".into(),
            address: "127.0.0.1".into(),
            port: *ports.last().unwrap(),
        },
    }
}

/// A started component: its process (group leader) and where it lives.
struct Proc {
    id: String,
    child: Child,
    dir: PathBuf,
    log: PathBuf,
    declared_ports: BTreeSet<u16>,
}

/// Kills every process group it started when dropped, then the temp dir
/// goes (it is declared after `procs`, so it drops after them).
struct Bed {
    procs: Vec<Proc>,
    root: tempfile::TempDir,
    /// `OI_RENDER_HOST_KEEP=1` keeps the directory (files and logs) for a
    /// look after the run; the processes are killed all the same.
    keep: bool,
    bins: Binaries,
}

impl Drop for Bed {
    fn drop(&mut self) {
        let signal = |sig: i32, procs: &mut Vec<Proc>| {
            for p in procs.iter_mut() {
                // Only while the leader is not reaped: until then its pid,
                // which is the group's id, cannot be reused by anyone else.
                if matches!(p.child.try_wait(), Ok(None)) {
                    // SAFETY: kill(2) on the process group we created for
                    // this child (process_group(0): pgid == its pid).
                    unsafe {
                        libc::kill(-(p.child.id() as i32), sig);
                    }
                }
            }
        };
        signal(libc::SIGTERM, &mut self.procs);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline
            && self
                .procs
                .iter_mut()
                .any(|p| matches!(p.child.try_wait(), Ok(None)))
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        signal(libc::SIGKILL, &mut self.procs);
        for p in &mut self.procs {
            let _ = p.child.wait();
        }
        if self.keep {
            self.root.disable_cleanup(true);
            eprintln!("kept {}", self.root.path().display());
        }
    }
}

/// Replaces each mount's container path, at a path boundary, by the host
/// directory of its source.
fn translate(s: &str, mounts: &[(String, PathBuf)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    'outer: while !rest.is_empty() {
        for (container, host) in mounts {
            if let Some(after) = rest.strip_prefix(container.as_str()) {
                if after.is_empty() || after.starts_with(['/', ',', ' ']) {
                    out.push_str(&host.to_string_lossy());
                    rest = after;
                    continue 'outer;
                }
            }
        }
        let ch = rest.chars().next().unwrap();
        out.push(ch);
        rest = &rest[ch.len_utf8()..];
    }
    out
}

impl Bed {
    fn new(bins: Binaries) -> Result<Self> {
        Ok(Self {
            bins,
            procs: vec![],
            root: tempfile::Builder::new()
                .prefix("oi-render-host-")
                .tempdir()?,
            keep: std::env::var_os("OI_RENDER_HOST_KEEP").is_some(),
        })
    }

    fn start(&mut self, c: &Component) -> Result<()> {
        let dir = self.root.path().join(c.id.replace('/', "_"));
        let mk = |d: &Path| {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
        };
        mk(&dir)?;
        for f in &c.pod.files {
            let path = dir.join(&f.path);
            mk(path.parent().unwrap())?;
            std::fs::write(&path, &f.content)
                .with_context(|| format!("write {}", path.display()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))?;
        }
        assert_eq!(c.pod.containers.len(), 1);
        let k = &c.pod.containers[0];
        let mut mounts: Vec<(String, PathBuf)> = k
            .mounts
            .iter()
            .map(|m| (m.container_path.clone(), dir.join(&m.source)))
            .collect();
        for (_, host) in &mounts {
            mk(host)?;
        }
        mounts.sort_by_key(|(c, _)| std::cmp::Reverse(c.len()));
        let mut argv: Vec<String> = k
            .command
            .iter()
            .chain(k.args.iter())
            .map(|a| translate(a, &mounts))
            .collect();
        let program = self.bins.host(&argv.remove(0));
        let log = self
            .root
            .path()
            .join(format!("{}.log", c.id.replace('/', "_")));
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new(&program);
        cmd.args(&argv)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        for e in &k.env {
            cmd.env(&e.name, &e.value);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("start {} ({})", c.id, program.display()))?;
        self.procs.push(Proc {
            id: c.id.clone(),
            child,
            dir,
            log,
            declared_ports: k.ports.iter().map(|p| p.port).collect(),
        });
        Ok(())
    }

    fn proc(&self, id: &str) -> &Proc {
        self.procs.iter().find(|p| p.id == id).unwrap()
    }

    /// Fails with the tail of the log of any process that has exited.
    fn check_alive(&mut self) -> Result<()> {
        for p in &mut self.procs {
            if let Some(status) = p.child.try_wait()? {
                bail!(
                    "{} exited with {status}; log tail:\n{}",
                    p.id,
                    tail(&p.log, 30)
                );
            }
        }
        Ok(())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Result<Out> {
    let o = Command::new(kubectl_bin())
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg("--request-timeout=10s")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("run kubectl (set OI_KUBECTL)")?;
    Ok(Out {
        ok: o.status.success(),
        stdout: String::from_utf8_lossy(&o.stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&o.stderr).trim().to_string(),
    })
}

/// GET without verifying TLS and without credentials (anonymous), like the
/// agent's probe. kubectl cannot do this: with no credentials it prompts.
fn curl_insecure(url: &str) -> Result<Out> {
    let o = Command::new("curl")
        .args(["-sSk", "--max-time", "10", url])
        .stdin(Stdio::null())
        .output()
        .context("run curl")?;
    Ok(Out {
        ok: o.status.success(),
        stdout: String::from_utf8_lossy(&o.stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&o.stderr).trim().to_string(),
    })
}

fn eventually<T>(
    bed: &mut Bed,
    what: &str,
    timeout: Duration,
    mut f: impl FnMut(&Bed) -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        bed.check_alive()?;
        match f(bed) {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {timeout:?} (last error: {last})");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// TCP ports each of our process groups listens on (`ss -ltnp`).
fn listening_ports(bed: &Bed) -> Result<BTreeMap<String, BTreeSet<u16>>> {
    let o = Command::new("ss")
        .args(["-ltnpH"])
        .output()
        .context("run ss")?;
    let text = String::from_utf8_lossy(&o.stdout);
    let pgid = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name "(...)": state ppid pgrp ...
        let after = stat.rsplit_once(") ")?.1;
        after.split_whitespace().nth(2)?.parse().ok()
    };
    let mut out: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let Some(local) = cols.get(3) else { continue };
        let Some(port) = local.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()) else {
            continue;
        };
        for part in line.split("pid=").skip(1) {
            let pid: u32 = part
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap_or("")
                .parse()
                .unwrap_or(0);
            if let Some(g) = pgid(pid) {
                if let Some(p) = bed.procs.iter().find(|p| p.child.id() == g) {
                    out.entry(p.id.clone()).or_default().insert(port);
                }
            }
        }
    }
    Ok(out)
}

/// Resident memory (KiB) and CPU time (clock ticks) summed over a process
/// group (haproxy's master and worker).
fn group_usage(pgid: u32) -> (u64, u64) {
    let (mut kib, mut ticks) = (0, 0);
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(after) = stat.rsplit_once(") ").map(|s| s.1) else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.get(2) != Some(&pgid.to_string().as_str()) {
            continue;
        }
        // utime and stime: fields 14 and 15 of stat, 11 and 12 after ") ".
        ticks += fields
            .get(11)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            + fields
                .get(12)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            kib += status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    (kib, ticks)
}

fn run(version: &str, replicas: u32, profile: Profile) -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let spec = ClusterSpec::new("host", version, replicas);
    let allocation = allocation(replicas);
    let matrix = VersionMatrix::builtin();
    let release = matrix
        .get(version)
        .with_context(|| format!("{version} is not in the matrix"))?;
    let bins = Binaries::of(release);
    let pki = ClusterPki::generate(&spec.name)?;
    let certs = allocation
        .replicas
        .iter()
        .map(|s| Ok((s.index, pki.issue_replica(&spec, &allocation, s)?)))
        .collect::<Result<BTreeMap<_, _>>>()?;
    let placed: Vec<Placed> = render_cluster(&RenderInput {
        spec: &spec,
        incarnation: "render-host",
        release,
        pki: &pki,
        replica_certs: &certs,
        allocation: &allocation,
        profile,
    })?;

    check_flags(&placed, &bins)?;
    let mut bed = Bed::new(bins)?;
    let admin = bed.path("admin.conf");
    std::fs::write(
        &admin,
        pki.admin_kubeconfig(&spec.name, &allocation.endpoint())?,
    )?;
    std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(0o600))?;
    let empty = bed.path("empty.conf");
    std::fs::write(&empty, "")?;

    let started = Instant::now();
    for p in &placed {
        bed.start(&p.component)?;
    }
    let ready = eventually(
        &mut bed,
        "/readyz through the ingress",
        READY_TIMEOUT,
        |_| {
            let o = kubectl(&admin, &["get", "--raw", "/readyz"])?;
            Ok((o.ok && o.stdout == "ok").then_some(()))
        },
    );
    if let Err(e) = ready {
        for p in &bed.procs {
            eprintln!("==== {} ====\n{}", p.id, tail(&p.log, 15));
        }
        return Err(e);
    }
    let create_to_ready = started.elapsed();

    // Writes work.
    let o = kubectl(&admin, &["create", "namespace", "x"])?;
    assert!(o.ok, "create namespace: {}", o.stderr);

    // The controller-manager works under its own identity: the service
    // account controller creates `default` in the new namespace. (Since
    // 1.24 no token Secret comes with it; the TokenRequest below signs one.)
    eventually(
        &mut bed,
        "serviceaccount x/default",
        Duration::from_secs(60),
        |_| {
            let o = kubectl(
                &admin,
                &[
                    "-n",
                    "x",
                    "get",
                    "serviceaccount",
                    "default",
                    "-o",
                    "jsonpath={.metadata.name}",
                ],
            )?;
            Ok((o.ok && o.stdout == "default").then_some(()))
        },
    )?;
    let sa_ready = started.elapsed();

    // A token signed by the apiserver's ECDSA signing key authenticates.
    let token = kubectl(&admin, &["-n", "x", "create", "token", "default"])?;
    assert!(token.ok, "create token: {}", token.stderr);
    let ca = bed.path("ca.crt");
    std::fs::write(&ca, &pki.apiserver_ca.cert_pem)?;
    let endpoint = allocation.endpoint();
    let o = kubectl(
        &empty,
        &[
            &format!("--server={endpoint}"),
            &format!("--certificate-authority={}", ca.display()),
            &format!("--token={}", token.stdout),
            "get",
            "--raw",
            "/api",
        ],
    )?;
    assert!(
        o.ok && o.stdout.contains("APIVersions"),
        "token auth: {} {}",
        o.stdout,
        o.stderr
    );

    // The scheduler works under its own identity: a pod with no node to go
    // to gets a FailedScheduling event from it.
    let o = kubectl(
        &admin,
        &[
            "-n",
            "x",
            "run",
            "p",
            "--image=localhost/none:1",
            "--restart=Never",
        ],
    )?;
    assert!(o.ok, "create pod: {}", o.stderr);
    eventually(
        &mut bed,
        "FailedScheduling event",
        Duration::from_secs(60),
        |_| {
            let o = kubectl(
                &admin,
                &[
                    "-n",
                    "x",
                    "get",
                    "events",
                    "--field-selector=reason=FailedScheduling",
                    "-o",
                    "name",
                ],
            )?;
            Ok((o.ok && !o.stdout.is_empty()).then_some(()))
        },
    )?;

    // Health endpoints of every replica's controller-manager and scheduler
    // (anonymous, TLS not verified, like the agent's probe).
    for slot in &allocation.replicas {
        for (port, what) in [
            (slot.ports.controller_manager, "controller-manager"),
            (slot.ports.scheduler, "scheduler"),
        ] {
            let o = curl_insecure(&format!("https://127.0.0.1:{port}/healthz"))?;
            assert!(
                o.ok && o.stdout == "ok",
                "{what} {}: {} {}",
                slot.index,
                o.stdout,
                o.stderr
            );
        }
    }

    // Neither holds system:masters: with their own kubeconfigs they may not
    // do everything; the admin may (so the check can tell).
    let o = kubectl(&admin, &["auth", "can-i", "*", "*"])?;
    assert_eq!(o.stdout, "yes", "admin can-i: {}", o.stderr);
    for (id, conf) in [
        (
            "host/kube-controller-manager-0",
            "kubernetes/controller-manager.conf",
        ),
        ("host/kube-scheduler-0", "kubernetes/scheduler.conf"),
    ] {
        let conf = bed.proc(id).dir.join(conf);
        let o = kubectl(&conf, &["auth", "can-i", "*", "*"])?;
        assert_eq!(o.stdout, "no", "{id} can-i * *: {}", o.stderr);
        let o = kubectl(&conf, &["auth", "can-i", "create", "clusterrolebindings"])?;
        assert_eq!(
            o.stdout, "no",
            "{id} can-i create clusterrolebindings: {}",
            o.stderr
        );
    }
    // Identity of the apiserver towards kubelets, once bound.
    let binding = bed.path("binding.yaml");
    std::fs::write(&binding, KUBELET_API_ADMIN_BINDING)?;
    let o = kubectl(&admin, &["apply", "-f", &binding.to_string_lossy()])?;
    assert!(o.ok, "apply binding: {}", o.stderr);
    let o = kubectl(
        &admin,
        &[
            "auth",
            "can-i",
            "get",
            "nodes",
            "--subresource=proxy",
            "--as=kube-apiserver-kubelet-client",
        ],
    )?;
    assert_eq!(o.stdout, "yes", "kubelet client can-i: {}", o.stderr);

    // No TLS trust gaps: etcd rejected no client (its own gateway
    // included), and no process failed to verify a peer.
    for p in &bed.procs {
        let log = std::fs::read_to_string(&p.log)?;
        for bad in ["certificate signed by unknown authority", "bad certificate"] {
            assert!(
                !log.contains(bad),
                "{} logged {bad:?}:\n{}",
                p.id,
                tail(&p.log, 20)
            );
        }
    }

    // Each process listens exactly on the ports its container declares: no
    // insecure ports (1.20: controller-manager and scheduler --port=0,
    // apiserver's insecure port off by default).
    let listening = listening_ports(&bed)?;
    for p in &bed.procs {
        assert_eq!(
            listening.get(&p.id).cloned().unwrap_or_default(),
            p.declared_ports,
            "{} listens on other ports than declared",
            p.id
        );
    }

    if replicas > 1 {
        // etcd formed one cluster of all members.
        let client = bed.path("etcd-client");
        std::fs::create_dir(&client)?;
        let c = &certs[&0].apiserver_etcd_client;
        std::fs::write(client.join("c.crt"), &c.cert_pem)?;
        std::fs::write(client.join("c.key"), c.key.expose())?;
        std::fs::write(client.join("ca.crt"), &pki.etcd_server_ca.cert_pem)?;
        let o = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                &format!(
                    "--endpoints=https://127.0.0.1:{}",
                    allocation.replicas[0].ports.etcd_client
                ),
                &format!("--cacert={}", client.join("ca.crt").display()),
                &format!("--cert={}", client.join("c.crt").display()),
                &format!("--key={}", client.join("c.key").display()),
                "member",
                "list",
            ])
            .output()
            .context("run etcdctl (Debian package etcd-client)")?;
        let text = String::from_utf8_lossy(&o.stdout);
        assert_eq!(
            text.lines().filter(|l| l.contains("started")).count(),
            replicas as usize,
            "{text} {}",
            String::from_utf8_lossy(&o.stderr)
        );

        // The ingress routes around a dead apiserver.
        let api0 = bed
            .procs
            .iter_mut()
            .find(|p| p.id == "host/kube-apiserver-0")
            .unwrap();
        api0.child.kill()?;
        api0.child.wait()?;
        let down = Instant::now();
        bed.procs.retain(|p| p.id != "host/kube-apiserver-0");
        eventually(
            &mut bed,
            "5 answers in a row with replica 0 down",
            Duration::from_secs(60),
            |_| {
                for _ in 0..5 {
                    let o = kubectl(&admin, &["get", "--raw", "/readyz"])?;
                    if !(o.ok && o.stdout == "ok") {
                        return Ok(None);
                    }
                }
                Ok(Some(()))
            },
        )?;
        println!(
            "replicas={replicas}: ingress recovered {:?} after apiserver-0 died",
            down.elapsed()
        );
    }

    println!(
        "replicas={replicas} profile={profile:?}: create-to-ready {:.1}s, default service account {:.1}s",
        create_to_ready.as_secs_f64(),
        sa_ready.as_secs_f64()
    );
    // Idle usage over 10 s (clock ticks are 1/100 s on Linux).
    let window = Duration::from_secs(10);
    let before: Vec<(u64, u64)> = bed
        .procs
        .iter()
        .map(|p| group_usage(p.child.id()))
        .collect();
    std::thread::sleep(window);
    for (p, (_, t0)) in bed.procs.iter().zip(before) {
        let (kib, t1) = group_usage(p.child.id());
        let millicores = (t1 - t0) * 10 * 1000 / (window.as_millis() as u64);
        println!(
            "  {:<34} RSS {:>4} MiB, idle CPU {:>3}m",
            p.id,
            kib / 1024,
            millicores
        );
    }
    Ok(())
}

/// Every version of the matrix starts, serves and passes the checks: an
/// unbuildable or unstartable release fails here, not at a user's.
#[test]
#[ignore = "runs the real control-plane binaries; see the module docs"]
fn every_version_one_replica_default_profile() {
    for version in VersionMatrix::builtin().versions() {
        println!("== Kubernetes {version}");
        run(version, 1, Profile::Default)
            .with_context(|| format!("Kubernetes {version}"))
            .unwrap();
    }
}

#[test]
#[ignore = "runs the real control-plane binaries; see the module docs"]
fn newest_one_replica_dense_profile() {
    let m = VersionMatrix::builtin();
    run(m.default_version(), 1, Profile::Dense).unwrap();
}

#[test]
#[ignore = "runs the real control-plane binaries; see the module docs"]
fn newest_three_replicas_default_profile() {
    let m = VersionMatrix::builtin();
    run(m.default_version(), 3, Profile::Default).unwrap();
}

/// The flag check against `--help` of every version, both profiles, three
/// replicas (a few seconds; nothing is started).
#[test]
#[ignore = "runs the real binaries' --help; see the module docs"]
fn every_rendered_flag_exists_in_its_binary() {
    let matrix = VersionMatrix::builtin();
    for release in matrix.releases() {
        let spec = ClusterSpec::new("flags", &release.version, 3);
        let allocation = allocation(3);
        let pki = ClusterPki::generate(&spec.name).unwrap();
        let certs: BTreeMap<_, _> = allocation
            .replicas
            .iter()
            .map(|s| (s.index, pki.issue_replica(&spec, &allocation, s).unwrap()))
            .collect();
        for profile in [Profile::Default, Profile::Dense] {
            let placed = render_cluster(&RenderInput {
                spec: &spec,
                incarnation: "flags",
                release,
                pki: &pki,
                replica_certs: &certs,
                allocation: &allocation,
                profile,
            })
            .unwrap();
            check_flags(&placed, &Binaries::of(release))
                .with_context(|| format!("Kubernetes {} {profile:?}", release.version))
                .unwrap();
        }
    }
}

#[test]
fn paths_are_translated_at_boundaries() {
    let mounts = vec![
        (
            "/etc/kubernetes".to_string(),
            PathBuf::from("/t/c/kubernetes"),
        ),
        ("/var/lib/etcd".to_string(), PathBuf::from("/t/c/data")),
    ];
    assert_eq!(
        translate("--cert=/etc/kubernetes/pki/a.crt", &mounts),
        "--cert=/t/c/kubernetes/pki/a.crt"
    );
    assert_eq!(
        translate("--data-dir=/var/lib/etcd", &mounts),
        "--data-dir=/t/c/data"
    );
    assert_eq!(translate("/etc/kubernetesX", &mounts), "/etc/kubernetesX");
    assert_eq!(
        translate("--x=https://127.0.0.1:1", &mounts),
        "--x=https://127.0.0.1:1"
    );
}
