//! `oi cluster ...` and `oi apply`.

use super::apply::parse_documents;
use super::exit::{one_line, CliError, CliResult, Exit};
use super::output::{fields, or_none, serialized, table, yes_no, Format};
use super::wait::{is_ready, poll, poll_removed, Look};
use super::{CreateArgs, Ctx, WaitArgs};
use oi_api_types::convert::outcome_from_str;
use oi_api_types::model::{Addons, ClusterSpec, Cni};
use oi_api_types::views::{ClusterView, ComponentView};
use oi_proto::api::{self as pb, clusters_client::ClustersClient};
use std::path::Path;
use tonic::transport::Channel;

fn to_view(c: pb::Cluster) -> CliResult<ClusterView> {
    Ok(ClusterView::try_from(c)?)
}

async fn look(mut client: ClustersClient<Channel>, name: String) -> CliResult<Look> {
    match client.get(pb::ClusterRef { name }).await {
        Ok(r) => Ok(Look::Cluster(Box::new(to_view(r.into_inner())?))),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(Look::Gone),
        Err(s) => Err(s.into()),
    }
}

pub async fn create(ctx: &mut Ctx<'_>, a: CreateArgs) -> CliResult {
    let spec = ClusterSpec {
        name: a.name.clone(),
        kubernetes_version: a.kubernetes_version.unwrap_or_default(),
        replicas: a.replicas,
        service_cidr: a.service_cidr,
        pod_cidr: a.pod_cidr,
        api_server_extra_sans: a.api_server_sans,
        addons: Addons {
            kube_proxy: !a.no_kube_proxy,
            dns: !a.no_dns,
            cni: Cni::parse(&a.cni).map_err(|e| CliError::new(Exit::Invalid, e.to_string()))?,
        },
    };
    let conn = ctx.connect().await?;
    let mut client = conn.clusters();
    client.create(pb::ClusterSpec::from(spec)).await?;
    ctx.out(&format!("cluster/{} created\n", a.name))?;
    if a.wait.wait {
        wait_ready(ctx, client, &a.name, a.wait).await?;
    }
    Ok(())
}

/// Polls cluster `name`, printing its progress, until `done` holds.
async fn watch(
    ctx: &mut Ctx<'_>,
    client: &ClustersClient<Channel>,
    name: &str,
    what: &str,
    timeout: std::time::Duration,
    done: impl Fn(&Look) -> bool,
) -> CliResult<Look> {
    let n = name.to_string();
    poll(
        ctx.io.stdout,
        what,
        ctx.poll,
        timeout,
        || look(client.clone(), n.clone()),
        done,
    )
    .await
}

/// Waits until `until` holds for cluster `name`; its deletion meanwhile
/// is an error.
async fn wait_until(
    ctx: &mut Ctx<'_>,
    client: &ClustersClient<Channel>,
    name: &str,
    what: &str,
    w: WaitArgs,
    until: impl Fn(&ClusterView) -> bool,
) -> CliResult<Box<ClusterView>> {
    let done = |l: &Look| match l {
        Look::Cluster(v) => until(v),
        Look::Gone => true,
    };
    match watch(ctx, client, name, what, w.timeout, done).await? {
        Look::Cluster(v) => Ok(v),
        Look::Gone => Err(CliError::new(
            Exit::NotFound,
            format!("cluster {name:?} was deleted while waiting for it"),
        )),
    }
}

async fn wait_ready(
    ctx: &mut Ctx<'_>,
    client: ClustersClient<Channel>,
    name: &str,
    w: WaitArgs,
) -> CliResult {
    let what = format!("cluster {name} to be ready");
    let v = wait_until(ctx, &client, name, &what, w, is_ready).await?;
    ctx.out(&format!(
        "cluster {name} is ready at {}\nnext: oi cluster kubeconfig {name} > {name}.kubeconfig\n",
        v.status.endpoint
    ))
}

