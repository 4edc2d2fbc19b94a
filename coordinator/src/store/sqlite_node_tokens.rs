//! The SQLite side of node join tokens (see [`super::Store::create_node_token`]
//! and its neighbours). Plain functions on a connection; `sqlite.rs` runs
//! them on the blocking pool. The token is sealed, bound to its cluster and
//! id.

use super::StoreError;
use crate::cluster::node_tokens::NodeToken;
use crate::seal::Sealer;
use oi_api_types::token::TokenSecret;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

const COLUMNS: &str =
    "cluster, id, token, description, created_unix_ms, expires_unix_ms, revoked_unix_ms";

fn aad(cluster: &str, id: &str) -> String {
    format!("node-token/{cluster}/{id}")
}

fn from_row(sealer: &Sealer, r: &Row<'_>) -> rusqlite::Result<Result<NodeToken, StoreError>> {
    let cluster: String = r.get(0)?;
    let id: String = r.get(1)?;
    let sealed: Vec<u8> = r.get(2)?;
    let description: String = r.get(3)?;
    let created: i64 = r.get(4)?;
    let expires: i64 = r.get(5)?;
    let revoked: Option<i64> = r.get(6)?;
    Ok((|| {
        let plain = sealer.open(&aad(&cluster, &id), &sealed)?;
        let text = String::from_utf8(plain)
            .map_err(|_| StoreError::Corrupt(format!("node token {cluster}/{id}: not text")))?;
        let token = TokenSecret::parse(&text)
            .ok()
            .filter(|t| t.id() == id)
            .ok_or_else(|| StoreError::Corrupt(format!("node token {cluster}/{id}: bad token")))?;
        Ok(NodeToken {
            cluster,
            token,
            description,
            created_unix_ms: created as u64,
            expires_unix_ms: expires as u64,
            revoked_unix_ms: revoked.map(|v| v as u64),
        })
    })())
}

pub(super) fn create(
    conn: &mut Connection,
    sealer: &Sealer,
    t: &NodeToken,
) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let cluster_exists = tx
        .query_row(
            "SELECT 1 FROM clusters WHERE name = ?1",
            params![t.cluster],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if !cluster_exists {
        return Err(StoreError::UnknownCluster(t.cluster.clone()));
    }
    let taken = tx
        .query_row(
            "SELECT 1 FROM node_tokens WHERE cluster = ?1 AND id = ?2",
            params![t.cluster, t.id()],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if taken {
        return Err(StoreError::TokenExists(t.id().to_string()));
    }
    let sealed = sealer.seal(&aad(&t.cluster, t.id()), t.token.expose().as_bytes());
    tx.execute(
        &format!("INSERT INTO node_tokens ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        params![
            t.cluster,
            t.id(),
            sealed,
            t.description,
            t.created_unix_ms as i64,
            t.expires_unix_ms as i64,
            t.revoked_unix_ms.map(|v| v as i64),
        ],
    )?;
    tx.commit()?;
    Ok(())
}

pub(super) fn list(
    conn: &Connection,
    sealer: &Sealer,
    cluster: Option<&str>,
) -> Result<Vec<NodeToken>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM node_tokens WHERE ?1 IS NULL OR cluster = ?1
         ORDER BY created_unix_ms DESC, cluster, id"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params![cluster], |r| from_row(sealer, r))?;
    rows.map(|r| r.map_err(StoreError::from).and_then(|x| x))
        .collect()
}

pub(super) fn revoke(
    conn: &Connection,
    cluster: &str,
    id: &str,
    now_unix_ms: u64,
) -> Result<(), StoreError> {
    let n = conn.execute(
        "UPDATE node_tokens SET revoked_unix_ms = COALESCE(revoked_unix_ms, ?3)
         WHERE cluster = ?1 AND id = ?2",
        params![cluster, id, now_unix_ms as i64],
    )?;
    if n == 0 {
        return Err(StoreError::UnknownToken(id.to_string()));
    }
    Ok(())
}

pub(super) fn forget(conn: &Connection, before_unix_ms: u64) -> Result<u32, StoreError> {
    let n = conn.execute(
        "DELETE FROM node_tokens WHERE expires_unix_ms < ?1 OR revoked_unix_ms < ?1",
        params![before_unix_ms as i64],
    )?;
    Ok(n as u32)
}

#[cfg(test)]
mod tests {
    use super::super::sqlite::SqliteStore;
    use super::super::Store;
    use super::*;
    use crate::cluster::model::ClusterSpec;
    use crate::store::ClusterRecord;

    fn record(name: &str) -> ClusterRecord {
        ClusterRecord {
            spec: ClusterSpec::new(name, "1.37.2", 1),
            secrets: b"pki".to_vec(),
            allocation: None,
            pending_reason: "no room".into(),
            created_unix_ms: 1,
            ready_unix_ms: None,
        }
    }

    fn token(cluster: &str, created: u64) -> NodeToken {
        NodeToken {
            cluster: cluster.into(),
            token: TokenSecret::generate(),
            description: "rack 4".into(),
            created_unix_ms: created,
            expires_unix_ms: created + 1_000,
            revoked_unix_ms: None,
        }
    }

    #[tokio::test]
    async fn node_tokens_belong_to_their_cluster_and_go_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = SqliteStore::open(&path, Sealer::generate()).unwrap();
        let t = token("a", 10);
        // No cluster, no token.
        assert!(matches!(
            store.create_node_token(&t).await,
            Err(StoreError::UnknownCluster(_))
        ));
        store.put_cluster(&record("a"), true, &[]).await.unwrap();
        store.put_cluster(&record("b"), true, &[]).await.unwrap();
        store.create_node_token(&t).await.unwrap();
        assert!(matches!(
            store.create_node_token(&t).await,
            Err(StoreError::TokenExists(_))
        ));
        let u = token("b", 20);
        store.create_node_token(&u).await.unwrap();
        assert_eq!(
            store.list_node_tokens(None).await.unwrap(),
            vec![u.clone(), t.clone()]
        );
        assert_eq!(
            store.list_node_tokens(Some("a")).await.unwrap(),
            vec![t.clone()]
        );

        // Revocation is recorded once; another cluster's id is unknown.
        store.revoke_node_token("a", t.id(), 500).await.unwrap();
        store.revoke_node_token("a", t.id(), 600).await.unwrap();
        assert!(matches!(
            store.revoke_node_token("b", t.id(), 600).await,
            Err(StoreError::UnknownToken(_))
        ));
        let listed = store.list_node_tokens(Some("a")).await.unwrap();
        assert_eq!(listed[0].revoked_unix_ms, Some(500));

        // A cluster's deletion takes its tokens (in the same transaction).
        store.delete_cluster("a", &[]).await.unwrap();
        assert_eq!(store.list_node_tokens(None).await.unwrap(), vec![u.clone()]);

        // Forgetting ends with what expired before the cut.
        assert_eq!(store.forget_node_tokens(1_020).await.unwrap(), 0);
        assert_eq!(store.forget_node_tokens(1_021).await.unwrap(), 1);
        assert!(store.list_node_tokens(None).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_token_is_sealed_at_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = SqliteStore::open(&path, Sealer::generate()).unwrap();
        store.put_cluster(&record("a"), true, &[]).await.unwrap();
        let t = token("a", 10);
        store.create_node_token(&t).await.unwrap();
        drop(store);
        let raw = std::fs::read(&path).unwrap();
        let wal = std::fs::read(path.with_extension("db-wal")).unwrap_or_default();
        let secret = t.token.expose();
        for bytes in [raw, wal] {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
        }
    }
}
