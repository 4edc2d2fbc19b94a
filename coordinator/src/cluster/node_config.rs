//! The cluster-wide configuration joining nodes read, where a stock
//! `kubeadm join` reads it too (pure):
//!
//! * `kube-system/kubelet-config` (`kubelet`): the KubeletConfiguration every
//!   node starts from - webhook authentication and authorization, no
//!   anonymous access, client and serving certificate rotation, the cluster
//!   DNS address and domain. Node-local fields (paths, runtime endpoint,
//!   cgroup driver, address) are the joining tool's: `oi node join`
//!   overrides them, kubeadm writes its own.
//! * `kube-system/kubeadm-config` (`ClusterConfiguration`): what `kubeadm
//!   join` needs of the control plane (version, endpoint, networking).
//! * kubeadm's RBAC for joining nodes: the token group and `system:nodes`
//!   may read those two ConfigMaps, and the token group may get Nodes (so a
//!   join can refuse a name in use).
//!
//! Documents another program reads are typed structs serialized as JSON
//! (which that program's YAML decoder reads), never hand-written text.

use super::model::ClusterSpec;
use super::node_bootstrap::{MANAGED_BY, MANAGED_BY_LABEL, TOKEN_GROUP};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use std::collections::BTreeMap;

pub const KUBELET_CONFIG: &str = "kubelet-config";
pub const KUBEADM_CONFIG: &str = "kubeadm-config";
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// Where kubeadm keeps the cluster-info CA bundle on a node; the
/// published KubeletConfiguration names it as the client CA (`oi node join`
/// writes its own path).
pub const KUBEADM_CA_FILE: &str = "/etc/kubernetes/pki/ca.crt";

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KubeletConfiguration {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub authentication: KubeletAuthentication,
    pub authorization: KubeletAuthorization,
    #[serde(rename = "clusterDNS")]
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    pub rotate_certificates: bool,
    #[serde(rename = "serverTLSBootstrap")]
    pub server_tls_bootstrap: bool,
    pub read_only_port: u16,
    pub healthz_bind_address: &'static str,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KubeletAuthentication {
    pub anonymous: Enabled,
    pub webhook: Enabled,
    pub x509: X509,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Enabled {
    pub enabled: bool,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct X509 {
    #[serde(rename = "clientCAFile")]
    pub client_ca_file: String,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct KubeletAuthorization {
    pub mode: &'static str,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfiguration {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub cluster_name: String,
    pub kubernetes_version: String,
    pub control_plane_endpoint: String,
    pub networking: Networking,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Networking {
    pub service_subnet: String,
    pub pod_subnet: String,
    pub dns_domain: String,
}

pub fn kubelet_configuration(spec: &ClusterSpec) -> KubeletConfiguration {
    KubeletConfiguration {
        api_version: "kubelet.config.k8s.io/v1beta1",
        kind: "KubeletConfiguration",
        authentication: KubeletAuthentication {
            anonymous: Enabled { enabled: false },
            webhook: Enabled { enabled: true },
            x509: X509 {
                client_ca_file: KUBEADM_CA_FILE.into(),
            },
        },
        authorization: KubeletAuthorization { mode: "Webhook" },
        cluster_dns: spec
            .dns_service_ip()
            .map(|ip| ip.to_string())
            .into_iter()
            .collect(),
        cluster_domain: CLUSTER_DOMAIN.into(),
        rotate_certificates: true,
        server_tls_bootstrap: true,
        read_only_port: 0,
        healthz_bind_address: "127.0.0.1",
    }
}

pub fn cluster_configuration(spec: &ClusterSpec, endpoint_host_port: &str) -> ClusterConfiguration {
    ClusterConfiguration {
        api_version: "kubeadm.k8s.io/v1beta4",
        kind: "ClusterConfiguration",
        cluster_name: spec.name.clone(),
        kubernetes_version: format!("v{}", spec.kubernetes_version),
        control_plane_endpoint: endpoint_host_port.into(),
        networking: Networking {
            service_subnet: spec.service_cidr.clone(),
            pod_subnet: spec.pod_cidr.clone(),
            dns_domain: CLUSTER_DOMAIN.into(),
        },
    }
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
        labels: Some(BTreeMap::from([(
            MANAGED_BY_LABEL.to_string(),
            MANAGED_BY.to_string(),
        )])),
        ..Default::default()
    }
}

fn config_map(
    name: &str,
    key: &str,
    value: &impl Serialize,
) -> Result<ConfigMap, serde_json::Error> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    Ok(ConfigMap {
        metadata: meta(name, Some("kube-system")),
        data: Some(BTreeMap::from([(key.to_string(), text)])),
        ..Default::default()
    })
}

/// `kube-system/kubelet-config` and `kube-system/kubeadm-config`.
pub fn config_maps(
    spec: &ClusterSpec,
    endpoint_host_port: &str,
) -> Result<[ConfigMap; 2], serde_json::Error> {
    Ok([
        config_map(KUBELET_CONFIG, "kubelet", &kubelet_configuration(spec))?,
        config_map(
            KUBEADM_CONFIG,
            "ClusterConfiguration",
            &cluster_configuration(spec, endpoint_host_port),
        )?,
    ])
}

fn group(name: &str) -> Subject {
    Subject {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "Group".into(),
        name: name.into(),
        ..Default::default()
    }
}

fn get(resource: &str, names: Option<&str>) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec![resource.into()]),
        resource_names: names.map(|n| vec![n.to_string()]),
        verbs: vec!["get".into()],
        ..Default::default()
    }
}

