//! One pass of the node sync over one cluster.

use super::{Memory, RESYNC};
use crate::cluster::addons::{self, AddonObjects};
use crate::cluster::node_bootstrap::{
    ca_bundle, cluster_info, cluster_info_rbac, token_sync, MANAGED_BY, MANAGED_BY_LABEL,
    TOKEN_SECRET_TYPE,
};
use crate::cluster::node_config::{config_maps, join_rbac};
use crate::cluster::node_tokens::NodeToken;
use crate::cluster::serving_csr::{self, NodeAddresses, ServingCsr, Verdict};
use crate::coordinator::Coordinator;
use crate::lifecycle::clusters::ClusterSecrets;
use crate::store::ClusterRecord;
use anyhow::{Context, Result};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use oi_api_types::token::TokenState;
use oi_proto::clock::unix_ms;
use std::collections::HashMap;
use tokio::time::Instant;

const FIELD_MANAGER: &str = "oneinfra";

/// Syncs one cluster; returns what to remember and whether it went well.
pub(crate) async fn cluster(
    c: &Coordinator,
    record: ClusterRecord,
    mut mem: Memory,
) -> (Memory, bool) {
    let name = record.spec.name.clone();
    match pass(c, &record, &mut mem).await {
        Ok(()) => (mem, true),
        Err(e) => {
            tracing::warn!(cluster = %name, error = %format!("{e:#}"), "node sync");
            // A client that failed may hold a stale connection: make a new one.
            c.forget_cluster_client(&name);
            (mem, false)
        }
    }
}

async fn pass(c: &Coordinator, record: &ClusterRecord, mem: &mut Memory) -> Result<()> {
    let name = &record.spec.name;
    let Some(allocation) = &record.allocation else {
        return Ok(());
    };
    let endpoint = allocation.endpoint();
    let secrets = ClusterSecrets::decode(name, &record.secrets).map_err(anyhow::Error::msg)?;
    let client = c.cluster_client(record).await?;

    let now = unix_ms();
    let tokens = c
        .inner
        .store
        .list_node_tokens(Some(name))
        .await
        .context("list node tokens")?;
    let bundle = ca_bundle(
        &secrets.pki.apiserver_ca.cert_pem,
        &secrets.pki.kubelet_client_ca.cert_pem,
    );
    let configs =
        config_maps(&record.spec, &allocation.host_port()).context("build node config maps")?;
    // A cluster on a version that left the matrix keeps running, and keeps
    // its join objects and CSR approvals; only its add-ons are left as
    // they are (their images are the matrix's).
    let release = c.inner.matrix.get(&record.spec.kubernetes_version);
    let mut source = fingerprint(&endpoint, &bundle, &configs, &tokens, now);
    source.push_str(&format!("{:?}", record.spec.addons));
    if let Some(r) = release {
        source.push_str(&r.images.kube_proxy);
        source.push_str(&r.images.coredns);
    }
    let fresh = matches!(&mem.written, Some((f, at)) if *f == source && at.elapsed() < RESYNC);
    let mut addons_written = Ok(());
    if !fresh {
        write_join_objects(&client, &endpoint, &bundle, &configs, &tokens, now).await?;
        // An add-on the cluster refuses must not hold up joins and serving
        // certificates: its error is returned after them (and retried).
        // Built only when written (the spec and the images, in the
        // fingerprint, are what they are made from).
        addons_written = match release {
            Some(r) => match addons::objects(&record.spec, r, &allocation.host_port()) {
                Ok(objects) => write_addons(&client, name, &objects).await,
                Err(e) => Err(anyhow::Error::msg(e).context("build the add-ons")),
            },
            None => {
                tracing::warn!(cluster = %name, version = %record.spec.kubernetes_version,
                    "Kubernetes version not in the matrix: add-ons left as they are");
                Ok(())
            }
        };
        if addons_written.is_ok() {
            mem.written = Some((source, Instant::now()));
        }
    }
    approve_serving_csrs(c, &client, name).await?;
    addons_written
}

/// The add-ons that are on, applied; those that are off, removed (only
/// objects labelled as oneinfra's).
async fn write_addons(client: &kube::Client, cluster: &str, objects: &AddonObjects) -> Result<()> {
    for (_, o) in &objects.on {
        super::addons::apply(client, o).await?;
    }
    for (addon, o) in &objects.off {
        if super::addons::remove(client, o).await? {
            tracing::info!(cluster = %cluster, addon = addon.as_str(), object = %o.describe(),
                "add-on turned off: removed");
        }
    }
    Ok(())
}

