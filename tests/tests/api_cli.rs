//! The admin API and the `oi` CLI end to end: a real API server (tonic over
//! TLS, certificates from a real CA) on 127.0.0.1, backed by an in-memory
//! fake of `Operations` (the real one is the coordinator's and has its own
//! tests), driven through `oi_cli::run_with` in-process.
//!
//! In-process rather than the built `oi` binary: Cargo gives integration
//! tests the path of their own package's binaries only, and `oi` belongs to
//! `oi-coordinator`; calling the library lets these tests capture output and
//! exit codes without depending on build order. The binary's own wiring
//! (process exit codes, one-line errors) is checked in
//! `coordinator/tests/oi_binary.rs`.

use async_trait::async_trait;
use oi_cli::{run_with, Io};
use oi_coordinator::api::{self, ApiTls};
use oi_coordinator::cluster::model::ClusterSpec;
use oi_coordinator::link_pki::{IssuedCert, LinkCa};
use oi_coordinator::operations::*;
use oi_proto::model::{Phase, Role};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

const VERSION: &str = "1.37.2";

// ------------------------------------------------------------------ fake --

/// Clusters in memory. A cluster created through `create_cluster` moves one
/// step towards ready each time it is read (pending -> scheduled ->
/// components starting -> running -> ready), unless its name starts with
/// "stuck", which stays pending.
#[derive(Default)]
struct Fake {
    clusters: Mutex<BTreeMap<String, (ClusterView, u32)>>,
    /// Deleted clusters: how many more looks still find a leftover.
    removing: Mutex<BTreeMap<String, u32>>,
    node_tokens: Mutex<Vec<NodeTokenView>>,
}

fn component(cluster: &str, id: &str, phase: Phase) -> ComponentView {
    ComponentView {
        id: id.into(),
        cluster: cluster.into(),
        hypervisor: "hv-private-1".into(),
        phase,
        ready: phase == Phase::Running,
        restarts: 0,
        reason: String::new(),
        message: String::new(),
    }
}

fn replicas(status: bool) -> Condition {
    Condition {
        kind: "Replicas".into(),
        status,
        reason: if status {
            "AsDeclared"
        } else {
            "Reconfiguring"
        }
        .into(),
        message: String::new(),
    }
}

fn scheduled(status: bool) -> Condition {
    Condition {
        kind: "Scheduled".into(),
        status,
        reason: if status { "Placed" } else { "Waiting" }.into(),
        message: String::new(),
    }
}

/// The cluster at step `step` of its way to ready.
fn at_step(spec: ClusterSpec, step: u32) -> ClusterView {
    let name = spec.name.clone();
    let (phase, components, endpoint) = match step {
        0 => (ClusterPhase::Pending, vec![], ""),
        1 => (
            ClusterPhase::Provisioning,
            vec![component(&name, "etcd-0", Phase::Pending)],
            "",
        ),
        2 => (
            ClusterPhase::Provisioning,
            vec![component(&name, "etcd-0", Phase::Running)],
            "",
        ),
        _ => (
            ClusterPhase::Ready,
            vec![
                component(&name, "etcd-0", Phase::Running),
                component(&name, "apiserver-0", Phase::Running),
            ],
            "https://192.0.2.10:30000",
        ),
    };
    ClusterView {
        spec,
        status: ClusterStatus {
            phase,
            endpoint: endpoint.into(),
            conditions: if step == 0 {
                vec![scheduled(false)]
            } else {
                vec![scheduled(true), replicas(step >= 3)]
            },
            components,
        },
    }
}

fn known_hypervisor(name: &str) -> Result<(), OpError> {
    match name {
        "hv-private-1" | "hv-public-1" => Ok(()),
        _ => Err(OpError::NotFound(format!(
            "hypervisor {name:?} not found; `oi hypervisor list` shows the hypervisors"
        ))),
    }
}

fn invalid(spec: &ClusterSpec) -> Result<(), OpError> {
    spec.validate(&[VERSION])
        .map_err(|e| OpError::Invalid(e.to_string()))
}

fn not_found(name: &str) -> OpError {
    OpError::NotFound(format!(
        "cluster {name:?} not found; `oi cluster list` lists clusters"
    ))
}

#[async_trait]
impl Operations for Fake {
    async fn create_cluster(&self, spec: ClusterSpec) -> Result<ClusterView, OpError> {
        invalid(&spec)?;
        let mut clusters = self.clusters.lock().unwrap();
        if clusters.contains_key(&spec.name) {
            return Err(OpError::AlreadyExists(format!(
                "cluster {:?} already exists; pick another name or use `oi apply`",
                spec.name
            )));
        }
        let view = at_step(spec.clone(), 0);
        clusters.insert(spec.name.clone(), (view.clone(), 0));
        Ok(view)
    }

