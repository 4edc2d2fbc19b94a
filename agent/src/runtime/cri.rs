//! The real runtime: containerd (or any CRI v1 runtime) over its socket.
//!
//! Every sandbox and container we create carries `oneinfra.io/managed=true`
//! plus the component id, spec hash and generation as labels; `list` only
//! ever looks at those, so containers that are not ours are never touched.
//! Each component incarnation gets a directory
//! `<state_dir>/components/<dir>` (0700) holding the files of its spec and
//! the sources of its mounts (etcd's data among them); logs go to
//! `<state_dir>/logs/<dir>`. `<dir>` is derived from the component id and
//! its cluster's incarnation, so a cluster created again under an old name
//! never finds the old one's data.
//!
//! Removing a component never deletes its directory: it is moved aside to
//! `<state_dir>/retired/<dir>.<unix ms>` and purged once it is older than
//! the retention (`retired_retention_secs`, default 7 days). Until then an
//! operator can move it back.

use super::beneath;
use super::cri_client::{CriClient, CriError};
use super::{ContainerState, ObservedContainer, ObservedPod, Runtime, RuntimeError};
use async_trait::async_trait;
use k8s_cri::v1 as cri;
use oi_proto::model::{Component, Container, RuntimeInfo};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub const LABEL_MANAGED: &str = "oneinfra.io/managed";
pub const LABEL_COMPONENT: &str = "oneinfra.io/component";
pub const LABEL_SPEC_HASH: &str = "oneinfra.io/spec-hash";
pub const LABEL_GENERATION: &str = "oneinfra.io/generation";
pub const LABEL_CONTAINER: &str = "oneinfra.io/container";
pub const LABEL_INCARNATION: &str = "oneinfra.io/incarnation";
/// How long retired component directories are kept by default.
pub const DEFAULT_RETIRED_RETENTION: std::time::Duration =
    std::time::Duration::from_secs(7 * 24 * 3600);
const NAMESPACE: &str = "oneinfra";
/// In a component directory: the files hash of the files written there.
const FILES_MARKER: &str = ".oneinfra-files";

pub struct CriRuntime {
    client: CriClient,
    components_dir: PathBuf,
    logs_dir: PathBuf,
    retired_dir: PathBuf,
    retired_retention: std::time::Duration,
}

impl From<CriError> for RuntimeError {
    fn from(e: CriError) -> Self {
        match e {
            CriError::Unreachable { .. } | CriError::NotCri { .. } | CriError::NotReady { .. } => {
                RuntimeError::Unavailable(e.to_string())
            }
            CriError::Call { .. } if e.is_not_found() => RuntimeError::NotFound(e.to_string()),
            CriError::Call { .. } => RuntimeError::Other(e.to_string()),
        }
    }
}

