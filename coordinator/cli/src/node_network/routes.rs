//! oneinfra's routes in this network namespace, through iproute2's `ip`
//! (its JSON output to read them). Only routes of protocol
//! [`super::plan::ROUTE_PROTO`] are read, replaced or deleted.

use super::plan::ROUTE_PROTO;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use tokio::process::Command;

#[derive(Deserialize)]
struct Route {
    dst: String,
    gateway: Option<String>,
}

async fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|e| format!("run ip {}: {e} (install iproute2)", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// oneinfra's routes: destination -> gateway, of both address families.
pub async fn ours() -> Result<BTreeMap<String, IpAddr>, String> {
    let proto = ROUTE_PROTO.to_string();
    let mut out = BTreeMap::new();
    for family in ["-4", "-6"] {
        let text = match ip(&[family, "-j", "route", "show", "proto", &proto]).await {
            Ok(t) => t,
            // a host without IPv6 has no IPv6 routes of ours either
            Err(_) if family == "-6" => continue,
            Err(e) => return Err(e),
        };
        let routes: Vec<Route> = if text.trim().is_empty() {
            Vec::new()
        } else {
            serde_json::from_str(&text).map_err(|e| format!("parse `ip -j route`: {e}"))?
        };
        for r in routes {
            if let Some(gw) = r.gateway.and_then(|g| g.parse().ok()) {
                out.insert(r.dst, gw);
            }
        }
    }
    Ok(out)
}

pub async fn replace(dst: &str, via: IpAddr) -> Result<(), String> {
    let via = via.to_string();
    let proto = ROUTE_PROTO.to_string();
    ip(&["route", "replace", dst, "via", &via, "proto", &proto])
        .await
        .map(|_| ())
        .map_err(|e| format!("{e} (is {via} on this node's network?)"))
}

pub async fn delete(dst: &str) -> Result<(), String> {
    let proto = ROUTE_PROTO.to_string();
    ip(&["route", "del", dst, "proto", &proto])
        .await
        .map(|_| ())
}
