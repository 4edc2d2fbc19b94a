//! The Kubernetes versions oneinfra can run: images and the flags that
//! differ between releases, as data. Rendering (`super::render`) adds these
//! flags to the common ones; nothing else branches on the version.

use crate::operations::VersionInfo;

/// Where each binary lives, in the upstream images and in the test bed's
/// side-loaded images alike. Rendering always sets `command` explicitly.
pub mod bin {
    pub const ETCD: &str = "/usr/local/bin/etcd";
    pub const KUBE_APISERVER: &str = "/usr/local/bin/kube-apiserver";
    pub const KUBE_CONTROLLER_MANAGER: &str = "/usr/local/bin/kube-controller-manager";
    pub const KUBE_SCHEDULER: &str = "/usr/local/bin/kube-scheduler";
    pub const HAPROXY: &str = "/usr/local/sbin/haproxy";
}

/// Container images of one release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    pub etcd: String,
    pub apiserver: String,
    pub controller_manager: String,
    pub scheduler: String,
    pub haproxy: String,
    /// The cluster DNS add-on the release pairs with (kubeadm's choice).
    pub coredns: String,
    /// The kube-proxy add-on (a DaemonSet on the workers).
    pub kube_proxy: String,
}

impl Images {
    fn all_mut(&mut self) -> [&mut String; 7] {
        [
            &mut self.kube_proxy,
            &mut self.etcd,
            &mut self.apiserver,
            &mut self.controller_manager,
            &mut self.scheduler,
            &mut self.haproxy,
            &mut self.coredns,
        ]
    }
}

/// One `--name=value` flag (name without the dashes).
pub type Flag = (&'static str, &'static str);

/// Flags one release adds to (or overrides in) the common flags of each
/// component. Rendering applies them after the common flags, so a flag
/// named here wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionFlags {
    pub etcd: Vec<Flag>,
    pub apiserver: Vec<Flag>,
    pub controller_manager: Vec<Flag>,
    pub scheduler: Vec<Flag>,
}

/// One supported Kubernetes release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    /// e.g. "1.37.2" (no leading v).
    pub version: String,
    pub images: Images,
    pub flags: VersionFlags,
}

impl Release {
    /// The release's version as numbers, for ordering.
    fn key(&self) -> Vec<u64> {
        version_key(&self.version)
    }
}

fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

const HAPROXY_IMAGE: &str = "docker.io/library/haproxy:2.6";

/// etcd 3.6 and later (kubeadm 1.34+): the initial corruption check is a
/// feature gate, and the progress-notify interval lost its `experimental-`
/// prefix (the apiserver relies on progress notifications for watch
/// bookmarks). Both checked against `etcd --help` of 3.6.8 and 3.7.0.
const ETCD_36: [Flag; 2] = [
    ("feature-gates", "InitialCorruptCheck=true"),
    ("watch-progress-notify-interval", "5s"),
];

/// One release. `etcd` and `coredns` are the versions it pairs with: what
/// kubeadm of that release names (`DefaultEtcdVersion`, `CoreDNSVersion`),
/// or the nearest newer one where that exact release is not published as a
/// Go module for the test bed to build (tests/bed/versions.tsv, which a test
/// keeps equal to this table).
fn release(version: &str, etcd: &str, coredns: &str, flags: VersionFlags) -> Release {
    let k = |name: &str| format!("registry.k8s.io/{name}:v{version}");
    Release {
        version: version.into(),
        images: Images {
            etcd: format!("registry.k8s.io/etcd:{etcd}-0"),
            apiserver: k("kube-apiserver"),
            controller_manager: k("kube-controller-manager"),
            scheduler: k("kube-scheduler"),
            haproxy: HAPROXY_IMAGE.into(),
            coredns: format!("registry.k8s.io/coredns/coredns:v{coredns}"),
            kube_proxy: k("kube-proxy"),
        },
        flags,
    }
}

/// Every supported release, ordered by version. The newest is the default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionMatrix {
    releases: Vec<Release>,
}

