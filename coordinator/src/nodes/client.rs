//! A kube client per managed cluster, kept between passes: one admin
//! certificate per cluster incarnation and endpoint, not one per pass.

use std::time::Duration;

pub(crate) struct ClusterClient {
    /// Incarnation and endpoint the client was made for.
    pub key: String,
    pub client: kube::Client,
}

impl ClusterClient {
    /// A client from an admin kubeconfig, every call time-boxed.
    pub async fn new(key: String, kubeconfig: &str) -> anyhow::Result<Self> {
        use anyhow::Context;
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
