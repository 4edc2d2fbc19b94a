//! `oi node list|remove`: a cluster's worker nodes.

use super::exit::CliResult;
use super::output::{ago, serialized, table, Format};
use super::Ctx;
use oi_api_types::views::NodeView;
use oi_proto::api as pb;

pub async fn list(ctx: &mut Ctx<'_>, cluster: &str, format: Format) -> CliResult {
    let conn = ctx.connect().await?;
    let nodes: Vec<NodeView> = conn
        .nodes()
        .list(pb::ClusterRef {
            name: cluster.to_string(),
        })
        .await?
        .into_inner()
        .nodes
        .into_iter()
        .map(Into::into)
        .collect();
    if format != Format::Table {
        return ctx.out(&serialized(format, &nodes)?);
    }
    if nodes.is_empty() {
        ctx.note(&format!(
            "cluster {cluster} has no nodes: join one with the line `oi cluster token create {cluster}` prints"
        ));
        return Ok(());
    }
    ctx.out(&node_table(&nodes, oi_proto::clock::unix_ms()))
}

pub fn node_table(nodes: &[NodeView], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                if n.ready { "Ready" } else { "NotReady" }.to_string(),
                n.kubelet_version.clone(),
                n.addresses.join(","),
                if n.vpn_address.is_empty() {
                    "-".into()
                } else {
                    n.vpn_address.clone()
                },
                if n.token_id.is_empty() {
                    "-".into()
                } else {
                    n.token_id.clone()
                },
                ago(Some(n.created_unix_ms), now_ms),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "STATUS",
            "KUBELET",
            "ADDRESSES",
            "VPN",
            "TOKEN",
            "JOINED",
        ],
        &rows,
    )
}

pub async fn remove(ctx: &mut Ctx<'_>, cluster: &str, name: &str) -> CliResult {
    let conn = ctx.connect().await?;
    let removed = conn
        .nodes()
        .remove(pb::NodeRef {
            cluster: cluster.to_string(),
            name: name.to_string(),
        })
        .await?
        .into_inner();
    let tokens = match removed.revoked_tokens.as_slice() {
        [] => "no token to revoke (it joined with one already revoked or forgotten)".to_string(),
        ids => format!("revoked its node token {}", ids.join(", ")),
    };
    ctx.out(&format!(
        "node {name} removed from cluster {cluster}; {tokens}. A kubelet still running on the \
         machine registers it again with its certificate: stop it there\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let n = NodeView {
            name: "w1".into(),
            ready: false,
            kubelet_version: "v1.37.2".into(),
            addresses: vec!["InternalIP=10.0.0.5".into(), "Hostname=w1".into()],
            vpn_address: String::new(),
            created_unix_ms: 0,
            token_id: "abcdef".into(),
        };
        assert_eq!(
            node_table(&[n], 120_000),
            "NAME  STATUS    KUBELET  ADDRESSES                        VPN  TOKEN   JOINED\n\
             w1    NotReady  v1.37.2  InternalIP=10.0.0.5,Hostname=w1  -    abcdef  2m ago\n"
        );
    }
}
