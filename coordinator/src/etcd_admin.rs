//! The coordinator as an etcd client of a managed cluster, for membership
//! changes only (list, add a learner, promote, remove). It authenticates
//! with the cluster's etcd client CA (as an API server does) and trusts the
//! etcd server CA.

use crate::cluster::membership::Member;
use anyhow::{Context, Result};
use etcd_client::{Certificate, Client, ConnectOptions, Identity, MemberAddOptions, TlsOptions};
use std::time::Duration;

pub struct EtcdAdmin {
    client: Client,
}

impl EtcdAdmin {
    /// Connects to any of `endpoints` (`https://address:port`).
    pub async fn connect(
        endpoints: &[String],
        server_ca_pem: &str,
        client_cert_pem: &str,
        client_key_pem: &str,
    ) -> Result<Self> {
        let tls = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(server_ca_pem))
            .identity(Identity::from_pem(client_cert_pem, client_key_pem));
        let options = ConnectOptions::new()
            .with_tls(tls)
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(10));
        let client = Client::connect(endpoints, Some(options))
            .await
            .with_context(|| format!("connect to etcd at {}", endpoints.join(",")))?;
        Ok(Self { client })
    }

    pub async fn members(&mut self) -> Result<Vec<Member>> {
        let list = self
            .client
            .member_list()
            .await
            .context("list etcd members")?;
        Ok(list
            .members()
            .iter()
            .map(|m| Member {
                id: m.id(),
                name: m.name().to_string(),
                peer_urls: m.peer_urls().to_vec(),
                is_learner: m.is_learner(),
            })
            .collect())
    }

    pub async fn add_learner(&mut self, peer_url: &str) -> Result<u64> {
        let resp = self
            .client
            .member_add([peer_url], Some(MemberAddOptions::new().with_is_learner()))
            .await
            .with_context(|| format!("add etcd learner {peer_url}"))?;
        Ok(resp.member().map(|m| m.id()).unwrap_or_default())
    }

    /// Fails while the learner is not in sync with the leader; retry later.
    pub async fn promote(&mut self, id: u64) -> Result<()> {
        self.client
            .member_promote(id)
            .await
            .with_context(|| format!("promote etcd member {id:x}"))?;
        Ok(())
    }

    /// Replaces a member's peer URLs (its replica's address changed).
    pub async fn update_peer(&mut self, id: u64, peer_url: &str) -> Result<()> {
        self.client
            .member_update(id, [peer_url.to_string()])
            .await
            .with_context(|| format!("update etcd member {id:x} to {peer_url}"))?;
        Ok(())
    }

    pub async fn remove(&mut self, id: u64) -> Result<()> {
        self.client
            .member_remove(id)
            .await
            .with_context(|| format!("remove etcd member {id:x}"))?;
        Ok(())
    }
}