/// A directory name for a component incarnation: readable, and unique even
/// when two ids differ only in characters that are replaced. An empty
/// incarnation (components placed before incarnations) names the directory
/// as before.
pub fn dir_name(id: &str, incarnation: &str) -> String {
    let readable: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    if incarnation.is_empty() {
        let digest = Sha256::digest(id.as_bytes());
        return format!("{readable}-{}", hex::encode(&digest[..4]));
    }
    let digest = Sha256::digest(format!("{id}\0{incarnation}").as_bytes());
    let short: String = incarnation.chars().take(8).collect();
    format!("{readable}-{short}-{}", hex::encode(&digest[..4]))
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> RuntimeError {
    move |e| RuntimeError::Other(format!("{what}: {e}"))
}

impl CriRuntime {
    /// Connects and checks the runtime; the error names the socket and what
    /// is missing.
    pub async fn connect(socket: &Path, state_dir: &Path) -> Result<Self, RuntimeError> {
        let client = CriClient::new(socket)?;
        client.check().await?;
        Ok(Self {
            client,
            components_dir: state_dir.join("components"),
            logs_dir: state_dir.join("logs"),
            retired_dir: state_dir.join("retired"),
            retired_retention: DEFAULT_RETIRED_RETENTION,
        })
    }

    /// How long removed components' directories are kept (moved aside).
    pub fn with_retired_retention(mut self, keep: std::time::Duration) -> Self {
        self.retired_retention = keep;
        self
    }

    pub fn component_dir(&self, id: &str, incarnation: &str) -> PathBuf {
        self.components_dir.join(dir_name(id, incarnation))
    }

    /// Moves a component's directory aside (never deletes it), then purges
    /// retired directories older than the retention.
    fn retire(&self, id: &str, incarnation: &str) -> Result<(), RuntimeError> {
        let name = dir_name(id, incarnation);
        let dir = self.components_dir.join(&name);
        if dir.exists() {
            oi_proto::fsutil::create_private_dir(&self.retired_dir)
                .map_err(|e| RuntimeError::Other(format!("{e:#}")))?;
            let to = self
                .retired_dir
                .join(format!("{name}.{}", crate::supervisor::now_ms()));
            std::fs::rename(&dir, &to).map_err(io_err(format!(
                "move {} aside to {}",
                dir.display(),
                to.display()
            )))?;
            tracing::info!(component = %id, to = %to.display(), "component directory retired");
        }
        self.purge_retired();
        Ok(())
    }

    /// Deletes retired directories older than the retention; a failure is
    /// logged and retried at the next removal.
    fn purge_retired(&self) {
        let Ok(entries) = std::fs::read_dir(&self.retired_dir) else {
            return;
        };
        let now = crate::supervisor::now_ms();
        let keep_ms = self.retired_retention.as_millis() as u64;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(at) = name.rsplit('.').next().and_then(|t| t.parse::<u64>().ok()) else {
                continue;
            };
            if now.saturating_sub(at) < keep_ms {
                continue;
            }
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => tracing::info!(dir = %e.path().display(), "retired directory purged"),
                Err(err) => {
                    tracing::warn!(dir = %e.path().display(), error = %err, "purge retired directory")
                }
            }
        }
    }

    fn managed() -> HashMap<String, String> {
        HashMap::from([(LABEL_MANAGED.to_string(), "true".to_string())])
    }

    async fn our_sandboxes(&self) -> Result<Vec<cri::PodSandbox>, RuntimeError> {
        let req = cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                label_selector: Self::managed(),
                ..Default::default()
            }),
        };
        Ok(self
            .client
            .runtime()
            .list_pod_sandbox(req)
            .await
            .map_err(|s| self.client.err("ListPodSandbox", "RuntimeService", s))?
            .into_inner()
            .items)
    }

    async fn our_containers(&self) -> Result<Vec<cri::Container>, RuntimeError> {
        let req = cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                label_selector: Self::managed(),
                ..Default::default()
            }),
        };
        Ok(self
            .client
            .runtime()
            .list_containers(req)
            .await
            .map_err(|s| self.client.err("ListContainers", "RuntimeService", s))?
            .into_inner()
            .containers)
    }

    /// Present locally, or pulled. Side-loaded images are never pulled.
    async fn ensure_image(&self, image: &str) -> Result<(), RuntimeError> {
        let spec = cri::ImageSpec {
            image: image.to_string(),
            ..Default::default()
        };
        let status = self
            .client
            .images()
            .image_status(cri::ImageStatusRequest {
                image: Some(spec.clone()),
                verbose: false,
            })
            .await
            .map_err(|s| self.client.err("ImageStatus", "ImageService", s))?
            .into_inner();
        if status.image.is_some() {
            return Ok(());
        }
        tracing::info!(%image, "pulling image");
        let mut images = self.client.images();
        let pull = tokio::time::timeout(
            std::time::Duration::from_secs(600),
            images.pull_image(cri::PullImageRequest {
                image: Some(spec),
                ..Default::default()
            }),
        )
        .await;
        match pull {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(s)) => Err(RuntimeError::ImageMissing {
                image: image.to_string(),
                detail: s.message().to_string(),
            }),
            Err(_) => Err(RuntimeError::ImageMissing {
                image: image.to_string(),
                detail: "pull timed out after 600s".into(),
            }),
        }
    }

    /// Writes the spec's files atomically (directories 0700) and creates
    /// missing mount sources as directories, never through a symlink (what
    /// runs in the pod can write in its mounts).
    fn write_files(&self, c: &Component) -> Result<PathBuf, RuntimeError> {
        let other = |e: anyhow::Error| RuntimeError::Other(format!("{e:#}"));
        let dir = self.component_dir(&c.id, &c.incarnation);
        oi_proto::fsutil::create_private_dir(&dir).map_err(other)?;
        for f in &c.pod.files {
            beneath::write_beneath(&dir, Path::new(&f.path), &f.content, f.mode).map_err(other)?;
        }
        for m in c.pod.containers.iter().flat_map(|k| &k.mounts) {
            let src = dir.join(&m.source);
            match std::fs::symlink_metadata(&src) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(RuntimeError::Other(format!(
                        "mount source {} is a symlink; refusing to mount it (remove it)",
                        src.display()
                    )))
                }
                Ok(_) => {}
                Err(_) => {
                    beneath::dir_beneath(&dir, Path::new(&m.source)).map_err(other)?;
                }
            }
        }
        // Last: what was written, for `list` (never inside a mount).
        beneath::write_beneath(
            &dir,
            Path::new(FILES_MARKER),
            c.files_hash().as_bytes(),
            0o600,
        )
        .map_err(other)?;
        Ok(dir)
    }

    /// The files hash recorded when the component's files were last written.
    fn written_files_hash(&self, id: &str, incarnation: &str) -> String {
        std::fs::read_to_string(self.component_dir(id, incarnation).join(FILES_MARKER))
            .unwrap_or_default()
    }

    fn labels(c: &Component, generation: u64) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_COMPONENT.to_string(), c.id.clone()),
            (LABEL_SPEC_HASH.to_string(), c.pod_hash()),
            (LABEL_GENERATION.to_string(), generation.to_string()),
            (LABEL_INCARNATION.to_string(), c.incarnation.clone()),
        ])
    }

    fn sandbox_config(&self, c: &Component, generation: u64) -> cri::PodSandboxConfig {
        let dir = dir_name(&c.id, &c.incarnation);
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: dir.clone(),
                uid: c.pod_hash(),
                namespace: NAMESPACE.into(),
                attempt: 0,
            }),
            log_directory: self.logs_dir.join(&dir).to_string_lossy().into_owned(),
            labels: Self::labels(c, generation),
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(host_network()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn container_config(
        &self,
        c: &Component,
        k: &Container,
        attempt: u32,
        generation: u64,
        dir: &Path,
    ) -> cri::ContainerConfig {
        let mut labels = Self::labels(c, generation);
        labels.insert(LABEL_CONTAINER.to_string(), k.name.clone());
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: k.name.clone(),
                attempt,
            }),
            image: Some(cri::ImageSpec {
                image: k.image.clone(),
                ..Default::default()
            }),
            command: k.command.clone(),
            args: k.args.clone(),
            envs: k
                .env
                .iter()
                .map(|e| cri::KeyValue {
                    key: e.name.clone(),
                    value: e.value.clone(),
                })
                .collect(),
            mounts: k
                .mounts
                .iter()
                .map(|m| cri::Mount {
                    container_path: m.container_path.clone(),
                    host_path: dir.join(&m.source).to_string_lossy().into_owned(),
                    readonly: m.read_only,
                    ..Default::default()
                })
                .collect(),
            labels,
            log_path: format!("{}_{attempt}.log", k.name),
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(cri::LinuxContainerResources {
                    // Requests set the CPU weight; no limits on control planes.
                    cpu_shares: (k.resources.cpu_millis.max(2) * 1024 / 1000) as i64,
                    ..Default::default()
                }),
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(host_network()),
                    run_as_user: k.run_as_user.map(|value| cri::Int64Value { value }),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }

    async fn create_and_start(
        &self,
        sandbox_id: &str,
        sandbox: &cri::PodSandboxConfig,
        config: cri::ContainerConfig,
    ) -> Result<String, RuntimeError> {
        let id = self
            .client
            .runtime()
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.to_string(),
                config: Some(config),
                sandbox_config: Some(sandbox.clone()),
            })
            .await
            .map_err(|s| self.client.err("CreateContainer", "RuntimeService", s))?
            .into_inner()
            .container_id;
        self.client
            .runtime()
            .start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .map_err(|s| self.client.err("StartContainer", "RuntimeService", s))?;
        Ok(id)
    }

    /// Stops and removes every sandbox of `id` (their containers go with
    /// them); the component's directory stays.
    pub async fn stop_pod(&self, id: &str) -> Result<(), RuntimeError> {
        for sb in self.our_sandboxes().await? {
            if sb.labels.get(LABEL_COMPONENT).map(String::as_str) != Some(id) {
                continue;
            }
            self.remove_sandbox(&sb.id).await?;
        }
        Ok(())
    }

    async fn remove_sandbox(&self, sandbox_id: &str) -> Result<(), RuntimeError> {
        let mut rt = self.client.runtime();
        if let Err(s) = rt
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: sandbox_id.to_string(),
            })
            .await
        {
            if s.code() != tonic::Code::NotFound {
                return Err(self
                    .client
                    .err("StopPodSandbox", "RuntimeService", s)
                    .into());
            }
        }
        if let Err(s) = rt
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: sandbox_id.to_string(),
            })
            .await
        {
            if s.code() != tonic::Code::NotFound {
                return Err(self
                    .client
                    .err("RemovePodSandbox", "RuntimeService", s)
                    .into());
            }
        }
        Ok(())
    }

    /// Exit code, reason, start and finish (unix ms) of a container.
    async fn exit_of(&self, container_id: &str) -> Exit {
        let unknown = |reason: String| Exit {
            code: -1,
            reason,
            started_ms: 0,
            finished_ms: 0,
        };
        match self
            .client
            .runtime()
            .container_status(cri::ContainerStatusRequest {
                container_id: container_id.to_string(),
                verbose: false,
            })
            .await
        {
            Ok(r) => match r.into_inner().status {
                Some(s) => Exit {
                    code: s.exit_code,
                    reason: s.reason,
                    started_ms: (s.started_at.max(0) / 1_000_000) as u64,
                    finished_ms: (s.finished_at.max(0) / 1_000_000) as u64,
                },
                None => unknown("Unknown".into()),
            },
            Err(s) => unknown(s.message().to_string()),
        }
    }
}

