use super::*;
use std::collections::HashMap;
use yrs::updates::encoder::Encode;
use yrs::{Array, ArrayPrelim, Doc, Map, MapPrelim, MapRef, ReadTxn, StateVector, Transact};

const MAX: u32 = 8;

fn holds_nothing(_: Id) -> bool {
    false
}

/// Judges `update` and, when it passes, records it as applied in order.
fn admit(
    index: &mut NestingIndex,
    update: &[u8],
    holds: &dyn Fn(Id) -> bool,
) -> Result<(), NestingError> {
    index.judge(update, &Limits::default(), holds)?;
    index.record(update).map(|_| ())
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
    admit(&mut index, &update, &holds_nothing).expect("an order line's fields sit four deep");
}

#[test]
fn a_chain_built_a_few_levels_per_update_is_stopped_at_the_limit() {
    let mut index = NestingIndex::new(MAX);
    let updates = chain(40, 3);
    let mut admitted = 0;
    for update in &updates {
        match admit(&mut index, update, &holds_nothing) {
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
    admit(&mut index, &first, &holds_nothing).expect("two deep");
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
        admit(&mut index, &second, &|_| true),
        Err(NestingError::TooDeep(2))
    );
}

#[test]
fn what_builds_on_missing_changes_is_refused_unless_the_document_holds_them() {
    let updates = chain(3, 1);
    let mut index = NestingIndex::new(MAX);
    assert_eq!(
        admit(&mut index, &updates[1], &holds_nothing),
        Err(NestingError::NotYetHere)
    );
    // Held but not indexed (collected): let through.
    admit(&mut index, &updates[1], &|_| true).expect("collected parents nest nothing");
}

#[test]
fn stored_updates_are_recorded_and_duplicates_change_nothing() {
    let updates = chain(6, 2);
    let mut index = NestingIndex::new(MAX);
    for update in &updates {
        index.record(update).expect("records");
    }
    let runs = index.runs();
    for update in &updates {
        index.record(update).expect("records");
    }
    assert_eq!(index.runs(), runs, "recording twice adds nothing");
    // Two more levels on top of six: eight, at the limit; a ninth is not.
    let more = chain(9, 1);
    admit(&mut index, &more[6], &holds_nothing).expect("seventh");
    admit(&mut index, &more[7], &holds_nothing).expect("eighth");
    assert_eq!(
        admit(&mut index, &more[8], &holds_nothing),
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
    admit(&mut index, &state, &holds_nothing).expect("a list");
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
        admit(&mut index, &delete, &holds_nothing),
        Err(NestingError::NotYetHere)
    );
    admit(&mut index, &delete, &|_| true).expect("held: fine");
}

#[test]
fn a_neighbour_that_was_collected_leaves_the_depth_to_the_other_one() {
    // A chain MAX deep written by client 1; its deepest map is (1, MAX - 1).
    let mut index = NestingIndex::new(MAX);
    for update in chain(MAX as usize, 1) {
        assert_eq!(index.record(&update).expect("records"), 1, "one map each");
    }
    // Client 77: a collected struct, then a map whose left neighbour is that
    // struct and whose right neighbour is the deepest map. yrs takes the
    // parent from the right neighbour: the new map sits MAX deep.
    let beside = [
        1,
        2,
        77,
        0, // one client, two structs, from clock 0
        0,
        1, // GC of length 1
        0x80 | 0x40 | 7,
        77,
        0,
        1,
        (MAX - 1) as u8,
        1, // a map, origin 77:0, right 1:MAX-1
        0, // no deletions
    ];
    admit(&mut index, &beside, &holds_nothing).expect("at the limit");
    // Anything inside it is past the limit.
    let inside = [1, 1, 77, 2, 0x20 | 7, 0, 77, 1, 1, b'k', 1, 0];
    assert_eq!(
        admit(&mut index, &inside, &holds_nothing),
        Err(NestingError::TooDeep(MAX))
    );
}

#[test]
fn a_struct_recorded_again_keeps_the_deeper_depth() {
    let mut index = NestingIndex::new(MAX);
    index.insert(1, 0, 10, 1);
    index.insert(1, 3, 5, 7);
    index.insert(1, 8, 12, 1);
    let at =
        |index: &NestingIndex, clock| match index.depth_of((1, clock), &[], &HashMap::new(), &[]) {
            Found::Depth(d) => d,
            _ => panic!("clock {clock} is recorded"),
        };
    assert_eq!(
        (at(&index, 2), at(&index, 4), at(&index, 6), at(&index, 11)),
        (1, 7, 1, 1)
    );
    // A shallower record changes nothing.
    index.insert(1, 0, 12, 0);
    assert_eq!(at(&index, 4), 7);
    assert_eq!(at(&index, 0), 1);
    assert!(index.runs() <= 4, "{} runs", index.runs());
}
