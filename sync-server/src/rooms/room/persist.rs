//! The room and the list's log: loading, group commit, relaying to other
//! replicas, applying what they relay in sequence order, catching up from
//! the log, compaction, and rebuilding the document from storage.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use larder_crdt::protocol;
use larder_crdt::state::EMPTY_UPDATE;
use larder_relay::{Envelope, Payload, Relay};
use larder_storage::{ListHead, NewUpdate, SeqRange, StoreError, StoredDoc};
use uuid::Uuid;
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use larder_crdt::nesting::NestingIndex;

use super::{Room, apply_to, contained, nesting_limit};
use crate::close::{self, CloseReason};
use crate::rooms::RoomCommand;
use crate::rooms::commit::CommitOutcome;
use crate::rooms::live::next_live_id;
use crate::rooms::sequencer::{Ready, ReadyKind, Sequencer};

/// A room unloading with at least this many batches (or bytes of them) after
/// the last snapshot compacts, so the next load reads a snapshot instead of
/// replaying them. Batches merge many edits, so bytes count as well.
const UNLOAD_COMPACTION_MIN_UPDATES: u64 = 32;
const UNLOAD_COMPACTION_MIN_BYTES: u64 = 64 * 1024;
/// Runs of the nesting index past which it is rebuilt from the document
/// (runs of collected structs are never removed otherwise).
const MAX_NESTING_RUNS: usize = 1 << 20;
/// How long compactions started by a shutdown may hold it up.
const SHUTDOWN_COMPACTION_LIMIT: Duration = Duration::from_secs(5);

/// The room's subscription to its list's relay channel; dropped with the room.
pub(super) struct Subscription {
    relay: Arc<dyn Relay>,
    list_id: Uuid,
}