struct Exit {
    code: i32,
    reason: String,
    started_ms: u64,
    finished_ms: u64,
}

fn host_network() -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: cri::NamespaceMode::Node as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

#[async_trait]
impl Runtime for CriRuntime {
    async fn info(&self) -> Result<RuntimeInfo, RuntimeError> {
        let v = self.client.check().await?;
        Ok(RuntimeInfo {
            name: v.runtime_name,
            version: v.runtime_version,
            api_version: v.runtime_api_version,
        })
    }

    async fn list(&self) -> Result<Vec<ObservedPod>, RuntimeError> {
        let sandboxes = self.our_sandboxes().await?;
        let containers = self.our_containers().await?;
        // Newest ready sandbox per component; older ones are leftovers of an
        // interrupted replace and go away.
        let mut chosen: BTreeMap<String, cri::PodSandbox> = BTreeMap::new();
        let mut leftovers = Vec::new();
        for sb in sandboxes {
            let Some(id) = sb.labels.get(LABEL_COMPONENT).cloned() else {
                continue;
            };
            let ready = sb.state == cri::PodSandboxState::SandboxReady as i32;
            match chosen.get(&id) {
                Some(cur)
                    if (
                        cur.state == cri::PodSandboxState::SandboxReady as i32,
                        cur.created_at,
                    ) >= (ready, sb.created_at) =>
                {
                    leftovers.push(sb)
                }
                _ => {
                    if let Some(old) = chosen.insert(id, sb) {
                        leftovers.push(old);
                    }
                }
            }
        }
        for sb in leftovers {
            tracing::info!(sandbox = %sb.id, "removing leftover sandbox");
            self.remove_sandbox(&sb.id).await?;
        }
        let mut by_sandbox: HashMap<&str, Vec<&cri::Container>> = HashMap::new();
        for c in &containers {
            by_sandbox
                .entry(c.pod_sandbox_id.as_str())
                .or_default()
                .push(c);
        }
        let mut out = Vec::new();
        for (id, sb) in chosen {
            let sandbox_ready = sb.state == cri::PodSandboxState::SandboxReady as i32;
            // Latest attempt of each container name, and the one before it.
            let mut attempts: BTreeMap<String, Vec<&cri::Container>> = BTreeMap::new();
            for c in by_sandbox.get(sb.id.as_str()).into_iter().flatten() {
                let Some(meta) = &c.metadata else { continue };
                attempts.entry(meta.name.clone()).or_default().push(c);
            }
            let mut observed = Vec::new();
            for (name, mut list) in attempts {
                list.sort_by_key(|c| c.metadata.as_ref().map_or(0, |m| m.attempt));
                let Some(c) = list.pop() else { continue };
                let attempt = c.metadata.as_ref().map_or(0, |m| m.attempt);
                let previous_exit = match list.last() {
                    Some(prev) if prev.state == cri::ContainerState::ContainerExited as i32 => {
                        let e = self.exit_of(&prev.id).await;
                        Some((e.code, e.reason))
                    }
                    _ => None,
                };
                let (mut started_at_ms, mut finished_at_ms) =
                    ((c.created_at.max(0) / 1_000_000) as u64, 0);
                let state = match cri::ContainerState::try_from(c.state) {
                    Ok(cri::ContainerState::ContainerRunning) if sandbox_ready => {
                        ContainerState::Running
                    }
                    Ok(cri::ContainerState::ContainerCreated) if sandbox_ready => {
                        ContainerState::Created
                    }
                    Ok(cri::ContainerState::ContainerExited) => {
                        let e = self.exit_of(&c.id).await;
                        started_at_ms = e.started_ms;
                        finished_at_ms = e.finished_ms;
                        ContainerState::Exited {
                            code: e.code,
                            reason: e.reason,
                        }
                    }
                    _ => ContainerState::Unknown,
                };
                observed.push(ObservedContainer {
                    name,
                    state,
                    attempt,
                    started_at_ms,
                    finished_at_ms,
                    previous_exit,
                });
            }
            let incarnation = sb
                .labels
                .get(LABEL_INCARNATION)
                .cloned()
                .unwrap_or_default();
            out.push(ObservedPod {
                files_hash: self.written_files_hash(&id, &incarnation),
                component_id: id,
                incarnation,
                // A sandbox that is not ready (e.g. after a host reboot) cannot
                // run containers again: an empty hash makes the plan replace it.
                pod_hash: if sandbox_ready {
                    sb.labels.get(LABEL_SPEC_HASH).cloned().unwrap_or_default()
                } else {
                    String::new()
                },
                generation: sb
                    .labels
                    .get(LABEL_GENERATION)
                    .and_then(|g| g.parse().ok())
                    .unwrap_or(0),
                containers: observed,
            });
        }
        Ok(out)
    }

