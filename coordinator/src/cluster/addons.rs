//! The cluster add-ons the coordinator keeps in a managed cluster (pure):
//! what each one is, as typed Kubernetes objects. The node sync
//! (`crate::nodes`) applies the objects of the add-ons that are on and
//! deletes those of the add-ons that are off (only objects carrying the
//! managed-by label: never one a user made under the same name).
//!
//! * kube-proxy: kubeadm's DaemonSet, ServiceAccount bound to
//!   `system:node-proxier`, and its ConfigMap (a KubeProxyConfiguration and
//!   a kubeconfig to the cluster's endpoint with the ServiceAccount token).
//! * dns: CoreDNS as kubeadm installs it: Deployment, `kube-dns` Service at
//!   the tenth address of the service range, ServiceAccount, ClusterRole
//!   `system:coredns` and its binding, the Corefile.
//! * network (always): `kube-system/oneinfra-node-network`, which tells
//!   every worker's `oi node network` whether it keeps a bridge CNI and the
//!   routes between workers, and its read Role for nodes and joining nodes.
//!
//! Documents another program reads are typed structs serialized as JSON.

use super::model::ClusterSpec;
use super::node_bootstrap::{MANAGED_BY, MANAGED_BY_LABEL, TOKEN_GROUP};
use super::node_config::CLUSTER_DOMAIN;
use super::versions::Release;
use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, Deployment, DeploymentSpec,
    RollingUpdateDaemonSet,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar,
    EnvVarSource, HTTPGetAction, HostPathVolumeSource, ObjectFieldSelector, PodAffinityTerm,
    PodAntiAffinity, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SecurityContext,
    Service, ServiceAccount, ServicePort, ServiceSpec, Toleration, Volume, VolumeMount,
    WeightedPodAffinityTerm,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::config::{
    AuthInfo, Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext,
};
use oi_api_types::node_network::{self, NodeNetwork};
use serde::Serialize;
use std::collections::BTreeMap;

/// One add-on: what turns it on or off in the spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Addon {
    KubeProxy,
    Dns,
    /// The node network configuration (always on; says `cni: none` when
    /// the CNI add-on is off).
    Network,
}

impl Addon {
    pub fn as_str(self) -> &'static str {
        match self {
            Addon::KubeProxy => "kube-proxy",
            Addon::Dns => "dns",
            Addon::Network => "network",
        }
    }
}

/// One object of an add-on.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    ServiceAccount(ServiceAccount),
    ConfigMap(ConfigMap),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    Role(Role),
    RoleBinding(RoleBinding),
    DaemonSet(DaemonSet),
    Deployment(Deployment),
    Service(Service),
}

impl Object {
    /// `Kind namespace/name` (or `Kind name`), for logs and errors.
    pub fn describe(&self) -> String {
        let (kind, m) = match self {
            Object::ServiceAccount(o) => ("ServiceAccount", &o.metadata),
            Object::ConfigMap(o) => ("ConfigMap", &o.metadata),
            Object::ClusterRole(o) => ("ClusterRole", &o.metadata),
            Object::ClusterRoleBinding(o) => ("ClusterRoleBinding", &o.metadata),
            Object::Role(o) => ("Role", &o.metadata),
            Object::RoleBinding(o) => ("RoleBinding", &o.metadata),
            Object::DaemonSet(o) => ("DaemonSet", &o.metadata),
            Object::Deployment(o) => ("Deployment", &o.metadata),
            Object::Service(o) => ("Service", &o.metadata),
        };
        let name = m.name.as_deref().unwrap_or_default();
        match &m.namespace {
            Some(ns) => format!("{kind} {ns}/{name}"),
            None => format!("{kind} {name}"),
        }
    }
}

/// Every add-on's objects, each with whether the spec has it on.
pub struct AddonObjects {
    pub on: Vec<(Addon, Object)>,
    pub off: Vec<(Addon, Object)>,
}

/// The objects of every add-on of the cluster. `endpoint_host_port` is the
/// cluster's API as workers reach it (its ingress).
pub fn objects(
    spec: &ClusterSpec,
    release: &Release,
    endpoint_host_port: &str,
) -> Result<AddonObjects, String> {
    let mut out = AddonObjects {
        on: Vec::new(),
        off: Vec::new(),
    };
    let mut put = |addon: Addon, on: bool, objects: Vec<Object>| {
        let side = if on { &mut out.on } else { &mut out.off };
        side.extend(objects.into_iter().map(|o| (addon, o)));
    };
    put(
        Addon::KubeProxy,
        spec.addons.kube_proxy,
        kube_proxy(spec, &release.images.kube_proxy, endpoint_host_port)?,
    );
    put(
        Addon::Dns,
        spec.addons.dns,
        coredns(spec, &release.images.coredns)?,
    );
    put(Addon::Network, true, network(spec));
    Ok(out)
}

