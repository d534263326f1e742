//! One WebSocket connection: reads frames, enforces per-connection limits,
//! hands messages to the list's room, and writes what the room queues for
//! it, plus keep-alive traffic. One task per connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use uuid::Uuid;

pub mod common;
pub mod mux;

use common::{
    RateLimiter, SEND_TIMEOUT, close_socket, finish_close, keep_alive, malformed_reason, sleep_opt,
    too_large_or_none,
};

use crate::auth::{Access, AccessCheck};
use crate::close::{self, CloseReason};
use crate::rooms::outbound::{self, OutboundReceiver};
use crate::rooms::{ConnControl, JoinError, Joiner, Outbound, Rooms};

pub(crate) static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// How a connection was asked to behave.
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    pub access: Access,
    /// The account the connection speaks for.
    pub user_id: Option<Uuid>,
    /// When its token expires: the connection is closed then with 4440.
    pub expires_at: Option<Instant>,
    /// Re-checks access right after joining and then every `recheck_every`.
    pub recheck: Option<AccessCheck>,
    pub recheck_every: Duration,
    /// The client asked for durable acknowledgements (`?ack=1`).
    pub wants_ack: bool,
    /// The read-only link the connection's token stands for.
    pub link_id: Option<Uuid>,
}

/// Serves one socket until it closes.
pub async fn serve(mut socket: WebSocket, list_id: Uuid, options: ConnectionOptions, rooms: Rooms) {
    let conn = NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed);
    let ctx = rooms.context().clone();
    let (outbound_tx, mut outbound) = outbound::queue(ctx.limits.outbound_queue);
    let control = Arc::new(ConnControl::default());

    // Join the room; it answers once the list is loaded.
    let room = loop {
        let room = rooms.get_or_open(list_id);
        let joiner = Joiner {
            conn,
            outbound: outbound_tx.clone(),
            control: control.clone(),
            access: options.access,
            user_id: options.user_id,
            wants_ack: options.wants_ack,
            link_id: options.link_id,
        };
        // Futures awaited once or rarely are boxed: the task's own size,
        // held by every idle connection, is what its loop needs.
        match Box::pin(room.join(joiner)).await {
            Ok(()) => break room,
            Err(JoinError::Unloading) if ctx.shutdown.is_cancelled() => {
                close_socket(
                    &mut socket,
                    CloseReason::new(close::GOING_AWAY, "server shutting down"),
                )
                .await;
                return;
            }
            Err(JoinError::Unloading) => tokio::task::yield_now().await,
            Err(JoinError::Refused(reason)) => {
                Box::pin(close_socket(&mut socket, reason)).await;
                return;
            }
        }
    };
    drop(outbound_tx);
    // Access revoked between the check before the upgrade and the join
    // (its revocation found no connection to close) is caught here.
    if let Some(check) = &options.recheck
        && let Err(reason) = Box::pin(check.check()).await
    {
        room.leave(conn).await;
        Box::pin(close_socket(&mut socket, reason)).await;
        return;
    }

    let limits = &ctx.limits;
    let checks = limits.message_checks();
    let keepalive = ctx.settings.keepalive();
    let mut ticker = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
    let mut rate = RateLimiter::new(limits.messages_per_second, limits.message_burst);
    let mut last_sent = Instant::now();
    let mut last_received = Instant::now();
    let silence_limit = keepalive * 3;
    let expires_at = options.expires_at;
    let recheck_every = options.recheck_every.max(Duration::from_secs(1));
    let mut recheck = tokio::time::interval_at(Instant::now() + recheck_every, recheck_every);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One timer for the token's life, not one per message.
    let expiry = sleep_opt(expires_at);
    tokio::pin!(expiry);

    // One task owns the socket whole: reading and writing take turns in
    // this loop, with no lock between two halves.
    let reason: Option<CloseReason> = loop {
        tokio::select! {
            reason = control.closed() => break Some(reason),
            frame = outbound.recv() => match frame {
                Some(first) => {
                    match tokio::time::timeout(SEND_TIMEOUT, send_queued(&mut socket, first, &mut outbound, &control)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break None,
                        // The peer stopped reading altogether.
                        Err(_) => break Some(CloseReason::new(close::TRY_AGAIN_LATER, "too slow: send timed out")),
                    }
                    last_sent = Instant::now();
                }
                // The room dropped us; it may have said why just before.
                None => break Some(control.reason().unwrap_or_else(|| CloseReason::new(close::GOING_AWAY, "room closed"))),
            },
            incoming = socket.next() => {
                let message = match incoming {
                    Some(Ok(message)) => message,
                    Some(Err(e)) => {
                        tracing::debug!(conn, error = %e, "socket read failed");
                        break too_large_or_none(&e, limits.max_message_bytes);
                    }
                    None => break None,
                };
                last_received = Instant::now();
                match message {
                    WsMessage::Binary(bytes) => {
                        if bytes.len() > limits.max_message_bytes {
                            break Some(CloseReason::new(close::MESSAGE_TOO_LARGE, format!("message larger than {} bytes", limits.max_message_bytes)));
                        }
                        let messages = match larder_crdt::protocol::split_frame_checked(&bytes, &checks) {
                            Ok(messages) => messages,
                            Err(e) => {
                                tracing::debug!(conn, error = %e, "malformed frame");
                                metrics::counter!("larder_messages_refused_total").increment(1);
                                break Some(CloseReason::new(close::MALFORMED, malformed_reason(&e)));
                            }
                        };
                        if !rate.take(messages.len()) {
                            metrics::counter!("larder_rate_limited_total").increment(1);
                            break Some(CloseReason::new(close::RATE_LIMITED, "message rate limit exceeded"));
                        }
                        if !room.send_messages(conn, messages).await {
                            break Some(CloseReason::new(close::GOING_AWAY, "room closed"));
                        }
                    }
                    WsMessage::Text(_) => break Some(CloseReason::new(close::MALFORMED, "text frames are not part of the protocol")),
                    WsMessage::Close(_) => break None,
                    WsMessage::Ping(_) | WsMessage::Pong(_) => {}
                }
            }
            _ = recheck.tick(), if options.recheck.is_some() => {
                if let Some(check) = &options.recheck
                    && let Err(reason) = Box::pin(check.check()).await
                {
                    break Some(reason);
                }
            }
            _ = &mut expiry => {
                // The exchange in progress is finished: what the room queued
                // for us goes out, then the close asks for a fresh token.
                while let Ok(queued) = outbound.try_recv() {
                    control.sent(&queued);
                    if !matches!(tokio::time::timeout(SEND_TIMEOUT, socket.feed(WsMessage::Binary(queued.frame))).await, Ok(Ok(()))) {
                        break;
                    }
                }
                let _ = tokio::time::timeout(SEND_TIMEOUT, socket.flush()).await;
                break Some(CloseReason::new(close::TOKEN_EXPIRED, "access token expired: refresh it and reconnect"));
            }
            _ = ticker.tick() => {
                if last_received.elapsed() > silence_limit {
                    break Some(CloseReason::new(close::GOING_AWAY, "no traffic from client"));
                }
                if !Box::pin(keep_alive(&mut socket, &mut last_sent, keepalive)).await {
                    break None;
                }
            }
        }
    };

    room.leave(conn).await;
    if let Some(reason) = &reason {
        tracing::debug!(conn, code = reason.code, reason = %reason.reason, "closing connection");
    }
    Box::pin(finish_close(&mut socket, reason)).await;
}

/// Most queued frames written with one flush.
const FRAMES_PER_FLUSH: usize = 64;

/// Writes `first` and whatever else is queued already, then flushes once:
/// under load one system call carries many frames.
async fn send_queued<S>(
    sink: &mut S,
    first: Outbound,
    outbound: &mut OutboundReceiver,
    control: &ConnControl,
) -> Result<(), axum::Error>
where
    S: futures_util::Sink<WsMessage, Error = axum::Error> + Unpin,
{
    control.sent(&first);
    sink.feed(WsMessage::Binary(first.frame)).await?;
    for _ in 1..FRAMES_PER_FLUSH {
        match outbound.try_recv() {
            Ok(queued) => {
                control.sent(&queued);
                sink.feed(WsMessage::Binary(queued.frame)).await?;
            }
            Err(_) => break,
        }
    }
    sink.flush().await
}
