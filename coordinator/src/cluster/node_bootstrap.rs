//! What a managed cluster holds so that nodes can join it with standard
//! TLS bootstrap, as typed Kubernetes objects (pure: no I/O).
//!
//! * Each active node token as a bootstrap-token Secret
//!   (`kube-system/bootstrap-token-<id>`), in kubeadm's group, labelled as
//!   ours so that the coordinator removes the ones it no longer wants
//!   (revoked, expired, or of tokens it forgot) and nothing else.
//! * `kube-public/cluster-info`: the API endpoint and the CA bundle that
//!   joining nodes pin, readable anonymously (kubeadm's Role and
//!   RoleBinding). The controller-manager's bootstrap signer adds one JWS
//!   signature per token to it. The bundle is the cluster CA followed by
//!   the kubelet-client CA: nodes trust the first for the API servers and
//!   kubelets take the bundle as their client CA, so the API servers'
//!   kubelet-client certificates are accepted on nodes joined by `oi node
//!   join` and by a stock `kubeadm join` alike.

use super::kubeconfig::{cluster_info_kubeconfig, KubeconfigError};
use super::node_tokens::NodeToken;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use oi_api_types::token::TokenState;
use std::collections::{BTreeMap, BTreeSet};

/// The label on every object the coordinator manages in a cluster.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "oneinfra";
/// `kube-system/bootstrap-token-<id>`.
pub const TOKEN_SECRET_PREFIX: &str = "bootstrap-token-";
pub const TOKEN_SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// The extra group of a node token's bootstrap identity: kubeadm's, so that
/// kubeadm's RBAC for joining nodes applies to both join commands.
pub const TOKEN_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";
pub const CLUSTER_INFO: &str = "cluster-info";
/// kubeadm's name for the anonymous read of `cluster-info`.
pub const CLUSTER_INFO_RBAC: &str = "kubeadm:bootstrap-signer-clusterinfo";

fn managed_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string())])
}

/// A Unix time in milliseconds as RFC 3339 UTC, to the second (what the
/// bootstrap token authenticator parses).
fn rfc3339(unix_ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp((unix_ms / 1000) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The bootstrap-token Secret of one token.
pub fn token_secret(t: &NodeToken) -> Secret {
    let exposed = t.token.expose();
    let (id, secret) = exposed.split_once('.').unwrap_or_default();
    let mut data = BTreeMap::from([
        ("token-id".to_string(), id.to_string()),
        ("token-secret".to_string(), secret.to_string()),
        ("expiration".to_string(), rfc3339(t.expires_unix_ms)),
        ("usage-bootstrap-authentication".to_string(), "true".into()),
        ("usage-bootstrap-signing".to_string(), "true".into()),
        ("auth-extra-groups".to_string(), TOKEN_GROUP.into()),
    ]);
    if !t.description.is_empty() {
        data.insert("description".into(), t.description.clone());
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(format!("{TOKEN_SECRET_PREFIX}{id}")),
            namespace: Some("kube-system".into()),
            labels: Some(managed_labels()),
            ..Default::default()
        },
        type_: Some(TOKEN_SECRET_TYPE.into()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// What to change in a cluster's bootstrap-token Secrets.
#[derive(Debug, Default)]
pub struct TokenSync {
    /// Secrets of active tokens, to apply (server-side apply: idempotent).
    pub apply: Vec<Secret>,
    /// Names of our Secrets no active token wants.
    pub delete: Vec<String>,
}

/// Compares the cluster's tokens at `now` with the names of the
/// bootstrap-token Secrets labelled as ours that the cluster holds.
/// Secrets without our label are never listed here, so never deleted.
pub fn token_sync(tokens: &[NodeToken], ours: &[String], now_unix_ms: u64) -> TokenSync {
    let apply: Vec<Secret> = tokens
        .iter()
        .filter(|t| t.state(now_unix_ms) == TokenState::Active)
        .map(token_secret)
        .collect();
    let wanted: BTreeSet<&str> = apply
        .iter()
        .filter_map(|s| s.metadata.name.as_deref())
        .collect();
    let delete = ours
        .iter()
        .filter(|n| n.starts_with(TOKEN_SECRET_PREFIX) && !wanted.contains(n.as_str()))
        .cloned()
        .collect();
    TokenSync { apply, delete }
}

/// The CA bundle of `cluster-info`: the cluster CA, then the kubelet-client CA.
pub fn ca_bundle(cluster_ca_pem: &str, kubelet_client_ca_pem: &str) -> String {
    let mut out = String::new();
    for pem in [cluster_ca_pem, kubelet_client_ca_pem] {
        out.push_str(pem.trim_end());
        out.push('\n');
    }
    out
}

/// `kube-public/cluster-info` with `server` (`https://HOST:PORT`) and the
/// CA bundle. Only the `kubeconfig` key is ours; the bootstrap signer's
/// `jws-kubeconfig-<id>` keys are left to it (server-side apply keeps
/// fields another manager owns).
pub fn cluster_info(server: &str, ca_bundle_pem: &str) -> Result<ConfigMap, KubeconfigError> {
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(CLUSTER_INFO.into()),
            namespace: Some("kube-public".into()),
            labels: Some(managed_labels()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "kubeconfig".to_string(),
            cluster_info_kubeconfig(server, ca_bundle_pem)?,
        )])),
        ..Default::default()
    })
}