pub const KUBE_PROXY: &str = "kube-proxy";
pub const COREDNS: &str = "coredns";
pub const KUBE_DNS: &str = "kube-dns";
const SYSTEM: &str = "kube-system";
/// Where the side-loaded and the upstream kube-proxy images keep it.
pub const KUBE_PROXY_BIN: &str = "/usr/local/bin/kube-proxy";
/// The upstream CoreDNS image's entrypoint (the bed's image has it there
/// too).
pub const COREDNS_BIN: &str = "/coredns";

fn labels(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string())]);
    for (k, v) in extra {
        l.insert(k.to_string(), v.to_string());
    }
    l
}

fn meta(name: &str, namespace: Option<&str>, extra: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
        labels: Some(labels(extra)),
        ..Default::default()
    }
}

fn sa_subject(name: &str) -> Subject {
    Subject {
        kind: "ServiceAccount".into(),
        name: name.into(),
        namespace: Some(SYSTEM.into()),
        ..Default::default()
    }
}

fn group_subject(name: &str) -> Subject {
    Subject {
        kind: "Group".into(),
        name: name.into(),
        api_group: Some("rbac.authorization.k8s.io".into()),
        ..Default::default()
    }
}

fn cluster_role_ref(name: &str) -> RoleRef {
    RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "ClusterRole".into(),
        name: name.into(),
    }
}

fn json<T: Serialize>(what: &str, v: &T) -> Result<String, String> {
    serde_json::to_string_pretty(v).map_err(|e| format!("encode {what}: {e}"))
}

fn config_map(name: &str, extra: &[(&str, &str)], data: &[(&str, String)]) -> ConfigMap {
    ConfigMap {
        metadata: meta(name, Some(SYSTEM), extra),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        ),
        ..Default::default()
    }
}

// ------------------------------------------------------------ kube-proxy --

/// kube-proxy's configuration file (`kubeproxy.config.k8s.io/v1alpha1`).
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KubeProxyConfiguration {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub client_connection: ClientConnection,
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: String,
    pub mode: &'static str,
    pub conntrack: Conntrack,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct ClientConnection {
    pub kubeconfig: String,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Conntrack {
    /// 0: leave the host's `nf_conntrack_max` as it is (it is global to
    /// the host's kernel, and read-only inside a network namespace).
    pub max_per_core: u32,
}

const KUBE_PROXY_DIR: &str = "/var/lib/kube-proxy";
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

pub fn kube_proxy_configuration(spec: &ClusterSpec) -> KubeProxyConfiguration {
    KubeProxyConfiguration {
        api_version: "kubeproxy.config.k8s.io/v1alpha1",
        kind: "KubeProxyConfiguration",
        client_connection: ClientConnection {
            kubeconfig: format!("{KUBE_PROXY_DIR}/kubeconfig.conf"),
        },
        cluster_cidr: spec.pod_cidr.clone(),
        mode: "iptables",
        conntrack: Conntrack { max_per_core: 0 },
    }
}

/// kube-proxy's kubeconfig: the cluster's endpoint (not the `kubernetes`
/// Service, which kube-proxy itself makes reachable), the ServiceAccount's
/// token and CA.
pub fn kube_proxy_kubeconfig(endpoint_host_port: &str) -> Kubeconfig {
    Kubeconfig {
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        clusters: vec![NamedCluster {
            name: "default".into(),
            cluster: Some(Cluster {
                server: Some(format!("https://{endpoint_host_port}")),
                certificate_authority: Some(format!("{SA_DIR}/ca.crt")),
                ..Default::default()
            }),
            other: Default::default(),
        }],
        auth_infos: vec![NamedAuthInfo {
            name: "default".into(),
            auth_info: Some(AuthInfo {
                token_file: Some(format!("{SA_DIR}/token")),
                ..Default::default()
            }),
            other: Default::default(),
        }],
        contexts: vec![NamedContext {
            name: "default".into(),
            context: Some(Context {
                cluster: "default".into(),
                user: Some("default".into()),
                namespace: Some("default".into()),
                ..Default::default()
            }),
            other: Default::default(),
        }],
        current_context: Some("default".into()),
        ..Default::default()
    }
}

/// Pods labelled `k8s-app=<app>`.
fn selector(app: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([("k8s-app".to_string(), app.to_string())])),
        ..Default::default()
    }
}

