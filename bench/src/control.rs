//! The bench coordinator's control endpoint: plain HTTP on localhost,
//! through which the driver writes placements and reads timestamps. The
//! coordinator has no API for raw placement writes, hence this side door;
//! it calls the same `Coordinator` methods the rest of the code uses.

use anyhow::{anyhow, bail, Context, Result};
use oi_proto::model::{Component, Container, File, PodSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Reply to `POST /upsert` and `POST /fanout`.
#[derive(Debug, Serialize, Deserialize)]
pub struct WriteReply {
    /// CLOCK_MONOTONIC ns right after the write call returned.
    pub done_ns: u64,
    /// How long the write call took (store transaction and index update).
    pub write_ns: u64,
    /// New generation of every hypervisor that changed.
    pub generations: BTreeMap<String, u64>,
}

/// Reply to `GET /stats`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stats {
    pub epoch: String,
    /// Agents with an established link (the coordinator's gauge).
    pub connected: usize,
    /// Live heap bytes and allocation calls of the coordinator process.
    pub heap_live_bytes: u64,
    pub heap_allocs: u64,
}

/// Name of simulated agent `i` (and of its hypervisor).
pub fn agent_name(i: usize) -> String {
    format!("bench-hv-{i:05}")
}

/// The component every write puts on a hypervisor: one container with a
/// few arguments and one small file, like a control-plane pod with its
/// certificate, so that a snapshot is a few hundred bytes.
pub fn bench_component(hypervisor: &str, tag: &str) -> Component {
    Component {
        incarnation: String::new(),
        id: format!("bench-{hypervisor}"),
        cluster: "bench".into(),
        pod: PodSpec {
            containers: vec![Container {
                name: "main".into(),
                image: "docker.io/oi-test/busybox:1".into(),
                command: vec!["/bin/sleep".into()],
                args: vec!["3600".into(), format!("--tag={tag}")],
                ..Default::default()
            }],
            files: vec![File {
                path: "pki/tls.crt".into(),
                mode: 0o644,
                content: vec![b'x'; 256],
            }],
        },
    }
}

/// `METHOD path` against the control endpoint; returns the body of a 200.
pub async fn call(addr: SocketAddr, method: &str, path: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect control endpoint {addr}"))?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8(raw).context("control reply is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed control reply to {path}"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        bail!("{method} {path}: HTTP {status}: {body}");
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        bail!("{method} {path}: chunked replies are not expected");
    }
    Ok(body.to_string())
}

pub async fn call_json<T: for<'de> Deserialize<'de>>(
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> Result<T> {
    let body = call(addr, method, path).await?;
    serde_json::from_str(&body).with_context(|| format!("decode reply to {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_is_valid_and_tag_changes_it() {
        let a = bench_component("hv-1", "1");
        let b = bench_component("hv-1", "2");
        assert_eq!(a.id, "bench-hv-1");
        assert_ne!(a.spec_hash(), b.spec_hash());
        // It survives the wire conversion the agent applies.
        let back = Component::try_from(oi_proto::pb::Component::from(a.clone())).unwrap();
        assert_eq!(back, a);
    }
}