/// What tokens and `cluster-info` are made from: when it changes they are
/// written again. A token that expired since changes it too.
fn fingerprint(
    endpoint: &str,
    bundle: &str,
    configs: &[ConfigMap],
    tokens: &[NodeToken],
    now: u64,
) -> String {
    let mut out = format!("{endpoint}\n{bundle}");
    for cm in configs {
        out.push_str(&serde_json::to_string(&cm.data).unwrap_or_default());
    }
    for t in tokens.iter().filter(|t| t.state(now) == TokenState::Active) {
        out.push_str(&format!(
            "{}:{}:{}\n",
            t.id(),
            t.expires_unix_ms,
            t.description
        ));
    }
    out
}

async fn write_join_objects(
    client: &kube::Client,
    endpoint: &str,
    bundle: &str,
    configs: &[ConfigMap],
    tokens: &[NodeToken],
    now: u64,
) -> Result<()> {
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let system_cms: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    for cm in configs {
        let n = cm.metadata.name.clone().unwrap_or_default();
        system_cms
            .patch(&n, &pp, &Patch::Apply(cm))
            .await
            .with_context(|| format!("apply configmap kube-system/{n}"))?;
    }
    let rbac = join_rbac();
    for (role, binding) in &rbac.roles {
        let n = role.metadata.name.clone().unwrap_or_default();
        Api::<Role>::namespaced(client.clone(), "kube-system")
            .patch(&n, &pp, &Patch::Apply(role))
            .await
            .with_context(|| format!("apply role kube-system/{n}"))?;
        Api::<RoleBinding>::namespaced(client.clone(), "kube-system")
            .patch(&n, &pp, &Patch::Apply(binding))
            .await
            .with_context(|| format!("apply rolebinding kube-system/{n}"))?;
    }
    let (cr, crb) = &rbac.cluster_role;
    let n = cr.metadata.name.clone().unwrap_or_default();
    Api::<ClusterRole>::all(client.clone())
        .patch(&n, &pp, &Patch::Apply(cr))
        .await
        .with_context(|| format!("apply clusterrole {n}"))?;
    Api::<ClusterRoleBinding>::all(client.clone())
        .patch(&n, &pp, &Patch::Apply(crb))
        .await
        .with_context(|| format!("apply clusterrolebinding {n}"))?;
    let info = cluster_info(endpoint, bundle).context("build cluster-info")?;
    let (role, binding) = cluster_info_rbac();
    Api::<ConfigMap>::namespaced(client.clone(), "kube-public")
        .patch("cluster-info", &pp, &Patch::Apply(&info))
        .await
        .context("apply kube-public/cluster-info")?;
    let role_name = role.metadata.name.clone().unwrap_or_default();
    Api::<Role>::namespaced(client.clone(), "kube-public")
        .patch(&role_name, &pp, &Patch::Apply(&role))
        .await
        .with_context(|| format!("apply role kube-public/{role_name}"))?;
    Api::<RoleBinding>::namespaced(client.clone(), "kube-public")
        .patch(&role_name, &pp, &Patch::Apply(&binding))
        .await
        .with_context(|| format!("apply rolebinding kube-public/{role_name}"))?;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), "kube-system");
    let ours = secrets
        .list_metadata(
            &ListParams::default()
                .labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"))
                .fields(&format!("type={TOKEN_SECRET_TYPE}")),
        )
        .await
        .context("list bootstrap-token secrets")?;
    let ours: Vec<String> = ours
        .items
        .into_iter()
        .filter_map(|m| m.metadata.name)
        .collect();
    let plan = token_sync(tokens, &ours, now);
    for gone in &plan.delete {
        match secrets.delete(gone, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(secret = %gone, "bootstrap token removed from the cluster"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e).with_context(|| format!("delete secret kube-system/{gone}")),
        }
    }
    for s in &plan.apply {
        let n = s.metadata.name.clone().unwrap_or_default();
        secrets
            .patch(&n, &pp, &Patch::Apply(s))
            .await
            .with_context(|| format!("apply secret kube-system/{n}"))?;
    }
    Ok(())
}

/// The annotation on a Node naming the node token it joined with (from
/// its kubelet's client CSR, which the controller-manager deletes an hour
/// after approving it): `oi node remove` revokes that token.
pub(crate) const TOKEN_ANNOTATION: &str = "oneinfra.io/bootstrap-token";