impl VersionMatrix {
    /// The releases this build of oneinfra supports: three consecutive
    /// minors. Every flag each component gets was checked against that
    /// release's `--help` (tests/tests/render_host.rs does it again for
    /// every version, and fails on an unknown or deprecated flag).
    pub fn builtin() -> Self {
        let etcd36 = || VersionFlags {
            etcd: ETCD_36.to_vec(),
            ..Default::default()
        };
        let mut releases = vec![
            release("1.35.4", "3.6.8", "1.14.3", etcd36()),
            release("1.36.3", "3.6.8", "1.14.3", etcd36()),
            release("1.37.2", "3.7.0", "1.14.6", etcd36()),
        ];
        releases.sort_by_key(Release::key);
        Self { releases }
    }

    /// Replaces registry and path of every image by `repo`, keeping the last
    /// path element and the tag: `registry.k8s.io/kube-apiserver:v1.37.2`
    /// becomes `<repo>/kube-apiserver:v1.37.2`.
    pub fn with_image_repository(mut self, repo: &str) -> Self {
        let repo = repo.trim_end_matches('/');
        for r in &mut self.releases {
            for image in r.images.all_mut() {
                *image = rebase_image(image, repo);
            }
        }
        self
    }

    pub fn get(&self, version: &str) -> Option<&Release> {
        self.releases.iter().find(|r| r.version == version)
    }

    /// The version a cluster gets when its spec names none: the newest.
    pub fn default_version(&self) -> &str {
        self.releases
            .last()
            .map(|r| r.version.as_str())
            .expect("the matrix has at least one release")
    }

    /// Supported versions, oldest first.
    pub fn versions(&self) -> Vec<&str> {
        self.releases.iter().map(|r| r.version.as_str()).collect()
    }

    pub fn releases(&self) -> &[Release] {
        &self.releases
    }

    /// What `oi version --kubernetes` shows, oldest first.
    pub fn infos(&self) -> Vec<VersionInfo> {
        let default = self.default_version();
        self.releases
            .iter()
            .map(|r| VersionInfo {
                kubernetes_version: r.version.clone(),
                default: r.version == default,
                etcd_image: r.images.etcd.clone(),
                apiserver_image: r.images.apiserver.clone(),
                controller_manager_image: r.images.controller_manager.clone(),
                scheduler_image: r.images.scheduler.clone(),
                haproxy_image: r.images.haproxy.clone(),
                coredns_image: r.images.coredns.clone(),
            })
            .collect()
    }
}

/// Whether `repo` is an image repository prefix that images can be put
/// under: `[HOST[:PORT]/]PATH` as in the distribution reference grammar.
/// The first component is a registry host when it has a '.' or a ':' or is
/// `localhost`, and only it may carry a port (air-gapped registries often
/// listen on :5000); every path component is lowercase letters and digits
/// joined by '.', '_', '__' or '-'. No tag, no digest, no trailing '/'.
pub fn check_image_repository(repo: &str) -> Result<(), String> {
    if repo.is_empty() {
        return Err("it is empty".into());
    }
    if repo.ends_with('/') {
        return Err("it ends with '/'".into());
    }
    if repo.contains('@') {
        return Err("it has a digest".into());
    }
    let mut parts = repo.split('/');
    let first = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    let is_host =
        !rest.is_empty() && (first.contains('.') || first.contains(':') || first == "localhost");
    let path: Vec<&str> = if is_host {
        let (host, port) = match first.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (first, None),
        };
        let host_ok = !host.is_empty()
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !host_ok {
            return Err(format!("{host:?} is not a registry host name"));
        }
        if let Some(p) = port {
            if !p.parse::<u16>().is_ok_and(|n| n > 0) {
                return Err(format!("{p:?} is not a port"));
            }
        }
        rest
    } else {
        std::iter::once(first).chain(rest).collect()
    };
    for c in path {
        let ok = !c.is_empty()
            && c.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            })
            && c.as_bytes()[0].is_ascii_alphanumeric()
            && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric();
        if !ok {
            return Err(if c.contains(':') {
                "only the registry host may carry a ':' (a port); a tag is not allowed".into()
            } else {
                format!("path component {c:?} must be lowercase letters and digits, joined by '.', '_' or '-'")
            });
        }
    }
    Ok(())
}

