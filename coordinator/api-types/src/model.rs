//! Managed clusters: what a user declares ([`ClusterSpec`]), where its pieces
//! were put ([`Allocation`]), and the validation that refuses bad input
//! before anything is stored.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Control-plane replicas a cluster may ask for.
pub const MAX_REPLICAS: u32 = 7;

pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";
pub const DEFAULT_POD_CIDR: &str = "10.244.0.0/16";

/// A cluster as declared by its user (`oi cluster create`, `oi apply`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSpec {
    pub name: String,
    /// Empty (or left out): the coordinator's default, the newest version
    /// of its matrix; an existing cluster keeps its own.
    #[serde(default)]
    pub kubernetes_version: String,
    #[serde(default = "one")]
    pub replicas: u32,
    #[serde(default = "default_service_cidr")]
    pub service_cidr: String,
    #[serde(default = "default_pod_cidr")]
    pub pod_cidr: String,
    /// Extra names and addresses on the API server certificate.
    #[serde(default)]
    pub api_server_extra_sans: Vec<String>,
    /// What the coordinator installs into the cluster for its workers.
    #[serde(default)]
    pub addons: Addons,
}

/// The cluster add-ons, each on unless turned off. Turning one off removes
/// what it applied (only objects oneinfra labelled as its own).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Addons {
    /// kube-proxy as a DaemonSet (its image from the version matrix).
    #[serde(default = "yes")]
    pub kube_proxy: bool,
    /// Cluster DNS: CoreDNS as kubeadm installs it, Service `kube-dns` at
    /// the tenth address of the service range.
    #[serde(default = "yes")]
    pub dns: bool,
    /// Pod networking on the workers.
    #[serde(default)]
    pub cni: Cni,
}

impl Default for Addons {
    fn default() -> Self {
        Self {
            kube_proxy: true,
            dns: true,
            cni: Cni::Bridge,
        }
    }
}

/// Pod networking: `bridge` (a bridge and host-local addresses over each
/// node's podCIDR, routes to the other nodes' podCIDRs, kept by `oi node
/// network` on every worker) or `none` (bring your own CNI).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cni {
    #[default]
    Bridge,
    None,
}

impl Cni {
    pub const ALL: [Cni; 2] = [Cni::Bridge, Cni::None];

    pub fn as_str(self) -> &'static str {
        match self {
            Cni::Bridge => "bridge",
            Cni::None => "none",
        }
    }

    /// `""` is the default (bridge).
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        if s.is_empty() {
            return Ok(Cni::Bridge);
        }
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| ValidationError::Cni(s.into()))
    }
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}
fn default_service_cidr() -> String {
    DEFAULT_SERVICE_CIDR.into()
}
fn default_pod_cidr() -> String {
    DEFAULT_POD_CIDR.into()
}

/// Why a cluster spec is refused. Each message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error(
        "invalid cluster name {0:?}: use 1-63 lowercase letters, digits and '-', starting with a \
         letter and ending with a letter or digit (a DNS-1123 label)"
    )]
    Name(String),
    #[error(
        "Kubernetes version {given:?} is not supported: use one of {supported} \
         (`oi version --kubernetes` lists them)"
    )]
    Version { given: String, supported: String },
    #[error(
        "replicas = {0} is out of range: use 1 to {MAX_REPLICAS} (an odd number keeps etcd quorum)"
    )]
    Replicas(u32),
    #[error("{field} {value:?} is not a CIDR: write it as ADDRESS/PREFIX, e.g. {example}")]
    Cidr {
        field: &'static str,
        value: String,
        example: &'static str,
    },
    #[error("{field} {value:?} has host bits set: use its network address {network}")]
    CidrHostBits {
        field: &'static str,
        value: String,
        network: String,
    },
    #[error("service CIDR {service} is too small: use a prefix of /{max_prefix} or shorter")]
    ServiceCidrSize { service: String, max_prefix: u8 },
    #[error("service CIDR {service} overlaps pod CIDR {pod}: pick ranges that do not overlap")]
    Overlap { service: String, pod: String },
    #[error("extra SAN {0:?} is neither an IP address nor a DNS name")]
    San(String),
    #[error("addons.cni {0:?} is not known: use bridge or none")]
    Cni(String),
}

/// DNS-1123 label: what cluster and hypervisor names must be.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.as_bytes()[0].is_ascii_lowercase()
        && !s.ends_with('-')
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn parse_cidr(
    field: &'static str,
    value: &str,
    example: &'static str,
) -> Result<IpNet, ValidationError> {
    let net: IpNet = value.parse().map_err(|_| ValidationError::Cidr {
        field,
        value: value.into(),
        example,
    })?;
    if net.trunc() != net {
        return Err(ValidationError::CidrHostBits {
            field,
            value: value.into(),
            network: net.trunc().to_string(),
        });
    }
    Ok(net)
}

