//! The coordinator as an etcd client of a managed cluster, for membership
//! changes only (list, add a learner, promote, remove). It authenticates
//! with the cluster's etcd client CA (as an API server does) and trusts the
//! etcd server CA.

use crate::cluster::membership::Member;
use anyhow::{Context, Result};
use etcd_client::{Certificate, Client, ConnectOptions, Identity, MemberAddOptions, TlsOptions};
use std::future::Future;
use std::time::Duration;

/// The longest connecting may take, TLS included. The client's own connect
/// timeout covers TCP only: a machine that accepts and never answers would
/// otherwise hold a membership step (and its cluster's lock) forever.
const CONNECT: Duration = Duration::from_secs(5);

/// The longest one call may take, waiting for a ready connection included.
const CALL: Duration = Duration::from_secs(10);

/// `call`, failed with `what` when it takes longer than `limit`.
async fn bounded<T>(
    limit: Duration,
    what: impl FnOnce() -> String,
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r.with_context(what),
        Err(_) => Err(anyhow::anyhow!("{}: no answer within {limit:?}", what())),
    }
}

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
            .with_timeout(CALL);
        let client = bounded(
            CONNECT,
            || format!("connect to etcd at {}", endpoints.join(",")),
            Client::connect(endpoints, Some(options)),
        )
        .await?;
        Ok(Self { client })
    }

    pub async fn members(&mut self) -> Result<Vec<Member>> {
        let list = bounded(
            CALL,
            || "list etcd members".into(),
            self.client.member_list(),
        )
        .await?;
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
        let resp = bounded(
            CALL,
            || format!("add etcd learner {peer_url}"),
            self.client
                .member_add([peer_url], Some(MemberAddOptions::new().with_is_learner())),
        )
        .await?;
        Ok(resp.member().map(|m| m.id()).unwrap_or_default())
    }

    /// Fails while the learner is not in sync with the leader; retry later.
    pub async fn promote(&mut self, id: u64) -> Result<()> {
        bounded(
            CALL,
            || format!("promote etcd member {id:x}"),
            self.client.member_promote(id),
        )
        .await?;
        Ok(())
    }

    /// Replaces a member's peer URLs (its replica's address changed).
    pub async fn update_peer(&mut self, id: u64, peer_url: &str) -> Result<()> {
        bounded(
            CALL,
            || format!("update etcd member {id:x} to {peer_url}"),
            self.client.member_update(id, [peer_url.to_string()]),
        )
        .await?;
        Ok(())
    }

    pub async fn remove(&mut self, id: u64) -> Result<()> {
        bounded(
            CALL,
            || format!("remove etcd member {id:x}"),
            self.client.member_remove(id),
        )
        .await?;
        Ok(())
    }
}