/// Anonymous read of `cluster-info`, and of nothing else.
pub fn cluster_info_rbac() -> (Role, RoleBinding) {
    let meta = ObjectMeta {
        name: Some(CLUSTER_INFO_RBAC.into()),
        namespace: Some("kube-public".into()),
        labels: Some(managed_labels()),
        ..Default::default()
    };
    let role = Role {
        metadata: meta.clone(),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            resource_names: Some(vec![CLUSTER_INFO.into()]),
            verbs: vec!["get".into()],
            ..Default::default()
        }]),
    };
    let binding = RoleBinding {
        metadata: meta,
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: CLUSTER_INFO_RBAC.into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "User".into(),
            name: "system:anonymous".into(),
            ..Default::default()
        }]),
    };
    (role, binding)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::kubeconfig;
    use oi_api_types::token::TokenSecret;

    fn token(expires: u64, revoked: Option<u64>) -> NodeToken {
        NodeToken {
            cluster: "c".into(),
            token: TokenSecret::generate(),
            description: "rack 4".into(),
            created_unix_ms: 0,
            expires_unix_ms: expires,
            revoked_unix_ms: revoked,
        }
    }

    fn text(s: &Secret, key: &str) -> String {
        String::from_utf8(s.data.as_ref().unwrap()[key].0.clone()).unwrap()
    }

    #[test]
    fn a_token_secret_is_what_the_bootstrap_authenticator_reads() {
        let t = token(1_700_000_000_999, None);
        let s = token_secret(&t);
        let (id, secret) = t
            .token
            .expose()
            .split_once('.')
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .unwrap();
        assert_eq!(
            s.metadata.name.as_deref(),
            Some(format!("bootstrap-token-{id}").as_str())
        );
        assert_eq!(s.metadata.namespace.as_deref(), Some("kube-system"));
        assert_eq!(s.type_.as_deref(), Some("bootstrap.kubernetes.io/token"));
        assert_eq!(text(&s, "token-id"), id);
        assert_eq!(text(&s, "token-secret"), secret);
        assert_eq!(text(&s, "expiration"), "2023-11-14T22:13:20Z");
        assert_eq!(text(&s, "usage-bootstrap-authentication"), "true");
        assert_eq!(text(&s, "usage-bootstrap-signing"), "true");
        assert_eq!(text(&s, "auth-extra-groups"), TOKEN_GROUP);
        assert_eq!(text(&s, "description"), "rack 4");
        // The group is one the authenticator accepts.
        assert!(TOKEN_GROUP.starts_with("system:bootstrappers:"));
        // As the API server reads it: JSON with base64 data.
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["type"], "bootstrap.kubernetes.io/token");
        assert!(json["data"]["token-secret"].is_string());
    }

    #[test]
    fn sync_applies_active_tokens_and_deletes_only_our_unwanted_secrets() {
        let now = 1_000;
        let active = token(2_000, None);
        let expired = token(1_000, None);
        let revoked = token(2_000, Some(900));
        let name = |t: &NodeToken| format!("bootstrap-token-{}", t.id());
        let ours = vec![
            name(&active),
            name(&expired),
            name(&revoked),
            "bootstrap-token-gone00".into(),
            "other".into(),
        ];
        let sync = token_sync(
            &[active.clone(), expired.clone(), revoked.clone()],
            &ours,
            now,
        );
        let applied: Vec<_> = sync
            .apply
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(applied, vec![name(&active)]);
        assert_eq!(
            sync.delete,
            vec![
                name(&expired),
                name(&revoked),
                "bootstrap-token-gone00".to_string()
            ]
        );
        // Nothing in the cluster, nothing wanted: nothing to do.
        let sync = token_sync(&[expired], &[], now);
        assert!(sync.apply.is_empty() && sync.delete.is_empty());
    }

    #[test]
    fn cluster_info_is_a_kubeconfig_with_one_unnamed_cluster() {
        let bundle = ca_bundle("CA1\n", "CA2");
        assert_eq!(bundle, "CA1\nCA2\n");
        let cm = cluster_info("https://192.0.2.1:30000", &bundle).unwrap();
        assert_eq!(cm.metadata.namespace.as_deref(), Some("kube-public"));
        let text = &cm.data.as_ref().unwrap()["kubeconfig"];
        let cfg = kubeconfig::parse(text).unwrap();
        assert_eq!(cfg.clusters.len(), 1);
        assert_eq!(cfg.clusters[0].name, "");
        assert_eq!(kubeconfig::server(&cfg), Some("https://192.0.2.1:30000"));
        assert_eq!(kubeconfig::ca_pem(&cfg).as_deref(), Some("CA1\nCA2\n"));
        assert!(cfg.auth_infos.is_empty() && cfg.contexts.is_empty());
    }

    #[test]
    fn anonymous_may_get_cluster_info_only() {
        let (role, binding) = cluster_info_rbac();
        let rules = role.rules.unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].verbs, vec!["get"]);
        assert_eq!(
            rules[0].resource_names.as_deref(),
            Some(&["cluster-info".to_string()][..])
        );
        assert_eq!(binding.subjects.unwrap()[0].name, "system:anonymous");
        assert_eq!(binding.role_ref.name, role.metadata.name.unwrap());
    }
}
