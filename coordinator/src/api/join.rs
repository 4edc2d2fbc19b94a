//! The unauthenticated Join service and its rate limits: per source address
//! (a keyed GCRA limiter) and over all sources (a direct one). An attempt
//! over either limit is answered RESOURCE_EXHAUSTED before its token is
//! looked at; it is counted (`oi_coordinator_join_attempts_total{reason=
//! "rate_limited"}`) and logged at debug level only, so that a flood does
//! not flood the log. Attempts within the limits are logged by the
//! coordinator with their source and the reason of a refusal.

use super::status::to_status;
use crate::config::JoinLimits;
use crate::metrics::Metrics;
use crate::operations::{JoinRequest, OpError, Operations};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use oi_proto::api as pb;
use oi_proto::api::join_server::Join;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// How the Join service limits attempts, and where it counts them.
#[derive(Clone, Default)]
pub struct JoinSettings {
    pub limits: JoinLimits,
    pub metrics: Option<Arc<Metrics>>,
}

/// Which limit an attempt ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limited {
    PerAddress,
    Global,
}

pub struct JoinLimiter {
    per_address: DefaultKeyedRateLimiter<IpAddr>,
    global: DefaultDirectRateLimiter,
    checks: AtomicU64,
}

impl JoinLimiter {
    pub fn new(limits: JoinLimits) -> Self {
        let per_address =
            Quota::per_minute(limits.per_address_per_minute).allow_burst(limits.per_address_burst);
        Self {
            per_address: RateLimiter::keyed(per_address),
            global: RateLimiter::direct(Quota::per_second(limits.global_per_second)),
            checks: AtomicU64::new(0),
        }
    }

    /// Takes one attempt from `peer`'s allowance and the global one.
    pub fn check(&self, peer: Option<IpAddr>) -> Result<(), Limited> {
        // Forget idle addresses now and then, so that many sources do not
        // grow the table for good.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.per_address.retain_recent();
            self.per_address.shrink_to_fit();
        }
        let key = peer.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        self.per_address
            .check_key(&key)
            .map_err(|_| Limited::PerAddress)?;
        self.global.check().map_err(|_| Limited::Global)
    }
}

#[derive(Clone)]
pub struct JoinApi {
    pub ops: Arc<dyn Operations>,
    pub limiter: Arc<JoinLimiter>,
    pub metrics: Option<Arc<Metrics>>,
}

#[tonic::async_trait]
impl Join for JoinApi {
    async fn join(
        &self,
        req: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let peer = req.remote_addr();
        if let Err(which) = self.limiter.check(peer.map(|p| p.ip())) {
            if let Some(m) = &self.metrics {
                m.join_attempt("rate_limited");
            }
            tracing::debug!(?peer, ?which, "join attempt rate-limited");
            let scope = match which {
                Limited::PerAddress => "from this address",
                Limited::Global => "in total",
            };
            return Err(to_status(OpError::ResourceExhausted(format!(
                "too many join attempts {scope}: wait a minute and retry"
            ))));
        }
        let r = req.into_inner();
        let joined = self
            .ops
            .join_hypervisor(JoinRequest {
                token: r.token,
                name: r.name,
                csr_pem: r.csr_pem,
                peer,
            })
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::JoinResponse {
            certificate_pem: joined.certificate_pem,
            ca_pem: joined.ca_pem,
            link_address: joined.link_address,
            server_name: joined.server_name,
            role: joined.role.as_str().to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    #[test]
    fn per_address_burst_then_refusal_and_a_global_cap() {
        let n = |v| NonZeroU32::new(v).unwrap();
        let limiter = JoinLimiter::new(JoinLimits {
            per_address_per_minute: n(5),
            per_address_burst: n(3),
            global_per_second: n(5),
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let results: Vec<_> = (0..5).map(|_| limiter.check(Some(a))).collect();
        assert_eq!(
            results,
            [
                Ok(()),
                Ok(()),
                Ok(()),
                Err(Limited::PerAddress),
                Err(Limited::PerAddress)
            ]
        );
        // Other addresses have their own allowance, up to the global cap
        // (5 per second: 3 taken above).
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        assert_eq!(limiter.check(Some(b)), Ok(()));
        assert_eq!(limiter.check(Some(c)), Ok(()));
        assert_eq!(limiter.check(Some(c)), Err(Limited::Global));
    }
}
