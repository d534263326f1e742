//! Request rate limits: GCRA (the generic cell rate algorithm), one
//! timestamp per key. With Redis the state is shared by every replica (a
//! Lua script reads and writes it atomically, on Redis's clock); without
//! Redis, or while it does not answer, it is kept in this process.
//!
//! A limit of `per_minute` admits bursts of as many requests and then one
//! every `60 s / per_minute`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// How long a Redis round trip may take before the in-memory state decides.
const REDIS_TIMEOUT: Duration = Duration::from_millis(300);
/// In-memory keys kept before expired ones are swept.
const SWEEP_AT: usize = 10_000;
/// Live in-memory keys at most: past it (a flood of distinct keys) the
/// state is dropped rather than growing without bound.
const MAX_KEYS: usize = 200_000;

/// Keys are `larder:rl:{key}`; the value is the theoretical arrival time
/// in milliseconds. Returns 0 when admitted, else milliseconds to wait.
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - tolerance - now
if wait > 0 then return wait end
redis.call('SET', KEYS[1], new_tat, 'PX', math.max(1, new_tat - now))
return 0
";

/// A limit: `per_minute` requests, in bursts of as many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub per_minute: u32,
}

impl Limit {
    fn interval(self) -> Duration {
        Duration::from_secs(60) / self.per_minute.max(1)
    }
    fn burst(self) -> u32 {
        self.per_minute.max(1)
    }
}

/// Checks and counts requests against limits.
#[derive(Clone)]
pub struct RateLimiter {
    redis: Option<(ConnectionManager, Arc<redis::Script>)>,
    memory: Arc<Mutex<HashMap<String, Instant>>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("shared", &self.redis.is_some())
            .finish()
    }
}

impl RateLimiter {
    /// Limits shared through the Redis at `redis_url`, or local ones.
    pub fn new(redis_url: Option<&str>) -> anyhow::Result<Self> {
        let redis = match redis_url {
            Some(url) => {
                let client = redis::Client::open(url)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(REDIS_TIMEOUT))
                    .set_response_timeout(Some(REDIS_TIMEOUT))
                    .set_number_of_retries(1);
                let manager = ConnectionManager::new_lazy_with_config(client, config)?;
                Some((manager, Arc::new(redis::Script::new(GCRA_SCRIPT))))
            }
            None => None,
        };
        Ok(RateLimiter {
            redis,
            memory: Arc::default(),
        })
    }

    /// Counts a request against `limit` for `key`: `Err(wait)` when it is
    /// over the limit and may be retried after `wait`.
    pub async fn check(&self, key: &str, limit: Limit) -> Result<(), Duration> {
        if let Some((manager, script)) = &self.redis {
            let mut conn = manager.clone();
            let mut invocation = script.key(format!("larder:rl:{key}"));
            invocation
                .arg(limit.interval().as_millis() as u64)
                .arg(limit.burst());
            let call = invocation.invoke_async::<u64>(&mut conn);
            match tokio::time::timeout(REDIS_TIMEOUT, call).await {
                Ok(Ok(0)) => return Ok(()),
                Ok(Ok(wait_ms)) => {
                    metrics::counter!("larder_rate_limited_requests_total").increment(1);
                    return Err(Duration::from_millis(wait_ms));
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "rate limit state unavailable in Redis; using local state");
                }
                Err(_) => tracing::debug!("Redis rate limit check timed out; using local state"),
            }
            metrics::counter!("larder_rate_limit_fallback_total").increment(1);
        }
        let result = self.check_local(key, limit, Instant::now());
        if result.is_err() {
            metrics::counter!("larder_rate_limited_requests_total").increment(1);
        }
        result
    }

    fn check_local(&self, key: &str, limit: Limit, now: Instant) -> Result<(), Duration> {
        let mut memory = self.memory.lock().expect("rate limit lock poisoned");
        if memory.len() >= SWEEP_AT {
            memory.retain(|_, tat| *tat > now);
            if memory.len() >= MAX_KEYS {
                tracing::warn!(
                    keys = memory.len(),
                    "too many rate limit keys in memory; forgetting them"
                );
                memory.clear();
            }
        }
        let interval = limit.interval();
        let tolerance = interval * limit.burst();
        let tat = memory.get(key).copied().unwrap_or(now).max(now);
        let new_tat = tat + interval;
        let allowed_at = new_tat.checked_sub(tolerance).unwrap_or(now);
        if allowed_at > now {
            return Err(allowed_at - now);
        }
        memory.insert(key.to_owned(), new_tat);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_admitted_then_one_request_per_interval() {
        let limiter = RateLimiter::new(None).expect("local");
        let limit = Limit { per_minute: 6 };
        let start = Instant::now();
        for _ in 0..6 {
            assert!(limiter.check_local("k", limit, start).is_ok());
        }
        let wait = limiter
            .check_local("k", limit, start)
            .expect_err("over the burst");
        assert!(wait <= Duration::from_secs(10) && wait > Duration::from_secs(9));
        // Other keys are independent.
        assert!(limiter.check_local("other", limit, start).is_ok());
        // One interval later one more request is admitted, not two.
        let later = start + Duration::from_secs(10);
        assert!(limiter.check_local("k", limit, later).is_ok());
        assert!(limiter.check_local("k", limit, later).is_err());
    }
}
