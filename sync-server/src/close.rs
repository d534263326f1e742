//! WebSocket close codes (PROTOCOL.md). 44xx are permanent refusals: a
//! client must not retry them in a loop. 1001/1011/1013 are transient.

/// A close code with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: String,
}

impl CloseReason {
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        CloseReason {
            code,
            reason: reason.into(),
        }
    }
}

/// Server shutting down or restarting; reconnect.
pub const GOING_AWAY: u16 = 1001;
/// Transient server trouble (storage unavailable); reconnect with backoff.
pub const INTERNAL_ERROR: u16 = 1011;
/// Slow consumer or overload; reconnect with backoff and resync.
pub const TRY_AGAIN_LATER: u16 = 1013;
/// The message does not follow the protocol (bad bytes, undecodable update, text frame).
pub const MALFORMED: u16 = 4400;
/// The token is missing, invalid or expired.
pub const UNAUTHORIZED: u16 = 4401;
/// The token does not grant access to this list.
pub const FORBIDDEN: u16 = 4403;
/// The list does not exist or was deleted.
pub const NOT_FOUND: u16 = 4404;
/// A message was larger than the configured limit.
pub const MESSAGE_TOO_LARGE: u16 = 4413;
/// The document would grow past the configured limit.
pub const DOCUMENT_TOO_LARGE: u16 = 4414;
/// The access token expired while the socket was open: refresh it and
/// reconnect (not a refusal; the client did nothing wrong).
pub const TOKEN_EXPIRED: u16 = 4440;
/// The connection sent messages faster than its rate limit.
pub const RATE_LIMITED: u16 = 4429;
