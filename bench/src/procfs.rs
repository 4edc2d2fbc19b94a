//! Reading a process's footprint from `/proc`: resident memory (`VmRSS`),
//! proportional set size (`Pss` of `smaps_rollup`) and CPU time
//! (`utime + stime` of `stat`). Parsers are plain functions over the text.

use anyhow::{anyhow, Context, Result};
use std::time::{Duration, Instant};

/// One reading of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub rss_kib: u64,
    pub pss_kib: u64,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    pub threads: u64,
}

/// A `Key:   123 kB` line of `/proc/PID/status` or `smaps_rollup`.
pub fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// utime + stime from `/proc/PID/stat`. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after the last ')'.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // after ')': state is field 3, so utime (14) and stime (15) are at 11, 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub fn ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

pub fn sample(pid: u32) -> Result<Sample> {
    let read = |f: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{f}"))
            .with_context(|| format!("read /proc/{pid}/{f} (has the process exited?)"))
    };
    let status = read("status")?;
    let rollup = read("smaps_rollup")?;
    let stat = read("stat")?;
    Ok(Sample {
        rss_kib: kib_field(&status, "VmRSS").ok_or_else(|| anyhow!("no VmRSS for {pid}"))?,
        pss_kib: kib_field(&rollup, "Pss").ok_or_else(|| anyhow!("no Pss for {pid}"))?,
        cpu_ticks: cpu_ticks(&stat).ok_or_else(|| anyhow!("unparsable stat for {pid}"))?,
        threads: status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:")?.trim().parse().ok())
            .unwrap_or(0),
    })
}

/// CPU use between two samples, in millicores.
pub fn mcpu(cpu_ticks: u64, elapsed: Duration, ticks_per_sec: u64) -> f64 {
    if elapsed.is_zero() {
        return 0.0;
    }
    cpu_ticks as f64 * 1000.0 / ticks_per_sec as f64 / elapsed.as_secs_f64()
}

/// What a process used over a window: memory at its end (and the largest
/// RSS seen), CPU over the whole window.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub end: Sample,
    pub max_rss_kib: u64,
    pub mcpu: f64,
    /// CPU ticks used in the window (the resolution of `mcpu`).
    pub ticks: u64,
    pub elapsed: Duration,
}

/// Samples `pid` every second for `length`, and returns the window.
pub async fn watch(pid: u32, length: Duration) -> Result<Window> {
    let tps = ticks_per_sec();
    let first = sample(pid)?;
    let start = Instant::now();
    let mut max_rss = first.rss_kib;
    let mut last = first;
    while start.elapsed() < length {
        let left = length.saturating_sub(start.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
        last = sample(pid)?;
        max_rss = max_rss.max(last.rss_kib);
    }
    let elapsed = start.elapsed();
    Ok(Window {
        end: last,
        max_rss_kib: max_rss,
        mcpu: mcpu(last.cpu_ticks - first.cpu_ticks, elapsed, tps),
        ticks: last.cpu_ticks - first.cpu_ticks,
        elapsed,
    })
}

/// (busy, total) jiffies of all CPUs, from the first line of /proc/stat.
pub fn machine_busy() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    machine_busy_in(&text)
}

pub fn machine_busy_in(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Busy share of the machine between two [`machine_busy`] readings, %.
pub fn busy_pct(a: (u64, u64), b: (u64, u64)) -> f64 {
    let total = b.1.saturating_sub(a.1);
    if total == 0 {
        return 0.0;
    }
    b.0.saturating_sub(a.0) as f64 * 100.0 / total as f64
}

/// Drops counted on the UDP sockets bound to `port` (`/proc/net/udp`,
/// last column), summed; `None` when no socket has that port.
pub fn udp_drops(port: u16) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/udp").ok()?;
    udp_drops_in(&text, port)
}

pub fn udp_drops_in(text: &str, port: u16) -> Option<u64> {
    let mut found = None;
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let Some(local) = cols.get(1) else { continue };
        let Some((_, p)) = local.split_once(':') else {
            continue;
        };
        if u16::from_str_radix(p, 16).ok() != Some(port) {
            continue;
        }
        let drops: u64 = cols.last().and_then(|d| d.parse().ok()).unwrap_or(0);
        found = Some(found.unwrap_or(0) + drops);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_rollup_and_stat() {
        let status =
            "Name:\toi-coordinator\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\nThreads:\t7\n";
        assert_eq!(kib_field(status, "VmRSS"), Some(12345));
        assert_eq!(kib_field(status, "VmSwap"), None);
        let rollup = "55d0-7ffe ---p 00000000 00:00 0 [rollup]\nRss:  100 kB\nPss:   80 kB\nPss_Anon:  70 kB\n";
        assert_eq!(kib_field(rollup, "Pss"), Some(80));
        // A command name with spaces and a ')' must not shift the fields.
        let stat = "42 (a) b) S 1 42 42 0 -1 4194560 100 0 0 0 250 17 0 0 20 0 7 0 1 2 3";
        assert_eq!(cpu_ticks(stat), Some(267));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn millicores() {
        assert_eq!(mcpu(100, Duration::from_secs(10), 100), 100.0);
        assert_eq!(mcpu(3, Duration::from_secs(30), 100), 1.0);
        assert_eq!(mcpu(5, Duration::ZERO, 100), 0.0);
    }

    #[test]
    fn machine_busy_share() {
        let a = machine_busy_in("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3").unwrap();
        assert_eq!(a, (150, 1000));
        let b = machine_busy_in("cpu  200 0 100 850 50 0 0 0 0 0\n").unwrap();
        assert_eq!(busy_pct(a, b), 75.0);
        assert_eq!(machine_busy_in("nonsense"), None);
    }

    #[test]
    fn udp_drops_by_port() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  1: 0100007F:1D13 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 5\n\
  2: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 9\n";
        assert_eq!(udp_drops_in(text, 7443), Some(5));
        assert_eq!(udp_drops_in(text, 53), Some(9));
        assert_eq!(udp_drops_in(text, 1), None);
    }
}
