//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`,
//! so a committed transaction survives `kill -9` and power loss. Calls run
//! on the blocking pool; one connection, serialized by a mutex.

use super::migrations;
use super::sqlite_join;
use super::sqlite_node_tokens;
use super::{
    AgentIdentity, ClusterRecord, HypervisorRecord, HypervisorRegistration, PlacementChange, Store,
    StoreError,
};
use crate::cluster::node_tokens::NodeToken;
use crate::seal::Sealer;
use crate::tokens::JoinToken;
use async_trait::async_trait;
use oi_proto::model::{Component, PortRange, Role};
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

pub struct SqliteStore {
    epoch: String,
    conn: Arc<Mutex<Connection>>,
    sealer: Arc<Sealer>,
}

impl SqliteStore {
    /// Opens (or creates) the store at `path` and migrates its schema.
    /// Secrets (component specs, cluster PKI) are sealed with `sealer`.
    pub fn open(path: &Path, sealer: Sealer) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrations::migrate(&mut conn)?;
        let epoch: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| {
                r.get(0)
            })
            .optional()?;
        let epoch = match epoch {
            Some(e) => e,
            None => {
                let e = uuid::Uuid::new_v4().simple().to_string();
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('epoch', ?1)",
                    params![e],
                )?;
                e
            }
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // The store holds key material: only the coordinator reads it.
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        Ok(Self {
            epoch,
            conn: Arc::new(Mutex::new(conn)),
            sealer: Arc::new(sealer),
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    pub(crate) async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Sealer) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        let sealer = self.sealer.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut guard, &sealer)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
    }
}

const HV_COLUMNS: &str = "name, role, address, port_first, port_last, cpu_millis, memory_bytes, \
                          labels, cordoned, last_seen_unix_ms, generation, removing_unix_ms";

fn hv_from_row(r: &Row<'_>) -> rusqlite::Result<Result<HypervisorRecord, StoreError>> {
    let name: String = r.get(0)?;
    let role: String = r.get(1)?;
    let labels: String = r.get(7)?;
    let first: u16 = r.get(3)?;
    let last: u16 = r.get(4)?;
    let last_seen: Option<i64> = r.get(9)?;
    let generation: i64 = r.get(10)?;
    let cpu: i64 = r.get(5)?;
    let mem: i64 = r.get(6)?;
    let address: String = r.get(2)?;
    let cordoned: bool = r.get(8)?;
    let removing: Option<i64> = r.get(11)?;
    Ok((|| {
        Ok(HypervisorRecord {
            role: role
                .parse::<Role>()
                .map_err(|e| StoreError::Corrupt(format!("hypervisor {name}: {e}")))?,
            host_ports: PortRange::new(first, last)
                .map_err(|e| StoreError::Corrupt(format!("hypervisor {name}: {e}")))?,
            labels: serde_json::from_str(&labels)
                .map_err(|e| StoreError::Corrupt(format!("hypervisor {name} labels: {e}")))?,
            address,
            cpu_millis: cpu as u64,
            memory_bytes: mem as u64,
            cordoned,
            last_seen_unix_ms: last_seen.map(|v| v as u64),
            generation: generation as u64,
            removing_unix_ms: removing.map(|v| v as u64),
            name,
        })
    })())
}

fn get_hv(conn: &Connection, name: &str) -> Result<Option<HypervisorRecord>, StoreError> {
    let sql = format!("SELECT {HV_COLUMNS} FROM hypervisors WHERE name = ?1");
    conn.query_row(&sql, params![name], hv_from_row)
        .optional()?
        .transpose()
}

/// Component specs carry key files: they are sealed, bound to their id.
fn decode_component(sealer: &Sealer, id: &str, spec: &[u8]) -> Result<Component, StoreError> {
    let plain = sealer.open(&format!("component/{id}"), spec)?;
    serde_json::from_slice(&plain).map_err(|e| StoreError::Corrupt(format!("component {id}: {e}")))
}

fn encode_component(sealer: &Sealer, c: &Component) -> Result<Vec<u8>, StoreError> {
    let plain =
        serde_json::to_vec(c).map_err(|e| StoreError::Backend(format!("encode component: {e}")))?;
    Ok(sealer.seal(&format!("component/{}", c.id), &plain))
}

