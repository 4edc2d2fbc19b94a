//! Crash-loop backoff, like kubelet's CrashLoopBackOff, computed from what
//! the runtime reports (attempt count and run time), so that it survives an
//! agent restart and needs no state of its own.
//!
//! * The first restart of a container happens at once.
//! * Each later one waits `10 s * 2^(restarts - 1)`, at most 5 minutes.
//! * A container that ran for 10 minutes or more before exiting is restarted
//!   at once: it was healthy, not crash-looping.

use std::time::Duration;

pub const BASE: Duration = Duration::from_secs(10);
pub const CAP: Duration = Duration::from_secs(300);
pub const HEALTHY_RUN: Duration = Duration::from_secs(600);

/// How long to wait after an exit before starting attempt `attempt + 1`,
/// given the exited attempt's number and how long it ran.
pub fn restart_delay(attempt: u32, ran_for: Duration) -> Duration {
    if attempt == 0 || ran_for >= HEALTHY_RUN {
        return Duration::ZERO;
    }
    let doublings = (attempt - 1).min(16);
    BASE.saturating_mul(1u32 << doublings).min(CAP)
}

/// The same delay for failures to create a pod (image missing, runtime
/// errors): `failures` consecutive failures so far.
pub fn retry_delay(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let doublings = (failures - 1).min(16);
    Duration::from_secs(2)
        .saturating_mul(1u32 << doublings)
        .min(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays() {
        let short = Duration::from_secs(1);
        let table = [
            (0, short, 0),
            (1, short, 10),
            (2, short, 20),
            (3, short, 40),
            (5, short, 160),
            (6, short, 300),
            (40, short, 300),
            (7, Duration::from_secs(601), 0),
        ];
        for (attempt, ran, want) in table {
            assert_eq!(
                restart_delay(attempt, ran),
                Duration::from_secs(want),
                "{attempt}"
            );
        }
        assert_eq!(retry_delay(0), Duration::ZERO);
        assert_eq!(retry_delay(1), Duration::from_secs(2));
        assert_eq!(retry_delay(30), Duration::from_secs(60));
    }
}
