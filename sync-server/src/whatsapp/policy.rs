//! What to do after a failed send, decided by the API's error `code`
//! rather than the HTTP status (WHATSAPP.md, "Error codes and what to do"),
//! and how long to wait before trying again.

use std::time::Duration;

use rand::Rng;

use super::client::SendError;

/// Longest wait between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// The next step after a failed send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Try again after a backoff of at least `min`; `api_down` failures
    /// count towards opening the circuit breaker.
    Retry { min: Duration, api_down: bool },
    /// Outside the 24-hour window: send the template instead, now.
    AsTemplate,
    /// Permanent: the share fails; `alert` when the server's own
    /// credentials are at fault (an operator must act).
    Fail { alert: bool },
    /// The request may have been sent: wait for a status webhook.
    Unsure,
}

/// Decides what follows `error`.
pub fn decide(error: &SendError) -> Decision {
    let (code, http_status) = match error {
        SendError::NotSent(_) => {
            return Decision::Retry {
                min: Duration::ZERO,
                api_down: true,
            };
        }
        SendError::Unsure(_) => return Decision::Unsure,
        SendError::Api {
            code, http_status, ..
        } => (*code, *http_status),
    };
    let retry = |min: u64, api_down: bool| Decision::Retry {
        min: Duration::from_secs(min),
        api_down,
    };
    match code {
        Some(130429) => retry(0, false),
        // About one message per 6 s to one recipient.
        Some(131056) => retry(6, false),
        // Account or app rate limit: back off for minutes.
        Some(80007 | 4) => retry(60, false),
        Some(1 | 2 | 131000) => retry(0, true),
        Some(131047) => Decision::AsTemplate,
        Some(190 | 0) => Decision::Fail { alert: true },
        Some(131026 | 100 | 131008 | 131009 | 132000..=132016) => Decision::Fail { alert: false },
        _ if http_status >= 500 => retry(0, true),
        _ if http_status == 429 => retry(0, false),
        _ => Decision::Fail { alert: false },
    }
}

/// The wait before attempt `attempt + 1`: `base` doubled per attempt, up
/// to [`MAX_BACKOFF`], with half of it random (so replicas and jobs spread
/// out), and never less than `min`.
pub fn backoff(attempt: u32, base: Duration, min: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let full = exp.min(MAX_BACKOFF);
    let half = full / 2;
    let jitter = rand::rng().random_range(0..=half.as_millis() as u64);
    (half + Duration::from_millis(jitter)).max(min)
}

/// A sentence for the family saying why a share failed or waits.
pub fn explain(error: &SendError) -> String {
    let SendError::Api { code, message, .. } = error else {
        return error.to_string();
    };
    let why = match code {
        Some(131026) => "the number cannot receive WhatsApp messages",
        Some(100 | 131008 | 131009) => "WhatsApp rejected a parameter of the message",
        Some(132000..=132016) => {
            "the message template is missing, not approved, or its parameters do not match"
        }
        Some(190) => "the server's WhatsApp access token expired or is invalid",
        Some(0) => "WhatsApp refused the server's credentials",
        Some(130429 | 80007 | 4) => "WhatsApp is rate limiting this server",
        Some(131056) => "too many messages to this vendor in a short time",
        Some(131047) => "the vendor's 24-hour window is closed",
        _ => "WhatsApp could not take the message",
    };
    match code {
        Some(code) => format!("{why} (error {code}: {message})"),
        None => format!("{why} ({message})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: Option<i64>, http_status: u16) -> SendError {
        SendError::Api {
            code,
            http_status,
            message: "m".into(),
        }
    }

    #[test]
    fn codes_decide_not_http_statuses() {
        for code in [130429, 131056, 80007, 4, 1, 2, 131000] {
            assert!(
                matches!(decide(&api(Some(code), 400)), Decision::Retry { .. }),
                "{code}"
            );
        }
        assert_eq!(decide(&api(Some(131047), 400)), Decision::AsTemplate);
        for code in [131026, 100, 131008, 131009, 132000, 132007, 132016] {
            assert_eq!(
                decide(&api(Some(code), 500)),
                Decision::Fail { alert: false },
                "{code} is permanent even with a 5xx"
            );
        }
        for code in [190, 0] {
            assert_eq!(
                decide(&api(Some(code), 401)),
                Decision::Fail { alert: true }
            );
        }
        assert!(matches!(
            decide(&api(None, 503)),
            Decision::Retry { api_down: true, .. }
        ));
        assert_eq!(decide(&api(None, 400)), Decision::Fail { alert: false });
        assert_eq!(
            decide(&SendError::Unsure("timeout".into())),
            Decision::Unsure
        );
        assert!(matches!(
            decide(&SendError::NotSent("refused".into())),
            Decision::Retry { api_down: true, .. }
        ));
        assert_eq!(
            decide(&api(Some(131056), 400)),
            Decision::Retry {
                min: Duration::from_secs(6),
                api_down: false
            }
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_respects_floors() {
        let base = Duration::from_secs(2);
        for attempt in 1..=12 {
            let full = (base * (1 << (attempt - 1).min(20))).min(MAX_BACKOFF);
            let wait = backoff(attempt, base, Duration::ZERO);
            assert!(wait >= full / 2 && wait <= full, "{attempt}: {wait:?}");
        }
        assert!(backoff(1, base, Duration::from_secs(60)) >= Duration::from_secs(60));
        assert!(backoff(40, base, Duration::ZERO) <= MAX_BACKOFF);
    }
}