/// Applies placement changes inside `tx`; returns the hypervisors whose
/// placement changed. Shared with other writers that change placement in
/// the same transaction as their own records.
fn apply_placement(
    tx: &rusqlite::Transaction<'_>,
    sealer: &Sealer,
    changes: &[PlacementChange],
) -> Result<BTreeMap<String, u64>, StoreError> {
    let mut changed: BTreeSet<String> = BTreeSet::new();
    for change in changes {
        match change {
            PlacementChange::Upsert {
                hypervisor,
                component,
            } => {
                if get_hv(tx, hypervisor)?.is_none() {
                    return Err(StoreError::UnknownHypervisor(hypervisor.clone()));
                }
                let existing: Option<(String, Vec<u8>)> = tx
                    .query_row(
                        "SELECT hypervisor, spec FROM components WHERE id = ?1",
                        params![component.id],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                if let Some((hv, old)) = existing {
                    // Sealing is randomized: compare what is sealed.
                    if &hv == hypervisor
                        && decode_component(sealer, &component.id, &old)? == *component
                    {
                        continue;
                    }
                    changed.insert(hv);
                }
                let spec = encode_component(sealer, component)?;
                tx.execute(
                    "INSERT INTO components (id, hypervisor, cluster, spec) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(id) DO UPDATE SET hypervisor = excluded.hypervisor,
                        cluster = excluded.cluster, spec = excluded.spec",
                    params![component.id, hypervisor, component.cluster, spec],
                )?;
                changed.insert(hypervisor.clone());
            }
            PlacementChange::Remove { component_id } => {
                let hv: Option<String> = tx
                    .query_row(
                        "SELECT hypervisor FROM components WHERE id = ?1",
                        params![component_id],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(hv) = hv {
                    tx.execute(
                        "DELETE FROM components WHERE id = ?1",
                        params![component_id],
                    )?;
                    changed.insert(hv);
                }
            }
        }
    }
    let mut generations = BTreeMap::new();
    for hv in changed {
        let generation: i64 = tx.query_row(
            "UPDATE hypervisors SET generation = generation + 1 WHERE name = ?1 RETURNING generation",
            params![hv],
            |r| r.get(0),
        )?;
        generations.insert(hv, generation as u64);
    }
    Ok(generations)
}

const CLUSTER_COLUMNS: &str =
    "name, spec, secrets, allocation, pending_reason, created_unix_ms, ready_unix_ms";

type ClusterRow = (
    String,
    String,
    Vec<u8>,
    Option<String>,
    String,
    i64,
    Option<i64>,
);

fn cluster_row(r: &Row<'_>) -> rusqlite::Result<ClusterRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn decode_cluster(sealer: &Sealer, row: ClusterRow) -> Result<ClusterRecord, StoreError> {
    let (name, spec, secrets, allocation, pending_reason, created, ready) = row;
    let corrupt = |what: &str, e: serde_json::Error| {
        StoreError::Corrupt(format!("cluster {name} {what}: {e}"))
    };
    Ok(ClusterRecord {
        spec: serde_json::from_str(&spec).map_err(|e| corrupt("spec", e))?,
        secrets: sealer.open(&format!("cluster/{name}"), &secrets)?,
        allocation: allocation
            .map(|a| serde_json::from_str(&a))
            .transpose()
            .map_err(|e| corrupt("allocation", e))?,
        pending_reason,
        created_unix_ms: created as u64,
        ready_unix_ms: ready.map(|r| r as u64),
    })
}

fn get_cluster(
    conn: &Connection,
    sealer: &Sealer,
    name: &str,
) -> Result<Option<ClusterRecord>, StoreError> {
    let sql = format!("SELECT {CLUSTER_COLUMNS} FROM clusters WHERE name = ?1");
    conn.query_row(&sql, params![name], cluster_row)
        .optional()?
        .map(|row| decode_cluster(sealer, row))
        .transpose()
}

#[async_trait]
impl Store for SqliteStore {
    fn epoch(&self) -> &str {
        &self.epoch
    }

    async fn list_hypervisors(&self) -> Result<Vec<HypervisorRecord>, StoreError> {
        self.with(|conn, _| {
            let sql = format!("SELECT {HV_COLUMNS} FROM hypervisors ORDER BY name");
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map([], hv_from_row)?;
            rows.map(|r| r.map_err(StoreError::from).and_then(|x| x))
                .collect()
        })
        .await
    }

    async fn get_hypervisor(&self, name: &str) -> Result<Option<HypervisorRecord>, StoreError> {
        let name = name.to_string();
        self.with(move |conn, _| get_hv(conn, &name)).await
    }

    async fn register_hypervisor(
        &self,
        reg: &HypervisorRegistration,
    ) -> Result<HypervisorRecord, StoreError> {
        let reg = reg.clone();
        self.with(move |conn, _| {
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO hypervisors (name, role, address, port_first, port_last, cpu_millis, memory_bytes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(name) DO UPDATE SET role = excluded.role, address = excluded.address,
                    port_first = excluded.port_first, port_last = excluded.port_last,
                    cpu_millis = excluded.cpu_millis, memory_bytes = excluded.memory_bytes",
                params![
                    reg.name,
                    reg.role.as_str(),
                    reg.address,
                    reg.host_ports.first,
                    reg.host_ports.last,
                    reg.cpu_millis as i64,
                    reg.memory_bytes as i64
                ],
            )?;
            let rec = get_hv(&tx, &reg.name)?
                .ok_or_else(|| StoreError::Backend("hypervisor vanished after insert".into()))?;
            tx.commit()?;
            Ok(rec)
        })
        .await
    }

    async fn set_cordoned(&self, name: &str, cordoned: bool) -> Result<(), StoreError> {
        let name = name.to_string();
        self.with(move |conn, _| {
            let n = conn.execute(
                "UPDATE hypervisors SET cordoned = ?2 WHERE name = ?1",
                params![name, cordoned],
            )?;
            if n == 0 {
                return Err(StoreError::UnknownHypervisor(name));
            }
            Ok(())
        })
        .await
    }

    async fn set_removing(&self, name: &str, unix_ms: Option<u64>) -> Result<(), StoreError> {
        let name = name.to_string();
        self.with(move |conn, _| {
            let n = conn.execute(
                "UPDATE hypervisors SET removing_unix_ms = ?2 WHERE name = ?1",
                params![name, unix_ms.map(|v| v as i64)],
            )?;
            if n == 0 {
                return Err(StoreError::UnknownHypervisor(name));
            }
            Ok(())
        })
        .await
    }

    async fn set_labels(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        let name = name.to_string();
        let labels = serde_json::to_string(labels)
            .map_err(|e| StoreError::Backend(format!("encode labels: {e}")))?;
        self.with(move |conn, _| {
            let n = conn.execute(
                "UPDATE hypervisors SET labels = ?2 WHERE name = ?1",
                params![name, labels],
            )?;
            if n == 0 {
                return Err(StoreError::UnknownHypervisor(name));
            }
            Ok(())
        })
        .await
    }

    async fn touch_last_seen(&self, name: &str, unix_ms: u64) -> Result<(), StoreError> {
        let name = name.to_string();
        self.with(move |conn, _| {
            conn.execute(
                "UPDATE hypervisors SET last_seen_unix_ms = ?2 WHERE name = ?1",
                params![name, unix_ms as i64],
            )?;
            Ok(())
        })
        .await
    }

    async fn remove_hypervisor(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_string();
        self.with(move |conn, _| {
            let tx = conn.transaction()?;
            let count: i64 = tx.query_row(
                "SELECT COUNT(*) FROM components WHERE hypervisor = ?1",
                params![name],
                |r| r.get(0),
            )?;
            if count > 0 {
                return Err(StoreError::HypervisorNotEmpty {
                    name,
                    count: count as usize,
                });
            }
            let n = tx.execute("DELETE FROM hypervisors WHERE name = ?1", params![name])?;
            if n == 0 {
                return Err(StoreError::UnknownHypervisor(name));
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn list_components(&self) -> Result<Vec<(String, Component)>, StoreError> {
        self.with(|conn, sealer| {
            let mut stmt =
                conn.prepare("SELECT id, hypervisor, spec FROM components ORDER BY id")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, hv, spec) = row?;
                out.push((hv, decode_component(sealer, &id, &spec)?));
            }
            Ok(out)
        })
        .await
    }

    async fn write_placement(
        &self,
        changes: &[PlacementChange],
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        let changes = changes.to_vec();
        self.with(move |conn, sealer| {
            let tx = conn.transaction()?;
            let generations = apply_placement(&tx, sealer, &changes)?;
            tx.commit()?;
            Ok(generations)
        })
        .await
    }

    async fn list_clusters(&self) -> Result<Vec<ClusterRecord>, StoreError> {
        self.with(|conn, sealer| {
            let sql = format!("SELECT {CLUSTER_COLUMNS} FROM clusters ORDER BY name");
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map([], cluster_row)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(decode_cluster(sealer, row?)?);
            }
            Ok(out)
        })
        .await
    }

    async fn get_cluster(&self, name: &str) -> Result<Option<ClusterRecord>, StoreError> {
        let name = name.to_string();
        self.with(move |conn, sealer| get_cluster(conn, sealer, &name))
            .await
    }

    async fn put_cluster(
        &self,
        record: &ClusterRecord,
        create: bool,
        changes: &[PlacementChange],
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        let record = record.clone();
        let changes = changes.to_vec();
        self.with(move |conn, sealer| {
            let tx = conn.transaction()?;
            let name = record.spec.name.clone();
            let exists = get_cluster(&tx, sealer, &name)?.is_some();
            match (create, exists) {
                (true, true) => return Err(StoreError::ClusterExists(name)),
                (false, false) => return Err(StoreError::UnknownCluster(name)),
                _ => {}
            }
            let spec = serde_json::to_string(&record.spec)
                .map_err(|e| StoreError::Backend(format!("encode cluster spec: {e}")))?;
            let allocation = record
                .allocation
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| StoreError::Backend(format!("encode allocation: {e}")))?;
            let secrets = sealer.seal(&format!("cluster/{name}"), &record.secrets);
            tx.execute(
                "INSERT INTO clusters (name, spec, secrets, allocation, pending_reason, created_unix_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(name) DO UPDATE SET spec = excluded.spec, secrets = excluded.secrets,
                    allocation = excluded.allocation, pending_reason = excluded.pending_reason",
                params![
                    name,
                    spec,
                    secrets,
                    allocation,
                    record.pending_reason,
                    record.created_unix_ms as i64
                ],
            )?;
            let generations = apply_placement(&tx, sealer, &changes)?;
            tx.commit()?;
            Ok(generations)
        })
        .await
    }

    async fn mark_cluster_ready(&self, name: &str, unix_ms: u64) -> Result<(), StoreError> {
        let name = name.to_string();
        self.with(move |conn, _| {
            conn.execute(
                "UPDATE clusters SET ready_unix_ms = ?2 WHERE name = ?1 AND ready_unix_ms IS NULL",
                params![name, unix_ms as i64],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete_cluster(
        &self,
        name: &str,
        changes: &[PlacementChange],
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        let name = name.to_string();
        let changes = changes.to_vec();
        self.with(move |conn, sealer| {
            let tx = conn.transaction()?;
            let n = tx.execute("DELETE FROM clusters WHERE name = ?1", params![name])?;
            if n == 0 {
                return Err(StoreError::UnknownCluster(name));
            }
            let generations = apply_placement(&tx, sealer, &changes)?;
            tx.commit()?;
            Ok(generations)
        })
        .await
    }

    async fn bump_generation(&self, name: &str, at_least: u64) -> Result<u64, StoreError> {
        let name = name.to_string();
        self.with(move |conn, _| {
            let generation: Option<i64> = conn
                .query_row(
                    "UPDATE hypervisors SET generation = MAX(generation, ?2) + 1 WHERE name = ?1
                     RETURNING generation",
                    params![name, at_least as i64],
                    |r| r.get(0),
                )
                .optional()?;
            generation
                .map(|g| g as u64)
                .ok_or(StoreError::UnknownHypervisor(name))
        })
        .await
    }

    async fn create_join_token(&self, token: &JoinToken) -> Result<(), StoreError> {
        let token = token.clone();
        self.with(move |conn, _| sqlite_join::create_token(conn, &token))
            .await
    }

    async fn list_join_tokens(&self) -> Result<Vec<JoinToken>, StoreError> {
        self.with(|conn, _| sqlite_join::list_tokens(conn)).await
    }

    async fn revoke_join_token(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_string();
        self.with(move |conn, _| sqlite_join::revoke_token(conn, &id))
            .await
    }

    async fn join(
        &self,
        token_id: &str,
        secret_sha256: [u8; 32],
        now_unix_ms: u64,
        identity: &AgentIdentity,
    ) -> Result<JoinToken, StoreError> {
        let token_id = token_id.to_string();
        let identity = identity.clone();
        self.with(move |conn, _| {
            sqlite_join::join(conn, &token_id, &secret_sha256, now_unix_ms, &identity)
        })
        .await
    }

    async fn record_identity(&self, identity: &AgentIdentity) -> Result<(), StoreError> {
        let identity = identity.clone();
        self.with(move |conn, _| sqlite_join::record_identity(conn, &identity))
            .await
    }

    async fn get_identity(&self, serial: &str) -> Result<Option<AgentIdentity>, StoreError> {
        let serial = serial.to_string();
        self.with(move |conn, _| sqlite_join::get_identity(conn, &serial))
            .await
    }

    async fn identities_of(&self, name: &str) -> Result<Vec<AgentIdentity>, StoreError> {
        let name = name.to_string();
        self.with(move |conn, _| sqlite_join::identities_of(conn, &name))
            .await
    }

    async fn revoke_identities(&self, name: &str, now_unix_ms: u64) -> Result<u32, StoreError> {
        let name = name.to_string();
        self.with(move |conn, _| sqlite_join::revoke_identities(conn, &name, now_unix_ms))
            .await
    }

    async fn create_node_token(&self, token: &NodeToken) -> Result<(), StoreError> {
        let token = token.clone();
        self.with(move |conn, sealer| sqlite_node_tokens::create(conn, sealer, &token))
            .await
    }

    async fn list_node_tokens(&self, cluster: Option<&str>) -> Result<Vec<NodeToken>, StoreError> {
        let cluster = cluster.map(str::to_string);
        self.with(move |conn, sealer| sqlite_node_tokens::list(conn, sealer, cluster.as_deref()))
            .await
    }

    async fn revoke_node_token(
        &self,
        cluster: &str,
        id: &str,
        now_unix_ms: u64,
    ) -> Result<(), StoreError> {
        let (cluster, id) = (cluster.to_string(), id.to_string());
        self.with(move |conn, _| sqlite_node_tokens::revoke(conn, &cluster, &id, now_unix_ms))
            .await
    }

    async fn forget_node_tokens(&self, before_unix_ms: u64) -> Result<u32, StoreError> {
        self.with(move |conn, _| sqlite_node_tokens::forget(conn, before_unix_ms))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oi_proto::model::{Container, PodSpec};

    /// One key for the whole test, so a reopened store can read its data.
    fn sealer() -> Sealer {
        Sealer::from_key(&[7; 32])
    }

    fn reg(name: &str) -> HypervisorRegistration {
        HypervisorRegistration {
            name: name.into(),
            role: Role::Private,
            address: "10.0.0.1".into(),
            host_ports: PortRange::new(30000, 30010).unwrap(),
            cpu_millis: 2000,
            memory_bytes: 1 << 30,
        }
    }

    fn comp(id: &str, image: &str) -> Component {
        Component {
            incarnation: String::new(),
            id: id.into(),
            cluster: "c1".into(),
            pod: PodSpec {
                containers: vec![Container {
                    name: "main".into(),
                    image: image.into(),
                    ..Default::default()
                }],
                files: vec![],
            },
        }
    }

    fn up(hv: &str, c: Component) -> PlacementChange {
        PlacementChange::Upsert {
            hypervisor: hv.into(),
            component: c,
        }
    }

    #[tokio::test]
    async fn generations_bump_once_per_changed_hypervisor_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = SqliteStore::open(&path, sealer()).unwrap();
        let epoch = store.epoch().to_string();
        store.register_hypervisor(&reg("a")).await.unwrap();
        store.register_hypervisor(&reg("b")).await.unwrap();

        let g = store
            .write_placement(&[up("a", comp("x", "1")), up("a", comp("y", "1"))])
            .await
            .unwrap();
        assert_eq!(g, BTreeMap::from([("a".into(), 1)]));
        // Identical again: nothing changes.
        let g = store
            .write_placement(&[up("a", comp("x", "1"))])
            .await
            .unwrap();
        assert!(g.is_empty());
        // Moving x to b changes both.
        let g = store
            .write_placement(&[up("b", comp("x", "2"))])
            .await
            .unwrap();
        assert_eq!(g, BTreeMap::from([("a".into(), 2), ("b".into(), 1)]));
        // A failing change writes nothing.
        let err = store
            .write_placement(&[up("a", comp("z", "1")), up("nope", comp("w", "1"))])
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::UnknownHypervisor(_)));
        assert_eq!(store.list_components().await.unwrap().len(), 2);

        assert!(matches!(
            store.remove_hypervisor("b").await.unwrap_err(),
            StoreError::HypervisorNotEmpty { .. }
        ));
        drop(store);
        let store = SqliteStore::open(&path, sealer()).unwrap();
        assert_eq!(store.epoch(), epoch);
        let hvs = store.list_hypervisors().await.unwrap();
        assert_eq!(
            hvs.iter()
                .map(|h| (h.name.as_str(), h.generation))
                .collect::<Vec<_>>(),
            [("a", 2), ("b", 1)]
        );
        let comps = store.list_components().await.unwrap();
        assert_eq!(comps[0], ("b".to_string(), comp("x", "2")));
        assert_eq!(store.bump_generation("a", 7).await.unwrap(), 8);
    }

    #[tokio::test]
    async fn registration_keeps_operator_fields() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db"), sealer()).unwrap();
        store.register_hypervisor(&reg("a")).await.unwrap();
        store.set_cordoned("a", true).await.unwrap();
        store
            .set_labels("a", &BTreeMap::from([("zone".into(), "z1".into())]))
            .await
            .unwrap();
        let mut r = reg("a");
        r.address = "10.0.0.9".into();
        let rec = store.register_hypervisor(&r).await.unwrap();
        assert!(rec.cordoned);
        assert_eq!(rec.address, "10.0.0.9");
        assert_eq!(rec.labels.get("zone").map(String::as_str), Some("z1"));
        assert!(matches!(
            store.set_cordoned("zz", true).await.unwrap_err(),
            StoreError::UnknownHypervisor(_)
        ));
    }

    #[tokio::test]
    async fn clusters_are_written_with_their_placement_and_sealed_at_rest() {
        use crate::cluster::model::ClusterSpec;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = SqliteStore::open(&path, sealer()).unwrap();
        store.register_hypervisor(&reg("a")).await.unwrap();
        let mut c = comp("c1/etcd-0", "1");
        c.pod.files.push(oi_proto::model::File {
            path: "pki/key.pem".into(),
            mode: 0o600,
            content: b"-----BEGIN PRIVATE KEY----- component".to_vec(),
        });
        let rec = ClusterRecord {
            spec: ClusterSpec::new("c1", "1.37.2", 1),
            secrets: b"-----BEGIN PRIVATE KEY----- ca".to_vec(),
            allocation: None,
            pending_reason: "no room".into(),
            created_unix_ms: 5,
            ready_unix_ms: None,
        };
        let g = store
            .put_cluster(&rec, true, &[up("a", c.clone())])
            .await
            .unwrap();
        assert_eq!(g, BTreeMap::from([("a".into(), 1)]));
        assert!(matches!(
            store.put_cluster(&rec, true, &[]).await.unwrap_err(),
            StoreError::ClusterExists(_)
        ));
        // A failing placement change leaves the cluster record untouched.
        let mut changed = rec.clone();
        changed.pending_reason = String::new();
        assert!(store
            .put_cluster(&changed, false, &[up("nope", comp("w", "1"))])
            .await
            .is_err());
        assert_eq!(store.get_cluster("c1").await.unwrap(), Some(rec.clone()));
        assert_eq!(
            store.list_components().await.unwrap(),
            vec![("a".to_string(), c)]
        );
        // First ready: kept by later writes, and the first time stays.
        store.mark_cluster_ready("c1", 42).await.unwrap();
        store.mark_cluster_ready("c1", 43).await.unwrap();
        store.mark_cluster_ready("gone", 43).await.unwrap();
        store.put_cluster(&changed, false, &[]).await.unwrap();
        let got = store.get_cluster("c1").await.unwrap().unwrap();
        assert_eq!(
            (got.ready_unix_ms, got.pending_reason.as_str()),
            (Some(42), "")
        );
        drop(store);

        // Nothing secret is readable in the file (WAL included).
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(!bytes.windows(11).any(|w| w == b"PRIVATE KEY"));
        }
        // Another key cannot read it.
        let other = SqliteStore::open(&path, Sealer::from_key(&[8; 32])).unwrap();
        assert!(matches!(
            other.get_cluster("c1").await.unwrap_err(),
            StoreError::Sealed(_)
        ));
        let store = SqliteStore::open(&path, sealer()).unwrap();
        let g = store
            .delete_cluster(
                "c1",
                &[PlacementChange::Remove {
                    component_id: "c1/etcd-0".into(),
                }],
            )
            .await
            .unwrap();
        assert_eq!(g, BTreeMap::from([("a".into(), 2)]));
        assert!(store.list_clusters().await.unwrap().is_empty());
        assert!(store.list_components().await.unwrap().is_empty());
    }

    fn token(id: &str, secret: &crate::tokens::TokenSecret, max_uses: u32) -> JoinToken {
        JoinToken {
            id: id.into(),
            secret_sha256: secret.secret_sha256(),
            role: Role::Public,
            created_unix_ms: 100,
            expires_unix_ms: 10_000,
            max_uses,
            uses: 0,
            revoked: false,
        }
    }

    fn identity(serial: &str, name: &str) -> AgentIdentity {
        AgentIdentity {
            serial: serial.into(),
            name: name.into(),
            role: None,
            issued_unix_ms: 1_000,
            not_after_unix_ms: 1_000_000,
            revoked_unix_ms: None,
        }
    }

    #[tokio::test]
    async fn join_tokens_are_stored_hashed_and_used_up_atomically() {
        use crate::tokens::{TokenRefusal, TokenSecret};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = Arc::new(SqliteStore::open(&path, sealer()).unwrap());
        let secret = TokenSecret::generate();
        let id = secret.id().to_string();
        store
            .create_join_token(&token(&id, &secret, 3))
            .await
            .unwrap();
        assert!(matches!(
            store.create_join_token(&token(&id, &secret, 1)).await,
            Err(StoreError::TokenExists(_))
        ));
        let hash = secret.secret_sha256();

        // 8 joins race for 3 uses: exactly 3 win, with distinct use counts.
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = store.clone();
            let id = id.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .join(
                        &id,
                        hash,
                        500,
                        &identity(&format!("s{i}"), &format!("hv-{i}")),
                    )
                    .await
            }));
        }
        let mut uses = Vec::new();
        let mut used_up = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(tok) => uses.push(tok.uses),
                Err(StoreError::TokenRefused(TokenRefusal::UsedUp { uses: 3, .. })) => used_up += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        uses.sort();
        assert_eq!((uses, used_up), (vec![1, 2, 3], 5));
        let listed = store.list_join_tokens().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].uses, 3);
        // Each winner's identity carries the token's role.
        let winners: Vec<AgentIdentity> = futures::future::join_all((0..8).map(|i| {
            let store = store.clone();
            async move { store.identities_of(&format!("hv-{i}")).await.unwrap() }
        }))
        .await
        .into_iter()
        .flatten()
        .collect();
        assert_eq!(winners.len(), 3);
        assert!(winners.iter().all(|w| w.role == Some(Role::Public)));

        // Refusals count nothing: wrong secret, unknown id, expired, revoked.
        let other = TokenSecret::generate();
        let second = TokenSecret::generate();
        store
            .create_join_token(&token(second.id(), &second, 5))
            .await
            .unwrap();
        let try_join = |id: String, hash: [u8; 32], now: u64| {
            let store = store.clone();
            async move { store.join(&id, hash, now, &identity("x", "hv-x")).await }
        };
        let refused = |r: Result<JoinToken, StoreError>| match r {
            Err(StoreError::TokenRefused(t)) => t.label(),
            other => panic!("expected a refusal, got {other:?}"),
        };
        let sid = second.id().to_string();
        assert_eq!(
            refused(try_join(sid.clone(), other.secret_sha256(), 500).await),
            "invalid_token"
        );
        assert_eq!(
            refused(try_join(other.id().into(), other.secret_sha256(), 500).await),
            "invalid_token"
        );
        assert_eq!(
            refused(try_join(sid.clone(), second.secret_sha256(), 10_000).await),
            "expired_token"
        );
        store.revoke_join_token(&sid).await.unwrap();
        assert_eq!(
            refused(try_join(sid.clone(), second.secret_sha256(), 500).await),
            "revoked_token"
        );
        assert!(matches!(
            store.revoke_join_token("nope00").await,
            Err(StoreError::UnknownToken(_))
        ));
        let second_now = store
            .list_join_tokens()
            .await
            .unwrap()
            .into_iter()
            .find(|t| t.id == sid)
            .unwrap();
        assert_eq!((second_now.uses, second_now.revoked), (0, true));
        assert!(store.identities_of("hv-x").await.unwrap().is_empty());

        // Nothing of the secret is in the file; its hash is.
        drop(store);
        let mut all = Vec::new();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            all.extend(std::fs::read(entry.unwrap().path()).unwrap());
        }
        let secret_part = secret.expose()[7..].to_string();
        assert!(!all.windows(16).any(|w| w == secret_part.as_bytes()));
    }

    #[tokio::test]
    async fn names_in_use_are_refused_until_removed_and_revoked() {
        use crate::tokens::TokenSecret;
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db"), sealer()).unwrap();
        let secret = TokenSecret::generate();
        let mut long = token(secret.id(), &secret, 10);
        long.expires_unix_ms = 10_000_000;
        store.create_join_token(&long).await.unwrap();
        let hash = secret.secret_sha256();
        store.register_hypervisor(&reg("a")).await.unwrap();
        let err = store
            .join(secret.id(), hash, 500, &identity("s1", "a"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("registered"), "{err}");

        // Joined, not connected yet: the name is taken too ...
        store
            .join(secret.id(), hash, 500, &identity("s2", "b"))
            .await
            .unwrap();
        let err = store
            .join(secret.id(), hash, 500, &identity("s3", "b"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not connected yet"), "{err}");
        // ... until it is revoked ...
        assert_eq!(store.revoke_identities("b", 600).await.unwrap(), 1);
        assert_eq!(store.revoke_identities("b", 700).await.unwrap(), 0);
        store
            .join(secret.id(), hash, 800, &identity("s5", "b"))
            .await
            .unwrap();
        // ... or its certificate expired (s5 ends at 1_000_000).
        store
            .join(secret.id(), hash, 2_000_000, &identity("s6", "b"))
            .await
            .unwrap();
        let b = store.identities_of("b").await.unwrap();
        assert_eq!(
            b.iter()
                .map(|i| (i.serial.as_str(), i.revoked_unix_ms))
                .collect::<Vec<_>>(),
            [("s2", Some(600)), ("s5", None), ("s6", None)]
        );
        // Failed joins used nothing: 3 of 10 uses.
        assert_eq!(store.list_join_tokens().await.unwrap()[0].uses, 3);
        // Recording is idempotent and keeps the first record.
        let mut seen = identity("s5", "b");
        seen.role = None;
        store.record_identity(&seen).await.unwrap();
        assert_eq!(
            store.get_identity("s5").await.unwrap().unwrap().role,
            Some(Role::Public)
        );
        assert_eq!(store.get_identity("zz").await.unwrap(), None);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        drop(SqliteStore::open(&path, sealer()).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = SqliteStore::open(&path, sealer()).err().unwrap();
        assert!(err.to_string().contains("newer coordinator"), "{err}");
    }
}
