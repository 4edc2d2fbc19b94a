use super::*;
use crate::cluster::kubeconfig;
use crate::cluster::pki::tests::{allocation, with_cert};
use crate::cluster::versions::VersionMatrix;
use oi_proto::model::Container;

struct Fixture {
    spec: ClusterSpec,
    release: Release,
    pki: ClusterPki,
    certs: BTreeMap<u32, ReplicaCerts>,
    allocation: Allocation,
}

impl Fixture {
    fn new(version: &str, replicas: u32) -> Self {
        let spec = ClusterSpec::new("c1", version, replicas);
        let allocation = allocation(replicas);
        let pki = ClusterPki::generate("c1").unwrap();
        let certs = allocation
            .replicas
            .iter()
            .map(|s| (s.index, pki.issue_replica(&spec, &allocation, s).unwrap()))
            .collect();
        Self {
            release: VersionMatrix::builtin().get(version).unwrap().clone(),
            spec,
            pki,
            certs,
            allocation,
        }
    }

    fn input(&self, profile: Profile) -> RenderInput<'_> {
        RenderInput {
            spec: &self.spec,
            incarnation: "0123456789abcdef",
            release: &self.release,
            pki: &self.pki,
            replica_certs: &self.certs,
            allocation: &self.allocation,
            profile,
        }
    }

    fn render(&self, profile: Profile) -> Vec<Placed> {
        render_cluster(&self.input(profile)).unwrap()
    }
}

fn find<'a>(placed: &'a [Placed], id: &str) -> &'a Container {
    &placed
        .iter()
        .find(|p| p.component.id == id)
        .unwrap_or_else(|| panic!("no component {id}"))
        .component
        .pod
        .containers[0]
}

fn flag<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
    let prefix = format!("--{name}=");
    c.args.iter().find_map(|a| a.strip_prefix(prefix.as_str()))
}

fn file<'a>(placed: &'a [Placed], id: &str, path: &str) -> &'a File {
    placed
        .iter()
        .find(|p| p.component.id == id)
        .unwrap()
        .component
        .pod
        .files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("no file {path} in {id}"))
}

#[test]
fn rendering_is_deterministic() {
    let fx = Fixture::new("1.37.2", 3);
    for profile in [Profile::Default, Profile::Dense] {
        let a = fx.render(profile);
        let b = fx.render(profile);
        assert_eq!(a, b);
        let hashes = |p: &[Placed]| {
            p.iter()
                .map(|p| p.component.spec_hash())
                .collect::<Vec<_>>()
        };
        assert_eq!(hashes(&a), hashes(&b));
        // Serialized bytes too (what the store keeps).
        assert_eq!(
            serde_json::to_string(&a.iter().map(|p| &p.component).collect::<Vec<_>>()).unwrap(),
            serde_json::to_string(&b.iter().map(|p| &p.component).collect::<Vec<_>>()).unwrap()
        );
    }
    // Slot order in the allocation does not matter.
    let mut shuffled = Fixture::new("1.37.2", 3);
    let again = shuffled.render(Profile::Default);
    shuffled.allocation.replicas.reverse();
    assert_eq!(shuffled.render(Profile::Default), again);
}

