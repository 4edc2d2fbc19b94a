//! `--wait`: what changed between two looks at a cluster (pure), and the
//! polling loops around it.

use super::exit::{CliError, CliResult, Exit};
use oi_api_types::views::{ClusterPhase, ClusterView, ComponentView, Condition};
use std::time::Duration;

/// Parses "90s", "10m", "1h", "500ms" or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: write e.g. 90s, 10m or 1h"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("{s:?}: unknown unit {unit:?}; use ms, s, m or h")),
    };
    if d.is_zero() {
        return Err(format!("{s:?}: use a duration above zero"));
    }
    Ok(d)
}

fn condition_line(c: &Condition) -> String {
    let mut line = format!("  {}: {}", c.kind, if c.status { "True" } else { "False" });
    match (c.reason.is_empty(), c.message.is_empty()) {
        (true, true) => {}
        (false, true) => line.push_str(&format!(" ({})", c.reason)),
        (true, false) => line.push_str(&format!(" ({})", c.message)),
        (false, false) => line.push_str(&format!(" ({}: {})", c.reason, c.message)),
    }
    line
}

fn component_line(c: &ComponentView) -> String {
    let mut line = format!("  {} on {}: {}", c.id, c.hypervisor, c.phase.as_str());
    if c.ready {
        line.push_str(", ready");
    }
    if !c.reason.is_empty() {
        line.push_str(&format!(" ({})", c.reason));
    }
    line
}

/// The progress lines for going from `prev` to `cur`: the phase when it
/// changes, each condition that is new or changed, each component whose
/// place, phase, readiness or reason changed, in the order the coordinator
/// lists them.
pub fn progress(prev: Option<&ClusterView>, cur: &ClusterView) -> Vec<String> {
    let mut lines = Vec::new();
    let name = &cur.spec.name;
    if prev.map(|p| p.status.phase) != Some(cur.status.phase) {
        lines.push(format!("cluster {name}: {}", cur.status.phase.as_str()));
    }
    for c in &cur.status.conditions {
        let before = prev.and_then(|p| p.status.conditions.iter().find(|o| o.kind == c.kind));
        if before != Some(c) {
            lines.push(condition_line(c));
        }
    }
    for c in &cur.status.components {
        let before = prev.and_then(|p| p.status.components.iter().find(|o| o.id == c.id));
        let same = before.is_some_and(|b| {
            (&b.hypervisor, b.phase, b.ready, &b.reason)
                == (&c.hypervisor, c.phase, c.ready, &c.reason)
        });
        if !same {
            lines.push(component_line(c));
        }
    }
    if let Some(p) = prev {
        for gone in p
            .status
            .components
            .iter()
            .filter(|o| !cur.status.components.iter().any(|c| c.id == o.id))
        {
            lines.push(format!("  {} on {}: removed", gone.id, gone.hypervisor));
        }
    }
    lines
}

/// What one look at the cluster found.
pub enum Look {
    Cluster(Box<ClusterView>),
    Gone,
}

/// Polls `look` every `interval` until `done`, printing progress, for at
/// most `timeout`. A coordinator that is briefly unavailable is retried.
pub async fn poll<F, Fut>(
    out: &mut (dyn std::io::Write + Send),
    what: &str,
    interval: Duration,
    timeout: Duration,
    mut look: F,
    done: impl Fn(&Look) -> bool,
) -> CliResult<Look>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = CliResult<Look>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last: Option<ClusterView> = None;
    let mut unavailable = false;
    loop {
        match look().await {
            Ok(l) => {
                unavailable = false;
                if let Look::Cluster(v) = &l {
                    for line in progress(last.as_ref(), v) {
                        let _ = writeln!(out, "{line}");
                    }
                    last = Some((**v).clone());
                }
                if done(&l) {
                    let _ = out.flush();
                    return Ok(l);
                }
            }
            Err(e) if e.exit == Exit::Unavailable => {
                if !unavailable {
                    let _ = writeln!(out, "  (coordinator unavailable, retrying: {})", e.message);
                }
                unavailable = true;
            }
            Err(e) => return Err(e),
        }
        let _ = out.flush();
        let now = tokio::time::Instant::now();
        if now >= deadline {
            let phase = last
                .as_ref()
                .map(|v| format!(" (phase {})", v.status.phase.as_str()))
                .unwrap_or_default();
            return Err(CliError::new(
                Exit::TimedOut,
                format!(
                    "timed out after {} waiting for {what}{phase}; see `oi cluster get` and \
                     `oi component list --cluster` for what is missing, or wait longer with \
                     --timeout",
                    humanize(timeout)
                ),
            ));
        }
        tokio::time::sleep(interval.min(deadline - now)).await;
    }
}

pub fn is_ready(v: &ClusterView) -> bool {
    v.status.phase == ClusterPhase::Ready
}

pub fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_millis() != 0 || s == 0 {
        format!("{}ms", d.as_millis())
    } else if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// One line per hypervisor that still holds components of a deleted
/// cluster.
pub fn leftover_lines(left: &[oi_api_types::views::Leftover]) -> Vec<String> {
    left.iter()
        .map(|l| {
            if l.components.is_empty() {
                format!("  {}: {}", l.hypervisor, l.reason)
            } else {
                format!(
                    "  {}: {} ({})",
                    l.hypervisor,
                    l.components.join(", "),
                    l.reason
                )
            }
        })
        .collect()
}

/// What one look at a long operation found.
pub enum Progress {
    Done,
    /// Not yet: the lines that say what is left (printed when they change).
    Left(Vec<String>),
}

