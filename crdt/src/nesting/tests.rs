use super::*;
use yrs::updates::encoder::Encode;
use yrs::{Array, ArrayPrelim, Doc, Map, MapPrelim, MapRef, ReadTxn, StateVector, Transact};

const MAX: u32 = 8;

fn holds_nothing(_: Id) -> bool {
    false
}

/// `levels` maps nested in a chain under root `items`, one update per
/// `per_update` levels; returns the updates.
fn chain(levels: usize, per_update: usize) -> Vec<Vec<u8>> {
    let doc = Doc::with_client_id(1);
    let root = doc.get_or_insert_map("items");
    let mut updates = Vec::new();
    let mut current: Option<MapRef> = None;
    let mut made = 0;
    while made < levels {
        let mut txn = doc.transact_mut();
        for _ in 0..per_update.min(levels - made) {
            let next = match &current {
                None => root.insert(&mut txn, "a", MapPrelim::default()),
                Some(map) => map.insert(&mut txn, "a", MapPrelim::default()),
            };
            current = Some(next);
            made += 1;
        }
        updates.push(txn.encode_update_v1());
    }
    updates
}

#[test]
fn the_list_schema_fits() {
    let doc = Doc::with_client_id(3);
    let orders = doc.get_or_insert_map("orders");
    let update = {
        let mut txn = doc.transact_mut();
        let order = orders.insert(&mut txn, "o1", MapPrelim::default());
        order.insert(&mut txn, "status", "placed");
        let lines = order.insert(&mut txn, "items", ArrayPrelim::default());
        let line = lines.push_back(&mut txn, MapPrelim::default());
        line.insert(&mut txn, "name", "milk");
        txn.encode_update_v1()
    };
    let mut index = NestingIndex::new(4);
    index
        .admit(&update, &Limits::default(), &holds_nothing)
        .expect("an order line's fields sit four deep");
}

#[test]
fn a_chain_built_a_few_levels_per_update_is_stopped_at_the_limit() {
    let mut index = NestingIndex::new(MAX);
    let updates = chain(40, 3);
    let mut admitted = 0;
    for update in &updates {
        match index.admit(update, &Limits::default(), &holds_nothing) {
            Ok(()) => admitted += 3,
            Err(e) => {
                assert_eq!(e, NestingError::TooDeep(MAX));
                break;
            }
        }
    }
    assert!(admitted <= MAX as usize, "{admitted} levels admitted");
    assert!(admitted >= MAX as usize - 3);
}

#[test]
fn items_inheriting_their_parent_from_a_neighbour_count_too() {
    // Overwriting a key names the old value as origin and writes no parent.
    let doc = Doc::with_client_id(5);
    let root = doc.get_or_insert_map("items");
    let mut index = NestingIndex::new(2);
    let first = {
        let mut txn = doc.transact_mut();
        let outer = root.insert(&mut txn, "a", MapPrelim::default());
        outer.insert(&mut txn, "k", "v1");
        txn.encode_update_v1()
    };
    index
        .admit(&first, &Limits::default(), &holds_nothing)
        .expect("two deep");
    let second = {
        let txn_doc = &doc;
        let mut txn = txn_doc.transact_mut();
        let outer: MapRef = root
            .get(&txn, "a")
            .and_then(|v| v.cast::<MapRef>().ok())
            .expect("the map");
        // Replaces "k" (origin: the old value) with a map: three deep inside.
        let inner = outer.insert(&mut txn, "k", MapPrelim::default());
        inner.insert(&mut txn, "x", 1);
        txn.encode_update_v1()
    };
    // The document holds the first update (whose value "v1" it deletes).
    assert_eq!(
        index.admit(&second, &Limits::default(), &|_| true),
        Err(NestingError::TooDeep(2))
    );
}

#[test]
fn what_builds_on_missing_changes_is_refused_unless_the_document_holds_them() {
    let updates = chain(3, 1);
    let mut index = NestingIndex::new(MAX);
    assert_eq!(
        index.admit(&updates[1], &Limits::default(), &holds_nothing),
        Err(NestingError::NotYetHere)
    );
    // Held but not indexed (collected): let through.
    index
        .admit(&updates[1], &Limits::default(), &|_| true)
        .expect("collected parents nest nothing");
}

#[test]
fn stored_updates_are_recorded_and_duplicates_change_nothing() {
    let updates = chain(6, 2);
    let mut index = NestingIndex::new(MAX);
    for update in &updates {
        index.record(update);
    }
    let runs = index.runs();
    for update in &updates {
        index.record(update);
    }
    assert_eq!(index.runs(), runs, "recording twice adds nothing");
    // Two more levels on top of six: eight, at the limit; a ninth is not.
    let more = chain(9, 1);
    index
        .admit(&more[6], &Limits::default(), &holds_nothing)
        .expect("seventh");
    index
        .admit(&more[7], &Limits::default(), &holds_nothing)
        .expect("eighth");
    assert_eq!(
        index.admit(&more[8], &Limits::default(), &holds_nothing),
        Err(NestingError::TooDeep(MAX))
    );
}

#[test]
fn a_whole_state_with_many_items_keeps_few_runs() {
    let doc = Doc::with_client_id(9);
    let items = doc.get_or_insert_map("items");
    {
        let mut txn = doc.transact_mut();
        for i in 0..200 {
            let item = items.insert(&mut txn, format!("item-{i}"), MapPrelim::default());
            item.insert(&mut txn, "name", "x");
            item.insert(&mut txn, "quantity", "1");
        }
    }
    let state = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let mut index = NestingIndex::new(MAX);
    index
        .admit(&state, &Limits::default(), &holds_nothing)
        .expect("a list");
    assert!(index.runs() <= 400, "{} runs for 600 items", index.runs());
    let _ = StateVector::default().encode_v1();
}

#[test]
fn deleting_what_the_document_does_not_hold_is_refused() {
    let doc = Doc::with_client_id(7);
    let list = doc.get_or_insert_array("log");
    {
        let mut txn = doc.transact_mut();
        list.insert(&mut txn, 0, "a");
    }
    let delete = {
        let mut txn = doc.transact_mut();
        list.remove(&mut txn, 0);
        txn.encode_update_v1()
    };
    let mut index = NestingIndex::new(MAX);
    assert_eq!(
        index.admit(&delete, &Limits::default(), &holds_nothing),
        Err(NestingError::NotYetHere)
    );
    index
        .admit(&delete, &Limits::default(), &|_| true)
        .expect("held: fine");
}
