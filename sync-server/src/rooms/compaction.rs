//! Compaction: fold a list's log into a snapshot so loading stays fast
//! however long its history. One process at a time per list (a lease on the
//! list's row); updates committed meanwhile get higher sequence numbers than
//! the snapshot covers and are kept.

use std::sync::Arc;
use std::time::Duration;

use larder_storage::{Snapshot, Store, StoreError};
use uuid::Uuid;

/// How long a compaction may hold a list before another process may take over.
const LEASE: Duration = Duration::from_secs(60);

/// Compactions of one process at a time: each folds a whole history, and
/// many lists unloading together (a shutdown) must not swamp the database.
static SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Compacts one list; returns the sequence the new snapshot covers, or
/// `None` when another process holds the lease or there was nothing to fold.
pub async fn compact(store: Arc<dyn Store>, list_id: Uuid) -> Result<Option<u64>, StoreError> {
    let _slot = SLOTS
        .acquire()
        .await
        .expect("the semaphore is never closed");
    if !store.try_lease_compaction(list_id, LEASE).await? {
        return Ok(None);
    }
    let result = fold_and_store(&store, list_id).await;
    if !matches!(result, Ok(Some(_)))
        && let Err(e) = store.release_compaction(list_id).await
    {
        tracing::warn!(%list_id, error = %e, "could not release compaction lease; it expires by itself");
    }
    result
}

async fn fold_and_store(store: &Arc<dyn Store>, list_id: Uuid) -> Result<Option<u64>, StoreError> {
    let doc = store.load_doc(list_id).await?;
    if doc.tail.is_empty() {
        return Ok(None);
    }
    // The sequence each update of `doc.updates()` carries (the snapshot's
    // first, when there is one).
    let seqs: Vec<u64> = doc
        .snapshot
        .iter()
        .map(|s| s.up_to_seq)
        .chain(doc.tail.iter().map(|u| u.seq))
        .collect();
    let from_snapshot = usize::from(doc.snapshot.is_some());
    let folded = tokio::task::spawn_blocking(move || larder_crdt::state::fold(doc.updates())).await;
    let (count, state) = match folded {
        Ok(Ok(folded)) => folded,
        Ok(Err(e)) => {
            tracing::error!(%list_id, error = %e, "stored updates do not fold; list left uncompacted");
            return Ok(None);
        }
        Err(e) => {
            tracing::error!(%list_id, error = %e, "compaction task failed");
            return Ok(None);
        }
    };
    // Updates whose dependencies are stored later stay in the log.
    let up_to_seq = match count.checked_sub(1) {
        Some(last) if count > from_snapshot => seqs[last],
        _ => {
            tracing::debug!(%list_id, "nothing to fold before an update still waiting for its dependencies");
            return Ok(None);
        }
    };
    if count < seqs.len() {
        tracing::info!(%list_id, up_to_seq, left = seqs.len() - count, "compacted up to updates still waiting for their dependencies");
    }
    store
        .store_snapshot(list_id, Snapshot { up_to_seq, state })
        .await?;
    metrics::counter!("larder_compactions_total").increment(1);
    tracing::debug!(%list_id, up_to_seq, "compacted");
    Ok(Some(up_to_seq))
}