    async fn apply_cluster(
        &self,
        spec: ClusterSpec,
    ) -> Result<(ClusterView, ApplyOutcome), OpError> {
        invalid(&spec)?;
        let mut clusters = self.clusters.lock().unwrap();
        let outcome = match clusters.get(&spec.name) {
            None => ApplyOutcome::Created,
            Some((v, _)) if v.spec == spec => ApplyOutcome::Unchanged,
            Some(_) => ApplyOutcome::Updated,
        };
        // An update (a scale) goes back through reconfiguring.
        let step = match (outcome, clusters.get(&spec.name)) {
            (ApplyOutcome::Updated, _) => 1,
            (_, found) => found.map_or(0, |(_, s)| *s),
        };
        let view = at_step(spec.clone(), step);
        clusters.insert(spec.name.clone(), (view.clone(), step));
        Ok((view, outcome))
    }

    async fn get_cluster(&self, name: &str) -> Result<ClusterView, OpError> {
        let mut clusters = self.clusters.lock().unwrap();
        let (view, step) = clusters.get_mut(name).ok_or_else(|| not_found(name))?;
        let current = view.clone();
        if !name.starts_with("stuck") {
            *step += 1;
            *view = at_step(view.spec.clone(), *step);
        }
        Ok(current)
    }

    async fn list_clusters(&self) -> Result<Vec<ClusterView>, OpError> {
        let clusters = self.clusters.lock().unwrap();
        Ok(clusters.values().map(|(v, _)| v.clone()).collect())
    }

    async fn delete_cluster(&self, name: &str) -> Result<(), OpError> {
        let mut clusters = self.clusters.lock().unwrap();
        clusters.remove(name).ok_or_else(|| not_found(name))?;
        self.removing.lock().unwrap().insert(name.to_string(), 2);
        Ok(())
    }

    async fn cluster_leftovers(&self, name: &str) -> Result<Vec<Leftover>, OpError> {
        let mut removing = self.removing.lock().unwrap();
        match removing.get_mut(name) {
            Some(n) if *n > 0 => {
                *n -= 1;
                Ok(vec![Leftover {
                    hypervisor: "hv-private-1".into(),
                    components: vec![format!("{name}/etcd-0")],
                    reason: "its agent has not removed them yet".into(),
                }])
            }
            _ => Ok(Vec::new()),
        }
    }

