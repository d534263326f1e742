//! Changes made by the server itself (REST writes) to a list's document.
//!
//! The change is made on the list's current stored state, so it follows
//! what is there (a new name replaces the old one rather than racing it),
//! then stored in the log before the request is answered, then handed to
//! the list's room on this replica and relayed to the others as a stored
//! batch: connected clients see it at once, on every replica. A list no
//! replica has open just gets the new log entry.

use larder_crdt::CrdtError;
use larder_crdt::list::ListDoc;
use larder_relay::{Envelope, Payload};
use larder_storage::{NewUpdate, SeqRange, StoreError};
use uuid::Uuid;
use yrs::{Doc, Transact, TransactionMut};

use super::{RoomCommand, Rooms};

/// Why a server-side change was not made.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The list does not exist or is deleted.
    #[error("list not found")]
    NotFound,
    /// The item or order the change is about does not exist.
    #[error("{0}")]
    Missing(String),
    /// The change does not fit the document schema.
    #[error("{0}")]
    Invalid(String),
    /// The change is not allowed in the document's current state.
    #[error("{0}")]
    Conflict(String),
    /// The stored document does not load.
    #[error("stored list is damaged: {0}")]
    Damaged(String),
    /// Storage failed; nothing was written.
    #[error("storage unavailable")]
    Storage(#[source] StoreError),
}

impl From<CrdtError> for WriteError {
    fn from(e: CrdtError) -> Self {
        match e {
            CrdtError::NotFound { .. } => WriteError::Missing(e.to_string()),
            CrdtError::Invalid { .. } => WriteError::Invalid(e.to_string()),
            CrdtError::Decode(_) => WriteError::Damaged(e.to_string()),
        }
    }
}

impl Rooms {
    /// Applies `change` to the list's document as `user_id`. Returns what
    /// `change` returned and the sequence numbers of the stored update
    /// (`None` when the change changed nothing).
    pub async fn write<R>(
        &self,
        list_id: Uuid,
        user_id: Uuid,
        change: impl FnOnce(&ListDoc, &mut TransactionMut) -> Result<R, WriteError>,
    ) -> Result<(R, Option<SeqRange>), WriteError> {
        let ctx = self.context();
        let stored = match ctx.store.load_doc(list_id).await {
            Ok(stored) if stored.is_deleted => return Err(WriteError::NotFound),
            Ok(stored) => stored,
            Err(StoreError::ListNotFound(_)) => return Err(WriteError::NotFound),
            Err(e) => return Err(WriteError::Storage(e)),
        };
        let doc = Doc::new();
        larder_crdt::state::apply_stored(&doc, stored.updates())?;
        let (result, update) = {
            let list = ListDoc::new(&doc);
            let mut txn = doc.transact_mut();
            let result = change(&list, &mut txn)?;
            (result, txn.encode_update_v1())
        };
        if larder_crdt::state::is_empty_update(&update) {
            return Ok((result, None));
        }
        let ranges = ctx
            .store
            .append(vec![NewUpdate {
                list_id,
                update: update.clone(),
                origin: ctx.replica_id.to_string(),
                user_id: Some(user_id),
            }])
            .await
            .map_err(WriteError::Storage)?;
        let range = *ranges.get(&list_id).ok_or(WriteError::NotFound)?;
        let envelope = Envelope::new(
            ctx.replica_id,
            list_id,
            Payload::Update {
                first_seq: range.first,
                last_seq: range.last,
                update,
                live_through: 0,
            },
        );
        ctx.relay.publish(envelope.clone());
        self.offer(list_id, RoomCommand::Relayed(envelope));
        ctx.projector.changed(list_id);
        metrics::counter!("larder_server_writes_total").increment(1);
        Ok((result, Some(range)))
    }
}
