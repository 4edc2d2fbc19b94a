//! `oi hypervisor cordon|uncordon|drain|remove NAME`.

use super::exit::{CliError, CliResult, Exit};
use super::wait::{poll_until, Progress};
use super::{Ctx, WaitArgs};
use oi_api_types::views::{DrainOutcome, RemoveOutcome};
use oi_proto::api as pb;

fn hv(name: &str) -> pb::HypervisorRef {
    pb::HypervisorRef {
        name: name.to_string(),
    }
}

pub async fn cordon(ctx: &mut Ctx<'_>, name: &str, cordoned: bool) -> CliResult {
    let conn = ctx.connect().await?;
    let mut client = conn.hypervisors();
    if cordoned {
        client.cordon(hv(name)).await?;
        ctx.out(&format!(
            "hypervisor/{name} cordoned: no new placements; what runs there stays\n"
        ))
    } else {
        client.uncordon(hv(name)).await?;
        ctx.out(&format!("hypervisor/{name} uncordoned\n"))
    }
}

/// The lines that say what a drain moved.
pub fn drained_lines(name: &str, d: &DrainOutcome) -> String {
    let mut out = String::new();
    if d.rescheduled.is_empty() && d.pending.is_empty() {
        out.push_str(&format!("  no cluster had pieces on {name}\n"));
    }
    if !d.rescheduled.is_empty() {
        out.push_str(&format!(
            "  moving off (ingresses at once, replicas one etcd member at a time; \
             `oi cluster get NAME` shows progress): {}\n",
            d.rescheduled.join(", ")
        ));
    }
    if !d.pending.is_empty() {
        out.push_str(&format!(
            "  nowhere else to go, now pending (see `oi cluster get NAME`): {}\n",
            d.pending.join(", ")
        ));
    }
    out
}

pub async fn drain(ctx: &mut Ctx<'_>, name: &str) -> CliResult {
    let conn = ctx.connect().await?;
    let d: DrainOutcome = conn
        .hypervisors()
        .drain(hv(name))
        .await?
        .into_inner()
        .into();
    ctx.out(&format!(
        "hypervisor/{name} drained (and cordoned)\n{}",
        drained_lines(name, &d)
    ))
}

pub fn removed_text(name: &str, r: &RemoveOutcome) -> String {
    let mut out = format!(
        "hypervisor/{name} removed: {} certificate{} revoked{}\n",
        r.revoked_certificates,
        if r.revoked_certificates == 1 { "" } else { "s" },
        if r.disconnected {
            ", its agent disconnected"
        } else {
            ""
        }
    );
    out.push_str(&drained_lines(name, &r.drained));
    out.push_str(&format!(
        "  on {name}, stop the agent: systemctl disable --now oi-agent; or join it again with a \
         new token\n"
    ));
    out
}

/// What `remove` says when replicas must move off first.
pub fn removing_text(name: &str, r: &RemoveOutcome) -> String {
    let mut out = format!(
        "hypervisor/{name} is being removed: it is cordoned, and once the replicas on it have \
         moved off (one etcd member at a time) its certificates are revoked and it is \
         forgotten; `oi hypervisor list` shows progress (or use --wait)\n"
    );
    out.push_str(&drained_lines(name, &r.drained));
    out
}

pub async fn remove(ctx: &mut Ctx<'_>, name: &str, wait: WaitArgs) -> CliResult {
    let conn = ctx.connect().await?;
    let r: RemoveOutcome = conn
        .hypervisors()
        .remove(hv(name))
        .await?
        .into_inner()
        .into();
    if r.done {
        return ctx.out(&removed_text(name, &r));
    }
    ctx.out(&removing_text(name, &r))?;
    if !wait.wait {
        return Ok(());
    }
    let owned = name.to_string();
    let client = conn.hypervisors();
    poll_until(
        ctx.io.stdout,
        ctx.poll,
        wait.timeout,
        || {
            let mut client = client.clone();
            let name = owned.clone();
            async move {
                let list = client
                    .list(pb::ListHypervisorsRequest {})
                    .await?
                    .into_inner()
                    .hypervisors;
                let Some(h) = list.into_iter().find(|h| h.name == name) else {
                    return Ok(Progress::Done);
                };
                if let Some(why) = h.removal.strip_prefix("removal failed: ") {
                    return Err(CliError::new(
                        Exit::Error,
                        format!("the removal of hypervisor {name} stopped: {why}"),
                    ));
                }
                Ok(Progress::Left(vec![format!(
                    "hypervisor/{name}: {} component(s) left{}",
                    h.components,
                    if h.removal.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", h.removal)
                    }
                )]))
            }
        },
        |_| {
            format!(
                "timed out after {} waiting for hypervisor {owned} to be removed; the \
                     removal goes on (see `oi hypervisor list` and `oi cluster get NAME`)",
                super::wait::humanize(wait.timeout)
            )
        },
    )
    .await?;
    ctx.out(&format!(
        "hypervisor/{name} removed: certificates revoked, agent disconnected\n  on {name}, stop \
         the agent: systemctl disable --now oi-agent; or join it again with a new token\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_read_well() {
        let r = RemoveOutcome {
            drained: DrainOutcome {
                rescheduled: vec!["a".into(), "b".into()],
                pending: vec!["c".into()],
            },
            revoked_certificates: 1,
            disconnected: true,
            done: true,
        };
        assert_eq!(
            removed_text("hv-1", &r),
            "hypervisor/hv-1 removed: 1 certificate revoked, its agent disconnected\n  \
             moving off (ingresses at once, replicas one etcd member at a time; `oi cluster get \
             NAME` shows progress): a, b\n  nowhere else to go, now pending (see `oi cluster get NAME`): c\n  \
             on hv-1, stop the agent: systemctl disable --now oi-agent; or join it again with a \
             new token\n"
        );
        assert_eq!(
            drained_lines("x", &DrainOutcome::default()),
            "  no cluster had pieces on x\n"
        );
    }
}
