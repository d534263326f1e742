//! One multiplexed WebSocket (`GET /v1/sync`): many lists over one
//! socket, framed as [`larder_crdt::mux`] describes. Each subscribed list
//! joins its room as a connection of its own (its own id, queue and
//! control), so rooms serve both endpoints unchanged: authorization, the
//! durable acknowledgement, limits and revocation apply per list, and a
//! list that is refused or revoked is closed with a `closed` frame while
//! the others stay subscribed. What concerns the socket (its token's
//! expiry, the message rate, frame size, keep-alive) closes the socket.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket};
use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, FuturesUnordered, SelectAll};
use futures_util::{FutureExt, SinkExt, StreamExt};
use larder_crdt::mux::MuxFrame;
use larder_storage::directory::Directory;
use tokio::time::Instant;
use uuid::Uuid;

use super::NEXT_CONN_ID;
use super::common::{
    RateLimiter, SEND_TIMEOUT, finish_close, malformed_reason, sleep_opt, too_large_or_none,
};
use crate::auth::{self, AccessCheck, tokens::TokenKeys};
use crate::close::{self, CloseReason};
use crate::rooms::outbound::{self, OutboundReceiver};
use crate::rooms::{
    ConnControl, ConnId, Handed, JoinError, Joiner, Outbound, RoomHandle, Rooms, SharedBudget,
};

/// Close code confirming an unsubscribe.
const UNSUBSCRIBED: u16 = 1000;
/// Joins one socket runs at once; further subscribes wait their turn.
const JOINS_AT_ONCE: usize = 16;
/// Subscribes per second one socket may make, in bursts of
/// [`SUBSCRIBE_BURST`]: each costs database reads, and may load a list.
const SUBSCRIBES_PER_SECOND: u32 = 20;
const SUBSCRIBE_BURST: u32 = 300;
/// How long the periodic access re-check of all the socket's lists may take.
const RECHECK_LIMIT: Duration = Duration::from_secs(5);

/// What a multiplexed socket needs besides the rooms.
#[derive(Clone)]
pub struct MuxOptions {
    pub token: String,
    pub tokens: Arc<TokenKeys>,
    pub directory: Directory,
    /// When the socket's token expires: the socket closes with 4440.
    pub expires_at: Instant,
    pub recheck_every: Duration,
    /// Most lists subscribed at once.
    pub max_lists: usize,
}

/// A subscribed list.
struct Subscription {
    conn: ConnId,
    room: RoomHandle,
    control: Arc<ConnControl>,
    check: AccessCheck,
}

/// What a subscription's room sent.
enum RoomEvent {
    Frame(Outbound),
    Closed(CloseReason),
}

type Joined = Result<(Subscription, OutboundReceiver), CloseReason>;