#[test]
fn components_are_named_and_placed_per_hypervisor() {
    let fx = Fixture::new("1.37.2", 3);
    let placed = fx.render(Profile::Default);
    let ids: Vec<&str> = placed.iter().map(|p| p.component.id.as_str()).collect();
    assert_eq!(ids, component_ids("c1", &[0, 1, 2]));
    assert_eq!(placed.len(), 13);
    for p in &placed {
        assert_eq!(p.component.cluster, "c1");
        let id = &p.component.id;
        let want = match id.rsplit_once('-') {
            _ if id == "c1/ingress" => "pub-0".to_string(),
            Some((_, i)) => format!("hv-{i}"),
            None => unreachable!(),
        };
        assert_eq!(p.hypervisor, want, "{id}");
        assert_eq!(p.component.pod.containers.len(), 1);
        let c = &p.component.pod.containers[0];
        assert_eq!(c.run_as_user, Some(0), "{id}");
        assert!(!c.command.is_empty() && c.command[0].starts_with("/usr/local/"));
        assert!(c.probe.is_some());
        assert!(c.resources.cpu_millis > 0 && c.resources.memory_bytes > 0);
    }
    for i in 0..3 {
        let etcd = find(&placed, &format!("c1/etcd-{i}"));
        let ports = &fx.allocation.replicas[i].ports;
        let port_list: Vec<u16> = etcd.ports.iter().map(|p| p.port).collect();
        assert_eq!(
            port_list,
            vec![ports.etcd_client, ports.etcd_peer, ports.etcd_metrics]
        );
        let api = find(&placed, &format!("c1/kube-apiserver-{i}"));
        assert_eq!(api.ports[0].port, ports.apiserver);
        let kcm = find(&placed, &format!("c1/kube-controller-manager-{i}"));
        assert_eq!(kcm.ports[0].port, ports.controller_manager);
        let sched = find(&placed, &format!("c1/kube-scheduler-{i}"));
        assert_eq!(sched.ports[0].port, ports.scheduler);
    }
    assert_eq!(find(&placed, "c1/ingress").ports[0].port, 31000);
}

#[test]
fn keys_live_only_in_0600_files() {
    let fx = Fixture::new("1.36.3", 3);
    let mut keys: Vec<String> = vec![
        fx.pki.service_account.private.expose().to_string(),
        fx.pki.client_ca.key.expose().to_string(),
        fx.pki.kubelet_serving_ca.key.expose().to_string(),
    ];
    for c in fx.certs.values() {
        for ck in [
            &c.apiserver,
            &c.apiserver_etcd_client,
            &c.apiserver_kubelet_client,
            &c.front_proxy_client,
            &c.etcd_server,
            &c.etcd_peer,
            &c.controller_manager,
            &c.scheduler,
        ] {
            keys.push(ck.key.expose().to_string());
        }
    }
    // The base64 body of each key, as it would appear anywhere.
    let bodies: Vec<String> = keys
        .iter()
        .map(|k| k.lines().filter(|l| !l.starts_with("-----")).collect())
        .collect();
    for profile in [Profile::Default, Profile::Dense] {
        for p in fx.render(profile) {
            let pod = &p.component.pod;
            for c in &pod.containers {
                let mut strings: Vec<&str> = c.command.iter().map(String::as_str).collect();
                strings.extend(c.args.iter().map(String::as_str));
                strings.extend(
                    c.env
                        .iter()
                        .flat_map(|e| [e.name.as_str(), e.value.as_str()]),
                );
                for s in strings {
                    assert!(!s.contains("PRIVATE KEY"), "{s}");
                    for b in &bodies {
                        assert!(!s.contains(&b[..40]), "key material in {s}");
                    }
                }
            }
            for f in &pod.files {
                let text = String::from_utf8(f.content.clone()).unwrap();
                let secret = text.contains("PRIVATE KEY") || text.contains("client-key-data");
                let named_secret = f.path.ends_with(".key") || f.path.ends_with(".conf");
                assert_eq!(secret, named_secret, "{}", f.path);
                let want = if secret { 0o600 } else { 0o644 };
                assert_eq!(f.mode, want, "{} {:o}", f.path, f.mode);
            }
            // The etcd and ingress pods hold no CA key; only the
            // controller-manager holds signing keys.
            let ca_key_files: Vec<&str> = pod
                .files
                .iter()
                .filter(|f| f.path.contains("-ca.key"))
                .map(|f| f.path.as_str())
                .collect();
            if p.component.id.contains("kube-controller-manager") {
                assert_eq!(
                    ca_key_files,
                    vec![
                        "kubernetes/pki/client-ca.key",
                        "kubernetes/pki/kubelet-serving-ca.key"
                    ]
                );
            } else {
                assert!(ca_key_files.is_empty(), "{}", p.component.id);
            }
        }
    }
}