pub async fn scale(ctx: &mut Ctx<'_>, name: &str, replicas: u32, w: WaitArgs) -> CliResult {
    let conn = ctx.connect().await?;
    let mut client = conn.clusters();
    let current = client
        .get(pb::ClusterRef { name: name.into() })
        .await?
        .into_inner();
    let mut spec = to_view(current)?.spec;
    spec.replicas = replicas;
    let reply = client
        .apply(pb::ClusterSpec::from(spec))
        .await?
        .into_inner();
    let outcome = outcome_from_str(&reply.outcome)?;
    ctx.out(&format!(
        "cluster/{name} {} ({replicas} replica(s))\n",
        oi_api_types::convert::outcome_str(outcome)
    ))?;
    if !w.wait {
        return Ok(());
    }
    let what = format!("cluster {name} to run {replicas} replica(s)");
    wait_until(ctx, &client, name, &what, w, |v| {
        is_ready(v) && replicas_as_declared(v)
    })
    .await?;
    ctx.out(&format!("cluster {name} runs {replicas} replica(s)\n"))
}

/// The Replicas condition holds: as many replicas as declared, none
/// joining or leaving.
fn replicas_as_declared(v: &ClusterView) -> bool {
    v.status
        .conditions
        .iter()
        .any(|c| c.kind == "Replicas" && c.status)
}

pub async fn list(ctx: &mut Ctx<'_>, format: Format) -> CliResult {
    let conn = ctx.connect().await?;
    let list = conn
        .clusters()
        .list(pb::ListClustersRequest {})
        .await?
        .into_inner()
        .clusters
        .into_iter()
        .map(to_view)
        .collect::<CliResult<Vec<_>>>()?;
    if format != Format::Table {
        return ctx.out(&serialized(format, &list)?);
    }
    if list.is_empty() {
        ctx.note("no clusters");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|v| {
            vec![
                v.spec.name.clone(),
                v.spec.kubernetes_version.clone(),
                v.spec.replicas.to_string(),
                v.status.phase.as_str().to_string(),
                v.status.endpoint.clone(),
            ]
        })
        .collect();
    ctx.out(&table(
        &["NAME", "VERSION", "REPLICAS", "PHASE", "ENDPOINT"],
        &rows,
    ))
}

pub async fn get(ctx: &mut Ctx<'_>, name: &str, format: Format) -> CliResult {
    let conn = ctx.connect().await?;
    let view = to_view(
        conn.clusters()
            .get(pb::ClusterRef { name: name.into() })
            .await?
            .into_inner(),
    )?;
    match format {
        Format::Table => ctx.out(&describe(&view)),
        _ => ctx.out(&serialized(format, &view)?),
    }
}

/// The add-ons that are on, e.g. "kube-proxy, dns, cni=bridge".
fn addons(a: &Addons) -> String {
    let mut on = Vec::new();
    if a.kube_proxy {
        on.push("kube-proxy".to_string());
    }
    if a.dns {
        on.push("dns".to_string());
    }
    on.push(format!("cni={}", a.cni.as_str()));
    on.join(", ")
}

/// One cluster for people: its spec and status, then its conditions and
/// components as tables.
pub fn describe(v: &ClusterView) -> String {
    let s = &v.spec;
    let mut text = fields(&[
        ("Name", s.name.clone()),
        ("Kubernetes version", s.kubernetes_version.clone()),
        ("Replicas", s.replicas.to_string()),
        ("Service CIDR", s.service_cidr.clone()),
        ("Pod CIDR", s.pod_cidr.clone()),
        ("Extra SANs", or_none(&s.api_server_extra_sans.join(", "))),
        ("Add-ons", addons(&s.addons)),
        ("Phase", v.status.phase.as_str().to_string()),
        ("Endpoint", or_none(&v.status.endpoint)),
    ]);
    if !v.status.conditions.is_empty() {
        let rows: Vec<Vec<String>> = v
            .status
            .conditions
            .iter()
            .map(|c| {
                vec![
                    c.kind.clone(),
                    if c.status { "True" } else { "False" }.into(),
                    c.reason.clone(),
                    c.message.clone(),
                ]
            })
            .collect();
        text.push('\n');
        text.push_str(&table(&["CONDITION", "STATUS", "REASON", "MESSAGE"], &rows));
    }
    if !v.status.components.is_empty() {
        text.push('\n');
        text.push_str(&component_table(&v.status.components, false));
    }
    text
}

