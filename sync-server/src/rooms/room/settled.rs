//! The list for the projector, read from the room's document once the
//! document holds exactly the log up to a sequence: nothing pending or being
//! written, nothing relayed live and unconfirmed, no gap in the sequence.

use std::sync::Arc;

use larder_crdt::list::ListDoc;
use tokio::sync::oneshot;
use yrs::Transact;

use super::{Room, contained};
use crate::projector::SettledList;

pub(super) type Waiter = oneshot::Sender<Option<Arc<SettledList>>>;

impl Room {
    fn is_settled(&self) -> bool {
        self.batches.is_idle()
            && self.live.is_empty()
            && self.sequencer.is_settled()
            && !self.is_rebuilding
    }

    /// Answers the waiting projector when the document is settled (or with
    /// nothing when the list is gone); waiters that gave up are dropped.
    pub(super) fn answer_settled(&mut self) {
        self.settled_waiters.retain(|w| !w.is_closed());
        if self.settled_waiters.is_empty() {
            return;
        }
        let answer = if self.is_gone {
            None
        } else if self.is_settled() {
            let doc = &self.doc;
            contained("reading the list for its projection", || {
                ListDoc::new(doc).read(&doc.transact())
            })
            .ok()
            .map(|snapshot| {
                Arc::new(SettledList {
                    seq: self.sequencer.persisted_seq(),
                    snapshot,
                })
            })
        } else {
            return;
        };
        for waiter in self.settled_waiters.drain(..) {
            let _ = waiter.send(answer.clone());
        }
    }
}