#[test]
fn every_path_flag_names_a_rendered_file_or_mount() {
    let fx = Fixture::new("1.37.2", 3);
    for p in fx.render(Profile::Default) {
        let pod = &p.component.pod;
        let c = &pod.containers[0];
        let mut flags = Vec::new();
        for a in c.args.iter().chain(c.command.iter().skip(1)) {
            let value = a.split_once('=').map(|(_, v)| v).unwrap_or(a);
            if value.starts_with('/') {
                flags.push(value.to_string());
            }
        }
        assert!(!flags.is_empty());
        for path in flags {
            // The file the agent writes for that container path.
            let m = c
                .mounts
                .iter()
                .find(|m| path.starts_with(&m.container_path))
                .unwrap_or_else(|| panic!("{path} is on no mount of {}", p.component.id));
            let rel = format!(
                "{}{}",
                m.source,
                path.strip_prefix(m.container_path.as_str()).unwrap()
            );
            let is_mount_root = rel == m.source;
            assert!(
                is_mount_root || pod.files.iter().any(|f| f.path == rel),
                "{path} ({rel}) not rendered in {}",
                p.component.id
            );
        }
        // Flags are sorted and unique.
        let names: Vec<&str> = c
            .args
            .iter()
            .map(|a| a.split_once('=').unwrap().0)
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted, "{}", p.component.id);
    }
}

#[test]
fn etcd_knows_every_member_and_the_apiserver_its_own() {
    let fx = Fixture::new("1.37.2", 3);
    let placed = fx.render(Profile::Default);
    let etcd = find(&placed, "c1/etcd-1");
    let r = &fx.allocation.replicas;
    let peer = |i: usize| format!("https://{}:{}", r[i].address, r[i].ports.etcd_peer);
    let client = |i: usize| format!("https://{}:{}", r[i].address, r[i].ports.etcd_client);
    assert_eq!(flag(etcd, "name"), Some("c1-1"));
    assert_eq!(
        flag(etcd, "initial-cluster").unwrap(),
        format!("c1-0={},c1-1={},c1-2={}", peer(0), peer(1), peer(2))
    );
    assert_eq!(flag(etcd, "initial-cluster-state"), Some("new"));
    assert_eq!(
        flag(etcd, "listen-client-urls").unwrap(),
        format!("{},https://127.0.0.1:{}", client(1), r[1].ports.etcd_client)
    );
    assert_eq!(flag(etcd, "listen-peer-urls").unwrap(), peer(1));
    assert_eq!(flag(etcd, "initial-advertise-peer-urls").unwrap(), peer(1));
    assert_eq!(
        flag(etcd, "listen-metrics-urls").unwrap(),
        format!("http://127.0.0.1:{}", r[1].ports.etcd_metrics)
    );
    assert_eq!(flag(etcd, "client-cert-auth"), Some("true"));
    assert_eq!(flag(etcd, "peer-client-cert-auth"), Some("true"));
    assert_eq!(
        etcd.mounts
            .iter()
            .find(|m| m.source == "data")
            .map(|m| (&*m.container_path, m.read_only)),
        Some(("/var/lib/etcd", false))
    );
    let probe = etcd.probe.as_ref().unwrap();
    assert_eq!(
        (probe.scheme, probe.port, probe.path.as_str()),
        (Scheme::Http, r[1].ports.etcd_metrics, "/health")
    );
    // The etcd member trusts the etcd client CA for clients (and its own
    // server CA, for its gateway), never the peer CA.
    let ca = file(&placed, "c1/etcd-1", "kubernetes/pki/etcd/client-ca.crt");
    let ca = std::str::from_utf8(&ca.content).unwrap();
    assert!(ca.starts_with(&fx.pki.etcd_client_ca.cert_pem));
    assert!(ca.ends_with(&fx.pki.etcd_server_ca.cert_pem));
    assert!(!ca.contains(&fx.pki.etcd_peer_ca.cert_pem));
    let peer_ca = file(&placed, "c1/etcd-1", "kubernetes/pki/etcd/peer-ca.crt");
    assert_eq!(peer_ca.content, fx.pki.etcd_peer_ca.cert_pem.as_bytes());

    let api = find(&placed, "c1/kube-apiserver-2");
    // An API server talks to its own member only: replicas come and go
    // without restarting it.
    assert_eq!(
        flag(api, "etcd-servers").unwrap(),
        format!("https://127.0.0.1:{}", r[2].ports.etcd_client)
    );
    assert_eq!(flag(api, "advertise-address"), Some("198.51.100.7"));
    assert_eq!(flag(api, "bind-address"), Some("0.0.0.0"));
    assert_eq!(flag(api, "authorization-mode"), Some("Node,RBAC"));
    assert_eq!(flag(api, "service-cluster-ip-range"), Some("10.96.0.0/12"));
    assert_eq!(
        flag(api, "service-account-issuer"),
        Some("https://kubernetes.default.svc.cluster.local")
    );
    assert_eq!(
        flag(api, "secure-port").unwrap(),
        r[2].ports.apiserver.to_string()
    );
    let probe = api.probe.as_ref().unwrap();
    assert_eq!(
        (probe.scheme, probe.path.as_str()),
        (Scheme::Https, "/readyz")
    );
    // Its serving certificate carries the ingress address and service IP.
    let cert = file(
        &placed,
        "c1/kube-apiserver-2",
        "kubernetes/pki/apiserver.crt",
    );
    let text = String::from_utf8(cert.content.clone()).unwrap();
    with_cert(&text, |c| {
        let san = c.subject_alternative_name().unwrap().unwrap();
        let ips: Vec<Vec<u8>> = san
            .value
            .general_names
            .iter()
            .filter_map(|g| match g {
                x509_parser::extensions::GeneralName::IPAddress(b) => Some(b.to_vec()),
                _ => None,
            })
            .collect();
        assert!(ips.contains(&vec![198, 51, 100, 7]));
        assert!(ips.contains(&vec![10, 96, 0, 1]));
        assert!(ips.contains(&vec![192, 0, 2, 12]));
    });
}

