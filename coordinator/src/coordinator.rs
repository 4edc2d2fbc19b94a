//! The coordinator process: wires the store, the index, the link CA, the
//! QUIC endpoint and the metrics endpoint together, and offers the
//! operations that change desired state.

use crate::cluster::render::Profile;
use crate::cluster::versions::VersionMatrix;
use crate::config::Config;
use crate::link_pki::{IssuedCert, LinkCa};
use crate::metrics::Metrics;
use crate::seal::Sealer;
use crate::state::index::{HypervisorView, Index};
use crate::state::Writer;
use crate::store::{PlacementChange, SqliteStore, Store, StoreError};
use crate::work::{KeyedLocks, Kick};
use anyhow::{Context, Result};
use oi_proto::model::Component;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("invalid component {id:?}: {why}")]
    InvalidComponent { id: String, why: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub(crate) struct Inner {
    /// For reads; writes the index mirrors go through `writer`.
    pub store: Arc<dyn Store>,
    /// Read-only outside `crate::state`.
    pub index: Arc<Index>,
    /// The one commit path of the store and the index.
    pub writer: Writer,
    pub metrics: Arc<Metrics>,
    pub ca: LinkCa,
    pub config: Config,
    pub next_conn_id: AtomicU64,
    /// Supported Kubernetes versions, with the image repository applied.
    pub matrix: VersionMatrix,
    pub profile: Profile,
    /// Orders the operations on one cluster (create, delete, scale, move,
    /// membership steps); other clusters never wait for them.
    pub cluster_locks: KeyedLocks,
    /// Wakes the cluster work loop.
    pub work_kick: Kick,
    /// Wakes the node sync (a node token changed).
    pub nodes_kick: Kick,
    /// A kube client per managed cluster (see `nodes::client`).
    pub(crate) cluster_clients:
        std::sync::Mutex<std::collections::HashMap<String, crate::nodes::client::ClusterClient>>,
    /// Clusters seen ready since this coordinator started (ready → degraded).
    pub ever_ready: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The last failed etcd membership step per cluster (for its Replicas
    /// condition); cleared when a pass completes.
    pub membership_errors: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// Deleted clusters not yet confirmed gone: the hypervisors that held
    /// their components at the delete (in memory; after a restart only
    /// what connected agents report counts).
    pub removals:
        std::sync::Mutex<std::collections::HashMap<String, std::collections::BTreeSet<String>>>,
    /// Per cluster: the endpoint it was bootstrapped at, or the last error.
    pub bootstrapped: std::sync::Mutex<std::collections::HashMap<String, Result<String, String>>>,
    /// Hypervisors being drained: the scheduler keeps no slot on them.
    pub draining: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Hypervisor removals being finished by a task here, or why the last
    /// one stopped. The intent itself is durable (the hypervisor record's
    /// `removing_unix_ms`); the work loop resumes recorded ones with no
    /// task.
    pub hypervisor_removals: std::sync::Mutex<std::collections::HashMap<String, HvRemoval>>,
    /// `HOST:PORT` of the admin API (joins) and of the link, as machines
    /// elsewhere reach them.
    pub endpoints: Endpoints,
}

/// A hypervisor removal that could not finish at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HvRemoval {
    /// Replicas are moving off; the removal finishes when they are gone.
    Moving,
    /// It stopped: why, and what to do.
    Failed(String),
}

/// Where joining machines and agents reach this coordinator.
#[derive(Clone, Debug)]
pub(crate) struct Endpoints {
    /// The admin API (`None` when it is disabled: no joins then).
    pub join: Option<String>,
    pub link: String,
}

/// `HOST:PORT`, with an IPv6 host in brackets.
pub(crate) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A handle on a running coordinator; cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    pub(crate) inner: Arc<Inner>,
}

/// A started coordinator with its listeners and tasks.
pub struct Running {
    pub coordinator: Coordinator,
    /// UDP address of the agent link.
    pub link_addr: SocketAddr,
    /// TCP address of `/metrics`, if enabled.
    pub metrics_addr: Option<SocketAddr>,
    /// TCP address of the administrative API, if enabled.
    pub api_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    link_task: JoinHandle<()>,
    http_task: Option<JoinHandle<Result<()>>>,
    api_task: Option<JoinHandle<Result<()>>>,
    work_task: JoinHandle<()>,
    bootstrap_task: JoinHandle<()>,
    nodes_task: JoinHandle<()>,
}

