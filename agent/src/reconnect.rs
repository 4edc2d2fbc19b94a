//! Reconnect pacing: exponential backoff with jitter, so that a fleet of
//! agents does not reconnect in lockstep after a coordinator restart. The
//! first retry after a lost link is drawn from [0, `first_spread`] ("full
//! jitter"): a fleet that lost its coordinator at the same instant spreads
//! its handshakes over that window instead of arriving all at once.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Reconnect {
    base: Duration,
    cap: Duration,
    first_spread: Duration,
    attempt: u32,
}

impl Default for Reconnect {
    fn default() -> Self {
        Self::new(Duration::from_millis(250), Duration::from_secs(30))
            .with_first_spread(Duration::from_secs(3))
    }
}

impl Reconnect {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            first_spread: base,
            attempt: 0,
        }
    }

    /// The window the first retry is drawn from.
    pub fn with_first_spread(mut self, spread: Duration) -> Self {
        self.first_spread = spread;
        self
    }

    /// The ceiling of the next delay: base * 2^attempt, at most `cap`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The next delay, drawn from [ceiling/2, ceiling] ("equal jitter").
    /// `unit` is a random number in [0, 1).
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let unit = unit.clamp(0.0, 1.0);
        if self.attempt == 0 {
            self.attempt = 1;
            return self.first_spread.mul_f64(unit);
        }
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        ceiling / 2 + ceiling.mul_f64(unit / 2.0)
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
        let mut r = Reconnect::new(Duration::from_millis(100), Duration::from_secs(2))
            .with_first_spread(Duration::from_secs(3));
        assert_eq!(
            r.clone().next_delay(0.5),
            Duration::from_millis(1500),
            "first: full jitter"
        );
        let lows: Vec<_> = (0..9).map(|_| r.next_delay(0.0)).collect();
        assert_eq!(lows[0], Duration::ZERO);
        assert_eq!(lows[1], Duration::from_millis(100));
        assert_eq!(lows[2], Duration::from_millis(200));
        assert_eq!(*lows.last().unwrap(), Duration::from_secs(1));
        assert_eq!(r.next_delay(0.999_999).as_millis(), 1999);
        r.reset();
        assert_eq!(r.ceiling(), Duration::from_millis(100));
        r.to_cap();
        assert_eq!(r.ceiling(), Duration::from_secs(2));
    }
}
