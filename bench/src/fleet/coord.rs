//! The coordinator under test as a child process (`oi-bench coordinator`).

use anyhow::{anyhow, bail, Context, Result};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

pub struct CoordProc {
    child: tokio::process::Child,
    pub pid: u32,
    pub link: SocketAddr,
    pub control: SocketAddr,
    /// The coordinator's own `/metrics` listener.
    pub metrics: Option<SocketAddr>,
}

/// `READY link=ADDR control=ADDR [metrics=ADDR|-]`
pub fn parse_ready(line: &str) -> Option<(SocketAddr, SocketAddr, Option<SocketAddr>)> {
    let rest = line.trim().strip_prefix("READY ")?;
    let mut link = None;
    let mut control = None;
    let mut metrics = None;
    for word in rest.split_whitespace() {
        match word.split_once('=')? {
            ("link", v) => link = v.parse().ok(),
            ("control", v) => control = v.parse().ok(),
            ("metrics", v) => metrics = v.parse().ok(),
            _ => {}
        }
    }
    Some((link?, control?, metrics))
}

/// Count and sum (seconds) of the coordinator's durable store writes, from
/// its `/metrics` text.
pub fn store_writes(metrics_text: &str) -> Option<(u64, f64)> {
    let value = |name: &str| {
        metrics_text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?;
            rest.split_whitespace().last()?.parse::<f64>().ok()
        })
    };
    Some((
        value("oi_coordinator_store_write_seconds_count")? as u64,
        value("oi_coordinator_store_write_seconds_sum")?,
    ))
}

impl CoordProc {
    /// Starts `oi-bench coordinator` on `data_dir`, its log appended to
    /// `log`, and waits until it is ready.
    pub async fn spawn(
        data_dir: &Path,
        listen: SocketAddr,
        accept_rate: Option<u32>,
        link_sockbuf: Option<usize>,
        log: &Path,
    ) -> Result<Self> {
        let exe = std::env::current_exe().context("find the oi-bench executable")?;
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        // OI_BENCH_COORD_WRAP="heaptrack -o /tmp/h" runs the coordinator
        // under a profiler (the /proc figures then describe the wrapper).
        let wrap: Vec<String> = std::env::var("OI_BENCH_COORD_WRAP")
            .map(|w| w.split_whitespace().map(String::from).collect())
            .unwrap_or_default();
        let mut cmd = match wrap.split_first() {
            Some((prog, rest)) => {
                let mut c = tokio::process::Command::new(prog);
                c.args(rest).arg(&exe);
                c
            }
            None => tokio::process::Command::new(&exe),
        };
        cmd.arg("coordinator")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(listen.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .kill_on_drop(true);
        if let Some(bytes) = link_sockbuf {
            cmd.arg("--link-sockbuf").arg(bytes.to_string());
        }
        if let Some(rate) = accept_rate {
            cmd.arg("--accept-rate").arg(rate.to_string());
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        let mut child = cmd.spawn().context("spawn the bench coordinator")?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("coordinator exited at once"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        // A wrapper may print first: skip lines until READY.
        let ready = tokio::time::timeout(Duration::from_secs(120), async {
            let mut said = Vec::new();
            while let Some(line) = lines.next_line().await? {
                if let Some(addrs) = parse_ready(&line) {
                    return Ok(Ok(addrs));
                }
                said.push(line);
            }
            Ok::<_, std::io::Error>(Err(said))
        })
        .await
        .map_err(|_| anyhow!("coordinator not ready within 120 s; see {}", log.display()))?
        .context("read coordinator stdout")?;
        let (link, control, metrics) = match ready {
            Ok(addrs) => addrs,
            Err(said) => bail!(
                "coordinator did not start (said {said:?}); see {}",
                log.display()
            ),
        };
        // Under a wrapper, measure and signal the coordinator itself.
        let pid = if wrap.is_empty() {
            pid
        } else {
            // comm is the executable's name, cut to 15 bytes.
            let comm: String = exe
                .file_name()
                .map(|n| n.to_string_lossy().chars().take(15).collect())
                .unwrap_or_default();
            descendant_named(pid, &comm)
                .ok_or_else(|| anyhow!("no oi-bench process under wrapper pid {pid}"))?
        };
        // Keep draining its stdout so that a chatty wrapper never blocks.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            pid,
            link,
            control,
            metrics,
        })
    }

    /// Durable store writes so far: (count, seconds).
    pub async fn store_writes(&self) -> Option<(u64, f64)> {
        let text = crate::control::call(self.metrics?, "GET", "/metrics")
            .await
            .ok()?;
        store_writes(&text)
    }

    /// SIGKILL, and reap it.
    pub async fn kill9(mut self) -> Result<()> {
        // SAFETY: kill(2) on the coordinator we started.
        if unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) } != 0 {
            bail!("kill -9 {}: {}", self.pid, std::io::Error::last_os_error());
        }
        self.child.wait().await.context("reap coordinator")?;
        Ok(())
    }

    /// SIGTERM, and wait (bounded) for a clean exit.
    pub async fn stop(mut self) -> Result<()> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        // A profiling wrapper may take a while to write its data.
        match tokio::time::timeout(Duration::from_secs(120), self.child.wait()).await {
            Ok(r) => {
                r.context("wait for coordinator")?;
            }
            Err(_) => {
                self.child.start_kill()?;
                self.child.wait().await?;
            }
        }
        Ok(())
    }
}

/// The first process named `comm` below `pid`, breadth first.
fn descendant_named(pid: u32, comm: &str) -> Option<u32> {
    let mut queue = std::collections::VecDeque::from([pid]);
    while let Some(p) = queue.pop_front() {
        let name = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
        if p != pid && name.trim() == comm {
            return Some(p);
        }
        let tasks = std::fs::read_dir(format!("/proc/{p}/task")).ok()?;
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            queue.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line() {
        let (l, c, m) =
            parse_ready("READY link=127.0.0.1:7443 control=127.0.0.1:9000 metrics=-\n").unwrap();
        assert_eq!((l.port(), c.port(), m), (7443, 9000, None));
        let (_, _, m) =
            parse_ready("READY link=127.0.0.1:1 control=127.0.0.1:2 metrics=127.0.0.1:3").unwrap();
        assert_eq!(m.map(|a| a.port()), Some(3));
        assert!(parse_ready("READY link=127.0.0.1:1").is_none());
        assert!(parse_ready("Error: nope").is_none());
    }

    #[test]
    fn store_write_metrics() {
        let text = "# TYPE oi_coordinator_store_write_seconds histogram\n\
            oi_coordinator_store_write_seconds_sum 4.5\n\
            oi_coordinator_store_write_seconds_count 10000\n\
            oi_coordinator_store_write_seconds_bucket{le=\"0.0001\"} 0\n";
        assert_eq!(store_writes(text), Some((10000, 4.5)));
        assert_eq!(store_writes("nothing"), None);
    }
}
