//! Rate limits of REST requests: per user for writes, per address for
//! account requests.

use super::extract::{Caller, ClientIp};
use crate::app::AppState;
use crate::error::ApiError;
use crate::ratelimit::Limit;

impl AppState {
    /// Counts a request against `limit` for `key`; 429 when over it.
    pub async fn rate_limit(&self, key: &str, per_minute: u32) -> Result<(), ApiError> {
        self.limiter
            .check(key, Limit { per_minute })
            .await
            .map_err(|retry_after| ApiError::RateLimited { retry_after })
    }

    /// Counts a writing request of `caller`.
    pub async fn limit_writes(&self, caller: &Caller) -> Result<(), ApiError> {
        self.rate_limit(
            &format!("write:{}", caller.user_id),
            self.config.rate_limits.writes_per_minute,
        )
        .await
    }

    /// Counts an account request from `ip`.
    pub async fn limit_auth(&self, ip: ClientIp) -> Result<(), ApiError> {
        self.rate_limit(
            &format!("auth:{}", ip.0),
            self.config.rate_limits.auth_per_minute,
        )
        .await
    }
}