    async fn kubeconfig(&self, name: &str) -> Result<String, OpError> {
        let clusters = self.clusters.lock().unwrap();
        clusters.get(name).ok_or_else(|| not_found(name))?;
        Ok(format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: {name}\n"
        ))
    }

    async fn list_hypervisors(&self) -> Result<Vec<HypervisorSummary>, OpError> {
        let hv = |name: &str, role, connected| HypervisorSummary {
            name: name.into(),
            role,
            address: "192.0.2.10".into(),
            connected,
            cordoned: false,
            port_range: "30000-30999".into(),
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            cpu_millis_requested: 500,
            memory_bytes_requested: 1 << 30,
            components: 2,
            generation: 3,
            last_seen_unix_ms: connected.then_some(1_700_000_000_000),
            not_adopted: if connected {
                vec![]
            } else {
                vec!["old/etcd-0".into(), "old/ingress".into()]
            },
            removal: String::new(),
        };
        Ok(vec![
            hv("hv-private-1", Role::Private, true),
            hv("hv-public-1", Role::Public, false),
        ])
    }

    async fn list_components(&self, cluster: Option<&str>) -> Result<Vec<ComponentView>, OpError> {
        let clusters = self.clusters.lock().unwrap();
        if let Some(name) = cluster {
            clusters.get(name).ok_or_else(|| not_found(name))?;
        }
        Ok(clusters
            .values()
            .filter(|(v, _)| cluster.is_none_or(|c| c == v.spec.name))
            .flat_map(|(v, _)| v.status.components.clone())
            .collect())
    }

    async fn cordon_hypervisor(&self, name: &str, _cordoned: bool) -> Result<(), OpError> {
        known_hypervisor(name)
    }

    async fn drain_hypervisor(&self, name: &str) -> Result<DrainOutcome, OpError> {
        known_hypervisor(name)?;
        if name == "hv-public-1" {
            return Err(OpError::FailedPrecondition(
                "hypervisor hv-public-1 is cordoned, but nothing was moved: cluster c: no room"
                    .into(),
            ));
        }
        Ok(DrainOutcome {
            rescheduled: vec!["a".into()],
            pending: vec![],
        })
    }

    async fn remove_hypervisor(&self, name: &str) -> Result<RemoveOutcome, OpError> {
        known_hypervisor(name)?;
        Ok(RemoveOutcome {
            drained: DrainOutcome {
                rescheduled: vec!["a".into()],
                pending: vec!["b".into()],
            },
            revoked_certificates: 2,
            disconnected: true,
            done: true,
        })
    }

    async fn create_join_token(
        &self,
        role: Role,
        ttl: Duration,
        max_uses: u32,
    ) -> Result<CreatedToken, OpError> {
        Ok(CreatedToken {
            view: JoinTokenView {
                id: "abcdef".into(),
                role,
                created_unix_ms: 0,
                expires_unix_ms: ttl.as_millis() as u64,
                max_uses,
                uses: 0,
                state: oi_coordinator::tokens::TokenState::Active,
            },
            token: "abcdef.0123456789abcdef".into(),
            join_address: "192.0.2.1:7444".into(),
            ca_cert_hash: format!("sha256:{}", "0".repeat(64)),
        })
    }

    async fn list_join_tokens(&self) -> Result<Vec<JoinTokenView>, OpError> {
        Ok(vec![])
    }

    async fn revoke_join_token(&self, id: &str) -> Result<(), OpError> {
        Err(OpError::NotFound(format!("join token {id} not found")))
    }

    async fn join_hypervisor(&self, _req: JoinRequest) -> Result<Joined, OpError> {
        Err(OpError::Unauthenticated(
            "the join token is not valid".into(),
        ))
    }

    async fn create_node_token(
        &self,
        cluster: &str,
        ttl: Duration,
        description: &str,
    ) -> Result<CreatedNodeToken, OpError> {
        if !self.clusters.lock().unwrap().contains_key(cluster) {
            return Err(not_found(cluster));
        }
        let view = NodeTokenView {
            cluster: cluster.into(),
            id: "abcdef".into(),
            description: description.into(),
            created_unix_ms: 0,
            expires_unix_ms: ttl.as_millis() as u64,
            state: oi_coordinator::tokens::TokenState::Active,
        };
        self.node_tokens.lock().unwrap().push(view.clone());
        Ok(CreatedNodeToken {
            view,
            token: "abcdef.0123456789abcdef".into(),
            endpoint: "192.0.2.10:30000".into(),
            ca_cert_hash: format!("sha256:{}", "1".repeat(64)),
        })
    }

    async fn list_node_tokens(&self, cluster: Option<&str>) -> Result<Vec<NodeTokenView>, OpError> {
        let tokens = self.node_tokens.lock().unwrap();
        Ok(tokens
            .iter()
            .filter(|t| cluster.is_none_or(|c| c == t.cluster))
            .cloned()
            .collect())
    }

    async fn list_nodes(&self, cluster: &str) -> Result<Vec<NodeView>, OpError> {
        if !self.clusters.lock().unwrap().contains_key(cluster) {
            return Err(not_found(cluster));
        }
        Ok(vec![NodeView {
            name: "w1".into(),
            ready: true,
            kubelet_version: "v1.37.2".into(),
            addresses: vec!["InternalIP=10.0.0.5".into()],
            vpn_address: String::new(),
            created_unix_ms: 0,
            token_id: "abcdef".into(),
        }])
    }

    async fn remove_node(&self, cluster: &str, name: &str) -> Result<RemovedNode, OpError> {
        if name != "w1" {
            return Err(OpError::NotFound(format!(
                "cluster {cluster:?} has no node {name:?}"
            )));
        }
        Ok(RemovedNode {
            revoked_tokens: vec!["abcdef".into()],
        })
    }

    async fn revoke_node_token(&self, cluster: &str, id: &str) -> Result<(), OpError> {
        let mut tokens = self.node_tokens.lock().unwrap();
        match tokens
            .iter_mut()
            .find(|t| t.cluster == cluster && t.id == id)
        {
            Some(t) => {
                t.state = oi_coordinator::tokens::TokenState::Revoked;
                Ok(())
            }
            None => Err(OpError::NotFound(format!(
                "cluster {cluster:?} has no node token {id:?}"
            ))),
        }
    }

    fn kubernetes_versions(&self) -> Vec<VersionInfo> {
        vec![VersionInfo {
            kubernetes_version: VERSION.into(),
            default: true,
            etcd_image: "etcd:3.7.0-0".into(),
            apiserver_image: "kube-apiserver:v1.37.2".into(),
            controller_manager_image: "kube-controller-manager:v1.37.2".into(),
            scheduler_image: "kube-scheduler:v1.37.2".into(),
            haproxy_image: "haproxy:2.6".into(),
            coredns_image: "coredns:v1.14.6".into(),
        }]
    }
}

// --------------------------------------------------------------- harness --

/// An API server on 127.0.0.1 and an admin.conf for it.
struct Api {
    dir: tempfile::TempDir,
    ca: LinkCa,
    endpoint: String,
    conf: PathBuf,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

struct Run {
    code: u8,
    stdout: String,
    stderr: String,
}

impl Api {
    async fn start() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("admin.conf");
        let ca = LinkCa::generate().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = api::local_endpoint(listener.local_addr().unwrap());
        let tls = ApiTls::from_ca(&ca, &["localhost".into(), "127.0.0.1".into()])
            .unwrap()
            .admin_conf_path(&conf);
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(api::serve(listener, tls, Arc::new(Fake::default()), rx));
        let admin = ca.issue_admin("admin").unwrap();
        api::write_admin_config(&conf, &endpoint, "localhost", ca.cert_pem(), &admin).unwrap();
        Api {
            dir,
            ca,
            endpoint,
            conf,
            shutdown,
            task,
        }
    }

