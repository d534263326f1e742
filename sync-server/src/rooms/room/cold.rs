//! A room's first answers from the bytes it loaded. A list loaded from a
//! snapshot alone (as after a restart: a room compacts when it unloads)
//! holds exactly those bytes; the nesting index is built from them, and a
//! client with an empty state (a new device, a cleared cache) is sent them
//! as they are instead of the whole document encoded again. The bytes are
//! dropped at the first change to the document.

use larder_storage::StoredDoc;
use yrs::StateVector;

use super::Room;

impl Room {
    /// Keeps the snapshot `stored` holds when it is the whole of the list
    /// (no tail after it) and the document loaded all of it (nothing waits
    /// aside for missing updates). Merging a tail in would cost about what
    /// encoding the document does.
    pub(super) fn keep_cold_state(&mut self, stored: &StoredDoc) {
        self.cold_state = None;
        if !stored.tail.is_empty() || larder_crdt::state::pending_bytes(&self.doc) > 0 {
            return;
        }
        self.cold_state = stored.snapshot.as_ref().map(|s| s.state.clone());
    }

    /// The loaded bytes, for a client that holds nothing, while the
    /// document is still exactly them.
    pub(super) fn cold_reply(&self, sv: &StateVector) -> Option<Vec<u8>> {
        if sv.is_empty() {
            self.cold_state.clone()
        } else {
            None
        }
    }

    /// The document changed: the loaded bytes no longer describe it.
    pub(super) fn forget_cold_state(&mut self) {
        self.cold_state = None;
    }
}