/// Looks every `interval` until `look` says done, printing what is left
/// when it changes. An unavailable coordinator is retried (said once);
/// another error ends it. After `timeout`, `timed_out` gets the last lines
/// and says what to do.
pub async fn poll_until<F, Fut>(
    out: &mut (dyn std::io::Write + Send),
    interval: Duration,
    timeout: Duration,
    mut look: F,
    timed_out: impl FnOnce(&[String]) -> String,
) -> CliResult
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = CliResult<Progress>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last: Vec<String> = Vec::new();
    let mut unavailable = false;
    loop {
        match look().await {
            Ok(Progress::Done) => return Ok(()),
            Ok(Progress::Left(lines)) => {
                unavailable = false;
                if lines != last {
                    for line in &lines {
                        let _ = writeln!(out, "{line}");
                    }
                    last = lines;
                }
            }
            Err(e) if e.exit == Exit::Unavailable => {
                if !unavailable {
                    let _ = writeln!(out, "  (coordinator unavailable, retrying: {})", e.message);
                }
                unavailable = true;
            }
            Err(e) => return Err(e),
        }
        let _ = out.flush();
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(CliError::new(Exit::TimedOut, timed_out(&last)));
        }
        tokio::time::sleep(interval.min(deadline - now)).await;
    }
}

/// Polls `look` (a deleted cluster's leftovers) until none is left,
/// printing what is left whenever it changes, for at most `timeout`.
pub async fn poll_removed<F, Fut>(
    out: &mut (dyn std::io::Write + Send),
    name: &str,
    interval: Duration,
    timeout: Duration,
    mut look: F,
) -> CliResult
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = CliResult<Vec<oi_api_types::views::Leftover>>>,
{
    poll_until(
        out,
        interval,
        timeout,
        || {
            let left = look();
            async move {
                let left = left.await?;
                if left.is_empty() {
                    return Ok(Progress::Done);
                }
                let mut lines = vec![format!(
                    "cluster {name}: removing from {} hypervisor(s)",
                    left.len()
                )];
                lines.extend(leftover_lines(&left));
                Ok(Progress::Left(lines))
            }
        },
        |last| {
            let left = last.get(1..).unwrap_or_default().join(";");
            format!(
                "timed out after {} waiting for cluster {name} to be removed from every \
                 hypervisor; still there:{left}. The cluster is deleted; its agents remove \
                 the rest when they can (see `oi hypervisor list` and the agents' logs)",
                humanize(timeout)
            )
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use oi_api_types::model::ClusterSpec;
    use oi_api_types::views::ClusterStatus;
    use oi_proto::model::Phase;

    fn view(
        phase: ClusterPhase,
        conds: &[(&str, bool)],
        comps: &[(&str, Phase, bool)],
    ) -> ClusterView {
        ClusterView {
            spec: ClusterSpec::new("prod", "1.37.2", 1),
            status: ClusterStatus {
                phase,
                endpoint: String::new(),
                conditions: conds
                    .iter()
                    .map(|(k, s)| Condition {
                        kind: k.to_string(),
                        status: *s,
                        reason: String::new(),
                        message: String::new(),
                    })
                    .collect(),
                components: comps
                    .iter()
                    .map(|(id, phase, ready)| ComponentView {
                        id: id.to_string(),
                        cluster: "prod".into(),
                        hypervisor: "hv-private-1".into(),
                        phase: *phase,
                        ready: *ready,
                        restarts: 0,
                        reason: String::new(),
                        message: String::new(),
                    })
                    .collect(),
            },
        }
    }

    #[test]
    fn progress_reports_only_changes() {
        use ClusterPhase::*;
        let a = view(Pending, &[("Scheduled", false)], &[]);
        let b = view(
            Provisioning,
            &[("Scheduled", true)],
            &[("etcd-0", Phase::Pending, false)],
        );
        let c = view(
            Provisioning,
            &[("Scheduled", true)],
            &[("etcd-0", Phase::Running, true)],
        );
        let d = view(Provisioning, &[("Scheduled", true)], &[]);
        let cases: Vec<(Option<&ClusterView>, &ClusterView, Vec<&str>)> = vec![
            (
                None,
                &a,
                vec!["cluster prod: pending", "  Scheduled: False"],
            ),
            (Some(&a), &a, vec![]),
            (
                Some(&a),
                &b,
                vec![
                    "cluster prod: provisioning",
                    "  Scheduled: True",
                    "  etcd-0 on hv-private-1: pending",
                ],
            ),
            (
                Some(&b),
                &c,
                vec!["  etcd-0 on hv-private-1: running, ready"],
            ),
            (Some(&c), &d, vec!["  etcd-0 on hv-private-1: removed"]),
        ];
        for (prev, cur, want) in cases {
            assert_eq!(progress(prev, cur), want);
        }
    }

    #[test]
    fn condition_lines_carry_reason_and_message() {
        let mut v = view(ClusterPhase::Pending, &[("Scheduled", false)], &[]);
        v.status.conditions[0].reason = "NoRoom".into();
        v.status.conditions[0].message = "add a public hypervisor".into();
        assert_eq!(
            progress(None, &v)[1],
            "  Scheduled: False (NoRoom: add a public hypervisor)"
        );
    }

    #[test]
    fn durations() {
        let cases = [
            ("10m", Some(600_000)),
            ("90s", Some(90_000)),
            ("45", Some(45_000)),
            ("1h", Some(3_600_000)),
            ("250ms", Some(250)),
            ("0s", None),
            ("ten", None),
            ("5d", None),
            ("", None),
        ];
        for (s, want) in cases {
            assert_eq!(
                parse_duration(s).ok().map(|d| d.as_millis() as u64),
                want,
                "{s}"
            );
        }
        assert_eq!(humanize(Duration::from_secs(600)), "10m");
        assert_eq!(humanize(Duration::from_millis(300)), "300ms");
    }
}
