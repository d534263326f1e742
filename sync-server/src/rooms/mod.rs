//! Rooms: one task per open list owns its document and presence.
//!
//! Connections talk to a room through a bounded channel ([`RoomHandle`]);
//! the room answers through each connection's bounded outbound queue. The
//! [`Rooms`] registry guarantees one room per list per process: a room is
//! created under the registry lock, and an idle room removes itself under
//! the same lock, so concurrent first connections all land in one room.
//!
//! - [`room`]: the actor (load, apply, broadcast, group commit), with its
//!   parts without I/O: [`presence`], [`batch`] (pending, in flight, acks),
//!   [`sequencer`] (relayed batches in order, gaps, catch-up) and [`live`]
//!   (updates relayed before they were stored).
//! - [`commit`]: the group committer shared by all rooms.
//! - [`compaction`]: folding a list's log into a snapshot.
//! - [`write`]: changes the server itself makes to a document (REST).

mod batch;
mod budget;
pub mod commit;
pub mod compaction;
mod live;
pub mod outbound;
mod presence;
mod room;
mod sequencer;
pub mod write;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use larder_relay::{Envelope, Relay};
use larder_storage::{ListHead, Store, StoreError, StoredDoc};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;
use yrs::sync::Message;

use crate::auth::Access;
use crate::close::CloseReason;
use crate::config::{Limits, RoomSettings};
use commit::Committer;

/// Identifies a connection within this process.
pub type ConnId = u64;

/// Capacity of a room's command channel; senders wait when it is full.
const ROOM_QUEUE: usize = 1024;

/// What rooms need from the rest of the server.
pub struct RoomContext {
    pub store: Arc<dyn Store>,
    pub relay: Arc<dyn Relay>,
    pub committer: Committer,
    /// Told of every stored update, to project the list's rows.
    pub projector: crate::projector::Projector,
    pub settings: RoomSettings,
    pub limits: Limits,
    /// How long a gap in relayed sequences may stay open before the room
    /// reads the missing updates from the log.
    pub gap_grace: Duration,
    pub replica_id: Uuid,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
}

/// A frame for one connection's socket.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub frame: Bytes,
    /// Set for a full-state reply: the room queues one of each kind at a time.
    pub reply: Option<Reply>,
}

/// Replies that carry a whole state, queued at most once per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Sync step 2 answering a client's step 1.
    State,
    /// Everyone's presence.
    Presence,
}

/// Shared by a connection and its room: lets the room close the connection
/// even when its queue is full, and counts what is queued for it.
#[derive(Debug, Default)]
pub struct ConnControl {
    token: CancellationToken,
    reason: OnceLock<CloseReason>,
    /// Bytes queued for the socket and not written yet.
    queued_bytes: AtomicUsize,
    state_reply: AtomicBool,
    presence_reply: AtomicBool,
    /// The budget this connection shares with others on one socket.
    shared: Option<Arc<SharedBudget>>,
}

/// Bytes that several connections (the lists of one multiplexed socket)
/// may have queued together: one socket holds no more however many lists
/// it carries.
#[derive(Debug)]
pub struct SharedBudget {
    queued: AtomicUsize,
    max: usize,
}

impl SharedBudget {
    pub fn new(max: usize) -> Arc<SharedBudget> {
        Arc::new(SharedBudget {
            queued: AtomicUsize::new(0),
            max,
        })
    }

    /// Bytes queued by all its connections.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

impl Drop for ConnControl {
    /// What was queued and never written (a subscription that ended with
    /// frames in its queue) goes back to the shared budget.
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared
                .queued
                .fetch_sub(*self.queued_bytes.get_mut(), Ordering::AcqRel);
        }
    }
}

impl ConnControl {
    /// A control whose queued bytes also count against `shared`.
    pub fn sharing(shared: Arc<SharedBudget>) -> ConnControl {
        let mut control = ConnControl::default();
        control.shared = Some(shared);
        control
    }

