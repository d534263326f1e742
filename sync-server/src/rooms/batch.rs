//! What a room applied and has not stored yet: updates pending the next
//! batch, the one batch being written, and the connections to acknowledge
//! once what they sent is stored. Without I/O: the room submits the batch
//! this cuts and reports how the write went.

use std::time::Duration;

use tokio::time::Instant;
use yrs::StateVector;

use super::ConnId;

/// First and last delay between attempts to store a batch that failed.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// An update applied here and not yet cut into a batch.
struct PendingUpdate {
    /// The id it was relayed under before being stored (0: not relayed).
    live_id: u64,
    update: Vec<u8>,
}

/// The batch being written.
pub(crate) struct InFlight {
    pub(crate) update: Vec<u8>,
    /// The highest live id of the updates in the batch (0: none).
    pub(crate) live_through: u64,
    /// Connections to acknowledge once it is stored.
    pub(crate) ack_conns: Vec<ConnId>,
    /// The document's state vector when the batch was cut: what is durable
    /// once it is stored.
    pub(crate) state_vector: StateVector,
    pub(crate) attempts: u32,
}

#[derive(Default)]
pub(crate) struct Batches {
    pending: Vec<PendingUpdate>,
    /// Connections waiting for an acknowledgement of what they sent.
    waiting_acks: Vec<ConnId>,
    in_flight: Option<InFlight>,
    retry_at: Option<Instant>,
}

impl Batches {
    /// An update applied to the document, to store with the next batch.
    pub(crate) fn push(&mut self, live_id: u64, update: Vec<u8>) {
        self.pending.push(PendingUpdate { live_id, update });
    }

    /// `conn` asks to be told when what it sent is stored. Returns true when
    /// everything is stored already (acknowledge at once).
    pub(crate) fn ack_when_stored(&mut self, conn: ConnId) -> bool {
        if self.is_idle() {
            return true;
        }
        self.wait_for_ack(conn);
        false
    }

    /// `conn` is acknowledged (again) after the next batch is stored, or
    /// when [`Batches::take_waiting_acks`] is next called with nothing to
    /// store.
    pub(crate) fn wait_for_ack(&mut self, conn: ConnId) {
        if !self.waiting_acks.contains(&conn) {
            self.waiting_acks.push(conn);
        }
    }

    /// Whether a batch can be cut now: something is pending and nothing is
    /// being written.
    pub(crate) fn is_ready(&self) -> bool {
        self.in_flight.is_none() && !self.pending.is_empty()
    }

    /// Cuts a batch from what is pending; `sv` is the document's state
    /// vector now. Returns the batch to submit.
    pub(crate) fn cut(&mut self, sv: StateVector) -> Option<&mut InFlight> {
        if !self.is_ready() {
            return None;
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
        let ack_conns = if self.pending.is_empty() {
            std::mem::take(&mut self.waiting_acks)
        } else {
            Vec::new()
        };
        self.in_flight = Some(InFlight {
            update,
            live_through,
            ack_conns,
            state_vector: sv,
            attempts: 1,
        });
        self.in_flight.as_mut()
    }

    /// The batch was stored: returns it.
    pub(crate) fn stored(&mut self) -> Option<InFlight> {
        self.in_flight.take()
    }

    /// Storing the batch failed: keeps it and returns the delay before the
    /// next attempt.
    pub(crate) fn failed(&mut self) -> Duration {
        let attempts = self.in_flight.as_ref().map_or(1, |b| b.attempts);
        let delay = RETRY_FIRST
            .saturating_mul(1 << attempts.min(6))
            .min(RETRY_MAX);
        self.retry_at = Some(Instant::now() + delay);
        delay
    }

    /// The batch to submit again, when its retry is due.
    pub(crate) fn retry(&mut self) -> Option<&mut InFlight> {
        self.retry_at = None;
        let batch = self.in_flight.as_mut()?;
        batch.attempts += 1;
        Some(batch)
    }

    pub(crate) fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// After a stored batch with nothing pending: the connections still
    /// waiting, to acknowledge with the document's state now.
    pub(crate) fn take_waiting_acks(&mut self) -> Vec<ConnId> {
        if self.pending.is_empty() && self.in_flight.is_none() {
            std::mem::take(&mut self.waiting_acks)
        } else {
            Vec::new()
        }
    }

    pub(crate) fn forget_conn(&mut self, conn: ConnId) {
        self.waiting_acks.retain(|c| *c != conn);
    }

    /// Drops what is pending (the list is gone). The batch in flight stays
    /// until the committer answers.
    pub(crate) fn clear(&mut self) {
        self.pending.clear();
        self.waiting_acks.clear();
    }

    /// Nothing pending and nothing being written.
    pub(crate) fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.in_flight.is_none()
    }