fn rebase_image(image: &str, repo: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    format!("{repo}/{last}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_repository_prefixes() {
        let good = [
            "registry.example.com/k8s",
            "registry.example.com:5000/k8s",
            "localhost:5000/k8s",
            "localhost/a/b",
            "10.0.0.1:5000/mirror/k8s",
            "k8s",
            "mirror/k8s",
            "registry.example.com",
        ];
        for r in good {
            assert_eq!(check_image_repository(r), Ok(()), "{r}");
        }
        let bad = [
            "",
            "x/",
            "registry.example.com/k8s:v1",
            "registry.example.com:port/k8s",
            "registry.example.com:0/k8s",
            "registry.example.com/K8s",
            "registry.example.com/k8s@sha256:00",
            "a b/k8s",
            "-bad.example.com/k8s",
            "registry.example.com//k8s",
        ];
        for r in bad {
            assert!(check_image_repository(r).is_err(), "{r}");
        }
        let mut m = VersionMatrix::builtin().with_image_repository("registry.example.com:5000/k8s");
        for image in m.releases[0].images.all_mut() {
            assert!(
                image.starts_with("registry.example.com:5000/k8s/"),
                "{image}"
            );
        }
    }

    #[test]
    fn builtin_versions_are_sorted_and_complete() {
        let m = VersionMatrix::builtin();
        assert_eq!(m.versions(), vec!["1.35.4", "1.36.3", "1.37.2"]);
        assert_eq!(m.default_version(), "1.37.2");
        let r = m.get("1.37.2").unwrap();
        assert_eq!(r.images.apiserver, "registry.k8s.io/kube-apiserver:v1.37.2");
        assert_eq!(r.images.etcd, "registry.k8s.io/etcd:3.7.0-0");
        assert_eq!(r.images.coredns, "registry.k8s.io/coredns/coredns:v1.14.6");
        assert_eq!(r.images.haproxy, "docker.io/library/haproxy:2.6");
        assert_eq!(
            m.get("1.35.4").unwrap().images.etcd,
            "registry.k8s.io/etcd:3.6.8-0"
        );
        assert!(m.get("1.20.2").is_none());
        let infos = m.infos();
        assert_eq!(infos.len(), 3);
        assert_eq!(
            infos[0].scheduler_image,
            "registry.k8s.io/kube-scheduler:v1.35.4"
        );
        let defaults: Vec<&str> = infos
            .iter()
            .filter(|i| i.default)
            .map(|i| i.kubernetes_version.as_str())
            .collect();
        assert_eq!(defaults, ["1.37.2"]);
    }

    #[test]
    fn version_sort_is_numeric() {
        let mut v = vec!["1.9.0", "1.10.0", "1.100.1"];
        v.sort_by_key(|s| version_key(s));
        assert_eq!(v, vec!["1.9.0", "1.10.0", "1.100.1"]);
    }

    #[test]
    fn no_release_gets_flags_its_binaries_dropped() {
        // kube-apiserver lost --insecure-port in 1.24, the controller-manager
        // and the scheduler lost --port in 1.24 and 1.23.
        for r in VersionMatrix::builtin().releases() {
            let f = &r.flags;
            assert!(f.apiserver.iter().all(|(n, _)| *n != "insecure-port"));
            assert!(f.controller_manager.iter().all(|(n, _)| *n != "port"));
            assert!(f.scheduler.iter().all(|(n, _)| *n != "port"));
            assert!(f
                .etcd
                .contains(&("feature-gates", "InitialCorruptCheck=true")));
        }
    }

    #[test]
    fn image_repository_override_keeps_name_and_tag() {
        let m = VersionMatrix::builtin().with_image_repository("localhost/oneinfra/");
        let r = m.get("1.37.2").unwrap();
        assert_eq!(
            r.images.apiserver,
            "localhost/oneinfra/kube-apiserver:v1.37.2"
        );
        assert_eq!(
            r.images.controller_manager,
            "localhost/oneinfra/kube-controller-manager:v1.37.2"
        );
        assert_eq!(r.images.etcd, "localhost/oneinfra/etcd:3.7.0-0");
        assert_eq!(r.images.haproxy, "localhost/oneinfra/haproxy:2.6");
        assert_eq!(r.images.coredns, "localhost/oneinfra/coredns:v1.14.6");
    }
}