    /// Asks the connection to close with `reason` (the first reason wins).
    pub fn close(&self, reason: CloseReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// The close reason asked for, if any.
    pub fn reason(&self) -> Option<CloseReason> {
        self.reason.get().cloned()
    }

    /// Resolves when a close was asked for.
    pub async fn closed(&self) -> CloseReason {
        self.token.cancelled().await;
        self.reason
            .get()
            .cloned()
            .unwrap_or_else(|| CloseReason::new(crate::close::GOING_AWAY, "closed"))
    }

    /// Counts `len` more queued bytes unless that passes `max` (a frame
    /// into an empty queue always fits, however large).
    pub fn reserve(&self, len: usize, max: usize) -> bool {
        let fits = |max: usize| {
            move |queued: usize| (queued == 0 || queued + len <= max).then_some(queued + len)
        };
        if self
            .queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, fits(max))
            .is_err()
        {
            return false;
        }
        if let Some(shared) = &self.shared
            && shared
                .queued
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, fits(shared.max))
                .is_err()
        {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Bytes queued and not written yet.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Acquire)
    }

    fn reply_flag(&self, reply: Reply) -> &AtomicBool {
        match reply {
            Reply::State => &self.state_reply,
            Reply::Presence => &self.presence_reply,
        }
    }

    pub(crate) fn mark_reply_queued(&self, reply: Reply) {
        self.reply_flag(reply).store(true, Ordering::Release);
    }

    /// Whether a reply of this kind waits in the queue.
    pub fn is_reply_queued(&self, reply: Reply) -> bool {
        self.reply_flag(reply).load(Ordering::Acquire)
    }

    /// The connection wrote (or dropped) `outbound`.
    pub fn sent(&self, outbound: &Outbound) {
        self.queued_bytes
            .fetch_sub(outbound.frame.len(), Ordering::AcqRel);
        if let Some(shared) = &self.shared {
            shared
                .queued
                .fetch_sub(outbound.frame.len(), Ordering::AcqRel);
        }
        if let Some(reply) = outbound.reply {
            self.reply_flag(reply).store(false, Ordering::Release);
        }
    }
}

/// A connection joining a room.
pub struct Joiner {
    pub conn: ConnId,
    pub outbound: outbound::OutboundSender,
    pub control: Arc<ConnControl>,
    pub access: Access,
    /// The account the connection speaks for, so revoking its access closes it.
    pub user_id: Option<Uuid>,
    pub wants_ack: bool,
    /// The read-only link it stands for, so revoking the link closes it.
    pub link_id: Option<Uuid>,
}

/// Why a join failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinError {
    /// The room was unloading; get a fresh handle and try again.
    Unloading,
    /// The room could not load or the list is gone.
    Refused(CloseReason),
}

pub(crate) enum RoomCommand {
    Join {
        joiner: Joiner,
        reply: oneshot::Sender<Result<(), CloseReason>>,
    },
    Messages {
        conn: ConnId,
        messages: Vec<Message>,
    },
    Leave {
        conn: ConnId,
    },
    Compacted {
        up_to_seq: Option<u64>,
    },
    /// An envelope another replica published for this list.
    Relayed(Envelope),
    /// The log's head, from the periodic check or a resync: the room reads
    /// the log when it is behind.
    CatchUp {
        head: ListHead,
    },
    /// The result of reading the log after what the room applied.
    CaughtUp {
        result: Result<StoredDoc, StoreError>,
    },
    /// The list as stored, read to rebuild the document.
    Rebuilt {
        result: Result<StoredDoc, StoreError>,
    },
    /// Close the connections of `user` (everyone's when `None`: the list is gone).
    Revoke {
        user: Option<Uuid>,
    },
    /// Close the connections of the read-only link `link`.
    RevokeLink {
        link: Uuid,
    },
    /// Answer with the list once everything the room holds is stored.
    Settled {
        reply: oneshot::Sender<Option<Arc<crate::projector::SettledList>>>,
    },
}

/// A cheap handle to a room.
#[derive(Clone)]
pub struct RoomHandle {
    tx: mpsc::Sender<RoomCommand>,
}

impl RoomHandle {
    /// Joins the room; returns once the list is loaded.
    pub async fn join(&self, joiner: Joiner) -> Result<(), JoinError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(RoomCommand::Join { joiner, reply })
            .await
            .map_err(|_| JoinError::Unloading)?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(JoinError::Refused(reason)),
            Err(_) => Err(JoinError::Unloading),
        }
    }

    /// Hands messages from a connection to the room (waits when the room is busy).
    pub async fn send_messages(&self, conn: ConnId, messages: Vec<Message>) -> bool {
        self.tx
            .send(RoomCommand::Messages { conn, messages })
            .await
            .is_ok()
    }

    /// Hands messages to the room without waiting: `Busy` when its queue
    /// is full (a socket carrying many lists must not stall them all on
    /// one busy room).
    pub fn try_send_messages(&self, conn: ConnId, messages: Vec<Message>) -> Handed {
        match self.tx.try_send(RoomCommand::Messages { conn, messages }) {
            Ok(()) => Handed::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => Handed::Busy,
            Err(mpsc::error::TrySendError::Closed(_)) => Handed::Closed,
        }
    }

    /// Tells the room a connection is gone.
    pub async fn leave(&self, conn: ConnId) {
        let _ = self.tx.send(RoomCommand::Leave { conn }).await;
    }

    /// [`RoomHandle::leave`] without waiting: when the room's queue is
    /// full, the leave is sent from a task of `tracker`.
    pub fn leave_soon(&self, conn: ConnId, tracker: &TaskTracker) {
        if let Err(mpsc::error::TrySendError::Full(command)) =
            self.tx.try_send(RoomCommand::Leave { conn })
        {
            let tx = self.tx.clone();
            tracker.spawn(async move {
                let _ = tx.send(command).await;
            });
        }
    }
}

