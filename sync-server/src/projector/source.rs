//! Where a projection's snapshot comes from, and what was written last.
//!
//! A list open on this replica is read from its room's document once
//! everything the room holds is stored ([`OpenLists`]): no log to load and
//! decode. Any other list is read from the stored log (snapshot + tail).
//! Either way the snapshot is of a durable sequence. [`Recent`] keeps the
//! projection written last per list, so the next one writes only what
//! changed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use larder_crdt::ListSnapshot;
use larder_crdt::list::ListDoc;
use larder_storage::projection::Projection;
use larder_storage::{Store, StoreError};
use tokio::sync::oneshot;
use tokio::time::Instant;
use uuid::Uuid;
use yrs::{Doc, Transact};

use super::ProjectError;

/// Longest wait for an open room to have everything it holds stored
/// before the list is read from the log instead.
const ROOM_WAIT: Duration = Duration::from_millis(500);
/// A list's rows are rewritten whole at least this often, so what the
/// database changed outside the document (a vendor deleted, an order id
/// freed by another list) reaches them.
const FULL_WRITE_EVERY: Duration = Duration::from_secs(60);
/// Lists whose last projection is remembered; past this, forgotten.
const RECENT_LISTS: usize = 4096;

/// A list as an open room holds it when everything it holds is stored.
#[derive(Debug)]
pub struct SettledList {
    /// Every update of the log up to this sequence, and nothing else.
    pub seq: u64,
    pub snapshot: ListSnapshot,
}

/// The open rooms of this process, as the projector sees them.
pub trait OpenLists: Send + Sync + 'static {
    /// Asks the open room of `list_id` for its list once everything it
    /// holds is stored; `None` when the list is not open here. The answer
    /// is `None` when the room cannot give one (it is being rebuilt, the
    /// list is gone).
    fn settled(&self, list_id: Uuid) -> Option<oneshot::Receiver<Option<Arc<SettledList>>>>;
}

/// Set once the rooms exist (they are created after the projector).
pub(super) type Source = Arc<OnceLock<Arc<dyn OpenLists>>>;

/// A snapshot of `list_id` at a durable sequence: from its open room when
/// it settles in time, else from the log. `None` when the list is gone.
pub(super) async fn read(
    source: &Source,
    store: &dyn Store,
    list_id: Uuid,
) -> Result<Option<(u64, ListSnapshot)>, ProjectError> {
    if let Some(answer) = source.get().and_then(|rooms| rooms.settled(list_id))
        && let Ok(Ok(Some(settled))) = tokio::time::timeout(ROOM_WAIT, answer).await
    {
        metrics::counter!("larder_projection_reads_total", "from" => "room").increment(1);
        let settled = Arc::try_unwrap(settled).unwrap_or_else(|shared| SettledList {
            seq: shared.seq,
            snapshot: shared.snapshot.clone(),
        });
        return Ok(Some((settled.seq, settled.snapshot)));
    }
    metrics::counter!("larder_projection_reads_total", "from" => "log").increment(1);
    let stored = match store.load_doc(list_id).await {
        Ok(stored) => stored,
        Err(StoreError::ListNotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // A document yrs cannot read must not take the projector down.
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let doc = Doc::new();
        larder_crdt::state::apply_stored(&doc, stored.updates())?;
        Ok::<_, larder_crdt::CrdtError>(ListDoc::new(&doc).read(&doc.transact()))
    }));
    match read {
        Ok(snapshot) => Ok(Some((stored.head_seq, snapshot?))),
        Err(_) => {
            tracing::error!(%list_id, "reading the stored list panicked; its rows are left as they are");
            Err(ProjectError::Panicked)
        }
    }
}

/// The projection this process wrote last for each list.
#[derive(Clone, Default)]
pub(super) struct Recent {
    lists: Arc<Mutex<HashMap<Uuid, Written>>>,
}

#[derive(Clone)]
pub(super) struct Written {
    pub(super) seq: u64,
    pub(super) projection: Arc<Projection>,
    full_at: Instant,
}

impl Recent {
    /// What was written last for `list_id`, unless a whole write is due.
    pub(super) fn get(&self, list_id: Uuid) -> Option<Written> {
        let lists = self.lists.lock().expect("projector cache lock poisoned");
        lists
            .get(&list_id)
            .filter(|w| w.full_at.elapsed() < FULL_WRITE_EVERY)
            .cloned()
    }

    /// `projection` was written at `seq`, whole unless `since` names the
    /// written projection it was written over.
    pub(super) fn written(
        &self,
        list_id: Uuid,
        seq: u64,
        projection: Projection,
        since: Option<&Written>,
    ) {
        let full_at = since.map_or_else(Instant::now, |w| w.full_at);
        let mut lists = self.lists.lock().expect("projector cache lock poisoned");
        if lists.len() >= RECENT_LISTS && !lists.contains_key(&list_id) {
            lists.clear();
        }
        lists.insert(
            list_id,
            Written {
                seq,
                projection: Arc::new(projection),
                full_at,
            },
        );
    }

    /// Forgets `list_id` (its write failed, was stale, or it is gone).
    pub(super) fn forget(&self, list_id: Uuid) {
        self.lists
            .lock()
            .expect("projector cache lock poisoned")
            .remove(&list_id);
    }
}