    async fn create(&self, component: &Component, generation: u64) -> Result<(), RuntimeError> {
        for k in &component.pod.containers {
            self.ensure_image(&k.image).await?;
        }
        let dir = self.write_files(component)?;
        let log_dir = self
            .logs_dir
            .join(dir_name(&component.id, &component.incarnation));
        std::fs::create_dir_all(&log_dir)
            .map_err(io_err(format!("create {}", log_dir.display())))?;
        // A sandbox of an earlier spec would hold the same ports: remove it.
        self.stop_pod(&component.id).await?;
        let config = self.sandbox_config(component, generation);
        let sandbox_id = self
            .client
            .runtime()
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .map_err(|s| self.client.err("RunPodSandbox", "RuntimeService", s))?
            .into_inner()
            .pod_sandbox_id;
        for k in &component.pod.containers {
            let cfg = self.container_config(component, k, 0, generation, &dir);
            if let Err(e) = self.create_and_start(&sandbox_id, &config, cfg).await {
                // Leave nothing half-made: the next pass starts over.
                let _ = self.remove_sandbox(&sandbox_id).await;
                return Err(e);
            }
        }
        Ok(())
    }

    async fn restart_container(
        &self,
        component: &Component,
        container: &str,
        generation: u64,
    ) -> Result<(), RuntimeError> {
        let sandbox = self
            .our_sandboxes()
            .await?
            .into_iter()
            .filter(|sb| {
                sb.labels.get(LABEL_COMPONENT) == Some(&component.id)
                    && sb.state == cri::PodSandboxState::SandboxReady as i32
            })
            .max_by_key(|sb| sb.created_at)
            .ok_or_else(|| RuntimeError::NotFound(format!("no sandbox for {}", component.id)))?;
        let spec = component
            .pod
            .containers
            .iter()
            .find(|k| k.name == container)
            .ok_or_else(|| RuntimeError::NotFound(format!("no container {container} in spec")))?;
        let previous: Vec<cri::Container> = self
            .our_containers()
            .await?
            .into_iter()
            .filter(|c| {
                c.pod_sandbox_id == sandbox.id
                    && c.metadata.as_ref().is_some_and(|m| m.name == container)
            })
            .collect();
        let attempt = previous
            .iter()
            .filter_map(|c| c.metadata.as_ref().map(|m| m.attempt))
            .max()
            .map_or(0, |a| a + 1);
        let dir = self.write_files(component)?;
        let config = self.sandbox_config(component, generation);
        let cfg = self.container_config(component, spec, attempt, generation, &dir);
        self.create_and_start(&sandbox.id, &config, cfg).await?;
        // Like kubelet, keep the last dead attempt (its exit status and log)
        // and remove the older ones.
        let mut previous = previous;
        previous.sort_by_key(|c| c.metadata.as_ref().map_or(0, |m| m.attempt));
        previous.pop();
        for c in previous {
            let _ = self
                .client
                .runtime()
                .remove_container(cri::RemoveContainerRequest { container_id: c.id })
                .await;
        }
        Ok(())
    }

