//! Per-key retry backoff for the cluster work loop (kube-runtime's
//! `Runner` is the model): a key that failed waits `base`, doubled on each
//! further failure up to `max`; one success resets it. Pure: the caller
//! passes the time.

use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug)]
struct Failing {
    failures: u32,
    not_before: Instant,
}

#[derive(Debug)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    keys: HashMap<String, Failing>,
}

impl Backoff {
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            keys: HashMap::new(),
        }
    }

    /// Whether `key` may be worked on at `now`.
    pub(crate) fn due(&self, key: &str, now: Instant) -> bool {
        self.keys.get(key).is_none_or(|f| now >= f.not_before)
    }

    /// Records a failure at `now`; returns how long `key` waits.
    pub(crate) fn failed(&mut self, key: &str, now: Instant) -> Duration {
        let failures = self.keys.get(key).map_or(0, |f| f.failures) + 1;
        let delay = self
            .base
            .saturating_mul(1 << (failures - 1).min(16))
            .min(self.max);
        self.keys.insert(
            key.to_string(),
            Failing {
                failures,
                not_before: now + delay,
            },
        );
        delay
    }

    pub(crate) fn succeeded(&mut self, key: &str) {
        self.keys.remove(key);
    }

    /// Forgets keys for which `keep` is false (deleted clusters).
    pub(crate) fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.keys.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_double_the_wait_up_to_the_cap_and_a_success_resets_it() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut b = Backoff::new(s(2), s(10));
        // (event, at second, want delay or want due)
        enum Ev {
            Fail(u64, u64),
            Due(u64, bool),
            Ok,
        }
        let steps = [
            Ev::Due(0, true),
            Ev::Fail(0, 2),
            Ev::Due(1, false),
            Ev::Due(2, true),
            Ev::Fail(2, 4),
            Ev::Fail(6, 8),
            Ev::Fail(14, 10), // capped
            Ev::Fail(24, 10),
            Ev::Due(33, false),
            Ev::Due(34, true),
            Ev::Ok,
            Ev::Due(34, true),
            Ev::Fail(34, 2), // starts over
        ];
        for (i, ev) in steps.iter().enumerate() {
            match *ev {
                Ev::Fail(at, want) => {
                    assert_eq!(b.failed("k", t0 + s(at)), s(want), "step {i}")
                }
                Ev::Due(at, want) => assert_eq!(b.due("k", t0 + s(at)), want, "step {i}"),
                Ev::Ok => b.succeeded("k"),
            }
        }
        // Other keys are not affected.
        assert!(b.due("other", t0));
        b.retain(|k| k != "k");
        assert!(b.due("k", t0));
    }
}
