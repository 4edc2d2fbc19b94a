//! Real-stack tier: the agent driving a real containerd through CRI v1.
//! Run by tests/real/run.sh, which starts containerd and side-loads the
//! image; these tests are `#[ignore]`d so that `cargo test` alone skips them.

use oi_agent::agent::{AgentHandle, AgentOptions};
use oi_agent::runtime::cri::{CriRuntime, LABEL_COMPONENT, LABEL_MANAGED};
use oi_agent::runtime::cri_client::CriClient;
use oi_proto::model::{
    Component, ComponentStatus, Container, File, Mount, Phase, PodSpec, Probe, Role, Scheme,
};
use oi_tests::*;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fn socket() -> PathBuf {
    std::env::var_os("OI_REAL_CRI_SOCKET")
        .expect("OI_REAL_CRI_SOCKET: run these through tests/real/run.sh")
        .into()
}

fn image() -> String {
    std::env::var("OI_REAL_IMAGE").unwrap_or_else(|_| "docker.io/oi-test/busybox:1".into())
}

fn pod(id: &str, image: &str, command: &[&str]) -> Component {
    Component {
        incarnation: String::new(),
        id: id.into(),
        cluster: "real".into(),
        pod: PodSpec {
            containers: vec![Container {
                name: "main".into(),
                image: image.into(),
                command: command.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }],
            files: vec![],
        },
    }
}

/// busybox httpd serving `www/` of the component directory on `port`.
fn web(id: &str, port: u16) -> Component {
    let mut c = pod(
        id,
        &image(),
        &[
            "/bin/busybox",
            "httpd",
            "-f",
            "-p",
            &format!("127.0.0.1:{port}"),
            "-h",
            "/www",
        ],
    );
    let k = &mut c.pod.containers[0];
    k.mounts = vec![
        Mount {
            source: "www".into(),
            container_path: "/www".into(),
            read_only: true,
        },
        Mount {
            source: "pki".into(),
            container_path: "/pki".into(),
            read_only: true,
        },
    ];
    k.probe = Some(Probe {
        scheme: Scheme::Http,
        port,
        path: "/readyz".into(),
        period_ms: 500,
        timeout_ms: 1000,
        failure_threshold: 3,
        initial_delay_ms: 0,
    });
    c.pod.files = vec![
        File {
            path: "www/readyz".into(),
            mode: 0o644,
            content: b"ok\n".to_vec(),
        },
        File {
            path: "pki/server.key".into(),
            mode: 0o600,
            content: b"-----BEGIN TEST KEY-----\n".to_vec(),
        },
    ];
    c
}

/// `id`'s status, once the agent has listed its runtime.
fn status<'a>(s: &'a Option<Vec<ComponentStatus>>, id: &str) -> Option<&'a ComponentStatus> {
    s.iter().flatten().find(|c| c.id == id)
}

fn running(s: &Option<Vec<ComponentStatus>>, id: &str) -> bool {
    status(s, id).is_some_and(|c| c.phase == Phase::Running)
}