impl Running {
    /// Ordered, time-boxed shutdown: stop the administrative API (no new
    /// writes), stop placing pending clusters, close agent links with a
    /// "reconnect later" reason, then stop the metrics listener.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if let Some(api) = self.api_task {
            if tokio::time::timeout(Duration::from_secs(5), api)
                .await
                .is_err()
            {
                tracing::warn!("admin API did not stop within 5s");
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(7), self.work_task).await;
        self.bootstrap_task.abort();
        self.nodes_task.abort();
        if tokio::time::timeout(Duration::from_secs(10), self.link_task)
            .await
            .is_err()
        {
            tracing::warn!("link did not stop within 10s");
        }
        if let Some(http) = self.http_task {
            let _ = tokio::time::timeout(Duration::from_secs(2), http).await;
        }
    }

    /// Resolves when the link task ends on its own (it should not).
    pub async fn wait(&mut self) {
        let _ = (&mut self.link_task).await;
    }
}

impl Coordinator {
    /// Opens the embedded store under `config.data_dir` and starts.
    pub async fn start(config: Config) -> Result<Running> {
        oi_proto::fsutil::create_private_dir(&config.data_dir)?;
        let path = config.store_path();
        // A new store gets a new key; an existing one needs its key back.
        let sealer = Sealer::load_or_create(&config.kek_file, !path.exists())
            .context("load key-encryption key")?;
        let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path, sealer))
            .await
            .context("join store open")?
            .context("open store")?;
        Self::start_with_store(config, Arc::new(store)).await
    }

    pub async fn start_with_store(config: Config, store: Arc<dyn Store>) -> Result<Running> {
        let ca = LinkCa::load_or_create(&config.data_dir).context("load link CA")?;
        let hypervisors = store.list_hypervisors().await.context("load hypervisors")?;
        let components = store.list_components().await.context("load components")?;
        let clusters = store.list_clusters().await.context("load clusters")?;
        let metrics = Arc::new(Metrics::new());
        for h in &hypervisors {
            metrics.set_generation(&h.name, h.generation);
        }
        tracing::info!(
            hypervisors = hypervisors.len(),
            components = components.len(),
            epoch = %store.epoch(),
            "loaded desired state"
        );
        let index = Arc::new(Index::rebuild(store.epoch(), hypervisors, components));
        let writer = Writer::new(store.clone(), index.clone(), metrics.clone(), &clusters);

        let server = ca
            .issue_server(&config.server_names)
            .context("issue coordinator serving certificate")?;
        let identity = oi_proto::tls::Identity::from_pem(
            server.cert_pem.as_bytes(),
            server.key_pem.as_bytes(),
        )?;
        let ca_der = oi_proto::tls::parse_certs(ca.cert_pem().as_bytes())?;
        let server_config = oi_proto::tls::server_config(&identity, &ca_der)?;
        let endpoint = crate::link::endpoint::bind(
            server_config,
            config.listen,
            &config.data_dir,
            config.link_socket_buffer_bytes,
        )
        .await?;
        let link_addr = endpoint.local_addr().context("read link address")?;

        let (shutdown, shutdown_rx) = watch::channel(false);
        let (http_task, metrics_addr) = match config.metrics_listen {
            Some(addr) => {
                let listener = crate::http::bind(addr).await?;
                let bound = listener.local_addr().context("read metrics address")?;
                let task = tokio::spawn(crate::http::serve(
                    listener,
                    metrics.clone(),
                    shutdown_rx.clone(),
                ));
                (Some(task), Some(bound))
            }
            None => (None, None),
        };

        let api = match config.api_listen {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("bind admin API on tcp {addr}"))?;
                let bound = listener.local_addr().context("read admin API address")?;
                let conf = config.admin_conf_path();
                let tls =
                    crate::api::ApiTls::from_ca(&ca, &config.server_names)?.admin_conf_path(&conf);
                let admin = ca.issue_admin("admin").context("issue admin certificate")?;
                crate::api::write_admin_config(
                    &conf,
                    &crate::api::local_endpoint(bound),
                    &config.server_names[0],
                    ca.cert_pem(),
                    &admin,
                )?;
                Some((listener, tls, bound))
            }
            None => None,
        };

        let mut matrix = VersionMatrix::builtin();
        if let Some(repo) = &config.image_repository {
            matrix = matrix.with_image_repository(repo);
        }
        let pending_retry = config.pending_retry;
        let endpoints = Endpoints {
            join: api
                .as_ref()
                .map(|a| host_port(&config.advertise_address, a.2.port())),
            link: host_port(&config.advertise_address, link_addr.port()),
        };
        let inner = Arc::new(Inner {
            store,
            index,
            writer,
            metrics,
            ca,
            matrix,
            profile: config.profile,
            config,
            next_conn_id: AtomicU64::new(1),
            cluster_locks: KeyedLocks::default(),
            work_kick: Kick::default(),
            nodes_kick: Kick::default(),
            cluster_clients: Default::default(),
            ever_ready: Default::default(),
            membership_errors: Default::default(),
            removals: Default::default(),
            bootstrapped: Default::default(),
            draining: Default::default(),
            hypervisor_removals: Default::default(),
            endpoints,
        });
        let coordinator = Coordinator { inner };
        let link_task = tokio::spawn(crate::link::serve(
            endpoint,
            coordinator.inner.clone(),
            shutdown_rx.clone(),
        ));
        let work_task = tokio::spawn(crate::work::run(
            coordinator.clone(),
            pending_retry,
            shutdown_rx.clone(),
        ));
        let bootstrap_task = tokio::spawn(crate::bootstrap::run(
            coordinator.clone(),
            Duration::from_secs(2),
            shutdown_rx.clone(),
        ));
        let nodes_task = tokio::spawn(crate::nodes::run(
            coordinator.clone(),
            Duration::from_secs(2),
            shutdown_rx.clone(),
        ));
        let api_addr = api.as_ref().map(|a| a.2);
        let join = crate::api::join::JoinSettings {
            limits: coordinator.inner.config.join_limits,
            metrics: Some(coordinator.inner.metrics.clone()),
        };
        let api_task = api.map(|(listener, tls, _)| {
            tokio::spawn(crate::api::serve_with(
                listener,
                tls,
                Arc::new(coordinator.clone()),
                join,
                shutdown_rx,
            ))
        });
        tracing::info!(%link_addr, ?metrics_addr, ?api_addr, "coordinator started");
        crate::crash_point::warn_if_armed();
        Ok(Running {
            coordinator,
            link_addr,
            metrics_addr,
            api_addr,
            shutdown,
            link_task,
            http_task,
            api_task,
            work_task,
            bootstrap_task,
            nodes_task,
        })
    }

    /// Applies placement changes durably, then tells the affected agents.
    /// Returns the new generation of every hypervisor that changed.
    pub async fn write_placement(
        &self,
        changes: Vec<PlacementChange>,
    ) -> Result<BTreeMap<String, u64>, CoordinatorError> {
        for change in &changes {
            if let PlacementChange::Upsert { component, .. } = change {
                validate_component(component)?;
            }
        }
        Ok(self
            .inner
            .writer
            .run(move |tx| async move { tx.write_placement(&changes).await })
            .await?)
    }

    /// Places (or replaces) one component on a hypervisor.
    pub async fn upsert_component(
        &self,
        hypervisor: &str,
        component: Component,
    ) -> Result<BTreeMap<String, u64>, CoordinatorError> {
        self.write_placement(vec![PlacementChange::Upsert {
            hypervisor: hypervisor.to_string(),
            component,
        }])
        .await
    }

    pub async fn remove_component(
        &self,
        component_id: &str,
    ) -> Result<BTreeMap<String, u64>, CoordinatorError> {
        self.write_placement(vec![PlacementChange::Remove {
            component_id: component_id.to_string(),
        }])
        .await
    }

    pub async fn set_cordoned(
        &self,
        hypervisor: &str,
        cordoned: bool,
    ) -> Result<(), CoordinatorError> {
        let name = hypervisor.to_string();
        Ok(self
            .inner
            .writer
            .run(move |tx| async move { tx.set_cordoned(&name, cordoned).await })
            .await?)
    }

    pub fn hypervisor(&self, name: &str) -> Option<HypervisorView> {
        self.inner.index.view(name)
    }

    pub fn hypervisors(&self) -> Vec<HypervisorView> {
        self.inner.index.views()
    }

    pub fn epoch(&self) -> &str {
        self.inner.index.epoch()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The link CA certificate agents pin.
    pub fn ca_pem(&self) -> &str {
        self.inner.ca.cert_pem()
    }

    /// Issues a client certificate (and key) for hypervisor `name`.
    pub fn issue_agent_identity(&self, name: &str) -> Result<IssuedCert> {
        self.inner.ca.issue_agent(name)
    }
}

/// A component must survive the trip to the agent: the same validation the
/// agent applies when it decodes the placement.
pub(crate) fn validate_component(c: &Component) -> Result<(), CoordinatorError> {
    oi_proto::model::Component::try_from(oi_proto::pb::Component::from(c.clone()))
        .map(|_| ())
        .map_err(|e| CoordinatorError::InvalidComponent {
            id: c.id.clone(),
            why: e.to_string(),
        })
}
