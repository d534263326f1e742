//! Applying the list's log in sequence order: batches this replica stored,
//! batches other replicas relayed (held back behind a gap until the ones
//! before them arrive), and reads of the log when a gap stays open. Without
//! I/O: it says which updates to apply, in order, and when to read the log;
//! the room applies them and does the reading.

use std::collections::BTreeMap;
use std::time::Duration;

use larder_storage::{SeqRange, StoredDoc};
use tokio::time::Instant;

/// Most relayed batches held back behind a gap; beyond this they are
/// dropped and read from the log instead, so memory stays bounded.
const MAX_HELD: usize = 4096;
const MAX_HELD_BYTES: usize = 32 * 1024 * 1024;
/// Delay before reading the log again after a read left a gap open.
const GAP_RETRY: Duration = Duration::from_millis(250);
/// Delay before reading the log again after a catch-up read failed.
const CATCH_UP_RETRY: Duration = Duration::from_secs(1);

/// A batch another replica committed, waiting for the batches before it.
struct Held {
    last_seq: u64,
    update: Vec<u8>,
    /// When the origin published it (for the relay lag metric).
    sent_at_micros: u64,
}

/// An update to apply now, in this order.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Ready {
    pub(crate) update: Vec<u8>,
    pub(crate) kind: ReadyKind,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadyKind {
    /// A relayed batch: when its origin published it.
    Relayed { sent_at_micros: u64 },
    /// A row read from the log.
    Logged,
    /// A snapshot that replaces updates compacted away.
    Snapshot,
}

pub(crate) struct Sequencer {
    gap_grace: Duration,
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
    held_bytes: usize,
    /// When to read the log for a gap that stayed open.
    catch_up_at: Option<Instant>,
    is_catching_up: bool,
    catch_up_again: bool,
}

impl Sequencer {
    /// The log was loaded up to `head_seq`.
    pub(crate) fn new(head_seq: u64, gap_grace: Duration) -> Self {
        Sequencer {
            gap_grace,
            persisted_seq: head_seq,
            applied_seq: head_seq,
            own_ranges: BTreeMap::new(),
            held: BTreeMap::new(),
            held_bytes: 0,
            catch_up_at: None,
            is_catching_up: false,
            catch_up_again: false,
        }
    }

    pub(crate) fn persisted_seq(&self) -> u64 {
        self.persisted_seq
    }

    /// Every sequence known stored is applied, and nothing above it waits:
    /// the document holds the log up to `persisted_seq`, no more (with no
    /// local update pending either).
    pub(crate) fn is_settled(&self) -> bool {
        self.applied_seq == self.persisted_seq && self.own_ranges.is_empty() && self.held.is_empty()
    }

    /// A batch another replica committed as `first..=last`. Returns what
    /// can be applied now, in order.
    pub(crate) fn relayed(
        &mut self,
        first: u64,
        last: u64,
        update: Vec<u8>,
        sent_at_micros: u64,
    ) -> Vec<Ready> {
        if last <= self.applied_seq || first == 0 || first > last {
            return Vec::new();
        }
        let closes_gap = first <= self.applied_seq + 1;
        if !closes_gap
            && (self.held.len() >= MAX_HELD || self.held_bytes + update.len() > MAX_HELD_BYTES)
        {
            // The log has it: read it from there soon.
            metrics::counter!("larder_relay_held_dropped_total").increment(1);
            self.catch_up_at = Some(Instant::now());
            return Vec::new();
        }
        self.persisted_seq = self.persisted_seq.max(last);
        if let std::collections::btree_map::Entry::Vacant(slot) = self.held.entry(first) {
            self.held_bytes += update.len();
            slot.insert(Held {
                last_seq: last,
                update,
                sent_at_micros,
            });
        }
        self.advance()
    }