#[test]
fn controller_manager_and_scheduler_use_their_own_identities() {
    for (replicas, profile, elect) in [
        (1, Profile::Default, "true"),
        (1, Profile::Dense, "false"),
        (3, Profile::Dense, "true"),
    ] {
        let fx = Fixture::new("1.37.2", replicas);
        let placed = fx.render(profile);
        let port = fx.allocation.replicas[0].ports.apiserver;
        for (id, conf, cn) in [
            (
                "c1/kube-controller-manager-0",
                "kubernetes/controller-manager.conf",
                "system:kube-controller-manager",
            ),
            (
                "c1/kube-scheduler-0",
                "kubernetes/scheduler.conf",
                "system:kube-scheduler",
            ),
        ] {
            let c = find(&placed, id);
            assert_eq!(flag(c, "leader-elect"), Some(elect));
            assert_eq!(flag(c, "bind-address"), Some("127.0.0.1"));
            let f = file(&placed, id, conf);
            assert_eq!(f.mode, 0o600);
            let cfg = kubeconfig::parse(std::str::from_utf8(&f.content).unwrap()).unwrap();
            assert_eq!(
                kubeconfig::server(&cfg),
                Some(format!("https://127.0.0.1:{port}").as_str())
            );
            let cert = kubeconfig::client_cert_pem(&cfg).unwrap();
            with_cert(&cert, |x| {
                let got: Vec<&str> = x
                    .subject()
                    .iter_common_name()
                    .map(|n| n.as_str().unwrap())
                    .collect();
                assert_eq!(got, vec![cn]);
                assert_eq!(x.subject().iter_organization().count(), 0);
            });
            for k in [
                "kubeconfig",
                "authentication-kubeconfig",
                "authorization-kubeconfig",
            ] {
                assert_eq!(flag(c, k), Some(&*format!("/etc/{conf}")));
            }
        }
        let kcm = find(&placed, "c1/kube-controller-manager-0");
        assert_eq!(
            flag(kcm, "controllers"),
            Some("*,bootstrapsigner,tokencleaner")
        );
        assert_eq!(flag(kcm, "use-service-account-credentials"), Some("true"));
        assert_eq!(flag(kcm, "allocate-node-cidrs"), Some("true"));
        assert_eq!(flag(kcm, "cluster-cidr"), Some("10.244.0.0/16"));
        assert_eq!(
            flag(kcm, "root-ca-file"),
            Some("/etc/kubernetes/pki/ca.crt")
        );
        assert_eq!(
            file(
                &placed,
                "c1/kube-controller-manager-0",
                "kubernetes/pki/ca.crt"
            )
            .content,
            fx.pki.apiserver_ca.cert_pem.as_bytes()
        );
    }
}

