//! `oi cluster token create|list|revoke`: node join tokens of a cluster.

use super::exit::CliResult;
use super::output::{serialized, table, Format};
use super::token::utc;
use super::Ctx;
use oi_api_types::views::{CreatedNodeToken, NodeTokenView};
use oi_proto::api as pb;
use serde::Serialize;
use std::time::Duration;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreatedOutput<'a> {
    #[serde(flatten)]
    created: &'a CreatedNodeToken,
    join_command: String,
    kubeadm_join_command: String,
}

pub async fn create(
    ctx: &mut Ctx<'_>,
    cluster: &str,
    ttl: Duration,
    description: &str,
    format: Format,
) -> CliResult {
    let conn = ctx.connect().await?;
    let created = conn
        .node_tokens()
        .create(pb::CreateNodeTokenRequest {
            cluster: cluster.to_string(),
            ttl_seconds: ttl.as_secs(),
            description: description.to_string(),
        })
        .await?
        .into_inner();
    let created = CreatedNodeToken::try_from(created)?;
    if format != Format::Table {
        return ctx.out(&serialized(
            format,
            &CreatedOutput {
                created: &created,
                join_command: created.join_command(),
                kubeadm_join_command: created.kubeadm_command(),
            },
        )?);
    }
    let v = &created.view;
    ctx.out(&format!(
        "node token {} of cluster {} created, expires {}\n\
         The token is shown only now. On the worker, as root:\n\n  {}\n\n\
         or with a stock kubeadm:\n\n  {}\n",
        v.id,
        v.cluster,
        utc(v.expires_unix_ms),
        created.join_command(),
        created.kubeadm_command()
    ))
}

pub async fn list(ctx: &mut Ctx<'_>, cluster: Option<&str>, format: Format) -> CliResult {
    let conn = ctx.connect().await?;
    let list = conn
        .node_tokens()
        .list(pb::ListNodeTokensRequest {
            cluster: cluster.unwrap_or_default().to_string(),
        })
        .await?
        .into_inner()
        .tokens
        .into_iter()
        .map(NodeTokenView::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    if format != Format::Table {
        return ctx.out(&serialized(format, &list)?);
    }
    if list.is_empty() {
        ctx.note("no node tokens: create one with `oi cluster token create CLUSTER`");
        return Ok(());
    }
    ctx.out(&token_table(&list))
}

pub fn token_table(list: &[NodeTokenView]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|t| {
            vec![
                t.cluster.clone(),
                t.id.clone(),
                t.state.as_str().to_string(),
                utc(t.expires_unix_ms),
                utc(t.created_unix_ms),
                t.description.clone(),
            ]
        })
        .collect();
    table(
        &[
            "CLUSTER",
            "ID",
            "STATE",
            "EXPIRES",
            "CREATED",
            "DESCRIPTION",
        ],
        &rows,
    )
}

pub async fn revoke(ctx: &mut Ctx<'_>, cluster: &str, id: &str) -> CliResult {
    let id = super::token::token_id(id)?;
    let conn = ctx.connect().await?;
    conn.node_tokens()
        .revoke(pb::NodeTokenRef {
            cluster: cluster.to_string(),
            id: id.to_string(),
        })
        .await?;
    ctx.out(&format!(
        "node token {id} of cluster {cluster} revoked: no new node can join with it\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oi_api_types::token::TokenState;

    #[test]
    fn table_and_join_lines() {
        let t = NodeTokenView {
            cluster: "prod".into(),
            id: "abcdef".into(),
            description: "rack 4".into(),
            created_unix_ms: 0,
            expires_unix_ms: 86_400_000,
            state: TokenState::Active,
        };
        assert_eq!(
            token_table(std::slice::from_ref(&t)),
            "CLUSTER  ID      STATE   EXPIRES               CREATED               DESCRIPTION\n\
             prod     abcdef  active  1970-01-02T00:00:00Z  1970-01-01T00:00:00Z  rack 4\n"
        );
        let c = CreatedNodeToken {
            view: t,
            token: "abcdef.0123456789abcdef".into(),
            endpoint: "192.0.2.1:30000".into(),
            ca_cert_hash: "sha256:00".into(),
        };
        assert_eq!(
            c.join_command(),
            "oi node join --endpoint 192.0.2.1:30000 --token abcdef.0123456789abcdef \
             --ca-cert-hash sha256:00"
        );
        assert_eq!(
            c.kubeadm_command(),
            "kubeadm join 192.0.2.1:30000 --token abcdef.0123456789abcdef \
             --discovery-token-ca-cert-hash sha256:00"
        );
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
    }
}