    /// Updates and batches not stored yet.
    pub(crate) fn unstored(&self) -> usize {
        self.pending.len() + usize::from(self.in_flight.is_some())
    }

    /// Every update applied and not stored yet, the batch in flight first.
    pub(crate) fn updates(&self) -> impl Iterator<Item = &[u8]> {
        self.in_flight
            .iter()
            .map(|b| b.update.as_slice())
            .chain(self.pending.iter().map(|p| p.update.as_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::updates::decoder::Decode;
    use yrs::{Doc, Map, ReadTxn, Transact};

    fn edit(doc: &Doc, key: &str) -> Vec<u8> {
        let map = doc.get_or_insert_map("items");
        let mut txn = doc.transact_mut();
        map.insert(&mut txn, key, "x");
        txn.encode_update_v1()
    }

    #[test]
    fn a_batch_merges_what_is_pending_and_acknowledges_its_senders() {
        let doc = Doc::with_client_id(1);
        let mut batches = Batches::default();
        assert!(batches.ack_when_stored(7), "nothing waiting: ack at once");
        batches.push(0, edit(&doc, "a"));
        batches.push(42, edit(&doc, "b"));
        assert!(!batches.ack_when_stored(7));
        assert!(
            !batches.ack_when_stored(7),
            "asked twice, acknowledged once"
        );
        let sv = doc.transact().state_vector();
        let batch = batches.cut(sv.clone()).expect("a batch");
        assert_eq!(batch.live_through, 42);
        assert_eq!(batch.ack_conns, vec![7]);
        assert_eq!(batch.attempts, 1);
        assert!(batches.cut(sv).is_none(), "one batch in flight at a time");
        assert_eq!(batches.unstored(), 1);

        // More arrives while it is written; its sender waits for the next.
        batches.push(0, edit(&doc, "c"));
        assert!(!batches.ack_when_stored(8));
        let stored = batches.stored().expect("in flight");
        let replay = Doc::new();
        replay
            .transact_mut()
            .apply_update(yrs::Update::decode_v1(&stored.update).expect("decodes"))
            .expect("applies");
        assert_eq!(replay.get_or_insert_map("items").len(&replay.transact()), 2);
        assert!(
            batches.take_waiting_acks().is_empty(),
            "8's update is pending"
        );
        let batch = batches.cut(doc.transact().state_vector()).expect("next");
        assert_eq!(batch.ack_conns, vec![8]);
        batches.stored();
        assert!(batches.is_idle());
    }

    #[tokio::test(start_paused = true)]
    async fn failed_writes_back_off_and_keep_the_batch() {
        let doc = Doc::with_client_id(1);
        let mut batches = Batches::default();
        batches.push(0, edit(&doc, "a"));
        batches.cut(doc.transact().state_vector());
        let first = batches.failed();
        assert_eq!(batches.retry_at(), Some(Instant::now() + first));
        assert_eq!(batches.retry().expect("kept").attempts, 2);
        let second = batches.failed();
        assert!(second > first);
        for _ in 0..10 {
            batches.retry();
            assert!(batches.failed() <= RETRY_MAX);
        }
        assert_eq!(batches.updates().count(), 1);
    }

    #[test]
    fn a_connection_that_leaves_is_not_acknowledged() {
        let doc = Doc::with_client_id(1);
        let mut batches = Batches::default();
        batches.push(0, edit(&doc, "a"));
        batches.ack_when_stored(3);
        batches.forget_conn(3);
        let batch = batches.cut(doc.transact().state_vector()).expect("batch");
        assert!(batch.ack_conns.is_empty());
    }
}
