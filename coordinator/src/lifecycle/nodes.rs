//! Worker nodes of a cluster: list them (as the cluster's API reports
//! them) and remove one: revoke the node token it joined with first, so
//! that no machine bootstraps with it again, then delete the Node.

use super::clusters::store_err;
use crate::coordinator::Coordinator;
use crate::nodes::{bootstrap_of, TOKEN_ANNOTATION};
use crate::operations::{NodeView, OpError, RemovedNode};
use crate::store::StoreError;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, ListParams};
use oi_api_types::token::TokenState;
use oi_proto::clock::unix_ms;
use std::collections::BTreeSet;

fn unavailable(cluster: &str, what: &str, e: kube::Error) -> OpError {
    OpError::Unavailable(format!(
        "{what} of cluster {cluster:?}: {e}; check `oi cluster get {cluster}`"
    ))
}

pub fn node_view(n: &Node) -> NodeView {
    let status = n.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    NodeView {
        name: n.metadata.name.clone().unwrap_or_default(),
        ready,
        kubelet_version: status
            .and_then(|s| s.node_info.as_ref())
            .map(|i| i.kubelet_version.clone())
            .unwrap_or_default(),
        addresses: status
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .map(|a| format!("{}={}", a.type_, a.address))
            .collect(),
        vpn_address: String::new(),
        created_unix_ms: n
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_millisecond().max(0) as u64)
            .unwrap_or_default(),
        token_id: n
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(TOKEN_ANNOTATION))
            .cloned()
            .unwrap_or_default(),
    }
}

impl Coordinator {
    async fn nodes_api(&self, cluster: &str) -> Result<kube::Client, OpError> {
        let record = self.record_of(cluster).await?;
        if record.allocation.is_none() {
            return Err(OpError::FailedPrecondition(format!(
                "cluster {cluster:?} is not placed yet ({}); it has no nodes",
                record.pending_reason
            )));
        }
        self.cluster_client(&record)
            .await
            .map_err(|e| OpError::Unavailable(format!("connect to cluster {cluster:?}: {e:#}")))
    }

    pub async fn list_nodes(&self, cluster: &str) -> Result<Vec<NodeView>, OpError> {
        let client = self.nodes_api(cluster).await?;
        let list = Api::<Node>::all(client)
            .list(&ListParams::default())
            .await
            .map_err(|e| {
                self.forget_cluster_client(cluster);
                unavailable(cluster, "list the nodes", e)
            })?;
        Ok(list.items.iter().map(node_view).collect())
    }

    pub async fn remove_node(&self, cluster: &str, name: &str) -> Result<RemovedNode, OpError> {
        let client = self.nodes_api(cluster).await?;
        let nodes: Api<Node> = Api::all(client.clone());
        let node = nodes
            .get_opt(name)
            .await
            .map_err(|e| unavailable(cluster, "get the node", e))?
            .ok_or_else(|| {
                OpError::NotFound(format!(
                    "cluster {cluster:?} has no node {name:?}: `oi node list {cluster}` shows them"
                ))
            })?;
        // The tokens it joined with: the annotation the node sync wrote,
        // and any client CSR of it still in the cluster.
        let mut ids: BTreeSet<String> = BTreeSet::new();
        ids.extend(
            node.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(TOKEN_ANNOTATION))
                .cloned(),
        );
        let csrs = Api::<CertificateSigningRequest>::all(client)
            .list(&ListParams::default())
            .await
            .map_err(|e| unavailable(cluster, "list the certificate signing requests", e))?;
        ids.extend(
            csrs.items
                .iter()
                .filter_map(bootstrap_of)
                .filter(|(_, node)| node == name)
                .map(|(id, _)| id),
        );
        let now = unix_ms();
        let tokens = self
            .inner
            .store
            .list_node_tokens(Some(cluster))
            .await
            .map_err(store_err)?;
        let mut revoked = Vec::new();
        for id in &ids {
            let Some(t) = tokens.iter().find(|t| t.id() == id) else {
                continue;
            };
            if t.state(now) == TokenState::Revoked {
                continue;
            }
            match self.inner.store.revoke_node_token(cluster, id, now).await {
                Ok(()) | Err(StoreError::UnknownToken(_)) => revoked.push(id.clone()),
                Err(e) => return Err(store_err(e)),
            }
        }
        if !revoked.is_empty() {
            self.inner.nodes_kick.cluster(cluster);
        }
        match nodes.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(unavailable(cluster, "delete the node", e)),
        }
        tracing::info!(%cluster, node = %name, revoked = ?revoked, "node removed");
        Ok(RemovedNode {
            revoked_tokens: revoked,
        })
    }
}
