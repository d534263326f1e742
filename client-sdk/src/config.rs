//! How a [`crate::Client`] is set up.

use std::path::PathBuf;
use std::time::Duration;

/// Settings of a client. Only the data directory and the servers are
/// needed; the rest have defaults fit for a phone.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the lists, unsent edits and the session are kept.
    pub data_dir: PathBuf,
    /// Base URLs of the server's replicas (`http://host:port`), tried in
    /// turn: a replica that cannot be reached is skipped for the next.
    pub servers: Vec<String>,
    /// Start without connecting; [`crate::Client::set_online`] connects.
    pub offline: bool,
    /// First delay before reconnecting; doubles up to `backoff_max`, and each
    /// wait is drawn uniformly below it (full jitter).
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Refresh the access token this long before it expires.
    pub refresh_margin: Duration,
    /// A list nobody has used for this long leaves memory (it stays on
    /// disk and keeps syncing, loaded again when something arrives).
    pub unload_after: Duration,
    /// How often the lists of synced families are fetched again.
    pub family_refresh: Duration,
    /// Without a frame from the server for this long, the socket is taken
    /// as dead (the server pings every 10 s).
    pub dead_after: Duration,
}

impl Config {
    /// Defaults, keeping data in `data_dir` and talking to `servers`.
    pub fn new(data_dir: impl Into<PathBuf>, servers: Vec<String>) -> Config {
        Config {
            data_dir: data_dir.into(),
            servers,
            offline: false,
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            refresh_margin: Duration::from_secs(60),
            unload_after: Duration::from_secs(300),
            family_refresh: Duration::from_secs(60),
            dead_after: Duration::from_secs(30),
        }
    }
}

/// Exponential backoff with full jitter: the n-th wait is uniform in
/// `[0, min(max, initial * 2^n))`, and success starts over.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    attempts: u32,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            attempts: 0,
        }
    }

    /// The wait before the next attempt.
    pub(crate) fn next(&mut self) -> Duration {
        let cap = self
            .initial
            .saturating_mul(1u32 << self.attempts.min(20))
            .min(self.max);
        self.attempts = self.attempts.saturating_add(1);
        cap.mul_f64(rand::random::<f64>())
    }

    pub(crate) fn reset(&mut self) {
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_the_cap_with_jitter_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let waits: Vec<Duration> = (0..12).map(|_| backoff.next()).collect();
        for (n, wait) in waits.iter().enumerate() {
            let cap = Duration::from_millis(100)
                .saturating_mul(1 << n)
                .min(Duration::from_secs(2));
            assert!(*wait < cap, "wait {n} was {wait:?}, cap {cap:?}");
        }
        // Full jitter: the waits are not all the same.
        assert!(waits[5..].iter().any(|w| *w != waits[11]));
        backoff.reset();
        assert!(backoff.next() < Duration::from_millis(100));
    }
}
