//! The SQLite side of join tokens and agent identities (see
//! [`super::Store::join`] and its neighbours). Plain functions on a
//! connection; `sqlite.rs` runs them on the blocking pool.

use super::{AgentIdentity, StoreError};
use crate::tokens::{JoinToken, TokenRefusal};
use oi_proto::model::Role;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

const TOKEN_COLUMNS: &str =
    "id, secret_sha256, role, created_unix_ms, expires_unix_ms, max_uses, uses, revoked";

fn token_from_row(r: &Row<'_>) -> rusqlite::Result<Result<JoinToken, StoreError>> {
    let id: String = r.get(0)?;
    let hash: Vec<u8> = r.get(1)?;
    let role: String = r.get(2)?;
    let created: i64 = r.get(3)?;
    let expires: i64 = r.get(4)?;
    let max_uses: u32 = r.get(5)?;
    let uses: u32 = r.get(6)?;
    let revoked: bool = r.get(7)?;
    Ok((|| {
        Ok(JoinToken {
            secret_sha256: hash
                .try_into()
                .map_err(|_| StoreError::Corrupt(format!("join token {id}: bad hash length")))?,
            role: role
                .parse::<Role>()
                .map_err(|e| StoreError::Corrupt(format!("join token {id}: {e}")))?,
            created_unix_ms: created as u64,
            expires_unix_ms: expires as u64,
            max_uses,
            uses,
            revoked,
            id,
        })
    })())
}

fn get_token(conn: &Connection, id: &str) -> Result<Option<JoinToken>, StoreError> {
    let sql = format!("SELECT {TOKEN_COLUMNS} FROM join_tokens WHERE id = ?1");
    conn.query_row(&sql, params![id], token_from_row)
        .optional()?
        .transpose()
}

pub(super) fn create_token(conn: &mut Connection, t: &JoinToken) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if get_token(&tx, &t.id)?.is_some() {
        return Err(StoreError::TokenExists(t.id.clone()));
    }
    tx.execute(
        "INSERT INTO join_tokens (id, secret_sha256, role, created_unix_ms, expires_unix_ms,
            max_uses, uses, revoked) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            t.id,
            t.secret_sha256.to_vec(),
            t.role.as_str(),
            t.created_unix_ms as i64,
            t.expires_unix_ms as i64,
            t.max_uses,
            t.uses,
            t.revoked
        ],
    )?;
    tx.commit()?;
    Ok(())
}

pub(super) fn list_tokens(conn: &Connection) -> Result<Vec<JoinToken>, StoreError> {
    let sql = format!("SELECT {TOKEN_COLUMNS} FROM join_tokens ORDER BY created_unix_ms DESC, id");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([], token_from_row)?;
    rows.map(|r| r.map_err(StoreError::from).and_then(|x| x))
        .collect()
}

pub(super) fn revoke_token(conn: &Connection, id: &str) -> Result<(), StoreError> {
    let n = conn.execute(
        "UPDATE join_tokens SET revoked = 1 WHERE id = ?1",
        params![id],
    )?;
    if n == 0 {
        return Err(StoreError::UnknownToken(id.to_string()));
    }
    Ok(())
}

const IDENTITY_COLUMNS: &str =
    "serial, name, role, issued_unix_ms, not_after_unix_ms, revoked_unix_ms";

fn identity_from_row(r: &Row<'_>) -> rusqlite::Result<Result<AgentIdentity, StoreError>> {
    let serial: String = r.get(0)?;
    let name: String = r.get(1)?;
    let role: Option<String> = r.get(2)?;
    let issued: i64 = r.get(3)?;
    let not_after: i64 = r.get(4)?;
    let revoked: Option<i64> = r.get(5)?;
    Ok((|| {
        Ok(AgentIdentity {
            role: role
                .map(|r| r.parse::<Role>())
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("identity {serial}: {e}")))?,
            issued_unix_ms: issued as u64,
            not_after_unix_ms: not_after as u64,
            revoked_unix_ms: revoked.map(|v| v as u64),
            serial,
            name,
        })
    })())
}

fn insert_identity(conn: &Connection, i: &AgentIdentity) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO agent_identities (serial, name, role, issued_unix_ms, not_after_unix_ms,
            revoked_unix_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(serial) DO NOTHING",
        params![
            i.serial,
            i.name,
            i.role.map(|r| r.as_str()),
            i.issued_unix_ms as i64,
            i.not_after_unix_ms as i64,
            i.revoked_unix_ms.map(|v| v as i64)
        ],
    )?;
    Ok(())
}

pub(super) fn record_identity(conn: &Connection, i: &AgentIdentity) -> Result<(), StoreError> {
    insert_identity(conn, i)
}

pub(super) fn get_identity(
    conn: &Connection,
    serial: &str,
) -> Result<Option<AgentIdentity>, StoreError> {
    let sql = format!("SELECT {IDENTITY_COLUMNS} FROM agent_identities WHERE serial = ?1");
    conn.query_row(&sql, params![serial], identity_from_row)
        .optional()?
        .transpose()
}

pub(super) fn identities_of(
    conn: &Connection,
    name: &str,
) -> Result<Vec<AgentIdentity>, StoreError> {
    let sql = format!(
        "SELECT {IDENTITY_COLUMNS} FROM agent_identities WHERE name = ?1
         ORDER BY issued_unix_ms, serial"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params![name], identity_from_row)?;
    rows.map(|r| r.map_err(StoreError::from).and_then(|x| x))
        .collect()
}

pub(super) fn revoke_identities(
    conn: &Connection,
    name: &str,
    now_unix_ms: u64,
) -> Result<u32, StoreError> {
    let n = conn.execute(
        "UPDATE agent_identities SET revoked_unix_ms = ?2
         WHERE name = ?1 AND revoked_unix_ms IS NULL",
        params![name, now_unix_ms as i64],
    )?;
    Ok(n as u32)
}

pub(super) fn join(
    conn: &mut Connection,
    token_id: &str,
    secret_sha256: &[u8; 32],
    now_unix_ms: u64,
    identity: &AgentIdentity,
) -> Result<JoinToken, StoreError> {
    // IMMEDIATE: the write lock is taken before the token is read, so two
    // joins (even from two processes) cannot both take its last use.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(mut token) = get_token(&tx, token_id)? else {
        return Err(StoreError::TokenRefused(TokenRefusal::Invalid));
    };
    token
        .check(secret_sha256, now_unix_ms)
        .map_err(StoreError::TokenRefused)?;
    let name = &identity.name;
    let registered: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM hypervisors WHERE name = ?1)",
        params![name],
        |r| r.get(0),
    )?;
    if registered {
        return Err(StoreError::NameTaken {
            name: name.clone(),
            why: "a hypervisor of that name is registered".into(),
        });
    }
    let pending: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM agent_identities
            WHERE name = ?1 AND revoked_unix_ms IS NULL AND not_after_unix_ms > ?2)",
        params![name, now_unix_ms as i64],
        |r| r.get(0),
    )?;
    if pending {
        return Err(StoreError::NameTaken {
            name: name.clone(),
            why: "a hypervisor joined under that name and has not connected yet".into(),
        });
    }
    tx.execute(
        "UPDATE join_tokens SET uses = uses + 1 WHERE id = ?1",
        params![token_id],
    )?;
    token.uses += 1;
    insert_identity(
        &tx,
        &AgentIdentity {
            role: Some(token.role),
            ..identity.clone()
        },
    )?;
    tx.commit()?;
    Ok(token)
}