#[test]
fn version_specific_flags_and_images() {
    for version in VersionMatrix::builtin().versions() {
        let placed = Fixture::new(version, 1).render(Profile::Default);
        for id in ["c1/kube-controller-manager-0", "c1/kube-scheduler-0"] {
            assert_eq!(flag(find(&placed, id), "port"), None, "{version} {id}");
        }
        assert_eq!(
            flag(find(&placed, "c1/kube-apiserver-0"), "insecure-port"),
            None
        );
        let etcd = find(&placed, "c1/etcd-0");
        assert_eq!(
            flag(etcd, "feature-gates"),
            Some("InitialCorruptCheck=true")
        );
        assert_eq!(flag(etcd, "watch-progress-notify-interval"), Some("5s"));
        assert_eq!(
            find(&placed, "c1/kube-apiserver-0").image,
            format!("registry.k8s.io/kube-apiserver:v{version}")
        );
    }
    let etcd_image = |v| {
        find(&Fixture::new(v, 1).render(Profile::Default), "c1/etcd-0")
            .image
            .clone()
    };
    assert_eq!(etcd_image("1.36.3"), "registry.k8s.io/etcd:3.6.8-0");
    assert_eq!(etcd_image("1.37.2"), "registry.k8s.io/etcd:3.7.0-0");
}

#[test]
fn image_repository_override_reaches_every_pod() {
    let mut fx = Fixture::new("1.37.2", 1);
    fx.release = VersionMatrix::builtin()
        .with_image_repository("localhost/oneinfra")
        .get("1.37.2")
        .unwrap()
        .clone();
    let placed = fx.render(Profile::Default);
    let images: Vec<&str> = placed
        .iter()
        .map(|p| p.component.pod.containers[0].image.as_str())
        .collect();
    assert_eq!(
        images,
        vec![
            "localhost/oneinfra/etcd:3.7.0-0",
            "localhost/oneinfra/haproxy:2.6",
            "localhost/oneinfra/kube-apiserver:v1.37.2",
            "localhost/oneinfra/kube-controller-manager:v1.37.2",
            "localhost/oneinfra/kube-scheduler:v1.37.2",
        ]
    );
}

#[test]
fn dense_profile_is_smaller() {
    let fx = Fixture::new("1.37.2", 1);
    let def = fx.render(Profile::Default);
    let dense = fx.render(Profile::Dense);
    let total = |p: &[Placed]| {
        p.iter()
            .map(|p| p.component.pod.containers[0].resources)
            .fold(Resources::default(), |a, b| a + b)
    };
    assert!(total(&dense).cpu_millis < total(&def).cpu_millis);
    assert!(total(&dense).memory_bytes < total(&def).memory_bytes);
    let env = |p: &[Placed], id: &str| {
        find(p, id)
            .env
            .iter()
            .map(|e| format!("{}={}", e.name, e.value))
            .collect::<Vec<_>>()
    };
    assert!(env(&def, "c1/kube-apiserver-0").is_empty());
    let dense_env = env(&dense, "c1/kube-apiserver-0");
    assert!(dense_env.contains(&"GOGC=30".to_string()), "{dense_env:?}");
    let etcd_env = env(&dense, "c1/etcd-0");
    assert!(etcd_env.contains(&"GOGC=50".to_string()), "{etcd_env:?}");
    assert!(dense_env.iter().any(|e| e.starts_with("GOMEMLIMIT=")));
    assert_eq!(flag(find(&def, "c1/kube-apiserver-0"), "watch-cache"), None);
    assert_eq!(
        flag(find(&dense, "c1/kube-apiserver-0"), "watch-cache"),
        Some("false")
    );
    assert_eq!(
        flag(
            find(&dense, "c1/kube-apiserver-0"),
            "etcd-count-metric-poll-period"
        ),
        Some("0")
    );
    assert_eq!(
        flag(
            find(&def, "c1/kube-apiserver-0"),
            "etcd-count-metric-poll-period"
        ),
        None
    );
    assert_eq!(
        flag(find(&def, "c1/etcd-0"), "snapshot-count"),
        Some("10000")
    );
    assert_eq!(
        flag(find(&dense, "c1/etcd-0"), "snapshot-count"),
        Some("2500")
    );
    assert!(flag(find(&dense, "c1/etcd-0"), "quota-backend-bytes").is_some());
    let period = |placed: &[Placed], id: &str| find(placed, id).probe.as_ref().unwrap().period_ms;
    for id in ["c1/etcd-0", "c1/kube-apiserver-0", "c1/ingress"] {
        assert_eq!((id, period(&def, id)), (id, 5_000));
        assert_eq!((id, period(&dense, id)), (id, 10_000));
    }
    for (name, dense_value) in [("heartbeat-interval", "250"), ("election-timeout", "2500")] {
        assert_eq!(flag(find(&def, "c1/etcd-0"), name), None);
        assert_eq!(flag(find(&dense, "c1/etcd-0"), name), Some(dense_value));
    }
    // The soft memory limit sits above the request.
    for kind in [
        Kind::Etcd,
        Kind::Apiserver,
        Kind::ControllerManager,
        Kind::Scheduler,
    ] {
        let s = sizing(kind, Profile::Dense);
        assert!(s.go.unwrap().gomemlimit_mib > s.memory_mib, "{kind:?}");
    }
}