    /// An admin.conf for this API with another client identity.
    fn conf_with(&self, file: &str, issued: &IssuedCert) -> PathBuf {
        let path = self.dir.path().join(file);
        api::write_admin_config(
            &path,
            &self.endpoint,
            "localhost",
            self.ca.cert_pem(),
            issued,
        )
        .unwrap();
        path
    }

    async fn oi(&self, args: &[&str]) -> Run {
        self.oi_with(&self.conf, args, "").await
    }

    async fn oi_with(&self, conf: &Path, args: &[&str], stdin: &str) -> Run {
        let mut argv = vec![
            "oi".to_string(),
            "--config".into(),
            conf.display().to_string(),
            "--poll-interval-ms".into(),
            "10".into(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        let (mut input, mut out, mut err) = (stdin.as_bytes(), Vec::new(), Vec::new());
        let code = run_with(
            argv,
            Io {
                stdin: &mut input,
                stdout: &mut out,
                stderr: &mut err,
            },
        )
        .await;
        Run {
            code,
            stdout: String::from_utf8(out).unwrap(),
            stderr: String::from_utf8(err).unwrap(),
        }
    }
}

impl Run {
    #[track_caller]
    fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        &self.stdout
    }

    /// Asserts the exit code and a one-line `error: ` message containing
    /// `needle`.
    #[track_caller]
    fn fails(&self, code: u8, needle: &str) {
        assert_eq!(
            self.code, code,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert!(self.stderr.starts_with("error: "), "{}", self.stderr);
        assert_eq!(self.stderr.lines().count(), 1, "{}", self.stderr);
        assert!(
            self.stderr.contains(needle),
            "want {needle:?} in {}",
            self.stderr
        );
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn yaml(text: &str) -> serde_json::Value {
    yaml_serde::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

// ----------------------------------------------------------------- tests --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_round_trip() {
    let api = Api::start().await;
    let out = api
        .oi(&[
            "cluster",
            "create",
            "prod",
            "--kubernetes-version",
            VERSION,
            "--replicas",
            "3",
            "--api-server-san",
            "api.example.com",
            "--api-server-san",
            "192.0.2.7",
        ])
        .await;
    assert_eq!(out.ok(), "cluster/prod created\n");

    let got = json(api.oi(&["cluster", "get", "prod", "-o", "json"]).await.ok());
    assert_eq!(got["spec"]["name"], "prod");
    assert_eq!(got["spec"]["replicas"], 3);
    assert_eq!(got["spec"]["serviceCidr"], "10.96.0.0/12");
    assert_eq!(
        got["spec"]["apiServerExtraSans"],
        serde_json::json!(["api.example.com", "192.0.2.7"])
    );
    assert_eq!(got["status"]["phase"], "pending");
    assert_eq!(got["status"]["conditions"][0]["type"], "Scheduled");

    // Each read moved the fake on: now provisioning with one component.
    let got = yaml(api.oi(&["cluster", "get", "prod", "-o", "yaml"]).await.ok());
    assert_eq!(got["status"]["phase"], "provisioning");
    assert_eq!(got["status"]["components"][0]["id"], "etcd-0");
    assert_eq!(got["status"]["components"][0]["phase"], "pending");

    let table = api.oi(&["cluster", "get", "prod"]).await;
    let table = table.ok();
    assert!(table.contains("Name:") && table.contains("prod"), "{table}");
    assert!(
        table.contains("COMPONENT") && table.contains("etcd-0"),
        "{table}"
    );

    api.oi(&["cluster", "create", "dev", "--kubernetes-version", VERSION])
        .await
        .ok();
    let list = api.oi(&["cluster", "list"]).await;
    let lines: Vec<&str> = list.ok().lines().collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].starts_with("NAME") && lines[0].contains("PHASE"));
    assert!(lines[1].starts_with("dev ") && lines[2].starts_with("prod "));
    // Columns are aligned: PHASE starts at the same offset on every line.
    let col = lines[0].find("PHASE").unwrap();
    assert!(lines[1][col..].starts_with("pending"), "{lines:?}");

    let listed = json(api.oi(&["cluster", "list", "-o", "json"]).await.ok());
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let listed = yaml(api.oi(&["cluster", "list", "-o", "yaml"]).await.ok());
    assert_eq!(listed[1]["spec"]["name"], "prod");

    let kc = api.oi(&["cluster", "kubeconfig", "prod"]).await;
    assert!(kc.ok().contains("current-context: prod"));
    let file = api.dir.path().join("out/prod.kubeconfig");
    api.oi(&[
        "cluster",
        "kubeconfig",
        "prod",
        "-f",
        file.to_str().unwrap(),
    ])
    .await
    .ok();
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains("kind: Config"));

    assert_eq!(
        api.oi(&["cluster", "delete", "prod"]).await.ok(),
        "cluster/prod deleted\n"
    );
    api.oi(&["cluster", "get", "prod"])
        .await
        .fails(3, "cluster \"prod\" not found");
    let names: Vec<String> = json(api.oi(&["cluster", "list", "-o", "json"]).await.ok())
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["spec"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["dev"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_map_to_exit_codes() {
    let api = Api::start().await;
    let create = ["cluster", "create", "a", "--kubernetes-version", VERSION];
    api.oi(&create).await.ok();
    api.oi(&create).await.fails(4, "already exists");
    api.oi(&["cluster", "create", "b", "--kubernetes-version", "1.99.0"])
        .await
        .fails(5, "oi version --kubernetes");
    api.oi(&[
        "cluster",
        "create",
        "Bad_Name",
        "--kubernetes-version",
        VERSION,
    ])
    .await
    .fails(5, "DNS-1123");
    // An explicit 0 reaches validation over the wire (it used to become 1).
    for n in ["0", "8"] {
        api.oi(&[
            "cluster",
            "create",
            "c",
            "--kubernetes-version",
            VERSION,
            "--replicas",
            n,
        ])
        .await
        .fails(5, "use 1 to 7");
    }
    api.oi(&["cluster", "get", "c"]).await.fails(3, "not found");
    api.oi(&["cluster", "delete", "nope"])
        .await
        .fails(3, "not found");
    api.oi(&["cluster", "kubeconfig", "nope"])
        .await
        .fails(3, "not found");
    api.oi(&["component", "list", "--cluster", "nope"])
        .await
        .fails(3, "not found");

    // Without --kubernetes-version the CLI sends none and the coordinator
    // picks its default; this fake backend has none, so its message shows.
    api.oi(&["cluster", "create", "x"])
        .await
        .fails(5, "oi version --kubernetes");
    // Usage errors are clap's (exit 2), not ours.
    let usage = api.oi(&["cluster", "create"]).await;
    assert_eq!(usage.code, 2, "{}", usage.stderr);
    let usage = api.oi(&["cluster", "list", "-o", "xml"]).await;
    assert_eq!(usage.code, 2);

    // Nothing listens on port 1.
    let mut argv = vec!["--endpoint", "https://127.0.0.1:1", "cluster", "list"];
    api.oi(&argv)
        .await
        .fails(6, "cannot reach the coordinator at https://127.0.0.1:1");
    argv[1] = "127.0.0.1:1";
    api.oi(&argv).await.fails(6, "https://127.0.0.1:1");

    api.oi_with(
        Path::new("/nonexistent/admin.conf"),
        &["cluster", "list"],
        "",
    )
    .await
    .fails(1, "/nonexistent/admin.conf");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_are_let_in() {
    let api = Api::start().await;
    let conf = api.conf.display().to_string();

    // No client certificate: UNAUTHENTICATED, pointing at admin.conf.
    let anonymous = api.dir.path().join("anonymous.conf");
    let text = std::fs::read_to_string(&api.conf).unwrap();
    let text: String = {
        let mut v: toml::Table = toml::from_str(&text).unwrap();
        v.remove("cert_pem");
        v.remove("key_pem");
        toml::to_string(&v).unwrap()
    };
    oi_proto::fsutil::write_atomic(&anonymous, text.as_bytes(), 0o600).unwrap();
    api.oi_with(&anonymous, &["cluster", "list"], "")
        .await
        .fails(8, &format!("no client certificate: the admin API needs an admin certificate; use the admin credentials the coordinator wrote to {conf}"));

    // A hypervisor's certificate from the same CA: PERMISSION_DENIED.
    let agent = api.conf_with("agent.conf", &api.ca.issue_agent("hv-1").unwrap());
    api.oi_with(&agent, &["hypervisor", "list"], "")
        .await
        .fails(
            8,
            "certificate \"hv-1\" (organization oneinfra:hypervisors) is not an admin's",
        );

    // A certificate from another CA fails TLS: a transport failure (6)
    // whose message says what to check.
    let foreign = LinkCa::generate().unwrap().issue_admin("admin").unwrap();
    let foreign = api.conf_with("foreign.conf", &foreign);
    api.oi_with(&foreign, &["cluster", "list"], "")
        .await
        .fails(6, "the connection to the coordinator failed");

    // The gRPC codes themselves, with a plain tonic client.
    for (identity, code) in [
        (None, tonic::Code::Unauthenticated),
        (
            Some(api.ca.issue_agent("hv-1").unwrap()),
            tonic::Code::PermissionDenied,
        ),
        (Some(api.ca.issue_admin("root").unwrap()), tonic::Code::Ok),
    ] {
        let mut tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(api.ca.cert_pem()))
            .domain_name("localhost");
        if let Some(id) = identity {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                id.cert_pem,
                id.key_pem,
            ));
        }
        let channel = tonic::transport::Endpoint::from_shared(api.endpoint.clone())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let got = oi_proto::api::info_client::InfoClient::new(channel)
            .versions(oi_proto::api::VersionsRequest {})
            .await
            .map(|_| tonic::Code::Ok)
            .unwrap_or_else(|s| s.code());
        assert_eq!(got, code);
    }

    // A config others can read is refused before anything is sent.
    std::fs::set_permissions(&api.conf, std::fs::Permissions::from_mode(0o644)).unwrap();
    api.oi(&["cluster", "list"]).await.fails(1, "chmod 600");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_creates_updates_and_keeps() {
    let api = Api::start().await;
    let file = api.dir.path().join("clusters.yaml");
    let two = format!(
        "name: one\nkubernetesVersion: {VERSION}\n---\nname: two\nkubernetesVersion: {VERSION}\nreplicas: 3\n"
    );
    std::fs::write(&file, &two).unwrap();
    let f = file.to_str().unwrap();
    assert_eq!(
        api.oi(&["apply", "-f", f]).await.ok(),
        "cluster/one created\ncluster/two created\n"
    );
    assert_eq!(
        api.oi(&["apply", "-f", f]).await.ok(),
        "cluster/one unchanged\ncluster/two unchanged\n"
    );
    let json_doc = format!(r#"{{"name": "two", "kubernetesVersion": "{VERSION}", "replicas": 5}}"#);
    assert_eq!(
        api.oi_with(&api.conf, &["apply", "-f", "-"], &json_doc)
            .await
            .ok(),
        "cluster/two updated\n"
    );
    let two = json(api.oi(&["cluster", "get", "two", "-o", "json"]).await.ok());
    assert_eq!(two["spec"]["replicas"], 5);

    // A bad document applies nothing, even the good one before it.
    std::fs::write(
        &file,
        "name: three\nkubernetesVersion: 1.37.2\n---\nname: four\nbogus: 1\n",
    )
    .unwrap();
    api.oi(&["apply", "-f", f]).await.fails(5, "document 2");
    api.oi(&["cluster", "get", "three"])
        .await
        .fails(3, "not found");
    // The coordinator's refusal of a spec names the cluster.
    std::fs::write(&file, "name: five\nkubernetesVersion: 9.9.9\n").unwrap();
    api.oi(&["apply", "-f", f])
        .await
        .fails(5, "apply cluster five:");
    api.oi(&["apply", "-f", "/nonexistent.yaml"])
        .await
        .fails(5, "/nonexistent.yaml");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_changes_replicas_and_waits_for_them() {
    let api = Api::start().await;
    api.oi(&["cluster", "create", "s", "--kubernetes-version", VERSION])
        .await
        .ok();
    let run = api
        .oi(&[
            "cluster",
            "scale",
            "s",
            "--replicas",
            "3",
            "--wait",
            "--timeout",
            "20s",
        ])
        .await;
    let out = run.ok();
    assert!(
        out.starts_with("cluster/s updated (3 replica(s))\n"),
        "{out}"
    );
    assert!(out.contains("  Replicas: False (Reconfiguring)\n"), "{out}");
    assert!(
        out.ends_with(
            "cluster s: ready\n  Replicas: True (AsDeclared)\n  \
             apiserver-0 on hv-private-1: running, ready\ncluster s runs 3 replica(s)\n"
        ),
        "{out}"
    );
    let s = json(api.oi(&["cluster", "get", "s", "-o", "json"]).await.ok());
    assert_eq!(s["spec"]["replicas"], 3);
    assert_eq!(s["spec"]["kubernetesVersion"], VERSION);
    // The same count again changes nothing.
    assert_eq!(
        api.oi(&["cluster", "scale", "s", "--replicas", "3"])
            .await
            .ok(),
        "cluster/s unchanged (3 replica(s))\n"
    );
    api.oi(&["cluster", "scale", "nope", "--replicas", "3"])
        .await
        .fails(3, "not found");
    api.oi(&["cluster", "scale", "s", "--replicas", "9"])
        .await
        .fails(5, "replicas");
    let s = json(api.oi(&["cluster", "get", "s", "-o", "json"]).await.ok());
    assert_eq!(s["spec"]["replicas"], 3, "a refused scale changes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_shows_progress_until_ready() {
    let api = Api::start().await;
    let run = api
        .oi(&[
            "cluster",
            "create",
            "w",
            "--kubernetes-version",
            VERSION,
            "--wait",
            "--timeout",
            "20s",
        ])
        .await;
    let want = "\
cluster/w created
cluster w: pending
  Scheduled: False (Waiting)
cluster w: provisioning
  Scheduled: True (Placed)
  Replicas: False (Reconfiguring)
  etcd-0 on hv-private-1: pending
  etcd-0 on hv-private-1: running, ready
cluster w: ready
  Replicas: True (AsDeclared)
  apiserver-0 on hv-private-1: running, ready
cluster w is ready at https://192.0.2.10:30000
next: oi cluster kubeconfig w > w.kubeconfig
";
    assert_eq!(run.ok(), want);

    let run = api
        .oi(&[
            "cluster",
            "create",
            "stuck-1",
            "--kubernetes-version",
            VERSION,
            "--wait",
            "--timeout",
            "300ms",
        ])
        .await;
    run.fails(
        7,
        "timed out after 300ms waiting for cluster stuck-1 to be ready (phase pending)",
    );
    assert!(
        run.stdout.contains("cluster stuck-1: pending"),
        "{}",
        run.stdout
    );

    let run = api
        .oi(&["cluster", "delete", "w", "--wait", "--timeout", "5s"])
        .await;
    assert_eq!(
        run.ok(),
        "cluster/w deleted\ncluster w: removing from 1 hypervisor(s)\n  hv-private-1: w/etcd-0 \
         (its agent has not removed them yet)\ncluster w removed from every hypervisor\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_and_versions() {
    let api = Api::start().await;
    let hv = api.oi(&["hypervisor", "list"]).await;
    let lines: Vec<&str> = hv.ok().lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0].starts_with("NAME") && lines[0].contains("LAST SEEN"));
    assert!(lines[0].contains("NOT ADOPTED"), "{lines:?}");
    assert!(
        hv.stderr.contains(
            "hv-public-1 runs 2 component(s) this store does not place (not adopted): \
             old/etcd-0, old/ingress"
        ) && hv.stderr.contains("oi-agent release-held --all"),
        "{}",
        hv.stderr
    );
    assert!(lines[1].starts_with("hv-private-1") && lines[1].contains("500m/4000m"));
    assert!(
        lines[2].contains("1Gi/8Gi") && lines[2].ends_with("never"),
        "{lines:?}"
    );
    let hv = json(api.oi(&["hypervisor", "list", "-o", "json"]).await.ok());
    assert_eq!(hv[0]["role"], "private");
    assert_eq!(hv[0]["lastSeenUnixMs"], 1_700_000_000_000u64);
    assert_eq!(hv[1]["lastSeenUnixMs"], serde_json::Value::Null);

    api.oi(&["cluster", "create", "c", "--kubernetes-version", VERSION])
        .await
        .ok();
    api.oi(&["cluster", "get", "c"]).await.ok(); // moves it to step 1
    let comps = yaml(
        api.oi(&["component", "list", "--cluster", "c", "-o", "yaml"])
            .await
            .ok(),
    );
    assert_eq!(comps[0]["id"], "etcd-0");
    assert_eq!(comps[0]["cluster"], "c");
    let table = api.oi(&["component", "list"]).await;
    assert!(
        table.ok().starts_with("COMPONENT  CLUSTER  HYPERVISOR"),
        "{}",
        table.stdout
    );

    let v = api.oi(&["version"]).await;
    assert!(v.ok().starts_with("oi "), "{}", v.stdout);
    // Without --kubernetes no connection is needed.
    api.oi_with(Path::new("/nonexistent"), &["version"], "")
        .await
        .ok();
    let v = json(
        api.oi(&["version", "--kubernetes", "-o", "json"])
            .await
            .ok(),
    );
    assert_eq!(v["client"]["linkProtocol"], oi_proto::PROTOCOL_VERSION);
    assert_eq!(
        v["coordinator"]["kubernetes"][0]["kubernetesVersion"],
        VERSION
    );
    assert_eq!(
        v["coordinator"]["kubernetes"][0]["etcdImage"],
        "etcd:3.7.0-0"
    );
    let v = api.oi(&["version", "--kubernetes"]).await;
    assert!(v.ok().contains("KUBERNETES") && v.stdout.contains("haproxy:2.6"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hypervisor_lifecycle_and_tokens() {
    let api = Api::start().await;
    let out = api.oi(&["hypervisor", "cordon", "hv-private-1"]).await;
    assert!(out.ok().contains("hypervisor/hv-private-1 cordoned"));
    api.oi(&["hypervisor", "uncordon", "hv-private-1"])
        .await
        .ok();
    for verb in ["cordon", "uncordon", "drain", "remove"] {
        api.oi(&["hypervisor", verb, "nope"])
            .await
            .fails(3, "oi hypervisor list");
    }
    let out = api.oi(&["hypervisor", "drain", "hv-private-1"]).await;
    assert!(out.ok().contains("shows progress): a"), "{}", out.stdout);
    api.oi(&["hypervisor", "drain", "hv-public-1"])
        .await
        .fails(1, "nothing was moved");
    let out = api.oi(&["hypervisor", "remove", "hv-private-1"]).await;
    assert!(
        out.ok()
            .contains("2 certificates revoked, its agent disconnected")
            && out.stdout.contains("now pending")
            && out.stdout.contains("systemctl disable --now oi-agent"),
        "{}",
        out.stdout
    );

    let out = api
        .oi(&[
            "hypervisor",
            "token",
            "create",
            "--role",
            "public",
            "--ttl",
            "2h",
            "--uses",
            "3",
        ])
        .await;
    let zeros = "0".repeat(64);
    assert!(
        out.ok().contains(&format!(
            "oi hypervisor join --coordinator 192.0.2.1:7444 --token abcdef.0123456789abcdef --ca-cert-hash sha256:{zeros}"
        )) && out.stdout.contains("role public, 3 uses, expires 1970-01-01T02:00:00Z"),
        "{}",
        out.stdout
    );
    let j = json(
        api.oi(&[
            "hypervisor",
            "token",
            "create",
            "--role",
            "private",
            "-o",
            "json",
        ])
        .await
        .ok(),
    );
    assert_eq!(j["token"], "abcdef.0123456789abcdef");
    assert_eq!(j["role"], "private");
    assert_eq!(j["state"], "active");
    assert!(j["joinCommand"]
        .as_str()
        .unwrap()
        .starts_with("oi hypervisor join --coordinator 192.0.2.1:7444"));
    let usage = api
        .oi(&["hypervisor", "token", "create", "--role", "middle"])
        .await;
    assert_eq!(usage.code, 2, "{}", usage.stderr);
    api.oi(&["hypervisor", "token", "revoke", "zzzzzz.0123456789abcdef"])
        .await
        .fails(3, "join token zzzzzz not found");
    let list = api.oi(&["hypervisor", "token", "list"]).await;
    assert!(list.ok().is_empty() && list.stderr.contains("no join tokens"));

    // Tokens are for admins only.
    let agent = api.ca.issue_agent("hv-1").unwrap();
    let conf = api.conf_with("agent.conf", &agent);
    api.oi_with(&conf, &["hypervisor", "token", "list"], "")
        .await
        .fails(8, "not an admin");
    api.oi_with(&conf, &["hypervisor", "cordon", "hv-private-1"], "")
        .await
        .fails(8, "not an admin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_tokens_print_both_join_lines() {
    let api = Api::start().await;
    api.oi(&["cluster", "create", "prod", "--kubernetes-version", VERSION])
        .await
        .ok();
    let ones = "1".repeat(64);
    let out = api
        .oi(&[
            "cluster",
            "token",
            "create",
            "prod",
            "--ttl",
            "2h",
            "--description",
            "rack 4",
        ])
        .await;
    let text = out.ok();
    assert!(
        text.contains(&format!(
            "oi node join --endpoint 192.0.2.10:30000 --token abcdef.0123456789abcdef --ca-cert-hash sha256:{ones}"
        )) && text.contains(&format!(
            "kubeadm join 192.0.2.10:30000 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:{ones}"
        )) && text.contains("expires 1970-01-01T02:00:00Z"),
        "{text}"
    );
    let j = json(
        api.oi(&["cluster", "token", "create", "prod", "-o", "json"])
            .await
            .ok(),
    );
    assert_eq!(j["cluster"], "prod");
    assert!(j["kubeadmJoinCommand"]
        .as_str()
        .unwrap()
        .starts_with("kubeadm join "));
    api.oi(&["cluster", "token", "create", "nope"])
        .await
        .fails(3, "oi cluster list");
    let list = api.oi(&["cluster", "token", "list", "prod"]).await;
    assert!(
        list.ok().contains("rack 4") && list.stdout.contains("active"),
        "{}",
        list.stdout
    );
    // The whole token pasted: only its id is sent, and never echoed.
    let out = api
        .oi(&[
            "cluster",
            "token",
            "revoke",
            "prod",
            "abcdef.0123456789abcdef",
        ])
        .await;
    assert!(out
        .ok()
        .contains("node token abcdef of cluster prod revoked"));
    assert!(!out.stdout.contains("0123456789abcdef") && !out.stderr.contains("0123456789abcdef"));
    api.oi(&["cluster", "token", "revoke", "prod", "zzzzzz"])
        .await
        .fails(3, "no node token");
    let list = api.oi(&["cluster", "token", "list"]).await;
    assert!(list.ok().contains("revoked"), "{}", list.stdout);

    let nodes = api.oi(&["node", "list", "prod"]).await;
    assert!(
        nodes.ok().contains("w1    Ready") && nodes.stdout.contains("abcdef"),
        "{}",
        nodes.stdout
    );
    let out = api.oi(&["node", "remove", "prod", "w1"]).await;
    assert!(
        out.ok().contains("revoked its node token abcdef"),
        "{}",
        out.stdout
    );
    api.oi(&["node", "remove", "prod", "w9"])
        .await
        .fails(3, "no node \"w9\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stops_on_shutdown() {
    let api = Api::start().await;
    api.oi(&["cluster", "list"]).await.ok();
    api.shutdown.send(true).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), api.task)
        .await
        .expect("admin API stops within 10s")
        .unwrap();
    result.unwrap();
}
