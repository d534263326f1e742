//! The room actor of one list: owns the document and presence, applies what
//! connections send, broadcasts, and group-commits to the update log.

use larder_crdt::state::EMPTY_UPDATE;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use larder_crdt::protocol;
use larder_relay::{Envelope, Payload, Relay};
use larder_storage::{ListHead, NewUpdate, SeqRange, StoreError, StoredDoc};
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;
use yrs::sync::awareness::AwarenessUpdateEntry;
use yrs::sync::{Awareness, AwarenessUpdate, Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, Doc, ReadTxn, StateVector, Transact, Update};

use super::commit::CommitOutcome;
use super::{
    ConnControl, ConnId, Joiner, Outbound, Registry, RoomCommand, RoomContext, RoomHandle,
    remove_if_idle,
};
use crate::auth::Access;
use crate::close::{self, CloseReason};

/// How long a shutting-down room keeps trying to store what it holds.
const SHUTDOWN_FLUSH_LIMIT: Duration = Duration::from_secs(10);
/// First and last delay between attempts to store a batch that failed.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// A room unloading with at least this many batches (or bytes of them) after
/// the last snapshot compacts, so the next load reads a snapshot instead of
/// replaying them. Batches merge many edits, so bytes count as well.
const UNLOAD_COMPACTION_MIN_UPDATES: u64 = 32;
const UNLOAD_COMPACTION_MIN_BYTES: u64 = 64 * 1024;
/// How long compactions started by a shutdown may hold it up.
const SHUTDOWN_COMPACTION_LIMIT: Duration = Duration::from_secs(5);

/// An update relayed before it was stored that its origin did not confirm
/// as stored within this time is stored by the receiving room itself.
const LIVE_CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);
/// Most unconfirmed relayed updates a room keeps; beyond this the oldest are
/// stored at once, so memory stays bounded.
const MAX_UNCONFIRMED: usize = 4096;
const MAX_UNCONFIRMED_BYTES: usize = 8 * 1024 * 1024;

/// Most relayed batches held back behind a gap; beyond this they are
/// dropped and read from the log instead, so memory stays bounded.
const MAX_HELD: usize = 4096;
const MAX_HELD_BYTES: usize = 32 * 1024 * 1024;
/// Delay before reading the log again after a read left a gap open.
const GAP_RETRY: Duration = Duration::from_millis(250);
/// Delay before reading the log again after a catch-up read failed.
const CATCH_UP_RETRY: Duration = Duration::from_secs(1);
/// Presence relayed from another replica that was not renewed for this long
/// is dropped (y-protocols' outdated timeout; clients renew every 15 s).
const REMOTE_PRESENCE_TIMEOUT: Duration = Duration::from_secs(30);

/// A batch another replica committed, waiting for the batches before it.
struct Held {
    last_seq: u64,
    update: Vec<u8>,
    /// When the origin published it (for the relay lag metric).
    sent_at_micros: u64,
}

/// The room's subscription to its list's relay channel; dropped with the room.
struct Subscription {
    relay: Arc<dyn Relay>,
    list_id: Uuid,
}

impl Subscription {
    async fn open(relay: Arc<dyn Relay>, list_id: Uuid) -> Subscription {
        if let Err(e) = relay.subscribe(list_id).await {
            // The subscription stands and takes effect when the relay is
            // back; meanwhile the periodic check reads the log.
            tracing::debug!(error = %e, "relay unavailable while opening the list");
        }
        Subscription { relay, list_id }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.relay.unsubscribe(self.list_id);
    }
}

struct Conn {
    outbound: mpsc::Sender<Outbound>,
    control: Arc<ConnControl>,
    access: Access,
    /// The account the connection speaks for.
    user_id: Option<Uuid>,
    wants_ack: bool,
    /// Awareness clients this connection announced.
    awareness_clients: HashSet<ClientID>,
    /// Whether this read-only connection was already told it may not write.
    was_denied: bool,
}

/// A batch being written.
/// An update applied here and not yet handed to the committer.
struct PendingUpdate {
    /// The id it was relayed under before being stored (0: not relayed).
    live_id: u64,
    update: Vec<u8>,
}

/// An update another replica relayed before storing it, kept until that
/// replica confirms it stored it.
struct Unconfirmed {
    origin: Uuid,
    id: u64,
    received_at: Instant,
    update: Vec<u8>,
}

/// Ids of the updates this replica relays before storing them: they grow
/// across all lists and, seeded with the clock, across restarts.
fn next_live_id() -> u64 {
    static NEXT: std::sync::OnceLock<AtomicU64> = std::sync::OnceLock::new();
    NEXT.get_or_init(|| {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        AtomicU64::new(micros)
    })
    .fetch_add(1, Ordering::Relaxed)
}

struct InFlight {
    update: Vec<u8>,
    /// The highest live id of the updates in the batch (0: none).
    live_through: u64,
    /// Connections to acknowledge once it is stored.
    ack_conns: Vec<ConnId>,
    /// The document's state vector when the batch was cut: what is durable
    /// once it is stored.
    state_vector: StateVector,
    attempts: u32,
}

