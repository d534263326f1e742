//! The room actor of one list: owns the document, its connections and
//! presence; applies what connections send and broadcasts it. The parts
//! without I/O live beside it ([`super::presence`], [`super::batch`],
//! [`super::sequencer`], [`super::live`]); storing, relaying and reading the
//! log are in [`persist`].

mod cold;
mod persist;
mod settled;

use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use larder_crdt::protocol;
use larder_crdt::state::EMPTY_UPDATE;
use larder_relay::{Envelope, Payload};
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;
use yrs::sync::{AwarenessUpdate, Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use larder_crdt::nesting::{NestingError, NestingIndex};

use super::batch::Batches;
use super::budget::ReplyBudget;
use super::commit::CommitOutcome;
use super::live::LiveUpdates;
use super::outbound::TrySendError;
use super::presence::{Outgoing, Presence, PresenceError, PresenceLimits};
use super::sequencer::Sequencer;
use super::{
    ConnControl, ConnId, Joiner, Outbound, Registry, Reply, RoomCommand, RoomContext, RoomHandle,
    remove_if_idle,
};
use crate::auth::Access;
use crate::close::{self, CloseReason};

/// How long a shutting-down room keeps trying to store what it holds.
const SHUTDOWN_FLUSH_LIMIT: Duration = Duration::from_secs(10);

struct Conn {
    outbound: super::outbound::OutboundSender,
    control: Arc<ConnControl>,
    access: Access,
    /// The account the connection speaks for.
    user_id: Option<Uuid>,
    wants_ack: bool,
    /// The read-only link it stands for.
    link_id: Option<Uuid>,
    /// Whether this read-only connection was already told it may not write.
    was_denied: bool,
    /// Whole-state replies it may still get.
    replies: ReplyBudget,
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
    doc: Doc,
    presence: Presence,
    conns: HashMap<ConnId, Conn>,
    batches: Batches,
    sequencer: Sequencer,
    live: LiveUpdates,
    linger_at: Option<Instant>,
    shutdown_deadline: Option<Instant>,
    /// Batches and bytes stored after the last snapshot.
    tail_updates: u64,
    tail_bytes: u64,
    is_compacting: bool,
    /// A rebuild of the document from storage is running.
    is_rebuilding: bool,
    /// The list was deleted: refuse joins and unload.
    is_gone: bool,
    /// Upper bound of the encoded document size (recomputed near the limit).
    doc_bytes: usize,
    /// Bytes yrs holds aside for updates whose dependencies are missing.
    pending_bytes: usize,
    /// Sync step 1 requests waiting for a rebuild to finish.
    deferred_step1: HashMap<ConnId, StateVector>,
    /// How deep the document's types nest, to refuse updates nesting deeper.
    nesting: NestingIndex,
    /// The projector waiting for the list with everything stored.
    settled_waiters: Vec<settled::Waiter>,
    /// The stored bytes the document was loaded from, while it is still
    /// exactly them ([`cold`]).
    cold_state: Option<Vec<u8>>,
    /// Structs the document holds (each costs yrs memory, whatever its bytes).
    doc_structs: usize,
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

/// How deep types may nest in a list's document.
fn nesting_limit(limits: &crate::config::Limits) -> u32 {
    u32::try_from(limits.max_nesting).unwrap_or(u32::MAX)
}

/// Runs `f`, turning a panic inside yrs into an error: one connection's
/// message must not take down the room, let alone the process.
fn contained<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, ()> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        metrics::counter!("larder_room_panics_total").increment(1);
        tracing::error!(what, panic = %message, "a panic was contained");
    })
}

