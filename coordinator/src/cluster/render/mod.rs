//! Renders one cluster into exact pod specs: one [`Component`] per etcd,
//! kube-apiserver, kube-controller-manager and kube-scheduler of each
//! replica, and one haproxy ingress.
//!
//! Pure and deterministic: the same input renders the same bytes (flags are
//! kept sorted, files in a fixed order, nothing comes from a hash map), so
//! the spec hash only changes when something real changed.
//!
//! Layout of a component directory on the hypervisor (the agent writes the
//! files; mounts are directories):
//!
//! | source       | container path             | what                            |
//! |--------------|----------------------------|---------------------------------|
//! | `kubernetes` | `/etc/kubernetes` (ro)     | `pki/...`, kubeconfigs          |
//! | `data`       | `/var/lib/etcd` (rw)       | etcd's data, kept across specs  |
//! | `haproxy`    | `/usr/local/etc/haproxy` (ro) | `haproxy.cfg`                |
//!
//! Keys and kubeconfigs (which hold keys) are files with mode 0600; never
//! arguments or environment. Certificates and configuration are 0644.
//!
//! Every container runs as root (`run_as_user: Some(0)`): the agent writes
//! the component directory 0700 and key files 0600, owned by root, and a
//! `File` has no owner, so only root can read them. Giving each component
//! its own user needs file ownership in the link protocol (later).

mod apiserver;
mod controller_manager;
pub mod etcd;
mod haproxy;
mod kube_scheduler;

use super::kubeconfig;
use super::model::{Allocation, ClusterSpec, ReplicaSlot};
use super::pki::{CertKey, ClusterPki, ReplicaCerts};
use super::versions::{Flag, Release};
use oi_proto::model::{
    Component, EnvVar, File, HostPort, Mount, Probe, Protocol, Resources, Scheme,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// How generously components are sized.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Close to kubeadm's flags and requests.
    #[default]
    Default,
    /// Many small control planes per hypervisor: smaller requests, Go
    /// runtime limits (`GOGC`, `GOMEMLIMIT`), a smaller etcd backend quota,
    /// snapshot interval and raft tick, no apiserver watch cache and no
    /// per-minute etcd object counts.
    Dense,
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "default" => Ok(Profile::Default),
            "dense" => Ok(Profile::Dense),
            other => Err(format!(
                "unknown profile {other:?}: use \"default\" or \"dense\""
            )),
        }
    }
}

/// Everything one rendering needs.
#[derive(Clone, Copy, Debug)]
pub struct RenderInput<'a> {
    pub spec: &'a ClusterSpec,
    /// The cluster's incarnation, set on every component it renders.
    pub incarnation: &'a str,
    pub release: &'a Release,
    pub pki: &'a ClusterPki,
    /// Leaf certificates by replica slot index.
    pub replica_certs: &'a BTreeMap<u32, ReplicaCerts>,
    pub allocation: &'a Allocation,
    pub profile: Profile,
}

/// A component and the hypervisor it goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    pub hypervisor: String,
    pub component: Component,
}