pub(crate) struct Room {
    list_id: Uuid,
    generation: u64,
    ctx: Arc<RoomContext>,
    registry: Registry,
    handle: RoomHandle,
    rx: mpsc::Receiver<RoomCommand>,
    commit_tx: mpsc::UnboundedSender<CommitOutcome>,
    commit_rx: mpsc::UnboundedReceiver<CommitOutcome>,
    awareness: Awareness,
    conns: HashMap<ConnId, Conn>,
    /// Updates applied but not yet handed to the committer.
    pending: Vec<PendingUpdate>,
    pending_acks: Vec<ConnId>,
    in_flight: Option<InFlight>,
    retry_at: Option<Instant>,
    awareness_dirty: HashSet<ClientID>,
    awareness_at: Option<Instant>,
    linger_at: Option<Instant>,
    shutdown_deadline: Option<Instant>,
    /// Highest sequence known stored.
    persisted_seq: u64,
    /// Every update of the log up to this sequence is in the document.
    applied_seq: u64,
    /// Batches this replica committed above `applied_seq` (first -> last):
    /// already in the document, waiting for the batches before them.
    own_ranges: BTreeMap<u64, u64>,
    /// Batches other replicas committed above `applied_seq + 1`, by first
    /// sequence: applied strictly in order once the gap closes.
    held: BTreeMap<u64, Held>,
    /// Update bytes in `held`.
    held_bytes: usize,
    /// When to read the log for a gap that stayed open.
    catch_up_at: Option<Instant>,
    is_catching_up: bool,
    catch_up_again: bool,
    /// Updates other replicas relayed before storing them, oldest first.
    unconfirmed: VecDeque<Unconfirmed>,
    unconfirmed_bytes: usize,
    /// Presence relayed from other replicas, with when it was last renewed.
    remote_presence: HashMap<ClientID, Instant>,
    /// Local presence changes to relay to other replicas.
    awareness_outgoing: HashSet<ClientID>,
    tail_updates: u64,
    tail_bytes: u64,
    is_compacting: bool,
    /// The list was deleted: refuse joins and unload.
    is_gone: bool,
    /// Upper bound of the encoded document size (recomputed near the limit).
    doc_bytes: usize,
}

