//! The agent link, coordinator side: a QUIC endpoint that accepts agents,
//! authenticates them by the client certificate this coordinator's CA
//! issued, and runs one [`session`] per connection.

pub mod admission;
pub mod endpoint;
mod session;

use crate::coordinator::Inner;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Accepts connections until `shutdown` flips, then closes every session
/// with [`oi_proto::pb::CloseCode::CloseNormal`] and waits (bounded) for
/// them to finish.
pub(crate) async fn serve(
    endpoint: quinn::Endpoint,
    inner: Arc<Inner>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut sessions = JoinSet::new();
    let limiter = inner.config.link_accept_rate.map(|rate| {
        governor::RateLimiter::direct(governor::Quota::per_second(rate).allow_burst(rate))
    });
    loop {
        tokio::select! {
            _ = crate::stopped(&mut shutdown) => break,
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                if limiter.as_ref().is_some_and(|l| l.check().is_err()) {
                    // Refused at once: the agent backs off and retries,
                    // instead of a handshake we cannot serve timing out.
                    inner.metrics.rejected("rate_limited");
                    incoming.refuse();
                    continue;
                }
                let inner = inner.clone();
                let shutdown = shutdown.clone();
                sessions.spawn(session::handle(incoming, inner, shutdown));
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    // Drain: stop accepting, let sessions close themselves, then give up.
    endpoint.set_server_config(None);
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = sessions.len(),
            "sessions did not finish in time; aborting them"
        );
        sessions.abort_all();
    }
    endpoint.close(
        oi_proto::pb::CloseCode::CloseNormal.varint(),
        b"coordinator shutting down",
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
}