/// Why a cluster could not be rendered. Each message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(
        "release {release} was given for a cluster of version {spec}: look the release up by the \
         spec's kubernetesVersion"
    )]
    VersionMismatch { spec: String, release: String },
    #[error("the allocation has no replica: schedule the cluster before rendering it")]
    NoReplicas,
    #[error("replica slot {0} appears twice in the allocation: slot indices must be unique")]
    DuplicateSlot(u32),
    #[error("no certificates for replica slot {0}: issue them with ClusterPki::issue_replica")]
    MissingCerts(u32),
    #[error("{what} address {value:?} is not an IP address: hypervisors must have IP addresses")]
    Address { what: &'static str, value: String },
    #[error("service CIDR {0:?} has no first address: validate the spec before rendering")]
    ServiceIp(String),
    #[error("build {what}: {message}")]
    Kubeconfig { what: &'static str, message: String },
}

/// Renders every component of the cluster, sorted by component id.
pub fn render_cluster(input: &RenderInput<'_>) -> Result<Vec<Placed>, RenderError> {
    let ctx = Ctx::new(input)?;
    let mut out = Vec::new();
    // A slot whose member is only about to be added has no pods yet.
    for slot in input.allocation.replicas.iter().filter(|s| !s.etcd.adding) {
        let certs = input
            .replica_certs
            .get(&slot.index)
            .ok_or(RenderError::MissingCerts(slot.index))?;
        let r = Replica { slot, certs };
        for component in [
            etcd::render(&ctx, &r),
            apiserver::render(&ctx, &r),
            controller_manager::render(&ctx, &r)?,
            kube_scheduler::render(&ctx, &r)?,
        ] {
            out.push(Placed {
                hypervisor: slot.hypervisor.clone(),
                component,
            });
        }
    }
    out.push(Placed {
        hypervisor: input.allocation.ingress.hypervisor.clone(),
        component: haproxy::render(&ctx),
    });
    for p in &mut out {
        p.component.incarnation = input.incarnation.to_string();
    }
    out.sort_by(|a, b| a.component.id.cmp(&b.component.id));
    Ok(out)
}

/// The component ids of a cluster with the given replica slot indices,
/// sorted (what [`render_cluster`] produces).
pub fn component_ids(cluster: &str, slots: &[u32]) -> Vec<String> {
    let mut ids: Vec<String> = slots
        .iter()
        .flat_map(|i| {
            [
                Kind::Etcd,
                Kind::Apiserver,
                Kind::ControllerManager,
                Kind::Scheduler,
            ]
            .map(|k| replica_component_id(cluster, k, *i))
        })
        .collect();
    ids.push(ingress_id(cluster));
    ids.sort();
    ids
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Etcd,
    Apiserver,
    ControllerManager,
    Scheduler,
    Haproxy,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Etcd => "etcd",
            Kind::Apiserver => "kube-apiserver",
            Kind::ControllerManager => "kube-controller-manager",
            Kind::Scheduler => "kube-scheduler",
            Kind::Haproxy => "haproxy",
        }
    }
}

/// `<cluster>/<component>-<index>` of a replica's component.
fn replica_component_id(cluster: &str, kind: Kind, index: u32) -> String {
    format!("{cluster}/{}-{index}", kind.name())
}

/// `<cluster>/ingress`.
pub fn ingress_id(cluster: &str) -> String {
    format!("{cluster}/ingress")
}

/// What every component renderer shares, checked once.
pub(crate) struct Ctx<'a> {
    pub input: &'a RenderInput<'a>,
    /// Replica slots sorted by index.
    pub slots: Vec<&'a ReplicaSlot>,
}

pub(crate) struct Replica<'a> {
    pub slot: &'a ReplicaSlot,
    pub certs: &'a ReplicaCerts,
}

impl<'a> Ctx<'a> {
    fn new(input: &'a RenderInput<'a>) -> Result<Self, RenderError> {
        if input.release.version != input.spec.kubernetes_version {
            return Err(RenderError::VersionMismatch {
                spec: input.spec.kubernetes_version.clone(),
                release: input.release.version.clone(),
            });
        }
        if input.allocation.replicas.is_empty() {
            return Err(RenderError::NoReplicas);
        }
        let mut seen = BTreeSet::new();
        for s in &input.allocation.replicas {
            if !seen.insert(s.index) {
                return Err(RenderError::DuplicateSlot(s.index));
            }
            ip(&s.address, "replica hypervisor")?;
        }
        ip(&input.allocation.ingress.address, "ingress")?;
        if input.spec.kubernetes_service_ip().is_none() {
            return Err(RenderError::ServiceIp(input.spec.service_cidr.clone()));
        }
        let mut slots: Vec<&ReplicaSlot> = input
            .allocation
            .replicas
            .iter()
            .filter(|s| !s.etcd.adding)
            .collect();
        slots.sort_by_key(|s| s.index);
        Ok(Self { input, slots })
    }

    pub fn cluster(&self) -> &str {
        &self.input.spec.name
    }

    pub fn profile(&self) -> Profile {
        self.input.profile
    }

    /// Leader election is needed when replicas run side by side. Default
    /// keeps it on with one replica too, so that scaling never changes (and
    /// restarts) a running controller-manager or scheduler; Dense saves its
    /// lease writes while there is one replica.
    pub fn leader_elect(&self) -> bool {
        self.slots.len() > 1 || self.profile() == Profile::Default
    }

    pub fn id(&self, kind: Kind, index: u32) -> String {
        replica_component_id(self.cluster(), kind, index)
    }

    pub fn flags(&self) -> &'a super::versions::VersionFlags {
        &self.input.release.flags
    }
}

fn ip(value: &str, what: &'static str) -> Result<IpAddr, RenderError> {
    value.parse().map_err(|_| RenderError::Address {
        what,
        value: value.into(),
    })
}

/// `address:port`, bracketing IPv6 addresses.
pub(crate) fn host_port(address: &str, port: u16) -> String {
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V6(a)) => format!("[{a}]:{port}"),
        _ => format!("{address}:{port}"),
    }
}