/// Serves one multiplexed socket until it closes.
pub async fn serve(mut socket: WebSocket, options: MuxOptions, rooms: Rooms) {
    let ctx = rooms.context().clone();
    let limits = &ctx.limits;
    let checks = limits.message_checks();
    let keepalive = ctx.settings.keepalive();
    let mut ticker = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
    let mut rate = RateLimiter::new(limits.messages_per_second, limits.message_burst);
    let mut subscribe_rate = RateLimiter::new(SUBSCRIBES_PER_SECOND, SUBSCRIBE_BURST);
    // Frames queued for all the socket's lists together: four times what
    // one single-list socket may hold, however many lists it carries.
    let budget = SharedBudget::new(limits.outbound_queue_bytes.saturating_mul(4));
    let tracker = ctx.tracker.clone();
    let mut last_sent = Instant::now();
    let mut last_received = Instant::now();
    let silence_limit = keepalive * 3;
    let recheck_every = options.recheck_every.max(Duration::from_secs(1));
    let mut recheck = tokio::time::interval_at(Instant::now() + recheck_every, recheck_every);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One timer for the token's life, not one per message.
    let expiry = sleep_opt(Some(options.expires_at));
    tokio::pin!(expiry);

    let mut subscriptions: HashMap<Uuid, Subscription> = HashMap::new();
    // Lists whose join is under way (a second subscribe waits for it), and
    // those of them unsubscribed meanwhile.
    let mut joining: HashSet<Uuid> = HashSet::new();
    let mut cancelled: HashSet<Uuid> = HashSet::new();
    // Subscribes waiting for a join to finish (they count as joining).
    let mut waiting: VecDeque<(Uuid, bool)> = VecDeque::new();
    let mut joins: FuturesUnordered<BoxFuture<'static, (Uuid, Joined)>> = FuturesUnordered::new();
    let mut events: SelectAll<BoxStream<'static, (Uuid, ConnId, RoomEvent)>> = SelectAll::new();

    let reason: Option<CloseReason> = loop {
        tokio::select! {
            Some((list, joined)) = joins.next() => {
                joining.remove(&list);
                if let Some((next, ack)) = waiting.pop_front() {
                    joins.push(join(next, ack, options.clone(), rooms.clone(), budget.clone()).boxed());
                }
                match joined {
                    Ok((sub, _)) if cancelled.remove(&list) => {
                        sub.room.leave_soon(sub.conn, &tracker);
                        if !send(&mut socket, closed(list, &CloseReason::new(UNSUBSCRIBED, "unsubscribed")), &mut last_sent).await {
                            break None;
                        }
                    }
                    Ok((sub, outbound)) => {
                        events.push(room_events(list, sub.conn, outbound, sub.control.clone()));
                        subscriptions.insert(list, sub);
                    }
                    Err(reason) => {
                        // A join unsubscribed meanwhile is confirmed as such.
                        let reason = if cancelled.remove(&list) {
                            CloseReason::new(UNSUBSCRIBED, "unsubscribed")
                        } else {
                            reason
                        };
                        if !send(&mut socket, closed(list, &reason), &mut last_sent).await {
                            break None;
                        }
                    }
                }
            }
            Some((list, conn, event)) = events.next() => {
                // Events of a subscription that was replaced or ended are stale.
                let Some(sub) = subscriptions.get(&list).filter(|s| s.conn == conn) else {
                    continue;
                };
                let frame = match event {
                    RoomEvent::Frame(outbound) => {
                        sub.control.sent(&outbound);
                        MuxFrame::Data { list, payload: &outbound.frame }.encode()
                    }
                    RoomEvent::Closed(reason) => {
                        if let Some(sub) = subscriptions.remove(&list) {
                            sub.room.leave_soon(sub.conn, &tracker);
                        }
                        closed(list, &reason)
                    }
                };
                if !send(&mut socket, frame, &mut last_sent).await {
                    break None;
                }
            }
            incoming = socket.next() => {
                let message = match incoming {
                    Some(Ok(message)) => message,
                    Some(Err(e)) => break too_large_or_none(&e, limits.max_message_bytes),
                    None => break None,
                };
                last_received = Instant::now();
                let bytes = match message {
                    WsMessage::Binary(bytes) => bytes,
                    WsMessage::Text(_) => break Some(CloseReason::new(close::MALFORMED, "text frames are not part of the protocol")),
                    WsMessage::Close(_) => break None,
                    WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
                };
                if bytes.len() > limits.max_message_bytes {
                    break Some(CloseReason::new(close::MESSAGE_TOO_LARGE, format!("message larger than {} bytes", limits.max_message_bytes)));
                }
                if !rate.take(1) {
                    metrics::counter!("larder_rate_limited_total").increment(1);
                    break Some(CloseReason::new(close::RATE_LIMITED, "message rate limit exceeded"));
                }
                if matches!(MuxFrame::decode(&bytes), Ok(MuxFrame::Subscribe { .. }))
                    && !subscribe_rate.take(1)
                {
                    metrics::counter!("larder_rate_limited_total").increment(1);
                    break Some(CloseReason::new(close::RATE_LIMITED, "subscribe rate limit exceeded"));
                }
                let frame = match MuxFrame::decode(&bytes) {
                    Ok(frame) => frame,
                    Err(e) => break Some(CloseReason::new(close::MALFORMED, format!("malformed frame: {e}"))),
                };
                let reply = match frame {
                    MuxFrame::Subscribe { list, ack } => {
                        if subscriptions.contains_key(&list) || joining.contains(&list) {
                            cancelled.remove(&list);
                            None
                        } else if subscriptions.len() + joining.len() >= options.max_lists {
                            Some(closed(list, &CloseReason::new(close::RATE_LIMITED, format!("at most {} lists on one socket", options.max_lists))))
                        } else {
                            joining.insert(list);
                            if joins.len() < JOINS_AT_ONCE {
                                joins.push(join(list, ack, options.clone(), rooms.clone(), budget.clone()).boxed());
                            } else {
                                waiting.push_back((list, ack));
                            }
                            None
                        }
                    }
                    MuxFrame::Unsubscribe { list } => match subscriptions.remove(&list) {
                        Some(sub) => {
                            sub.room.leave_soon(sub.conn, &tracker);
                            Some(closed(list, &CloseReason::new(UNSUBSCRIBED, "unsubscribed")))
                        }
                        // Confirmed when its join finishes.
                        None if joining.contains(&list) => {
                            cancelled.insert(list);
                            None
                        }
                        None => Some(closed(list, &CloseReason::new(UNSUBSCRIBED, "unsubscribed"))),
                    },
                    // Data sent before the subscribe was answered is dropped:
                    // the list is about to be subscribed, not refused.
                    MuxFrame::Data { list, .. } if joining.contains(&list) => None,
                    MuxFrame::Data { list, payload } => match subscriptions.get(&list) {
                        None => Some(closed(list, &CloseReason::new(close::NOT_FOUND, "not subscribed to this list"))),
                        Some(sub) => {
                            let refusal = match larder_crdt::protocol::split_frame_checked(payload, &checks) {
                                Ok(messages) => {
                                    if !rate.take(messages.len()) {
                                        metrics::counter!("larder_rate_limited_total").increment(1);
                                        break Some(CloseReason::new(close::RATE_LIMITED, "message rate limit exceeded"));
                                    }
                                    match sub.room.try_send_messages(sub.conn, messages) {
                                        Handed::Queued => None,
                                        // One busy list must not hold up the others.
                                        Handed::Busy => Some(CloseReason::new(close::TRY_AGAIN_LATER, "list busy: subscribe again shortly")),
                                        Handed::Closed => Some(CloseReason::new(close::GOING_AWAY, "room closed")),
                                    }
                                }
                                Err(e) => {
                                    metrics::counter!("larder_messages_refused_total").increment(1);
                                    Some(CloseReason::new(close::MALFORMED, malformed_reason(&e)))
                                }
                            };
                            refusal.map(|reason| {
                                if let Some(sub) = subscriptions.remove(&list) {
                                    sub.room.leave_soon(sub.conn, &tracker);
                                }
                                closed(list, &reason)
                            })
                        }
                    },
                    MuxFrame::Closed { .. } => break Some(CloseReason::new(close::MALFORMED, "closed frames go from the server to the client")),
                };
                if let Some(frame) = reply
                    && !send(&mut socket, frame, &mut last_sent).await
                {
                    break None;
                }
            }
            _ = recheck.tick() => {
                // All lists at once, bounded: a slow database must not hold
                // the socket (an unanswered check keeps the list, as on a
                // per-list socket).
                let mut checks: FuturesUnordered<BoxFuture<'static, (Uuid, Result<(), CloseReason>)>> =
                    subscriptions
                        .iter()
                        .map(|(list, sub)| {
                            let check = sub.check.clone();
                            let list = *list;
                            async move { (list, check.check().await) }.boxed()
                        })
                        .collect();
                let mut results = Vec::new();
                let _ = tokio::time::timeout(RECHECK_LIMIT, async {
                    while let Some(result) = checks.next().await {
                        results.push(result);
                    }
                })
                .await;
                let mut ok = true;
                for (list, result) in results {
                    let Err(reason) = result else { continue };
                    if let Some(sub) = subscriptions.remove(&list) {
                        sub.room.leave_soon(sub.conn, &tracker);
                    }
                    ok = ok && send(&mut socket, closed(list, &reason), &mut last_sent).await;
                }
                if !ok {
                    break None;
                }
            }
            _ = &mut expiry => {
                break Some(CloseReason::new(close::TOKEN_EXPIRED, "access token expired: refresh it and reconnect"));
            }
            _ = ticker.tick() => {
                if last_received.elapsed() > silence_limit {
                    break Some(CloseReason::new(close::GOING_AWAY, "no traffic from client"));
                }
                if !ping(&mut socket, &mut last_sent).await {
                    break None;
                }
            }
            _ = ctx.shutdown.cancelled() => {
                break Some(CloseReason::new(close::GOING_AWAY, "server shutting down"));
            }
        }
    };
    for (_, sub) in subscriptions.drain() {
        sub.room.leave_soon(sub.conn, &tracker);
    }
    // Joins still under way leave their rooms as they finish (bounded: a
    // join waits at most for its list to load).
    if !joins.is_empty() {
        tracker.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(60), async {
                while let Some((_, joined)) = joins.next().await {
                    if let Ok((sub, _)) = joined {
                        sub.room.leave(sub.conn).await;
                    }
                }
            })
            .await;
        });
    }
    finish_close(&mut socket, reason).await;
}

