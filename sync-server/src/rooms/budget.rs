//! How often one connection may have the whole list encoded for it. A sync
//! step 1 from a client that reads its replies at once is answered with the
//! whole state each time (the queue holds none to coalesce with), and the
//! state may be megabytes: the budget keeps that from becoming a way to
//! spend the server's CPU. y-websocket clients ask once per connection.

use std::time::Duration;

use tokio::time::Instant;

/// Whole-state replies one connection may get in a burst.
const BURST: f64 = 5.0;
/// And then one per this long.
const EVERY: Duration = Duration::from_secs(6);

/// A token bucket of whole-state replies.
#[derive(Debug, Clone)]
pub(crate) struct ReplyBudget {
    tokens: f64,
    at: Instant,
}

impl Default for ReplyBudget {
    fn default() -> Self {
        ReplyBudget {
            tokens: BURST,
            at: Instant::now(),
        }
    }
}

impl ReplyBudget {
    /// Takes one reply from the budget; `false` when it is spent.
    pub(crate) fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() / EVERY.as_secs_f64();
        self.tokens = (self.tokens + refill).min(BURST);
        self.at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_one_reply_per_interval() {
        let mut budget = ReplyBudget::default();
        for _ in 0..5 {
            assert!(budget.take());
        }
        assert!(!budget.take(), "the burst is spent");
        tokio::time::advance(EVERY).await;
        assert!(budget.take(), "one more after the interval");
        assert!(!budget.take());
        tokio::time::advance(EVERY * 100).await;
        for _ in 0..5 {
            assert!(budget.take());
        }
        assert!(!budget.take(), "never more than the burst");
    }
}