fn template(app: &[(&str, &str)], pod: PodSpec) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(app)),
            ..Default::default()
        }),
        spec: Some(pod),
    }
}

fn service_account(name: &str, app: &[(&str, &str)]) -> Object {
    Object::ServiceAccount(ServiceAccount {
        metadata: meta(name, Some(SYSTEM), app),
        ..Default::default()
    })
}

fn tolerate_everything() -> Vec<Toleration> {
    vec![Toleration {
        operator: Some("Exists".into()),
        ..Default::default()
    }]
}

fn host_path(name: &str, path: &str, kind: &str) -> Volume {
    Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource {
            path: path.into(),
            type_: Some(kind.into()),
        }),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

fn kube_proxy(
    spec: &ClusterSpec,
    image: &str,
    endpoint_host_port: &str,
) -> Result<Vec<Object>, String> {
    let app = [("k8s-app", KUBE_PROXY)];
    let cm = config_map(
        KUBE_PROXY,
        &app,
        &[
            (
                "config.conf",
                json(
                    "the KubeProxyConfiguration",
                    &kube_proxy_configuration(spec),
                )?,
            ),
            (
                "kubeconfig.conf",
                json(
                    "kube-proxy's kubeconfig",
                    &kube_proxy_kubeconfig(endpoint_host_port),
                )?,
            ),
        ],
    );
    let binding = ClusterRoleBinding {
        metadata: meta("oneinfra:node-proxier", None, &[]),
        role_ref: cluster_role_ref("system:node-proxier"),
        subjects: Some(vec![sa_subject(KUBE_PROXY)]),
    };
    let container = Container {
        name: KUBE_PROXY.into(),
        image: Some(image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec![
            KUBE_PROXY_BIN.into(),
            format!("--config={KUBE_PROXY_DIR}/config.conf"),
            "--hostname-override=$(NODE_NAME)".into(),
        ]),
        env: Some(vec![EnvVar {
            name: "NODE_NAME".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "spec.nodeName".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        security_context: Some(SecurityContext {
            privileged: Some(true),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            mount(KUBE_PROXY, KUBE_PROXY_DIR, false),
            mount("xtables-lock", "/run/xtables.lock", false),
        ]),
        ..Default::default()
    };
    let pod = PodSpec {
        containers: vec![container],
        host_network: Some(true),
        priority_class_name: Some("system-node-critical".into()),
        service_account_name: Some(KUBE_PROXY.into()),
        node_selector: Some(BTreeMap::from([(
            "kubernetes.io/os".to_string(),
            "linux".to_string(),
        )])),
        tolerations: Some(tolerate_everything()),
        volumes: Some(vec![
            Volume {
                name: KUBE_PROXY.into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: KUBE_PROXY.into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            // iptables mode loads no kernel module: no /lib/modules
            // (which a host may not have, and a hostPath would create)
            host_path("xtables-lock", "/run/xtables.lock", "FileOrCreate"),
        ]),
        ..Default::default()
    };
    let ds = DaemonSet {
        metadata: meta(KUBE_PROXY, Some(SYSTEM), &app),
        spec: DaemonSetSpec {
            selector: selector(KUBE_PROXY),
            template: template(&app, pod),
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::Int(1)),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    Ok(vec![
        service_account(KUBE_PROXY, &app),
        Object::ClusterRoleBinding(binding),
        Object::ConfigMap(cm),
        Object::DaemonSet(ds),
    ])
}

// ------------------------------------------------------------------ DNS --

/// kubeadm's Corefile for `domain`. The Corefile is CoreDNS's own format
/// (no serializer exists for it): only the domain varies, and the test bed
/// runs the real CoreDNS on it.
pub fn corefile(domain: &str) -> String {
    format!(
        ".:53 {{\n    errors\n    health {{\n       lameduck 5s\n    }}\n    ready\n    \
         kubernetes {domain} in-addr.arpa ip6.arpa {{\n       pods insecure\n       \
         fallthrough in-addr.arpa ip6.arpa\n       ttl 30\n    }}\n    prometheus :9153\n    \
         forward . /etc/resolv.conf {{\n       max_concurrent 1000\n    }}\n    cache 30 {{\n       \
         disable success {domain}\n       disable denial {domain}\n    }}\n    loop\n    reload\n    \
         loadbalance\n}}\n"
    )
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(v(groups)),
        resources: Some(v(resources)),
        verbs: v(verbs),
        ..Default::default()
    }
}

fn port(name: &str, port: i32, protocol: &str) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some(protocol.into()),
        ..Default::default()
    }
}

fn http_probe(path: &str, port: i32, initial: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port),
            scheme: Some("HTTP".into()),
            ..Default::default()
        }),
        initial_delay_seconds: Some(initial),
        timeout_seconds: Some(5),
        period_seconds: Some(10),
        failure_threshold: Some(5),
        success_threshold: Some(1),
        ..Default::default()
    }
}

