//! Node join tokens of a cluster: create, list, revoke. The store is the
//! source of truth; the node sync (`crate::nodes`) writes active tokens
//! into the cluster and removes the others, and is woken after each change
//! here so that a new token works, and a revoked one stops working, within
//! seconds.

use super::clusters::{store_err, ClusterSecrets};
use crate::cluster::node_bootstrap::TOKEN_SECRET_PREFIX;
use crate::cluster::node_tokens::{check_description, NodeToken, MAX_TTL, MIN_TTL};
use crate::coordinator::Coordinator;
use crate::operations::{CreatedNodeToken, NodeTokenView, OpError};
use crate::store::StoreError;
use oi_api_types::cert::ca_cert_hash;
use oi_api_types::token::{is_token_id, TokenSecret};
use oi_proto::clock::unix_ms;
use std::time::Duration;

impl Coordinator {
    pub async fn create_node_token(
        &self,
        cluster: &str,
        ttl: Duration,
        description: &str,
    ) -> Result<CreatedNodeToken, OpError> {
        if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
            return Err(OpError::Invalid(format!(
                "--ttl {}s is out of range: use 1m to 720h",
                ttl.as_secs()
            )));
        }
        check_description(description).map_err(OpError::Invalid)?;
        let record = self.record_of(cluster).await?;
        let Some(allocation) = &record.allocation else {
            return Err(OpError::FailedPrecondition(format!(
                "cluster {cluster:?} is not placed yet ({}): it has no endpoint for nodes to \
                 join; try again once `oi cluster get {cluster}` shows one",
                record.pending_reason
            )));
        };
        let secrets = ClusterSecrets::decode(cluster, &record.secrets)?;
        let ca_cert_hash = oi_proto::tls::parse_certs(secrets.pki.apiserver_ca.cert_pem.as_bytes())
            .and_then(|der| {
                ca_cert_hash(
                    der.first()
                        .ok_or_else(|| anyhow::anyhow!("no certificate"))?,
                )
            })
            .map_err(|e| OpError::Internal(format!("hash the cluster CA certificate: {e:#}")))?;
        let endpoint = allocation.host_port();
        let now = unix_ms();
        // A 6-character id may collide (36^6 ids); draw again then.
        for _ in 0..5 {
            let token = NodeToken {
                cluster: cluster.to_string(),
                token: TokenSecret::generate(),
                description: description.to_string(),
                created_unix_ms: now,
                expires_unix_ms: now + ttl.as_millis() as u64,
                revoked_unix_ms: None,
            };
            match self.inner.store.create_node_token(&token).await {
                Ok(()) => {
                    tracing::info!(%cluster, id = %token.id(), expires_unix_ms = token.expires_unix_ms,
                        "node token created");
                    self.inner.nodes_kick.cluster(cluster);
                    return Ok(CreatedNodeToken {
                        view: token.view(now),
                        token: token.token.expose(),
                        endpoint,
                        ca_cert_hash,
                    });
                }
                Err(StoreError::TokenExists(_)) => continue,
                Err(e) => return Err(store_err(e)),
            }
        }
        Err(OpError::Internal(
            "could not draw an unused token id; try again".into(),
        ))
    }

    pub async fn list_node_tokens(
        &self,
        cluster: Option<&str>,
    ) -> Result<Vec<NodeTokenView>, OpError> {
        if let Some(c) = cluster {
            self.record_of(c).await?;
        }
        let now = unix_ms();
        let tokens = self
            .inner
            .store
            .list_node_tokens(cluster)
            .await
            .map_err(store_err)?;
        Ok(tokens.iter().map(|t| t.view(now)).collect())
    }

    /// Revokes the token in the store, then deletes its Secret from the
    /// cluster at once (time-boxed), so that when this returns no new
    /// node bootstraps with it; if the cluster does not answer, the node
    /// sync deletes it when it does.
    pub async fn revoke_node_token(&self, cluster: &str, id: &str) -> Result<(), OpError> {
        if !is_token_id(id) {
            return Err(OpError::Invalid(format!(
                "{id:?} is not a token id (6 characters of a-z and 0-9, the part before the \
                 '.'): `oi cluster token list {cluster}` shows them"
            )));
        }
        let record = self.record_of(cluster).await?;
        match self
            .inner
            .store
            .revoke_node_token(cluster, id, unix_ms())
            .await
        {
            Ok(()) => {
                tracing::info!(%cluster, %id, "node token revoked");
                self.delete_token_secret(&record, id).await;
                self.inner.nodes_kick.cluster(cluster);
                Ok(())
            }
            Err(StoreError::UnknownToken(_)) => Err(OpError::NotFound(format!(
                "cluster {cluster:?} has no node token {id:?}: `oi cluster token list {cluster}` \
                 shows them"
            ))),
            Err(e) => Err(store_err(e)),
        }
    }

    async fn delete_token_secret(&self, record: &crate::store::ClusterRecord, id: &str) {
        use k8s_openapi::api::core::v1::Secret;
        use kube::api::{Api, DeleteParams};
        let cluster = &record.spec.name;
        if record.allocation.is_none() {
            return;
        }
        let name = format!("{TOKEN_SECRET_PREFIX}{id}");
        let result = tokio::time::timeout(Duration::from_secs(10), async {
            let client = self.cluster_client(record).await?;
            match Api::<Secret>::namespaced(client, "kube-system")
                .delete(&name, &DeleteParams::default())
                .await
            {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                Err(e) => Err(anyhow::Error::from(e)),
            }
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(%cluster, %id, error = %format!("{e:#}"),
                "delete the revoked token's Secret now; the node sync retries"),
            Err(_) => tracing::warn!(%cluster, %id,
                "deleting the revoked token's Secret timed out; the node sync retries"),
        }
    }
}