/// The node token a kubelet's client CSR was made with, and the node it
/// asks for: `(token id, node name)`, for a CSR of a bootstrap identity.
pub(crate) fn bootstrap_of(csr: &CertificateSigningRequest) -> Option<(String, String)> {
    if csr.spec.signer_name != serving_csr::CLIENT_SIGNER {
        return None;
    }
    let id = csr
        .spec
        .username
        .as_deref()
        .and_then(serving_csr::bootstrap_token_id)?;
    let node = serving_csr::client_request_node(&csr.spec.request.0)?;
    Some((id.to_string(), node))
}

/// Notes on each Node the token it joined with, once.
async fn annotate_bootstrap_tokens(
    nodes: &Api<Node>,
    known: &HashMap<String, Node>,
    csrs: &[CertificateSigningRequest],
) -> Result<()> {
    for (id, node) in csrs.iter().filter_map(bootstrap_of) {
        let Some(n) = known.get(&node) else {
            continue;
        };
        let has = n
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(TOKEN_ANNOTATION));
        if has.is_some() {
            continue;
        }
        let patch = serde_json::json!({"metadata": {"annotations": {TOKEN_ANNOTATION: id}}});
        nodes
            .patch(&node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("annotate node {node}"))?;
    }
    Ok(())
}

/// The addresses a Node reports.
fn addresses(node: &Node) -> NodeAddresses {
    let mut out = NodeAddresses::default();
    for a in node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
    {
        match a.type_.as_str() {
            "InternalIP" | "ExternalIP" => {
                if let Ok(ip) = a.address.parse() {
                    out.ips.insert(ip);
                }
            }
            _ => {
                out.names.insert(a.address.clone());
            }
        }
    }
    out
}

async fn approve_serving_csrs(c: &Coordinator, client: &kube::Client, cluster: &str) -> Result<()> {
    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    let list = csrs
        .list(&ListParams::default())
        .await
        .context("list certificate signing requests")?;
    // Nodes are read once a pass, and only when a CSR needs them: a pending
    // serving CSR, or a bootstrap client CSR (kept an hour after approval).
    let pending = |csr: &CertificateSigningRequest| {
        !csr.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| matches!(c.type_.as_str(), "Approved" | "Denied" | "Failed"))
            })
    };
    let needs_nodes = list.items.iter().any(|csr| {
        bootstrap_of(csr).is_some() || (csr.spec.signer_name == serving_csr::SIGNER && pending(csr))
    });
    if !needs_nodes {
        return Ok(());
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let known: HashMap<String, Node> = nodes
        .list(&ListParams::default())
        .await
        .context("list nodes")?
        .items
        .into_iter()
        .filter_map(|n| Some((n.metadata.name.clone()?, n)))
        .collect();
    annotate_bootstrap_tokens(&nodes, &known, &list.items).await?;
    for csr in list.items {
        if !pending(&csr) {
            continue;
        }
        let csr_name = csr.metadata.name.clone().unwrap_or_default();
        let spec = &csr.spec;
        let groups = spec.groups.clone().unwrap_or_default();
        let usages = spec.usages.clone().unwrap_or_default();
        let username = spec.username.clone().unwrap_or_default();
        let node = serving_csr::requesting_node(&username, &groups).and_then(|n| known.get(n));
        let verdict = serving_csr::judge(
            &ServingCsr {
                signer_name: &spec.signer_name,
                username: &username,
                groups: &groups,
                usages: &usages,
                request_pem: &spec.request.0,
            },
            node.map(addresses).as_ref(),
        );
        let (kind, reason, message) = match verdict {
            Verdict::NotOurs => continue,
            Verdict::Wait(why) => {
                tracing::debug!(%cluster, csr = %csr_name, %why, "kubelet serving CSR waits");
                continue;
            }
            Verdict::Approve => (
                "Approved",
                "OneinfraNodeServing",
                format!("{username}'s serving certificate names only its own addresses"),
            ),
            Verdict::Deny(why) => ("Denied", "OneinfraNodeServingRefused", why),
        };
        let patch = serde_json::json!({
            "status": {"conditions": [CertificateSigningRequestCondition {
                type_: kind.into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(message.clone()),
                ..Default::default()
            }]}
        });
        csrs.patch_approval(&csr_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("{} CSR {csr_name}", kind.to_lowercase()))?;
        c.inner.metrics.serving_csr(&kind.to_lowercase());
        if kind == "Approved" {
            tracing::info!(%cluster, csr = %csr_name, requester = %username, "kubelet serving CSR approved");
        } else {
            tracing::warn!(%cluster, csr = %csr_name, requester = %username, why = %message,
                "kubelet serving CSR denied");
        }
    }
    Ok(())
}
