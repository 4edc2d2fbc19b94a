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
}

/// `READY link=ADDR control=ADDR`
pub fn parse_ready(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.trim().strip_prefix("READY ")?;
    let mut link = None;
    let mut control = None;
    for word in rest.split_whitespace() {
        match word.split_once('=')? {
            ("link", v) => link = v.parse().ok(),
            ("control", v) => control = v.parse().ok(),
            _ => {}
        }
    }
    Some((link?, control?))
}

impl CoordProc {
    /// Starts `oi-bench coordinator` on `data_dir`, its log appended to
    /// `log`, and waits until it is ready.
    pub async fn spawn(
        data_dir: &Path,
        listen: SocketAddr,
        accept_rate: Option<u32>,
        log: &Path,
    ) -> Result<Self> {
        let exe = std::env::current_exe().context("find the oi-bench executable")?;
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg("coordinator")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(listen.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .kill_on_drop(true);
        if let Some(rate) = accept_rate {
            cmd.arg("--accept-rate").arg(rate.to_string());
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        let mut child = cmd.spawn().context("spawn the bench coordinator")?;
        let pid = child.id().ok_or_else(|| anyhow!("coordinator exited at once"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
            .await
            .map_err(|_| anyhow!("coordinator not ready within 120 s; see {}", log.display()))?
            .context("read coordinator stdout")?;
        let Some((link, control)) = line.as_deref().and_then(parse_ready) else {
            bail!(
                "coordinator did not start (said {line:?}); see {}",
                log.display()
            );
        };
        Ok(Self {
            child,
            pid,
            link,
            control,
        })
    }

    /// SIGKILL, and reap it.
    pub async fn kill9(mut self) -> Result<()> {
        self.child.start_kill().context("kill -9 coordinator")?;
        self.child.wait().await.context("reap coordinator")?;
        Ok(())
    }

    /// SIGTERM, and wait (bounded) for a clean exit.
    pub async fn stop(mut self) -> Result<()> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        match tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line() {
        let (l, c) = parse_ready("READY link=127.0.0.1:7443 control=127.0.0.1:9000\n").unwrap();
        assert_eq!((l.port(), c.port()), (7443, 9000));
        assert!(parse_ready("READY link=127.0.0.1:1").is_none());
        assert!(parse_ready("Error: nope").is_none());
    }
}
