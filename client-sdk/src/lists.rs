//! The lists a client keeps: each one's document (in memory while used,
//! always on disk), its status, and the three ways it changes: a local
//! edit (on disk before the call returns), an update from the server, and
//! a durable acknowledgement.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

use larder_crdt::{CrdtError, ListDoc, ListSnapshot};
use tokio::sync::{Mutex, watch};
use uuid::Uuid;
use yrs::updates::decoder::Decode;
use yrs::{Doc, Map, MapRef, ReadTxn, StateVector, Transact, TransactionMut, Update};

use crate::client::Shared;
use crate::status::{Change, ListStatus, Source, SyncState};
use crate::store::Origin;
use crate::{Error, sync::Command};

/// Root map the SDK writes in an edit that inserts nothing (a removal):
/// its client's entry gets the edit's number. A deletion moves no state
/// vector, so without it the server's durable acknowledgement (a state
/// vector) could never show that a removal is stored. Readers ignore it.
pub const RECEIPTS: &str = "receipts";

/// Origin of transactions that apply the server's updates.
const REMOTE: &str = "larder-remote";

/// One list the client keeps.
pub(crate) struct ListCell {
    pub(crate) id: Uuid,
    pub(crate) doc: Mutex<Resident>,
    pub(crate) status: watch::Sender<ListStatus>,
    /// Live [`crate::ListHandle`]s: a list in use stays in memory.
    pub(crate) handles: AtomicUsize,
    /// The server's sync step 2 arrived on the current subscription.
    pub(crate) has_server_state: AtomicBool,
    last_used: std::sync::Mutex<Instant>,
}

/// The list's document, when in memory.
#[derive(Default)]
pub(crate) struct Resident {
    loaded: Option<Loaded>,
}

struct Loaded {
    doc: Doc,
    list: ListDoc,
    receipts: MapRef,
    /// The server's latest durable acknowledgement.
    durable: StateVector,
}

impl ListCell {
    pub(crate) fn new(id: Uuid) -> ListCell {
        ListCell {
            id,
            doc: Mutex::new(Resident::default()),
            status: watch::channel(ListStatus::default()).0,
            handles: AtomicUsize::new(0),
            has_server_state: AtomicBool::new(false),
            last_used: std::sync::Mutex::new(Instant::now()),
        }
    }

    fn touch(&self) {
        *self.last_used.lock().expect("lock") = Instant::now();
    }

    /// Drops the document from memory when nobody used it for `idle`.
    pub(crate) fn unload_if_idle(&self, idle: std::time::Duration) -> bool {
        if self.handles.load(Ordering::Relaxed) > 0
            || self.last_used.lock().expect("lock").elapsed() < idle
        {
            return false;
        }
        match self.doc.try_lock() {
            Ok(mut resident) if resident.loaded.is_some() => {
                resident.loaded = None;
                true
            }
            _ => false,
        }
    }

    pub(crate) fn is_loaded(&self) -> bool {
        self.doc.try_lock().is_ok_and(|r| r.loaded.is_some())
    }

    /// While subscribed: synced once the server's state is here and every
    /// local edit is stored, syncing until then.
    pub(crate) fn settle(&self) {
        let has_state = self.has_server_state.load(Ordering::Relaxed);
        self.status.send_if_modified(|s| {
            if !matches!(s.state, SyncState::Syncing | SyncState::Synced) {
                return false;
            }
            let state = if has_state && s.undurable == 0 {
                SyncState::Synced
            } else {
                SyncState::Syncing
            };
            let changed = s.state != state;
            s.state = state;
            changed
        });
    }

    pub(crate) fn set_state(&self, state: SyncState) {
        self.status.send_if_modified(|s| {
            let changed = s.state != state;
            s.state = state;
            changed
        });
    }
}

impl Shared {
    /// The cell of `list`, created on first use.
    pub(crate) fn cell(&self, list: Uuid) -> Arc<ListCell> {
        self.cells
            .lock()
            .expect("lock")
            .entry(list)
            .or_insert_with(|| Arc::new(ListCell::new(list)))
            .clone()
    }

    pub(crate) fn cells(&self) -> Vec<Arc<ListCell>> {
        self.cells.lock().expect("lock").values().cloned().collect()
    }