impl ClusterSpec {
    /// A spec with defaults for everything but name and version.
    pub fn new(name: &str, version: &str, replicas: u32) -> Self {
        Self {
            name: name.into(),
            kubernetes_version: version.into(),
            replicas,
            service_cidr: default_service_cidr(),
            pod_cidr: default_pod_cidr(),
            api_server_extra_sans: vec![],
            addons: Addons::default(),
        }
    }

    /// Checks everything that can be checked without the fleet.
    /// `versions` are the supported Kubernetes versions.
    pub fn validate(&self, versions: &[&str]) -> Result<(), ValidationError> {
        if !is_dns1123_label(&self.name) {
            return Err(ValidationError::Name(self.name.clone()));
        }
        if !versions.contains(&self.kubernetes_version.as_str()) {
            return Err(ValidationError::Version {
                given: self.kubernetes_version.clone(),
                supported: versions.join(", "),
            });
        }
        if !(1..=MAX_REPLICAS).contains(&self.replicas) {
            return Err(ValidationError::Replicas(self.replicas));
        }
        let service = parse_cidr("service CIDR", &self.service_cidr, DEFAULT_SERVICE_CIDR)?;
        let pod = parse_cidr("pod CIDR", &self.pod_cidr, DEFAULT_POD_CIDR)?;
        // The API server wants at least a handful of service IPs and at most
        // 2^20 (IPv4: /12 .. /28).
        let max_prefix = if service.addr().is_ipv4() { 28 } else { 120 };
        let min_prefix = if service.addr().is_ipv4() { 12 } else { 108 };
        if service.prefix_len() > max_prefix || service.prefix_len() < min_prefix {
            return Err(ValidationError::ServiceCidrSize {
                service: self.service_cidr.clone(),
                max_prefix,
            });
        }
        if service.contains(&pod.network()) || pod.contains(&service.network()) {
            return Err(ValidationError::Overlap {
                service: self.service_cidr.clone(),
                pod: self.pod_cidr.clone(),
            });
        }
        for san in &self.api_server_extra_sans {
            if san.parse::<IpAddr>().is_err() && !is_dns_name(san) {
                return Err(ValidationError::San(san.clone()));
            }
        }
        Ok(())
    }

    /// The first address of the service range: the `kubernetes` Service.
    pub fn kubernetes_service_ip(&self) -> Option<IpAddr> {
        let net: IpNet = self.service_cidr.parse().ok()?;
        net.hosts().next()
    }

    /// The cluster DNS service address: the range's base + 10.
    pub fn dns_service_ip(&self) -> Option<IpAddr> {
        let net: IpNet = self.service_cidr.parse().ok()?;
        net.hosts().nth(9)
    }
}

/// Host ports of one control-plane replica on its private hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaPorts {
    pub apiserver: u16,
    pub etcd_client: u16,
    pub etcd_peer: u16,
    /// etcd's plain-HTTP `/health` and `/metrics` on 127.0.0.1.
    pub etcd_metrics: u16,
    /// kube-controller-manager's secure port (127.0.0.1).
    pub controller_manager: u16,
    /// kube-scheduler's secure port (127.0.0.1).
    pub scheduler: u16,
}

impl ReplicaPorts {
    /// How many host ports one replica takes.
    pub const COUNT: usize = 6;

    pub fn from_slice(p: &[u16]) -> Option<Self> {
        match *p {
            [apiserver, etcd_client, etcd_peer, etcd_metrics, controller_manager, scheduler] => {
                Some(Self {
                    apiserver,
                    etcd_client,
                    etcd_peer,
                    etcd_metrics,
                    controller_manager,
                    scheduler,
                })
            }
            _ => None,
        }
    }

    pub fn all(&self) -> [u16; Self::COUNT] {
        [
            self.apiserver,
            self.etcd_client,
            self.etcd_peer,
            self.etcd_metrics,
            self.controller_manager,
            self.scheduler,
        ]
    }
}

/// One control-plane replica: where it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaSlot {
    /// Stable index: names etcd member `<cluster>-<index>`; never reused
    /// while the replica exists.
    pub index: u32,
    pub hypervisor: String,
    /// The hypervisor's address.
    pub address: String,
    pub ports: ReplicaPorts,
    /// How its etcd member first joined; fixed when the replica is added.
    #[serde(default)]
    pub etcd: EtcdJoin,
}

/// The bootstrap flags of one etcd member. etcd reads them only on its
/// first start, but they are part of the member's spec: they are fixed when
/// the replica is added and never change afterwards (a change would restart
/// the member for nothing).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdJoin {
    /// `--initial-cluster`: `name=peer-url` of every member it starts with.
    /// Empty until the coordinator fills it in.
    pub initial_cluster: String,
    /// `--initial-cluster-state=existing`: joins a running cluster (as a
    /// learner, promoted once in sync) instead of bootstrapping a new one.
    pub existing: bool,
    /// Added as a learner and not promoted yet (not rendered).
    #[serde(default)]
    pub pending: bool,
    /// Moving off its hypervisor (drained): a replacement joins elsewhere
    /// first, then this member is removed (not rendered).
    #[serde(default)]
    pub leaving: bool,
    /// Intent, recorded before etcd is asked: this slot's member is being
    /// added as a learner. Its pods are not placed until the add is
    /// recorded (a member that starts before it is added is refused).
    #[serde(default)]
    pub adding: bool,
    /// Intent, recorded before etcd is asked: this slot's member is being
    /// removed. Its pods stay until the removal is recorded, and the
    /// member is never added back.
    #[serde(default)]
    pub removing: bool,
}

