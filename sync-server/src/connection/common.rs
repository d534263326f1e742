//! What every sync socket does the same way, whether it carries one list
//! or many: the message rate limit, keep-alive traffic, refusals in
//! words, and closing with a code and a finished handshake.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;

use crate::close::{self, CloseReason};

/// A write that takes longer means the peer stopped reading; the socket is
/// given up instead of holding its task.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// A token bucket: `rate` per second, up to `burst` at once.
pub struct RateLimiter {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl RateLimiter {
    pub fn new(rate: u32, burst: u32) -> Self {
        RateLimiter {
            tokens: f64::from(burst),
            rate: f64::from(rate),
            burst: f64::from(burst),
            last: Instant::now(),
        }
    }

    pub fn take(&mut self, n: usize) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        self.tokens -= n as f64;
        self.tokens >= 0.0
    }
}

/// The close reason for a refused frame: what was wrong, never the bytes.
pub fn malformed_reason(error: &larder_crdt::protocol::ProtocolError) -> String {
    use larder_crdt::protocol::ProtocolError;
    match error {
        ProtocolError::Invalid { reason, .. } => format!("malformed message: {reason}"),
        ProtocolError::Empty | ProtocolError::Malformed { .. } => "malformed message".to_owned(),
    }
}

/// A read error caused by the size limit still gets its close code.
pub fn too_large_or_none(error: &axum::Error, limit: usize) -> Option<CloseReason> {
    let text = error.to_string();
    if text.contains("too long") || text.contains("too big") || text.contains("Space limit") {
        Some(CloseReason::new(
            close::MESSAGE_TOO_LARGE,
            format!("message larger than {limit} bytes"),
        ))
    } else {
        None
    }
}

/// Sleeps until `at`, or forever.
pub async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Closes a socket not yet split, bounded.
pub async fn close_socket(socket: &mut WebSocket, reason: CloseReason) {
    let frame = CloseFrame {
        code: reason.code,
        reason: reason.reason.into(),
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        socket.send(WsMessage::Close(Some(frame))),
    )
    .await;
}

/// Sends the close frame of `reason` (when there is one) and finishes the
/// closing handshake, each step bounded: a dead peer must not hold the
/// task. Closing a TCP socket with unread input resets it, and a reset can
/// reach the peer before our close frame does, so input is read and
/// discarded until the peer's close.
pub async fn finish_close<S>(socket: &mut S, reason: Option<CloseReason>)
where
    S: futures_util::Sink<WsMessage, Error = axum::Error>
        + futures_util::Stream<Item = Result<WsMessage, axum::Error>>
        + Unpin,
{
    if let Some(reason) = reason {
        let frame = CloseFrame {
            code: reason.code,
            reason: reason.reason.into(),
        };
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            socket.send(WsMessage::Close(Some(frame))),
        )
        .await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(message)) = socket.next().await {
                if matches!(message, WsMessage::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.close()).await;
}

/// Keep-alive traffic: a ping for peers that answer pings, and for
/// browsers (which hide pings from scripts) a real message when nothing
/// else went out for half the interval. `false` when the socket failed.
pub async fn keep_alive<S>(sink: &mut S, last_sent: &mut Instant, keepalive: Duration) -> bool
where
    S: futures_util::Sink<WsMessage, Error = axum::Error> + Unpin,
{
    let ping = tokio::time::timeout(
        SEND_TIMEOUT,
        sink.send(WsMessage::Ping(bytes::Bytes::new())),
    );
    if !matches!(ping.await, Ok(Ok(()))) {
        return false;
    }
    if last_sent.elapsed() >= keepalive / 2 {
        let frame = WsMessage::Binary(larder_crdt::protocol::encode_keepalive().into());
        *last_sent = Instant::now();
        return matches!(
            tokio::time::timeout(SEND_TIMEOUT, sink.send(frame)).await,
            Ok(Ok(()))
        );
    }
    true
}