    async fn sync_files(&self, component: &Component) -> Result<(), RuntimeError> {
        self.write_files(component)?;
        let sandboxes: Vec<String> = self
            .our_sandboxes()
            .await?
            .into_iter()
            .filter(|sb| sb.labels.get(LABEL_COMPONENT) == Some(&component.id))
            .map(|sb| sb.id)
            .collect();
        let running: Vec<cri::Container> = self
            .our_containers()
            .await?
            .into_iter()
            .filter(|c| {
                sandboxes.contains(&c.pod_sandbox_id)
                    && c.state == cri::ContainerState::ContainerRunning as i32
            })
            .collect();
        for spec in component
            .pod
            .containers
            .iter()
            .filter(|k| !k.reload.is_empty())
        {
            let Some(c) = running
                .iter()
                .find(|c| c.metadata.as_ref().is_some_and(|m| m.name == spec.name))
            else {
                continue; // not running: it reads the new files when it starts
            };
            let out = self
                .client
                .runtime()
                .exec_sync(cri::ExecSyncRequest {
                    container_id: c.id.clone(),
                    cmd: spec.reload.clone(),
                    timeout: 30,
                })
                .await
                .map_err(|s| self.client.err("ExecSync", "RuntimeService", s))?
                .into_inner();
            if out.exit_code != 0 {
                return Err(RuntimeError::Other(format!(
                    "reload command of container {} exited with {}: {}",
                    spec.name,
                    out.exit_code,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        Ok(())
    }

    async fn remove(&self, component_id: &str, incarnation: &str) -> Result<(), RuntimeError> {
        self.stop_pod(component_id).await?;
        self.retire(component_id, incarnation)?;
        let logs = self.logs_dir.join(dir_name(component_id, incarnation));
        match std::fs::remove_dir_all(&logs) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("remove {}", logs.display()))(e)),
        }
        Ok(())
    }
}