enum Event {
    Command(Option<RoomCommand>),
    Committed(CommitOutcome),
    Retry,
    Awareness,
    Linger,
    CatchUp,
    Unconfirmed,
    Shutdown,
    ShutdownDeadline,
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Room {
    pub(crate) fn new(
        list_id: Uuid,
        generation: u64,
        ctx: Arc<RoomContext>,
        registry: Registry,
        handle: RoomHandle,
        rx: mpsc::Receiver<RoomCommand>,
    ) -> Room {
        // One batch is in flight at most, so this queue holds one outcome.
        let (commit_tx, commit_rx) = mpsc::unbounded_channel();
        Room {
            list_id,
            generation,
            ctx,
            registry,
            handle,
            rx,
            commit_tx,
            commit_rx,
            awareness: Awareness::new(Doc::new()),
            conns: HashMap::new(),
            pending: Vec::new(),
            pending_acks: Vec::new(),
            in_flight: None,
            retry_at: None,
            awareness_dirty: HashSet::new(),
            awareness_at: None,
            linger_at: None,
            shutdown_deadline: None,
            persisted_seq: 0,
            applied_seq: 0,
            own_ranges: BTreeMap::new(),
            held: BTreeMap::new(),
            held_bytes: 0,
            catch_up_at: None,
            is_catching_up: false,
            catch_up_again: false,
            unconfirmed: VecDeque::new(),
            unconfirmed_bytes: 0,
            remote_presence: HashMap::new(),
            awareness_outgoing: HashSet::new(),
            tail_updates: 0,
            tail_bytes: 0,
            is_compacting: false,
            is_gone: false,
            doc_bytes: 0,
        }
    }

    fn doc(&self) -> &Doc {
        self.awareness.doc()
    }

    #[tracing::instrument(name = "room", skip_all, fields(list_id = %self.list_id))]
    pub(crate) async fn run(mut self) {
        // Subscribe first, then load, then catch up by sequence: nothing
        // committed elsewhere between the load and the subscription is missed.
        let _subscription = Subscription::open(self.ctx.relay.clone(), self.list_id).await;
        if let Err(reason) = self.load().await {
            self.refuse_all_and_unload(reason).await;
            return;
        }
        tracing::debug!(seq = self.persisted_seq, "room loaded");
        self.linger_at = Some(Instant::now() + self.ctx.settings.linger());
        self.maybe_compact();
        loop {
            let event = self.next_event().await;
            match event {
                Event::Command(Some(command)) => self.on_command(command),
                Event::Command(None) => break,
                Event::Committed(outcome) => self.on_committed(outcome),
                Event::Retry => self.retry_flush(),
                Event::Awareness => self.flush_awareness(),
                Event::CatchUp => self.start_catch_up(),
                Event::Unconfirmed => self.store_unconfirmed(false),
                Event::Linger => {
                    if self.is_idle()
                        && remove_if_idle(&self.registry, self.list_id, self.generation, &self.rx)
                    {
                        break;
                    }
                    self.linger_at = None;
                    self.arm_linger();
                }
                Event::Shutdown => self.begin_shutdown(),
                Event::ShutdownDeadline => {
                    let unstored = self.pending.len() + usize::from(self.in_flight.is_some());
                    tracing::error!(
                        unstored,
                        "shutting down with updates not stored; clients still hold them and resend on reconnect"
                    );
                    remove_if_idle(&self.registry, self.list_id, self.generation, &self.rx);
                    break;
                }
            }
            // What arrived while nothing was being written goes to the
            // committer now; its commit window gathers batches of all lists.
            if self.in_flight.is_none() && !self.pending.is_empty() {
                self.start_flush();
            }
            if self.shutdown_deadline.is_some()
                && self.pending.is_empty()
                && self.in_flight.is_none()
            {
                // Everything is stored: leave at once.
                let mut registry = self.registry.lock().expect("room registry lock poisoned");
                if registry
                    .get(&self.list_id)
                    .is_some_and(|e| e.generation == self.generation)
                {
                    registry.remove(&self.list_id);
                }
                metrics::gauge!("larder_rooms_open").decrement(1.0);
                break;
            }
        }
        self.compact_on_unload();
        self.rx.close();
        // Joins that raced with unloading get no answer and retry on a new
        // room, unless the server is stopping or the list is gone.
        let refusal = if self.is_gone {
            Some(CloseReason::new(close::NOT_FOUND, "list deleted"))
        } else if self.ctx.shutdown.is_cancelled() {
            Some(CloseReason::new(close::GOING_AWAY, "server shutting down"))
        } else {
            None
        };
        while let Some(command) = self.rx.recv().await {
            if let (RoomCommand::Join { reply, .. }, Some(reason)) = (command, refusal.as_ref()) {
                let _ = reply.send(Err(reason.clone()));
            }
        }
        tracing::debug!("room unloaded");
    }

    async fn next_event(&mut self) -> Event {
        let is_shutting_down = self.shutdown_deadline.is_some();
        let retry_at = self.retry_at;
        let awareness_at = self.awareness_at;
        let linger_at = if is_shutting_down {
            None
        } else {
            self.linger_at
        };
        let shutdown_deadline = self.shutdown_deadline;
        let catch_up_at = if self.is_catching_up {
            None
        } else {
            self.catch_up_at
        };
        let unconfirmed_at = self
            .unconfirmed
            .front()
            .map(|u| u.received_at + LIVE_CONFIRM_TIMEOUT);
        let shutdown = self.ctx.shutdown.clone();
        tokio::select! {
            biased;
            _ = shutdown.cancelled(), if !is_shutting_down => Event::Shutdown,
            outcome = self.commit_rx.recv() => match outcome {
                Some(outcome) => Event::Committed(outcome),
                None => Event::Command(None),
            },
            command = self.rx.recv() => Event::Command(command),
            _ = sleep_opt(retry_at) => Event::Retry,
            _ = sleep_opt(awareness_at) => Event::Awareness,
            _ = sleep_opt(linger_at) => Event::Linger,
            _ = sleep_opt(catch_up_at) => Event::CatchUp,
            _ = sleep_opt(unconfirmed_at) => Event::Unconfirmed,
            _ = sleep_opt(shutdown_deadline) => Event::ShutdownDeadline,
        }
    }

    /// Loads snapshot + tail. Nothing is answered before this completes:
    /// joins wait in the queue.
    async fn load(&mut self) -> Result<(), CloseReason> {
        let unavailable = |e: StoreError| {
            tracing::warn!(error = %e, "cannot load list");
            CloseReason::new(close::TRY_AGAIN_LATER, "storage unavailable")
        };
        let head = self
            .ctx
            .store
            .ensure_list(self.list_id)
            .await
            .map_err(unavailable)?;
        if head.is_deleted {
            return Err(CloseReason::new(close::NOT_FOUND, "list deleted"));
        }
        let stored = self
            .ctx
            .store
            .load_doc(self.list_id)
            .await
            .map_err(unavailable)?;
        let started = std::time::Instant::now();
        if let Err(e) = larder_crdt::state::apply_stored(self.doc(), stored.updates()) {
            tracing::error!(error = %e, "stored list does not load");
            return Err(CloseReason::new(
                close::INTERNAL_ERROR,
                "stored list is damaged",
            ));
        }
        metrics::histogram!("larder_room_load_seconds").record(started.elapsed().as_secs_f64());
        self.persisted_seq = stored.head_seq;
        self.applied_seq = stored.head_seq;
        self.tail_updates = stored.tail.len() as u64;
        self.tail_bytes = stored.tail_bytes();
        self.doc_bytes = stored.updates().map(<[u8]>::len).sum();
        Ok(())
    }

    async fn refuse_all_and_unload(mut self, reason: CloseReason) {
        loop {
            while let Ok(command) = self.rx.try_recv() {
                if let RoomCommand::Join { reply, .. } = command {
                    let _ = reply.send(Err(reason.clone()));
                }
            }
            if remove_if_idle(&self.registry, self.list_id, self.generation, &self.rx) {
                break;
            }
        }
        self.rx.close();
        while let Some(command) = self.rx.recv().await {
            if let RoomCommand::Join { reply, .. } = command {
                let _ = reply.send(Err(reason.clone()));
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.conns.is_empty()
            && self.pending.is_empty()
            && self.in_flight.is_none()
            && self.unconfirmed.is_empty()
    }

    /// Starts the linger timer once nothing is left to do; storing what is
    /// pending re-arms it when it completes.
    fn arm_linger(&mut self) {
        if self.is_idle() && self.linger_at.is_none() {
            let delay = if self.is_gone {
                Duration::ZERO
            } else {
                self.ctx.settings.linger()
            };
            self.linger_at = Some(Instant::now() + delay);
        }
    }

    fn on_command(&mut self, command: RoomCommand) {
        match command {
            RoomCommand::Join { joiner, reply } => {
                if self.shutdown_deadline.is_some() {
                    let _ = reply.send(Err(CloseReason::new(
                        close::GOING_AWAY,
                        "server shutting down",
                    )));
                    return;
                }
                if self.is_gone {
                    let _ = reply.send(Err(CloseReason::new(close::NOT_FOUND, "list deleted")));
                    return;
                }
                let conn = joiner.conn;
                if reply.send(Ok(())).is_ok() {
                    self.join(joiner);
                } else {
                    let _ = conn;
                }
            }
            RoomCommand::Messages { conn, messages } => {
                for message in messages {
                    if !self.conns.contains_key(&conn) {
                        break;
                    }
                    self.on_message(conn, message);
                }
            }
            RoomCommand::Leave { conn } => self.remove_conn(conn),
            RoomCommand::Compacted { up_to_seq } => {
                self.is_compacting = false;
                // Whether we or another replica compacted, or it failed: wait
                // for another threshold's worth before trying again.
                self.tail_updates =
                    up_to_seq.map_or(0, |up_to| self.persisted_seq.saturating_sub(up_to));
                self.tail_bytes = 0;
            }
            RoomCommand::Relayed(envelope) => self.on_relayed(envelope),
            RoomCommand::CatchUp { head } => self.on_catch_up_check(head),
            RoomCommand::CaughtUp { after_seq, result } => self.on_caught_up(after_seq, result),
            RoomCommand::Revoke { user } => self.revoke(user),
        }
    }

    fn join(&mut self, joiner: Joiner) {
        self.linger_at = None;
        let Joiner {
            conn,
            outbound,
            control,
            access,
            user_id,
            wants_ack,
        } = joiner;
        let conn_state = Conn {
            outbound,
            control,
            access,
            user_id,
            wants_ack,
            awareness_clients: HashSet::new(),
            was_denied: false,
        };
        self.conns.insert(conn, conn_state);
        metrics::gauge!("larder_connections").increment(1.0);
        // The server's own sync step 1, always: it is how a client's offline
        // edits reach us (PROTOCOL.md, handshake step 3).
        let sv = self.doc().transact().state_vector();
        self.send_to(conn, protocol::encode_sync_step1(&sv));
        if let Ok(update) = self.awareness.update()
            && !update.clients.is_empty()
        {
            self.send_to(conn, protocol::encode_awareness(&update));
        }
    }

    fn on_message(&mut self, conn: ConnId, message: Message) {
        match message {
            Message::Sync(SyncMessage::SyncStep1(sv)) => {
                let update = self.doc().transact().encode_state_as_update_v1(&sv);
                self.send_to(conn, protocol::encode_sync_step2(update));
            }
            Message::Sync(SyncMessage::SyncStep2(bytes))
            | Message::Sync(SyncMessage::Update(bytes)) => {
                self.on_update(conn, &bytes);
            }
            Message::Awareness(update) => self.on_awareness(conn, update),
            Message::AwarenessQuery => {
                if let Ok(update) = self.awareness.update() {
                    self.send_to(conn, protocol::encode_awareness(&update));
                }
            }
            // Auth messages only travel server -> client; custom ones are
            // not ours to interpret.
            Message::Auth(_) | Message::Custom(..) => {}
        }
    }

    fn on_update(&mut self, conn: ConnId, bytes: &[u8]) {
        let update = match Update::decode_v1(bytes) {
            Ok(update) => update,
            Err(e) => {
                tracing::debug!(conn, error = %e, "update does not decode");
                self.close_conn(
                    conn,
                    CloseReason::new(close::MALFORMED, "update does not decode"),
                );
                return;
            }
        };
        let Some(state) = self.conns.get_mut(&conn) else {
            return;
        };
        if state.access.is_read_only() {
            let sv = self.awareness.doc().transact().state_vector();
            if update.extends(&sv) && !state.was_denied {
                state.was_denied = true;
                let frame = protocol::encode_permission_denied(
                    "read-only access: updates are not accepted",
                );
                self.send_to(conn, frame);
            }
            return;
        }
        let wants_ack = state.wants_ack;
        if !self.fits_size_limit(bytes.len()) {
            self.close_conn(
                conn,
                CloseReason::new(close::DOCUMENT_TOO_LARGE, "document size limit reached"),
            );
            return;
        }
        let delta = {
            let mut txn = self.awareness.doc().transact_mut();
            if let Err(e) = txn.apply_update(update) {
                drop(txn);
                tracing::debug!(conn, error = %e, "update does not apply");
                self.close_conn(
                    conn,
                    CloseReason::new(close::MALFORMED, "update cannot be applied"),
                );
                return;
            }
            txn.encode_update_v1()
        };
        metrics::counter!("larder_updates_received_total").increment(1);
        if delta.as_slice() != EMPTY_UPDATE {
            metrics::counter!("larder_updates_applied_total").increment(1);
            self.doc_bytes += delta.len();
            let frame = Bytes::from(protocol::encode_update(delta.clone()));
            self.broadcast(frame, Some(conn));
            let live_id = self.publish_live(delta.clone());
            self.pending.push(PendingUpdate {
                live_id,
                update: delta,
            });
        }
        if wants_ack {
            if self.pending.is_empty() && self.in_flight.is_none() {
                // Nothing of this connection's is waiting: what we hold is stored.
                let sv = self.doc().transact().state_vector();
                self.send_to(conn, protocol::encode_durable_ack(&sv));
            } else if !self.pending_acks.contains(&conn) {
                self.pending_acks.push(conn);
            }
        }
    }

    /// Whether an update of `incoming` bytes keeps the document under its
    /// limit. The running estimate only grows; near the limit the real
    /// encoded size replaces it.
    fn fits_size_limit(&mut self, incoming: usize) -> bool {
        let limit = self.ctx.limits.max_doc_bytes;
        if self.doc_bytes + incoming <= limit {
            return true;
        }
        self.doc_bytes = larder_crdt::state::encode_full_state(self.doc()).len();
        self.doc_bytes + incoming <= limit
    }

    fn on_awareness(&mut self, conn: ConnId, update: AwarenessUpdate) {
        // Clients this connection announces as present. A client that moved
        // here from another replica re-announces the clock we already have
        // from the relay: no change, but it speaks through this socket now.
        let announced: Vec<ClientID> = update
            .clients
            .iter()
            .filter(|(_, entry)| entry.json.as_ref() != "null")
            .map(|(client, _)| *client)
            .collect();
        let summary = match self.awareness.apply_update_summary(update) {
            Ok(Some(summary)) => summary,
            Ok(None) => {
                self.claim_presence(conn, &announced);
                return;
            }
            Err(e) => {
                tracing::debug!(conn, error = %e, "awareness update refused");
                self.close_conn(
                    conn,
                    CloseReason::new(close::MALFORMED, "awareness update does not apply"),
                );
                return;
            }
        };
        let present: Vec<ClientID> = summary
            .added
            .iter()
            .chain(summary.updated.iter())
            .copied()
            .collect();
        self.claim_presence(conn, &present);
        if let Some(state) = self.conns.get_mut(&conn) {
            for removed in &summary.removed {
                state.awareness_clients.remove(removed);
            }
        }
        for client in summary.all_changes() {
            self.remote_presence.remove(&client);
            self.awareness_outgoing.insert(client);
            self.awareness_dirty.insert(client);
        }
        if self.awareness_at.is_none() {
            self.awareness_at = Some(Instant::now() + self.ctx.settings.awareness_coalesce());
        }
    }

    /// A client id belongs to the connection that announced it last (a
    /// reconnecting client keeps its id while its old socket may linger, or
    /// arrives from another replica).
    fn claim_presence(&mut self, conn: ConnId, clients: &[ClientID]) {
        if clients.is_empty() {
            return;
        }
        for (id, other) in self.conns.iter_mut() {
            if *id != conn {
                for client in clients {
                    other.awareness_clients.remove(client);
                }
            }
        }
        for client in clients {
            self.remote_presence.remove(client);
        }
        if let Some(state) = self.conns.get_mut(&conn) {
            state.awareness_clients.extend(clients.iter().copied());
        }
    }

    /// Sends the coalesced presence changes to everyone here, and this
    /// replica's own changes to the other replicas.
    fn flush_awareness(&mut self) {
        self.awareness_at = None;
        let outgoing: Vec<ClientID> = self.awareness_outgoing.drain().collect();
        if !outgoing.is_empty() {
            match self.awareness.update_with_clients(outgoing) {
                Ok(update) => self.publish_awareness(&update),
                Err(e) => tracing::warn!(error = %e, "cannot encode presence"),
            }
        }
        let dirty: Vec<ClientID> = self.awareness_dirty.drain().collect();
        if dirty.is_empty() {
            return;
        }
        match self.awareness.update_with_clients(dirty) {
            Ok(update) => {
                let frame = Bytes::from(protocol::encode_awareness(&update));
                self.broadcast(frame, None);
            }
            Err(e) => tracing::warn!(error = %e, "cannot encode presence"),
        }
    }

    fn publish_awareness(&self, update: &AwarenessUpdate) {
        self.ctx.relay.publish(Envelope::new(
            self.ctx.replica_id,
            self.list_id,
            Payload::Awareness {
                update: update.encode_v1(),
            },
        ));
    }

    /// Presence another replica relayed: shown to this replica's clients.
    fn on_relayed_awareness(&mut self, bytes: &[u8]) {
        let update = match AwarenessUpdate::decode_v1(bytes) {
            Ok(update) => update,
            Err(e) => {
                tracing::debug!(error = %e, "ignoring relayed presence that does not decode");
                return;
            }
        };
        let summary = match self.awareness.apply_update_summary(update) {
            Ok(Some(summary)) => summary,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "ignoring relayed presence that does not apply");
                return;
            }
        };
        let now = Instant::now();
        for client in summary.added.iter().chain(summary.updated.iter()) {
            // The client now speaks through another replica.
            for conn in self.conns.values_mut() {
                conn.awareness_clients.remove(client);
            }
            self.remote_presence.insert(*client, now);
        }
        for client in &summary.removed {
            self.remote_presence.remove(client);
        }
        self.awareness_dirty.extend(summary.all_changes());
        if self.awareness_at.is_none() {
            self.awareness_at = Some(now + self.ctx.settings.awareness_coalesce());
        }
    }

    /// Drops relayed presence nobody renewed (its replica may be gone).
    fn expire_remote_presence(&mut self) {
        let now = Instant::now();
        let expired: Vec<ClientID> = self
            .remote_presence
            .iter()
            .filter(|(_, renewed)| now.duration_since(**renewed) >= REMOTE_PRESENCE_TIMEOUT)
            .map(|(client, _)| *client)
            .collect();
        if expired.is_empty() {
            return;
        }
        for client in &expired {
            self.remote_presence.remove(client);
        }
        self.remove_presence(expired, false);
    }

    fn send_to(&mut self, conn: ConnId, frame: Vec<u8>) {
        let Some(state) = self.conns.get(&conn) else {
            return;
        };
        match state.outbound.try_send(Outbound::Frame(Bytes::from(frame))) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.drop_slow(conn),
            Err(mpsc::error::TrySendError::Closed(_)) => self.remove_conn(conn),
        }
    }