pub fn component_table(list: &[ComponentView], with_cluster: bool) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            let mut row = vec![c.id.clone()];
            if with_cluster {
                row.push(c.cluster.clone());
            }
            row.extend([
                c.hypervisor.clone(),
                c.phase.as_str().to_string(),
                yes_no(c.ready),
                c.restarts.to_string(),
                c.reason.clone(),
            ]);
            row
        })
        .collect();
    let mut headers = vec!["COMPONENT"];
    if with_cluster {
        headers.push("CLUSTER");
    }
    headers.extend(["HYPERVISOR", "PHASE", "READY", "RESTARTS", "REASON"]);
    table(&headers, &rows)
}

pub async fn delete(ctx: &mut Ctx<'_>, name: &str, w: WaitArgs) -> CliResult {
    let conn = ctx.connect().await?;
    let client = conn.clusters();
    client
        .clone()
        .delete(pb::ClusterRef { name: name.into() })
        .await?;
    ctx.out(&format!("cluster/{name} deleted\n"))?;
    if w.wait {
        // Gone from the store at once; gone from the hypervisors only when
        // every agent that held a piece of it says so.
        let n = name.to_string();
        poll_removed(ctx.io.stdout, name, ctx.poll, w.timeout, || {
            let mut client = client.clone();
            let name = n.clone();
            async move {
                let r = client.removal(pb::ClusterRef { name }).await?.into_inner();
                Ok(r.leftovers
                    .into_iter()
                    .map(|l| oi_api_types::views::Leftover {
                        hypervisor: l.hypervisor,
                        components: l.components,
                        reason: l.reason,
                    })
                    .collect())
            }
        })
        .await?;
        ctx.out(&format!("cluster {name} removed from every hypervisor\n"))?;
    }
    Ok(())
}

pub async fn kubeconfig(ctx: &mut Ctx<'_>, name: &str, file: Option<&Path>) -> CliResult {
    let conn = ctx.connect().await?;
    let kubeconfig = conn
        .clusters()
        .kubeconfig(pb::ClusterRef { name: name.into() })
        .await?
        .into_inner()
        .kubeconfig;
    match file {
        None => ctx.out(&kubeconfig),
        Some(path) => {
            oi_proto::fsutil::write_atomic(path, kubeconfig.as_bytes(), 0o600)
                .map_err(|e| CliError::new(Exit::Error, one_line(e.as_ref())))?;
            ctx.note(&format!(
                "wrote the kubeconfig of cluster {name} to {} (mode 0600)",
                path.display()
            ));
            Ok(())
        }
    }
}

pub async fn apply(ctx: &mut Ctx<'_>, file: &str) -> CliResult {
    let (text, source) = if file == "-" {
        let mut text = String::new();
        ctx.io
            .stdin
            .read_to_string(&mut text)
            .map_err(|e| CliError::new(Exit::Invalid, format!("read standard input: {e}")))?;
        (text, "standard input".to_string())
    } else {
        let text = std::fs::read_to_string(file)
            .map_err(|e| CliError::new(Exit::Invalid, format!("read {file}: {e}")))?;
        (text, file.to_string())
    };
    let specs = parse_documents(&text, &source)?;
    let conn = ctx.connect().await?;
    let mut client = conn.clusters();
    for spec in specs {
        let name = spec.name.clone();
        let reply = client
            .apply(pb::ClusterSpec::from(spec))
            .await
            .map_err(|s| {
                let mut e = CliError::from(s);
                e.message = format!("apply cluster {name}: {}", e.message);
                e
            })?
            .into_inner();
        let outcome = outcome_from_str(&reply.outcome)?;
        ctx.out(&format!(
            "cluster/{name} {}\n",
            oi_api_types::convert::outcome_str(outcome)
        ))?;
    }
    Ok(())
}