/// Keep-alive on a multiplexed socket: a ping (a y-websocket message
/// outside a data frame would not parse on the client).
async fn ping<S>(sink: &mut S, last_sent: &mut Instant) -> bool
where
    S: futures_util::Sink<WsMessage, Error = axum::Error> + Unpin,
{
    let sent = tokio::time::timeout(
        SEND_TIMEOUT,
        sink.send(WsMessage::Ping(bytes::Bytes::new())),
    )
    .await;
    *last_sent = Instant::now();
    matches!(sent, Ok(Ok(())))
}

/// Authorizes the socket's token for `list`, joins its room and checks
/// access once more (a revocation that raced the join is caught here).
async fn join(
    list: Uuid,
    ack: bool,
    options: MuxOptions,
    rooms: Rooms,
    budget: Arc<SharedBudget>,
) -> (Uuid, Joined) {
    let grant = match auth::authorize_socket(
        &options.tokens,
        &options.directory,
        Some(&options.token),
        list,
    )
    .await
    {
        Ok(grant) => grant,
        Err(reason) => return (list, Err(reason)),
    };
    let ctx = rooms.context().clone();
    let conn = NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed);
    let control = Arc::new(ConnControl::sharing(budget));
    let (outbound_tx, outbound) = outbound::queue(ctx.limits.outbound_queue);
    let room = loop {
        let room = rooms.get_or_open(list);
        let joiner = Joiner {
            conn,
            outbound: outbound_tx.clone(),
            control: control.clone(),
            access: grant.access,
            user_id: Some(grant.user_id),
            wants_ack: ack,
            link_id: grant.link_id,
        };
        match room.join(joiner).await {
            Ok(()) => break room,
            Err(JoinError::Unloading) if ctx.shutdown.is_cancelled() => {
                return (
                    list,
                    Err(CloseReason::new(close::GOING_AWAY, "server shutting down")),
                );
            }
            Err(JoinError::Unloading) => tokio::task::yield_now().await,
            Err(JoinError::Refused(reason)) => return (list, Err(reason)),
        }
    };
    drop(outbound_tx);
    let check = AccessCheck::new(
        options.directory.clone(),
        list,
        grant.user_id,
        grant.link_id,
    );
    if let Err(reason) = check.check().await {
        room.leave(conn).await;
        return (list, Err(reason));
    }
    let sub = Subscription {
        conn,
        room,
        control,
        check,
    };
    (list, Ok((sub, outbound)))
}