impl Subscription {
    pub(super) async fn open(relay: Arc<dyn Relay>, list_id: Uuid) -> Subscription {
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

impl Room {
    /// Loads snapshot + tail. Nothing is answered before this completes:
    /// joins wait in the queue.
    pub(super) async fn load(&mut self) -> Result<(), CloseReason> {
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
        let doc = &self.doc;
        match contained("loading a list", || {
            larder_crdt::state::apply_stored(doc, stored.updates())
        }) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "stored list does not load");
                return Err(CloseReason::new(
                    close::INTERNAL_ERROR,
                    "stored list is damaged",
                ));
            }
            Err(()) => {
                return Err(CloseReason::new(
                    close::INTERNAL_ERROR,
                    "stored list is damaged",
                ));
            }
        }
        self.keep_cold_state(&stored);
        self.reindex_nesting();
        metrics::histogram!("larder_room_load_seconds").record(started.elapsed().as_secs_f64());
        self.sequencer = Sequencer::new(stored.head_seq, self.ctx.gap_grace);
        self.tail_updates = stored.tail.len() as u64;
        self.tail_bytes = stored.tail_bytes();
        self.doc_bytes = stored.updates().map(<[u8]>::len).sum();
        Ok(())
    }

    /// Cuts a batch from what is pending and hands it to the committer.
    pub(super) fn start_flush(&mut self) {
        let sv = self.stored_state_vector();
        if let Some(batch) = self.batches.cut(sv) {
            let update = batch.update.clone();
            self.submit(update);
        }
    }

    fn submit(&self, update: Vec<u8>) {
        let update = NewUpdate {
            list_id: self.list_id,
            update,
            origin: self.ctx.replica_id.to_string(),
            user_id: None,
        };
        self.ctx.committer.submit(update, self.commit_tx.clone());
    }

    pub(super) fn retry_flush(&mut self) {
        if let Some(batch) = self.batches.retry() {
            let update = batch.update.clone();
            self.submit(update);
        }
    }

    pub(super) fn on_committed(&mut self, outcome: CommitOutcome) {
        match outcome {
            CommitOutcome::Stored(range) => {
                let Some(batch) = self.batches.stored() else {
                    return;
                };
                self.tail_updates += 1;
                self.tail_bytes += batch.update.len() as u64;
                let ready = self.sequencer.stored(range);
                self.apply_ready(ready);
                for conn in &batch.ack_conns {
                    if self.conns.get(conn).is_some_and(|c| c.wants_ack) {
                        let frame = protocol::encode_durable_ack(&batch.state_vector);
                        self.send_to(*conn, frame, None);
                    }
                }
                self.publish(range, batch.update, batch.live_through);
                self.ctx.projector.changed(self.list_id);
                self.maybe_compact();
                // More that arrived while writing goes out with the loop's
                // next flush; connections that sent nothing new while this
                // batch was written have everything stored now.
                self.send_waiting_acks();
                self.arm_linger();
            }
            CommitOutcome::ListGone => {
                self.batches.stored();
                self.list_gone();
            }
            CommitOutcome::Failed(e) => {
                let delay = self.batches.failed();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "storing a batch failed; will retry");
            }
        }
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
    pub(super) fn publish_live(&self, update: Vec<u8>) -> u64 {
        let id = next_live_id();
        self.ctx.relay.publish(Envelope::new(
            self.ctx.replica_id,
            self.list_id,
            Payload::Live { id, update },
        ));
        id
    }

    /// Acknowledges the connections waiting for one, when nothing of this
    /// room is waiting to be stored.
    pub(super) fn send_waiting_acks(&mut self) {
        let waiting = self.batches.take_waiting_acks();
        if waiting.is_empty() {
            return;
        }
        let sv = self.stored_state_vector();
        for conn in waiting {
            self.send_to(conn, protocol::encode_durable_ack(&sv), None);
        }
    }

    /// The document's state vector without what other replicas relayed
    /// and have not confirmed as stored: what is durable once everything
    /// this room holds to store is stored.
    pub(super) fn stored_state_vector(&self) -> StateVector {
        let mut sv = self.doc.transact().state_vector();
        self.live.exclude_from(&mut sv);
        sv
    }

    /// Stores the relayed updates whose origin did not confirm them in time
    /// (all of them when `all`).
    pub(super) fn adopt_unconfirmed(&mut self, all: bool) {
        for update in self.live.take_expired(all) {
            self.batches.push(0, update);
        }
    }

    pub(super) fn on_relayed(&mut self, envelope: Envelope) {
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
                self.live.confirm(envelope.origin, live_through);
                let ready = self
                    .sequencer
                    .relayed(first_seq, last_seq, update, sent_at_micros);
                self.apply_ready(ready);
                // Acknowledgements held back for what was just confirmed.
                self.send_waiting_acks();
            }
            Payload::Live { id, update } => {
                // Unsequenced: the sequence moves only with the stored batch
                // that follows, which then adds nothing new.
                self.apply_remote(&update);
                for adopted in self.live.keep(envelope.origin, id, update) {
                    self.batches.push(0, adopted);
                }
                metrics::histogram!("larder_relay_lag_seconds", "kind" => "live")
                    .record(larder_relay::seconds_since(sent_at_micros));
            }
            Payload::Awareness { update } => self.on_relayed_presence(&update),
            Payload::Revoke { user } => self.revoke(user),
            Payload::RevokeLink { link } => self.revoke_link(link),
        }
    }

    /// Applies what the sequencer released, in order.
    fn apply_ready(&mut self, ready: Vec<Ready>) {
        for Ready { update, kind } in ready {
            self.apply_remote(&update);
            match kind {
                ReadyKind::Relayed { sent_at_micros } => {
                    metrics::histogram!("larder_relay_lag_seconds", "kind" => "stored")
                        .record(larder_relay::seconds_since(sent_at_micros));
                    self.tail_updates += 1;
                    self.tail_bytes += update.len() as u64;
                }
                ReadyKind::Logged => {
                    self.tail_updates += 1;
                    self.tail_bytes += update.len() as u64;
                }
                ReadyKind::Snapshot => {}
            }
        }
    }

    /// Applies an update committed elsewhere and passes on what was new.
    fn apply_remote(&mut self, bytes: &[u8]) {
        self.forget_cold_state();
        let doc = &self.doc;
        let applied = contained("applying a committed update", || {
            let update = Update::decode_v1(bytes).map_err(|e| e.to_string())?;
            apply_to(doc, update).map_err(|e| e.to_string())
        });
        let delta = match applied {
            Ok(Ok(delta)) => delta,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "a committed update does not apply; skipping it");
                return;
            }
            Err(()) => {
                self.replace_doc_after_panic();
                return;
            }
        };
        if delta.as_slice() != EMPTY_UPDATE {
            self.record_integrated(&delta);
            metrics::counter!("larder_updates_relayed_total").increment(1);
            self.doc_bytes += delta.len();
            self.broadcast(Bytes::from(protocol::encode_update(delta)), None);
        }
    }

    /// The log's head, from the periodic check or after a relay resync.
    pub(super) fn on_catch_up_check(&mut self, head: ListHead) {
        if let Some(update) = self.presence.expire_remote()
            && !self.conns.is_empty()
        {
            self.broadcast(Bytes::from(protocol::encode_awareness(&update)), None);
        }
        if head.is_deleted {
            self.list_gone();
        } else if self.sequencer.is_behind(head.head_seq) {
            self.start_catch_up();
        }
    }

    /// Reads what the log holds after what was applied, off the room's task.
    pub(super) fn start_catch_up(&mut self) {
        if self.is_gone || self.shutdown_deadline.is_some() {
            return;
        }
        let Some(after_seq) = self.sequencer.start_catch_up() else {
            return;
        };
        metrics::counter!("larder_catch_ups_total").increment(1);
        let store = self.ctx.store.clone();
        let list_id = self.list_id;
        let tx = self.handle.tx.clone();
        self.ctx.tracker.spawn(async move {
            // A panicking read must still answer, or the room would never
            // read the log again.
            let read = tokio::spawn(async move { store.load_since(list_id, after_seq).await });
            let result = match read.await {
                Ok(result) => result,
                Err(e) => Err(StoreError::Task(e.to_string())),
            };
            let _ = tx.send(RoomCommand::CaughtUp { result }).await;
        });
    }

    pub(super) fn on_caught_up(&mut self, result: Result<StoredDoc, StoreError>) {
        let stored = match result {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the log to catch up; will retry");
                self.sequencer.catch_up_failed();
                return;
            }
        };
        if stored.is_deleted {
            self.list_gone();
            return;
        }
        let (ready, again) = self.sequencer.caught_up(stored);
        self.apply_ready(ready);
        if again {
            self.start_catch_up();
        }
        self.maybe_compact();
    }

    pub(super) fn maybe_compact(&mut self) {
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
            let up_to_seq = match crate::rooms::compaction::compact(store, list_id).await {
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
    pub(super) fn compact_on_unload(&self) {
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
            match tokio::time::timeout(limit, crate::rooms::compaction::compact(store, list_id))
                .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(%list_id, error = %e, "compaction failed"),
                Err(_) => tracing::info!(%list_id, "compaction left for later: shutting down"),
            }
        });
    }

    /// After a panic inside yrs the document may be inconsistent, and its
    /// uncommitted transaction still holds it: it is replaced at once by one
    /// holding what is not stored yet, and rebuilt from storage behind it.
    /// Requests for the whole state wait for the rebuild.
    pub(super) fn replace_doc_after_panic(&mut self) {
        self.forget_cold_state();
        let doc = Doc::new();
        let unstored: Vec<&[u8]> = self.batches.updates().chain(self.live.updates()).collect();
        let _ = contained("re-applying what is not stored", || {
            for bytes in unstored {
                if let Ok(update) = Update::decode_v1(bytes) {
                    let _ = apply_to(&doc, update);
                }
            }
        });
        self.doc = doc;
        self.is_rebuilding = false;
        self.request_rebuild("yrs panicked; the document was replaced");
    }

    /// Rebuilds the document from storage plus what is not stored yet: after
    /// a panic inside yrs, after an update that applied only in part, or to
    /// drop what yrs held aside past its cap.
    pub(super) fn request_rebuild(&mut self, why: &str) {
        if self.is_rebuilding || self.is_gone {
            return;
        }
        tracing::warn!(why, "rebuilding the list's document from storage");
        metrics::counter!("larder_room_rebuilds_total").increment(1);
        self.is_rebuilding = true;
        let store = self.ctx.store.clone();
        let list_id = self.list_id;
        let tx = self.handle.tx.clone();
        self.ctx.tracker.spawn(async move {
            let read = tokio::spawn(async move { store.load_doc(list_id).await });
            let result = match read.await {
                Ok(result) => result,
                Err(e) => Err(StoreError::Task(e.to_string())),
            };
            let _ = tx.send(RoomCommand::Rebuilt { result }).await;
        });
    }

    /// Indexes what a transaction integrated; past its bound on runs the
    /// index is rebuilt from the document (which drops collected structs).
    pub(super) fn record_integrated(&mut self, delta: &[u8]) {
        self.forget_cold_state();
        match self.nesting.record(delta) {
            Err(e) => {
                tracing::warn!(error = %e, "an integrated update does not check; reindexing");
                self.reindex_nesting();
            }
            Ok(_) if self.nesting.runs() > MAX_NESTING_RUNS => self.reindex_nesting(),
            Ok(structs) => self.doc_structs += structs,
        }
    }

    /// Builds the nesting index anew from the document's whole state.
    pub(super) fn reindex_nesting(&mut self) {
        let mut nesting = NestingIndex::new(nesting_limit(&self.ctx.limits));
        // Right after loading a snapshot alone, its bytes are the state.
        let encoded;
        let state = match &self.cold_state {
            Some(state) => state.as_slice(),
            None => {
                encoded = larder_crdt::state::encode_full_state(&self.doc);
                encoded.as_slice()
            }
        };
        match nesting.record(state) {
            Ok(structs) => self.doc_structs = structs,
            Err(e) => {
                tracing::error!(error = %e, "the document's state does not check; nesting unknown");
            }
        }
        self.nesting = nesting;
    }

    /// Answers the sync step 1 requests that waited for a rebuild.
    fn answer_deferred(&mut self) {
        for (conn, sv) in std::mem::take(&mut self.deferred_step1) {
            self.answer_step1(conn, &sv);
        }
    }

    pub(super) fn on_rebuilt(&mut self, result: Result<StoredDoc, StoreError>) {
        self.forget_cold_state();
        self.is_rebuilding = false;
        let stored = match result {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the list to rebuild it; will retry");
                self.request_rebuild("the last read failed");
                return;
            }
        };
        if stored.is_deleted {
            self.list_gone();
            return;
        }
        if stored.head_seq < self.sequencer.persisted_seq() {
            // Batches were stored after this read and may be in neither it
            // nor what waits to be stored: read again.
            self.request_rebuild("the log grew during the read");
            return;
        }
        let doc = Doc::new();
        let rebuilt = contained("rebuilding a document", || {
            larder_crdt::state::apply_stored(&doc, stored.updates())?;
            let mut txn = doc.transact_mut();
            for bytes in self.batches.updates().chain(self.live.updates()) {
                let update = Update::decode_v1(bytes)
                    .map_err(|e| larder_crdt::CrdtError::Decode(e.to_string()))?;
                txn.apply_update(update)
                    .map_err(|e| larder_crdt::CrdtError::Decode(e.to_string()))?;
            }
            Ok::<_, larder_crdt::CrdtError>(())
        });
        match rebuilt {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the list does not rebuild; keeping the document");
                self.answer_deferred();
                return;
            }
            Err(()) => {
                self.answer_deferred();
                return;
            }
        }
        self.doc = doc;
        self.reindex_nesting();
        self.doc_bytes = larder_crdt::state::encode_full_state(&self.doc).len();
        self.pending_bytes = larder_crdt::state::pending_bytes(&self.doc);
        // Clients upload whatever the rebuilt document lacks, and those that
        // asked for the whole state meanwhile get it now.
        let sv = self.doc.transact().state_vector();
        let conns: Vec<_> = self.conns.keys().copied().collect();
        for conn in conns {
            self.send_to(conn, protocol::encode_sync_step1(&sv), None);
        }
        self.answer_deferred();
        tracing::info!("document rebuilt");
    }
}