/// What [`RoomHandle::try_send_messages`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handed {
    Queued,
    /// The room's queue is full.
    Busy,
    /// The room is gone.
    Closed,
}

struct Entry {
    handle: RoomHandle,
    generation: u64,
}

type Registry = Arc<Mutex<HashMap<Uuid, Entry>>>;

/// The open rooms as the projector sees them: it asks a room for its list
/// and never keeps one open (nor the registry alive).
struct OpenRooms(std::sync::Weak<Mutex<HashMap<Uuid, Entry>>>);

impl crate::projector::OpenLists for OpenRooms {
    fn settled(
        &self,
        list_id: Uuid,
    ) -> Option<oneshot::Receiver<Option<Arc<crate::projector::SettledList>>>> {
        let registry = self.0.upgrade()?;
        let handle = registry
            .lock()
            .expect("room registry lock poisoned")
            .get(&list_id)
            .map(|e| e.handle.clone())?;
        let (reply, answer) = oneshot::channel();
        handle
            .tx
            .try_send(RoomCommand::Settled { reply })
            .ok()
            .map(|()| answer)
    }
}

/// The registry of open rooms of this process.
#[derive(Clone)]
pub struct Rooms {
    registry: Registry,
    ctx: Arc<RoomContext>,
    generations: Arc<AtomicU64>,
}

impl Rooms {
    pub fn new(ctx: RoomContext) -> Self {
        Rooms {
            registry: Arc::default(),
            ctx: Arc::new(ctx),
            generations: Arc::default(),
        }
    }

    /// The open rooms for the projector, which reads an open list from its
    /// room rather than from the log.
    pub fn for_projector(&self) -> Arc<dyn crate::projector::OpenLists> {
        Arc::new(OpenRooms(Arc::downgrade(&self.registry)))
    }

    /// The room of `list_id`, started if it is not open.
    pub fn get_or_open(&self, list_id: Uuid) -> RoomHandle {
        let mut registry = self.registry.lock().expect("room registry lock poisoned");
        if let Some(entry) = registry.get(&list_id)
            && !entry.handle.tx.is_closed()
        {
            return entry.handle.clone();
        }
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(ROOM_QUEUE);
        let handle = RoomHandle { tx };
        registry.insert(
            list_id,
            Entry {
                handle: handle.clone(),
                generation,
            },
        );
        let room = room::Room::new(
            list_id,
            generation,
            self.ctx.clone(),
            self.registry.clone(),
            handle.clone(),
            rx,
        );
        self.ctx.tracker.spawn(room.run());
        metrics::gauge!("larder_rooms_open").increment(1.0);
        handle
    }

    /// Number of rooms open now.
    pub fn open_count(&self) -> usize {
        self.registry
            .lock()
            .expect("room registry lock poisoned")
            .len()
    }

    pub fn context(&self) -> &Arc<RoomContext> {
        &self.ctx
    }

    /// Lists with a room open now.
    pub fn open_lists(&self) -> Vec<Uuid> {
        self.registry
            .lock()
            .expect("room registry lock poisoned")
            .keys()
            .copied()
            .collect()
    }

    /// Closes the sockets of `user` on `list_id` (everyone's when `None`,
    /// for a deleted list) on this replica and, through the relay, on every
    /// other one.
    pub async fn revoke(&self, list_id: Uuid, user: Option<Uuid>) {
        let handle = self.open_handle(list_id);
        if let Some(handle) = handle {
            // Waits for room in the queue: a revocation must not be dropped.
            let _ = handle.tx.send(RoomCommand::Revoke { user }).await;
        }
        self.ctx.relay.publish(larder_relay::Envelope::new(
            self.ctx.replica_id,
            list_id,
            larder_relay::Payload::Revoke { user },
        ));
    }

    /// Closes the sockets of the read-only link `link` to `list_id` on this
    /// replica and, through the relay, on every other one.
    pub async fn revoke_link(&self, list_id: Uuid, link: Uuid) {
        if let Some(handle) = self.open_handle(list_id) {
            let _ = handle.tx.send(RoomCommand::RevokeLink { link }).await;
        }
        self.ctx.relay.publish(larder_relay::Envelope::new(
            self.ctx.replica_id,
            list_id,
            larder_relay::Payload::RevokeLink { link },
        ));
    }

    /// The handle of the list's room if it is open on this replica.
    fn open_handle(&self, list_id: Uuid) -> Option<RoomHandle> {
        self.registry
            .lock()
            .expect("room registry lock poisoned")
            .get(&list_id)
            .map(|e| e.handle.clone())
    }