fn coredns(spec: &ClusterSpec, image: &str) -> Result<Vec<Object>, String> {
    let dns_ip = spec
        .dns_service_ip()
        .ok_or_else(|| format!("service CIDR {} has no tenth address", spec.service_cidr))?;
    let app = [("k8s-app", KUBE_DNS)];
    let dns_pods = BTreeMap::from([("k8s-app".to_string(), KUBE_DNS.to_string())]);
    let role = ClusterRole {
        metadata: meta("system:coredns", None, &[]),
        rules: Some(vec![
            rule(
                &[""],
                &["endpoints", "services", "pods", "namespaces"],
                &["list", "watch"],
            ),
            rule(
                &["discovery.k8s.io"],
                &["endpointslices"],
                &["list", "watch"],
            ),
        ]),
        ..Default::default()
    };
    let binding = ClusterRoleBinding {
        metadata: meta("system:coredns", None, &[]),
        role_ref: cluster_role_ref("system:coredns"),
        subjects: Some(vec![sa_subject(COREDNS)]),
    };
    let container = Container {
        name: COREDNS.into(),
        image: Some(image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec![COREDNS_BIN.into()]),
        args: Some(vec!["-conf".into(), "/etc/coredns/Corefile".into()]),
        ports: Some(vec![
            port("dns", 53, "UDP"),
            port("dns-tcp", 53, "TCP"),
            port("metrics", 9153, "TCP"),
        ]),
        resources: Some(ResourceRequirements {
            limits: Some(BTreeMap::from([(
                "memory".to_string(),
                Quantity("170Mi".into()),
            )])),
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("100m".into())),
                ("memory".to_string(), Quantity("70Mi".into())),
            ])),
            ..Default::default()
        }),
        liveness_probe: Some(http_probe("/health", 8080, 60)),
        readiness_probe: Some(Probe {
            initial_delay_seconds: None,
            failure_threshold: Some(3),
            ..http_probe("/ready", 8181, 0)
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_BIND_SERVICE".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            read_only_root_filesystem: Some(true),
            ..Default::default()
        }),
        volume_mounts: Some(vec![mount("config-volume", "/etc/coredns", true)]),
        ..Default::default()
    };
    let pod = PodSpec {
        containers: vec![container],
        dns_policy: Some("Default".into()),
        priority_class_name: Some("system-cluster-critical".into()),
        service_account_name: Some(COREDNS.into()),
        node_selector: Some(BTreeMap::from([(
            "kubernetes.io/os".to_string(),
            "linux".to_string(),
        )])),
        tolerations: Some(vec![
            Toleration {
                key: Some("CriticalAddonsOnly".into()),
                operator: Some("Exists".into()),
                ..Default::default()
            },
            Toleration {
                key: Some("node-role.kubernetes.io/control-plane".into()),
                effect: Some("NoSchedule".into()),
                ..Default::default()
            },
        ]),
        affinity: Some(Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    WeightedPodAffinityTerm {
                        weight: 100,
                        pod_affinity_term: PodAffinityTerm {
                            label_selector: Some(LabelSelector {
                                match_labels: Some(dns_pods.clone()),
                                ..Default::default()
                            }),
                            topology_key: "kubernetes.io/hostname".into(),
                            ..Default::default()
                        },
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volumes: Some(vec![Volume {
            name: "config-volume".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: COREDNS.into(),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let deployment = Deployment {
        metadata: meta(COREDNS, Some(SYSTEM), &app),
        spec: DeploymentSpec {
            replicas: Some(2),
            selector: selector(KUBE_DNS),
            template: template(&app, pod),
            ..Default::default()
        },
        ..Default::default()
    };
    let service = Service {
        metadata: meta(
            KUBE_DNS,
            Some(SYSTEM),
            &[("k8s-app", KUBE_DNS), ("kubernetes.io/name", "CoreDNS")],
        ),
        spec: Some(ServiceSpec {
            cluster_ip: Some(dns_ip.to_string()),
            selector: Some(dns_pods),
            ports: Some(vec![
                service_port("dns", 53, "UDP"),
                service_port("dns-tcp", 53, "TCP"),
                service_port("metrics", 9153, "TCP"),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(vec![
        service_account(COREDNS, &app),
        Object::ClusterRole(role),
        Object::ClusterRoleBinding(binding),
        Object::ConfigMap(config_map(
            COREDNS,
            &app,
            &[("Corefile", corefile(CLUSTER_DOMAIN))],
        )),
        Object::Deployment(deployment),
        Object::Service(service),
    ])
}

fn service_port(name: &str, port: i32, protocol: &str) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        protocol: Some(protocol.into()),
        target_port: Some(IntOrString::Int(port)),
        ..Default::default()
    }
}

// -------------------------------------------------------------- network --

/// The node network of the cluster, as its workers read it.
pub fn node_network(spec: &ClusterSpec) -> NodeNetwork {
    NodeNetwork {
        cni: spec.addons.cni,
        cluster_cidr: spec.pod_cidr.clone(),
        service_cidr: spec.service_cidr.clone(),
    }
}

fn network(spec: &ClusterSpec) -> Vec<Object> {
    let name = node_network::CONFIG_MAP;
    let cm = config_map(
        name,
        &[],
        &[(node_network::KEY, node_network(spec).to_json())],
    );
    let role = Role {
        metadata: meta(name, Some(SYSTEM), &[]),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            resource_names: Some(vec![name.into()]),
            verbs: vec!["get".into()],
            ..Default::default()
        }]),
    };
    let binding = RoleBinding {
        metadata: meta(name, Some(SYSTEM), &[]),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: name.into(),
        },
        subjects: Some(vec![
            group_subject("system:nodes"),
            group_subject(TOKEN_GROUP),
        ]),
    };
    // Since Kubernetes 1.32 the Node authorizer lets a kubelet's
    // credential read only its own Node (AuthorizeNodeWithSelectors); every
    // node's `oi node network` needs the others' podCIDRs and addresses, so
    // RBAC grants that read to system:nodes (as before 1.32), nothing more.
    let nodes_role = ClusterRole {
        metadata: meta(NODE_READER, None, &[]),
        rules: Some(vec![rule(&[""], &["nodes"], &["get", "list", "watch"])]),
        ..Default::default()
    };
    let nodes_binding = ClusterRoleBinding {
        metadata: meta(NODE_READER, None, &[]),
        role_ref: cluster_role_ref(NODE_READER),
        subjects: Some(vec![group_subject("system:nodes")]),
    };
    vec![
        Object::ConfigMap(cm),
        Object::Role(role),
        Object::RoleBinding(binding),
        Object::ClusterRole(nodes_role),
        Object::ClusterRoleBinding(nodes_binding),
    ]
}

/// What lets every node's `oi node network` read the cluster's Nodes.
pub const NODE_READER: &str = "oneinfra:node-network";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::model::{Addons, Cni};
    use crate::cluster::versions::VersionMatrix;

    fn names(v: &[(Addon, Object)]) -> Vec<String> {
        v.iter()
            .map(|(a, o)| format!("{}: {}", a.as_str(), o.describe()))
            .collect()
    }

    #[test]
    fn every_addon_is_on_by_default_and_off_moves_its_objects_aside() {
        let m = VersionMatrix::builtin().with_image_repository("localhost/oneinfra");
        let r = m.get("1.37.2").unwrap();
        let spec = ClusterSpec::new("a", "1.37.2", 1);
        let all = objects(&spec, r, "192.0.2.1:30000").unwrap();
        assert!(all.off.is_empty());
        let on = names(&all.on);
        for want in [
            "kube-proxy: DaemonSet kube-system/kube-proxy",
            "kube-proxy: ClusterRoleBinding oneinfra:node-proxier",
            "dns: Deployment kube-system/coredns",
            "dns: Service kube-system/kube-dns",
            "network: ConfigMap kube-system/oneinfra-node-network",
        ] {
            assert!(on.iter().any(|n| n == want), "{want} in {on:?}");
        }
        let mut off = spec.clone();
        off.addons = Addons {
            kube_proxy: false,
            dns: false,
            cni: Cni::None,
        };
        let split = objects(&off, r, "192.0.2.1:30000").unwrap();
        assert!(split.on.iter().all(|(a, _)| *a == Addon::Network));
        assert_eq!(split.on.len() + split.off.len(), all.on.len());
        // Every object is labelled as ours: only those are ever deleted.
        for (_, o) in all.on.iter().chain(&split.off) {
            let v = match o {
                Object::DaemonSet(x) => serde_json::to_value(x),
                Object::Deployment(x) => serde_json::to_value(x),
                Object::Service(x) => serde_json::to_value(x),
                Object::ConfigMap(x) => serde_json::to_value(x),
                Object::ServiceAccount(x) => serde_json::to_value(x),
                Object::ClusterRole(x) => serde_json::to_value(x),
                Object::ClusterRoleBinding(x) => serde_json::to_value(x),
                Object::Role(x) => serde_json::to_value(x),
                Object::RoleBinding(x) => serde_json::to_value(x),
            }
            .unwrap();
            assert_eq!(
                v["metadata"]["labels"][MANAGED_BY_LABEL],
                MANAGED_BY,
                "{}",
                o.describe()
            );
        }
    }

    #[test]
    fn kube_proxy_runs_the_matrix_image_against_the_endpoint() {
        let m = VersionMatrix::builtin().with_image_repository("localhost/oneinfra");
        let r = m.get("1.37.2").unwrap();
        let spec = ClusterSpec::new("a", "1.37.2", 1);
        let objs = kube_proxy(&spec, &r.images.kube_proxy, "192.0.2.1:30000").unwrap();
        let Some(Object::DaemonSet(ds)) = objs.iter().find(|o| matches!(o, Object::DaemonSet(_)))
        else {
            panic!("no DaemonSet")
        };
        let pod = ds.spec.template.spec.as_ref().unwrap();
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some("localhost/oneinfra/kube-proxy:v1.37.2")
        );
        assert_eq!(pod.host_network, Some(true));
        let Some(Object::ConfigMap(cm)) = objs.iter().find(|o| matches!(o, Object::ConfigMap(_)))
        else {
            panic!("no ConfigMap")
        };
        let data = cm.data.as_ref().unwrap();
        // kube-proxy reads its kubeconfig as client-go does
        let kc = Kubeconfig::from_yaml(&data["kubeconfig.conf"]).unwrap();
        assert_eq!(
            kc.clusters[0].cluster.as_ref().unwrap().server.as_deref(),
            Some("https://192.0.2.1:30000")
        );
        let cfg: serde_json::Value = serde_json::from_str(&data["config.conf"]).unwrap();
        assert_eq!(cfg["kind"], "KubeProxyConfiguration");
        assert_eq!(cfg["clusterCIDR"], "10.244.0.0/16");
        assert_eq!(cfg["conntrack"]["maxPerCore"], 0);
    }

    #[test]
    fn cluster_dns_sits_at_the_tenth_service_address() {
        let mut spec = ClusterSpec::new("a", "1.37.2", 1);
        spec.service_cidr = "10.100.0.0/16".into();
        let objs = coredns(&spec, "localhost/oneinfra/coredns:v1.14.6").unwrap();
        let Some(Object::Service(svc)) = objs.iter().find(|o| matches!(o, Object::Service(_)))
        else {
            panic!("no Service")
        };
        assert_eq!(
            svc.spec.as_ref().unwrap().cluster_ip.as_deref(),
            Some("10.100.0.10")
        );
        let cf = corefile("cluster.local");
        assert!(
            cf.contains("kubernetes cluster.local in-addr.arpa ip6.arpa {"),
            "{cf}"
        );
        assert_eq!(cf.matches('{').count(), cf.matches('}').count());
    }

    #[test]
    fn the_network_config_map_says_what_the_spec_says() {
        let mut spec = ClusterSpec::new("a", "1.37.2", 1);
        spec.addons.cni = Cni::None;
        let objs = network(&spec);
        let Object::ConfigMap(cm) = &objs[0] else {
            panic!("first is the ConfigMap")
        };
        let n = NodeNetwork::from_json(&cm.data.as_ref().unwrap()[node_network::KEY]).unwrap();
        assert_eq!(n.cni, Cni::None);
        assert_eq!(n.cluster_cidr, "10.244.0.0/16");
    }
}
