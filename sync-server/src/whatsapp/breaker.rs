//! A circuit breaker in front of the API: after `threshold` consecutive
//! failures of the API itself it opens and nothing is sent for
//! `cooldown`; then one trial request goes out (half-open) and its
//! outcome closes or reopens it. Owned by one outbox worker, so plain
//! state without locks.

use std::time::Duration;

use tokio::time::Instant;

/// The breaker's state, as the metrics show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::HalfOpen => 2.0,
        }
    }
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    failures: u32,
    open_until: Option<Instant>,
    trial: bool,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            failures: 0,
            open_until: None,
            trial: false,
        }
    }

    /// Whether a request may go out now; when half-open, only the trial.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.open_until {
            None => true,
            Some(until) if now < until => false,
            Some(_) if self.trial => false,
            Some(_) => {
                self.trial = true;
                true
            }
        }
    }

    /// When a request may go out again, if not now.
    pub fn retry_at(&self) -> Option<Instant> {
        self.open_until.filter(|&until| until > Instant::now())
    }

    /// Gives back a half-open trial that made no request.
    pub fn release_trial(&mut self) {
        self.trial = false;
    }

    /// The API answered properly (even if it refused this one message).
    pub fn success(&mut self) {
        if self.open_until.is_some() {
            tracing::info!("WhatsApp API answers again; sending resumes");
        }
        self.failures = 0;
        self.open_until = None;
        self.trial = false;
    }

    /// The API failed (5xx, unreachable, no answer).
    pub fn failure(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        if self.trial || self.failures >= self.threshold {
            if !self.trial {
                tracing::warn!(
                    failures = self.failures,
                    cooldown_ms = self.cooldown.as_millis() as u64,
                    "WhatsApp API keeps failing; sending stops for a while"
                );
            }
            self.open_until = Some(now + self.cooldown);
            self.trial = false;
        }
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        match self.open_until {
            None => BreakerState::Closed,
            Some(until) if now < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_failures_and_closes_after_a_good_trial() {
        let mut b = Breaker::new(3, Duration::from_secs(30));
        let t0 = Instant::now();
        for _ in 0..2 {
            assert!(b.allow(t0));
            b.failure(t0);
        }
        assert_eq!(b.state(t0), BreakerState::Closed);
        b.failure(t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert!(!b.allow(t0 + Duration::from_secs(29)));
        let later = t0 + Duration::from_secs(30);
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert!(b.allow(later), "one trial");
        assert!(!b.allow(later), "only one");
        b.failure(later);
        assert_eq!(
            b.state(later),
            BreakerState::Open,
            "a failed trial reopens it"
        );
        let again = later + Duration::from_secs(30);
        assert!(b.allow(again));
        b.success();
        assert_eq!(b.state(again), BreakerState::Closed);
        assert!(b.allow(again) && b.allow(again));
    }
}
