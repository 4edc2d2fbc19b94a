//! An in-memory runtime for unit tests, in-process integration tests and
//! the fleet benchmark. It never runs anything.

use super::{ContainerState, ObservedContainer, ObservedPod, Runtime, RuntimeError};
use async_trait::async_trait;
use oi_proto::model::{Component, RuntimeInfo};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

#[derive(Default)]
struct State {
    pods: BTreeMap<String, ObservedPod>,
    creates: HashMap<String, u32>,
    removes: HashMap<String, u32>,
    reloads: HashMap<String, u32>,
    missing_images: BTreeSet<String>,
}

pub struct FakeRuntime {
    state: Mutex<State>,
    /// Images whose pull does not finish until released.
    held_pulls: tokio::sync::watch::Sender<BTreeSet<String>>,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            held_pulls: tokio::sync::watch::Sender::new(BTreeSet::new()),
        }
    }
}

use oi_proto::clock::unix_ms as now_ms;

impl FakeRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pods as the runtime holds them.
    pub fn pods(&self) -> Vec<ObservedPod> {
        self.lock().pods.values().cloned().collect()
    }

    pub fn create_count(&self, id: &str) -> u32 {
        self.lock().creates.get(id).copied().unwrap_or(0)
    }

    pub fn remove_count(&self, id: &str) -> u32 {
        self.lock().removes.get(id).copied().unwrap_or(0)
    }

    /// How often the files of `id` were synced in place (reloads).
    pub fn reload_count(&self, id: &str) -> u32 {
        self.lock().reloads.get(id).copied().unwrap_or(0)
    }

    /// Makes `image` absent and unpullable.
    pub fn set_missing_image(&self, image: &str) {
        self.lock().missing_images.insert(image.to_string());
    }

    /// Makes creating a pod with `image` wait, as a slow pull does, until
    /// [`FakeRuntime::release_pull`].
    pub fn hold_pull(&self, image: &str) {
        self.held_pulls.send_modify(|h| {
            h.insert(image.to_string());
        });
    }

    pub fn release_pull(&self, image: &str) {
        self.held_pulls.send_modify(|h| {
            h.remove(image);
        });
    }

    /// Makes a container exit, as a crash would.
    pub fn exit(&self, id: &str, container: &str, code: i32) {
        let mut st = self.lock();
        if let Some(pod) = st.pods.get_mut(id) {
            for c in pod.containers.iter_mut().filter(|c| c.name == container) {
                c.state = ContainerState::Exited {
                    code,
                    reason: "Error".into(),
                };
                c.finished_at_ms = now_ms();
            }
        }
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    async fn info(&self) -> Result<RuntimeInfo, RuntimeError> {
        Ok(RuntimeInfo {
            name: "fake".into(),
            version: "0".into(),
            api_version: "v1".into(),
        })
    }

    async fn list(&self) -> Result<Vec<ObservedPod>, RuntimeError> {
        Ok(self.pods())
    }

    async fn create(&self, component: &Component, generation: u64) -> Result<(), RuntimeError> {
        let images: Vec<&str> = component
            .pod
            .containers
            .iter()
            .map(|k| k.image.as_str())
            .collect();
        let mut held = self.held_pulls.subscribe();
        let _ = held
            .wait_for(|h| !images.iter().any(|i| h.contains(*i)))
            .await;
        let mut st = self.lock();
        for k in &component.pod.containers {
            if st.missing_images.contains(&k.image) {
                return Err(RuntimeError::ImageMissing {
                    image: k.image.clone(),
                    detail: "not in the fake image store".into(),
                });
            }
        }
        if st.pods.contains_key(&component.id) {
            *st.removes.entry(component.id.clone()).or_default() += 1;
        }
        *st.creates.entry(component.id.clone()).or_default() += 1;
        let now = now_ms();
        st.pods.insert(
            component.id.clone(),
            ObservedPod {
                component_id: component.id.clone(),
                incarnation: component.incarnation.clone(),
                pod_hash: component.pod_hash(),
                files_hash: component.files_hash(),
                generation,
                containers: component
                    .pod
                    .containers
                    .iter()
                    .map(|k| ObservedContainer {
                        name: k.name.clone(),
                        state: ContainerState::Running,
                        attempt: 0,
                        started_at_ms: now,
                        finished_at_ms: 0,
                        previous_exit: None,
                    })
                    .collect(),
            },
        );
        Ok(())
    }

    async fn restart_container(
        &self,
        component: &Component,
        container: &str,
        _generation: u64,
    ) -> Result<(), RuntimeError> {
        let mut st = self.lock();
        let pod = st
            .pods
            .get_mut(&component.id)
            .ok_or_else(|| RuntimeError::NotFound(format!("pod {}", component.id)))?;
        let now = now_ms();
        match pod.containers.iter_mut().find(|c| c.name == container) {
            Some(c) => {
                if let ContainerState::Exited { code, reason } = &c.state {
                    c.previous_exit = Some((*code, reason.clone()));
                }
                c.attempt += 1;
                c.state = ContainerState::Running;
                c.started_at_ms = now;
                c.finished_at_ms = 0;
            }
            None => pod.containers.push(ObservedContainer {
                name: container.to_string(),
                state: ContainerState::Running,
                attempt: 0,
                started_at_ms: now,
                finished_at_ms: 0,
                previous_exit: None,
            }),
        }
        Ok(())
    }

    async fn sync_files(&self, component: &Component) -> Result<(), RuntimeError> {
        let mut st = self.lock();
        let pod = st
            .pods
            .get_mut(&component.id)
            .ok_or_else(|| RuntimeError::NotFound(format!("pod {}", component.id)))?;
        pod.files_hash = component.files_hash();
        *st.reloads.entry(component.id.clone()).or_default() += 1;
        Ok(())
    }

    async fn remove(&self, component_id: &str, _incarnation: &str) -> Result<(), RuntimeError> {
        let mut st = self.lock();
        if st.pods.remove(component_id).is_some() {
            *st.removes.entry(component_id.to_string()).or_default() += 1;
        }
        Ok(())
    }
}
