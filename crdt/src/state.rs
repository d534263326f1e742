//! Loading a document from stored bytes and folding update logs.

use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
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
        apply_one(&mut txn, i, bytes)?;
    }
    Ok(())
}

/// Applies the stored update number `i`.
fn apply_one(txn: &mut yrs::TransactionMut<'_>, i: usize, bytes: &[u8]) -> Result<(), CrdtError> {
    let update = Update::decode_v1(bytes)
        .map_err(|e| CrdtError::Decode(format!("stored update #{i}: {e}")))?;
    txn.apply_update(update)
        .map_err(|e| CrdtError::Decode(format!("stored update #{i}: {e}")))
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
///
/// A log written by several replicas can hold an update before one it
/// depends on; yrs keeps such an update aside as pending, outside the
/// document's state, so a fold of the whole log would drop it. The fold
/// therefore covers the longest prefix of `updates` after which nothing is
/// pending: it returns how many updates it folded (0: none could be) and
/// the folded state. What follows stays in the log, so the snapshot plus
/// the rest loads to exactly what the whole log loads to.
pub fn fold<'a, I>(updates: I) -> Result<(usize, Vec<u8>), CrdtError>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let updates: Vec<&[u8]> = updates.into_iter().collect();
    let doc = Doc::new();
    let mut clean = 0;
    {
        let mut txn = doc.transact_mut();
        for (i, bytes) in updates.iter().enumerate() {
            apply_one(&mut txn, i, bytes)?;
            let store = txn.store();
            if store.pending_update().is_none() && store.pending_ds().is_none() {
                clean = i + 1;
            }
        }
    }
    if clean == updates.len() {
        return Ok((clean, encode_full_state(&doc)));
    }
    let prefix = Doc::new();
    apply_stored(&prefix, updates[..clean].iter().copied())?;
    Ok((clean, encode_full_state(&prefix)))
}

/// What yrs holds aside for `doc` because its dependencies are missing, as
/// v1 updates (none when everything integrated).
pub fn pending_parts(doc: &Doc) -> Vec<Vec<u8>> {
    let txn = doc.transact();
    let store = txn.store();
    let mut parts = Vec::new();
    if let Some(pending) = store.pending_update() {
        parts.push(pending.update.encode_v1());
    }
    if let Some(ds) = store.pending_ds() {
        // A delete set alone: no structs, then the set.
        let mut update = vec![0];
        update.extend(ds.encode_v1());
        parts.push(update);
    }
    parts
}

/// Bytes of what yrs holds aside for `doc` (0 when nothing is pending,
/// found without encoding anything).
pub fn pending_bytes(doc: &Doc) -> usize {
    let has_pending = {
        let txn = doc.transact();
        let store = txn.store();
        store.pending_update().is_some() || store.pending_ds().is_some()
    };
    if !has_pending {
        return 0;
    }
    pending_parts(doc).iter().map(Vec::len).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{GetString, Map, Text};

    /// Two edits where the second depends on the first.
    fn causal_pair() -> (Vec<u8>, Vec<u8>) {
        let doc = Doc::with_client_id(4);
        let items = doc.get_or_insert_map("items");
        let note = doc.get_or_insert_text("note");
        let first = {
            let mut txn = doc.transact_mut();
            items.insert(&mut txn, "a", "milk");
            note.insert(&mut txn, 0, "abc");
            txn.encode_update_v1()
        };
        let second = {
            let mut txn = doc.transact_mut();
            items.insert(&mut txn, "b", "eggs");
            note.remove_range(&mut txn, 0, 1);
            txn.encode_update_v1()
        };
        (first, second)
    }

    fn contents(updates: &[&[u8]]) -> (String, String, String) {
        let doc = Doc::new();
        apply_stored(&doc, updates.iter().copied()).expect("applies");
        let items = doc.get_or_insert_map("items");
        let note = doc.get_or_insert_text("note");
        let txn = doc.transact();
        let get = |k: &str| {
            items
                .get(&txn, k)
                .map(|v| v.to_string(&txn))
                .unwrap_or_default()
        };
        (get("a"), get("b"), note.get_string(&txn))
    }

    #[test]
    fn a_fold_stops_before_what_would_stay_pending() {
        let (first, second) = causal_pair();
        let other = {
            let doc = Doc::with_client_id(5);
            let items = doc.get_or_insert_map("items");
            let mut txn = doc.transact_mut();
            items.insert(&mut txn, "c", "bread");
            txn.encode_update_v1()
        };
        // The log holds an independent update, then the dependent one.
        let log = [other.as_slice(), second.as_slice()];
        let (count, folded) = fold(log).expect("folds");
        assert_eq!(count, 1, "the dependent update stays in the log");
        assert_eq!(
            contents(&[folded.as_slice(), second.as_slice()]),
            contents(&log)
        );
        // Its dependency arrives later: the list is whole either way.
        let expected = contents(&[other.as_slice(), second.as_slice(), first.as_slice()]);
        assert_eq!(expected, ("milk".into(), "eggs".into(), "bc".into()));
        assert_eq!(
            contents(&[folded.as_slice(), second.as_slice(), first.as_slice()]),
            expected
        );
        // A log in causal order folds whole.
        let (count, _) = fold([first.as_slice(), second.as_slice()]).expect("folds");
        assert_eq!(count, 2);
    }

    #[test]
    fn nothing_pending_when_the_log_is_in_order() {
        let (first, second) = causal_pair();
        let doc = Doc::new();
        apply_stored(&doc, [first.as_slice(), second.as_slice()]).expect("applies");
        assert_eq!(pending_bytes(&doc), 0);
    }
}
