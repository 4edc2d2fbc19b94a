//! A kube client per managed cluster, shared by the bootstrap, the node
//! sync and the node API: one admin certificate per cluster incarnation
//! and endpoint, not one per call or attempt.

use crate::coordinator::Coordinator;
use crate::lifecycle::clusters::ClusterSecrets;
use crate::store::ClusterRecord;
use anyhow::{Context, Result};
use std::time::Duration;

#[derive(Clone)]
pub(crate) struct ClusterClient {
    /// Incarnation and endpoint the client was made for.
    pub key: String,
    pub client: kube::Client,
}

impl ClusterClient {
    /// A client from an admin kubeconfig, every call time-boxed.
    pub async fn new(key: String, kubeconfig: &str) -> Result<Self> {
        let kc =
            kube::config::Kubeconfig::from_yaml(kubeconfig).context("parse admin kubeconfig")?;
        let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .context("load admin kubeconfig")?;
        config.connect_timeout = Some(Duration::from_secs(5));
        config.read_timeout = Some(Duration::from_secs(15));
        config.write_timeout = Some(Duration::from_secs(15));
        let client = kube::Client::try_from(config).context("build cluster client")?;
        Ok(Self { key, client })
    }
}

impl Coordinator {
    /// The cached client of a placed cluster, made when missing or when the
    /// cluster's incarnation or endpoint changed. No lock is held while one
    /// is made.
    pub(crate) async fn cluster_client(&self, record: &ClusterRecord) -> Result<kube::Client> {
        let name = &record.spec.name;
        let allocation = record
            .allocation
            .as_ref()
            .with_context(|| format!("cluster {name} is not placed"))?;
        let endpoint = allocation.endpoint();
        let secrets = ClusterSecrets::decode(name, &record.secrets).map_err(anyhow::Error::msg)?;
        let key = format!("{}/{endpoint}", secrets.incarnation);
        if let Some(c) = self.clients().get(name).filter(|c| c.key == key) {
            return Ok(c.client.clone());
        }
        let kubeconfig = secrets
            .pki
            .admin_kubeconfig(name, &endpoint)
            .context("issue the coordinator's kubeconfig")?;
        let made = ClusterClient::new(key, &kubeconfig).await?;
        let client = made.client.clone();
        self.clients().insert(name.clone(), made);
        Ok(client)
    }

    /// Drops a cluster's client (it failed, or the cluster is gone).
    pub(crate) fn forget_cluster_client(&self, cluster: &str) {
        self.clients().remove(cluster);
    }

    fn clients(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, ClusterClient>> {
        self.inner
            .cluster_clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}