    /// Loads the document of `cell` from disk when it is not in memory.
    async fn load<'a>(
        &self,
        cell: &ListCell,
        resident: &'a mut Resident,
    ) -> Result<&'a Loaded, Error> {
        cell.touch();
        if resident.loaded.is_none() {
            let stored = self.store.load(cell.id).await?.unwrap_or_default();
            let doc = Doc::new();
            larder_crdt::state::apply_stored(&doc, stored.updates.iter().map(Vec::as_slice))
                .map_err(|_| Error::Damaged(cell.id))?;
            let list = ListDoc::new(&doc);
            let receipts = doc.get_or_insert_map(RECEIPTS);
            resident.loaded = Some(Loaded {
                doc,
                list,
                receipts,
                durable: stored.durable.unwrap_or_default(),
            });
        }
        Ok(resident.loaded.as_ref().expect("loaded above"))
    }

    /// The list as rows.
    pub(crate) async fn read(&self, list: Uuid) -> Result<ListSnapshot, Error> {
        let cell = self.cell(list);
        let mut resident = cell.doc.lock().await;
        let loaded = self.load(&cell, &mut resident).await?;
        Ok(loaded.list.read(&loaded.doc.transact()))
    }

    /// Makes a local edit: applied, then on disk, then sent when connected.
    /// When the disk refuses it, the edit is undone in memory (the document
    /// is read back from disk) and the error returned.
    pub(crate) async fn edit<R>(
        &self,
        list: Uuid,
        f: impl FnOnce(&ListDoc, &mut TransactionMut) -> Result<R, CrdtError>,
    ) -> Result<R, Error> {
        let cell = self.cell(list);
        let mut resident = cell.doc.lock().await;
        let loaded = self.load(&cell, &mut resident).await?;
        let before = loaded.list.read(&loaded.doc.transact());
        let (result, update) = {
            let mut txn = loaded.doc.transact_mut();
            let result = f(&loaded.list, &mut txn);
            let touched = !txn.delete_set().is_empty() || !txn.insert_set().is_empty();
            if touched && txn.insert_set().is_empty() {
                let receipts = &loaded.receipts;
                let client = txn.doc().client_id();
                let n = receipts
                    .get(&txn, &client.to_string())
                    .and_then(|v| v.cast::<i64>().ok())
                    .unwrap_or(0);
                receipts.insert(&mut txn, client.to_string(), n + 1);
            }
            let update = touched.then(|| txn.encode_update_v1());
            (result, update)
        };
        let Some(update) = update else {
            return result.map_err(Error::Crdt);
        };
        if let Err(e) = self.store.append(list, Origin::Local, &update).await {
            resident.loaded = None;
            return Err(e.into());
        }
        // Counted under the lock: a recount runs under it too.
        cell.status.send_modify(|s| s.undurable += 1);
        let after = loaded.list.read(&loaded.doc.transact());
        self.fold_if_due(list, &loaded.doc).await;
        drop(resident);
        cell.settle();
        self.refresh_overall();
        let _ = self.commands.send(Command::Local { list, update });
        if let Some(change) = Change::between(list, Source::Local, &before, &after) {
            let _ = self.events.send(change);
        }
        result.map_err(Error::Crdt)
    }

    /// Applies updates from the server and keeps them on disk.
    pub(crate) async fn apply_remote(&self, list: Uuid, updates: &[Vec<u8>]) -> Result<(), Error> {
        let cell = self.cell(list);
        let mut resident = cell.doc.lock().await;
        let loaded = self.load(&cell, &mut resident).await?;
        let before = loaded.list.read(&loaded.doc.transact());
        let mut kept = false;
        for bytes in updates {
            if larder_crdt::state::is_empty_update(bytes) {
                continue;
            }
            let update = Update::decode_v1(bytes)
                .map_err(|_| Error::Protocol(format!("list {list}: an update does not decode")))?;
            let doc = &loaded.doc;
            // yrs may panic on input it cannot integrate: the list is read
            // back from disk (without it) instead of the sync loop dying.
            let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                doc.transact_mut_with(REMOTE).apply_update(update)
            }));
            match applied {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    resident.loaded = None;
                    return Err(Error::Protocol(format!("list {list}: {e}")));
                }
                Err(_) => {
                    resident.loaded = None;
                    return Err(Error::Protocol(format!(
                        "list {list}: an update from the server cannot be applied"
                    )));
                }
            }
            self.store.append(list, Origin::Remote, bytes).await?;
            kept = true;
        }
        if !kept {
            return Ok(());
        }
        let after = loaded.list.read(&loaded.doc.transact());
        self.fold_if_due(list, &loaded.doc).await;
        drop(resident);
        if let Some(change) = Change::between(list, Source::Remote, &before, &after) {
            let _ = self.events.send(change);
        }
        Ok(())
    }

    /// What the server lacks, given its state vector (sync step 2).
    pub(crate) async fn missing(&self, list: Uuid, theirs: &StateVector) -> Result<Vec<u8>, Error> {
        let cell = self.cell(list);
        let mut resident = cell.doc.lock().await;
        let loaded = self.load(&cell, &mut resident).await?;
        Ok(loaded.doc.transact().encode_state_as_update_v1(theirs))
    }

    /// The list's state vector (sync step 1).
    pub(crate) async fn state_vector(&self, list: Uuid) -> Result<StateVector, Error> {
        let cell = self.cell(list);
        let mut resident = cell.doc.lock().await;
        let loaded = self.load(&cell, &mut resident).await?;
        Ok(loaded.doc.transact().state_vector())
    }

    /// The server stored the list up to `stored`: records it and counts
    /// what is still not stored.
    pub(crate) async fn acknowledged(&self, list: Uuid, stored: &StateVector) -> Result<(), Error> {
        let cell = self.cell(list);
        let mut resident = cell.doc.lock().await;
        let loaded = self.load(&cell, &mut resident).await?;
        let mut merged = loaded.durable.clone();
        merged.merge(stored.clone());
        self.store.set_durable(list, &merged).await?;
        if let Some(loaded) = resident.loaded.as_mut() {
            loaded.durable = merged;
        }
        self.count_locked(&cell).await
    }

    /// Counts the list's local edits not yet stored by the server.
    pub(crate) async fn recount(&self, cell: &ListCell) -> Result<(), Error> {
        let _resident = cell.doc.lock().await;
        self.count_locked(cell).await
    }

    /// [`Shared::recount`] with the list's lock held, so no edit is stored
    /// between the count and its publication.
    async fn count_locked(&self, cell: &ListCell) -> Result<(), Error> {
        let undurable = self.store.undurable(cell.id).await?.len();
        cell.status.send_modify(|s| {
            s.undurable = undurable;
            if undurable == 0 {
                s.last_durable_at = Some(SystemTime::now());
            }
        });
        cell.settle();
        self.refresh_overall();
        Ok(())
    }

    /// Folds the list's updates into its state when they outweigh it. A
    /// failure is logged, not returned: the edit is stored already (a
    /// caller told otherwise would make it again), and the next edit
    /// tries the fold again.
    async fn fold_if_due(&self, list: Uuid, doc: &Doc) {
        let folded = async {
            if self.store.needs_fold(list).await? {
                let state = doc
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default());
                self.store.fold(list, &state).await?;
            }
            Ok::<(), crate::store::StoreError>(())
        };
        if let Err(e) = folded.await {
            tracing::warn!(%list, error = %e, "compacting the list on the device failed");
        }
    }

    /// Recomputes the overall status from the lists'.
    pub(crate) fn refresh_overall(&self) {
        let statuses: HashMap<Uuid, ListStatus> = self
            .cells()
            .iter()
            .map(|c| (c.id, c.status.borrow().clone()))
            .collect();
        self.status.send_if_modified(|overall| {
            let before = overall.clone();
            overall.undurable = statuses.values().map(|s| s.undurable).sum();
            let live: Vec<&ListStatus> = statuses
                .values()
                .filter(|s| s.state != SyncState::Stopped)
                .collect();
            if overall.state == SyncState::Syncing || overall.state == SyncState::Synced {
                overall.state = if live.iter().all(|s| s.state == SyncState::Synced) {
                    SyncState::Synced
                } else {
                    SyncState::Syncing
                };
            }
            if overall.undurable == 0 && before.undurable != 0 {
                overall.last_durable_at = Some(SystemTime::now());
            }
            *overall != before
        });
    }
}