/// kubeadm's RBAC for joining nodes (same names, so a kubeadm-managed view
/// of the cluster finds what it expects).
pub struct JoinRbac {
    pub roles: Vec<(Role, RoleBinding)>,
    pub cluster_role: (ClusterRole, ClusterRoleBinding),
}

pub fn join_rbac() -> JoinRbac {
    let role = |name: &str, cm: &str| {
        let r = Role {
            metadata: meta(name, Some("kube-system")),
            rules: Some(vec![get("configmaps", Some(cm))]),
        };
        let b = RoleBinding {
            metadata: meta(name, Some("kube-system")),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Role".into(),
                name: name.into(),
            },
            subjects: Some(vec![group(TOKEN_GROUP), group("system:nodes")]),
        };
        (r, b)
    };
    JoinRbac {
        roles: vec![
            role("kubeadm:kubelet-config", KUBELET_CONFIG),
            role("kubeadm:nodes-kubeadm-config", KUBEADM_CONFIG),
        ],
        cluster_role: (
            ClusterRole {
                metadata: meta("kubeadm:get-nodes", None),
                rules: Some(vec![get("nodes", None)]),
                ..Default::default()
            },
            ClusterRoleBinding {
                metadata: meta("kubeadm:get-nodes", None),
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "ClusterRole".into(),
                    name: "kubeadm:get-nodes".into(),
                },
                subjects: Some(vec![group(TOKEN_GROUP)]),
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_config_is_secure_by_default_and_names_the_cluster_dns() {
        let spec = ClusterSpec::new("y", "1.37.2", 1);
        let [kubelet, kubeadm] = config_maps(&spec, "192.0.2.1:30000").unwrap();
        let k: serde_json::Value =
            serde_json::from_str(&kubelet.data.as_ref().unwrap()["kubelet"]).unwrap();
        assert_eq!(k["kind"], "KubeletConfiguration");
        assert_eq!(k["apiVersion"], "kubelet.config.k8s.io/v1beta1");
        assert_eq!(k["authentication"]["anonymous"]["enabled"], false);
        assert_eq!(k["authentication"]["webhook"]["enabled"], true);
        assert_eq!(k["authorization"]["mode"], "Webhook");
        assert_eq!(k["clusterDNS"][0], "10.96.0.10");
        assert_eq!(k["clusterDomain"], "cluster.local");
        assert_eq!(k["serverTLSBootstrap"], true);
        assert_eq!(k["rotateCertificates"], true);
        assert_eq!(k["readOnlyPort"], 0);
        // kubeadm's YAML reader sees the same (JSON is YAML; "y" stays a string).
        let y: serde_json::Value =
            yaml_serde::from_str(&kubeadm.data.as_ref().unwrap()["ClusterConfiguration"]).unwrap();
        assert_eq!(y["clusterName"], "y");
        assert_eq!(y["kubernetesVersion"], "v1.37.2");
        assert_eq!(y["controlPlaneEndpoint"], "192.0.2.1:30000");
        assert_eq!(y["networking"]["serviceSubnet"], "10.96.0.0/12");
        assert_eq!(y["apiVersion"], "kubeadm.k8s.io/v1beta4");
    }

    #[test]
    fn joining_nodes_may_read_two_config_maps_and_get_nodes_only() {
        let rbac = join_rbac();
        for (role, binding) in &rbac.roles {
            let rules = role.rules.as_ref().unwrap();
            assert_eq!(rules.len(), 1);
            assert_eq!(rules[0].verbs, vec!["get"]);
            assert_eq!(
                rules[0].resources.as_deref(),
                Some(&["configmaps".to_string()][..])
            );
            assert!(rules[0]
                .resource_names
                .as_ref()
                .is_some_and(|n| n.len() == 1));
            let groups: Vec<_> = binding
                .subjects
                .as_ref()
                .unwrap()
                .iter()
                .map(|s| s.name.as_str())
                .collect();
            assert_eq!(groups, vec![TOKEN_GROUP, "system:nodes"]);
        }
        let (cr, crb) = &rbac.cluster_role;
        assert_eq!(cr.rules.as_ref().unwrap()[0].verbs, vec!["get"]);
        assert_eq!(crb.subjects.as_ref().unwrap()[0].name, TOKEN_GROUP);
    }
}
