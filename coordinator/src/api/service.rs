//! The admin gRPC services, each a thin translation onto [`Operations`].

use super::auth::Admin;
use super::convert::outcome_str;
use super::status::to_status;
use crate::cluster::model::ClusterSpec;
use crate::operations::{OpError, Operations};
use oi_proto::api as pb;
use oi_proto::api::{
    clusters_server::Clusters, components_server::Components, hypervisors_server::Hypervisors,
    info_server::Info, join_tokens_server::JoinTokens, node_tokens_server::NodeTokens,
    nodes_server::Nodes,
};
use oi_proto::model::Role;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct Api {
    pub ops: Arc<dyn Operations>,
}

/// Who called, for the audit log (set by the auth interceptor).
fn admin<T>(req: &Request<T>) -> String {
    req.extensions()
        .get::<Admin>()
        .map(|a| a.0.clone())
        .unwrap_or_default()
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Clusters for Api {
    async fn create(&self, req: Request<pb::ClusterSpec>) -> Reply<pb::Cluster> {
        let who = admin(&req);
        let spec = ClusterSpec::try_from(req.into_inner())
            .map_err(|e| to_status(OpError::Invalid(e.to_string())))?;
        let name = spec.name.clone();
        let view = self.ops.create_cluster(spec).await.map_err(to_status)?;
        tracing::info!(admin = %who, cluster = %name, "cluster created");
        Ok(Response::new(view.into()))
    }

    async fn apply(&self, req: Request<pb::ClusterSpec>) -> Reply<pb::ApplyResponse> {
        let who = admin(&req);
        let spec = ClusterSpec::try_from(req.into_inner())
            .map_err(|e| to_status(OpError::Invalid(e.to_string())))?;
        let name = spec.name.clone();
        let (view, outcome) = self.ops.apply_cluster(spec).await.map_err(to_status)?;
        tracing::info!(admin = %who, cluster = %name, outcome = outcome_str(outcome), "cluster applied");
        Ok(Response::new(pb::ApplyResponse {
            cluster: Some(view.into()),
            outcome: outcome_str(outcome).to_string(),
        }))
    }

    async fn get(&self, req: Request<pb::ClusterRef>) -> Reply<pb::Cluster> {
        let view = self
            .ops
            .get_cluster(&req.into_inner().name)
            .await
            .map_err(to_status)?;
        Ok(Response::new(view.into()))
    }

    async fn list(
        &self,
        _req: Request<pb::ListClustersRequest>,
    ) -> Reply<pb::ListClustersResponse> {
        let views = self.ops.list_clusters().await.map_err(to_status)?;
        Ok(Response::new(pb::ListClustersResponse {
            clusters: views.into_iter().map(Into::into).collect(),
        }))
    }

    async fn delete(&self, req: Request<pb::ClusterRef>) -> Reply<pb::DeleteResponse> {
        let who = admin(&req);
        let name = req.into_inner().name;
        self.ops.delete_cluster(&name).await.map_err(to_status)?;
        tracing::info!(admin = %who, cluster = %name, "cluster deleted");
        Ok(Response::new(pb::DeleteResponse {}))
    }

    async fn removal(&self, req: Request<pb::ClusterRef>) -> Reply<pb::RemovalResponse> {
        let name = req.into_inner().name;
        let left = self.ops.cluster_leftovers(&name).await.map_err(to_status)?;
        Ok(Response::new(pb::RemovalResponse {
            leftovers: left
                .into_iter()
                .map(|l| pb::Leftover {
                    hypervisor: l.hypervisor,
                    components: l.components,
                    reason: l.reason,
                })
                .collect(),
        }))
    }

    async fn kubeconfig(&self, req: Request<pb::ClusterRef>) -> Reply<pb::KubeconfigResponse> {
        let who = admin(&req);
        let name = req.into_inner().name;
        let kubeconfig = self.ops.kubeconfig(&name).await.map_err(to_status)?;
        tracing::info!(admin = %who, cluster = %name, "kubeconfig issued");
        Ok(Response::new(pb::KubeconfigResponse { kubeconfig }))
    }
}

#[tonic::async_trait]
impl Hypervisors for Api {
    async fn list(
        &self,
        _req: Request<pb::ListHypervisorsRequest>,
    ) -> Reply<pb::ListHypervisorsResponse> {
        let list = self.ops.list_hypervisors().await.map_err(to_status)?;
        Ok(Response::new(pb::ListHypervisorsResponse {
            hypervisors: list.into_iter().map(Into::into).collect(),
        }))
    }

    async fn cordon(&self, req: Request<pb::HypervisorRef>) -> Reply<pb::CordonResponse> {
        let who = admin(&req);
        let name = req.into_inner().name;
        self.ops
            .cordon_hypervisor(&name, true)
            .await
            .map_err(to_status)?;
        tracing::info!(admin = %who, hypervisor = %name, "hypervisor cordoned");
        Ok(Response::new(pb::CordonResponse {}))
    }

    async fn uncordon(&self, req: Request<pb::HypervisorRef>) -> Reply<pb::CordonResponse> {
        let who = admin(&req);
        let name = req.into_inner().name;
        self.ops
            .cordon_hypervisor(&name, false)
            .await
            .map_err(to_status)?;
        tracing::info!(admin = %who, hypervisor = %name, "hypervisor uncordoned");
        Ok(Response::new(pb::CordonResponse {}))
    }

    async fn drain(&self, req: Request<pb::HypervisorRef>) -> Reply<pb::DrainResponse> {
        let who = admin(&req);
        let name = req.into_inner().name;
        let outcome = self.ops.drain_hypervisor(&name).await.map_err(to_status)?;
        tracing::info!(admin = %who, hypervisor = %name, "hypervisor drained");
        Ok(Response::new(outcome.into()))
    }

    async fn remove(&self, req: Request<pb::HypervisorRef>) -> Reply<pb::RemoveResponse> {
        let who = admin(&req);
        let name = req.into_inner().name;
        let outcome = self.ops.remove_hypervisor(&name).await.map_err(to_status)?;
        tracing::info!(admin = %who, hypervisor = %name, "hypervisor removed");
        Ok(Response::new(outcome.into()))
    }
}

#[tonic::async_trait]
impl JoinTokens for Api {
    async fn create(
        &self,
        req: Request<pb::CreateJoinTokenRequest>,
    ) -> Reply<pb::CreateJoinTokenResponse> {
        let who = admin(&req);
        let r = req.into_inner();
        let role: Role = r
            .role
            .parse()
            .map_err(|e: String| to_status(OpError::Invalid(e)))?;
        let ttl = match r.ttl_seconds {
            0 => Duration::from_secs(3600),
            s => Duration::from_secs(s),
        };
        let uses = if r.max_uses == 0 { 1 } else { r.max_uses };
        let created = self
            .ops
            .create_join_token(role, ttl, uses)
            .await
            .map_err(to_status)?;
        tracing::info!(admin = %who, id = %created.view.id, %role, "join token created");
        Ok(Response::new(created.into()))
    }

    async fn list(
        &self,
        _req: Request<pb::ListJoinTokensRequest>,
    ) -> Reply<pb::ListJoinTokensResponse> {
        let tokens = self.ops.list_join_tokens().await.map_err(to_status)?;
        Ok(Response::new(pb::ListJoinTokensResponse {
            tokens: tokens.into_iter().map(Into::into).collect(),
        }))
    }

    async fn revoke(&self, req: Request<pb::JoinTokenRef>) -> Reply<pb::RevokeJoinTokenResponse> {
        let who = admin(&req);
        let id = req.into_inner().id;
        self.ops.revoke_join_token(&id).await.map_err(to_status)?;
        tracing::info!(admin = %who, %id, "join token revoked");
        Ok(Response::new(pb::RevokeJoinTokenResponse {}))
    }
}

#[tonic::async_trait]
impl NodeTokens for Api {
    async fn create(
        &self,
        req: Request<pb::CreateNodeTokenRequest>,
    ) -> Reply<pb::CreateNodeTokenResponse> {
        let who = admin(&req);
        let r = req.into_inner();
        let ttl = match r.ttl_seconds {
            0 => crate::cluster::node_tokens::DEFAULT_TTL,
            s => Duration::from_secs(s),
        };
        let created = self
            .ops
            .create_node_token(&r.cluster, ttl, &r.description)
            .await
            .map_err(to_status)?;
        tracing::info!(admin = %who, cluster = %r.cluster, id = %created.view.id, "node token created");
        Ok(Response::new(created.into()))
    }

    async fn list(
        &self,
        req: Request<pb::ListNodeTokensRequest>,
    ) -> Reply<pb::ListNodeTokensResponse> {
        let cluster = req.into_inner().cluster;
        let cluster = (!cluster.is_empty()).then_some(cluster.as_str());
        let tokens = self
            .ops
            .list_node_tokens(cluster)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListNodeTokensResponse {
            tokens: tokens.into_iter().map(Into::into).collect(),
        }))
    }

    async fn revoke(&self, req: Request<pb::NodeTokenRef>) -> Reply<pb::RevokeNodeTokenResponse> {
        let who = admin(&req);
        let r = req.into_inner();
        self.ops
            .revoke_node_token(&r.cluster, &r.id)
            .await
            .map_err(to_status)?;
        tracing::info!(admin = %who, cluster = %r.cluster, id = %r.id, "node token revoked");
        Ok(Response::new(pb::RevokeNodeTokenResponse {}))
    }
}