    /// Sends a frame to every connection but `except`. A connection whose
    /// queue is full is closed (it resyncs on reconnect), never skipped.
    fn broadcast(&mut self, frame: Bytes, except: Option<ConnId>) {
        let mut slow = Vec::new();
        let mut gone = Vec::new();
        for (id, state) in &self.conns {
            if Some(*id) == except {
                continue;
            }
            match state.outbound.try_send(Outbound::Frame(frame.clone())) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => slow.push(*id),
                Err(mpsc::error::TrySendError::Closed(_)) => gone.push(*id),
            }
        }
        metrics::counter!("larder_deliveries_total")
            .increment((self.conns.len() - usize::from(except.is_some())) as u64);
        for id in slow {
            self.drop_slow(id);
        }
        for id in gone {
            self.remove_conn(id);
        }
    }

    fn drop_slow(&mut self, conn: ConnId) {
        metrics::counter!("larder_slow_consumers_total").increment(1);
        self.close_conn(
            conn,
            CloseReason::new(close::TRY_AGAIN_LATER, "too slow: outbound queue full"),
        );
    }

    fn close_conn(&mut self, conn: ConnId, reason: CloseReason) {
        if let Some(state) = self.conns.get(&conn) {
            state.control.close(reason);
        }
        self.remove_conn(conn);
    }

    /// Forgets a connection and tells the others at once that its presence
    /// is gone.
    fn remove_conn(&mut self, conn: ConnId) {
        let Some(state) = self.conns.remove(&conn) else {
            return;
        };
        metrics::gauge!("larder_connections").decrement(1.0);
        self.pending_acks.retain(|c| *c != conn);
        if !state.awareness_clients.is_empty() {
            let clients: Vec<ClientID> = state.awareness_clients.into_iter().collect();
            self.remove_presence(clients, true);
        }
        self.arm_linger();
    }

    /// Removes presence at once and tells this replica's clients (and, for
    /// this replica's own clients, the other replicas).
    fn remove_presence(&mut self, clients: Vec<ClientID>, relay: bool) {
        // Removed with the clock unchanged, as y-protocols does for remote
        // clients: a reconnecting client re-announces itself with that
        // clock and must not be refused as stale.
        let mut removal = HashMap::new();
        for client in &clients {
            self.awareness_dirty.remove(client);
            self.awareness_outgoing.remove(client);
            if let Some((clock, _)) = self.awareness.meta(*client) {
                removal.insert(
                    *client,
                    AwarenessUpdateEntry {
                        clock,
                        json: "null".into(),
                    },
                );
            }
        }
        if let Err(e) = self
            .awareness
            .apply_update(AwarenessUpdate { clients: removal })
        {
            tracing::warn!(error = %e, "cannot remove presence");
        }
        let Ok(update) = self.awareness.update_with_clients(clients) else {
            return;
        };
        if relay {
            self.publish_awareness(&update);
        }
        if !self.conns.is_empty() {
            self.broadcast(Bytes::from(protocol::encode_awareness(&update)), None);
        }
    }

    /// Cuts a batch from what is pending and hands it to the committer.
    fn start_flush(&mut self) {
        if self.in_flight.is_some() || self.pending.is_empty() {
            return;
        }
        let taken = std::mem::take(&mut self.pending);
        let live_through = taken.iter().map(|p| p.live_id).max().unwrap_or(0);
        let updates = taken.iter().map(|p| p.update.clone()).collect();
        let (update, live_through) = match larder_crdt::state::merge_updates(updates) {
            Ok(update) => (update, live_through),
            Err(e) => {
                // Every part came out of our own document; store them apart.
                tracing::error!(error = %e, "cannot merge a batch; storing its updates one by one");
                let mut rest = taken.into_iter();
                let first = rest.next().expect("pending is not empty");
                self.pending = rest.collect();
                (first.update, first.live_id)
            }
        };
        let sv = self.doc().transact().state_vector();
        let ack_conns = if self.pending.is_empty() {
            std::mem::take(&mut self.pending_acks)
        } else {
            Vec::new()
        };
        self.in_flight = Some(InFlight {
            update,
            live_through,
            ack_conns,
            state_vector: sv,
            attempts: 0,
        });
        self.submit();
    }

    fn submit(&mut self) {
        let Some(batch) = self.in_flight.as_mut() else {
            return;
        };
        batch.attempts += 1;
        let update = NewUpdate {
            list_id: self.list_id,
            update: batch.update.clone(),
            origin: self.ctx.replica_id.to_string(),
            user_id: None,
        };
        self.ctx.committer.submit(update, self.commit_tx.clone());
    }

    fn retry_flush(&mut self) {
        self.retry_at = None;
        self.submit();
    }

    fn on_committed(&mut self, outcome: CommitOutcome) {
        let Some(batch) = self.in_flight.take() else {
            return;
        };
        match outcome {
            CommitOutcome::Stored(range) => {
                self.persisted_seq = self.persisted_seq.max(range.last);
                self.tail_updates += 1;
                self.tail_bytes += batch.update.len() as u64;
                if range.last > self.applied_seq {
                    self.own_ranges.insert(range.first, range.last);
                    self.advance();
                }
                for conn in &batch.ack_conns {
                    if self.conns.get(conn).is_some_and(|c| c.wants_ack) {
                        self.send_to(*conn, protocol::encode_durable_ack(&batch.state_vector));
                    }
                }
                self.publish(range, batch.update, batch.live_through);
                self.ctx.projector.changed(self.list_id);
                self.maybe_compact();
                if !self.pending.is_empty() {
                    // More arrived while writing: write it now.
                    self.start_flush();
                } else if !self.pending_acks.is_empty() {
                    // Connections that sent nothing new while this batch was
                    // written: everything we hold is stored now.
                    let sv = self.doc().transact().state_vector();
                    for conn in std::mem::take(&mut self.pending_acks) {
                        self.send_to(conn, protocol::encode_durable_ack(&sv));
                    }
                }
                self.arm_linger();
            }
            CommitOutcome::ListGone => self.list_gone(),
            CommitOutcome::Failed(e) => {
                let delay = RETRY_FIRST
                    .saturating_mul(1 << batch.attempts.min(6))
                    .min(RETRY_MAX);
                tracing::warn!(error = %e, attempts = batch.attempts, retry_in_ms = delay.as_millis() as u64, "storing a batch failed; will retry");
                self.in_flight = Some(batch);
                self.retry_at = Some(Instant::now() + delay);
            }
        }
    }

    fn list_gone(&mut self) {
        if self.is_gone {
            return;
        }
        tracing::info!("list deleted; closing its connections");
        self.is_gone = true;
        self.pending_acks.clear();
        self.pending.clear();
        self.unconfirmed.clear();
        self.unconfirmed_bytes = 0;
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.close_conn(conn, CloseReason::new(close::NOT_FOUND, "list deleted"));
        }
        self.arm_linger();
    }

    /// Relays a committed batch to the other replicas (best effort: they
    /// read what the relay loses from the log).
    fn publish(&self, range: SeqRange, update: Vec<u8>, live_through: u64) {
        self.ctx.relay.publish(Envelope::new(
            self.ctx.replica_id,
            self.list_id,
            Payload::Update {
                first_seq: range.first,
                last_seq: range.last,
                update,
                live_through,
            },
        ));
    }

    /// Relays an update before it is stored, so clients on other replicas
    /// see it as soon as the ones here do; returns the id it went under.
    fn publish_live(&self, update: Vec<u8>) -> u64 {
        let id = next_live_id();
        self.ctx.relay.publish(Envelope::new(
            self.ctx.replica_id,
            self.list_id,
            Payload::Live { id, update },
        ));
        id
    }

    /// Keeps an update another replica relayed before storing it, until
    /// that replica confirms it stored it.
    fn keep_unconfirmed(&mut self, origin: Uuid, id: u64, update: Vec<u8>) {
        self.unconfirmed_bytes += update.len();
        self.unconfirmed.push_back(Unconfirmed {
            origin,
            id,
            received_at: Instant::now(),
            update,
        });
        while self.unconfirmed.len() > MAX_UNCONFIRMED
            || self.unconfirmed_bytes > MAX_UNCONFIRMED_BYTES
        {
            self.adopt_oldest_unconfirmed();
        }
    }

    /// `origin` stored every update it relayed to this list up to `through`.
    fn confirm(&mut self, origin: Uuid, through: u64) {
        if through == 0 || self.unconfirmed.is_empty() {
            return;
        }
        let mut bytes = 0;
        self.unconfirmed.retain(|u| {
            let keep = u.origin != origin || u.id > through;
            if !keep {
                bytes += u.update.len();
            }
            keep
        });
        self.unconfirmed_bytes -= bytes;
    }

    /// Stores the relayed updates whose origin did not confirm them in time
    /// (all of them when `all`): the origin may have died before storing
    /// them, and this document (and its clients) already hold them, so no
    /// client would upload them again.
    fn store_unconfirmed(&mut self, all: bool) {
        let now = Instant::now();
        while let Some(front) = self.unconfirmed.front() {
            if !all && front.received_at + LIVE_CONFIRM_TIMEOUT > now {
                break;
            }
            self.adopt_oldest_unconfirmed();
        }
    }

    fn adopt_oldest_unconfirmed(&mut self) {
        let Some(oldest) = self.unconfirmed.pop_front() else {
            return;
        };
        self.unconfirmed_bytes -= oldest.update.len();
        metrics::counter!("larder_relay_live_adopted_total").increment(1);
        tracing::debug!(origin = %oldest.origin, id = oldest.id, "storing a relayed update its origin did not confirm");
        self.pending.push(PendingUpdate {
            live_id: 0,
            update: oldest.update,
        });
    }

    fn on_relayed(&mut self, envelope: Envelope) {
        if self.is_gone {
            return;
        }
        let sent_at_micros = envelope.sent_at_micros;
        match envelope.payload {
            Payload::Update {
                first_seq,
                last_seq,
                update,
                live_through,
            } => {
                self.confirm(envelope.origin, live_through);
                if last_seq <= self.applied_seq || first_seq == 0 || first_seq > last_seq {
                    return;
                }
                let closes_gap = first_seq <= self.applied_seq + 1;
                if !closes_gap
                    && (self.held.len() >= MAX_HELD
                        || self.held_bytes + update.len() > MAX_HELD_BYTES)
                {
                    // The log has it: read it from there soon.
                    metrics::counter!("larder_relay_held_dropped_total").increment(1);
                    self.catch_up_at = Some(Instant::now());
                    return;
                }
                self.persisted_seq = self.persisted_seq.max(last_seq);
                if let std::collections::btree_map::Entry::Vacant(slot) = self.held.entry(first_seq)
                {
                    self.held_bytes += update.len();
                    slot.insert(Held {
                        last_seq,
                        update,
                        sent_at_micros,
                    });
                }
                self.advance();
            }
            Payload::Live { id, update } => {
                // Unsequenced: `applied_seq` moves only with the stored batch
                // that follows, which then adds nothing new.
                self.apply_remote(&update);
                self.keep_unconfirmed(envelope.origin, id, update);
                metrics::histogram!("larder_relay_lag_seconds", "kind" => "live")
                    .record(larder_relay::seconds_since(sent_at_micros));
            }
            Payload::Awareness { update } => self.on_relayed_awareness(&update),
            Payload::Revoke { user } => self.revoke(user),
        }
    }

    /// Access changed: closes the connections of `user` (they must
    /// authorize again), or all of them when the list was deleted.
    fn revoke(&mut self, user: Option<Uuid>) {
        let Some(user) = user else {
            self.list_gone();
            return;
        };
        let revoked: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.user_id == Some(user))
            .map(|(id, _)| *id)
            .collect();
        for conn in revoked {
            tracing::info!(conn, %user, "access revoked; closing connection");
            self.close_conn(
                conn,
                CloseReason::new(close::FORBIDDEN, "access to this list was revoked"),
            );
        }
    }

    /// Moves `applied_seq` forward over this replica's own batches and the
    /// held batches of others, strictly in sequence order; schedules a read
    /// of the log when a gap stays open.
    fn advance(&mut self) {
        loop {
            let next = self.applied_seq + 1;
            if let Some((&first, &last)) = self.own_ranges.first_key_value()
                && first <= next
            {
                self.own_ranges.pop_first();
                self.applied_seq = self.applied_seq.max(last);
                continue;
            }
            if let Some((&first, _)) = self.held.first_key_value()
                && first <= next
            {
                let (_, held) = self.held.pop_first().expect("checked above");
                self.held_bytes -= held.update.len();
                if held.last_seq > self.applied_seq {
                    self.apply_remote(&held.update);
                    metrics::histogram!("larder_relay_lag_seconds", "kind" => "stored")
                        .record(larder_relay::seconds_since(held.sent_at_micros));
                    self.tail_updates += held.last_seq - self.applied_seq;
                    self.tail_bytes += held.update.len() as u64;
                    self.applied_seq = held.last_seq;
                }
                continue;
            }
            break;
        }
        if self.own_ranges.is_empty() && self.held.is_empty() {
            self.catch_up_at = None;
        } else if self.catch_up_at.is_none() {
            self.catch_up_at = Some(Instant::now() + self.ctx.gap_grace);
        }
    }

    /// Applies an update committed elsewhere and passes on what was new.
    fn apply_remote(&mut self, bytes: &[u8]) {
        let update = match Update::decode_v1(bytes) {
            Ok(update) => update,
            Err(e) => {
                tracing::error!(error = %e, "a committed update does not decode; skipping it");
                return;
            }
        };
        let delta = {
            let mut txn = self.awareness.doc().transact_mut();
            if let Err(e) = txn.apply_update(update) {
                drop(txn);
                tracing::error!(error = %e, "a committed update does not apply; skipping it");
                return;
            }
            txn.encode_update_v1()
        };
        if delta.as_slice() != EMPTY_UPDATE {
            metrics::counter!("larder_updates_relayed_total").increment(1);
            self.doc_bytes += delta.len();
            self.broadcast(Bytes::from(protocol::encode_update(delta)), None);
        }
    }

    /// The log's head, from the periodic check or after a relay resync.
    fn on_catch_up_check(&mut self, head: ListHead) {
        self.expire_remote_presence();
        if head.is_deleted {
            self.list_gone();
        } else if head.head_seq > self.applied_seq.max(self.persisted_seq) {
            // Behind what we know of (applied, held behind a gap the gap
            // timer reads, or our own commits in flight): read the log.
            self.start_catch_up();
        }
    }

    /// Reads what the log holds after `applied_seq`, off the room's task.
    fn start_catch_up(&mut self) {
        self.catch_up_at = None;
        if self.is_gone || self.shutdown_deadline.is_some() {
            return;
        }
        if self.is_catching_up {
            self.catch_up_again = true;
            return;
        }
        self.is_catching_up = true;
        metrics::counter!("larder_catch_ups_total").increment(1);
        let store = self.ctx.store.clone();
        let list_id = self.list_id;
        let after_seq = self.applied_seq;
        let tx = self.handle.tx.clone();
        self.ctx.tracker.spawn(async move {
            // A panicking read must still answer, or the room would never
            // read the log again.
            let read = tokio::spawn(async move { store.load_since(list_id, after_seq).await });
            let result = match read.await {
                Ok(result) => result,
                Err(e) => Err(StoreError::Task(e.to_string())),
            };
            let _ = tx.send(RoomCommand::CaughtUp { after_seq, result }).await;
        });
    }

    fn on_caught_up(&mut self, after_seq: u64, result: Result<StoredDoc, StoreError>) {
        self.is_catching_up = false;
        let stored = match result {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the log to catch up; will retry");
                self.catch_up_at = Some(Instant::now() + CATCH_UP_RETRY);
                return;
            }
        };
        if stored.is_deleted {
            self.list_gone();
            return;
        }
        self.persisted_seq = self.persisted_seq.max(stored.head_seq);
        if let Some(snapshot) = &stored.snapshot
            && snapshot.up_to_seq > self.applied_seq
        {
            // Updates we lack were compacted away: the snapshot holds them.
            tracing::debug!(
                after_seq,
                up_to_seq = snapshot.up_to_seq,
                "catching up from a snapshot"
            );
            self.apply_remote(&snapshot.state);
            self.applied_seq = snapshot.up_to_seq;
        }
        for row in &stored.tail {
            if row.seq <= self.applied_seq {
                continue;
            }
            if row.seq > self.applied_seq + 1 {
                // Not contiguous (cannot happen with one log); read again.
                tracing::warn!(
                    seq = row.seq,
                    applied = self.applied_seq,
                    "log read has a gap; reading again"
                );
                break;
            }
            self.apply_remote(&row.update);
            self.tail_updates += 1;
            self.tail_bytes += row.update.len() as u64;
            self.applied_seq = row.seq;
        }
        self.advance();
        if std::mem::take(&mut self.catch_up_again) {
            self.start_catch_up();
        } else if self.catch_up_at.is_some() {
            // The log did not close the gap (what is held was committed after
            // the read, or is bogus): read again, but not at once.
            self.catch_up_at = Some(Instant::now() + GAP_RETRY.max(self.ctx.gap_grace));
        }
        self.maybe_compact();
    }

    fn maybe_compact(&mut self) {
        let settings = &self.ctx.settings;
        let is_due = self.tail_updates >= settings.compaction_max_updates
            || self.tail_bytes >= settings.compaction_max_bytes;
        if !is_due || self.is_compacting {
            return;
        }
        self.is_compacting = true;
        let store = self.ctx.store.clone();
        let list_id = self.list_id;
        let handle = self.handle.clone();
        self.ctx.tracker.spawn(async move {
            let up_to_seq = match super::compaction::compact(store, list_id).await {
                Ok(up_to) => up_to,
                Err(e) => {
                    tracing::warn!(%list_id, error = %e, "compaction failed");
                    None
                }
            };
            let _ = handle.tx.send(RoomCommand::Compacted { up_to_seq }).await;
        });
    }

    /// Folds a tail worth folding before the room goes, so the list's next
    /// load (here or on another replica, after a restart) reads a snapshot.
    fn compact_on_unload(&self) {
        if self.is_compacting
            || self.is_gone
            || (self.tail_updates < UNLOAD_COMPACTION_MIN_UPDATES
                && self.tail_bytes < UNLOAD_COMPACTION_MIN_BYTES)
        {
            return;
        }
        let store = self.ctx.store.clone();
        let list_id = self.list_id;
        let limit = if self.ctx.shutdown.is_cancelled() {
            SHUTDOWN_COMPACTION_LIMIT
        } else {
            Duration::MAX
        };
        self.ctx.tracker.spawn(async move {
            match tokio::time::timeout(limit, super::compaction::compact(store, list_id)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(%list_id, error = %e, "compaction failed"),
                Err(_) => tracing::info!(%list_id, "compaction left for later: shutting down"),
            }
        });
    }

    fn begin_shutdown(&mut self) {
        // What connections handed over before the shutdown is applied and
        // stored too (a client that already left could not resend it).
        while let Ok(command) = self.rx.try_recv() {
            self.on_command(command);
        }
        self.shutdown_deadline = Some(Instant::now() + SHUTDOWN_FLUSH_LIMIT);
        // Other replicas stop showing this replica's clients at once.
        let present: Vec<ClientID> = self
            .conns
            .values()
            .flat_map(|c| c.awareness_clients.iter().copied())
            .collect();
        if !present.is_empty() {
            self.remove_presence(present, true);
        }
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            if let Some(state) = self.conns.remove(&conn) {
                state
                    .control
                    .close(CloseReason::new(close::GOING_AWAY, "server shutting down"));
                metrics::gauge!("larder_connections").decrement(1.0);
            }
        }
        // This replica stores what others relayed and did not confirm yet:
        // its clients hold it and would not upload it again.
        self.store_unconfirmed(true);
        if self.in_flight.is_none() && !self.pending.is_empty() {
            self.start_flush();
        }
    }
}