#[test]
fn haproxy_balances_over_every_apiserver() {
    let fx = Fixture::new("1.37.2", 3);
    let placed = fx.render(Profile::Default);
    let cfg = file(&placed, "c1/ingress", "haproxy/haproxy.cfg");
    assert_eq!(cfg.mode, 0o644);
    let text = std::str::from_utf8(&cfg.content).unwrap();
    for want in [
        "  bind *:31000",
        "  mode tcp",
        "  option httpchk GET /readyz",
        "  http-check expect status 200",
        "  timeout tunnel 1h",
        // a down apiserver is looked at every second and back at its
        // first pass: a new control plane is reachable as soon as ready
        "  default-server inter 5s fastinter 1s downinter 1s fall 3 rise 1",
    ] {
        assert!(text.lines().any(|l| l == want), "{want} in\n{text}");
    }
    let servers: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("  server "))
        .collect();
    assert_eq!(servers.len(), 3);
    for (i, s) in fx.allocation.replicas.iter().enumerate() {
        assert_eq!(
            servers[i],
            format!(
                "  server replica-{i} {}:{} check check-ssl verify none",
                s.address, s.ports.apiserver
            )
        );
    }
    assert!(!text.contains("daemon"));
    let c = find(&placed, "c1/ingress");
    assert_eq!(
        c.command,
        vec![
            "/usr/local/sbin/haproxy",
            "-W",
            "-db",
            "-f",
            "/usr/local/etc/haproxy/haproxy.cfg"
        ]
    );
    let probe = c.probe.as_ref().unwrap();
    assert_eq!(
        (probe.scheme, probe.port, probe.path.as_str()),
        (Scheme::Https, 31000, "/readyz")
    );
}

#[test]
fn etcd_on_a_loopback_hypervisor_listens_once() {
    let mut fx = Fixture::new("1.37.2", 1);
    fx.allocation.replicas[0].address = "127.0.0.1".into();
    let placed = fx.render(Profile::Default);
    let port = fx.allocation.replicas[0].ports.etcd_client;
    assert_eq!(
        flag(find(&placed, "c1/etcd-0"), "listen-client-urls").unwrap(),
        format!("https://127.0.0.1:{port}")
    );
}

#[test]
fn ipv6_addresses_are_bracketed() {
    let mut fx = Fixture::new("1.37.2", 1);
    fx.allocation.replicas[0].address = "fd00::10".into();
    fx.allocation.ingress.address = "fd00::7".into();
    let placed = fx.render(Profile::Default);
    let etcd = find(&placed, "c1/etcd-0");
    let p = fx.allocation.replicas[0].ports;
    assert_eq!(
        flag(etcd, "listen-peer-urls").unwrap(),
        format!("https://[fd00::10]:{}", p.etcd_peer)
    );
    let cfg = file(&placed, "c1/ingress", "haproxy/haproxy.cfg");
    assert!(std::str::from_utf8(&cfg.content)
        .unwrap()
        .contains(&format!("[fd00::10]:{}", p.apiserver)));
}

