//! Reconnect pacing: exponential backoff with jitter, so that a fleet of
//! agents does not reconnect in lockstep after a coordinator restart.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Reconnect {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Default for Reconnect {
    fn default() -> Self {
        Self::new(Duration::from_millis(250), Duration::from_secs(30))
    }
}

impl Reconnect {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The ceiling of the next delay: base * 2^attempt, at most `cap`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The next delay, drawn from [ceiling/2, ceiling] ("equal jitter").
    /// `unit` is a random number in [0, 1).
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        ceiling / 2 + ceiling.mul_f64(unit.clamp(0.0, 1.0) / 2.0)
    }

    /// Jumps to the cap: for refusals that only an operator can fix.
    pub fn to_cap(&mut self) {
        while self.ceiling() < self.cap {
            self.attempt += 1;
        }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let mut r = Reconnect::new(Duration::from_millis(100), Duration::from_secs(2));
        let lows: Vec<_> = (0..8).map(|_| r.next_delay(0.0)).collect();
        assert_eq!(lows[0], Duration::from_millis(50));
        assert_eq!(lows[1], Duration::from_millis(100));
        assert_eq!(*lows.last().unwrap(), Duration::from_secs(1));
        assert_eq!(r.next_delay(0.999_999).as_millis(), 1999);
        r.reset();
        assert_eq!(r.ceiling(), Duration::from_millis(100));
        r.to_cap();
        assert_eq!(r.ceiling(), Duration::from_secs(2));
    }
}