/// A kubeconfig for a component of `slot` talking to its own replica's
/// apiserver on 127.0.0.1 (the serving certificate has 127.0.0.1).
pub(crate) fn local_kubeconfig(
    ctx: &Ctx<'_>,
    slot: &ReplicaSlot,
    user: &str,
    cert: &CertKey,
) -> Result<String, RenderError> {
    let server = format!("https://{}", host_port("127.0.0.1", slot.ports.apiserver));
    kubeconfig::client_kubeconfig(
        ctx.cluster(),
        user,
        &server,
        &ctx.input.pki.apiserver_ca.cert_pem,
        cert,
    )
    .map_err(|e| RenderError::Kubeconfig {
        what: "component kubeconfig",
        message: e.to_string(),
    })
}

/// Command-line flags, kept sorted by name so that the same flags always
/// give the same arguments. Setting a flag again replaces its value.
#[derive(Default)]
pub(crate) struct Flags(BTreeMap<String, String>);

impl Flags {
    pub fn set(&mut self, name: &str, value: impl ToString) -> &mut Self {
        self.0.insert(name.to_string(), value.to_string());
        self
    }

    pub fn extend(&mut self, flags: &[Flag]) -> &mut Self {
        for (name, value) in flags {
            self.set(name, value);
        }
        self
    }

    pub fn into_args(self) -> Vec<String> {
        self.0
            .into_iter()
            .map(|(k, v)| format!("--{k}={v}"))
            .collect()
    }
}

/// Where the `kubernetes` directory of a component is mounted.
pub(crate) const K8S_DIR: &str = "/etc/kubernetes";
pub(crate) const K8S_SOURCE: &str = "kubernetes";

pub(crate) fn k8s_mount() -> Mount {
    Mount {
        source: K8S_SOURCE.into(),
        container_path: K8S_DIR.into(),
        read_only: true,
    }
}

/// Files under the component's `kubernetes` directory, named by their path
/// below it (`pki/ca.crt`); `container_path` gives the path the process sees.
#[derive(Default)]
pub(crate) struct Files(Vec<File>);

impl Files {
    /// A certificate or configuration: 0644.
    pub fn public(&mut self, rel: &str, content: &str) -> String {
        self.add(rel, content, 0o644)
    }

    /// Key material: 0600.
    pub fn secret(&mut self, rel: &str, content: &str) -> String {
        self.add(rel, content, 0o600)
    }

    fn add(&mut self, rel: &str, content: &str, mode: u32) -> String {
        self.0.push(File {
            path: format!("{K8S_SOURCE}/{rel}"),
            mode,
            content: content.as_bytes().to_vec(),
        });
        format!("{K8S_DIR}/{rel}")
    }

    pub fn into_vec(mut self) -> Vec<File> {
        self.0.sort_by(|a, b| a.path.cmp(&b.path));
        self.0
    }
}

pub(crate) fn tcp(name: &str, port: u16) -> HostPort {
    HostPort {
        name: name.into(),
        port,
        protocol: Protocol::Tcp,
    }
}

impl Ctx<'_> {
    /// A component's health probe. Dense probes half as often: on an idle
    /// control plane each probe is a TLS handshake and a `/readyz` (an etcd
    /// read) in components that otherwise do little; readiness changes are
    /// seen within 10 s instead of 5 (a starting component is still probed
    /// every second by the agent until it first passes).
    pub(crate) fn probe(&self, scheme: Scheme, port: u16, path: &str) -> Probe {
        Probe {
            scheme,
            port,
            path: path.into(),
            period_ms: match self.profile() {
                Profile::Default => 5_000,
                Profile::Dense => 10_000,
            },
            timeout_ms: 3_000,
            failure_threshold: 3,
            initial_delay_ms: 0,
        }
    }
}

const MIB: u64 = 1024 * 1024;