/// The ingress (haproxy) on a public hypervisor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressSlot {
    pub hypervisor: String,
    pub address: String,
    /// The cluster's API endpoint port.
    pub port: u16,
}

/// Where every piece of one cluster runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub replicas: Vec<ReplicaSlot>,
    pub ingress: IngressSlot,
}

impl Allocation {
    /// `https://<ingress address>:<port>`, the cluster's API endpoint.
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.host_port())
    }

    /// `<ingress address>:<port>` (an IPv6 address in brackets), as join
    /// lines and kubeadm's `controlPlaneEndpoint` name it.
    pub fn host_port(&self) -> String {
        match self.ingress.address.parse::<IpAddr>() {
            Ok(IpAddr::V6(a)) => format!("[{a}]:{}", self.ingress.port),
            _ => format!("{}:{}", self.ingress.address, self.ingress.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: &[&str] = &["1.35.4", "1.37.2"];

    #[test]
    fn good_specs_pass() {
        ClusterSpec::new("prod-1", "1.37.2", 3).validate(V).unwrap();
        let mut s = ClusterSpec::new("a", "1.35.4", 1);
        s.api_server_extra_sans = vec!["api.example.com".into(), "192.0.2.7".into()];
        s.validate(V).unwrap();
        assert_eq!(s.kubernetes_service_ip().unwrap().to_string(), "10.96.0.1");
        assert_eq!(s.dns_service_ip().unwrap().to_string(), "10.96.0.10");
    }

    #[test]
    fn bad_specs_are_refused_with_a_hint() {
        let base = ClusterSpec::new("ok", "1.37.2", 1);
        let cases: Vec<(ClusterSpec, &str)> = vec![
            (
                ClusterSpec {
                    name: "Bad_Name".into(),
                    ..base.clone()
                },
                "DNS-1123",
            ),
            (
                ClusterSpec {
                    name: "1abc".into(),
                    ..base.clone()
                },
                "DNS-1123",
            ),
            (
                ClusterSpec {
                    name: "x".repeat(64),
                    ..base.clone()
                },
                "DNS-1123",
            ),
            (
                ClusterSpec {
                    kubernetes_version: "1.99.0".into(),
                    ..base.clone()
                },
                "oi version --kubernetes",
            ),
            (
                ClusterSpec {
                    replicas: 0,
                    ..base.clone()
                },
                "1 to 7",
            ),
            (
                ClusterSpec {
                    replicas: 9,
                    ..base.clone()
                },
                "1 to 7",
            ),
            (
                ClusterSpec {
                    service_cidr: "10.96.0.0".into(),
                    ..base.clone()
                },
                "ADDRESS/PREFIX",
            ),
            (
                ClusterSpec {
                    service_cidr: "10.96.0.1/12".into(),
                    ..base.clone()
                },
                "network address 10.96.0.0/12",
            ),
            (
                ClusterSpec {
                    service_cidr: "10.0.0.0/8".into(),
                    ..base.clone()
                },
                "too small",
            ),
            (
                ClusterSpec {
                    pod_cidr: "10.96.0.0/16".into(),
                    ..base.clone()
                },
                "overlaps",
            ),
            (
                ClusterSpec {
                    pod_cidr: "10.0.0.0/8".into(),
                    ..base.clone()
                },
                "overlaps",
            ),
            (
                ClusterSpec {
                    api_server_extra_sans: vec!["not a name".into()],
                    ..base.clone()
                },
                "extra SAN",
            ),
        ];
        for (spec, needle) in cases {
            let err = spec.validate(V).unwrap_err().to_string();
            assert!(err.contains(needle), "{spec:?}: {err}");
        }
    }

    #[test]
    fn endpoint_brackets_ipv6() {
        let a = Allocation {
            replicas: vec![],
            ingress: IngressSlot {
                hypervisor: "p".into(),
                address: "fd00::1".into(),
                port: 30000,
            },
        };
        assert_eq!(a.endpoint(), "https://[fd00::1]:30000");
        assert_eq!(a.host_port(), "[fd00::1]:30000");
    }

    #[test]
    fn yaml_spec_uses_defaults() {
        let s: ClusterSpec =
            serde_json::from_str(r#"{"name":"a","kubernetesVersion":"1.37.2"}"#).unwrap();
        assert_eq!(s.replicas, 1);
        assert_eq!(s.service_cidr, DEFAULT_SERVICE_CIDR);
    }
}