    /// Hands a command to the list's room if it is open, without waiting: a
    /// room too busy to take it catches up from the log later.
    fn offer(&self, list_id: Uuid, command: RoomCommand) {
        let handle = self.open_handle(list_id);
        if let Some(handle) = handle
            && handle.tx.try_send(command).is_err()
        {
            metrics::counter!("larder_relay_room_busy_total").increment(1);
        }
    }

    /// Hands a command to the list's room if it is open, waiting for room in
    /// its queue off the caller's task: a revocation is never dropped.
    fn deliver(&self, list_id: Uuid, command: RoomCommand) {
        if let Some(handle) = self.open_handle(list_id) {
            self.ctx.tracker.spawn(async move {
                let _ = handle.tx.send(command).await;
            });
        }
    }

    /// Starts the tasks that feed rooms from the relay: the dispatcher
    /// (envelopes to rooms; resync when envelopes may have been lost) and
    /// the periodic check of every open list against the log's head.
    pub fn start_relay_tasks(&self, catchup_interval: Duration) {
        let mut events = self.ctx.relay.events();
        let rooms = self.clone();
        let shutdown = self.ctx.shutdown.clone();
        self.ctx.tracker.spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    event = events.recv() => event,
                };
                match event {
                    Ok(larder_relay::RelayEvent::Envelope(envelope)) => {
                        if envelope.origin == rooms.ctx.replica_id {
                            continue;
                        }
                        if matches!(
                            envelope.payload,
                            larder_relay::Payload::Revoke { .. }
                                | larder_relay::Payload::RevokeLink { .. }
                        ) {
                            rooms.deliver(envelope.list_id, RoomCommand::Relayed(envelope));
                        } else {
                            rooms.offer(envelope.list_id, RoomCommand::Relayed(envelope));
                        }
                    }
                    Ok(larder_relay::RelayEvent::Resync) => rooms.resync(),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(
                            missed,
                            "relay receiver fell behind; open lists catch up from the log"
                        );
                        rooms.resync();
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        let rooms = self.clone();
        let shutdown = self.ctx.shutdown.clone();
        self.ctx.tracker.spawn(async move {
            let mut tick = tokio::time::interval(catchup_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => rooms.check_heads().await,
                }
            }
        });
    }

    /// Envelopes may have been lost: every open list compares its head with
    /// the log's (a few batched queries) and those behind read the log.
    fn resync(&self) {
        let rooms = self.clone();
        self.ctx
            .tracker
            .spawn(async move { rooms.check_heads().await });
    }

    /// Reads the heads of all open lists in a few queries and tells each
    /// room, so a room the relay left behind catches up.
    async fn check_heads(&self) {
        const CHUNK: usize = 1000;
        let lists = self.open_lists();
        for chunk in lists.chunks(CHUNK) {
            match self.ctx.store.list_heads(chunk).await {
                Ok(heads) => {
                    for (list_id, head) in heads {
                        self.offer(list_id, RoomCommand::CatchUp { head });
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read list heads; will try again");
                    return;
                }
            }
        }
    }
}

/// Removes the room of `list_id` if it is still `generation`, when nothing
/// waits in its queue. Called by the room itself under the registry lock.
fn remove_if_idle(
    registry: &Registry,
    list_id: Uuid,
    generation: u64,
    rx: &mpsc::Receiver<RoomCommand>,
) -> bool {
    let mut registry = registry.lock().expect("room registry lock poisoned");
    if !rx.is_empty() {
        return false;
    }
    if registry
        .get(&list_id)
        .is_some_and(|e| e.generation == generation)
    {
        registry.remove(&list_id);
    }
    metrics::gauge!("larder_rooms_open").decrement(1.0);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbound(len: usize) -> Outbound {
        Outbound {
            frame: Bytes::from(vec![0u8; len]),
            reply: None,
        }
    }

    #[test]
    fn connections_sharing_a_budget_hold_no_more_than_it_together() {
        let budget = SharedBudget::new(100);
        let a = ConnControl::sharing(budget.clone());
        let b = ConnControl::sharing(budget.clone());
        assert!(a.reserve(60, 1_000));
        assert!(!b.reserve(60, 1_000), "the socket's budget is spent");
        assert_eq!(b.queued_bytes(), 0, "a refused frame is not counted");
        assert!(b.reserve(40, 1_000));
        assert_eq!(budget.queued(), 100);
        a.sent(&outbound(60));
        assert_eq!(budget.queued(), 40);
        // Frames never written go back when the connection is gone.
        drop(b);
        assert_eq!(budget.queued(), 0);
        // An empty budget takes any one frame, as an empty queue does.
        assert!(a.reserve(500, 1_000));
    }
}