    /// This replica stored a batch (already in the document) as `range`.
    pub(crate) fn stored(&mut self, range: SeqRange) -> Vec<Ready> {
        self.persisted_seq = self.persisted_seq.max(range.last);
        if range.last <= self.applied_seq {
            return Vec::new();
        }
        self.own_ranges.insert(range.first, range.last);
        self.advance()
    }

    /// Moves `applied_seq` forward over own and held batches, strictly in
    /// sequence order; schedules a read of the log when a gap stays open.
    fn advance(&mut self) -> Vec<Ready> {
        let mut ready = Vec::new();
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
                    self.applied_seq = held.last_seq;
                    ready.push(Ready {
                        update: held.update,
                        kind: ReadyKind::Relayed {
                            sent_at_micros: held.sent_at_micros,
                        },
                    });
                }
                continue;
            }
            break;
        }
        if self.own_ranges.is_empty() && self.held.is_empty() {
            self.catch_up_at = None;
        } else if self.catch_up_at.is_none() {
            self.catch_up_at = Some(Instant::now() + self.gap_grace);
        }
        ready
    }

    /// Whether the log holds more than this room knows of (applied, held
    /// behind a gap, or its own commits in flight).
    pub(crate) fn is_behind(&self, head_seq: u64) -> bool {
        head_seq > self.applied_seq.max(self.persisted_seq)
    }

    /// When the log should be read (not while a read is running).
    pub(crate) fn catch_up_at(&self) -> Option<Instant> {
        if self.is_catching_up {
            None
        } else {
            self.catch_up_at
        }
    }

    /// Starts a read of the log: returns the sequence to read after, or
    /// `None` when a read is running (another follows it).
    pub(crate) fn start_catch_up(&mut self) -> Option<u64> {
        self.catch_up_at = None;
        if self.is_catching_up {
            self.catch_up_again = true;
            return None;
        }
        self.is_catching_up = true;
        Some(self.applied_seq)
    }

    /// The read failed: try again shortly.
    pub(crate) fn catch_up_failed(&mut self) {
        self.is_catching_up = false;
        self.catch_up_at = Some(Instant::now() + CATCH_UP_RETRY);
    }

    /// The read returned `stored`. Returns what to apply, in order, and
    /// whether to read again at once.
    pub(crate) fn caught_up(&mut self, stored: StoredDoc) -> (Vec<Ready>, bool) {
        self.is_catching_up = false;
        self.persisted_seq = self.persisted_seq.max(stored.head_seq);
        let mut ready = Vec::new();
        if let Some(snapshot) = stored.snapshot
            && snapshot.up_to_seq > self.applied_seq
        {
            // Updates we lack were compacted away: the snapshot holds them.
            tracing::debug!(
                applied = self.applied_seq,
                up_to_seq = snapshot.up_to_seq,
                "catching up from a snapshot"
            );
            self.applied_seq = snapshot.up_to_seq;
            ready.push(Ready {
                update: snapshot.state,
                kind: ReadyKind::Snapshot,
            });
        }
        for row in stored.tail {
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
            self.applied_seq = row.seq;
            ready.push(Ready {
                update: row.update,
                kind: ReadyKind::Logged,
            });
        }
        ready.extend(self.advance());
        let again = std::mem::take(&mut self.catch_up_again);
        if !again && self.catch_up_at.is_some() {
            // The log did not close the gap (what is held was committed after
            // the read, or is bogus): read again, but not at once.
            self.catch_up_at = Some(Instant::now() + GAP_RETRY.max(self.gap_grace));
        }
        (ready, again)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use larder_storage::StoredUpdate;

    const GRACE: Duration = Duration::from_millis(50);

    fn updates(ready: &[Ready]) -> Vec<u8> {
        ready.iter().map(|r| r.update[0]).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn relayed_batches_apply_in_order_and_a_gap_schedules_a_read() {
        let mut seq = Sequencer::new(10, GRACE);
        // 13..=13 arrives before 11..=12: held behind the gap.
        assert!(seq.relayed(13, 13, vec![13], 0).is_empty());
        assert_eq!(seq.catch_up_at(), Some(Instant::now() + GRACE));
        assert_eq!(seq.persisted_seq(), 13);
        let ready = seq.relayed(11, 12, vec![11], 0);
        assert_eq!(updates(&ready), vec![11, 13]);
        assert_eq!(seq.catch_up_at(), None, "gap closed");
        // Old and duplicate batches are ignored.
        assert!(seq.relayed(12, 13, vec![12], 0).is_empty());
        assert!(seq.relayed(0, 14, vec![0], 0).is_empty());
        assert!(!seq.is_behind(13));
        assert!(seq.is_behind(14));
    }

    #[tokio::test(start_paused = true)]
    async fn own_batches_move_the_sequence_without_being_applied_again() {
        let mut seq = Sequencer::new(0, GRACE);
        assert!(seq.relayed(2, 2, vec![2], 0).is_empty());
        let ready = seq.stored(SeqRange { first: 1, last: 1 });
        assert_eq!(updates(&ready), vec![2], "ours is in the document already");
        assert!(seq.stored(SeqRange { first: 4, last: 4 }).is_empty());
        assert!(seq.catch_up_at().is_some(), "3 is missing");
    }

    #[tokio::test(start_paused = true)]
    async fn a_catch_up_reads_after_the_applied_sequence_and_fills_the_gap() {
        let mut seq = Sequencer::new(5, GRACE);
        seq.relayed(8, 8, vec![8], 0);
        assert_eq!(seq.start_catch_up(), Some(5));
        assert_eq!(seq.catch_up_at(), None, "not while reading");
        assert_eq!(seq.start_catch_up(), None, "one read at a time");
        let stored = StoredDoc {
            head_seq: 8,
            is_deleted: false,
            snapshot: None,
            tail: (6..=7)
                .map(|s| StoredUpdate {
                    seq: s,
                    update: vec![s as u8],
                })
                .collect(),
        };
        let (ready, again) = seq.caught_up(stored);
        assert_eq!(updates(&ready), vec![6, 7, 8]);
        assert_eq!(ready[0].kind, ReadyKind::Logged);
        assert!(again, "a read was asked for while one ran");
    }

    #[tokio::test(start_paused = true)]
    async fn a_snapshot_past_the_applied_sequence_replaces_what_was_compacted() {
        let mut seq = Sequencer::new(2, GRACE);
        seq.start_catch_up();
        let stored = StoredDoc {
            head_seq: 9,
            is_deleted: false,
            snapshot: Some(larder_storage::Snapshot {
                up_to_seq: 8,
                state: vec![80],
            }),
            tail: vec![StoredUpdate {
                seq: 9,
                update: vec![9],
            }],
        };
        let (ready, again) = seq.caught_up(stored);
        assert_eq!(updates(&ready), vec![80, 9]);
        assert_eq!(ready[0].kind, ReadyKind::Snapshot);
        assert!(!again);
        assert!(!seq.is_behind(9));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_read_is_retried_and_held_batches_are_bounded() {
        let mut seq = Sequencer::new(0, GRACE);
        seq.start_catch_up();
        seq.catch_up_failed();
        assert_eq!(seq.catch_up_at(), Some(Instant::now() + CATCH_UP_RETRY));
        for first in 2..(MAX_HELD as u64 + 2) {
            seq.relayed(first, first, vec![1], 0);
        }
        assert_eq!(seq.held.len(), MAX_HELD);
        // One more behind the gap is dropped and read from the log at once.
        assert!(
            seq.relayed(MAX_HELD as u64 + 5, MAX_HELD as u64 + 5, vec![1], 0)
                .is_empty()
        );
        assert_eq!(seq.held.len(), MAX_HELD);
        assert_eq!(seq.catch_up_at(), Some(Instant::now()));
    }
}