#[test]
fn bad_inputs_are_refused_with_a_hint() {
    let fx = Fixture::new("1.37.2", 3);
    let other = VersionMatrix::builtin().get("1.35.4").unwrap().clone();
    let mut input = fx.input(Profile::Default);
    input.release = &other;
    assert!(matches!(
        render_cluster(&input),
        Err(RenderError::VersionMismatch { .. })
    ));

    let mut missing = fx.certs.clone();
    missing.remove(&1);
    let mut input = fx.input(Profile::Default);
    input.replica_certs = &missing;
    assert_eq!(render_cluster(&input), Err(RenderError::MissingCerts(1)));

    let mut alloc = fx.allocation.clone();
    alloc.ingress.address = "ingress.example.com".into();
    let mut input = fx.input(Profile::Default);
    input.allocation = &alloc;
    let err = render_cluster(&input).unwrap_err();
    assert!(err.to_string().contains("not an IP address"), "{err}");

    let mut alloc = fx.allocation.clone();
    alloc.replicas[2].index = 0;
    let mut input = fx.input(Profile::Default);
    input.allocation = &alloc;
    assert_eq!(render_cluster(&input), Err(RenderError::DuplicateSlot(0)));

    let mut alloc = fx.allocation.clone();
    alloc.replicas.clear();
    let mut input = fx.input(Profile::Default);
    input.allocation = &alloc;
    assert_eq!(render_cluster(&input), Err(RenderError::NoReplicas));
}

#[test]
fn profiles_parse() {
    assert_eq!("dense".parse::<Profile>().unwrap(), Profile::Dense);
    assert_eq!("default".parse::<Profile>().unwrap(), Profile::Default);
    assert!("big".parse::<Profile>().unwrap_err().contains("dense"));
}

/// The rendered pods of every version and profile, as golden files
/// (`golden/<version>-<profile>.json`): a change to any flag, image, port,
/// mount, probe or resource shows up in review instead of restarting pods
/// unnoticed. File contents are kept where they are the same on every
/// render; keys and certificates (fresh per fixture) are replaced by a
/// placeholder. `OI_UPDATE_GOLDEN=1 cargo test -p oi-coordinator golden`
/// rewrites them.
/// Replaces every `*-data` string (a kubeconfig's embedded PEM) by a marker.
fn mask_embedded_material(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if k.ends_with("-data") && v.is_string() {
                    *v = "<key or certificate material>".into();
                } else {
                    mask_embedded_material(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(mask_embedded_material),
        _ => {}
    }
}

#[test]
fn rendered_pods_match_the_golden_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cluster/render/golden");
    let update = std::env::var_os("OI_UPDATE_GOLDEN").is_some();
    let mut stale = Vec::new();
    for version in VersionMatrix::builtin().versions() {
        for profile in [Profile::Default, Profile::Dense] {
            let placed = Fixture::new(version, 3).render(profile);
            let mut pods = serde_json::Map::new();
            for p in &placed {
                let mut pod = serde_json::to_value(&p.component.pod).unwrap();
                for f in pod["files"].as_array_mut().into_iter().flatten() {
                    let text = f["content"]
                        .as_str()
                        .and_then(|b| {
                            use base64::Engine;
                            base64::engine::general_purpose::STANDARD.decode(b).ok()
                        })
                        .and_then(|b| String::from_utf8(b).ok())
                        .filter(|t| !t.contains("-----BEGIN"));
                    f["content"] = match text {
                        // Kubeconfigs are JSON: keep their shape, mask the
                        // embedded certificates and keys (fresh each run).
                        Some(t) => match serde_json::from_str::<serde_json::Value>(&t) {
                            Ok(mut doc) => {
                                mask_embedded_material(&mut doc);
                                doc
                            }
                            Err(_) => t.into(),
                        },
                        None => "<key or certificate material>".into(),
                    };
                }
                pods.insert(p.component.id.clone(), pod);
            }
            let got = serde_json::to_string_pretty(&pods).unwrap() + "\n";
            let name = if profile == Profile::Dense {
                "dense"
            } else {
                "default"
            };
            let path = dir.join(format!("{version}-{name}.json"));
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &got).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(got.as_str()) {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "rendered pods differ from {stale:?}; if the change is intended, rerun with \
         OI_UPDATE_GOLDEN=1 and review the diff"
    );
}