#[tonic::async_trait]
impl Nodes for Api {
    async fn list(&self, req: Request<pb::ClusterRef>) -> Reply<pb::ListNodesResponse> {
        let cluster = req.into_inner().name;
        let nodes = self.ops.list_nodes(&cluster).await.map_err(to_status)?;
        Ok(Response::new(pb::ListNodesResponse {
            nodes: nodes.into_iter().map(Into::into).collect(),
        }))
    }

    async fn remove(&self, req: Request<pb::NodeRef>) -> Reply<pb::RemoveNodeResponse> {
        let who = admin(&req);
        let r = req.into_inner();
        let removed = self
            .ops
            .remove_node(&r.cluster, &r.name)
            .await
            .map_err(to_status)?;
        tracing::info!(admin = %who, cluster = %r.cluster, node = %r.name, "node removed");
        Ok(Response::new(pb::RemoveNodeResponse {
            revoked_tokens: removed.revoked_tokens,
        }))
    }
}

#[tonic::async_trait]
impl Components for Api {
    async fn list(
        &self,
        req: Request<pb::ListComponentsRequest>,
    ) -> Reply<pb::ListComponentsResponse> {
        let cluster = req.into_inner().cluster;
        let cluster = (!cluster.is_empty()).then_some(cluster.as_str());
        let list = self.ops.list_components(cluster).await.map_err(to_status)?;
        Ok(Response::new(pb::ListComponentsResponse {
            components: list.into_iter().map(Into::into).collect(),
        }))
    }
}

#[tonic::async_trait]
impl Info for Api {
    async fn versions(&self, _req: Request<pb::VersionsRequest>) -> Reply<pb::VersionsResponse> {
        Ok(Response::new(pb::VersionsResponse {
            coordinator_version: env!("CARGO_PKG_VERSION").to_string(),
            kubernetes: self
                .ops
                .kubernetes_versions()
                .into_iter()
                .map(Into::into)
                .collect(),
        }))
    }
}