/// Our sandboxes by component id, and every sandbox id.
async fn sandboxes() -> (HashMap<String, String>, Vec<String>) {
    let client = CriClient::new(&socket()).unwrap();
    let items = client
        .runtime()
        .list_pod_sandbox(k8s_cri::v1::ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items;
    let ours = items
        .iter()
        .filter(|s| s.labels.get(LABEL_MANAGED).map(String::as_str) == Some("true"))
        .filter_map(|s| Some((s.labels.get(LABEL_COMPONENT)?.clone(), s.id.clone())))
        .collect();
    (ours, items.into_iter().map(|s| s.id).collect())
}

/// Ids and attempts of our containers.
async fn containers() -> Vec<(String, String, u32)> {
    let client = CriClient::new(&socket()).unwrap();
    let mut out: Vec<_> = client
        .runtime()
        .list_containers(k8s_cri::v1::ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers
        .into_iter()
        .filter(|c| c.labels.get(LABEL_MANAGED).map(String::as_str) == Some("true"))
        .map(|c| {
            (
                c.labels.get(LABEL_COMPONENT).cloned().unwrap_or_default(),
                c.id,
                c.metadata.map_or(0, |m| m.attempt),
            )
        })
        .collect();
    out.sort();
    out
}

struct Bed {
    dir: tempfile::TempDir,
    coord: oi_coordinator::coordinator::Running,
}

impl Bed {
    async fn new() -> Bed {
        init_logging();
        let dir = tempfile::tempdir().unwrap();
        let coord = start_coordinator(&dir.path().join("coordinator"), None)
            .await
            .unwrap();
        Bed { dir, coord }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("agent")
    }

    async fn agent(&self) -> AgentHandle {
        let c = &self.coord.coordinator;
        let mut link = link_config(
            c,
            self.coord.link_addr,
            "hv-real",
            "hv-real",
            Role::Private,
            &self.state_dir(),
        );
        link.state_path = self.state_dir().join("placement.json");
        let runtime = CriRuntime::connect(&socket(), &self.state_dir())
            .await
            .unwrap();
        let mut handle = oi_agent::agent::start(
            AgentOptions {
                link,
                resync: Duration::from_secs(1),
            },
            Arc::new(runtime),
        )
        .await
        .unwrap();
        wait_for(&mut handle.link, "agent connected", |s| {
            matches!(s, oi_agent::link::LinkStatus::Connected { .. })
        })
        .await;
        eventually("hv-real registered", || c.hypervisor("hv-real").is_some()).await;
        handle
    }

    async fn cleanup(self, agent: Option<AgentHandle>) {
        let c = self.coord.coordinator.clone();
        let ids: Vec<String> = c
            .hypervisor("hv-real")
            .map(|v| v.placement.components.keys().cloned().collect())
            .unwrap_or_default();
        for id in ids {
            c.remove_component(&id).await.unwrap();
        }
        if let Some(mut a) = agent {
            wait_for(&mut a.status, "all removed", |s| {
                s.as_ref().is_some_and(Vec::is_empty)
            })
            .await;
            eventually_async_empty().await;
            a.shutdown().await;
        }
        self.coord.shutdown().await;
    }
}

async fn eventually_async_empty() {
    for _ in 0..200 {
        if sandboxes().await.0.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("sandboxes of ours left behind: {:?}", sandboxes().await.0);
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs containerd: run tests/real/run.sh"]
async fn create_replace_remove() {
    let bed = Bed::new().await;
    let c = bed.coord.coordinator.clone();
    let mut agent = bed.agent().await;
    wait_for(&mut agent.link, "connected", |s| {
        matches!(s, oi_agent::link::LinkStatus::Connected { .. })
    })
    .await;

    c.upsert_component("hv-real", web("web", 31081))
        .await
        .unwrap();
    let s = wait_for(&mut agent.status, "web running and ready", |s| {
        status(s, "web").is_some_and(|c| c.phase == Phase::Running && c.ready)
    })
    .await;
    let probe = status(&s, "web").unwrap().containers[0]
        .probe
        .clone()
        .unwrap();
    assert!(probe.ok, "{probe:?}");
    let (ours, _) = sandboxes().await;
    let first_sandbox = ours.get("web").cloned().expect("a sandbox labelled web");

    // Files: keys 0600, directories 0700, content as given.
    let cdir = bed
        .state_dir()
        .join("components")
        .join(oi_agent::runtime::cri::dir_name("web", ""));
    assert_eq!(mode(&cdir), 0o700);
    assert_eq!(mode(&cdir.join("pki")), 0o700);
    assert_eq!(mode(&cdir.join("pki/server.key")), 0o600);
    assert_eq!(mode(&cdir.join("www/readyz")), 0o644);
    assert_eq!(std::fs::read(cdir.join("www/readyz")).unwrap(), b"ok\n");

    // The same placement again restarts nothing.
    let before = containers().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(containers().await, before);

    // A spec change replaces the pod.
    c.upsert_component("hv-real", web("web", 31082))
        .await
        .unwrap();
    let new_hash = web("web", 31082).spec_hash();
    wait_for(&mut agent.status, "web replaced", |s| {
        status(s, "web")
            .is_some_and(|c| c.spec_hash == new_hash && c.phase == Phase::Running && c.ready)
    })
    .await;
    let (ours, _) = sandboxes().await;
    assert_ne!(ours.get("web"), Some(&first_sandbox));
    assert_eq!(ours.len(), 1, "the old sandbox is gone: {ours:?}");

    // Removal removes the pod; its directory is moved aside, not deleted.
    c.remove_component("web").await.unwrap();
    wait_for(&mut agent.status, "web gone", |s| {
        status(s, "web").is_none()
    })
    .await;
    eventually_async_empty().await;
    assert!(!cdir.exists(), "component directory moved away");
    let retired = retired(&bed.state_dir(), "web", "");
    assert_eq!(retired.len(), 1, "{retired:?}");
    assert_eq!(
        std::fs::read(retired[0].join("www/readyz")).unwrap(),
        b"ok\n"
    );
    bed.cleanup(Some(agent)).await;
}

/// Retired directories of a component incarnation, oldest first.
fn retired(state_dir: &Path, id: &str, incarnation: &str) -> Vec<PathBuf> {
    let prefix = format!("{}.", oi_agent::runtime::cri::dir_name(id, incarnation));
    let mut out: Vec<PathBuf> = std::fs::read_dir(state_dir.join("retired"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The recreated-cluster leak: a component removed and placed again under
/// the same id in one placement change (the agent's watch coalesces them),
/// but of a new incarnation, must start on an empty directory; the old
/// incarnation's data is moved aside, never reused and never deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs containerd: run tests/real/run.sh"]
async fn a_new_incarnation_never_sees_the_old_data() {
    let bed = Bed::new().await;
    let c = bed.coord.coordinator.clone();
    let mut agent = bed.agent().await;
    let mut first = web("db", 31087);
    first.incarnation = "first-incarnation".into();
    first.pod.containers[0].mounts.push(Mount {
        source: "data".into(),
        container_path: "/data".into(),
        read_only: false,
    });
    c.upsert_component("hv-real", first.clone()).await.unwrap();
    wait_for(
        &mut agent.status,
        "db of the first incarnation ready",
        |s| status(s, "db").is_some_and(|c| c.phase == Phase::Running && c.ready),
    )
    .await;
    let old_dir = bed
        .state_dir()
        .join("components")
        .join(oi_agent::runtime::cri::dir_name("db", "first-incarnation"));
    std::fs::write(old_dir.join("data/tenant-secret"), b"old tenant\n").unwrap();
    let (ours, _) = sandboxes().await;
    let old_sandbox = ours["db"].clone();

    // Same id, same pod spec, another incarnation: one placement change.
    let second = oi_proto::model::Component {
        incarnation: "second-incarnation".into(),
        ..first.clone()
    };
    assert_ne!(second.spec_hash(), first.spec_hash());
    c.upsert_component("hv-real", second.clone()).await.unwrap();
    let hash = second.spec_hash();
    wait_for(
        &mut agent.status,
        "db of the second incarnation ready",
        |s| {
            status(s, "db")
                .is_some_and(|c| c.spec_hash == hash && c.phase == Phase::Running && c.ready)
        },
    )
    .await;
    let (ours, _) = sandboxes().await;
    assert_ne!(ours["db"], old_sandbox, "the pod was replaced");
    let new_dir = bed
        .state_dir()
        .join("components")
        .join(oi_agent::runtime::cri::dir_name("db", "second-incarnation"));
    assert!(new_dir.join("data").is_dir());
    assert_eq!(
        std::fs::read_dir(new_dir.join("data")).unwrap().count(),
        0,
        "the new incarnation starts on an empty data directory"
    );
    assert!(!old_dir.exists());
    let kept = retired(&bed.state_dir(), "db", "first-incarnation");
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        std::fs::read(kept[0].join("data/tenant-secret")).unwrap(),
        b"old tenant\n",
        "the old incarnation's data is kept aside, not deleted"
    );
    bed.cleanup(Some(agent)).await;
}

/// A reloadable pod: a change of its file contents rewrites the files and
/// runs the reload command in the running container; nothing restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs containerd: run tests/real/run.sh"]
async fn file_changes_reload_reloadable_pods_in_place() {
    let bed = Bed::new().await;
    let c = bed.coord.coordinator.clone();
    let mut agent = bed.agent().await;
    let mut w = web("reload", 31086);
    w.pod.containers[0].reload = vec![
        "/bin/sh".into(),
        "-c".into(),
        "cat /www/readyz > /tmp/reloaded-with".into(),
    ];
    c.upsert_component("hv-real", w.clone()).await.unwrap();
    wait_for(&mut agent.status, "reload pod ready", |s| {
        status(s, "reload").is_some_and(|c| c.phase == Phase::Running && c.ready)
    })
    .await;
    let before = containers().await;

    w.pod.files[0].content = b"ok v2\n".to_vec();
    c.upsert_component("hv-real", w.clone()).await.unwrap();
    let hash = w.spec_hash();
    wait_for(&mut agent.status, "reloaded", |s| {
        status(s, "reload").is_some_and(|c| c.spec_hash == hash && c.phase == Phase::Running)
    })
    .await;
    assert_eq!(
        containers().await,
        before,
        "same containers: reloaded, not replaced"
    );
    let cdir = bed
        .state_dir()
        .join("components")
        .join(oi_agent::runtime::cri::dir_name("reload", ""));
    assert_eq!(std::fs::read(cdir.join("www/readyz")).unwrap(), b"ok v2\n");
    // The reload command ran in the container and saw the new file.
    let (_, id, _) = before
        .iter()
        .find(|(comp, _, _)| comp == "reload")
        .unwrap()
        .clone();
    let out = CriClient::new(&socket())
        .unwrap()
        .runtime()
        .exec_sync(k8s_cri::v1::ExecSyncRequest {
            container_id: id,
            cmd: vec!["cat".into(), "/tmp/reloaded-with".into()],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.stdout, b"ok v2\n");
    bed.cleanup(Some(agent)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs containerd: run tests/real/run.sh"]
async fn exited_containers_restart_with_backoff() {
    let bed = Bed::new().await;
    let c = bed.coord.coordinator.clone();
    let mut agent = bed.agent().await;
    c.upsert_component(
        "hv-real",
        pod("crash", &image(), &["/bin/sh", "-c", "sleep 1; exit 3"]),
    )
    .await
    .unwrap();
    let s = wait_for(&mut agent.status, "restarted once", |s| {
        status(s, "crash")
            .is_some_and(|c| c.containers.first().is_some_and(|k| k.restart_count >= 1))
    })
    .await;
    let k = &status(&s, "crash").unwrap().containers[0];
    assert_eq!(k.last_exit_code, 3, "{k:?}");
    let t1 = std::time::Instant::now();
    wait_for(&mut agent.status, "restarted twice", |s| {
        status(s, "crash")
            .is_some_and(|c| c.containers.first().is_some_and(|k| k.restart_count >= 2))
    })
    .await;
    // The second restart waits out a backoff, it is not a tight loop.
    assert!(
        t1.elapsed() >= Duration::from_secs(5),
        "restarted after {:?}",
        t1.elapsed()
    );
    bed.cleanup(Some(agent)).await;
}

/// A container that crashed and was restarted is unready until its new
/// attempt passes the probe: the previous attempt's result does not carry
/// over, even with a probe period far longer than the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs containerd: run tests/real/run.sh"]
async fn a_restarted_container_is_unready_until_it_passes_again() {
    let bed = Bed::new().await;
    let c = bed.coord.coordinator.clone();
    let mut agent = bed.agent().await;
    let port = 31091;
    // The first attempt serves /readyz for 3 s, then exits; later attempts
    // (the marker is on a writable mount of the component) never serve.
    let script = format!(
        "if [ -e /state/served ]; then exec sleep 3600; fi; touch /state/served; \
         /bin/busybox httpd -f -p 127.0.0.1:{port} -h /www & sleep 3; exit 1"
    );
    let mut comp = web("flaky", port);
    let k = &mut comp.pod.containers[0];
    k.command = vec!["/bin/sh".into(), "-c".into(), script];
    k.mounts.push(Mount {
        source: "state".into(),
        container_path: "/state".into(),
        read_only: false,
    });
    k.probe.as_mut().unwrap().period_ms = 600_000;
    comp.pod.files.push(File {
        path: "state/.keep".into(),
        mode: 0o644,
        content: vec![],
    });
    c.upsert_component("hv-real", comp).await.unwrap();
    wait_for(&mut agent.status, "flaky ready on its first attempt", |s| {
        status(s, "flaky")
            .is_some_and(|c| c.ready && c.containers.first().is_some_and(|k| k.restart_count == 0))
    })
    .await;
    let s = wait_for(&mut agent.status, "flaky restarted and unready", |s| {
        status(s, "flaky").is_some_and(|c| {
            c.phase == Phase::Running
                && !c.ready
                && c.containers.first().is_some_and(|k| k.restart_count >= 1)
        })
    })
    .await;
    let k = &status(&s, "flaky").unwrap().containers[0];
    assert_eq!(k.last_exit_code, 1, "{k:?}");
    bed.cleanup(Some(agent)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs containerd: run tests/real/run.sh"]
async fn missing_image_is_reported_and_others_keep_running() {
    let bed = Bed::new().await;
    let c = bed.coord.coordinator.clone();
    let mut agent = bed.agent().await;
    c.upsert_component("hv-real", web("good", 31083))
        .await
        .unwrap();
    c.upsert_component(
        "hv-real",
        pod("bad", "docker.io/oi-test/missing:1", &["/bin/true"]),
    )
    .await
    .unwrap();
    let s = wait_for(&mut agent.status, "bad failed, good runs", |s| {
        running(s, "good") && status(s, "bad").is_some_and(|c| c.phase == Phase::Failed)
    })
    .await;
    let bad = status(&s, "bad").unwrap();
    assert!(
        bad.message.contains("docker.io/oi-test/missing:1"),
        "{bad:?}"
    );
    assert!(!bad.reason.is_empty(), "{bad:?}");
    bed.cleanup(Some(agent)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs containerd: run tests/real/run.sh"]
async fn orphans_of_ours_are_removed_and_others_left_alone() {
    let client = CriClient::new(&socket()).unwrap();
    let run = |name: &str, labels: HashMap<String, String>| {
        let client = client.clone();
        let name = name.to_string();
        async move {
            client
                .runtime()
                .run_pod_sandbox(k8s_cri::v1::RunPodSandboxRequest {
                    config: Some(k8s_cri::v1::PodSandboxConfig {
                        metadata: Some(k8s_cri::v1::PodSandboxMetadata {
                            name: name.clone(),
                            uid: name.clone(),
                            namespace: "elsewhere".into(),
                            attempt: 0,
                        }),
                        labels,
                        linux: Some(k8s_cri::v1::LinuxPodSandboxConfig {
                            security_context: Some(k8s_cri::v1::LinuxSandboxSecurityContext {
                                namespace_options: Some(k8s_cri::v1::NamespaceOption {
                                    network: k8s_cri::v1::NamespaceMode::Node as i32,
                                    ..Default::default()
                                }),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    runtime_handler: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .pod_sandbox_id
        }
    };
    let ghost = run(
        "ghost",
        HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_COMPONENT.to_string(), "ghost".to_string()),
        ]),
    )
    .await;
    let foreign = run("foreign", HashMap::new()).await;

    let bed = Bed::new().await;
    let c = bed.coord.coordinator.clone();
    let mut agent = bed.agent().await;
    c.upsert_component("hv-real", web("kept", 31084))
        .await
        .unwrap();
    wait_for(&mut agent.status, "kept runs", |s| running(s, "kept")).await;
    for _ in 0..100 {
        if !sandboxes().await.1.contains(&ghost) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, all) = sandboxes().await;
    assert!(!all.contains(&ghost), "our orphan is removed");
    assert!(
        all.contains(&foreign),
        "a sandbox that is not ours is left alone"
    );
    bed.cleanup(Some(agent)).await;
    let (_, all) = sandboxes().await;
    assert!(all.contains(&foreign), "still left alone after removals");
    let mut rt = client.runtime();
    rt.stop_pod_sandbox(k8s_cri::v1::StopPodSandboxRequest {
        pod_sandbox_id: foreign.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(k8s_cri::v1::RemovePodSandboxRequest {
        pod_sandbox_id: foreign,
    })
    .await
    .unwrap();
}

/// The real binary: `kill -9` it and start it again; the same containers
/// keep running with the same attempt counts. SIGTERM stops nothing either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs containerd: run tests/real/run.sh"]
async fn agent_kill9_and_sigterm_restart_nothing() {
    let bed = Bed::new().await;
    let c = bed.coord.coordinator.clone();
    let pki = bed.dir.path().join("pki");
    let issued = c.issue_agent_identity("hv-real").unwrap();
    oi_proto::fsutil::write_atomic(&pki.join("ca.pem"), c.ca_pem().as_bytes(), 0o644).unwrap();
    oi_proto::fsutil::write_atomic(&pki.join("agent.pem"), issued.cert_pem.as_bytes(), 0o644)
        .unwrap();
    oi_proto::fsutil::write_atomic(&pki.join("agent.key"), issued.key_pem.as_bytes(), 0o600)
        .unwrap();
    let config = bed.dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"hv-real\"\nrole = \"private\"\ncoordinator = \"{}\"\nserver_name = \"localhost\"\n\
             address = \"127.0.0.1\"\nport_range = \"31000-31099\"\npki_dir = \"{}\"\nstate_dir = \"{}\"\n\
             cri_socket = \"{}\"\nresync_secs = 1\n",
            bed.coord.link_addr,
            pki.display(),
            bed.state_dir().display(),
            socket().display()
        ),
    )
    .unwrap();
    let bin = std::env::var("OI_AGENT_BIN").expect("OI_AGENT_BIN: run through tests/real/run.sh");
    // systemd Type=notify: READY=1 once supervising, before any link.
    let notify_path = bed.dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let spawn = || {
        std::process::Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .env("NOTIFY_SOCKET", &notify_path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start oi-agent")
    };
    let observed_running = |id: &'static str| {
        let c = c.clone();
        move || {
            c.hypervisor("hv-real")
                .and_then(|v| v.observed)
                .is_some_and(|o| {
                    o.components
                        .iter()
                        .any(|c| c.id == id && c.phase == Phase::Running)
                })
        }
    };

    let mut child = spawn();
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 from the agent");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    eventually("agent registered", || c.hypervisor("hv-real").is_some()).await;
    c.upsert_component("hv-real", web("steady", 31085))
        .await
        .unwrap();
    c.upsert_component(
        "hv-real",
        pod("sleeper", &image(), &["/bin/sleep", "1000000"]),
    )
    .await
    .unwrap();
    eventually("both run", || {
        observed_running("steady")() && observed_running("sleeper")()
    })
    .await;
    let before = containers().await;
    assert_eq!(before.len(), 2, "{before:?}");

    // kill -9: the containers keep running while the agent is gone ...
    child.kill().unwrap();
    child.wait().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(containers().await, before);
    // ... and the next agent adopts them as they are.
    let mut child = spawn();
    eventually("agent back", || {
        c.hypervisor("hv-real")
            .is_some_and(|v| matches!(v.link, oi_coordinator::index::LinkState::Connected { .. }))
    })
    .await;
    eventually("both reported running", || {
        observed_running("steady")() && observed_running("sleeper")()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await; // a few resyncs
    assert_eq!(
        containers().await,
        before,
        "same container ids, same attempts"
    );

    // SIGTERM stops the agent, not the containers.
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let exit = child.wait().unwrap();
    assert!(exit.success(), "agent exits cleanly on SIGTERM: {exit:?}");
    assert_eq!(containers().await, before);

    // Deleting the components is the one way to remove them.
    let mut child = spawn();
    c.remove_component("steady").await.unwrap();
    c.remove_component("sleeper").await.unwrap();
    eventually_async_empty().await;
    child.kill().unwrap();
    child.wait().unwrap();
    bed.coord.shutdown().await;
}