/// Requests and Go runtime settings of one component in one profile.
///
/// Measured with `tests/tests/render_host.rs` (1.20.2 binaries built with
/// Go 1.19, etcd 3.4.23, haproxy 2.6; fresh cluster, ~30 s after ready,
/// CPU over a 10 s idle window):
///
/// | component          | RSS Default | RSS Dense | idle CPU |
/// |--------------------|-------------|-----------|----------|
/// | etcd (1 / 3 repl.) | 41 / 63-70 MiB | 37 MiB | 7 / 15-19m |
/// | kube-apiserver     | 333-365 MiB | 249-256 MiB | 12-24m |
/// | controller-manager | 71-90 MiB   | 84 MiB    | 1-9m     |
/// | scheduler          | 42-44 MiB   | 41 MiB    | 0-4m     |
/// | haproxy (PSS)      | 15 MiB      | 15 MiB    | 0-1m     |
///
/// RSS includes the binary's text, which apiservers of one version on one
/// hypervisor share in the page cache, so requests sit slightly below it.
///
/// Default: kubeadm's CPU requests (etcd 100m, apiserver 250m,
/// controller-manager 200m, scheduler 100m) and kubeadm's 100 MiB for etcd;
/// memory of the others at the measured idle footprint.
///
/// Dense: CPU a little above idle, memory at the Dense footprint (a
/// busy cluster uses more: Dense overcommits on purpose). `GOGC` (30 for
/// the API server, 50 for the others) trades some CPU for a smaller heap;
/// `GOMEMLIMIT` is a soft cap well above the request, where the GC gets
/// aggressive (a cap below the live heap would make it spin, so it is
/// never set near the request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sizing {
    pub cpu_millis: u64,
    pub memory_mib: u64,
    /// Go runtime settings (Dense only): `GOGC` and the `GOMEMLIMIT` soft cap.
    pub go: Option<GoRuntime>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GoRuntime {
    pub gogc: u32,
    pub gomemlimit_mib: u64,
}

pub(crate) fn sizing(kind: Kind, profile: Profile) -> Sizing {
    let s = |cpu_millis, memory_mib| Sizing {
        cpu_millis,
        memory_mib,
        go: None,
    };
    let go = |cpu_millis, memory_mib, gogc, gomemlimit_mib| Sizing {
        cpu_millis,
        memory_mib,
        go: Some(GoRuntime {
            gogc,
            gomemlimit_mib,
        }),
    };
    match (profile, kind) {
        (Profile::Default, Kind::Etcd) => s(100, 100),
        (Profile::Default, Kind::Apiserver) => s(250, 320),
        (Profile::Default, Kind::ControllerManager) => s(200, 96),
        (Profile::Default, Kind::Scheduler) => s(100, 48),
        (Profile::Default, Kind::Haproxy) => s(10, 16),
        (Profile::Dense, Kind::Etcd) => go(20, 48, DENSE_GOGC, 128),
        (Profile::Dense, Kind::Apiserver) => go(30, 256, DENSE_APISERVER_GOGC, 448),
        (Profile::Dense, Kind::ControllerManager) => go(10, 80, DENSE_GOGC, 160),
        (Profile::Dense, Kind::Scheduler) => go(5, 40, DENSE_GOGC, 96),
        (Profile::Dense, Kind::Haproxy) => s(5, 16),
    }
}

/// Dense `GOGC` for etcd, controller-manager and scheduler.
pub(crate) const DENSE_GOGC: u32 = 50;
/// Dense `GOGC` for the API server, most of a control plane's heap:
/// measured with 20 control planes, 30 instead of 50 saves ~31 MiB PSS per
/// API server for ~0.6 mCPU more at idle (bench/README.md).
pub(crate) const DENSE_APISERVER_GOGC: u32 = 30;

/// Requests of one control-plane replica (etcd, apiserver, controller-
/// manager, scheduler) together: what the scheduler reserves per replica.
pub fn replica_resources(profile: Profile) -> Resources {
    [
        Kind::Etcd,
        Kind::Apiserver,
        Kind::ControllerManager,
        Kind::Scheduler,
    ]
    .into_iter()
    .map(|k| sizing(k, profile).resources())
    .fold(Resources::default(), |a, b| a + b)
}

/// Requests of the ingress.
pub fn ingress_resources(profile: Profile) -> Resources {
    sizing(Kind::Haproxy, profile).resources()
}

impl Sizing {
    pub fn resources(&self) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis,
            memory_bytes: self.memory_mib * MIB,
        }
    }

    /// Go runtime environment (empty for the Default profile).
    pub fn env(&self) -> Vec<EnvVar> {
        match self.go {
            None => vec![],
            Some(go) => vec![
                EnvVar {
                    name: "GOGC".into(),
                    value: go.gogc.to_string(),
                },
                EnvVar {
                    name: "GOMEMLIMIT".into(),
                    value: format!("{}MiB", go.gomemlimit_mib),
                },
            ],
        }
    }
}

/// The user every container runs as (see the module docs).
pub(crate) const ROOT: Option<i64> = Some(0);

#[cfg(test)]
mod tests;