/// Applies `update` to `doc`; returns what changed. The transaction commits
/// only once applying returned: after a panic inside yrs it is left
/// uncommitted (committing a half-integrated state could panic again while
/// unwinding, which aborts the process), and the caller replaces `doc`.
fn apply_to(doc: &Doc, update: Update) -> Result<Vec<u8>, yrs::error::UpdateError> {
    let mut txn = ManuallyDrop::new(doc.transact_mut());
    let applied = txn.apply_update(update);
    let txn = ManuallyDrop::into_inner(txn);
    applied?;
    Ok(txn.encode_update_v1())
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
        let limits = &ctx.limits;
        let presence = Presence::new(
            PresenceLimits {
                clients_per_conn: limits.presence_clients_per_connection,
                state_bytes: limits.presence_state_bytes,
                list_bytes: limits.presence_list_bytes,
            },
            ctx.settings.awareness_coalesce(),
        );
        let sequencer = Sequencer::new(0, ctx.gap_grace);
        let ctx_limits = ctx.limits.clone();
        Room {
            list_id,
            generation,
            ctx,
            registry,
            handle,
            rx,
            commit_tx,
            commit_rx,
            doc: Doc::new(),
            presence,
            conns: HashMap::new(),
            batches: Batches::default(),
            sequencer,
            live: LiveUpdates::default(),
            linger_at: None,
            shutdown_deadline: None,
            tail_updates: 0,
            tail_bytes: 0,
            is_compacting: false,
            is_rebuilding: false,
            is_gone: false,
            doc_bytes: 0,
            pending_bytes: 0,
            deferred_step1: HashMap::new(),
            nesting: NestingIndex::new(nesting_limit(&ctx_limits)),
            doc_structs: 0,
            settled_waiters: Vec::new(),
            cold_state: None,
        }
    }

    #[tracing::instrument(name = "room", skip_all, fields(list_id = %self.list_id))]
    pub(crate) async fn run(mut self) {
        // Subscribe first, then load, then catch up by sequence: nothing
        // committed elsewhere between the load and the subscription is missed.
        let _subscription = persist::Subscription::open(self.ctx.relay.clone(), self.list_id).await;
        if let Err(reason) = self.load().await {
            self.refuse_all_and_unload(reason).await;
            return;
        }
        tracing::debug!(seq = self.sequencer.persisted_seq(), "room loaded");
        self.linger_at = Some(Instant::now() + self.ctx.settings.linger());
        self.maybe_compact();
        loop {
            let event = self.next_event().await;
            match event {
                Event::Command(Some(command)) => self.on_command(command),
                Event::Command(None) => break,
                Event::Committed(outcome) => self.on_committed(outcome),
                Event::Retry => self.retry_flush(),
                Event::Awareness => self.flush_presence(),
                Event::CatchUp => self.start_catch_up(),
                Event::Unconfirmed => self.adopt_unconfirmed(false),
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
                    tracing::error!(
                        unstored = self.batches.unstored(),
                        "shutting down with updates not stored; clients still hold them and resend on reconnect"
                    );
                    remove_if_idle(&self.registry, self.list_id, self.generation, &self.rx);
                    break;
                }
            }
            // What arrived while nothing was being written goes to the
            // committer now; its commit window gathers batches of all lists.
            self.start_flush();
            if !self.settled_waiters.is_empty() {
                self.answer_settled();
            }
            if self.shutdown_deadline.is_some() && self.batches.is_idle() {
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
        let retry_at = self.batches.retry_at();
        let awareness_at = self.presence.flush_at();
        let linger_at = if is_shutting_down {
            None
        } else {
            self.linger_at
        };
        let shutdown_deadline = self.shutdown_deadline;
        let catch_up_at = self.sequencer.catch_up_at();
        let unconfirmed_at = self.live.next_deadline();
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
        self.conns.is_empty() && self.batches.is_idle() && self.live.is_empty()
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
                if reply.send(Ok(())).is_ok() {
                    self.join(joiner);
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
                self.tail_updates = up_to_seq.map_or(0, |up_to| {
                    self.sequencer.persisted_seq().saturating_sub(up_to)
                });
                self.tail_bytes = 0;
            }
            RoomCommand::Relayed(envelope) => self.on_relayed(envelope),
            RoomCommand::CatchUp { head } => self.on_catch_up_check(head),
            RoomCommand::CaughtUp { result } => self.on_caught_up(result),
            RoomCommand::Rebuilt { result } => self.on_rebuilt(result),
            RoomCommand::Revoke { user } => self.revoke(user),
            RoomCommand::RevokeLink { link } => self.revoke_link(link),
            RoomCommand::Settled { reply } => self.settled_waiters.push(reply),
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
            link_id,
        } = joiner;
        self.conns.insert(
            conn,
            Conn {
                outbound,
                control,
                access,
                user_id,
                wants_ack,
                link_id,
                was_denied: false,
                replies: ReplyBudget::default(),
            },
        );
        metrics::gauge!("larder_connections").increment(1.0);
        // The server's own sync step 1, always: it is how a client's offline
        // edits reach us (PROTOCOL.md, handshake step 3).
        let sv = self.doc.transact().state_vector();
        self.send_to(conn, protocol::encode_sync_step1(&sv), None);
        if !self.presence.is_empty() {
            self.send_presence_reply(conn);
        }
    }

    fn on_message(&mut self, conn: ConnId, message: Message) {
        match message {
            Message::Sync(SyncMessage::SyncStep1(sv)) => self.answer_step1(conn, &sv),
            Message::Sync(SyncMessage::SyncStep2(bytes))
            | Message::Sync(SyncMessage::Update(bytes)) => {
                self.on_update(conn, &bytes);
            }
            Message::Awareness(update) => self.on_presence(conn, update),
            Message::AwarenessQuery => self.send_presence_reply(conn),
            // Auth messages only travel server -> client; custom ones are
            // not ours to interpret.
            Message::Auth(_) | Message::Custom(..) => {}
        }
    }

    /// Sync step 2 for a client's step 1. One full-state reply per
    /// connection is queued at a time: a client asking again before it
    /// read the last one gets that one (and the updates after it, which
    /// cover anything newer), so asking cannot multiply the document in
    /// the server's memory.
    pub(super) fn answer_step1(&mut self, conn: ConnId, sv: &StateVector) {
        let Some(state) = self.conns.get(&conn) else {
            return;
        };
        if self.is_rebuilding {
            // Answered from the rebuilt document.
            self.deferred_step1.insert(conn, sv.clone());
            return;
        }
        if state.control.is_reply_queued(Reply::State) {
            metrics::counter!("larder_replies_coalesced_total", "kind" => "state").increment(1);
            return;
        }
        if !self
            .conns
            .get_mut(&conn)
            .is_some_and(|state| state.replies.take())
        {
            self.close_conn(
                conn,
                CloseReason::new(
                    close::RATE_LIMITED,
                    "too many requests for the whole list; reconnect later",
                ),
            );
            return;
        }
        let doc = &self.doc;
        let cold = self.cold_reply(sv);
        match contained("encoding sync step 2", || {
            cold.unwrap_or_else(|| doc.transact().encode_state_as_update_v1(sv))
        }) {
            Ok(update) => {
                self.send_to(
                    conn,
                    protocol::encode_sync_step2(update),
                    Some(Reply::State),
                );
            }
            Err(()) => self.close_conn(
                conn,
                CloseReason::new(close::INTERNAL_ERROR, "cannot encode the list"),
            ),
        }
    }

    /// Everyone's presence, once at a time per connection (as for step 1).
    fn send_presence_reply(&mut self, conn: ConnId) {
        let Some(state) = self.conns.get(&conn) else {
            return;
        };
        if state.control.is_reply_queued(Reply::Presence) {
            metrics::counter!("larder_replies_coalesced_total", "kind" => "presence").increment(1);
            return;
        }
        let frame = protocol::encode_awareness(&self.presence.full());
        self.send_to(conn, frame, Some(Reply::Presence));
    }

    fn on_update(&mut self, conn: ConnId, bytes: &[u8]) {
        let update = match contained("decoding an update", || Update::decode_v1(bytes)) {
            Ok(Ok(update)) => update,
            Ok(Err(e)) => {
                tracing::debug!(conn, error = %e, "update does not decode");
                self.close_conn(
                    conn,
                    CloseReason::new(close::MALFORMED, "update does not decode"),
                );
                return;
            }
            Err(()) => {
                self.close_conn(
                    conn,
                    CloseReason::new(close::MALFORMED, "update cannot be read"),
                );
                return;
            }
        };
        let Some(state) = self.conns.get_mut(&conn) else {
            return;
        };
        if state.access.is_read_only() {
            let sv = self.doc.transact().state_vector();
            if update.extends(&sv) && !state.was_denied {
                state.was_denied = true;
                let frame = protocol::encode_permission_denied(
                    "read-only access: updates are not accepted",
                );
                self.send_to(conn, frame, None);
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
        if !self.judge_nesting(conn, bytes) {
            return;
        }
        // What waits aside already (relayed updates may wait for others).
        let pending_before = larder_crdt::state::pending_bytes(&self.doc);
        self.forget_cold_state();
        let doc = &self.doc;
        let applied = contained("applying an update", || apply_to(doc, update));
        let delta = match applied {
            Ok(Ok(delta)) => delta,
            Ok(Err(e)) => {
                // yrs may have integrated part of it before failing: that
                // part would be served but never stored. Rebuild without it.
                tracing::debug!(conn, error = %e, "update does not apply");
                self.close_conn(
                    conn,
                    CloseReason::new(close::MALFORMED, "update cannot be applied"),
                );
                self.request_rebuild("an update applied only in part");
                return;
            }
            Err(()) => {
                self.close_conn(
                    conn,
                    CloseReason::new(close::MALFORMED, "update cannot be applied"),
                );
                self.replace_doc_after_panic();
                return;
            }
        };
        metrics::counter!("larder_updates_received_total").increment(1);
        if delta.as_slice() != EMPTY_UPDATE {
            self.record_integrated(&delta);
            metrics::counter!("larder_updates_applied_total").increment(1);
            self.doc_bytes += delta.len();
            let frame = Bytes::from(protocol::encode_update(delta.clone()));
            self.broadcast(frame, Some(conn));
            let live_id = self.publish_live(delta.clone());
            self.batches.push(live_id, delta);
        }
        if !self.account_pending(conn, pending_before) {
            return;
        }
        if wants_ack && self.batches.ack_when_stored(conn) {
            // Nothing of this connection's is waiting: what we hold is
            // stored, but for what other replicas have not confirmed.
            let sv = self.stored_state_vector();
            self.send_to(conn, protocol::encode_durable_ack(&sv), None);
            if !self.live.is_empty() {
                // Once that is stored (confirmed or adopted), say so again:
                // it may hold this client's edits, relayed by a replica it
                // used before.
                self.batches.wait_for_ack(conn);
            }
        }
    }

    /// Refuses an update that would nest types deeper than the limit (yrs
    /// deletes nested types recursively), that builds on changes this
    /// server does not hold yet, or that would make the document hold more
    /// structs than it may (each costs yrs memory, however few its bytes).
    /// Returns whether it may be applied.
    fn judge_nesting(&mut self, conn: ConnId, bytes: &[u8]) -> bool {
        let sv = self.doc.transact().state_vector();
        let holds = |(client, clock): larder_crdt::validate::Id| {
            sv.get(&yrs::ClientID::new(client)) > clock
        };
        let checks = self.ctx.limits.message_checks();
        let judged = self.nesting.judge(bytes, &checks, &holds);
        let max_structs = self.ctx.limits.max_doc_structs;
        if let Ok(structs) = judged
            && self.doc_structs + structs > max_structs
        {
            // The count only grows between loads (collected structs stay
            // counted): count again before refusing.
            self.reindex_nesting();
        }
        let reason = match judged {
            Ok(structs) if self.doc_structs + structs <= max_structs => return true,
            Ok(_) => CloseReason::new(
                close::DOCUMENT_TOO_LARGE,
                "the list would hold more entries than it may",
            ),
            Err(e @ (NestingError::TooDeep(_) | NestingError::Invalid(_))) => {
                CloseReason::new(close::MALFORMED, format!("malformed message: {e}"))
            }
            Err(NestingError::NotYetHere) => CloseReason::new(
                close::TRY_AGAIN_LATER,
                "the update builds on changes this server has not received yet; reconnect",
            ),
        };
        metrics::counter!("larder_nesting_refused_total").increment(1);
        self.close_conn(conn, reason);
        false
    }

    /// Whether an update of `conn` left anything aside in yrs (structs or
    /// deletions waiting for others): it is counted against the document
    /// limit, unstored and out of the nesting index's sight. The judgement
    /// before applying refuses what builds on structs this document lacks,
    /// so only a crafted update gets here: its connection is closed (1013,
    /// it may resync) and the document rebuilt without what waits. Returns
    /// whether the connection stays.
    fn account_pending(&mut self, conn: ConnId, before: usize) -> bool {
        self.pending_bytes = larder_crdt::state::pending_bytes(&self.doc);
        if self.pending_bytes <= before {
            return true;
        }
        metrics::counter!("larder_pending_refused_total").increment(1);
        self.close_conn(
            conn,
            CloseReason::new(
                close::TRY_AGAIN_LATER,
                "the update waits for changes this server has not received; reconnect",
            ),
        );
        self.request_rebuild("an update was left waiting for missing dependencies");
        false
    }

    /// Whether an update of `incoming` bytes keeps the document (with what
    /// yrs holds aside) under its limit. The running estimate only grows;
    /// near the limit the real encoded size replaces it.
    fn fits_size_limit(&mut self, incoming: usize) -> bool {
        let limit = self.ctx.limits.max_doc_bytes;
        if self.doc_bytes + self.pending_bytes + incoming <= limit {
            return true;
        }
        self.doc_bytes = larder_crdt::state::encode_full_state(&self.doc).len();
        self.doc_bytes + self.pending_bytes + incoming <= limit
    }

    fn on_presence(&mut self, conn: ConnId, update: AwarenessUpdate) {
        match self.presence.apply_local(conn, update) {
            Ok(()) => {}
            Err(e) => {
                tracing::debug!(conn, error = %e, "presence refused");
                metrics::counter!("larder_presence_refused_total").increment(1);
                let code = match e {
                    PresenceError::TooManyClients(_) => close::MALFORMED,
                    PresenceError::StateTooLarge(_) => close::MESSAGE_TOO_LARGE,
                    PresenceError::ListFull => close::TRY_AGAIN_LATER,
                };
                self.close_conn(conn, CloseReason::new(code, e.to_string()));
            }
        }
    }

    /// Sends the coalesced presence changes to everyone here, and this
    /// replica's own changes to the other replicas.
    fn flush_presence(&mut self) {
        let outgoing = self.presence.flush();
        self.send_presence(outgoing);
    }

    fn send_presence(&mut self, outgoing: Outgoing) {
        if let Some(update) = outgoing.relay {
            self.publish_presence(&update);
        }
        if let Some(update) = outgoing.broadcast
            && !self.conns.is_empty()
        {
            self.broadcast(Bytes::from(protocol::encode_awareness(&update)), None);
        }
    }

    fn publish_presence(&self, update: &AwarenessUpdate) {
        self.ctx.relay.publish(Envelope::new(
            self.ctx.replica_id,
            self.list_id,
            Payload::Awareness {
                update: update.encode_v1(),
            },
        ));
    }

    /// Presence another replica relayed: shown to this replica's clients.
    fn on_relayed_presence(&mut self, bytes: &[u8]) {
        let checks = self.ctx.limits.message_checks();
        if let Err(e) = larder_crdt::validate::check_awareness(bytes, &checks) {
            tracing::debug!(error = %e, "ignoring relayed presence that does not check");
            return;
        }
        match AwarenessUpdate::decode_v1(bytes) {
            Ok(update) => self.presence.apply_relayed(update),
            Err(e) => tracing::debug!(error = %e, "ignoring relayed presence that does not decode"),
        }
    }

    /// Queues a frame for one connection; `reply` marks a full-state reply.
    fn send_to(&mut self, conn: ConnId, frame: Vec<u8>, reply: Option<Reply>) {
        let Some(state) = self.conns.get(&conn) else {
            return;
        };
        let frame = Bytes::from(frame);
        if !state
            .control
            .reserve(frame.len(), self.ctx.limits.outbound_queue_bytes)
        {
            self.drop_slow(conn);
            return;
        }
        if let Some(reply) = reply {
            state.control.mark_reply_queued(reply);
        }
        let outbound = Outbound { frame, reply };
        match state.outbound.try_send(outbound) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.drop_slow(conn),
            Err(TrySendError::Closed(_)) => self.remove_conn(conn),
        }
    }

    /// Sends a frame to every connection but `except`. A connection whose
    /// queue is full (in frames or bytes) is closed (it resyncs on
    /// reconnect), never skipped.
    fn broadcast(&mut self, frame: Bytes, except: Option<ConnId>) {
        let mut slow = Vec::new();
        let mut gone = Vec::new();
        let max_bytes = self.ctx.limits.outbound_queue_bytes;
        for (id, state) in &self.conns {
            if Some(*id) == except {
                continue;
            }
            if !state.control.reserve(frame.len(), max_bytes) {
                slow.push(*id);
                continue;
            }
            let outbound = Outbound {
                frame: frame.clone(),
                reply: None,
            };
            match state.outbound.try_send(outbound) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => slow.push(*id),
                Err(TrySendError::Closed(_)) => gone.push(*id),
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
        if self.conns.remove(&conn).is_none() {
            return;
        }
        metrics::gauge!("larder_connections").decrement(1.0);
        self.batches.forget_conn(conn);
        self.deferred_step1.remove(&conn);
        let outgoing = self.presence.conn_left(conn);
        self.send_presence(outgoing);
        self.arm_linger();
    }

    /// Access changed: closes the connections of `user` (they must
    /// authorize again), or all of them when the list was deleted.
    pub(super) fn revoke(&mut self, user: Option<Uuid>) {
        let Some(user) = user else {
            self.list_gone();
            return;
        };
        tracing::info!(%user, "access revoked; closing the user's connections");
        self.close_where(
            |c| c.user_id == Some(user),
            CloseReason::new(close::FORBIDDEN, "access to this list was revoked"),
        );
    }

    /// Closes every connection `matches` picks with `reason`.
    fn close_where(&mut self, matches: impl Fn(&Conn) -> bool, reason: CloseReason) {
        let picked: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| matches(c))
            .map(|(id, _)| *id)
            .collect();
        for conn in picked {
            self.close_conn(conn, reason.clone());
        }
    }

    /// A read-only link was revoked: its connections close.
    pub(super) fn revoke_link(&mut self, link: Uuid) {
        tracing::info!(%link, "link revoked; closing its connections");
        self.close_where(|c| c.link_id == Some(link), crate::auth::link_revoked());
    }

    fn list_gone(&mut self) {
        if self.is_gone {
            return;
        }
        tracing::info!("list deleted; closing its connections");
        self.is_gone = true;
        self.batches.clear();
        self.live.clear();
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.close_conn(conn, CloseReason::new(close::NOT_FOUND, "list deleted"));
        }
        self.arm_linger();
    }

    fn begin_shutdown(&mut self) {
        // What connections handed over before the shutdown is applied and
        // stored too (a client that already left could not resend it).
        while let Ok(command) = self.rx.try_recv() {
            self.on_command(command);
        }
        self.shutdown_deadline = Some(Instant::now() + SHUTDOWN_FLUSH_LIMIT);
        // Other replicas stop showing this replica's clients at once.
        if let Some(update) = self.presence.all_local_left().relay {
            self.publish_presence(&update);
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
        self.adopt_unconfirmed(true);
        self.start_flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{GetString, Text};

    #[test]
    fn a_panic_is_contained_and_reported() {
        assert_eq!(contained("adding", || 2 + 2), Ok(4));
        let panicked: Result<(), ()> = contained("exploding", || panic!("boom"));
        assert_eq!(panicked, Err(()));
    }

    #[test]
    fn an_applied_update_is_committed_and_returned_as_its_delta() {
        let source = Doc::with_client_id(3);
        let text = source.get_or_insert_text("note");
        let update = {
            let mut txn = source.transact_mut();
            text.insert(&mut txn, 0, "milk");
            txn.encode_update_v1()
        };
        let doc = Doc::new();
        let delta = apply_to(&doc, Update::decode_v1(&update).expect("decodes")).expect("applies");
        assert_eq!(delta, update);
        let note = doc.get_or_insert_text("note");
        assert_eq!(note.get_string(&doc.transact()), "milk");
        // Applying it again changes nothing, and the document is free again.
        let again = apply_to(&doc, Update::decode_v1(&update).expect("decodes")).expect("applies");
        assert_eq!(again.as_slice(), EMPTY_UPDATE);
    }
}
