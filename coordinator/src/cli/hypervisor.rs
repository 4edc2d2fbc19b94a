//! `oi hypervisor cordon|uncordon|drain|remove NAME`.

use super::exit::CliResult;
use super::Ctx;
use crate::ops::{DrainOutcome, RemoveOutcome};
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

pub async fn remove(ctx: &mut Ctx<'_>, name: &str) -> CliResult {
    let conn = ctx.connect().await?;
    let r: RemoveOutcome = conn
        .hypervisors()
        .remove(hv(name))
        .await?
        .into_inner()
        .into();
    ctx.out(&removed_text(name, &r))
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
