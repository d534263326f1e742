//! Loading a document from stored bytes and folding update logs.

use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use crate::CrdtError;

/// Applies stored updates (a snapshot first, then the log tail, in order) to
/// `doc` in one transaction. Fails on the first update that does not decode
/// or apply: serving a partial list would let a later snapshot drop data.
pub fn apply_stored<'a, I>(doc: &Doc, updates: I) -> Result<(), CrdtError>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut txn = doc.transact_mut();
    for (i, bytes) in updates.into_iter().enumerate() {
        let update = Update::decode_v1(bytes)
            .map_err(|e| CrdtError::Decode(format!("stored update #{i}: {e}")))?;
        txn.apply_update(update)
            .map_err(|e| CrdtError::Decode(format!("stored update #{i}: {e}")))?;
    }
    Ok(())
}

/// A v1 update that changes nothing (no structs, empty delete set).
pub const EMPTY_UPDATE: [u8; 2] = [0, 0];

/// Whether a v1 update changes nothing.
pub fn is_empty_update(update: &[u8]) -> bool {
    update == EMPTY_UPDATE
}

/// Merges updates into one (Yjs `mergeUpdates`); a batch of one is returned
/// as it is.
pub fn merge_updates(mut updates: Vec<Vec<u8>>) -> Result<Vec<u8>, CrdtError> {
    if updates.len() == 1 {
        return Ok(updates.pop().expect("one element"));
    }
    yrs::merge_updates_v1(&updates).map_err(|e| CrdtError::Decode(e.to_string()))
}

/// The whole document as one update.
pub fn encode_full_state(doc: &Doc) -> Vec<u8> {
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

/// The document's state vector.
pub fn state_vector(doc: &Doc) -> StateVector {
    doc.transact().state_vector()
}

/// Folds a snapshot and a tail into one update (what compaction stores).
pub fn fold<'a, I>(updates: I) -> Result<Vec<u8>, CrdtError>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let doc = Doc::new();
    apply_stored(&doc, updates)?;
    Ok(encode_full_state(&doc))
}
