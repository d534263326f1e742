//! Updates another replica relayed before storing them ("live"), kept until
//! that replica confirms it stored them. One the origin does not confirm in
//! time (it may have died) is adopted: this room stores it itself, since
//! its clients already hold it and would not upload it again.

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;
use yrs::updates::decoder::Decode;
use yrs::{ClientID, StateVector, Update};

/// An update relayed before it was stored that its origin did not confirm
/// as stored within this time is stored by the receiving room itself.
pub(crate) const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);
/// Most unconfirmed relayed updates a room keeps; beyond this the oldest are
/// adopted at once, so memory stays bounded.
const MAX_UNCONFIRMED: usize = 4096;
const MAX_UNCONFIRMED_BYTES: usize = 8 * 1024 * 1024;

/// Ids of the updates this replica relays before storing them: they grow
/// across all lists and, seeded with the clock, across restarts.
pub(crate) fn next_live_id() -> u64 {
    static NEXT: OnceLock<AtomicU64> = OnceLock::new();
    NEXT.get_or_init(|| {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        AtomicU64::new(micros)
    })
    .fetch_add(1, Ordering::Relaxed)
}

struct Unconfirmed {
    origin: Uuid,
    id: u64,
    received_at: Instant,
    update: Vec<u8>,
    /// Per client, the first clock the update inserts: read once here, so
    /// an acknowledgement does not decode the queue again.
    starts: Vec<(ClientID, u32)>,
}

/// The first clock each client inserts in `update` (none when it does not
/// decode: it then claims nothing either).
fn insert_starts(update: &[u8]) -> Vec<(ClientID, u32)> {
    let Ok(update) = Update::decode_v1(update) else {
        return Vec::new();
    };
    update
        .insertions(true)
        .iter()
        .filter_map(|(client, ranges)| Some((*client, ranges.iter().map(|r| r.start).min()?)))
        .collect()
}

/// Relayed updates waiting for their origin's confirmation, oldest first.
#[derive(Default)]
pub(crate) struct LiveUpdates {
    queue: VecDeque<Unconfirmed>,
    bytes: usize,
}

impl LiveUpdates {
    /// Keeps `update` from `origin` until confirmed; returns the updates to
    /// adopt at once because the queue grew past its bounds.
    pub(crate) fn keep(&mut self, origin: Uuid, id: u64, update: Vec<u8>) -> Vec<Vec<u8>> {
        self.bytes += update.len();
        self.queue.push_back(Unconfirmed {
            origin,
            id,
            received_at: Instant::now(),
            starts: insert_starts(&update),
            update,
        });
        let mut adopted = Vec::new();
        while self.queue.len() > MAX_UNCONFIRMED || self.bytes > MAX_UNCONFIRMED_BYTES {
            adopted.extend(self.pop_oldest());
        }
        adopted
    }

    /// `origin` stored every update it relayed to this list up to `through`.
    pub(crate) fn confirm(&mut self, origin: Uuid, through: u64) {
        if through == 0 || self.queue.is_empty() {
            return;
        }
        let mut bytes = 0;
        self.queue.retain(|u| {
            let keep = u.origin != origin || u.id > through;
            if !keep {
                bytes += u.update.len();
            }
            keep
        });
        self.bytes -= bytes;
    }

    /// The updates whose origin did not confirm them in time (all of them
    /// when `all`), to store here.
    pub(crate) fn take_expired(&mut self, all: bool) -> Vec<Vec<u8>> {
        let now = Instant::now();
        let mut adopted = Vec::new();
        while let Some(front) = self.queue.front() {
            if !all && front.received_at + CONFIRM_TIMEOUT > now {
                break;
            }
            adopted.extend(self.pop_oldest());
        }
        adopted
    }

