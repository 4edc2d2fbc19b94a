//! Schema migrations of the SQLite store, keyed on `PRAGMA user_version`.
//! Each step runs in its own transaction together with the version bump, so
//! a crash mid-migration leaves the previous version intact.

use super::StoreError;
use rusqlite::Connection;

/// The migrations in order; `MIGRATIONS[i]` moves version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: hypervisors, placed components, store metadata (epoch).
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE hypervisors (
        name              TEXT PRIMARY KEY,
        role              TEXT NOT NULL CHECK (role IN ('private', 'public')),
        address           TEXT NOT NULL,
        port_first        INTEGER NOT NULL,
        port_last         INTEGER NOT NULL,
        cpu_millis        INTEGER NOT NULL,
        memory_bytes      INTEGER NOT NULL,
        labels            TEXT NOT NULL DEFAULT '{}',
        cordoned          INTEGER NOT NULL DEFAULT 0,
        last_seen_unix_ms INTEGER,
        generation        INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE components (
        id         TEXT PRIMARY KEY,
        hypervisor TEXT NOT NULL REFERENCES hypervisors(name),
        cluster    TEXT NOT NULL DEFAULT '',
        spec       BLOB NOT NULL
    );
    CREATE INDEX components_by_hypervisor ON components(hypervisor);
    CREATE INDEX components_by_cluster ON components(cluster);
    "#,
    // 2: managed clusters. `secrets` is sealed with the key-encryption key.
    r#"
    CREATE TABLE clusters (
        name            TEXT PRIMARY KEY,
        spec            TEXT NOT NULL,
        secrets         BLOB NOT NULL,
        allocation      TEXT,
        pending_reason  TEXT NOT NULL DEFAULT '',
        created_unix_ms INTEGER NOT NULL
    );
    "#,
    // 3: join tokens (the secret only as its SHA-256) and the hypervisor
    // certificates the coordinator knows of, with the role a token bound
    // and their revocation.
    r#"
    CREATE TABLE join_tokens (
        id              TEXT PRIMARY KEY,
        secret_sha256   BLOB NOT NULL CHECK (length(secret_sha256) = 32),
        role            TEXT NOT NULL CHECK (role IN ('private', 'public')),
        created_unix_ms INTEGER NOT NULL,
        expires_unix_ms INTEGER NOT NULL,
        max_uses        INTEGER NOT NULL CHECK (max_uses > 0),
        uses            INTEGER NOT NULL DEFAULT 0,
        revoked         INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE agent_identities (
        serial            TEXT PRIMARY KEY,
        name              TEXT NOT NULL,
        role              TEXT CHECK (role IN ('private', 'public')),
        issued_unix_ms    INTEGER NOT NULL,
        not_after_unix_ms INTEGER NOT NULL,
        revoked_unix_ms   INTEGER
    );
    CREATE INDEX agent_identities_by_name ON agent_identities(name);
    "#,
    // 4: when a cluster was first ready (NULL: never), so a cluster that
    // stops answering reads as degraded, not provisioning, also after a
    // coordinator restart.
    r#"
    ALTER TABLE clusters ADD COLUMN ready_unix_ms INTEGER;
    "#,
    // 5: a hypervisor removal waiting for replicas to move off (NULL: none),
    // so a coordinator restart resumes it.
    r#"
    ALTER TABLE hypervisors ADD COLUMN removing_unix_ms INTEGER;
    "#,
    // 6: node join tokens of managed clusters (Kubernetes bootstrap
    // tokens). The whole token is sealed: the coordinator writes its secret
    // into the cluster. They go with their cluster.
    r#"
    CREATE TABLE node_tokens (
        cluster         TEXT NOT NULL REFERENCES clusters(name) ON DELETE CASCADE,
        id              TEXT NOT NULL,
        token           BLOB NOT NULL,
        description     TEXT NOT NULL DEFAULT '',
        created_unix_ms INTEGER NOT NULL,
        expires_unix_ms INTEGER NOT NULL,
        revoked_unix_ms INTEGER,
        PRIMARY KEY (cluster, id)
    );
    "#,
];

pub const SUPPORTED: u32 = MIGRATIONS.len() as u32;

/// Brings the schema to [`SUPPORTED`]; refuses a store from a newer build.
pub fn migrate(conn: &mut Connection) -> Result<u32, StoreError> {
    let found: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > SUPPORTED {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SUPPORTED,
        });
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", i as u32 + 1)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "migrated store schema");
    }
    Ok(SUPPORTED)
}