/// A subscription's frames, then how it ended.
fn room_events(
    list: Uuid,
    conn: ConnId,
    outbound: OutboundReceiver,
    control: Arc<ConnControl>,
) -> BoxStream<'static, (Uuid, ConnId, RoomEvent)> {
    futures_util::stream::unfold(Some((outbound, control)), move |state| async move {
        let (mut outbound, control) = state?;
        tokio::select! {
            biased;
            frame = outbound.recv() => match frame {
                Some(frame) => Some(((list, conn, RoomEvent::Frame(frame)), Some((outbound, control)))),
                None => {
                    let reason = control
                        .reason()
                        .unwrap_or_else(|| CloseReason::new(close::GOING_AWAY, "room closed"));
                    Some(((list, conn, RoomEvent::Closed(reason)), None))
                }
            },
            reason = control.closed() => Some(((list, conn, RoomEvent::Closed(reason)), None)),
        }
    })
    .boxed()
}

fn closed(list: Uuid, reason: &CloseReason) -> Vec<u8> {
    MuxFrame::Closed {
        list,
        code: reason.code,
        reason: &reason.reason,
    }
    .encode()
}

/// Writes one frame, bounded; `false` when the socket failed.
async fn send<S>(sink: &mut S, frame: Vec<u8>, last_sent: &mut Instant) -> bool
where
    S: futures_util::Sink<WsMessage, Error = axum::Error> + Unpin,
{
    *last_sent = Instant::now();
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, sink.send(WsMessage::Binary(frame.into()))).await,
        Ok(Ok(()))
    )
}
