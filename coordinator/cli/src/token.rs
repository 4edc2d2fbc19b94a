//! `oi hypervisor token create|list|revoke`.

use super::exit::{CliError, CliResult, Exit};
use super::output::{serialized, table, Format};
use super::Ctx;
use oi_api_types::views::{CreatedToken, JoinTokenView};
use oi_proto::api as pb;
use oi_proto::model::Role;
use serde::Serialize;
use std::time::Duration;

/// A Unix time in milliseconds as RFC 3339 UTC, to the second.
pub fn utc(unix_ms: u64) -> String {
    let secs = (unix_ms / 1000) as i64;
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{secs}"))
}

/// The id of a token given as its id or pasted whole: only the id is
/// used, the rest is never echoed.
pub fn token_id(given: &str) -> CliResult<&str> {
    match given.split('.').next() {
        Some(id) if !id.is_empty() => Ok(id),
        _ => Err(CliError::new(Exit::Invalid, "give the token's id")),
    }
}

/// "1 use" / "3 uses".
fn uses(n: u32) -> String {
    format!("{n} use{}", if n == 1 { "" } else { "s" })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreatedOutput<'a> {
    #[serde(flatten)]
    created: &'a CreatedToken,
    join_command: String,
}

pub async fn create(
    ctx: &mut Ctx<'_>,
    role: Role,
    ttl: Duration,
    max_uses: u32,
    format: Format,
) -> CliResult {
    let conn = ctx.connect().await?;
    let created = conn
        .join_tokens()
        .create(pb::CreateJoinTokenRequest {
            role: role.as_str().to_string(),
            ttl_seconds: ttl.as_secs(),
            max_uses,
        })
        .await?
        .into_inner();
    let created = CreatedToken::try_from(created)?;
    if format != Format::Table {
        return ctx.out(&serialized(
            format,
            &CreatedOutput {
                created: &created,
                join_command: created.join_command(),
            },
        )?);
    }
    let v = &created.view;
    ctx.out(&format!(
        "token {} created: role {}, {}, expires {}\n\
         The token is shown only now. On the machine to join, as root:\n\n  {}\n",
        v.id,
        v.role,
        uses(v.max_uses),
        utc(v.expires_unix_ms),
        created.join_command()
    ))
}

pub async fn list(ctx: &mut Ctx<'_>, format: Format) -> CliResult {
    let conn = ctx.connect().await?;
    let list = conn
        .join_tokens()
        .list(pb::ListJoinTokensRequest {})
        .await?
        .into_inner()
        .tokens
        .into_iter()
        .map(JoinTokenView::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    if format != Format::Table {
        return ctx.out(&serialized(format, &list)?);
    }
    if list.is_empty() {
        ctx.note("no join tokens: create one with `oi hypervisor token create --role ROLE`");
        return Ok(());
    }
    ctx.out(&token_table(&list))
}

pub fn token_table(list: &[JoinTokenView]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.role.as_str().to_string(),
                t.state.as_str().to_string(),
                format!("{}/{}", t.uses, t.max_uses),
                utc(t.expires_unix_ms),
                utc(t.created_unix_ms),
            ]
        })
        .collect();
    table(
        &["ID", "ROLE", "STATE", "USES", "EXPIRES", "CREATED"],
        &rows,
    )
}

pub async fn revoke(ctx: &mut Ctx<'_>, id: &str) -> CliResult {
    let id = token_id(id)?;
    let conn = ctx.connect().await?;
    conn.join_tokens()
        .revoke(pb::JoinTokenRef { id: id.to_string() })
        .await?;
    ctx.out(&format!("token {id} revoked\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oi_api_types::token::TokenState;

    #[test]
    fn times_and_tables() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_700_000_000_999), "2023-11-14T22:13:20Z");
        let t = JoinTokenView {
            id: "abcdef".into(),
            role: Role::Public,
            created_unix_ms: 0,
            expires_unix_ms: 3_600_000,
            max_uses: 2,
            uses: 1,
            state: TokenState::Active,
        };
        assert_eq!(
            token_table(&[t]),
            "ID      ROLE    STATE   USES  EXPIRES               CREATED\n\
             abcdef  public  active  1/2   1970-01-01T01:00:00Z  1970-01-01T00:00:00Z\n"
        );
    }
}
