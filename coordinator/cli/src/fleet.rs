//! `oi hypervisor list`, `oi component list`, `oi version`.

use super::cluster::component_table;
use super::exit::CliResult;
use super::output::{ago, bytes, serialized, table, yes_no, Format};
use super::Ctx;
use oi_api_types::views::{ComponentView, HypervisorSummary, VersionInfo};
use oi_proto::api as pb;
use serde::Serialize;

pub async fn hypervisors(ctx: &mut Ctx<'_>, format: Format) -> CliResult {
    let conn = ctx.connect().await?;
    let list = conn
        .hypervisors()
        .list(pb::ListHypervisorsRequest {})
        .await?
        .into_inner()
        .hypervisors
        .into_iter()
        .map(HypervisorSummary::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    if format != Format::Table {
        return ctx.out(&serialized(format, &list)?);
    }
    if list.is_empty() {
        ctx.note("no hypervisors: start an agent (see `oi-agent --help`)");
        return Ok(());
    }
    ctx.out(&hypervisor_table(&list, now_ms()))?;
    for h in list.iter().filter(|h| !h.removal.is_empty()) {
        ctx.note(&format!("{}: {}", h.name, h.removal));
    }
    for h in list.iter().filter(|h| !h.not_adopted.is_empty()) {
        let shown: Vec<&str> = h.not_adopted.iter().take(5).map(String::as_str).collect();
        let more = h.not_adopted.len().saturating_sub(shown.len());
        ctx.note(&format!(
            "{} runs {} component(s) this store does not place (not adopted): {}{}. They keep \
             running. Restore the store they came from, or release them on {0}: \
             oi-agent release-held --all",
            h.name,
            h.not_adopted.len(),
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
    }
    Ok(())
}

use oi_proto::clock::unix_ms as now_ms;

pub fn hypervisor_table(list: &[HypervisorSummary], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|h| {
            vec![
                h.name.clone(),
                h.role.as_str().to_string(),
                h.address.clone(),
                yes_no(h.connected),
                yes_no(h.cordoned),
                h.port_range.clone(),
                format!("{}m/{}m", h.cpu_millis_requested, h.cpu_millis),
                format!(
                    "{}/{}",
                    bytes(h.memory_bytes_requested),
                    bytes(h.memory_bytes)
                ),
                h.components.to_string(),
                h.not_adopted.len().to_string(),
                h.generation.to_string(),
                ago(h.last_seen_unix_ms, now_ms),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "ROLE",
            "ADDRESS",
            "CONNECTED",
            "CORDONED",
            "PORTS",
            "CPU",
            "MEMORY",
            "COMPONENTS",
            "NOT ADOPTED",
            "GENERATION",
            "LAST SEEN",
        ],
        &rows,
    )
}

pub async fn components(ctx: &mut Ctx<'_>, cluster: Option<&str>, format: Format) -> CliResult {
    let conn = ctx.connect().await?;
    let list = conn
        .components()
        .list(pb::ListComponentsRequest {
            cluster: cluster.unwrap_or_default().to_string(),
        })
        .await?
        .into_inner()
        .components
        .into_iter()
        .map(ComponentView::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    if format != Format::Table {
        return ctx.out(&serialized(format, &list)?);
    }
    if list.is_empty() {
        ctx.note("no components");
        return Ok(());
    }
    ctx.out(&component_table(&list, cluster.is_none()))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Versions {
    client: ClientVersion,
    #[serde(skip_serializing_if = "Option::is_none")]
    coordinator: Option<CoordinatorVersions>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClientVersion {
    version: &'static str,
    link_protocol: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CoordinatorVersions {
    version: String,
    kubernetes: Vec<VersionInfo>,
}

pub async fn version(ctx: &mut Ctx<'_>, kubernetes: bool, format: Format) -> CliResult {
    let mut v = Versions {
        client: ClientVersion {
            version: env!("CARGO_PKG_VERSION"),
            link_protocol: oi_proto::PROTOCOL_VERSION,
        },
        coordinator: None,
    };
    if kubernetes {
        let conn = ctx.connect().await?;
        let r = conn
            .info()
            .versions(pb::VersionsRequest {})
            .await?
            .into_inner();
        v.coordinator = Some(CoordinatorVersions {
            version: r.coordinator_version,
            kubernetes: r.kubernetes.into_iter().map(Into::into).collect(),
        });
    }
    if format != Format::Table {
        return ctx.out(&serialized(format, &v)?);
    }
    let mut text = format!(
        "oi {} (link protocol {})\n",
        v.client.version, v.client.link_protocol
    );
    if let Some(c) = &v.coordinator {
        text.push_str(&format!("coordinator {}\n\n", c.version));
        let rows: Vec<Vec<String>> = c
            .kubernetes
            .iter()
            .map(|k| {
                vec![
                    if k.default {
                        format!("{} (default)", k.kubernetes_version)
                    } else {
                        k.kubernetes_version.clone()
                    },
                    k.etcd_image.clone(),
                    k.apiserver_image.clone(),
                    k.controller_manager_image.clone(),
                    k.scheduler_image.clone(),
                    k.haproxy_image.clone(),
                    k.coredns_image.clone(),
                ]
            })
            .collect();
        text.push_str(&table(
            &[
                "KUBERNETES",
                "ETCD",
                "APISERVER",
                "CONTROLLER-MANAGER",
                "SCHEDULER",
                "HAPROXY",
                "COREDNS",
            ],
            &rows,
        ));
    }
    ctx.out(&text)
}
