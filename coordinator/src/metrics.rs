//! Prometheus metrics of the coordinator, served on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HypervisorLabel {
    pub hypervisor: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    pub connected_agents: Gauge,
    pub placement_generation: Family<HypervisorLabel, Gauge>,
    pub store_write_seconds: Histogram,
    pub rejected_connections: Family<ReasonLabel, Counter>,
    pub placement_messages: Family<ReasonLabel, Counter>,
    pub join_attempts: Family<ReasonLabel, Counter>,
    pub certificates_renewed: Counter,
    pub membership_step_failures: Family<ReasonLabel, Counter>,
    pub serving_csrs: Family<ReasonLabel, Counter>,
    pub node_sync_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("oi_coordinator");
        let connected_agents = Gauge::default();
        registry.register(
            "connected_agents",
            "Agents with an established link",
            connected_agents.clone(),
        );
        let placement_generation = Family::<HypervisorLabel, Gauge>::default();
        registry.register(
            "placement_generation",
            "Current placement generation per hypervisor",
            placement_generation.clone(),
        );
        let store_write_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "store_write_seconds",
            "Latency of durable store writes",
            store_write_seconds.clone(),
        );
        let rejected_connections = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "rejected_connections",
            "Agent connections refused, by reason",
            rejected_connections.clone(),
        );
        let placement_messages = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "placement_messages",
            "Placement messages sent to agents, by kind (snapshot, update)",
            placement_messages.clone(),
        );
        let join_attempts = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "join_attempts",
            "Join attempts by result (joined, rate_limited, invalid_token, expired_token, ...)",
            join_attempts.clone(),
        );
        let certificates_renewed = Counter::default();
        registry.register(
            "certificates_renewed",
            "Hypervisor certificates renewed over the link",
            certificates_renewed.clone(),
        );
        let membership_step_failures = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "membership_step_failures",
            "Managed clusters' etcd membership steps that failed, by step (promote, add, remove, ...)",
            membership_step_failures.clone(),
        );
        let serving_csrs = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "serving_csrs",
            "Kubelet serving CSRs of managed clusters decided, by decision (approved, denied)",
            serving_csrs.clone(),
        );
        let node_sync_failures = Counter::default();
        registry.register(
            "node_sync_failures",
            "Node syncs of managed clusters (join tokens, cluster-info, CSRs) that failed",
            node_sync_failures.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            membership_step_failures,
            serving_csrs,
            node_sync_failures,
            join_attempts,
            certificates_renewed,
            connected_agents,
            placement_generation,
            store_write_seconds,
            rejected_connections,
            placement_messages,
        }
    }

    pub fn rejected(&self, reason: &str) {
        self.rejected_connections
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn sent(&self, kind: &str) {
        self.placement_messages
            .get_or_create(&ReasonLabel {
                reason: kind.to_string(),
            })
            .inc();
    }

    pub fn serving_csr(&self, decision: &str) {
        self.serving_csrs
            .get_or_create(&ReasonLabel {
                reason: decision.to_string(),
            })
            .inc();
    }

    pub fn membership_failed(&self, step: &str) {
        self.membership_step_failures
            .get_or_create(&ReasonLabel {
                reason: step.to_string(),
            })
            .inc();
    }

    pub fn join_attempt(&self, result: &str) {
        self.join_attempts
            .get_or_create(&ReasonLabel {
                reason: result.to_string(),
            })
            .inc();
    }

    pub fn set_generation(&self, hypervisor: &str, generation: u64) {
        self.placement_generation
            .get_or_create(&HypervisorLabel {
                hypervisor: hypervisor.to_string(),
            })
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
    }

    pub fn forget_hypervisor(&self, hypervisor: &str) {
        self.placement_generation.remove(&HypervisorLabel {
            hypervisor: hypervisor.to_string(),
        });
    }

    pub fn observe_store_write(&self, took: Duration) {
        self.store_write_seconds.observe(took.as_secs_f64());
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}