    /// When the oldest update's confirmation is due.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.queue.front().map(|u| u.received_at + CONFIRM_TIMEOUT)
    }

    /// Every update held, oldest first (to rebuild a document).
    pub(crate) fn updates(&self) -> impl Iterator<Item = &[u8]> {
        self.queue.iter().map(|u| u.update.as_slice())
    }

    /// Lowers `sv` below the first clock each unconfirmed update inserts:
    /// what this room holds only from another replica's live relay is not
    /// stored yet, so a durable acknowledgement must not claim it.
    pub(crate) fn exclude_from(&self, sv: &mut StateVector) {
        for (client, start) in self.queue.iter().flat_map(|u| &u.starts) {
            if sv.get(client) > *start {
                sv.set_min(*client, *start);
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.queue.clear();
        self.bytes = 0;
    }

    fn pop_oldest(&mut self) -> Option<Vec<u8>> {
        let oldest = self.queue.pop_front()?;
        self.bytes -= oldest.update.len();
        metrics::counter!("larder_relay_live_adopted_total").increment(1);
        tracing::debug!(origin = %oldest.origin, id = oldest.id, "storing a relayed update its origin did not confirm");
        Some(oldest.update)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_grow() {
        let a = next_live_id();
        let b = next_live_id();
        assert!(b > a);
    }

    #[test]
    fn what_is_only_relayed_is_not_claimed_as_stored() {
        use yrs::{Doc, Map, ReadTxn, Transact};
        let doc = Doc::with_client_id(7);
        let map = doc.get_or_insert_map("items");
        let stored_part = {
            let mut txn = doc.transact_mut();
            map.insert(&mut txn, "a", "stored");
            txn.encode_update_v1()
        };
        let relayed_part = {
            let mut txn = doc.transact_mut();
            map.insert(&mut txn, "b", "relayed, not confirmed");
            txn.encode_update_v1()
        };
        assert!(!stored_part.is_empty());
        let mut live = LiveUpdates::default();
        live.keep(Uuid::new_v4(), 1, relayed_part);
        let mut sv = doc.transact().state_vector();
        assert_eq!(sv.get(&ClientID::new(7)), 2);
        live.exclude_from(&mut sv);
        assert_eq!(
            sv.get(&ClientID::new(7)),
            1,
            "the relayed insert is not claimed"
        );
        // A client the relayed update does not touch keeps its clock.
        let mut other = StateVector::default();
        other.set_max(ClientID::new(9), 4);
        live.exclude_from(&mut other);
        assert_eq!(other.get(&ClientID::new(9)), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn confirmed_updates_are_forgotten_and_the_rest_adopted_after_the_timeout() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut live = LiveUpdates::default();
        assert!(live.keep(a, 1, vec![1]).is_empty());
        assert!(live.keep(a, 2, vec![2]).is_empty());
        assert!(live.keep(b, 1, vec![3]).is_empty());
        live.confirm(a, 1);
        assert_eq!(live.updates().count(), 2);
        // Another origin's confirmation does not touch `b`'s update.
        live.confirm(a, 5);
        assert_eq!(live.updates().collect::<Vec<_>>(), vec![&[3u8][..]]);

        assert!(live.take_expired(false).is_empty(), "not due yet");
        tokio::time::advance(CONFIRM_TIMEOUT).await;
        assert_eq!(live.take_expired(false), vec![vec![3]]);
        assert!(live.is_empty());
        assert_eq!(live.next_deadline(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_is_bounded_by_adopting_the_oldest() {
        let origin = Uuid::new_v4();
        let mut live = LiveUpdates::default();
        let mut adopted = Vec::new();
        for id in 0..(MAX_UNCONFIRMED as u64 + 3) {
            adopted.extend(live.keep(origin, id, vec![id as u8]));
        }
        assert_eq!(adopted, vec![vec![0], vec![1], vec![2]]);
        // Bytes bound it too: one update of the whole budget pushes out
        // every small one.
        let big = vec![0u8; MAX_UNCONFIRMED_BYTES];
        assert_eq!(live.keep(origin, 10_000, big).len(), MAX_UNCONFIRMED);
        assert_eq!(live.take_expired(true).len(), 1);
    }
}
